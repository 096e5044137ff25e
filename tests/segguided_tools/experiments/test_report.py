"""The report renders from per-round records that a real tiny run wrote (``data/*.metrics.json``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from segguided_tools.experiments.cross_site import summarise_sites
from segguided_tools.experiments.grid import load_grid, run_config_keys
from segguided_tools.experiments.report import PLOTS, paired, write_report
from segguided_tools.experiments.results import (
    ExperimentResult,
    read_result,
    write_result,
)
from segguided_tools.experiments.runner import score
from segguided_tools.local_simulation import PROJECT_ROOT

# The grids vary secure aggregation; that run-config key arrives with the secure-aggregation change.
pytestmark = pytest.mark.skipif(
    "secure-aggregation" not in run_config_keys(), reason="run-config key secure-aggregation not in segguided_federation/run_config.py yet"
)

DATA = Path(__file__).with_name("data")
FEDERATED = ("fedavg-generated-att-on-secagg-off-seed0", "fedavg-generated-att-off-secagg-off-seed0")
CENTRALISED = "centralised-generated-att-on-seed0"


def _result(name: str, kind: str) -> ExperimentResult:
    rounds = json.loads((DATA / f"{name}.metrics.json").read_text())["rounds"]
    last = rounds[-1].get("site-evaluation") or {
        "site-01": {"dice-mean": 0.2, "cases": 1.0},
        "site-02": {"dice-mean": 0.4, "cases": 1.0},
    }
    sites = {s: {k: m.get(k, 0.0) for k in ("dice-et", "dice-tc", "dice-wt", "dice-mean", "hd95-et", "hd95-tc",
                                            "hd95-wt", "hd95-mean", "cases")} for s, m in last.items()}
    result = ExperimentResult(
        name=name,
        kind=kind,
        partition="generated",
        factors={"strategy": "fedavg" if kind == "federated" else "none", "partition": "generated",
                 "attention-supervision": "-att-on-" in name, "secure-aggregation": False, "seed": 0},
        fingerprint="f" * 16,
        run_folder=f"runs/{name}",
        rounds=[{"round": r["round"], "central": r["central"]} for r in rounds],
        cross_site=summarise_sites(sites).to_json(),
        workload={"sites": [{"site-id": "site-01", "training-samples": 2, "validation-cases": 3},
                            {"site-id": "site-02", "training-samples": 2, "validation-cases": 1}],
                  "model-bytes": 1000},
        wall_seconds=42.0,
    )
    if kind == "federated":
        score(result, load_grid(PROJECT_ROOT / "experiments" / "tiny.toml").convergence)
    return result


@pytest.fixture(scope="module")
def results() -> list[ExperimentResult]:
    return [_result(name, "federated") for name in FEDERATED] + [_result(CENTRALISED, "centralised")]


def test_scored_rounds_carry_simulated_time_and_projected_score(results):
    grid = load_grid(PROJECT_ROOT / "experiments" / "tiny.toml")
    profile = grid.convergence.site_profiles[0]
    # the slowest site validates 3 cases: 60 + 3 × 15 + 2 × 5 + 90 = 205 s per round
    round_seconds = profile.download_seconds[0] + 3 * 15.0 + 2 * 5.0 + profile.upload_seconds[0]
    trained = [r for r in results[0].rounds if r["round"] > 0]
    assert [r["simulated-seconds"] for r in trained] == pytest.approx([round_seconds, 2 * round_seconds])
    assert 0.0 < results[0].convergence["score"] <= results[0].best_central()
    assert results[0].convergence["rounds-within-budget"] == len(trained)


def test_results_round_trip_through_their_folder(results, tmp_path):
    write_result(tmp_path / "e", results[0])
    assert read_result(tmp_path / "e") == results[0]
    rows = list(csv.DictReader((tmp_path / "e" / "rounds.csv").open()))
    assert [int(r["round"]) for r in rows] == [r["round"] for r in results[0].rounds]
    assert {r["site"] for r in csv.DictReader((tmp_path / "e" / "cross-site.csv").open())} == {"site-01", "site-02"}


def test_attention_pairs_differ_only_in_attention(results):
    pairs = paired(results, "attention-supervision")
    assert [(on.name, off.name) for on, off in pairs] == [FEDERATED]
    assert paired(results, "secure-aggregation") == []


def test_report_renders_tables_plots_and_summary(results, tmp_path):
    grid = load_grid(PROJECT_ROOT / "experiments" / "tiny.toml")
    report = write_report(tmp_path, grid, results, failed={"broken-one": "RunFailed: boom\nlogs"})
    text = report.read_text()
    for name in (*FEDERATED, CENTRALISED):
        assert f"| {name} |" in text
    on, off = results[0].final_central["dice-mean"], results[1].final_central["dice-mean"]
    assert f"| {FEDERATED[0]} | {on:.3f} | {off:.3f} | {on - off:.3f} |" in text
    assert "`broken-one`: RunFailed: boom" in text
    for plot in PLOTS:
        assert (tmp_path / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({plot})" in text
    rows = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert [r["experiment"] for r in rows] == [*FEDERATED, CENTRALISED]
    assert rows[2]["convergence-score"] == ""  # baselines have no simulated federation time
    assert json.loads((tmp_path / "summary.json").read_text())[0]["worst-site"] in ("site-01", "site-02")


def test_several_seeds_are_reported_as_mean_and_std_with_paired_differences(results, tmp_path):
    grid = load_grid(PROJECT_ROOT / "experiments" / "tiny.toml")
    reseeded = []
    for result in results:
        twin = ExperimentResult.from_json(json.loads(json.dumps(result.to_json())))
        twin.name = result.name.replace("-seed0", "-seed1")
        twin.factors = {**twin.factors, "seed": 1}
        twin.rounds[-1]["central"] = {**twin.rounds[-1]["central"], "dice-mean": twin.final_central["dice-mean"] + 0.02}
        reseeded.append(twin)
    text = write_report(tmp_path, grid, [*results, *reseeded]).read_text()
    assert "## Over seeds (mean ± standard deviation)" in text
    on = [results[0].final_central["dice-mean"], reseeded[0].final_central["dice-mean"]]
    mean, std = sum(on) / 2, abs(on[1] - on[0]) / 2**0.5
    assert f"| fedavg-generated-att-on-secagg-off | 2 | {mean:.3f} ± {std:.3f} |" in text
    off_minus_on = results[1].final_central["dice-mean"] - results[0].final_central["dice-mean"]
    assert f"| `fedavg-generated-att-off-secagg-off` − `fedavg-generated-att-on-secagg-off` | 2 | {off_minus_on:+.3f} ± 0.000 |" in text
