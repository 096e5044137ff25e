"""Case discovery: each layout, stray entries, inference-only cases, forced settings."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from segguided_model.data.discovery import discover_cases
from segguided_model.data.layouts import MODALITIES, MSD_CHANNEL_ORDER
from segguided_model.data.synthetic import (
    draw_site_profiles,
    label_map,
    synthesize_case,
    write_case,
)

SIZE = (24, 24, 24)


def _case(seed: int = 0):
    case = synthesize_case(draw_site_profiles(1, 0)[0], SIZE, np.random.default_rng(seed))
    return case.images, case.subregions


def _write(site: Path, case_id: str, layout: str, convention: str, with_label: bool = True) -> None:
    images, subregions = _case()
    write_case(site / case_id, layout, images, label_map(subregions, convention) if with_label else None, 10.0)


def test_brats2021_layout_is_detected_with_its_convention(tmp_path):
    for number in range(2):
        _write(tmp_path, f"BraTS2021_{number:05d}", "brats2021", "brats2021")
    found = discover_cases(tmp_path)
    assert found.layout == "brats2021" and found.convention == "brats2021"
    assert [case.case_id for case in found.cases] == ["BraTS2021_00000", "BraTS2021_00001"]
    assert found.cases[0].image_paths["t1c"].name == "BraTS2021_00000_t1ce.nii.gz"
    assert found.cases[0].label_path.name == "BraTS2021_00000_seg.nii.gz"


@pytest.mark.parametrize("case_id", ["BraTS-GLI-00001-000", "BraTS-MEN-00002-001", "BraTS-PED-00003-000"])
def test_brats2023_layout_accepts_any_brats_prefix(tmp_path, case_id):
    _write(tmp_path, case_id, "brats2023", "brats2023")
    found = discover_cases(tmp_path)
    assert found.layout == "brats2023" and found.convention == "brats2023"
    assert found.cases[0].image_paths["flair"].name == f"{case_id}-t2f.nii.gz"


def test_msd_layout_reads_4d_images_and_unlabelled_test_images(tmp_path):
    images, subregions = _case()
    volume = np.stack([images[m] for m in MSD_CHANNEL_ORDER], axis=-1)
    for folder, name in (("imagesTr", "BRATS_001"), ("imagesTs", "BRATS_485")):
        (tmp_path / folder).mkdir()
        nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / folder / f"{name}.nii.gz")
    (tmp_path / "labelsTr").mkdir()
    nib.save(nib.Nifti1Image(label_map(subregions, "msd"), np.eye(4)), tmp_path / "labelsTr" / "BRATS_001.nii.gz")
    (tmp_path / "dataset.json").write_text("{}")
    found = discover_cases(tmp_path)
    assert found.layout == "msd" and found.convention == "msd" and found.strays == []
    labelled, unlabelled = found.cases
    assert labelled.case_id == "BRATS_001" and labelled.has_label
    assert labelled.channel_order == MSD_CHANNEL_ORDER
    assert set(labelled.image_paths) == set(MODALITIES)
    assert unlabelled.case_id == "BRATS_485" and not unlabelled.has_label


def test_stray_entries_are_reported_and_hidden_ones_ignored(tmp_path):
    _write(tmp_path, "BraTS-GLI-00001-000", "brats2023", "brats2023")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not a case")
    (tmp_path / "survival.csv").write_text("id,days\n")
    (tmp_path / ".DS_Store").write_text("")
    found = discover_cases(tmp_path)
    assert len(found.cases) == 1
    assert sorted(stray.name for stray in found.strays) == ["notes", "survival.csv"]


def test_case_without_segmentation_is_inference_only(tmp_path):
    _write(tmp_path, "BraTS-GLI-00001-000", "brats2023", "brats2023", with_label=False)
    (case,) = discover_cases(tmp_path).cases
    assert case.label_path is None and not case.has_label


def test_case_missing_a_modality_is_broken_not_dropped(tmp_path):
    _write(tmp_path, "BraTS-GLI-00001-000", "brats2023", "brats2023")
    (tmp_path / "BraTS-GLI-00001-000" / "BraTS-GLI-00001-000-t2f.nii.gz").unlink()
    found = discover_cases(tmp_path)
    assert found.cases == []
    assert [(b.case_id, b.reason) for b in found.broken] == [("BraTS-GLI-00001-000", "missing-modality")]
    assert "t2f" in found.broken[0].detail


def test_forced_layout_and_convention_override_detection(tmp_path):
    _write(tmp_path, "BraTS-GLI-00001-000", "brats2023", "brats2023")
    found = discover_cases(tmp_path, layout="brats2021", convention="brats2024")
    assert found.cases == [] and [s.name for s in found.strays] == ["BraTS-GLI-00001-000"]
    found = discover_cases(tmp_path, convention="brats2024")
    assert found.convention == "brats2024" and found.cases[0].convention == "brats2024"


def test_bad_arguments_name_the_value(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing-site"):
        discover_cases(tmp_path / "missing-site")
    with pytest.raises(ValueError, match="'nifti'"):
        discover_cases(tmp_path, layout="nifti")
    with pytest.raises(ValueError, match="'brats1999'"):
        discover_cases(tmp_path, convention="brats1999")


def _case_dir(site: Path, case_id: str = "BraTS2021_00001") -> Path:
    _write(site, case_id, "brats2021", "brats2021")
    return site / case_id


def _to_uncompressed(path: Path) -> Path:
    target = path.with_name(path.name.removesuffix(".gz"))
    nib.save(nib.load(path), target)
    path.unlink()
    return target


def test_uncompressed_nii_files_are_cases_like_nii_gz(tmp_path):
    all_nii = _case_dir(tmp_path, "BraTS2021_00001")
    for path in sorted(all_nii.iterdir()):
        _to_uncompressed(path)
    mixed = _case_dir(tmp_path, "BraTS2021_00002")
    _to_uncompressed(mixed / "BraTS2021_00002_seg.nii.gz")  # .nii segmentation beside .nii.gz images
    found = discover_cases(tmp_path)
    assert found.strays == [] and found.broken == []
    first, second = found.cases
    assert first.image_paths["t1c"].name == "BraTS2021_00001_t1ce.nii" and first.has_label
    assert second.label_path.name == "BraTS2021_00002_seg.nii" and second.image_paths["t1"].name.endswith(".nii.gz")


def test_dead_links_are_broken_links_naming_the_path_not_missing_or_unlabelled(tmp_path):
    for case_id, dead in (("BraTS2021_00001", "seg"), ("BraTS2021_00002", "flair")):
        link = _case_dir(tmp_path, case_id) / f"{case_id}_{dead}.nii.gz"
        link.unlink()
        link.symlink_to(tmp_path / "annex" / link.name)
    (tmp_path / "BraTS2021_00003").symlink_to(tmp_path / "unmounted" / "BraTS2021_00003")
    found = discover_cases(tmp_path)
    assert found.cases == []
    assert [(b.case_id, b.reason) for b in found.broken] == [
        ("BraTS2021_00001", "broken-link"), ("BraTS2021_00002", "broken-link"), ("BraTS2021_00003", "broken-link"),
    ]
    assert f"{tmp_path}/BraTS2021_00001/BraTS2021_00001_seg.nii.gz is a broken link to {tmp_path}/annex/" in found.broken[0].detail
    assert "unmounted" in found.broken[2].detail


def test_a_nifti_the_layout_does_not_name_is_reported_not_passed_over(tmp_path):
    # BraTS 2020's case 355 ships its segmentation as W39_1998.09.19_Segm.nii.
    case = _case_dir(tmp_path, "BraTS20_Training_355")
    (case / "BraTS20_Training_355_seg.nii.gz").rename(case / "W39_1998.09.19_Segm.nii")
    (case / "notes.txt").write_text("reader's notes")
    found = discover_cases(tmp_path)
    assert found.cases == []
    (broken,) = found.broken
    assert broken.reason == "unrecognised-file" and "W39_1998.09.19_Segm.nii" in broken.detail
    assert "BraTS20_Training_355_seg.nii.gz" in broken.detail  # what it expected
    assert [s.name for s in found.strays] == ["BraTS20_Training_355/notes.txt"]


def test_same_file_twice_is_a_duplicate(tmp_path):
    case = _case_dir(tmp_path)
    nib.save(nib.load(case / "BraTS2021_00001_t2.nii.gz"), case / "BraTS2021_00001_t2.nii")
    (broken,) = discover_cases(tmp_path).broken
    assert broken.reason == "duplicate-file" and "BraTS2021_00001_t2.nii" in broken.detail


def test_hidden_entries_are_skipped_inside_case_folders_too(tmp_path):
    case = _case_dir(tmp_path)
    (case / "._BraTS2021_00001_seg.nii.gz").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (case / ".ipynb_checkpoints").mkdir()
    (tmp_path / "__MACOSX").mkdir()
    (tmp_path / ".ipynb_checkpoints").mkdir()
    found = discover_cases(tmp_path)
    assert [c.case_id for c in found.cases] == ["BraTS2021_00001"] and found.broken == [] and found.strays == []


def test_msd_accepts_nii_and_reports_dead_and_unmatched_labels(tmp_path):
    images, subregions = _case()
    volume = np.stack([images[m] for m in MSD_CHANNEL_ORDER], axis=-1)
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    for name in ("BRATS_001", "BRATS_002"):
        nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "imagesTr" / f"{name}.nii")
    nib.save(nib.Nifti1Image(label_map(subregions, "msd"), np.eye(4)), tmp_path / "labelsTr" / "BRATS_001.nii.gz")
    (tmp_path / "labelsTr" / "BRATS_002.nii.gz").symlink_to(tmp_path / "gone.nii.gz")
    nib.save(nib.Nifti1Image(label_map(subregions, "msd"), np.eye(4)), tmp_path / "labelsTr" / "BRATS_404.nii.gz")
    found = discover_cases(tmp_path)
    assert [(c.case_id, c.label_path.name) for c in found.cases] == [("BRATS_001", "BRATS_001.nii.gz")]
    assert [(b.case_id, b.reason) for b in found.broken] == [("BRATS_002", "broken-link")]
    assert [s.name for s in found.strays] == ["labelsTr/BRATS_404.nii.gz"]
