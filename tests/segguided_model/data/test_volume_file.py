"""The one NIfTI reader: what it accepts, how it fails, and the geometry it reports."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from segguided_model.data.volume_file import (
    READ_FAILURES,
    Grid,
    VolumeFileError,
    read_label_map,
    read_volume,
    spacing_of,
)

AFFINE = np.array([[0.0, 0, -5, 40], [1, 0, 0, -8], [0, -1.5, 0, 8], [0, 0, 0, 1]])


def _save(path, data, affine=AFFINE):
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


@pytest.mark.parametrize("name, shape", [("a.nii.gz", (4, 5, 6)), ("a.nii", (4, 5, 6)), ("a.nii.gz", (4, 5, 6, 1))])
def test_volumes_and_4d_singletons_read_as_3d(tmp_path, name, shape):
    data = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    volume = read_volume(_save(tmp_path / name, data))
    assert volume.data.shape == (4, 5, 6) and volume.grid.shape == (4, 5, 6)
    np.testing.assert_array_equal(volume.data, data.reshape(4, 5, 6))


def test_spacing_is_the_affine_column_norms_along_array_axes(tmp_path):
    volume = read_volume(_save(tmp_path / "a.nii.gz", np.ones((4, 5, 6), dtype=np.float32)))
    assert volume.spacing == pytest.approx((1.0, 1.5, 5.0)) and spacing_of(AFFINE) == pytest.approx((1.0, 1.5, 5.0))


def test_multichannel_images_need_their_channels(tmp_path):
    path = _save(tmp_path / "msd.nii.gz", np.ones((4, 5, 6, 4), dtype=np.float32))
    assert read_volume(path, channels=4).data.shape == (4, 5, 6, 4)
    with pytest.raises(VolumeFileError, match=r"msd.nii.gz has shape \(4, 5, 6, 4\), expected \(X, Y, Z\)") as raised:
        read_volume(path)
    assert raised.value.reason == "unsupported-shape"


@pytest.mark.parametrize(
    "reason, make",
    [
        ("broken-link", lambda path: path.symlink_to(path.parent / "elsewhere.nii.gz")),
        ("empty-file", lambda path: path.write_bytes(b"")),
        ("corrupt-file", lambda path: path.write_bytes(b"not a nifti at all" * 40)),
        ("unsupported-dtype", lambda path: _save(path, np.ones((3, 3, 3), dtype=np.complex64))),
    ],
)
def test_failures_carry_their_reason_and_name_the_file(tmp_path, reason, make):
    path = tmp_path / "bad.nii.gz"
    make(path)
    with pytest.raises(VolumeFileError, match="bad.nii.gz") as raised:
        read_volume(path)
    assert raised.value.reason == reason and reason in READ_FAILURES


def test_label_maps_must_be_small_non_negative_integers(tmp_path):
    volume, labels, values = read_label_map(_save(tmp_path / "seg.nii", np.array([[[0.0, 1.0], [2.0, 4.0]]])))
    assert labels.dtype == np.int16 and values == {0, 1, 2, 4} and volume.path.name == "seg.nii"
    for data in (np.array([[[0.0, 0.5]]]), np.array([[[0.0, -1.0]]]), np.array([[[0.0, 70000.0]]])):
        with pytest.raises(VolumeFileError, match="seg.nii") as raised:
            read_label_map(_save(tmp_path / "seg.nii", data.astype(np.float32)))
        assert raised.value.reason == "invalid-labels"


def test_grids_match_within_the_tolerance_and_describe_themselves_on_one_line():
    grid = Grid((4, 5, 6), AFFINE)
    assert grid.matches(Grid((4, 5, 6), AFFINE + 1e-4)) and not grid.matches(Grid((4, 5, 6), AFFINE + 1e-2))
    assert not grid.matches(Grid((4, 5, 7), AFFINE))
    assert grid.describe() == "shape (4, 5, 6), affine [[0, 0, -5, 40], [1, 0, 0, -8], [0, -1.5, 0, 8]]"
