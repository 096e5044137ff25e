"""A glioma grown in the subject's brain by Fisher–Kolmogorov reaction–diffusion, fast in white matter.

Tumour cell density ``u`` in [0, 1] follows ``du/dt = div(D grad u) + rho u (1 - u)``
(Swanson et al., Br J Cancer 82(10), 2000; Konukoglu et al., IEEE TMI 29(1), 2010) with
``D = D_wm * WM + D_gm * GM`` and no spread through CSF: the model TumorSim grows its
tumours with to evaluate segmentation (Prastawa et al., Med Image Anal 13(2), 2009).
Solved by explicit finite differences with zero-flux borders on a box around the seed, at
``max(spacing, GROWTH_SPACING_MM)``; time is in units of ``1 / rho``.

Sub-regions come from density and time, so the oedema follows the white matter:

* core: where ``u`` crossed ``CORE_DENSITY``, at time ``t_c``;
* ET, the proliferating edge: core crossed within the last ``rim_time`` (which varies
  smoothly in space, so rims are irregular and sometimes open); NCR, the hypoxic centre:
  core crossed earlier. Cases without necrosis are all ET, without enhancement all NCR;
* ED, infiltrated tissue: ``u`` above the oedema threshold outside the core.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import uniform_filter

from segguided_model.data.phantom.random_field import smooth_field
from segguided_model.data.phantom.template import TISSUES

GROWTH_SPACING_MM = 2.0
"""Finest grid the growth is solved on; finer outputs get its fields upsampled."""
BOX_HALF_MM = 64.0
"""The growth is solved within this distance of the seed."""
CORE_DENSITY = 0.5
SEED_RADIUS_MM = 5.0
SEED_DENSITY = 1.0
MAX_TIME_STEP = 0.05
"""Accuracy bound of the explicit reaction step (time in units of 1 / rho)."""
NEVER = 1e3
"""Crossing time of voxels the core never reached."""


@dataclass(frozen=True)
class Satellite:
    """A second, smaller focus: where (a draw among white-matter voxels near the seed) and how strong."""

    choice: float
    distance_mm: float
    strength: float


@dataclass(frozen=True)
class GrowthDraw:
    """The random choices that make one tumour.

    Attributes:
        seed_choice: in [0, 1): picks the seed among the deep white-matter voxels.
        growth_time: how long the tumour grows (units of ``1 / rho``); sets its size.
        infiltration_mm: ``sqrt(D_wm / rho)``, the decay length of the density in white
            matter: how far the oedema reaches beyond the core.
        grey_matter_ratio: ``D_gm / D_wm``.
        oedema_threshold: density above which tissue counts as oedema.
        rim_time: time the edge stays enhancing (thickness of the ET rim ≈ front speed × this).
        rim_irregularity: relative spatial variation of the rim time.
        necrotic: whether the core has a necrotic centre.
        enhancing: whether the core enhances.
        satellites: further foci.
        field_seed: seeds the heterogeneity fields.
    """

    seed_choice: float
    growth_time: float
    infiltration_mm: float
    grey_matter_ratio: float
    oedema_threshold: float
    rim_time: float
    rim_irregularity: float
    necrotic: bool
    enhancing: bool
    satellites: tuple[Satellite, ...]
    field_seed: int


PROBABILITY_NO_NECROSIS = 0.12
PROBABILITY_NO_ENHANCEMENT = 0.08


def draw_growth(rng: np.random.Generator, growth_time: tuple[float, float]) -> GrowthDraw:
    """Draw one tumour; ``growth_time`` is the population's range (a site's tumour-size mix)."""
    enhancing = bool(rng.random() >= PROBABILITY_NO_ENHANCEMENT)
    necrotic = bool(rng.random() >= PROBABILITY_NO_NECROSIS) or not enhancing
    satellites = tuple(
        Satellite(float(rng.random()), float(rng.uniform(14.0, 32.0)), float(rng.uniform(0.05, 0.4)))
        for _ in range(int(rng.choice([0, 0, 1, 1, 2])))
    )
    return GrowthDraw(
        seed_choice=float(rng.random()),
        growth_time=float(rng.uniform(*growth_time)),
        infiltration_mm=float(rng.uniform(2.0, 3.5)),
        grey_matter_ratio=float(rng.uniform(0.05, 0.2)),
        oedema_threshold=float(rng.uniform(0.01, 0.06)),
        rim_time=float(rng.uniform(0.8, 1.8)),
        rim_irregularity=float(rng.uniform(0.2, 0.7)),
        necrotic=necrotic,
        enhancing=enhancing,
        satellites=satellites,
        field_seed=int(rng.integers(2**31)),
    )


@dataclass(frozen=True)
class TumourFields:
    """The grown tumour on the output grid.

    Attributes:
        density: ``u`` at the end, ``(X, Y, Z)`` float32 in [0, 1].
        crossing_time: when ``u`` crossed ``CORE_DENSITY`` (``NEVER`` where it did not).
        centre: the seed, in output voxels.
    """

    density: torch.Tensor
    crossing_time: torch.Tensor
    centre: tuple[int, int, int]


def _box_mean(volume: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over a ``(2 radius + 1)³`` box (separable, zero outside)."""
    return torch.from_numpy(uniform_filter(volume.numpy(), size=2 * radius + 1, mode="constant"))


def _pick(candidates: torch.Tensor, choice: float) -> tuple[int, int, int]:
    points = torch.nonzero(candidates)
    return tuple(int(v) for v in points[min(int(choice * len(points)), len(points) - 1)])  # type: ignore[return-value]


def choose_seed(tissues: torch.Tensor, spacing_mm: float, choice: float) -> tuple[int, int, int]:
    """A deep white-matter voxel: WM > 0.7 and mostly WM within 6 mm (the most WM-rich if none is).

    Args:
        tissues: ``(3, X, Y, Z)`` CSF/GM/WM probabilities.
        spacing_mm: voxel size.
        choice: in [0, 1), which candidate (in array order).
    """
    white = tissues[TISSUES.index("WM")]
    around = _box_mean(white, max(1, round(6.0 / spacing_mm)))
    candidates = (white > 0.7) & (around > 0.55)
    if not candidates.any():
        candidates = around >= around.max()
    return _pick(candidates, choice)


def _satellite_seed(
    tissues: torch.Tensor, spacing_mm: float, centre: tuple[int, int, int], satellite: Satellite
) -> tuple[int, int, int] | None:
    white = tissues[TISSUES.index("WM")]
    axes = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in white.shape), indexing="ij")
    distance = torch.sqrt(sum((a - c) ** 2 for a, c in zip(axes, centre))) * spacing_mm
    candidates = (white > 0.6) & ((distance - satellite.distance_mm).abs() < max(3.0, spacing_mm))
    return _pick(candidates, satellite.choice) if candidates.any() else None


def _diffusion_step(u: torch.Tensor, face: list[torch.Tensor], scale: float) -> torch.Tensor:
    """``div(D grad u) * scale`` with zero-flux borders; ``face[a]`` is D between neighbours along axis ``a``."""
    change = torch.zeros_like(u)
    for axis, diffusivity in enumerate(face):
        flux = diffusivity * torch.diff(u, dim=axis)
        lead = [slice(None)] * 3
        lead[axis] = slice(0, -1)
        trail = [slice(None)] * 3
        trail[axis] = slice(1, None)
        change[tuple(lead)] += flux
        change[tuple(trail)] -= flux
    return change.mul_(scale)


def grow_tumour(tissues: torch.Tensor, spacing_mm: float, draw: GrowthDraw) -> TumourFields:
    """Grow the tumour in the subject's tissue maps.

    Args:
        tissues: ``(3, X, Y, Z)`` CSF/GM/WM probabilities on the output grid.
        spacing_mm: the output grid's voxel size.
        draw: the tumour's random choices.

    Returns:
        Density and crossing time on the output grid, and the seed.
    """
    shape = tuple(tissues.shape[1:])
    centre = choose_seed(tissues, spacing_mm, draw.seed_choice)
    factor = max(1, round(GROWTH_SPACING_MM / spacing_mm))
    growth_spacing = spacing_mm * factor
    half = math.ceil(BOX_HALF_MM / growth_spacing) * factor
    low = [max(0, c - half) // factor * factor for c in centre]
    high = [min(n, c + half + 1) for n, c in zip(shape, centre)]
    high = [lo + math.ceil((hi - lo) / factor) * factor for lo, hi in zip(low, high)]
    box = tuple(slice(lo, hi) for lo, hi in zip(low, high))
    crop = torch.zeros((3, *(hi - lo for lo, hi in zip(low, high))))
    inside = tuple(slice(0, min(hi, n) - lo) for lo, hi, n in zip(low, high, shape))
    crop[(slice(None), *inside)] = tissues[(slice(None), *(slice(lo, min(hi, n)) for lo, hi, n in zip(low, high, shape)))]
    coarse = F.avg_pool3d(crop[None], factor)[0] if factor > 1 else crop

    diffusion_wm = draw.infiltration_mm**2  # rho = 1
    diffusivity = diffusion_wm * (coarse[TISSUES.index("WM")] + draw.grey_matter_ratio * coarse[TISSUES.index("GM")])
    face = [(diffusivity.narrow(a, 0, n - 1) + diffusivity.narrow(a, 1, n - 1)) / 2 for a, n in enumerate(diffusivity.shape)]
    rng = np.random.default_rng(draw.field_seed)
    proliferation = (1 + 0.3 * smooth_field(rng, tuple(diffusivity.shape), 20.0, growth_spacing)).clamp_(0.3, None)
    proliferation *= (coarse[TISSUES.index("WM")] + coarse[TISSUES.index("GM")]).clamp(0, 1)

    axes = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in diffusivity.shape), indexing="ij")
    u = torch.zeros(diffusivity.shape)
    foci = [(centre, 1.0)]
    for satellite in draw.satellites:
        seed = _satellite_seed(tissues, spacing_mm, centre, satellite)
        if seed is not None:
            foci.append((seed, satellite.strength))
    for point, strength in foci:
        local = [((p - lo) / factor - 0.5 * (factor - 1) / factor) for p, lo in zip(point, low)]
        squared = sum(((a - c) * growth_spacing) ** 2 for a, c in zip(axes, local))
        u = torch.maximum(u, SEED_DENSITY * strength * torch.exp(-squared / (2 * SEED_RADIUS_MM**2)))

    dt = min(MAX_TIME_STEP, 0.9 * growth_spacing**2 / (6 * diffusion_wm))
    steps = max(1, math.ceil(draw.growth_time / dt))
    dt = draw.growth_time / steps
    crossing = torch.full_like(u, NEVER)
    crossing[u >= CORE_DENSITY] = 0.0
    scale = dt / growth_spacing**2
    for step in range(steps):
        previous = u
        u = u + _diffusion_step(u, face, scale) + dt * proliferation * u * (1 - u)
        u.clamp_(0.0, 1.0)
        crossed = (previous < CORE_DENSITY) & (u >= CORE_DENSITY)
        fraction = (CORE_DENSITY - previous[crossed]) / (u[crossed] - previous[crossed]).clamp_min(1e-6)
        crossing[crossed] = (step + fraction) * dt

    if factor > 1:
        u = F.interpolate(u[None, None], scale_factor=factor, mode="trilinear", align_corners=False)[0, 0]
        crossing = F.interpolate(crossing[None, None], scale_factor=factor, mode="trilinear", align_corners=False)[0, 0]
    density = torch.zeros(shape)
    crossing_time = torch.full(shape, NEVER)
    density[box] = u[inside]
    crossing_time[box] = crossing[inside]
    return TumourFields(density=density, crossing_time=crossing_time, centre=centre)


def tumour_subregions(
    fields: TumourFields, brain: torch.Tensor, spacing_mm: float, draw: GrowthDraw
) -> dict[str, torch.Tensor]:
    """NCR, ED and ET masks from the (displaced) tumour fields.

    Args:
        fields: density and crossing time on the output grid.
        brain: ``(X, Y, Z)`` boolean brain mask; the tumour stays inside it.
        spacing_mm: voxel size.
        draw: the tumour's thresholds, rim time and kind.

    Returns:
        ``"NCR"``, ``"ED"``, ``"ET"`` → disjoint boolean masks ``(X, Y, Z)``.
    """
    core = (fields.crossing_time <= draw.growth_time) & brain
    age = draw.growth_time - fields.crossing_time
    rng = np.random.default_rng(draw.field_seed + 1)
    rim_time = draw.rim_time * (1 + draw.rim_irregularity * smooth_field(rng, tuple(core.shape), 16.0, spacing_mm))
    if not draw.enhancing:
        enhancing = torch.zeros_like(core)
    elif not draw.necrotic:
        enhancing = core
    else:
        enhancing = core & (age <= rim_time)
    oedema = (fields.density > draw.oedema_threshold) & brain & ~core
    return {"NCR": core & ~enhancing, "ED": oedema, "ET": enhancing}
