"""Grid files: the committed examples load, and every kind of mistake is named in the error."""

from __future__ import annotations

from pathlib import Path

import pytest

from segguided_tools.experiments import grid as grid_module
from segguided_tools.experiments.grid import (
    GridError,
    load_grid,
    parse_grid,
    run_config_keys,
)
from segguided_tools.local_simulation import PROJECT_ROOT

# The grids vary secure aggregation; that run-config key arrives with the secure-aggregation change.
needs_secure_aggregation_key = pytest.mark.skipif(
    "secure-aggregation" not in run_config_keys(), reason="run-config key secure-aggregation not in segguided_federation/run_config.py yet"
)

MINIMAL = """
name = "g"
[[partitions]]
name = "generated"
kind = "generated"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "grid.toml"
    path.write_text(text)
    return path


@needs_secure_aggregation_key
@pytest.mark.parametrize("name", ["tiny.toml", "report.toml"])
def test_committed_grids_are_valid(name):
    grid = load_grid(PROJECT_ROOT / "experiments" / name)
    assert grid.partitions and grid.grid.seeds


@needs_secure_aggregation_key
def test_report_grid_compares_what_issue_7_asks_for():
    grid = load_grid(PROJECT_ROOT / "experiments" / "report.toml")
    assert grid.data.synthetic and grid.data.synthetic_sites >= 4
    assert {p.kind for p in grid.partitions} == {"generated"}  # the scanners differ: non-IID sites
    assert grid.grid.strategies == ["fedavg", "fedprox", "fedadam"]
    assert set(grid.grid.attention_supervision) == {True, False}
    assert set(grid.grid.secure_aggregation) == {True, False}
    assert grid.baselines.centralised and grid.baselines.local_only


def test_unknown_run_config_key_is_named_with_the_file(tmp_path):
    path = _write(tmp_path, MINIMAL + "[run-config]\nlearning-rat = 0.1\n")
    with pytest.raises(GridError, match=r"grid\.toml.*run-config.*'learning-rat' is not a run-config key"):
        load_grid(path)


def test_invalid_run_config_value_names_the_key(tmp_path):
    path = _write(tmp_path, MINIMAL + "[run-config]\nlocal-steps = 0\n")
    with pytest.raises(GridError, match="local-steps"):
        load_grid(path)


@pytest.mark.parametrize("key", ["data-dir", "seed", "output-dir", "synthetic-sites"])
def test_keys_the_runner_sets_are_refused(tmp_path, key):
    value = '"x"' if key in ("data-dir", "output-dir") else "3"
    path = _write(tmp_path, MINIMAL + f"[run-config]\n{key} = {value}\n")
    with pytest.raises(GridError, match=f"'{key}' is set by the experiment runner"):
        load_grid(path)


def test_unknown_top_level_and_factor_keys_are_named(tmp_path):
    with pytest.raises(GridError, match="seedz"):
        load_grid(_write(tmp_path, MINIMAL + "seedz = 1\n"))
    with pytest.raises(GridError, match=r"grid\.strategy"):
        load_grid(_write(tmp_path, MINIMAL + '[grid]\nstrategy = ["fedavg"]\n'))


def test_unknown_strategy_and_partition_are_named(tmp_path):
    with pytest.raises(GridError, match=r"grid\.strategies: 'fedfoo' is not a strategy"):
        load_grid(_write(tmp_path, MINIMAL + '[grid]\nstrategies = ["fedavg", "fedfoo"]\n'))
    with pytest.raises(GridError, match=r"grid\.partitions: 'skewed' is not a declared partition"):
        load_grid(_write(tmp_path, MINIMAL + '[grid]\npartitions = ["skewed"]\n'))


def test_factor_whose_run_config_key_does_not_exist_yet_says_so(monkeypatch):
    known = grid_module.run_config_keys() - {"secure-aggregation"}
    monkeypatch.setattr(grid_module, "run_config_keys", lambda: known)
    data = {"name": "g", "partitions": [{"name": "p", "kind": "generated"}], "grid": {"secure-aggregation": [True]}}
    with pytest.raises(GridError, match=r"grid\.secure-aggregation: needs run-config key 'secure-aggregation'"):
        parse_grid(data)


def test_partition_fields_must_fit_their_kind(tmp_path):
    with pytest.raises(GridError, match="'iid' needs sites"):
        load_grid(_write(tmp_path, 'name = "g"\n[[partitions]]\nname = "p"\nkind = "iid"\n'))
    with pytest.raises(GridError, match="kind 'fets' needs csv"):
        load_grid(_write(tmp_path, 'name = "g"\n[[partitions]]\nname = "p"\nkind = "fets"\n'))
    with pytest.raises(GridError, match="'generated' needs synthetic data"):
        load_grid(_write(tmp_path, MINIMAL + '[data]\npool-dir = "a"\nvalidation-dir = "b"\n'))


def test_attention_on_needs_a_positive_weight(tmp_path):
    text = MINIMAL + "[run-config]\nattention-weight = 0.0\n[grid]\nattention-supervision = [true, false]\n"
    with pytest.raises(GridError, match="attention-weight is 0"):
        load_grid(_write(tmp_path, text))


def test_site_profile_needs_non_negative_seconds(tmp_path):
    text = MINIMAL + "[[convergence.site-profiles]]\nupload-seconds = [-1.0, 0.0]\n"
    with pytest.raises(GridError, match=r"convergence\.site-profiles\.0\.upload-seconds"):
        load_grid(_write(tmp_path, text))


def test_not_toml_and_missing_file_name_the_file(tmp_path):
    with pytest.raises(GridError, match=r"grid file .*grid\.toml: not valid TOML"):
        load_grid(_write(tmp_path, "name = \n"))
    with pytest.raises(GridError, match="grid file .*absent.toml: cannot read it"):
        load_grid(tmp_path / "absent.toml")


def test_relative_paths_resolve_against_the_grid_file(tmp_path):
    text = (
        'name = "g"\n[data]\npool-dir = "pool"\nvalidation-dir = "val"\n'
        '[[partitions]]\nname = "f"\nkind = "fets"\ncsv = "parts.csv"\n'
        '[[partitions]]\nname = "f1"\nkind = "fets"\ncsv = "partitioning_1"\n'
    )
    grid = load_grid(_write(tmp_path, text))
    assert grid.data.pool_dir == str(tmp_path.resolve() / "pool")
    assert grid.partition("f").csv == str(tmp_path.resolve() / "parts.csv")
    assert grid.partition("f1").csv == "partitioning_1"
