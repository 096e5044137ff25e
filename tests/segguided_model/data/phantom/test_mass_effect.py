"""Mass effect: tissue is pushed aside along the radius, kept (not overwritten) and still far away."""

from __future__ import annotations

import pytest
import torch

from segguided_model.data.phantom.mass_effect import displace, mass_effect_displacement

SHAPE = (33, 33, 33)
CENTRE = (16.0, 16.0, 16.0)


def _radius(shape=SHAPE, centre=CENTRE) -> torch.Tensor:
    axes = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) - c for n, c in zip(shape, centre)), indexing="ij")
    return torch.stack(axes).norm(dim=0)


def test_tissue_comes_from_nearer_the_centre_and_far_tissue_stays():
    ddf = mass_effect_displacement(SHAPE, CENTRE, bulk_radius=5.0, fade=8.0)
    rho = _radius()
    source = (torch.stack(torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in SHAPE), indexing="ij")) + ddf)
    source_rho = (source - torch.tensor(CENTRE).reshape(3, 1, 1, 1)).norm(dim=0)
    assert (source_rho <= rho + 1e-4).all()  # pushed outwards, never pulled in
    assert ddf[:, rho > 15].norm(dim=0).max() < 0.05  # the push fades: the brain's outline stays
    # radial: the displacement is parallel to the direction from the centre
    offset = source - torch.tensor(CENTRE).reshape(3, 1, 1, 1)
    cross = torch.linalg.cross(offset.reshape(3, -1).T, (offset - ddf).reshape(3, -1).T)
    assert cross.abs().max() < 1e-3


def test_the_tissue_at_the_centre_is_displaced_into_a_shell_not_overwritten():
    # a small marked blob of tissue where the tumour's bulk grows
    # (without fading the push preserves volume: the ball r <= 4 ends up in the shell 4 < rho < 5.04)
    rho = _radius()
    marked = (rho <= 4.0).float()[None]
    moved = displace(marked, mass_effect_displacement(SHAPE, CENTRE, bulk_radius=4.0, fade=1000.0))[0]
    assert moved[(rho > 4.2) & (rho < 4.8)].min() > 0.5  # the marked tissue now surrounds the bulk
    assert moved[rho > 5.8].max() < 0.5  # and goes no further
    # overwriting the bulk with tumour would have left none of the marked tissue outside it
    assert moved[rho > 4.0].sum() > 0.5 * marked.sum()


def test_the_map_does_not_fold():
    ddf = mass_effect_displacement(SHAPE, CENTRE, bulk_radius=7.0, fade=5.0)
    line = torch.arange(17, 33, dtype=torch.float32)
    source = line + ddf[0, 17:, 16, 16]
    assert (torch.diff(source) >= -1e-5).all()


def test_no_bulk_means_no_displacement_and_bad_arguments_are_named():
    assert mass_effect_displacement(SHAPE, CENTRE, 0.0, 5.0).abs().max() == 0
    with pytest.raises(ValueError, match="bulk_radius >= 0 and fade > 0, got -1.0 and 5.0"):
        mass_effect_displacement(SHAPE, CENTRE, -1.0, 5.0)
