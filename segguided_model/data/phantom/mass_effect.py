"""Mass effect: the tumour's bulk pushes the surrounding anatomy aside instead of replacing it.

A ball of radius ``R`` (the bulk) is inserted at the tumour's centre. The tissue found at
output radius ``rho`` comes from source radius ``r = (rho³ - R³ phi(rho))^(1/3)``, with
``phi(rho) = exp(-(rho / L)²)`` letting the push fade over ``L`` (the skull holds the
brain's outline): near the tumour the tissue of the whole ball is pushed out into a
shell around it (compressed, as brain tissue around a glioma is), far away nothing
moves. The map is monotone in ``rho``, so tissue never folds over itself. The
displacement is applied with MONAI's ``Warp`` (the same as any dense deformation).
"""

from __future__ import annotations

import warnings

import torch
from monai.networks.blocks import Warp


def mass_effect_displacement(
    shape: tuple[int, int, int], centre: tuple[float, float, float], bulk_radius: float, fade: float
) -> torch.Tensor:
    """The backward displacement of the mass effect, in voxels.

    Args:
        shape: grid ``(X, Y, Z)``.
        centre: the bulk's centre, in voxels.
        bulk_radius: ``R``, in voxels (0: no displacement).
        fade: ``L``, in voxels.

    Returns:
        ``(3, X, Y, Z)`` float32 ``ddf``: the tissue shown at voxel ``x`` comes from
        ``x + ddf[:, x]``, always at most as far from ``centre`` as ``x``.

    Raises:
        ValueError: a negative radius or a non-positive fade.
    """
    if bulk_radius < 0 or not fade > 0:
        raise ValueError(f"expected bulk_radius >= 0 and fade > 0, got {bulk_radius} and {fade}")
    axes = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) - c for n, c in zip(shape, centre)), indexing="ij")
    offset = torch.stack(axes)
    if bulk_radius == 0:
        return torch.zeros_like(offset)
    rho = offset.norm(dim=0)
    source = (rho**3 - bulk_radius**3 * torch.exp(-((rho / fade) ** 2))).clamp_min(0.0) ** (1 / 3)
    ratio = torch.where(rho > 0, source / rho.clamp_min(1e-6), torch.zeros_like(rho))
    return offset * (ratio - 1)


def displace(volume: torch.Tensor, ddf: torch.Tensor) -> torch.Tensor:
    """Resample ``volume`` ``(C, X, Y, Z)`` along ``ddf`` ``(3, X, Y, Z)`` (trilinear, border values outside)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Using PyTorch native grid_sample": as intended
        warp = Warp(mode="bilinear", padding_mode="border")
    return warp(volume[None].float(), ddf[None].float())[0]
