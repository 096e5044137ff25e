"""``segguided segment`` end to end on a tiny case written as NIfTI files."""

from __future__ import annotations

import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch

import segguided_tools.cli.segment as segment
from segguided_model.inference import VolumePrediction
from segguided_model.labels import CONVENTIONS
from segguided_tools.cli.main import main


def test_segment_writes_seg_attention_maps_and_overlay_in_a_real_process(case_dir, checkpoint, tmp_path, synthetic):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "segguided_tools.cli", "segment", str(case_dir), "--checkpoint", str(checkpoint), "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    case_id = case_dir.name
    seg = nib.load(out / f"{case_id}-seg.nii.gz")
    source = nib.load(case_dir / f"{case_id}_t1.nii.gz")
    assert seg.shape == source.shape
    np.testing.assert_allclose(seg.affine, source.affine)
    assert seg.get_data_dtype() == np.uint8
    assert set(np.unique(np.asanyarray(seg.dataobj))) <= {0, 1, 2, 4}
    for name in ("ncr", "ed", "et"):
        attention = np.asanyarray(nib.load(out / f"{case_id}-attention-{name}.nii.gz").dataobj)
        assert attention.shape == synthetic.shape and 0 <= attention.min() and attention.max() <= 1
    overlay = out / f"{case_id}-overlay.png"
    assert overlay.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_segmentation_aligns_voxel_for_voxel_with_a_non_ras_input(case_dir, checkpoint, tmp_path, monkeypatch, synthetic):
    # A stand-in network that "predicts" the bright tumour voxels of the preprocessed
    # image: if orientation were not restored, the written seg would not match the blob.
    def threshold_prediction(model, image, window=None, device=None):
        whole = image[3] > image[3][image[3] != image[3].min()].mean() + 1.0
        regions = torch.stack([torch.zeros_like(whole), torch.zeros_like(whole), whole])
        return VolumePrediction(regions, regions.float(), torch.rand(3, *whole.shape))

    monkeypatch.setattr(segment, "predict_volume", threshold_prediction)
    out = tmp_path / "out"
    assert main(["segment", str(case_dir), "--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    seg = np.asanyarray(nib.load(out / f"{case_dir.name}-seg.nii.gz").dataobj)
    assert "".join(nib.aff2axcodes(synthetic.affine)) != "RAS"
    np.testing.assert_array_equal(seg > 0, synthetic.blob_label() > 0)


def test_missing_modality_is_a_one_line_error_naming_the_file(case_dir, checkpoint, tmp_path, capsys):
    (case_dir / f"{case_dir.name}_flair.nii.gz").unlink()
    assert main(["segment", str(case_dir), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and f"{case_dir.name}_flair.nii.gz" in error


def test_checkpoint_of_another_architecture_is_a_one_line_error(case_dir, tmp_path, capsys):
    foreign = tmp_path / "segresnet.pt"
    torch.save({"conv.weight": torch.zeros(1)}, foreign)
    assert main(["segment", str(case_dir), "--checkpoint", str(foreign), "--out", str(tmp_path / "o")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "segresnet.pt is not a SegGuidedNet checkpoint" in error


@pytest.mark.parametrize("what", ["case", "checkpoint"])
def test_wrong_path_is_a_one_line_error_naming_it(case_dir, checkpoint, tmp_path, capsys, what):
    case = tmp_path / "nowhere" if what == "case" else case_dir
    ckpt = tmp_path / "nowhere.pt" if what == "checkpoint" else checkpoint
    assert main(["segment", str(case), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "nowhere" in error


def test_impossible_window_settings_are_a_one_line_error(case_dir, checkpoint, tmp_path, capsys):
    arguments = ["segment", str(case_dir), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o")]
    assert main([*arguments, "--roi-size", "0"]) == 2
    assert "roi_size must be a positive integer" in capsys.readouterr().err
    assert main([*arguments, "--overlap", "1.5"]) == 2
    assert "overlap must be in [0, 1)" in capsys.readouterr().err


def test_mirrored_segmentation_of_a_case(case_dir, checkpoint, tmp_path):
    out = tmp_path / "mirrored"
    assert main(["segment", str(case_dir), "--checkpoint", str(checkpoint), "--out", str(out), "--mirror"]) == 0
    assert (out / f"{case_dir.name}-seg.nii.gz").is_file()


def _all_enhancing(model, image, window=None, device=None):
    regions = torch.ones(3, *image.shape[1:], dtype=torch.bool)
    return VolumePrediction(regions, regions.float(), None)


def _written_values(out, case_dir) -> set[int]:
    return set(np.unique(np.asanyarray(nib.load(out / f"{case_dir.name}-seg.nii.gz").dataobj)).tolist())


def test_labels_option_declares_the_convention_of_a_case_without_segmentation(case_dir, checkpoint, tmp_path, monkeypatch):
    (case_dir / f"{case_dir.name}_seg.nii.gz").unlink()
    monkeypatch.setattr(segment, "predict_volume", _all_enhancing)
    out = tmp_path / "out"
    assert main(["segment", str(case_dir), "--checkpoint", str(checkpoint), "--out", str(out), "--labels", "brats2023"]) == 0
    assert _written_values(out, case_dir) == {CONVENTIONS["brats2023"].value_of("ET")}
    assert not (out / f"{case_dir.name}-attention-et.nii.gz").exists()


def test_output_follows_the_convention_the_qa_gate_finds_not_the_layout_default(checkpoint, tmp_path, monkeypatch, synthetic):
    # BraTS 2023 labels (ET = 3) in a BraTS 2021-named folder, as some re-distributions ship them.
    label = synthetic.blob_label()
    case_dir = synthetic.write_case(tmp_path / "cases", label=np.where(label == 4, 3, label).astype(np.uint8))
    monkeypatch.setattr(segment, "predict_volume", _all_enhancing)
    out = tmp_path / "out"
    assert main(["segment", str(case_dir), "--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    assert _written_values(out, case_dir) == {3}


def test_labels_option_that_contradicts_the_case_segmentation_is_refused(case_dir, checkpoint, tmp_path, capsys):
    assert main(["segment", str(case_dir), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o"), "--labels", "brats2023"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "label-convention-mismatch" in error and "[4]" in error


def test_non_finite_voxels_are_refused_with_the_qa_reason(case_dir, checkpoint, tmp_path, capsys, synthetic):
    path = case_dir / f"{case_dir.name}_t2.nii.gz"
    data = np.asanyarray(nib.load(path).dataobj).astype(np.float32)
    data[5, 5, 5], data[6, 6, 6] = np.nan, np.inf
    nib.save(nib.Nifti1Image(data, synthetic.affine), path)
    out = tmp_path / "o"
    assert main(["segment", str(case_dir), "--checkpoint", str(checkpoint), "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "non-finite-intensity" in error and f"{case_dir.name}_t2.nii.gz" in error and "2 NaN or infinite voxel(s)" in error
    assert not out.exists()


def test_uncompressed_nii_case_is_segmented(case_dir, checkpoint, tmp_path, monkeypatch):
    for path in sorted(case_dir.iterdir()):
        nib.save(nib.load(path), path.with_name(path.name.removesuffix(".gz")))
        path.unlink()
    monkeypatch.setattr(segment, "predict_volume", _all_enhancing)
    out = tmp_path / "out"
    assert main(["segment", str(case_dir), "--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    assert _written_values(out, case_dir) == {4}
