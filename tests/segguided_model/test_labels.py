"""Label conventions: round trips for every convention and errors for unknown values."""

from __future__ import annotations

import pytest
import torch

from segguided_model.labels import (
    CONVENTIONS,
    REGIONS,
    SUBREGIONS,
    decide_convention,
    equivalent_conventions,
    fitting_conventions,
    get_convention,
    label_map_from_regions,
    nest_regions,
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


@pytest.mark.parametrize(
    "values, expected",
    [
        ({0, 1, 2, 4}, ("brats2021", "brats2024")),
        ({0, 1, 2, 3}, ("brats2023", "brats2024", "msd")),
        ({0, 1, 2, 3, 4}, ("brats2024",)),
        ({0, 5}, ()),
    ],
)
def test_fitting_conventions_are_those_that_define_every_value(values, expected):
    assert fitting_conventions(values) == expected


def test_equivalent_conventions_read_the_values_alike():
    assert equivalent_conventions("brats2023", {0, 1, 2, 3}) == {"brats2023", "brats2024"}
    assert equivalent_conventions("brats2021", {0, 1, 2, 4}) == {"brats2021"}
    assert equivalent_conventions("brats2021", {0, 1, 2}) == {"brats2021", "brats2023", "brats2024"}
    assert equivalent_conventions("msd", {0, 1, 2, 3}) == {"msd"}


BRATS2023_LAYOUT = ("brats2023", "brats2024", "brats2021")
BRATS2021_LAYOUT = ("brats2021", "brats2023", "brats2024")


def test_cavity_only_cases_follow_a_case_that_proves_brats2024():
    # Two post-treatment cases with a resection cavity and no enhancing tumour, one with both:
    # a vote would read the first two as BraTS 2021 and turn the cavity into ET.
    decision = decide_convention(BRATS2023_LAYOUT, {"a": {0, 2, 4}, "b": {0, 2, 4}, "c": {0, 1, 2, 3, 4}})
    assert decision.convention == "brats2024" and "case c" in decision.explanation


@pytest.mark.parametrize(
    "candidates, values, expected",
    [
        (BRATS2023_LAYOUT, {"a": {0, 1, 2, 3}, "b": {0, 1, 2}}, "brats2023"),
        (BRATS2021_LAYOUT, {"a": {0, 1, 2, 4}}, "brats2021"),
        (BRATS2021_LAYOUT, {"a": {0, 1, 2, 3}}, "brats2023"),  # 2023 labels in 2021-named folders
        (BRATS2021_LAYOUT, {}, "brats2021"),
        (("msd",), {"a": {0, 1, 2, 3}}, "msd"),
    ],
)
def test_decided_conventions(candidates, values, expected):
    assert decide_convention(candidates, values).convention == expected


@pytest.mark.parametrize(
    "values",
    [
        {"a": {0, 1, 2, 4}, "b": {0, 1, 2, 4}, "c": {0, 1, 2, 3}},  # only brats2024 fits all, nothing proves it
        {"a": {0, 1, 2, 4}},  # a 2023-named folder: BraTS 2021 labels, or BraTS 2024 without ET?
    ],
)
def test_labels_that_disagree_or_prove_nothing_leave_the_convention_undecided(values):
    decision = decide_convention(BRATS2023_LAYOUT, values)
    assert decision.convention is None
    assert "brats2021 or brats2024" in decision.explanation and "a" in decision.explanation


def test_nest_regions_makes_et_part_of_tc_and_tc_part_of_wt():
    regions = torch.zeros(3, 3, dtype=torch.bool)
    regions[0, 0] = True  # ET only
    regions[1, 1] = True  # TC only
    regions[2, 2] = True  # WT only
    assert nest_regions(regions).tolist() == [[True, False, False], [True, True, False], [True, True, True]]
    with pytest.raises(ValueError, match="three|3 region"):
        nest_regions(torch.zeros(2, 3, dtype=torch.bool))


def test_unknown_convention_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="brats2021"):
        get_convention("brats1999")
