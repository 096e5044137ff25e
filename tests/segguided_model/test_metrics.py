"""Per-region Dice and HD95: known answers on tiny volumes and the empty-region policy."""

from __future__ import annotations

import math

import pytest
import torch

from segguided_model.metrics import (
    HD95_ONE_EMPTY,
    METRIC_KEYS,
    case_metrics,
    mean_metrics,
    region_dice,
    region_hd95,
)


def mask(shape, *slices) -> torch.Tensor:
    volume = torch.zeros(shape, dtype=torch.bool)
    volume[slices] = True
    return volume


def test_dice_of_half_overlapping_cubes_on_2x2x2_volume():
    pred = mask((2, 2, 2), slice(None), slice(None), slice(0, 1))  # 4 voxels
    ref = mask((2, 2, 2), slice(None), slice(0, 1), slice(None))  # 4 voxels, 2 shared
    assert region_dice(pred, ref) == pytest.approx(2 * 2 / (4 + 4))


def test_identical_masks_give_dice_1_and_hd95_0():
    region = mask((6, 6, 6), slice(1, 4), slice(2, 5), slice(0, 2))
    assert region_dice(region, region) == 1.0
    assert region_hd95(region, region) == 0.0


def test_hd95_of_shifted_single_voxels_is_their_distance_in_mm():
    pred = mask((8, 8, 8), 1, 1, 1)
    ref = mask((8, 8, 8), 1, 1, 4)
    assert region_hd95(pred, ref) == pytest.approx(3.0)
    assert region_hd95(pred, ref, spacing=(1.0, 1.0, 2.5)) == pytest.approx(7.5)


def test_both_empty_gives_dice_1_and_hd95_0():
    empty = torch.zeros(4, 4, 4, dtype=torch.bool)
    assert region_dice(empty, empty) == 1.0
    assert region_hd95(empty, empty) == 0.0


@pytest.mark.parametrize("pred_empty", [True, False])
def test_exactly_one_empty_gives_dice_0_and_the_brats_worst_hd95(pred_empty):
    empty = torch.zeros(4, 4, 4, dtype=torch.bool)
    full = mask((4, 4, 4), slice(1, 3), slice(1, 3), slice(1, 3))
    pred, ref = (empty, full) if pred_empty else (full, empty)
    assert region_dice(pred, ref) == 0.0
    assert region_hd95(pred, ref) == HD95_ONE_EMPTY == 373.13


def test_case_metrics_returns_every_region_with_kebab_keys():
    ref = torch.zeros(3, 4, 4, 4, dtype=torch.bool)
    ref[1:, 1:3, 1:3, 1:3] = True  # no ET, TC and WT present
    pred = ref.clone()
    row = case_metrics(pred, ref)
    assert tuple(row) == METRIC_KEYS == ("dice-et", "dice-tc", "dice-wt", "hd95-et", "hd95-tc", "hd95-wt")
    assert row == {"dice-et": 1.0, "dice-tc": 1.0, "dice-wt": 1.0, "hd95-et": 0.0, "hd95-tc": 0.0, "hd95-wt": 0.0}


def test_mean_metrics_averages_cases_and_regions():
    rows = [
        {"case-id": "a", **dict.fromkeys(METRIC_KEYS[:3], 1.0), **dict.fromkeys(METRIC_KEYS[3:], 0.0)},
        {"case-id": "b", "dice-et": 0.0, "dice-tc": 0.5, "dice-wt": 1.0, "hd95-et": HD95_ONE_EMPTY, "hd95-tc": 3.0, "hd95-wt": 0.0},
    ]
    means = mean_metrics(rows)
    assert means["dice-et"] == 0.5 and means["dice-tc"] == 0.75 and means["dice-wt"] == 1.0
    assert means["hd95-et"] == pytest.approx(HD95_ONE_EMPTY / 2)
    assert means["dice-mean"] == pytest.approx(0.75)
    assert math.isclose(means["hd95-mean"], (HD95_ONE_EMPTY / 2 + 1.5) / 3)


def test_mean_of_no_cases_raises_value_error():
    with pytest.raises(ValueError, match="zero cases"):
        mean_metrics([])


@pytest.mark.parametrize(
    "pred_shape, ref_shape, spacing, message",
    [
        ((3, 4, 4, 4), (3, 4, 4, 5), (1, 1, 1), "differs"),
        ((2, 4, 4, 4), (2, 4, 4, 4), (1, 1, 1), r"\(3, D, H, W\)"),
        ((3, 4, 4, 4), (3, 4, 4, 4), (1, 0, 1), "spacing"),
    ],
)
def test_ill_arguments_raise_value_error(pred_shape, ref_shape, spacing, message):
    with pytest.raises(ValueError, match=message):
        case_metrics(torch.zeros(pred_shape, dtype=torch.bool), torch.zeros(ref_shape, dtype=torch.bool), spacing)
