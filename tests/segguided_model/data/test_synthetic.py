"""Synthetic hospitals: contrasts as on real scans, determinism, non-IID sites, safe reuse."""

from __future__ import annotations

import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from segguided_model.data.discovery import discover_cases
from segguided_model.data.qa import run_qa
from segguided_model.data.synthetic import (
    MANIFEST_NAME,
    draw_site_profiles,
    ensure_federation,
    generate_federation,
    synthesize_case,
)

SIZE = (32, 32, 32)
TINY = {"sites": 3, "cases": 2, "val_cases": 1, "size": (24, 24, 24), "seed": 5}


def _case(seed: int):
    return synthesize_case(draw_site_profiles(1, 0)[0], SIZE, np.random.default_rng(seed))


def test_subregion_contrasts_follow_real_scans():
    images, sub = _case(0)
    brain = images["t1"] > 0
    healthy = brain & ~(sub["NCR"] | sub["ED"] | sub["ET"])
    mean = {m: {name: images[m][mask].mean() for name, mask in {**sub, "healthy": healthy}.items()} for m in images}
    assert mean["t1c"]["ET"] > 1.3 * mean["t1c"]["healthy"]  # enhancing rim bright on T1c
    assert mean["t1c"]["NCR"] < 0.6 * mean["t1c"]["ET"]  # necrosis dark on T1c
    assert mean["flair"]["ED"] > 1.3 * mean["flair"]["healthy"]  # oedema bright on FLAIR
    assert mean["t2"]["ED"] > mean["t2"]["healthy"]  # and on T2


def test_subregions_are_disjoint_nested_and_inside_the_brain():
    for seed in range(4):
        images, sub = _case(seed)
        assert not (sub["NCR"] & sub["ET"]).any() and not (sub["ED"] & (sub["NCR"] | sub["ET"])).any()
        whole = sub["NCR"] | sub["ED"] | sub["ET"]
        assert whole.any() and not (whole & (images["t1"] == 0)).any()
        radius = (whole.sum() * 3 / (4 * np.pi)) ** (1 / 3)
        assert 0.08 * max(SIZE) < radius < 0.35 * max(SIZE)


def test_same_seed_gives_identical_cases_and_another_seed_does_not():
    first, second, other = _case(3), _case(3), _case(4)
    assert all(np.array_equal(first[0][m], second[0][m]) for m in first[0])
    assert not np.array_equal(first[0]["t1c"], other[0]["t1c"])


def test_federation_has_sites_and_validation_that_pass_qa(tmp_path):
    federation = generate_federation(tmp_path / "fed", layout="brats2021", **TINY)
    assert [d.name for d in federation.site_dirs] == ["site-1", "site-2", "site-3"]
    for folder, count in [*((d, 2) for d in federation.site_dirs), (federation.validation_dir, 1)]:
        report = run_qa(folder)
        assert len(report.trainable) == count and report.rejected == []
        assert report.layout == "brats2021" and report.convention == "brats2021"
    ids = [c.case_id for d in [*federation.site_dirs, federation.validation_dir] for c in discover_cases(d).cases]
    assert len(set(ids)) == 7


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
    with pytest.raises(ValueError, match=r"\(8, 8, 8\)"):
        generate_federation(tmp_path / "x", size=(8, 8, 8))
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
        "ensure_federation(sys.argv[1], sites=2, cases=2, val_cases=1, size=(24, 24, 24), seed=1)"
    )
    processes = [subprocess.Popen([sys.executable, "-c", code, str(out)]) for _ in range(3)]
    assert [p.wait(timeout=120) for p in processes] == [0, 0, 0]
    assert len(list(out.rglob("*.nii.gz"))) == 5 * 5
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name or ".stale" in p.name]
