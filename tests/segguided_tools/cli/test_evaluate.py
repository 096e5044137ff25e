"""``segguided evaluate``: BraTS-style metrics CSV from prediction and reference files."""

from __future__ import annotations

import csv
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch

import segguided_tools.cli.segment as segment
from segguided_model.attention_scores import ATTENTION_KEYS
from segguided_model.inference import VolumePrediction
from segguided_model.metrics import HD95_ONE_EMPTY
from segguided_tools.cli.main import main

HEADER = ["case-id", "dice-et", "dice-tc", "dice-wt", "hd95-et", "hd95-tc", "hd95-wt"]


AFFINE = np.diag([1.0, 1.0, 1.5, 1.0])


def save(path, label, affine=AFFINE):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(label.astype(np.uint8), affine), path)


def evaluate(tmp_path, *options) -> int:
    return main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"), "--out", str(tmp_path / "m.csv"), *options])


def dice(tmp_path) -> list[float]:
    return [float(v) for v in read_rows(tmp_path / "m.csv")[1][1:4]]


def read_rows(path):
    with open(path, newline="") as stream:
        return list(csv.reader(stream))


def test_segment_then_evaluate_in_real_processes(case_dir, checkpoint, tmp_path):
    pred = tmp_path / "pred"
    cli = [sys.executable, "-m", "segguided_tools.cli"]
    segmented = subprocess.run([*cli, "segment", str(case_dir), "--checkpoint", str(checkpoint), "--out", str(pred)], capture_output=True, text=True, timeout=120)
    assert segmented.returncode == 0, segmented.stderr
    out = tmp_path / "metrics.csv"
    evaluated = subprocess.run([*cli, "evaluate", "--pred", str(pred), "--ref", str(case_dir.parent), "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert evaluated.returncode == 0, evaluated.stderr
    rows = read_rows(out)
    assert rows[0] == HEADER + list(ATTENTION_KEYS)  # segment wrote the attention maps: they are scored too
    assert [row[0] for row in rows[1:]] == [case_dir.name, "mean"]
    assert all(0 <= float(v) <= 1 for v in rows[1][1:4] + rows[1][len(HEADER):])
    assert "attention maps" in evaluated.stdout


def test_attention_maps_are_scored_against_each_reference_subregion(tmp_path, synthetic, capsys):
    label = synthetic.blob_label()  # BraTS 2021: 1 NCR, 2 ED, 4 ET
    save(tmp_path / "ref" / "a.nii.gz", label, synthetic.affine)
    save(tmp_path / "pred" / "a-seg.nii.gz", label, synthetic.affine)
    core = ((label == 1) | (label == 4)).astype(np.float32)
    maps = {"ncr": core, "ed": (label == 2).astype(np.float32) * 0.9, "et": (label == 4).astype(np.float32)}
    for name, volume in maps.items():  # the NCR map lights the whole core; ED and ET are right
        nib.save(nib.Nifti1Image(volume, synthetic.affine), tmp_path / "pred" / f"a-attention-{name}.nii.gz")
    assert evaluate(tmp_path) == 0
    rows = read_rows(tmp_path / "m.csv")
    scores = dict(zip(rows[0], rows[1]))
    ncr, et = int((label == 1).sum()), int((label == 4).sum())
    assert float(scores["attention-dice-ncr"]) == pytest.approx(2 * ncr / (ncr + ncr + et), abs=1e-5)
    assert float(scores["attention-ncr-on-et"]) == pytest.approx(2 * et / (ncr + et + et), abs=1e-5)
    assert float(scores["attention-dice-et"]) == 1.0 and float(scores["attention-et-on-ncr"]) == 0.0
    assert float(scores["attention-dice-ed"]) == 1.0
    assert "attention maps" in capsys.readouterr().out


def test_known_answers_with_flat_files_both_namings_and_empty_regions(tmp_path, synthetic):
    label = synthetic.blob_label()
    no_et = np.where(label == 4, 1, label)  # ET absent from the reference
    save(tmp_path / "ref" / "a.nii.gz", label)
    save(tmp_path / "ref" / "b-seg.nii.gz", no_et)
    save(tmp_path / "pred" / "a-seg.nii.gz", label)  # perfect
    save(tmp_path / "pred" / "b.nii.gz", label)  # predicts an ET that is not there
    out = tmp_path / "m.csv"
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"), "--out", str(out), "--labels", "brats2021"]) == 0
    rows = {row[0]: row[1:] for row in read_rows(out)[1:]}
    assert [float(v) for v in rows["a"]] == [1, 1, 1, 0, 0, 0]
    assert float(rows["b"][0]) == 0 and float(rows["b"][3]) == pytest.approx(HD95_ONE_EMPTY)
    assert float(rows["b"][1]) == 1 and float(rows["b"][2]) == 1
    assert float(rows["mean"][0]) == pytest.approx(0.5)


def test_convention_is_decided_for_each_folder(tmp_path, synthetic):
    label = synthetic.blob_label()
    brats2023 = np.where(label == 4, 3, label)
    save(tmp_path / "ref" / "c.nii.gz", brats2023)
    save(tmp_path / "pred" / "c.nii.gz", brats2023)
    out = tmp_path / "m.csv"
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"), "--out", str(out)]) == 0
    assert [float(v) for v in read_rows(out)[1][1:4]] == [1, 1, 1]


def test_missing_prediction_is_a_one_line_error_naming_the_case(tmp_path, capsys, synthetic):
    synthetic.write_case(tmp_path / "ref", "BraTS2021_00002")
    (tmp_path / "pred").mkdir()
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"), "--out", str(tmp_path / "m.csv")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "BraTS2021_00002" in error


def test_wrong_folder_is_a_one_line_error_naming_it(tmp_path, capsys):
    assert main(["evaluate", "--pred", str(tmp_path / "absent"), "--ref", str(tmp_path), "--out", str(tmp_path / "m.csv")]) == 2
    assert "absent does not exist" in capsys.readouterr().err


def test_label_values_of_no_convention_are_a_one_line_error(tmp_path, capsys):
    save(tmp_path / "ref" / "d.nii.gz", np.full((4, 4, 4), 9))
    save(tmp_path / "pred" / "d.nii.gz", np.zeros((4, 4, 4)))
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"), "--out", str(tmp_path / "m.csv")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "case d" in error and "9" in error


def test_shape_mismatch_is_a_one_line_error(tmp_path, capsys):
    save(tmp_path / "ref" / "e.nii.gz", np.zeros((4, 4, 4)))
    save(tmp_path / "pred" / "e.nii.gz", np.zeros((4, 4, 5)))
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--ref", str(tmp_path / "ref"), "--out", str(tmp_path / "m.csv")]) == 2
    assert "shape" in capsys.readouterr().err


def test_hidden_entries_and_uncompressed_predictions(tmp_path, synthetic):
    label = synthetic.blob_label()
    save(tmp_path / "ref" / "a.nii.gz", label)
    save(tmp_path / "pred" / "a-seg.nii", label)  # uncompressed
    for folder in ("ref", "pred"):
        (tmp_path / folder / "._a.nii.gz").write_bytes(b"\x00\x05\x16\x07 AppleDouble sidecar")
        (tmp_path / folder / ".ipynb_checkpoints").mkdir()
    assert evaluate(tmp_path) == 0
    assert dice(tmp_path) == [1, 1, 1]


def test_dead_link_prediction_is_a_broken_link_naming_the_path(tmp_path, capsys, synthetic):
    save(tmp_path / "ref" / "a.nii.gz", synthetic.blob_label())
    (tmp_path / "pred").mkdir()
    (tmp_path / "pred" / "a-seg.nii.gz").symlink_to(tmp_path / "share" / "a-seg.nii.gz")
    assert evaluate(tmp_path) == 2
    assert f"{tmp_path}/pred/a-seg.nii.gz is a broken link to {tmp_path}/share/a-seg.nii.gz" in capsys.readouterr().err


def _flip_first_axis(affine: np.ndarray, size: int) -> np.ndarray:
    flipped = affine.copy()
    flipped[:3, 0] = -affine[:3, 0]
    flipped[:3, 3] = affine[:3, 3] + affine[:3, 0] * (size - 1)
    return flipped


def test_prediction_on_another_grid_is_refused_naming_both_affines(tmp_path, capsys, synthetic):
    label = synthetic.blob_label()
    save(tmp_path / "ref" / "a.nii.gz", label, np.eye(4))  # saved without the case's geometry
    save(tmp_path / "pred" / "a.nii.gz", label, synthetic.affine)
    assert evaluate(tmp_path, "--labels", "brats2021") == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "case a" in error and "different voxel grids" in error
    assert "reference shape (32, 32, 24), affine [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]" in error
    assert "prediction shape (32, 32, 24), affine [[-1, 0, 0, 90], [0, -1, 0, 120], [0, 0, 1.5, -60]]" in error
    assert "--resample" in error


def test_resample_option_puts_a_flipped_prediction_on_the_reference_grid(tmp_path, synthetic):
    label = synthetic.blob_label()
    save(tmp_path / "ref" / "a.nii.gz", label, synthetic.affine)
    # The same segmentation in space, stored with the first axis flipped.
    save(tmp_path / "pred" / "a.nii.gz", label[::-1], _flip_first_axis(synthetic.affine, label.shape[0]))
    assert evaluate(tmp_path, "--labels", "brats2021") == 2
    assert evaluate(tmp_path, "--labels", "brats2021", "--resample") == 0
    rows = read_rows(tmp_path / "m.csv")
    assert [float(v) for v in rows[1][1:]] == [1, 1, 1, 0, 0, 0]


def test_prediction_and_reference_conventions_that_disagree_fail_naming_both(tmp_path, capsys, synthetic):
    # A reference with ET = 3 in a BraTS 2021-named folder; a voxel-identical prediction with ET = 4.
    label = synthetic.blob_label()
    case = synthetic.write_case(tmp_path / "ref", label=np.where(label == 4, 3, label).astype(np.uint8))
    save(tmp_path / "pred" / f"{case.name}-seg.nii.gz", label, synthetic.affine)
    assert evaluate(tmp_path) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and f"case {case.name}" in error
    assert "as brats2021" in error and "as brats2023" in error and "[3, 4]" in error
    assert evaluate(tmp_path, "--pred-labels", "brats2021", "--ref-labels", "brats2023") == 0
    assert dice(tmp_path) == [1, 1, 1]


def test_msd_reference_is_never_read_as_brats(tmp_path, capsys, synthetic):
    label = synthetic.blob_label()  # BraTS 2021: 1 NCR, 2 ED, 4 ET
    msd = np.select([label == 2, label == 1, label == 4], [1, 2, 3], 0)  # MSD: 1 ED, 2 NCR, 3 ET
    save(tmp_path / "ref" / "a.nii.gz", msd)
    save(tmp_path / "pred" / "a.nii.gz", label)
    assert evaluate(tmp_path) == 2
    assert "case a" in capsys.readouterr().err
    assert evaluate(tmp_path, "--ref-labels", "msd", "--pred-labels", "brats2021") == 0
    assert dice(tmp_path) == [1, 1, 1]


def test_segment_output_against_a_brats2024_reference_needs_no_option(tmp_path, synthetic):
    label = np.where(synthetic.blob_label() == 4, 3, synthetic.blob_label())  # BraTS 2023/2024 values
    reference = label.copy()
    reference[:3] = 4  # a resection cavity: in no region
    save(tmp_path / "ref" / "a.nii.gz", reference)  # {0, 1, 2, 3, 4}: BraTS 2024, nothing else
    save(tmp_path / "pred" / "a-seg.nii.gz", label)  # {0, 1, 2, 3}: reads the same in 2023 and 2024
    assert evaluate(tmp_path) == 0
    assert dice(tmp_path) == [1, 1, 1]


def test_given_convention_that_a_file_does_not_fit_is_a_one_line_error(tmp_path, capsys, synthetic):
    save(tmp_path / "ref" / "a.nii.gz", synthetic.blob_label())
    save(tmp_path / "pred" / "a.nii.gz", synthetic.blob_label())
    assert evaluate(tmp_path, "--labels", "brats2023") == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "[4]" in error and "brats2023" in error


def test_segment_output_scores_against_its_4d_singleton_reference(checkpoint, tmp_path, monkeypatch, synthetic):
    def tumour_is_enhancing(model, image, window=None, device=None):
        whole = image[3] > image[3][image[3] != image[3].min()].mean() + 1.0  # the bright tumour voxels
        regions = torch.stack([whole, whole, whole])
        return VolumePrediction(regions, regions.float(), None)

    # Every file (X, Y, Z, 1), as some converters write them; the tumour is all enhancing.
    case = synthetic.write_case(tmp_path / "ref", label=(synthetic.blob_label() > 0).astype(np.uint8) * 4)
    for path in sorted(case.iterdir()):
        image = nib.load(path)
        nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj)[..., None], image.affine), path)
    assert nib.load(case / f"{case.name}_seg.nii.gz").shape == (*synthetic.shape, 1)
    monkeypatch.setattr(segment, "predict_volume", tumour_is_enhancing)
    assert main(["qa", str(case.parent)]) == 0
    assert main(["segment", str(case), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "pred")]) == 0
    assert evaluate(tmp_path) == 0
    assert [float(v) for v in read_rows(tmp_path / "m.csv")[1][1:]] == [1, 1, 1, 0, 0, 0]
