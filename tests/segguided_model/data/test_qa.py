"""The QA gate: every failure gets its named reason while the rest of the site still loads."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from segguided_model.data.qa import REASONS, run_qa
from segguided_model.data.synthetic import (
    draw_site_profiles,
    label_map,
    synthesize_case,
    write_case,
)

SIZE = (24, 24, 24)


def _write_site(site: Path, count: int, layout: str = "brats2023", convention: str | None = None) -> list[str]:
    profile = draw_site_profiles(1, 0)[0]
    ids = []
    for number in range(count):
        images, subregions = synthesize_case(profile, SIZE, np.random.default_rng(number))
        case_id = f"BraTS2021_{number:05d}" if layout == "brats2021" else f"BraTS-GLI-{number:05d}-000"
        write_case(site / case_id, layout, images, label_map(subregions, convention or layout), 10.0)
        ids.append(case_id)
    return ids


def _file(site: Path, case_id: str, suffix: str) -> Path:
    return site / case_id / f"{case_id}-{suffix}.nii.gz"


def _rewrite(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> None:
    original = nib.load(path)
    nib.save(nib.Nifti1Image(data, original.affine if affine is None else affine), path)


def _break(site: Path, case_id: str, problem: str) -> None:
    t1c = _file(site, case_id, "t1c")
    if problem == "corrupt-file":
        raw = bytearray(t1c.read_bytes())
        raw[30:230] = bytes(range(200))
        t1c.write_bytes(bytes(raw))
    elif problem == "truncated-file":
        t1c.write_bytes(t1c.read_bytes()[: t1c.stat().st_size // 2])
    elif problem == "empty-file":
        t1c.write_bytes(b"")
    elif problem == "unsupported-dtype":
        _rewrite(t1c, np.asanyarray(nib.load(t1c).dataobj).astype(np.complex64))
    elif problem == "missing-modality":
        _file(site, case_id, "t2f").unlink()
    elif problem == "shape-mismatch":
        _rewrite(t1c, np.asanyarray(nib.load(t1c).dataobj)[:-2])
    elif problem == "affine-mismatch":
        image = nib.load(t1c)
        _rewrite(t1c, np.asanyarray(image.dataobj), image.affine + np.diag([0, 0, 0.5, 0]))
    elif problem == "implausible-spacing":
        for suffix in ("t1n", "t1c", "t2w", "t2f", "seg"):
            path = _file(site, case_id, suffix)
            _rewrite(path, np.asanyarray(nib.load(path).dataobj), np.diag([50.0, 50.0, 50.0, 1.0]))
    elif problem == "non-finite-intensity":
        data = np.asanyarray(nib.load(t1c).dataobj).astype(np.float32)
        data[12, 12, 12] = np.nan
        _rewrite(t1c, data)
    elif problem == "empty-brain":
        _rewrite(t1c, np.zeros(SIZE, dtype=np.int16))
    elif problem == "label-convention-mismatch":  # BraTS 2021 labels (ET = 4) in a 2023 folder
        seg = _file(site, case_id, "seg")
        label = np.asanyarray(nib.load(seg).dataobj).copy()
        label[label == 3] = 4
        _rewrite(seg, label)
    elif problem == "invalid-labels":
        seg = _file(site, case_id, "seg")
        label = np.asanyarray(nib.load(seg).dataobj).copy()
        label[0, 0, 0] = 7
        _rewrite(seg, label)
    else:
        raise AssertionError(problem)


@pytest.fixture(scope="module")
def broken_site(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    problems = sorted(REASONS)
    ids = _write_site(site, len(problems) + 3)
    for case_id, problem in zip(ids, problems):
        _break(site, case_id, problem)
    (site / "scanner-exports").mkdir()
    (site / "scanner-exports" / "log.txt").write_text("not a case")
    return site, dict(zip(ids, problems)), ids[len(problems):]


def test_every_failure_gets_its_named_reason(broken_site):
    site, expected, _ = broken_site
    report = run_qa(site)
    assert {rejection.case_id: rejection.reason for rejection in report.rejected} == expected
    assert all(report.details[case_id] for case_id in expected)


def test_the_rest_of_the_site_still_loads(broken_site):
    site, _, good = broken_site
    report = run_qa(site)
    assert [case.case_id for case in report.valid] == good
    assert report.convention == "brats2023" and all(case.convention == "brats2023" for case in report.valid)
    assert [stray.name for stray in report.strays] == ["scanner-exports"]


def test_summary_is_counts_reasons_and_ids_only(broken_site):
    site, expected, good = broken_site
    summary = run_qa(site).summary()
    assert summary["valid"] == len(good) and summary["rejected"] == len(expected)
    assert summary["rejected-by-reason"] == {reason: 1 for reason in expected.values()}
    assert summary["stray-entries"] == 1
    text = json.dumps(summary)
    assert str(site) not in text and "nii.gz" not in text and "scanner-exports" not in text


def test_mixed_conventions_keep_the_majority_and_reject_the_rest(tmp_path):
    ids = _write_site(tmp_path, 4, layout="brats2021")
    seg = tmp_path / ids[0] / f"{ids[0]}_seg.nii.gz"
    label = np.asanyarray(nib.load(seg).dataobj).copy()
    label[label == 4] = 3  # one case written in the 2023 convention
    _rewrite(seg, label)
    report = run_qa(tmp_path)
    assert report.convention == "brats2021"
    assert [(r.case_id, r.reason) for r in report.rejected] == [(ids[0], "label-convention-mismatch")]
    assert len(report.valid) == 3


def test_forced_convention_rejects_cases_that_do_not_fit(tmp_path):
    _write_site(tmp_path, 2)
    report = run_qa(tmp_path, convention="brats2021")
    assert report.valid == [] and {r.reason for r in report.rejected} == {"label-convention-mismatch"}
