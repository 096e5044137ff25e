"""A tiny BraTS 2021 case written as real NIfTI files, and a tiny checkpoint."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest

from segguided_model.checkpoint import save_checkpoint
from segguided_model.network import SegGuidedNet

CASE_SHAPE = (32, 32, 24)
# LPS-like, anisotropic: exercises the reorientation to RAS and back.
CASE_AFFINE = np.array([[-1.0, 0, 0, 90], [0, -1.0, 0, 120], [0, 0, 1.5, -60], [0, 0, 0, 1]])


def blob_label(shape=CASE_SHAPE) -> np.ndarray:
    """BraTS 2021 labels: oedema shell, necrotic core, enhancing centre, off-centre."""
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"))
    distance = np.sqrt(((grid - np.array([12, 18, 10])[:, None, None, None]) ** 2).sum(0))
    label = np.zeros(shape, dtype=np.uint8)
    label[distance < 8] = 2
    label[distance < 5] = 1
    label[distance < 2.5] = 4
    return label


def write_case(root: Path, case_id: str = "BraTS2021_00001", label: np.ndarray | None = None) -> Path:
    case = root / case_id
    case.mkdir(parents=True)
    label = blob_label() if label is None else label
    rng = np.random.default_rng(1)
    brain = np.zeros(CASE_SHAPE, dtype=np.float32)
    brain[2:-2, 2:-2, 2:-2] = 100
    for modality in ("t1", "t1ce", "t2", "flair"):
        volume = brain + 50 * (label > 0) + rng.normal(0, 5, CASE_SHAPE).astype(np.float32)
        nib.save(nib.Nifti1Image(volume, CASE_AFFINE), case / f"{case_id}_{modality}.nii.gz")
    nib.save(nib.Nifti1Image(label, CASE_AFFINE), case / f"{case_id}_seg.nii.gz")
    return case


@pytest.fixture
def synthetic() -> SimpleNamespace:
    """The case writer and its geometry (test modules cannot import conftest in importlib mode)."""
    return SimpleNamespace(write_case=write_case, blob_label=blob_label, affine=CASE_AFFINE, shape=CASE_SHAPE)


@pytest.fixture
def case_dir(tmp_path) -> Path:
    return write_case(tmp_path / "cases")


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    return save_checkpoint(tmp_path / "model.pt", SegGuidedNet(base_width=4, levels=3), extra={"round": 1})
