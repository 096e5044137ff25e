"""Label conventions: round trips for every convention and errors for unknown values."""

from __future__ import annotations

import pytest
import torch

from segguided_model.labels import (
    CONVENTIONS,
    REGIONS,
    SUBREGIONS,
    detect_convention,
    get_convention,
    label_map_from_regions,
    region_masks,
    subregion_masks,
)


def tumour_label(convention) -> torch.Tensor:
    label = torch.zeros(4, 4, 4, dtype=torch.uint8)
    label[0] = convention.value_of("ED")
    label[1] = convention.value_of("NCR")
    label[2] = convention.value_of("ET")
    return label


@pytest.mark.parametrize("name", sorted(CONVENTIONS))
def test_regions_round_trip_to_the_same_label_map(name):
    convention = CONVENTIONS[name]
    label = tumour_label(convention)
    assert torch.equal(label_map_from_regions(region_masks(label, convention), convention), label)


@pytest.mark.parametrize("name", sorted(CONVENTIONS))
def test_subregion_masks_are_disjoint_and_regions_nested(name):
    convention = CONVENTIONS[name]
    sub = subregion_masks(tumour_label(convention), convention)
    assert sub.shape == (len(SUBREGIONS), 4, 4, 4)
    assert int(sub.sum(0).max()) == 1
    regions = region_masks(tumour_label(convention), convention)
    et, tc, wt = (regions[REGIONS.index(r)] for r in REGIONS)
    assert bool((et <= tc).all() and (tc <= wt).all())


def test_brats2024_resection_cavity_belongs_to_no_region():
    convention = CONVENTIONS["brats2024"]
    label = torch.full((2, 2, 2), 4, dtype=torch.uint8)
    assert not region_masks(label, convention).any()


@pytest.mark.parametrize("name", sorted(CONVENTIONS))
def test_unknown_label_values_raise_value_error_naming_values_and_convention(name):
    label = torch.tensor([0, 1, 7, 9])
    with pytest.raises(ValueError, match=rf"\[7, 9\].*{name}"):
        subregion_masks(label, CONVENTIONS[name])


@pytest.mark.parametrize("values, expected", [({0, 1, 2, 4}, "brats2021"), ({0, 1, 2, 3}, "brats2023"), ({0, 3, 4}, "brats2024")])
def test_convention_is_detected_from_label_values(values, expected):
    assert detect_convention(values).name == expected


def test_unknown_convention_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="brats2021"):
        get_convention("brats1999")
