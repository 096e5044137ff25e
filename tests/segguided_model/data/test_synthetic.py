"""Synthetic hospitals: every layout passes the QA gate, BraTS storage, determinism, non-IID sites, safe reuse."""

from __future__ import annotations

import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from segguided_model.data.discovery import discover_cases
from segguided_model.data.qa import run_qa
from segguided_model.data.synthetic import (
    DEFAULT_SIZE,
    MANIFEST_NAME,
    brats_grid_with_largest_axis,
    draw_site_profiles,
    ensure_federation,
    generate_federation,
    synthesize_case,
)

TINY = {"sites": 3, "cases": 2, "val_cases": 1, "size": (24, 24, 16), "seed": 5}


def test_the_default_grid_is_bratss_field_of_view_at_5_mm():
    assert DEFAULT_SIZE == (48, 48, 31) and brats_grid_with_largest_axis(240) == (240, 240, 155)


@pytest.mark.parametrize("layout", ["brats2021", "brats2023"])
def test_federation_has_sites_and_validation_that_pass_qa(tmp_path, layout):
    federation = generate_federation(tmp_path / "fed", layout=layout, **TINY)
    assert [d.name for d in federation.site_dirs] == ["site-1", "site-2", "site-3"]
    for folder, count in [*((d, 2) for d in federation.site_dirs), (federation.validation_dir, 1)]:
        report = run_qa(folder)
        assert len(report.trainable) == count and report.rejected == []
        assert report.layout == layout and report.convention == layout
    labels = set()
    for path in federation.root.rglob("*seg.nii.gz"):
        labels |= set(np.unique(np.asanyarray(nib.load(path).dataobj)).tolist())
    assert labels <= ({0, 1, 2, 4} if layout == "brats2021" else {0, 1, 2, 3})  # the layout's own convention
    ids = [c.case_id for d in [*federation.site_dirs, federation.validation_dir] for c in discover_cases(d).cases]
    assert len(set(ids)) == 7


def test_files_are_stored_like_brats_and_read_back_in_ras(tmp_path):
    federation = generate_federation(tmp_path / "fed", **{**TINY, "sites": 1, "cases": 1, "val_cases": 0})
    image = nib.load(next(federation.site_dirs[0].rglob("*t1n.nii.gz")))
    assert nib.aff2axcodes(image.affine) == ("L", "P", "S") and image.header.get_zooms() == (10.0, 10.0, 10.0)
    profile = draw_site_profiles(1, 5)[0]
    case = synthesize_case(profile, (24, 24, 16), np.random.default_rng(np.random.SeedSequence(5, spawn_key=(0, 0))))
    ras = np.asanyarray(nib.as_closest_canonical(image).dataobj)
    assert np.array_equal(ras, case.images["t1"])  # the phantom's RAS arrays, unchanged


def test_generation_is_deterministic_by_seed(tmp_path):
    first = generate_federation(tmp_path / "a", **TINY)
    second = generate_federation(tmp_path / "b", **TINY)
    for left, right in zip(sorted(first.root.rglob("*.nii.gz")), sorted(second.root.rglob("*.nii.gz"))):
        assert left.relative_to(first.root) == right.relative_to(second.root)
        assert np.array_equal(np.asanyarray(nib.load(left).dataobj), np.asanyarray(nib.load(right).dataobj))


def test_sites_differ_in_intensity_statistics(tmp_path):
    federation = generate_federation(tmp_path / "fed", **{**TINY, "cases": 3})
    site_means = []
    for site_dir in federation.site_dirs:
        cases = discover_cases(site_dir).cases
        means = []
        for case in cases:
            data = np.asanyarray(nib.load(case.image_paths["t1"]).dataobj)
            means.append(data[data > 0].mean())
        site_means.append(means)
    site_means = np.array(site_means)  # (sites, cases)
    between = site_means.mean(axis=1)
    assert between.max() > 1.3 * between.min()
    # more spread between sites than within them: the sites are not IID
    assert between.std() > site_means.std(axis=1).mean()


def test_bad_parameters_are_named(tmp_path):
    with pytest.raises(ValueError, match="sites=0"):
        generate_federation(tmp_path / "x", sites=0)
    with pytest.raises(ValueError, match="'msd'"):
        generate_federation(tmp_path / "x", layout="msd")
    with pytest.raises(ValueError, match=r"\(4, 4, 4\)"):
        generate_federation(tmp_path / "x", size=(4, 4, 4))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="full"):
        generate_federation(tmp_path / "full")


def test_ensure_reuses_identical_data_and_regenerates_on_change(tmp_path):
    out = tmp_path / "fed"
    federation = ensure_federation(out, **TINY)
    marker = next(federation.site_dirs[0].rglob("*.nii.gz"))
    stamp = marker.stat().st_mtime_ns
    assert ensure_federation(out, **TINY) == federation and marker.stat().st_mtime_ns == stamp
    changed = ensure_federation(out, **{**TINY, "cases": 1})
    assert len(discover_cases(changed.site_dirs[0]).cases) == 1
    next(changed.site_dirs[0].iterdir()).joinpath("extra").mkdir()  # incomplete or tampered: regenerate
    ensure_federation(out, **{**TINY, "cases": 1})
    assert not any(p.name == "extra" for p in out.rglob("extra"))


def test_ensure_refuses_to_replace_a_foreign_folder(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "patient.nii.gz").write_bytes(b"")
    with pytest.raises(FileExistsError, match=MANIFEST_NAME):
        ensure_federation(tmp_path / "data", **TINY)


def test_concurrent_processes_share_one_generation(tmp_path):
    out = tmp_path / "fed"
    code = (
        "import sys; from segguided_model.data.synthetic import ensure_federation; "
        "ensure_federation(sys.argv[1], sites=2, cases=2, val_cases=1, size=(24, 24, 16), seed=1)"
    )
    processes = [subprocess.Popen([sys.executable, "-c", code, str(out)]) for _ in range(3)]
    assert [p.wait(timeout=120) for p in processes] == [0, 0, 0]
    assert len(list(out.rglob("*.nii.gz"))) == 5 * 5
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name or ".stale" in p.name]
