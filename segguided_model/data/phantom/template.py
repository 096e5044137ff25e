"""The MNI152 2009 brain template as tissue probability maps (CSF, GM, WM), from nilearn's package data.

The ICBM152 2009a nonlinear template (Fonov et al., NeuroImage 54(1):313-327, 2011;
Fonov et al., NeuroImage 47:S102, 2009; Collins et al., IPMI 1999), 1 mm, skull-stripped,
with its grey- and white-matter probability maps, ships inside nilearn
(``load_mni152_template``, ``load_mni152_gm_template``, ``load_mni152_wm_template``):
nothing is downloaded. Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging
Centre, Montreal Neurological Institute, McGill University; free to use, copy, modify and
distribute with that notice (README, "Synthetic data", has McGill's full notice).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

TISSUES: tuple[str, ...] = ("CSF", "GM", "WM")
"""Healthy tissue classes, in the channel order of every tissue map."""

TEMPLATE_SPACING_MM = 1.0
BRAIN_THRESHOLD = 0.05
"""A template voxel is brain where its T1 is non-zero or its GM + WM probability exceeds this."""


@dataclass(frozen=True)
class BrainTemplate:
    """Tissue probability maps of the template, cropped to the brain's bounding box.

    Attributes:
        tissues: ``(3, X, Y, Z)`` float32 probabilities of CSF, GM and WM in RAS array
            order (indices grow towards the patient's right, anterior and superior),
            summing to the brain's partial-volume fraction (0 outside the brain).
        spacing_mm: isotropic voxel size.
    """

    tissues: torch.Tensor
    spacing_mm: float

    @property
    def extent_mm(self) -> tuple[float, float, float]:
        """Size of the cropped brain box along each axis, in mm."""
        return tuple(float(n * self.spacing_mm) for n in self.tissues.shape[1:])  # type: ignore[return-value]


@functools.lru_cache(maxsize=1)
def _template_1mm() -> torch.Tensor:
    """The 1 mm tissue maps ``(3, X, Y, Z)``, RAS, cropped to the brain (read once per process)."""
    from nilearn import (
        datasets,  # imported here: it pulls in scikit-learn and pandas (seconds)
    )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nilearn's notices about resampling and dtypes
        images = [
            nib.as_closest_canonical(loader(resolution=1))
            for loader in (
                datasets.load_mni152_template,
                datasets.load_mni152_gm_template,
                datasets.load_mni152_wm_template,
            )
        ]
    t1, grey, white = (np.asarray(image.get_fdata(dtype=np.float32)) for image in images)
    brain = (t1 > 0) | (grey + white > BRAIN_THRESHOLD)
    grey, white = grey * brain, white * brain
    csf = np.clip(brain.astype(np.float32) - grey - white, 0.0, 1.0)
    corners = np.argwhere(brain)
    low, high = corners.min(axis=0), corners.max(axis=0) + 1
    box = tuple(slice(int(a), int(b)) for a, b in zip(low, high))
    return torch.from_numpy(np.stack([csf[box], grey[box], white[box]]).astype(np.float32))


@functools.lru_cache(maxsize=8)
def brain_template(spacing_mm: float = TEMPLATE_SPACING_MM) -> BrainTemplate:
    """The template's tissue maps at ``spacing_mm`` (≥ 1), area-averaged from 1 mm.

    Averaging (not point sampling) keeps each coarse voxel's tissue fractions, so thin
    cortex survives as partial volume instead of aliasing into speckle.

    Raises:
        ValueError: ``spacing_mm`` is below the template's 1 mm.
    """
    if not spacing_mm >= TEMPLATE_SPACING_MM:
        raise ValueError(f"spacing_mm must be at least the template's {TEMPLATE_SPACING_MM} mm, got {spacing_mm}")
    tissues = _template_1mm()
    if spacing_mm > TEMPLATE_SPACING_MM:
        size = [max(1, round(n * TEMPLATE_SPACING_MM / spacing_mm)) for n in tissues.shape[1:]]
        tissues = F.interpolate(tissues[None], size=size, mode="area")[0]
    return BrainTemplate(tissues=tissues.contiguous(), spacing_mm=float(spacing_mm))
