"""Smooth Gaussian random fields: the phantom's textures, tumour heterogeneity and irregular rims."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter


def smooth_field(
    rng: np.random.Generator, shape: tuple[int, ...], correlation_mm: float, spacing_mm: float
) -> torch.Tensor:
    """A zero-mean, unit-variance random field whose blobs are about ``correlation_mm`` across.

    White noise on a grid of about two points per ``correlation_mm`` is Gaussian-smoothed
    there (periodic borders, so no seams) and upsampled trilinearly: the cost hardly
    depends on ``shape``.

    Args:
        rng: source of the noise.
        shape: output shape ``(X, Y, Z)``.
        correlation_mm: size of the field's blobs.
        spacing_mm: voxel size of the output.

    Returns:
        ``shape`` float32 tensor, mean 0 and standard deviation 1.
    """
    points_per_blob = 2.0
    grid = [max(4, min(n, round(n * spacing_mm * points_per_blob / correlation_mm) + 2)) for n in shape]
    noise = gaussian_filter(rng.standard_normal(grid).astype(np.float32), sigma=points_per_blob / 2, mode="wrap")
    field = F.interpolate(torch.from_numpy(noise)[None, None], size=tuple(shape), mode="trilinear", align_corners=True)[0, 0]
    return (field - field.mean()) / (field.std() + 1e-6)
