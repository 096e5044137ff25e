"""Reading one NIfTI file: the one reader behind the QA gate, preprocessing, ``segment`` and ``evaluate``.

Every image and segmentation the project reads goes through ``read_volume`` (or
``read_label_map``), so the same files are accepted everywhere: ``.nii.gz`` and ``.nii``,
3D ``(X, Y, Z)`` volumes and 4D singletons ``(X, Y, Z, 1)`` (read as 3D), and 4D
multi-channel images only where a layout declares their channels (MSD). Geometry comes
from the file's affine: ``spacing`` is the voxel size in mm along each array axis.

Failures raise ``VolumeFileError`` with a reason code from ``READ_FAILURES`` (the QA gate's
vocabulary) and a detail that names the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import nibabel as nib
import numpy as np

from segguided_model.data.entries import describe_broken_link, is_broken_link

READ_FAILURES: Mapping[str, str] = {
    "broken-link": "a file is a symbolic link whose target does not exist",
    "empty-file": "a file has zero bytes",
    "corrupt-file": "a file is not a readable (gzipped) NIfTI image",
    "truncated-file": "a file ends before all its voxels",
    "unsupported-dtype": "an image or label is stored with an unsupported data type",
    "unsupported-shape": "a file is not a 3D volume (X, Y, Z) or (X, Y, Z, 1), or a 4D image without the layout's channels",
    "invalid-labels": "the segmentation holds non-integer values or values that fit no label convention",
}
"""Every reason reading a file can fail for, code → description (part of ``qa.REASONS``)."""

AFFINE_TOLERANCE_MM: float = 1e-3
"""Largest difference (mm) between two affines that still counts as the same voxel grid."""

_VALUE_KINDS = frozenset("iuf")  # signed/unsigned integers and reals; no bool, complex or RGB
_LABEL_RANGE = (0, int(np.iinfo(np.int16).max))


class VolumeFileError(ValueError):
    """A file cannot be read as the volume asked for.

    Attributes:
        reason: a code from ``READ_FAILURES``.
        detail: what exactly is wrong, naming the file.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Grid:
    """A voxel grid: the spatial shape of an array and the affine that places it in the world.

    Attributes:
        shape: ``(X, Y, Z)`` voxels.
        affine: voxel → world (mm, RAS+) transform ``(4, 4)``, float64.
    """

    shape: tuple[int, int, int]
    affine: np.ndarray

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along each array axis (``spacing_of``)."""
        return spacing_of(self.affine)

    def matches(self, other: Grid, tolerance: float = AFFINE_TOLERANCE_MM) -> bool:
        """Equal shapes and affines equal within ``tolerance`` mm."""
        return self.shape == other.shape and bool(np.allclose(self.affine, other.affine, atol=tolerance, rtol=0))

    def describe(self) -> str:
        """Shape and affine on one line, for messages."""
        rows = ("[" + ", ".join(f"{(v if abs(v) > 1e-9 else 0.0):.6g}" for v in row) + "]" for row in self.affine[:3])
        return f"shape {self.shape}, affine [{', '.join(rows)}]"


@dataclass(frozen=True)
class VolumeFile:
    """One NIfTI file read into memory.

    Attributes:
        path: the file.
        image: nibabel's image (header and affine; write outputs with its header).
        data: the voxels, ``(X, Y, Z)`` or, for multi-channel images, ``(X, Y, Z, C)``; a
            4D singleton ``(X, Y, Z, 1)`` file is read as ``(X, Y, Z)``.
    """

    path: Path
    image: nib.Nifti1Image
    data: np.ndarray

    @property
    def grid(self) -> Grid:
        """The file's voxel grid (its affine as float64)."""
        shape = tuple(int(n) for n in self.data.shape[:3])
        return Grid(shape, np.asarray(self.image.affine, dtype=np.float64))  # type: ignore[arg-type]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along each array axis."""
        return self.grid.spacing


def spacing_of(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size along each array axis of a ``(4, 4)`` affine: the norms of its first three columns.

    This is nibabel's ``voxel_sizes`` and MONAI's ``affine_to_spacing``; applied to the
    affine after the reorientation to RAS it gives the spacing along the reoriented axes.
    """
    sizes = nib.affines.voxel_sizes(np.asarray(affine, dtype=np.float64))
    return tuple(float(s) for s in sizes[:3])  # type: ignore[return-value]


def read_volume(path: Path | str, channels: int = 1) -> VolumeFile:
    """Read a NIfTI file fully, checking what every reader of the project needs.

    Args:
        path: a ``.nii.gz`` or ``.nii`` file.
        channels: 1 for a volume, read as ``(X, Y, Z)`` from a 3D or ``(X, Y, Z, 1)`` file;
            ``C > 1`` for a multi-channel image that must be ``(X, Y, Z, C)``.

    Returns:
        A ``VolumeFile``; scaling (``scl_slope``/``scl_inter``) is applied to ``data``.

    Raises:
        FileNotFoundError: ``path`` does not exist (and is no link).
        VolumeFileError: ``broken-link``, ``empty-file``, ``truncated-file``,
            ``corrupt-file``, ``unsupported-dtype`` or ``unsupported-shape``, naming the file.
    """
    path = Path(path)
    if is_broken_link(path):
        raise VolumeFileError("broken-link", describe_broken_link(path))
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.stat().st_size == 0:
        raise VolumeFileError("empty-file", f"{path.name} has zero bytes")
    try:
        image = nib.load(path, mmap=False)
        data = np.asanyarray(image.dataobj)
    except EOFError as error:
        raise VolumeFileError("truncated-file", f"{path.name} is truncated ({error})") from None
    except Exception as error:  # nibabel, gzip and zlib raise many unrelated types
        message = str(error).replace(str(path), path.name)
        raise VolumeFileError(
            "corrupt-file", f"{path.name} cannot be read: {type(error).__name__}: {message}"
        ) from None
    dtype = np.dtype(image.get_data_dtype())
    if dtype.kind not in _VALUE_KINDS or dtype.fields is not None:
        raise VolumeFileError("unsupported-dtype", f"{path.name} is stored as {dtype}, expected an integer or real type")
    if channels == 1:
        while data.ndim > 3 and data.shape[-1] == 1:
            data = data[..., 0]
        if data.ndim != 3:
            raise VolumeFileError(
                "unsupported-shape", f"{path.name} has shape {data.shape}, expected (X, Y, Z) or (X, Y, Z, 1)"
            )
    elif data.ndim != 4 or data.shape[3] != channels:
        raise VolumeFileError(
            "unsupported-shape", f"{path.name} has shape {data.shape}, expected (X, Y, Z, {channels})"
        )
    return VolumeFile(path, image, data)


def read_label_map(path: Path | str) -> tuple[VolumeFile, np.ndarray, frozenset[int]]:
    """Read a segmentation: a volume of non-negative integer labels.

    Returns:
        The ``VolumeFile``, its labels as ``int16`` ``(X, Y, Z)`` and the set of values present.

    Raises:
        FileNotFoundError, VolumeFileError: as ``read_volume``; ``invalid-labels`` when a
            value is not finite, not an integer or outside [0, 32767].
    """
    volume = read_volume(path)
    values = np.unique(volume.data)
    if not np.all(np.isfinite(values)) or not np.array_equal(values, np.round(values)):
        raise VolumeFileError("invalid-labels", f"{volume.path.name} holds non-integer label values")
    low, high = _LABEL_RANGE
    if values.size and (values[0] < low or values[-1] > high):
        raise VolumeFileError(
            "invalid-labels",
            f"{volume.path.name}: label values from {values[0]:g} to {values[-1]:g}, expected within [{low}, {high}]",
        )
    return volume, volume.data.astype(np.int16), frozenset(int(v) for v in values)
