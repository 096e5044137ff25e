"""The QA gate: every failure gets its named reason while the rest of the site still loads."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from segguided_model.data.preprocessing import load_case
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
        case = synthesize_case(profile, SIZE, np.random.default_rng(number))
        case_id = f"BraTS2021_{number:05d}" if layout == "brats2021" else f"BraTS-GLI-{number:05d}-000"
        write_case(site / case_id, layout, case.images, label_map(case.subregions, convention or layout), 10.0)
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
    elif problem == "constant-intensity":
        _rewrite(t1c, np.full(SIZE, 100, dtype=np.int16))
    elif problem == "unsupported-shape":
        data = np.asanyarray(nib.load(t1c).dataobj)
        _rewrite(t1c, np.stack([data, data], axis=-1))
    elif problem == "broken-link":  # FLAIR on a share that is not mounted
        flair = _file(site, case_id, "t2f")
        flair.unlink()
        flair.symlink_to(site / "unmounted-share" / flair.name)
    elif problem == "duplicate-file":  # the same modality as .nii and .nii.gz
        nib.save(nib.load(t1c), t1c.with_name(t1c.name.removesuffix(".gz")))
    elif problem == "unrecognised-file":  # a segmentation under a name the layout does not know
        seg = _file(site, case_id, "seg")
        seg.rename(seg.with_name(f"{case_id}_Segm.nii.gz"))
    elif problem == "label-convention-mismatch":  # BraTS 2021 labels (ET = 4) in a 2023 folder
        seg = _file(site, case_id, "seg")
        label = np.asanyarray(nib.load(seg).dataobj).copy()
        label[label == 3] = 4
        label[tuple(np.argwhere(label > 0)[0])] = 4  # also where a coarse phantom's rim left no ET
        _rewrite(seg, label)
    elif problem == "invalid-labels":
        seg = _file(site, case_id, "seg")
        label = np.asanyarray(nib.load(seg).dataobj).copy()
        label[0, 0, 0] = 7
        _rewrite(seg, label)
    else:
        raise AssertionError(problem)


DECIDED_ACROSS_CASES = {"label-convention-undecided"}
"""Reasons that concern the site's cases together, not one broken case (tested apart)."""


@pytest.fixture(scope="module")
def broken_site(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    problems = sorted(set(REASONS) - DECIDED_ACROSS_CASES)
    ids = _write_site(site, len(problems) + 3)
    for case_id, problem in zip(ids, problems):
        _break(site, case_id, problem)
    (site / "scanner-exports").mkdir()
    (site / "scanner-exports" / "log.txt").write_text("not a case")
    return site, dict(zip(ids, problems)), ids[len(problems):]


def test_every_failure_gets_its_named_reason(broken_site):
    site, expected, _ = broken_site
    report = run_qa(site, convention="brats2023")
    assert {rejection.case_id: rejection.reason for rejection in report.rejected} == expected
    assert all(report.details[case_id] for case_id in expected)


def test_details_name_the_file_and_what_is_wrong(broken_site):
    site, expected, _ = broken_site
    details = run_qa(site, convention="brats2023").details
    by_reason = {reason: details[case_id] for case_id, reason in expected.items()}
    assert "is a broken link to" in by_reason["broken-link"] and "unmounted-share" in by_reason["broken-link"]
    assert "_Segm.nii.gz" in by_reason["unrecognised-file"]
    assert ".nii and" in by_reason["duplicate-file"] or ".nii.gz and" in by_reason["duplicate-file"]
    assert "constant, every voxel is 100" in by_reason["constant-intensity"]
    assert "NaN or infinite" in by_reason["non-finite-intensity"]


def test_the_rest_of_the_site_still_loads(broken_site):
    site, _, good = broken_site
    report = run_qa(site, convention="brats2023")
    assert [case.case_id for case in report.valid] == good
    assert report.convention == "brats2023" and all(case.convention == "brats2023" for case in report.valid)
    assert [stray.name for stray in report.strays] == ["scanner-exports"]


def test_summary_is_counts_reasons_and_ids_only(broken_site):
    site, expected, good = broken_site
    summary = run_qa(site, convention="brats2023").summary()
    assert summary["valid"] == len(good) and summary["rejected"] == len(expected)
    assert summary["rejected-by-reason"] == {reason: 1 for reason in expected.values()}
    assert summary["stray-entries"] == 1
    text = json.dumps(summary)
    assert str(site) not in text and "nii" not in text and "scanner-exports" not in text and "unmounted" not in text


def _relabel(site: Path, case_id: str, suffix: str, change) -> np.ndarray:
    seg = site / case_id / f"{case_id}{suffix}"
    label = np.asanyarray(nib.load(seg).dataobj).copy()
    label = change(label)
    _rewrite(seg, label)
    return label


def test_undeclared_cases_that_disagree_are_all_rejected_not_voted(tmp_path):
    ids = _write_site(tmp_path, 4, layout="brats2021")
    _relabel(tmp_path, ids[0], "_seg.nii.gz", lambda label: np.where(label == 4, 3, label))  # one in 2023 values
    report = run_qa(tmp_path)
    assert report.convention is None and report.valid == []
    assert {(r.case_id, r.reason) for r in report.rejected} == {(i, "label-convention-undecided") for i in ids}
    detail = report.details[ids[0]]
    assert "3 case(s) read as brats2021 or brats2024" in detail and "label-convention" in detail


def test_declared_convention_keeps_the_cases_that_fit_and_rejects_the_rest(tmp_path):
    ids = _write_site(tmp_path, 4, layout="brats2021")
    _relabel(tmp_path, ids[0], "_seg.nii.gz", lambda label: np.where(label == 4, 3, label))
    report = run_qa(tmp_path, convention="brats2021")
    assert report.convention == "brats2021"
    assert [(r.case_id, r.reason) for r in report.rejected] == [(ids[0], "label-convention-mismatch")]
    assert [case.case_id for case in report.valid] == ids[1:]


def test_brats2024_site_reads_cavity_only_cases_as_brats2024(tmp_path):
    # BraTS 2023 naming; two post-treatment cases with resection cavity (4) and no enhancing
    # tumour, one with both ET (3) and cavity: a vote would call the site BraTS 2021.
    ids = _write_site(tmp_path, 3, layout="brats2023")
    cavity_only = _relabel(tmp_path, ids[0], "-seg.nii.gz", lambda label: np.where(label == 3, 4, np.where(label == 1, 2, label)))
    _relabel(tmp_path, ids[1], "-seg.nii.gz", lambda label: np.where(label == 3, 4, np.where(label == 1, 2, label)))
    _relabel(tmp_path, ids[2], "-seg.nii.gz", lambda label: np.where((label == 2) & (np.indices(label.shape)[0] % 2 == 0), 4, label))
    assert set(np.unique(cavity_only)) == {0, 2, 4}
    report = run_qa(tmp_path)
    assert report.convention == "brats2024" and report.rejected == []
    assert [case.convention for case in report.valid] == ["brats2024"] * 3
    item = load_case(report.valid[0])
    et, _, wt = item["regions"].bool()
    assert int(et.sum()) == 0  # the cavity is not enhancing tumour
    assert int(wt.sum()) == int((cavity_only == 2).sum())


def test_forced_convention_rejects_cases_that_do_not_fit(tmp_path):
    _write_site(tmp_path, 2)
    report = run_qa(tmp_path, convention="brats2021")
    assert report.valid == [] and {r.reason for r in report.rejected} == {"label-convention-mismatch"}


def test_uncompressed_and_4d_singleton_cases_pass(tmp_path):
    ids = _write_site(tmp_path, 2)
    for case_id, four_d in zip(ids, (False, True)):
        for path in sorted((tmp_path / case_id).iterdir()):
            data = np.asanyarray(nib.load(path).dataobj)
            nib.save(nib.Nifti1Image(data[..., None] if four_d else data, nib.load(path).affine), path.with_name(path.name.removesuffix(".gz")))
            path.unlink()
    report = run_qa(tmp_path)
    assert report.rejected == [] and [case.case_id for case in report.trainable] == ids
    assert report.valid[0].label_path.name.endswith("-seg.nii")


def _count_reads(monkeypatch) -> list[str]:
    """Record every file the QA gate reads (its two readers), still reading them."""
    import segguided_model.data.qa as qa

    reads: list[str] = []
    for name in ("read_volume", "read_label_map"):
        original = getattr(qa, name)

        def counting(path, *args, _original=original, **kwargs):
            reads.append(Path(path).name)
            return _original(path, *args, **kwargs)

        monkeypatch.setattr(qa, name, counting)
    return reads


def test_a_second_qa_of_an_unchanged_site_reads_no_image_data(broken_site, tmp_path, monkeypatch):
    site, expected, good = broken_site
    first = run_qa(site, convention="brats2023", cache_dir=tmp_path)
    reads = _count_reads(monkeypatch)
    second = run_qa(site, convention="brats2023", cache_dir=tmp_path)
    assert reads == []
    assert (second.checked, second.reused) == (0, first.checked)
    assert second.rejected == first.rejected and second.details == first.details
    assert [case.case_id for case in second.valid] == good and second.convention == first.convention


def test_a_changed_file_is_checked_again_and_only_its_case(tmp_path, monkeypatch):
    site, cache = tmp_path / "site", tmp_path / "cache"
    ids = _write_site(site, 3)
    assert run_qa(site, cache_dir=cache).checked == 3
    _break(site, ids[1], "truncated-file")  # same name, new size and time
    reads = _count_reads(monkeypatch)
    report = run_qa(site, cache_dir=cache)
    assert (report.checked, report.reused) == (1, 2)
    assert set(reads) <= {p.name for p in (site / ids[1]).iterdir()} and reads
    assert [(r.case_id, r.reason) for r in report.rejected] == [(ids[1], "truncated-file")]


def test_a_new_case_is_checked_and_a_removed_one_forgotten(tmp_path):
    site, cache = tmp_path / "site", tmp_path / "cache"
    _write_site(site, 2)
    run_qa(site, cache_dir=cache)
    extra = tmp_path / "extra"
    (moved,) = _write_site(extra, 3)[2:]
    (extra / moved).rename(site / moved)
    report = run_qa(site, cache_dir=cache)
    assert (report.checked, report.reused) == (1, 2)
    import shutil

    shutil.rmtree(site / moved)
    report = run_qa(site, cache_dir=cache)
    assert (report.checked, report.reused, len(report.valid)) == (0, 2, 2)
    assert moved not in json.loads((cache / "qa-results.json").read_text())["cases"]
