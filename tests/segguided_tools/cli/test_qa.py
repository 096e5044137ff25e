"""``segguided qa``: the QA gate's exit status and what it prints."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

from segguided_model.data.synthetic import (
    draw_site_profiles,
    label_map,
    synthesize_case,
    write_case,
)
from segguided_tools.cli.main import main

SIZE = (24, 24, 24)


def _write_site(site: Path, count: int) -> list[Path]:
    profile = draw_site_profiles(1, 0)[0]
    cases = []
    for number in range(count):
        phantom = synthesize_case(profile, SIZE, np.random.default_rng(number))
        case = site / f"BraTS-GLI-{number:05d}-000"
        write_case(case, "brats2023", phantom.images, label_map(phantom.subregions, "brats2023"), 10.0)
        cases.append(case)
    return cases


def _empty_t1c(case: Path) -> None:
    (case / f"{case.name}-t1c.nii.gz").write_bytes(b"")


def test_cli_exits_zero_with_a_valid_case_and_prints_json(tmp_path, capsys):
    cases = _write_site(tmp_path, 2)
    _empty_t1c(cases[0])
    assert main(["qa", str(tmp_path), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["rejected"] == 1 and document["valid"] == 1
    assert document["details"][cases[0].name].startswith(f"{cases[0].name}-t1c.nii.gz")


def test_cli_exits_non_zero_with_a_message_when_no_case_is_valid(tmp_path, capsys):
    (case,) = _write_site(tmp_path, 1)
    _empty_t1c(case)
    assert main(["qa", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "empty-file" in captured.out and "no valid case" in captured.err


def test_cli_names_a_missing_site_folder(tmp_path, capsys):
    assert main(["qa", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_cli_reports_labels_that_disagree_and_accepts_a_declared_convention(tmp_path, capsys):
    cases = _write_site(tmp_path, 3)
    seg = cases[0] / f"{cases[0].name}-seg.nii.gz"
    image = nib.load(seg)
    label = np.asanyarray(image.dataobj)
    nib.save(nib.Nifti1Image(np.where(label == 3, 4, label).astype(np.uint8), image.affine), seg)  # ET = 4 here
    assert main(["qa", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert out.count("label-convention-undecided") == 3 and "convention -" in out
    assert main(["qa", str(tmp_path), "--convention", "brats2023"]) == 0
    out = capsys.readouterr().out
    assert "convention brats2023 (declared)" in out and f"{cases[0].name}  label-convention-mismatch" in out
