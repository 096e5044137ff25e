"""One phantom case: a subject's anatomy, a grown tumour that displaces it, its MRI appearance and a site's scanner.

``draw_case`` makes every random choice from one ``numpy`` generator; ``render_case``
applies them deterministically on any grid (the same draw on a coarser grid is the same
patient, scanned coarser). Arrays are in RAS order (``write_case`` stores them as BraTS
does, with an LPS affine).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from segguided_model.data.phantom.anatomy import (
    AnatomyDraw,
    draw_anatomy,
    subject_tissues,
)
from segguided_model.data.phantom.appearance import (
    AppearanceDraw,
    class_weights,
    draw_appearance,
    render_signal,
)
from segguided_model.data.phantom.growth import (
    GrowthDraw,
    draw_growth,
    grow_tumour,
    tumour_subregions,
)
from segguided_model.data.phantom.mass_effect import displace, mass_effect_displacement
from segguided_model.data.phantom.scanner import SiteProfile, acquire
from segguided_model.data.phantom.template import TISSUES

FIELD_OF_VIEW_MM = 240.0
"""Field of view along the largest axis; spacing is isotropic, 1 mm at BraTS's 240×240×155."""
BRATS_SHAPE: tuple[int, int, int] = (240, 240, 155)

BULK_FRACTION_RANGE: tuple[float, float] = (0.3, 0.9)
"""Radius of the displacing bulk relative to the core's equivalent radius (infiltrative to expansive)."""
FADE_RANGE_MM: tuple[float, float] = (15.0, 35.0)
"""How far beyond the core the push fades."""


def voxel_spacing(shape: tuple[int, int, int]) -> float:
    """Isotropic spacing (mm) that gives the largest axis a ``FIELD_OF_VIEW_MM`` field of view."""
    return FIELD_OF_VIEW_MM / max(shape)


def brats_grid(spacing_mm: float) -> tuple[int, int, int]:
    """The BraTS field of view (240×240×155 mm) at ``spacing_mm``: ``4`` → ``(60, 60, 39)``."""
    return tuple(max(1, round(n / spacing_mm)) for n in BRATS_SHAPE)  # type: ignore[return-value]


@dataclass(frozen=True)
class CaseDraw:
    """Every random choice of one case (see each draw's own class)."""

    anatomy: AnatomyDraw
    growth: GrowthDraw
    appearance: AppearanceDraw
    bulk_fraction: float
    fade_mm: float
    scanner_seed: int


def draw_case(profile: SiteProfile, rng: np.random.Generator) -> CaseDraw:
    """Draw one patient of ``profile``'s population."""
    return CaseDraw(
        anatomy=draw_anatomy(rng),
        growth=draw_growth(rng, profile.growth_time),
        appearance=draw_appearance(rng),
        bulk_fraction=float(rng.uniform(*BULK_FRACTION_RANGE)),
        fade_mm=float(rng.uniform(*FADE_RANGE_MM)),
        scanner_seed=int(rng.integers(2**31)),
    )


@dataclass(frozen=True)
class PhantomCase:
    """One rendered case.

    Attributes:
        images: modality → ``int16`` ``(X, Y, Z)``, 0 outside the brain.
        subregions: ``"NCR"``/``"ED"``/``"ET"`` → disjoint boolean ``(X, Y, Z)``.
        tissues: ``(3, X, Y, Z)`` CSF/GM/WM probabilities after the mass effect, before
            the tumour is painted in: the healthy anatomy as the tumour left it.
        centre: the tumour's seed, in voxels.
        spacing_mm: voxel size.
    """

    images: dict[str, np.ndarray]
    subregions: dict[str, np.ndarray]
    tissues: np.ndarray
    centre: tuple[int, int, int]
    spacing_mm: float


def render_case(draw: CaseDraw, profile: SiteProfile, shape: tuple[int, int, int]) -> PhantomCase:
    """Render ``draw`` on a grid of ``shape`` (RAS; the last axis is the slice axis).

    Raises:
        ValueError: the grid is finer than the template's 1 mm.
    """
    shape = tuple(int(n) for n in shape)  # type: ignore[assignment]
    spacing = voxel_spacing(shape)
    tissues = subject_tissues(draw.anatomy, shape, spacing)
    fields = grow_tumour(tissues, spacing, draw.growth)
    core = fields.crossing_time <= draw.growth.growth_time
    core_radius = (3 * float(core.sum()) / (4 * np.pi)) ** (1 / 3)
    ddf = mass_effect_displacement(
        shape, fields.centre, draw.bulk_fraction * core_radius, core_radius + draw.fade_mm / spacing
    )
    moved = displace(torch.cat([tissues, fields.density[None], fields.crossing_time[None]]), ddf)
    tissues = moved[: len(TISSUES)].clamp(0.0, 1.0)
    fields = type(fields)(density=moved[len(TISSUES)], crossing_time=moved[len(TISSUES) + 1], centre=fields.centre)
    brain = tissues.sum(0) > 0.5
    subregions = tumour_subregions(fields, brain, spacing, draw.growth)
    weights = class_weights(tissues, fields.density, subregions, draw.growth.oedema_threshold)
    signal = render_signal(weights, draw.appearance, profile.contrast_agent, spacing)
    white_matter = tissues[TISSUES.index("WM")] > 0.9
    images = acquire(signal, brain, white_matter & ~subregions["ED"], profile, spacing, draw.scanner_seed)
    return PhantomCase(
        images=images,
        subregions={name: mask.numpy() for name, mask in subregions.items()},
        tissues=tissues.numpy(),
        centre=fields.centre,
        spacing_mm=spacing,
    )


def synthesize_case(profile: SiteProfile, shape: tuple[int, int, int], rng: np.random.Generator) -> PhantomCase:
    """Draw and render one case of ``profile``'s site on a grid of ``shape``."""
    return render_case(draw_case(profile, rng), profile, shape)
