"""MRI appearance: per-tissue intensity mixtures per modality, SynthSeg-style, with MRI's contrasts.

As in SynthSeg's generator (Billot et al., Med Image Anal 86, 2023), every class has a
Gaussian intensity per modality whose mean and spread are drawn per case, and a voxel's
signal mixes its classes' intensities by their (partial-volume) weights. Unlike SynthSeg's
fully random contrasts, the means are drawn around the contrasts of real T1, T1c, T2 and
FLAIR scans (``INTENSITY_PRIORS``), because the network must learn MRI, not any contrast.
The tumour's sub-regions overlap in most modalities, as in real scans: ED, ET and grey
matter are alike on T1; ED and NCR (sometimes cystic) on T2; ED and ET on FLAIR. Only
T1c's enhancement marks ET, and its strength is the contrast agent's (a site's), with
enhancing vessels and choroid plexus in the CSF spaces that are not tumour.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import torch

from segguided_model.data.layouts import MODALITIES
from segguided_model.data.phantom.random_field import smooth_field
from segguided_model.data.phantom.template import TISSUES

CLASSES: tuple[str, ...] = (*TISSUES, "ED", "NCR", "ET")
"""The classes whose intensities mix: healthy tissues, then tumour sub-regions."""

INTENSITY_PRIORS: Mapping[str, tuple[float, float, float, float]] = {
    # mean relative signal per modality, in MODALITIES order (t1, t1c, t2, flair)
    "CSF": (0.30, 0.30, 1.00, 0.12),
    "GM": (0.66, 0.66, 0.66, 0.64),
    "WM": (0.90, 0.90, 0.46, 0.50),
    "ED": (0.62, 0.64, 0.84, 0.86),
    "NCR": (0.42, 0.42, 0.90, 0.62),
    "ET": (0.66, 0.66, 0.72, 0.80),
}
CYSTIC_NECROSIS: tuple[float, float, float, float] = (0.32, 0.32, 1.00, 0.25)
"""Necrosis that has turned into fluid: like CSF on T2 and FLAIR."""
PROBABILITY_CYSTIC = 0.25
MEAN_SPREAD = 0.06
"""Each class mean is drawn uniformly within ± this of its prior, per case and modality."""
STD_RANGE: tuple[float, float] = (0.02, 0.06)
UPTAKE_RANGE: tuple[float, float] = (0.3, 0.7)
"""T1c enhancement of ET at contrast-agent strength 1, relative signal."""
OEDEMA_ONSET = 0.35
"""Share of oedema's signal at the oedema threshold; it reaches 1 at four times the threshold."""


@dataclass(frozen=True)
class AppearanceDraw:
    """The random choices of one case's intensities.

    Attributes:
        means: ``(classes, modalities)`` mean relative signal.
        stds: ``(classes, modalities)`` standard deviation within a class.
        uptake: ET's T1c enhancement at agent strength 1.
        heterogeneity: relative texture amplitude of each tumour class.
        field_seed: seeds the noise and texture fields.
    """

    means: tuple[tuple[float, ...], ...]
    stds: tuple[tuple[float, ...], ...]
    uptake: float
    heterogeneity: float
    field_seed: int


def draw_appearance(rng: np.random.Generator) -> AppearanceDraw:
    """Draw one case's class intensities around ``INTENSITY_PRIORS``."""
    priors = {**INTENSITY_PRIORS}
    if rng.random() < PROBABILITY_CYSTIC:
        priors["NCR"] = CYSTIC_NECROSIS
    means = np.array([priors[name] for name in CLASSES]) + rng.uniform(-MEAN_SPREAD, MEAN_SPREAD, (len(CLASSES), len(MODALITIES)))
    stds = rng.uniform(*STD_RANGE, (len(CLASSES), len(MODALITIES)))
    return AppearanceDraw(
        means=tuple(tuple(float(v) for v in row) for row in np.clip(means, 0.05, None)),
        stds=tuple(tuple(float(v) for v in row) for row in stds),
        uptake=float(rng.uniform(*UPTAKE_RANGE)),
        heterogeneity=float(rng.uniform(0.05, 0.2)),
        field_seed=int(rng.integers(2**31)),
    )


def class_weights(
    tissues: torch.Tensor, density: torch.Tensor, subregions: Mapping[str, torch.Tensor], oedema_threshold: float
) -> torch.Tensor:
    """Each voxel's share of every class in ``CLASSES``.

    Oedema is tissue with water in it: its share grows from ``OEDEMA_ONSET`` at the
    threshold to 1, so the oedema's edge fades into the tissue it infiltrates. The core
    (NCR, ET) replaces tissue.

    Returns:
        ``(6, X, Y, Z)`` float32; sums to the brain's partial-volume fraction.
    """
    core = (subregions["NCR"] | subregions["ET"]).float()
    ramp = OEDEMA_ONSET + (1 - OEDEMA_ONSET) * (density - oedema_threshold) / (3 * oedema_threshold)
    oedema = subregions["ED"].float() * ramp.clamp(0.0, 1.0)
    healthy = tissues * ((1 - oedema) * (1 - core))[None]
    return torch.cat([healthy, oedema[None], subregions["NCR"].float()[None], subregions["ET"].float()[None]])


def render_signal(
    weights: torch.Tensor, draw: AppearanceDraw, contrast_agent: float, spacing_mm: float
) -> torch.Tensor:
    """Relative signal of every modality before the scanner.

    Args:
        weights: ``(6, X, Y, Z)`` class shares (``class_weights``).
        draw: the case's intensities.
        contrast_agent: the site's contrast-agent strength (scales every T1c enhancement).
        spacing_mm: voxel size (sets the size of the texture fields).

    Returns:
        ``(4, X, Y, Z)`` float32 in ``MODALITIES`` order, 0 outside the brain.
    """
    rng = np.random.default_rng(draw.field_seed)
    shape = tuple(weights.shape[1:])
    means = torch.tensor(draw.means, dtype=torch.float32)  # (classes, modalities)
    stds = torch.tensor(draw.stds, dtype=torch.float32)
    texture = torch.ones_like(weights)
    for index in range(len(TISSUES), len(CLASSES)):  # tumour classes are lumpy
        texture[index] += draw.heterogeneity * smooth_field(rng, shape, 10.0, spacing_mm)
    t1c = MODALITIES.index("t1c")
    enhancement = torch.zeros((len(CLASSES), *shape))
    uptake = (1 + 0.3 * smooth_field(rng, shape, 8.0, spacing_mm)).clamp_(0.2, None)
    enhancement[CLASSES.index("ET")] = draw.uptake * uptake
    vessels = (smooth_field(rng, shape, 6.0, spacing_mm) > 2.0).float()  # sparse bright spots in CSF spaces
    enhancement[CLASSES.index("CSF")] = 0.5 * vessels
    signal = torch.empty((len(MODALITIES), *shape))
    for modality in range(len(MODALITIES)):
        level = means[:, modality].reshape(-1, 1, 1, 1) * texture
        if modality == t1c:
            level = level + contrast_agent * enhancement
        spread = torch.einsum("c,c...->...", stds[:, modality], weights)
        noise = torch.from_numpy(rng.standard_normal(shape, dtype=np.float32))
        signal[modality] = (weights * level).sum(0) + spread * noise
    return signal.clamp_(min=0.0)
