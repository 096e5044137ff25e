"""``segguided evaluate``: BraTS-style metrics CSV from prediction and reference files."""

from __future__ import annotations

import csv
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from segguided_model.metrics import HD95_ONE_EMPTY
from segguided_tools.cli.main import main

HEADER = ["case-id", "dice-et", "dice-tc", "dice-wt", "hd95-et", "hd95-tc", "hd95-wt"]


def save(path, label):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(label.astype(np.uint8), np.diag([1.0, 1.0, 1.5, 1.0])), path)


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
    assert rows[0] == HEADER
    assert [row[0] for row in rows[1:]] == [case_dir.name, "mean"]
    assert all(0 <= float(v) <= 1 for v in rows[1][1:4])


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


def test_convention_is_detected_per_case(tmp_path, synthetic):
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
