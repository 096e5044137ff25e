"""Deterministic preprocessing: items, canonical channels, regions, RAS and back."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Compose

from segguided_model.data.discovery import case_from_folder
from segguided_model.data.layouts import MODALITIES, MSD_CHANNEL_ORDER, CaseRecord
from segguided_model.data.preprocessing import (
    LoadVolumed,
    StackModalitiesd,
    case_to_item,
    load_case,
    restore_orientation,
)
from segguided_model.labels import CONVENTIONS, region_masks

SHAPE = (12, 14, 10)
# Permuted, flipped and anisotropic: axis codes (S, L, A) rather than RAS.
NON_RAS_AFFINE = np.array([[0, -1.0, 0, 10], [0, 0, 1.5, -5], [2.0, 0, 0, 3], [0, 0, 0, 1]])


def tumour_label() -> np.ndarray:
    label = np.zeros(SHAPE, dtype=np.uint8)
    label[2:7, 3:10, 1:6] = 2
    label[3:6, 4:8, 2:5] = 1
    label[4:5, 5:7, 3:4] = 3
    return label


def write_brats2023_case(root: Path, affine=NON_RAS_AFFINE, label=True, ending=".nii.gz", four_d=False) -> Path:
    case = root / "BraTS-GLI-00001-000"
    case.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def save(data: np.ndarray, name: str) -> None:
        nib.save(nib.Nifti1Image(data[..., None] if four_d else data, affine), case / f"{case.name}-{name}{ending}")

    for index, suffix in enumerate(("t1n", "t1c", "t2w", "t2f")):
        # each modality has its own constant offset so the channel order is visible
        save((rng.normal(size=SHAPE) + 10 * (index + 1)).astype(np.float32), suffix)
    if label:
        save(tumour_label(), "seg")
    return case


def test_item_has_one_key_per_modality_label_and_convention(tmp_path):
    record = case_from_folder(write_brats2023_case(tmp_path))
    item = case_to_item(record)
    assert [item[m] for m in MODALITIES] == [str(record.image_paths[m]) for m in MODALITIES]
    assert item["label"] == str(record.label_path)
    assert item["convention"] == "brats2023" and item["case_id"] == record.case_id


def test_loaded_case_is_normalised_four_channel_ras_with_regions(tmp_path):
    item = load_case(case_from_folder(write_brats2023_case(tmp_path)))
    image = item["image"]
    assert image.shape == (4, 14, 10, 12) and image.dtype == torch.float32
    assert "".join(nib.aff2axcodes(image.affine.numpy())) == "RAS"
    assert torch.allclose(image.mean(dim=(1, 2, 3)), torch.zeros(4), atol=1e-4)
    assert item["regions"].shape == item["subregions"].shape == (3, 14, 10, 12)
    assert item["regions"].dtype == torch.float32
    assert item["regions"].sum() > 0


def test_spacing_is_recorded_along_the_ras_axes(tmp_path):
    # NON_RAS_AFFINE: file axes (S 2 mm, L 1 mm, A 1.5 mm) become RAS axes of 1, 1.5 and 2 mm.
    item = load_case(case_from_folder(write_brats2023_case(tmp_path)))
    assert item["spacing"] == pytest.approx((1.0, 1.5, 2.0))


@pytest.mark.parametrize("ending, four_d", [(".nii", False), (".nii.gz", True), (".nii", True)])
def test_uncompressed_and_4d_singleton_files_load_like_3d_nii_gz(tmp_path, ending, four_d):
    plain = load_case(case_from_folder(write_brats2023_case(tmp_path / "plain")))
    other = load_case(case_from_folder(write_brats2023_case(tmp_path / "other", ending=ending, four_d=four_d)))
    assert other["image"].shape == plain["image"].shape == (4, 14, 10, 12)
    assert torch.equal(other["image"], plain["image"]) and torch.equal(other["regions"], plain["regions"])
    np.testing.assert_allclose(other["image"].affine.numpy(), plain["image"].affine.numpy())


def test_restore_orientation_aligns_voxel_for_voxel_with_a_non_ras_input(tmp_path):
    item = load_case(case_from_folder(write_brats2023_case(tmp_path)))
    expected = region_masks(torch.from_numpy(tumour_label()), CONVENTIONS["brats2023"])
    restored = restore_orientation(item["regions"], item["image"])
    assert restored.shape == (3, *SHAPE)
    assert torch.equal(restored.bool(), expected)


def test_ras_input_keeps_its_grid(tmp_path):
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    item = load_case(case_from_folder(write_brats2023_case(tmp_path, affine=affine)))
    assert item["image"].shape == (4, *SHAPE)
    np.testing.assert_array_equal(item["label"][0].numpy(), tumour_label())


def test_msd_4d_image_is_reordered_to_canonical_modalities(tmp_path):
    volume = np.stack([np.full(SHAPE, 10.0 * (MODALITIES.index(m) + 1)) for m in MSD_CHANNEL_ORDER], axis=-1)
    volume += np.random.default_rng(0).normal(size=volume.shape)
    path = tmp_path / "BRATS_001.nii.gz"
    nib.save(nib.Nifti1Image(volume.astype(np.float32), np.eye(4)), path)
    record = CaseRecord("BRATS_001", {m: path for m in MODALITIES}, None, "msd", "msd", MSD_CHANNEL_ORDER)
    item = case_to_item(record)
    assert item["image"] == str(path) and item["channel_order"] == MSD_CHANNEL_ORDER
    raw = Compose([LoadVolumed(keys=[*MODALITIES, "image"]), StackModalitiesd()])(item)
    means = raw["image"].mean(dim=(1, 2, 3))
    assert torch.allclose(means, torch.tensor([10.0, 20.0, 30.0, 40.0]), atol=0.1)


def test_label_without_a_convention_is_refused_not_guessed(tmp_path):
    record = case_from_folder(write_brats2023_case(tmp_path))
    with pytest.raises(ValueError, match=rf"case {record.case_id}: .*no label convention"):
        load_case(CaseRecord(record.case_id, record.image_paths, record.label_path, record.layout, None))


def test_label_values_outside_the_convention_raise_value_error_naming_the_case(tmp_path):
    record = case_from_folder(write_brats2023_case(tmp_path))
    wrong = CaseRecord(record.case_id, record.image_paths, record.label_path, record.layout, "msd")
    nib.save(nib.Nifti1Image(np.full(SHAPE, 5, dtype=np.uint8), NON_RAS_AFFINE), record.label_path)
    with pytest.raises(ValueError, match=rf"{record.case_id}.*\[5\].*'msd'"):
        load_case(wrong)


def test_asking_for_a_label_the_case_lacks_raises_value_error(tmp_path):
    record = case_from_folder(write_brats2023_case(tmp_path, label=False))
    with pytest.raises(ValueError, match="has no label"):
        load_case(record, with_label=True)


def test_record_without_a_modality_raises_value_error(tmp_path):
    record = CaseRecord("c1", {"t1": tmp_path / "a.nii.gz"}, None, "brats2021", "brats2021")
    with pytest.raises(ValueError, match="c1.*'t1c'"):
        case_to_item(record)
