"""One subject's anatomy: the template under a random affine and a smooth elastic deformation.

The deformation is MONAI's, assembled as ``monai.transforms.Rand2DElastic`` assembles its
2D one, in 3D: a control grid with Gaussian offsets (``RandDeformGrid``), an affine
(``AffineGrid``: rotation, per-axis scaling, shift), trilinear upsampling of the control
grid to every voxel, and ``Resample``. Random parameters are drawn apart from their
application (``draw_anatomy``), so a test can fix them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import AffineGrid, CenterSpatialCrop, RandDeformGrid, Resample

from segguided_model.data.phantom.template import brain_template

CONTROL_SPACING_MM = 24.0
"""Distance between the elastic deformation's control points: folds of a few centimetres."""

SCALE_RANGE: tuple[float, float] = (0.86, 0.98)
"""Brain size relative to the template (the MNI152 brain is larger than most; with its brainstem
it is 156 mm tall, and BraTS volumes have 155 slices of 1 mm)."""

DOWNWARD_SHIFT_MM = 5.0
"""The brain sits this much below the centre, so a tall one loses brainstem, not vertex."""

ROTATION_RANGE_DEG = 8.0
SHIFT_RANGE_MM = 6.0
ELASTIC_MAGNITUDE_MM: tuple[float, float] = (1.5, 4.0)
"""Standard deviation of the control points' offsets."""


@dataclass(frozen=True)
class AnatomyDraw:
    """The random choices that make one subject's anatomy.

    Attributes:
        scale: brain size relative to the template along each axis.
        rotation_rad: rotation about each axis.
        shift_mm: translation of the brain in the field of view.
        elastic_magnitude_mm: standard deviation of the control points' offsets.
        elastic_seed: seeds MONAI's ``RandDeformGrid``.
    """

    scale: tuple[float, float, float]
    rotation_rad: tuple[float, float, float]
    shift_mm: tuple[float, float, float]
    elastic_magnitude_mm: float
    elastic_seed: int


def draw_anatomy(rng: np.random.Generator) -> AnatomyDraw:
    """Draw a subject's size, pose and elastic deformation."""
    angle = math.radians(ROTATION_RANGE_DEG)
    return AnatomyDraw(
        scale=tuple(float(s) for s in np.exp(rng.normal(0, 0.02, 3)) * rng.uniform(*SCALE_RANGE)),  # type: ignore[arg-type]
        rotation_rad=tuple(float(a) for a in rng.uniform(-angle, angle, 3)),  # type: ignore[arg-type]
        shift_mm=tuple(float(s) for s in rng.uniform(-SHIFT_RANGE_MM, SHIFT_RANGE_MM, 3) - [0, 0, DOWNWARD_SHIFT_MM]),  # type: ignore[arg-type]
        elastic_magnitude_mm=float(rng.uniform(*ELASTIC_MAGNITUDE_MM)),
        elastic_seed=int(rng.integers(2**31)),
    )


def subject_tissues(draw: AnatomyDraw, shape: tuple[int, int, int], spacing_mm: float) -> torch.Tensor:
    """The subject's CSF/GM/WM probability maps on the output grid.

    The template's brain is centred in the field of view (plus ``draw.shift_mm``).

    Args:
        draw: the subject's random choices.
        shape: output grid ``(X, Y, Z)``, RAS array order.
        spacing_mm: isotropic output voxel size (≥ 1).

    Returns:
        ``(3, X, Y, Z)`` float32 probabilities (CSF, GM, WM), 0 outside the brain.
    """
    template = brain_template(spacing_mm)
    control = max(2, round(CONTROL_SPACING_MM / spacing_mm))
    magnitude = draw.elastic_magnitude_mm / spacing_mm
    deform = RandDeformGrid(spacing=(control,) * 3, magnitude_range=(magnitude, magnitude))
    deform.set_random_state(seed=draw.elastic_seed)
    grid = torch.as_tensor(deform(spatial_size=shape), dtype=torch.float32)
    # output voxels → template voxels: the template is at the output spacing already
    grid, _ = AffineGrid(
        rotate_params=draw.rotation_rad,
        scale_params=tuple(1.0 / s for s in draw.scale),
        translate_params=tuple(-s / spacing_mm for s in draw.shift_mm),
    )(grid=grid)
    grid = F.interpolate(grid[None], scale_factor=(control,) * 3, mode="trilinear", align_corners=False)[0]
    grid = CenterSpatialCrop(roi_size=shape)(grid)
    tissues = Resample(mode="bilinear", padding_mode="zeros")(template.tissues, grid)
    return torch.as_tensor(tissues).as_subclass(torch.Tensor).float().clamp_(0.0, 1.0)
