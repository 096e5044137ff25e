"""Plan expansion: how many experiments a grid gives, their names and their run-config overrides."""

from __future__ import annotations

import pytest

from segguided_federation.run_config import RunConfig
from segguided_tools.experiments.grid import GridError, parse_grid, run_config_keys
from segguided_tools.experiments.plan import build_plan

# The grids vary secure aggregation; that run-config key arrives with the secure-aggregation change.
needs_secure_aggregation_key = pytest.mark.skipif(
    "secure-aggregation" not in run_config_keys(), reason="run-config key secure-aggregation not in segguided_federation/run_config.py yet"
)


def _grid(design="full", **factors):
    return parse_grid({
        "name": "g",
        "partitions": [{"name": "generated", "kind": "generated"}, {"name": "iid", "kind": "iid", "sites": 3}],
        "run-config": {"attention-weight": 0.2, "num-server-rounds": 2},
        "grid": {"design": design, **factors},
    })


FULL = {
    "strategies": ["fedavg", "fedprox", "fedadam"],
    "attention-supervision": [True, False],
    "secure-aggregation": [True, False],
    "seeds": [0, 1],
}
SITES = {"generated": 4, "iid": 3}


@needs_secure_aggregation_key
def test_full_design_crosses_every_factor_and_adds_baselines_per_partition_and_seed():
    plan = build_plan(_grid(**FULL), SITES)
    assert len(plan.federated) == 3 * 2 * 2 * 2 * 2
    # per (partition, seed): one centralised model and one local model per site
    assert len(plan.baselines) == 2 * (1 + 4) + 2 * (1 + 3)
    names = [e.name for e in plan.experiments]
    assert len(set(names)) == len(names)


@needs_secure_aggregation_key
def test_one_at_a_time_varies_each_factor_around_the_reference():
    plan = build_plan(_grid("one-at-a-time", **FULL), SITES)
    # reference + 2 other strategies + attention off + secure aggregation off, per partition and seed
    assert len(plan.federated) == 5 * 2 * 2
    reference = plan.federated[0]
    assert reference.name == "fedavg-generated-att-on-secagg-on-seed0"
    generated_seed0 = {e.name for e in plan.federated if e.partition == "generated" and e.factors["seed"] == 0}
    assert generated_seed0 == {
        "fedavg-generated-att-on-secagg-on-seed0",
        "fedprox-generated-att-on-secagg-on-seed0",
        "fedadam-generated-att-on-secagg-on-seed0",
        "fedavg-generated-att-off-secagg-on-seed0",
        "fedavg-generated-att-on-secagg-off-seed0",
    }


@needs_secure_aggregation_key
def test_overrides_set_the_factors_and_wait_for_every_site():
    plan = build_plan(_grid(**FULL), SITES)
    by_name = {e.name: e for e in plan.experiments}
    on = by_name["fedprox-iid-att-on-secagg-off-seed1"].run_config
    assert on["strategy"] == "fedprox" and on["attention-weight"] == 0.2
    assert on["secure-aggregation"] is False and on["seed"] == 1
    assert on["min-available-clients"] == 3 and on["num-server-rounds"] == 2
    assert by_name["fedprox-iid-att-off-secagg-off-seed1"].run_config["attention-weight"] == 0.0
    local = by_name["local-site02-generated-att-on-seed0"]
    assert local.kind == "local-only" and local.site == 1
    for experiment in plan.experiments:
        experiment.config()  # every entry is a valid run configuration


def test_factors_left_out_take_the_run_config_values():
    plan = build_plan(_grid(), SITES)
    default = "on" if getattr(RunConfig(), "secure_aggregation", False) else "off"
    assert [e.name for e in plan.federated] == [
        f"fedavg-generated-att-on-secagg-{default}-seed0",
        f"fedavg-iid-att-on-secagg-{default}-seed0",
    ]
    assert "secure-aggregation" not in plan.federated[0].run_config  # the run config's own default applies


@needs_secure_aggregation_key
def test_baselines_can_be_switched_off():
    grid = parse_grid({**_grid(**FULL).model_dump(by_alias=True), "baselines": {"centralised": False, "local-only": False}})
    assert build_plan(grid, SITES).baselines == []


@pytest.mark.parametrize("change", [{"num-server-rounds": 3}, {"learning-rate": 0.01}])
def test_fingerprint_follows_the_settings_and_names_stay(change):
    before = build_plan(_grid(), SITES).federated[0]
    grid = parse_grid({
        "name": "g",
        "partitions": [{"name": "generated", "kind": "generated"}, {"name": "iid", "kind": "iid", "sites": 3}],
        "run-config": {"attention-weight": 0.2, "num-server-rounds": 2, **change},
    })
    after = build_plan(grid, SITES).federated[0]
    assert after.name == before.name and after.fingerprint != before.fingerprint


def test_fingerprint_follows_the_data_and_partition_settings():
    before = build_plan(_grid(), SITES).federated[1]  # the iid partition
    grid = parse_grid({
        "name": "g",
        "data": {"synthetic-cases-per-site": 12},
        "partitions": [{"name": "generated", "kind": "generated"}, {"name": "iid", "kind": "iid", "sites": 3, "seed": 5}],
        "run-config": {"attention-weight": 0.2, "num-server-rounds": 2},
    })
    after = build_plan(grid, SITES).federated[1]
    assert after.name == before.name and after.fingerprint != before.fingerprint


def test_attention_levels_may_be_lambda_values_and_keep_the_boolean_names():
    plan = build_plan(_grid("one-at-a-time", **{"attention-supervision": [True, False, 0.5, 1]}), SITES)
    weights = {e.name: e.run_config["attention-weight"] for e in plan.federated if e.partition == "generated"}
    assert weights == {
        "fedavg-generated-att-on-secagg-on-seed0": 0.2,  # true: the run config's λ
        "fedavg-generated-att-off-secagg-on-seed0": 0.0,
        "fedavg-generated-att-0.5-secagg-on-seed0": 0.5,
        "fedavg-generated-att-1-secagg-on-seed0": 1.0,  # a number is a λ, not true
    }
    with pytest.raises(GridError, match="λ >= 0, got -0.1"):
        _grid(**{"attention-supervision": [-0.1]})


def test_server_learning_rates_tune_the_server_optimiser_and_name_the_experiment():
    plan = build_plan(_grid(**{"strategies": ["fedadam"], "server-learning-rates": [0.03, 0.1]}), SITES)
    rates = {e.name: e.run_config["server-learning-rate"] for e in plan.federated if e.partition == "generated"}
    assert rates == {"fedadam-slr0.03-generated-att-on-secagg-on-seed0": 0.03,
                     "fedadam-slr0.1-generated-att-on-secagg-on-seed0": 0.1}
