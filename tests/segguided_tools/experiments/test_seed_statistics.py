"""Seed statistics: configurations from names, spreads, paired comparisons with known answers."""

from __future__ import annotations

import pytest

from segguided_tools.experiments.seed_statistics import (
    by_configuration,
    compare,
    configuration_name,
    configuration_spreads,
    spread,
)


def _rows(name: str, values: list[float]) -> list[dict]:
    return [{"experiment": f"{name}-seed{seed}", "kind": "federated", "dice": v} for seed, v in enumerate(values)]


def test_configuration_is_the_name_without_its_seed():
    assert configuration_name("fedavg-h-att-on-secagg-on-seed12") == "fedavg-h-att-on-secagg-on"
    assert configuration_name("local-site02-h-att-0.5-seed0") == "local-site02-h-att-0.5"


def test_spread_is_mean_and_sample_std():
    result = spread([0.6, 0.7, 0.8])
    assert result.mean == pytest.approx(0.7) and result.std == pytest.approx(0.1) and result.count == 3
    assert str(result) == "0.700 ± 0.100" and str(spread([0.5])) == "0.500"
    assert spread([]) is None


def test_groups_and_table_keep_every_configuration():
    groups = by_configuration(_rows("a", [0.6, 0.7]) + _rows("b", [0.9]))
    table = configuration_spreads(groups, ["dice"])
    assert [(row["configuration"], row["seeds"]) for row in table] == [("a", 2), ("b", 1)]


def test_a_consistent_difference_exceeds_seed_variation_and_a_noisy_one_does_not():
    reference = by_configuration(_rows("ref", [0.60, 0.70, 0.80]))["ref"]
    better = by_configuration(_rows("better", [0.65, 0.76, 0.84]))["better"]  # +0.05, +0.06, +0.04
    noisy = by_configuration(_rows("noisy", [0.70, 0.62, 0.83]))["noisy"]  # +0.10, −0.08, +0.03
    clear = compare(reference, better, "dice")
    assert clear.mean == pytest.approx(0.05) and clear.std == pytest.approx(0.01) and clear.seeds == 3
    # t = 0.05 / (0.01 / sqrt 3) = 8.66 with 2 degrees of freedom: p = 0.013
    assert clear.p_value == pytest.approx(0.0131, abs=1e-3) and clear.exceeds_seed_variation
    assert not compare(reference, noisy, "dice").exceeds_seed_variation
    single = compare({0: {"dice": 0.5}}, {0: {"dice": 0.7}}, "dice")
    assert single.seeds == 1 and single.verdict() == "1 seed: no test"
