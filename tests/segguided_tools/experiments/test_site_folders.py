"""Partition folders: the pooled cases regrouped into sites as symlinks the clients can read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from segguided_federation.run_config import RunConfig
from segguided_federation.site_data import load_site
from segguided_tools.experiments.grid import parse_grid
from segguided_tools.experiments.site_folders import SiteFolderError, prepare_data


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    csv = results / "parts.csv"
    # the generated case ids are BraTS-GLI-0000N-000: site 1 holds 0-2, site 2 holds 3-5
    csv.write_text("Partition_ID,Subject_ID\n" + "".join(
        f"{p},BraTS-GLI-{n:05d}-000\n" for p, n in [(2, 0), (2, 1), (10, 2), (10, 3), (10, 4), (7, 99)]
    ))
    spec = {
        "name": "g",
        "data": {"synthetic-sites": 2, "synthetic-cases-per-site": 3, "synthetic-validation-cases": 1,
                 "synthetic-size": 32},
        "partitions": [
            {"name": "generated", "kind": "generated"},
            {"name": "iid", "kind": "iid", "sites": 3},
            {"name": "skewed", "kind": "skewed", "sites": 2, "skew": 0.3},
            {"name": "fets", "kind": "fets", "csv": str(csv)},
        ],
    }
    (results / "grid-used.json").write_text(json.dumps(spec))
    return results, prepare_data(parse_grid(spec), results)


def _cases(site_dir: Path) -> list[str]:
    return sorted(p.name for p in site_dir.iterdir())


def test_generated_partition_keeps_the_synthetic_sites(prepared):
    results, data = prepared
    sites = data.site_dirs["generated"]
    assert [s.name for s in sites] == ["site-01", "site-02"]
    assert _cases(sites[0]) == [f"BraTS-GLI-{n:05d}-000" for n in range(3)]
    for link in sites[0].iterdir():
        assert link.is_symlink() and link.resolve().parent == results / "data" / "synthetic" / "site-1"
    assert data.validation_dir == results / "data" / "synthetic" / "validation"
    assert data.partition_dir("generated") == results / "data" / "partitions" / "generated"


def test_iid_and_skewed_partitions_use_every_case_once(prepared):
    _, data = prepared
    pool = sorted(f"BraTS-GLI-{n:05d}-000" for n in range(6))
    for name, sites in (("iid", 3), ("skewed", 2)):
        folders = data.site_dirs[name]
        assert len(folders) == sites
        assert sorted(case for folder in folders for case in _cases(folder)) == pool
    assert [len(_cases(f)) for f in data.site_dirs["iid"]] == [2, 2, 2]


def test_fets_partition_follows_the_csv_in_numeric_site_order(prepared):
    _, data = prepared
    folders = data.site_dirs["fets"]
    # partition ids 2 < 7 < 10 numerically; 7 lists only a missing subject and is left out
    assert [f.name for f in folders] == ["fets-002", "fets-010"]
    assert _cases(folders[0]) == ["BraTS-GLI-00000-000", "BraTS-GLI-00001-000"]
    assert len(_cases(folders[1])) == 3


def test_clients_read_symlinked_site_folders_through_the_qa_gate(prepared):
    _, data = prepared
    config = RunConfig(validation_fraction=0.34, data_dir=str(data.partition_dir("iid")))
    site = load_site({"data-path": str(data.site_dirs["iid"][0])}, config)
    assert site.rejected == []
    assert len(site.training_cases) + len(site.validation_cases) == 2


def test_preparing_again_rewrites_the_links_and_leaves_the_pool_alone(prepared):
    results, data = prepared
    grid = parse_grid(json.loads((results / "grid-used.json").read_text()))
    again = prepare_data(grid, results)
    assert again.site_dirs == data.site_dirs
    assert len(list((results / "data" / "synthetic" / "site-1").iterdir())) == 3
    assert all(link.resolve().is_dir() for link in again.site_dirs["iid"][0].iterdir())


def test_too_few_cases_for_the_sites_is_named(tmp_path, prepared):
    grid = parse_grid({
        "name": "g",
        "data": {"synthetic-sites": 2, "synthetic-cases-per-site": 3, "synthetic-validation-cases": 1,
                 "synthetic-size": 32},
        "partitions": [{"name": "many", "kind": "iid", "sites": 9}],
    })
    with pytest.raises(SiteFolderError, match="partition 'many': cannot split 6 case"):
        prepare_data(grid, prepared[0])
