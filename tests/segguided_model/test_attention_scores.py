"""Attention-map scores: known answers on tiny volumes, the cross table, ill arguments."""

from __future__ import annotations

import pytest
import torch

from segguided_model.attention_scores import (
    ATTENTION_KEYS,
    attention_scores,
    mean_attention_scores,
)


def _masks() -> torch.Tensor:
    subregions = torch.zeros(3, 2, 2, 2)
    subregions[0, 0, 0, 0] = 1  # NCR: one voxel
    subregions[1, 1] = 1  # ED: a slab of four
    subregions[2, 0, 1] = 1  # ET: two voxels
    return subregions


def test_perfect_maps_score_one_on_their_own_region_and_zero_on_the_others():
    scores = attention_scores(_masks() * 0.9, _masks())
    assert set(scores) == set(ATTENTION_KEYS)
    assert scores["attention-dice-ncr"] == scores["attention-dice-ed"] == scores["attention-dice-et"] == 1.0
    assert scores["attention-ncr-on-et"] == scores["attention-et-on-ncr"] == 0.0


def test_a_map_lighting_the_whole_core_scores_on_both_core_regions():
    maps = torch.zeros(3, 2, 2, 2)
    maps[0] = maps[2] = _masks()[0] + _masks()[2]  # NCR and ET maps both show NCR ∪ ET
    scores = attention_scores(maps, _masks())
    assert scores["attention-dice-ncr"] == pytest.approx(2 * 1 / (3 + 1))
    assert scores["attention-ncr-on-et"] == pytest.approx(2 * 2 / (3 + 2))
    assert scores["attention-dice-et"] == pytest.approx(2 * 2 / (3 + 2))
    assert scores["attention-dice-ed"] == 0.0  # nothing attended, ED present


def test_threshold_and_empty_regions():
    maps = torch.full((3, 2, 2, 2), 0.5)
    empty = torch.zeros(3, 2, 2, 2)
    assert attention_scores(maps, empty)["attention-dice-et"] == 1.0  # both empty (0.5 is not above 0.5)
    assert attention_scores(maps, empty, threshold=0.4)["attention-dice-et"] == 0.0


def test_means_skip_rows_without_maps_and_shapes_are_checked():
    rows = [attention_scores(_masks(), _masks()), {"dice-et": 1.0}]
    assert mean_attention_scores(rows)["attention-dice-ncr"] == 1.0
    assert mean_attention_scores([{"dice-et": 1.0}]) == {}
    with pytest.raises(ValueError, match=r"\(3, 2, 2, 2\) and \(3, 2, 2\)"):
        attention_scores(torch.zeros(3, 2, 2, 2), torch.zeros(3, 2, 2))
