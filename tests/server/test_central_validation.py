"""Central validation: HD95 in mm from each file's geometry, nested regions, the declared convention.

The same prediction is scored by the server's ``CentralValidator`` and, written by
``segguided segment``, by ``segguided evaluate``: both must give the same values in mm.
"""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import segguided_model.evaluation as evaluation
import segguided_tools.cli.segment as segment
from segguided_federation.run_config import RunConfig
from segguided_model.checkpoint import save_checkpoint
from segguided_model.inference import SlidingWindow, VolumePrediction
from segguided_model.network import SegGuidedNet
from segguided_tools.cli.main import main
from server.central_validation import (
    CentralValidator,
    ValidationDataError,
    central_validation_cases,
)

SHAPE = (16, 16, 16)
CUBE = (slice(5, 11),) * 3
SHIFTED = (slice(5, 11), slice(5, 11), slice(6, 12))  # one voxel along the file's third axis

PERMUTED_LPS = np.array([[0.0, 0, -5, 40], [1, 0, 0, -8], [0, -1, 0, 8], [0, 0, 0, 1]])
"""File axes (A 1 mm, I 1 mm, L 5 mm): after the reorientation to RAS the 5 mm axis comes first."""


def write_case(root: Path, affine: np.ndarray, label: np.ndarray | None = None, case_id: str = "BraTS2021_00001") -> Path:
    """A BraTS 2021 case: a 6³ enhancing-tumour cube; FLAIR bright on the cube shifted by one voxel."""
    case = root / case_id
    case.mkdir(parents=True)
    if label is None:
        label = np.zeros(SHAPE, dtype=np.uint8)
        label[CUBE] = 4
    brain = np.zeros(SHAPE, dtype=np.float32)
    brain[1:-1, 1:-1, 1:-1] = 100
    bright = np.zeros(SHAPE, dtype=np.float32)
    bright[SHIFTED] = 50
    for modality in ("t1", "t1ce", "t2", "flair"):
        volume = brain + (bright if modality == "flair" else 20 * (label > 0))
        nib.save(nib.Nifti1Image(volume, affine), case / f"{case_id}_{modality}.nii.gz")
    nib.save(nib.Nifti1Image(label, affine), case / f"{case_id}_seg.nii.gz")
    return case


def flair_predicts_et_only(model, image, window=None, device=None) -> VolumePrediction:
    """Stand-in network: ET where FLAIR is bright, and neither TC nor WT (nesting makes them ET)."""
    enhancing = image[3].as_subclass(torch.Tensor) > 0  # bright voxels are above the z-scored brain's mean
    regions = torch.stack([enhancing, torch.zeros_like(enhancing), torch.zeros_like(enhancing)])
    return VolumePrediction(regions, regions.float(), None)


@pytest.mark.parametrize(
    "affine, hd95_mm",
    [
        (np.diag([5.0, 5.0, 5.0, 1.0]), 5.0),
        (np.diag([1.0, 1.0, 5.0, 1.0]), 5.0),
        (np.diag([1.0, 1.0, 1.0, 1.0]), 1.0),
        (PERMUTED_LPS, 5.0),
    ],
    ids=["5x5x5", "1x1x5", "1x1x1", "1x1x5-permuted"],
)
def test_central_hd95_is_in_mm_and_equals_segment_then_evaluate(tmp_path, monkeypatch, affine, hd95_mm):
    monkeypatch.setattr(evaluation, "predict_volume", flair_predicts_et_only)
    monkeypatch.setattr(segment, "predict_volume", flair_predicts_et_only)
    case = write_case(tmp_path / "validation", affine)
    config = RunConfig(server_validation_dir=str(case.parent))
    validator = CentralValidator(central_validation_cases(config), SlidingWindow(roi_size=16), torch.device("cpu"))
    (central,), _ = validator(SegGuidedNet(base_width=4, levels=3))

    checkpoint = save_checkpoint(tmp_path / "model.pt", SegGuidedNet(base_width=4, levels=3))
    assert main(["segment", str(case), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "pred")]) == 0
    out = tmp_path / "metrics.csv"
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(case.parent), "--out", str(out)]) == 0
    with open(out, newline="") as stream:
        evaluated = next(csv.DictReader(stream))

    for key in ("hd95-et", "hd95-tc", "hd95-wt"):
        assert central[key] == pytest.approx(hd95_mm) and float(evaluated[key]) == pytest.approx(hd95_mm)
    for key in ("dice-et", "dice-tc", "dice-wt"):  # TC and WT scored nested, as segment writes them
        assert central[key] == pytest.approx(5 / 6) and float(evaluated[key]) == pytest.approx(5 / 6, abs=1e-5)


def _post_treatment_site(root: Path) -> Path:
    """BraTS 2024 cases: two with resection cavity (4) and no ET, one with ET (3) and no cavity."""
    for number, (oedema, core) in enumerate(((2, 4), (2, 4), (2, 3))):
        label = np.zeros(SHAPE, dtype=np.uint8)
        label[CUBE] = oedema
        label[6:8, 6:8, 6:10] = core
        write_case(root, np.eye(4), label, case_id=f"BraTS2021_0000{number}")
    return root


def test_server_validation_convention_is_passed_to_the_qa_gate(tmp_path):
    folder = _post_treatment_site(tmp_path / "validation")
    # Undeclared, {0, 2, 4} and {0, 2, 3} cases fit only BraTS 2024 together, but none proves it.
    with pytest.raises(ValidationDataError, match="label-convention-undecided 3.*server-validation-convention"):
        central_validation_cases(RunConfig(server_validation_dir=str(folder)))
    cases = central_validation_cases(RunConfig(server_validation_dir=str(folder), server_validation_convention="brats2024"))
    assert [case.case_id for case in cases] == ["BraTS2021_00000", "BraTS2021_00001", "BraTS2021_00002"]
    assert {case.convention for case in cases} == {"brats2024"}
