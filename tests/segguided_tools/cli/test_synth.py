"""``segguided synth``: the layout and size asked for, and a clear error for impossible settings."""

from __future__ import annotations

import nibabel as nib

from segguided_tools.cli.main import main


def test_cli_writes_the_requested_layout(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "fed"), "--sites", "2", "--cases", "1", "--val-cases", "1",
                 "--layout", "brats2021", "--size", "24", "24", "16", "--seed", "2"]) == 0
    assert (tmp_path / "fed" / "site-2" / "BraTS2021_00001" / "BraTS2021_00001_t1ce.nii.gz").is_file()
    assert main(["synth", str(tmp_path / "fed"), "--sites", "0"]) == 2
    assert "sites=0" in capsys.readouterr().err


def test_cli_spacing_sets_the_bratss_field_of_view_grid(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "fed"), "--sites", "1", "--cases", "1", "--val-cases", "1",
                 "--spacing", "10", "--seed", "3"]) == 0
    image = nib.load(next((tmp_path / "fed" / "site-1").rglob("*t2f.nii.gz")))
    assert image.shape == (24, 24, 16) and image.header.get_zooms() == (10.0, 10.0, 10.0)
    assert "24x24x16 voxels" in capsys.readouterr().out
    assert main(["synth", str(tmp_path / "other"), "--spacing", "0.5"]) == 2
    assert "--spacing 0.5" in capsys.readouterr().err
