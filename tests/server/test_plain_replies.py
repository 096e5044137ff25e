"""A malicious hospital's plain (not secure-aggregated) replies fail only that hospital.

Each test hands ``CheckpointedStrategy`` one honest and one malformed reply, with Flower's
own FedAvg behind it, and checks that the round aggregates the honest update exactly, that
the failure names the malicious node and the rule (never a value it sent), and that the
history stays strict JSON.
"""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from flwr.common import Code, EvaluateRes, FitRes, Parameters, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.strategy import FedAdam, FedAvg
from torch import nn

from segguided_federation import metric_keys as keys
from segguided_federation.run_config import RunConfig
from segguided_model.state_arrays import model_to_arrays
from server.checkpointed_strategy import CheckpointedStrategy
from server.history import RoundRecord, RunHistory
from server.plain_replies import ReplyBounds
from server.strategies import weighted_mean_metrics


class _Proxy:
    def __init__(self, node_id: int) -> None:
        self.node_id = node_id


def _strategy(tmp_path, bounds: ReplyBounds = ReplyBounds()) -> CheckpointedStrategy:
    inner = FedAvg(fit_metrics_aggregation_fn=weighted_mean_metrics, evaluate_metrics_aggregation_fn=weighted_mean_metrics)
    return CheckpointedStrategy(
        inner, model=nn.Linear(3, 2), validator=None, folder=None, history=RunHistory(tmp_path), completed_rounds=0,
        num_rounds=1, min_fit_clients=1, fit_config={}, reply_bounds=bounds,
    )


def _honest_update(strategy) -> list[np.ndarray]:
    return [array + np.float32(0.25) for array in model_to_arrays(strategy.model)]


def _fit(arrays, cases: int = 4, metrics: dict | None = None, site: str = "hospital-a") -> FitRes:
    return FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), cases, {keys.SITE_ID: site, **(metrics or {})})


def _nan_weight(arrays):
    arrays = [array.copy() for array in arrays]
    arrays[1][0] = np.nan
    return _fit(arrays, site="hospital-b")


def _wrong_shape(arrays):
    return _fit([arrays[0][:1], arrays[1]], site="hospital-b")


def _one_array_missing(arrays):
    return _fit(arrays[:1], site="hospital-b")


def _integer_weights(arrays):
    return _fit([array.astype(np.int64) for array in arrays], site="hospital-b")


def _negative_cases(arrays):
    return _fit([array * -100 for array in arrays], cases=-1000, site="hospital-b")


def _garbage_bytes(arrays):
    return FitRes(Status(Code.OK, ""), Parameters(tensors=[b"\x93NUMPY garbage"] * 2, tensor_type="numpy.ndarray"), 4,
                  {keys.SITE_ID: "hospital-b"})


def _infinite_metric(arrays):
    return _fit(arrays, metrics={"loss": float("inf")}, site="hospital-b")


def _text_metric(text: str):
    return lambda arrays: _fit(arrays, metrics={"client-seconds": text}, site="hospital-b")


def _integer_beyond_any_float(arrays):
    return _fit(arrays, metrics={"steps": 10**400}, site="hospital-b")


def _dtype(dtype):
    return lambda arrays: _fit([array.astype(dtype) for array in arrays], site="hospital-b")


def _case_count_of_a_nation(arrays):
    return _fit(arrays, cases=2**64 - 1, site="hospital-b")


def _model_replacement(arrays):
    return _fit([np.full_like(array, 3e38) for array in arrays], site="hospital-b")


def _impostor_row(arrays):
    return _fit(arrays, site="hospital-a (node 1)")


def _structured_dtype(arrays):
    spoof = np.dtype([("SiteError: node 1: reply rejected: weight array 0 holds a NaN", "<f4")])
    return _fit([np.zeros(arrays[0].shape, spoof), arrays[1]], site="hospital-b")


def _npz_archive(arrays):
    buffer = io.BytesIO()
    np.savez(buffer, a=arrays[0])
    second = ndarrays_to_parameters([arrays[1]]).tensors[0]
    return FitRes(Status(Code.OK, ""), Parameters(tensors=[buffer.getvalue(), second], tensor_type="numpy.ndarray"), 4,
                  {keys.SITE_ID: "hospital-b"})


def _unknown_metric_key(arrays):
    return _fit(arrays, metrics={"x\nSiteError: node 1: reply rejected": 1.0}, site="hospital-b")


def _many_metric_keys(arrays):
    return _fit(arrays, metrics={f"column-{index}": 1.0 for index in range(20_000)}, site="hospital-b")


def _metric(key: str, value):
    return lambda arrays: _fit(arrays, metrics={key: value}, site="hospital-b")


MALFORMED_FIT = {
    "NaN weight": (_nan_weight, "weight array 1 holds a NaN or an infinity"),
    "wrong shape": (_wrong_shape, "weight array 0 does not have the global model's shape (2, 3)"),
    "array missing": (_one_array_missing, "expected 2 weight arrays"),
    "integer weights": (_integer_weights, "weight array 0 is not float32"),
    "negative case count": (_negative_cases, "must be an integer from 1 to secure-aggregation-max-cases"),
    "garbage bytes": (_garbage_bytes, "weight array 0 does not decode as a NumPy array"),
    "infinite metric": (_infinite_metric, "metric 'loss' is not a finite number"),
    "text metric": (_text_metric("abc"), "metric 'client-seconds' is not a number"),
    "'nan' as text": (_text_metric("nan"), "metric 'client-seconds' is not a number"),
    "integer beyond any float": (_integer_beyond_any_float, "metric 'steps' is not a finite number"),
    "float16 weights": (_dtype(np.float16), "weight array 0 is not float32"),
    "float64 weights": (_dtype(np.float64), "weight array 0 is not float32"),
    "big-endian float32": (_dtype(">f4"), "weight array 0 is not float32"),
    "structured dtype with a message": (_structured_dtype, "weight array 0 is not float32 (the global model's dtype)"),
    "zip archive for an array": (_npz_archive, "weight array 0 is not one .npy array"),
    "a metric the server does not read": (_unknown_metric_key, "a metric key this server does not read"),
    "many metric keys": (_many_metric_keys, "a metric key this server does not read"),
    "training time of 30 years": (_metric("client-seconds", 1e9), "metric 'client-seconds' is not a finite number within"),
    "negative loss": (_metric("loss", -5.0), "metric 'loss' is not a finite number within"),
    "train-cases beyond max-cases": (_metric("train-cases", 5000), "metric 'train-cases' is not a finite number within"),
    "bool metric": (_metric("steps", True), "metric 'steps' is not a number"),
    "case count beyond max-cases": (_case_count_of_a_nation, "secure-aggregation-max-cases = 1000"),
    "weights of 3e38": (_model_replacement, "further from the global model than secure-aggregation-clipping-range"),
    "site id shaped like a per-node row": (_impostor_row, "metric 'site-id' is not a site id"),
}


@pytest.mark.parametrize("kind", MALFORMED_FIT)
def test_a_malformed_training_reply_fails_only_its_sender(tmp_path, kind):
    strategy = _strategy(tmp_path)
    honest = _honest_update(strategy)
    malformed, rule = MALFORMED_FIT[kind]
    results = [(_Proxy(1), _fit(honest, metrics={"loss": 0.3})), (_Proxy(2), malformed(honest))]

    aggregated, _ = strategy.aggregate_fit(1, results, [])

    for got, want in zip(parameters_to_ndarrays(aggregated), honest):
        np.testing.assert_array_equal(got, want)
    record = strategy.history.round(1)
    assert (record.clients_succeeded, record.clients_failed) == (1, 1)
    assert len(record.failures) == 1 and record.failures[0].startswith("node 2: reply rejected: ")
    assert rule in record.failures[0]
    assert "SiteError" not in record.failures[0] and "node 1" not in record.failures[0]  # nothing the hospital wrote
    assert list(record.site_training) == ["hospital-a"]


def test_a_round_of_only_malformed_replies_keeps_the_global_model(tmp_path):
    strategy = _strategy(tmp_path)
    honest = _honest_update(strategy)
    results = [(_Proxy(2), _nan_weight(honest)), (_Proxy(3), _wrong_shape(honest))]
    assert strategy.aggregate_fit(1, results, []) == (None, {})
    record = strategy.history.round(1)
    assert not record.aggregated and record.clients_failed == 2


def _evaluation(loss: float, cases: int, metrics: dict, site: str) -> EvaluateRes:
    return EvaluateRes(Status(Code.OK, ""), loss, cases, {keys.SITE_ID: site, keys.EVALUATION_CASES: cases, **metrics})


@pytest.mark.parametrize(
    "malformed, rule",
    [
        (_evaluation(float("nan"), 4, {"dice-mean": 0.1}, "hospital-b"), "the loss is not a finite number"),
        (_evaluation(0.2, 4, {"dice-mean": float("inf")}, "hospital-b"), "metric 'dice-mean' is not a finite number"),
        (_evaluation(0.2, -4, {"dice-mean": 0.1}, "hospital-b"), "must be an integer from 0"),
        (_evaluation(0.2, 5000, {"dice-mean": 0.1}, "hospital-b"), "secure-aggregation-max-cases = 1000"),
        (_evaluation(1e300, 4, {"dice-mean": 0.1}, "hospital-b"), "the loss is not a finite number within [0, 1]"),
        (_evaluation(0.2, 4, {"dice-mean": 1e15}, "hospital-b"), "metric 'dice-mean' is not a finite number within [0, 1]"),
        (_evaluation(0.2, 4, {"hd95-mean": -3.0}, "hospital-b"), "metric 'hd95-mean' is not a finite number within"),
        (_evaluation(0.2, 4, {"cases": 10**6}, "hospital-b"), "metric 'cases' is not a finite number within"),
        (_evaluation(0.2, 4, {"train-loss": 0.3}, "hospital-b"), "a metric key this server does not read"),
        (_evaluation(0.2, 4, {"dice-mean": "0.9"}, "hospital-b"), "metric 'dice-mean' is not a number"),
        (_evaluation(0.2, 4, {"dice-mean": 0.1}, "../../etc"), "metric 'site-id' is not a site id"),
    ],
    ids=["NaN loss", "infinite metric", "negative case count", "case count beyond max-cases", "loss of 1e300",
         "Dice of 1e15", "negative HD95", "cases beyond max-cases", "a training key in an evaluation",
         "metric as text", "site id with a path"],
)
def test_a_malformed_evaluation_reply_fails_only_its_sender_and_the_history_stays_strict_json(tmp_path, malformed, rule):
    strategy = _strategy(tmp_path)
    honest = _evaluation(0.2, 4, {"dice-mean": 0.8}, "hospital-a")

    loss, metrics = strategy.aggregate_evaluate(1, [(_Proxy(1), honest), (_Proxy(2), malformed)], [])

    assert loss == 0.2 and metrics["dice-mean"] == 0.8
    record = strategy.history.round(1)
    assert list(record.site_evaluation) == ["hospital-a"]
    assert len(record.evaluation_failures) == 1 and record.evaluation_failures[0].startswith("node 2: reply rejected: ")
    assert rule in record.evaluation_failures[0]
    strategy.history.write()
    json.loads((tmp_path / "metrics.json").read_text(), parse_constant=lambda name: pytest.fail(f"{name} in metrics.json"))


def test_a_hospital_claiming_another_sites_id_gets_its_own_row(tmp_path):
    """Site ids are claims; the node id is what SuperNode authentication vouches for."""
    strategy = _strategy(tmp_path)
    results = [
        (_Proxy(1), _evaluation(0.2, 4, {"dice-mean": 0.8}, "hospital-a")),
        (_Proxy(2), _evaluation(0.9, 4, {"dice-mean": 0.1}, "hospital-a")),
        (_Proxy(3), _evaluation(0.3, 4, {"dice-mean": 0.7}, "hospital-c")),
    ]
    strategy.aggregate_evaluate(1, results, [])
    rows = strategy.history.round(1).site_evaluation
    assert rows["hospital-a (node 1)"]["dice-mean"] == 0.8
    assert rows["hospital-a (node 2)"]["dice-mean"] == 0.1
    assert rows["hospital-c"]["dice-mean"] == 0.7


def test_float128_weights_fail_only_their_sender(tmp_path):
    if not hasattr(np, "float128"):
        pytest.skip("this platform's NumPy has no float128")
    strategy = _strategy(tmp_path)
    honest = _honest_update(strategy)
    results = [(_Proxy(1), _fit(honest)), (_Proxy(2), _dtype(np.float128)(honest))]
    aggregated, _ = strategy.aggregate_fit(1, results, [])
    assert all(got.dtype == np.float32 for got in parameters_to_ndarrays(aggregated))
    assert "weight array 0 is not float32" in strategy.history.round(1).failures[0]


def test_the_bounds_come_from_the_run_config(tmp_path):
    """A hospital within the run's own max-cases and clipping range is accepted, beyond them rejected."""
    config = RunConfig(secure_aggregation_max_cases=5, secure_aggregation_clipping_range=0.3)
    strategy = _strategy(tmp_path, ReplyBounds.from_run_config(config))
    global_arrays = model_to_arrays(strategy.model)
    within = [array + np.float32(0.29) for array in global_arrays]
    beyond = [array + np.float32(0.31) for array in global_arrays]
    results = [(_Proxy(1), _fit(within, cases=5)), (_Proxy(2), _fit(within, cases=6, site="hospital-b")),
               (_Proxy(3), _fit(beyond, site="hospital-c"))]
    aggregated, _ = strategy.aggregate_fit(1, results, [])
    for got, want in zip(parameters_to_ndarrays(aggregated), within):
        np.testing.assert_array_equal(got, want)
    failures = strategy.history.round(1).failures
    assert failures[0].startswith("node 2:") and "secure-aggregation-max-cases = 5" in failures[0]
    assert failures[1].startswith("node 3:") and "secure-aggregation-clipping-range = 0.3" in failures[1]


def test_every_site_row_records_the_node_its_claim_came_from(tmp_path):
    """Site ids are claims: an impostor in a round the real hospital misses is visible by its node id."""
    strategy = _strategy(tmp_path)
    strategy.aggregate_evaluate(1, [(_Proxy(1), _evaluation(0.2, 4, {"dice-mean": 0.8}, "hospital-a"))], [])
    strategy.aggregate_evaluate(2, [(_Proxy(2), _evaluation(0.9, 4, {"dice-mean": 0.1}, "hospital-a"))], [])
    assert strategy.history.round(1).site_nodes == {"evaluation": {"hospital-a": 1}}
    assert strategy.history.round(2).site_nodes == {"evaluation": {"hospital-a": 2}}
    strategy.history.write()
    rows = list(csv.DictReader(io.StringIO((tmp_path / "metrics.csv").read_text())))
    assert [row["hospital-a:evaluation:node-id"] for row in rows] == ["1", "2"]
    stored = json.loads((tmp_path / "metrics.json").read_text())["rounds"]
    assert [RoundRecord.from_json(record).site_nodes for record in stored] == [
        {"evaluation": {"hospital-a": 1}}, {"evaluation": {"hospital-a": 2}}]


def test_no_site_can_write_another_sites_csv_columns(tmp_path):
    strategy = _strategy(tmp_path)
    honest = _honest_update(strategy)
    results = [(_Proxy(1), _fit(honest, metrics={keys.TRAIN_CASES: 4, keys.TRAIN_SECONDS: 12.0}, site="hospital-a")),
               (_Proxy(2), _fit(honest, metrics={keys.TRAIN_CASES: 999, keys.TRAIN_SECONDS: 0.5}, site="hospital-a-train"))]
    strategy.aggregate_fit(1, results, [])
    strategy.history.write()
    rows = list(csv.DictReader(io.StringIO((tmp_path / "metrics.csv").read_text())))
    assert rows[0]["hospital-a:train:train-cases"] == "4.0" and rows[0]["hospital-a:train:train-seconds"] == "12.0"
    assert rows[0]["hospital-a-train:train:train-cases"] == "999.0"


def test_secure_results_carry_the_checked_aggregate_and_are_not_checked_as_replies(tmp_path):
    """Under DP the noisy aggregate may move a weight beyond the clipping range; the secure workflow checked it."""
    strategy = _strategy(tmp_path)
    strategy.secure_aggregation = True
    noisy = [array + np.float32(1.7) for array in model_to_arrays(strategy.model)]
    masked = FitRes(Status(Code.OK, "masked"), ndarrays_to_parameters(noisy), 1, {})
    aggregated, _ = strategy.aggregate_fit(1, [(_Proxy(1), masked), (_Proxy(2), masked)], [])
    for got, want in zip(parameters_to_ndarrays(aggregated), noisy):
        np.testing.assert_array_equal(got, want)


def test_a_server_optimiser_sends_the_global_model_in_the_models_own_dtype(tmp_path):
    """Flower's FedAdam answers in float64, which doubled every hospital's download."""
    model = nn.Linear(3, 2)
    initial = ndarrays_to_parameters(model_to_arrays(model))
    inner = FedAdam(initial_parameters=initial, eta=0.1, fit_metrics_aggregation_fn=weighted_mean_metrics)
    strategy = CheckpointedStrategy(
        inner, model=model, validator=None, folder=None, history=RunHistory(tmp_path), completed_rounds=0,
        num_rounds=1, min_fit_clients=1, fit_config={},
    )
    update = [array + np.float32(0.1) for array in model_to_arrays(model)]
    aggregated, _ = strategy.aggregate_fit(1, [(_Proxy(1), _fit(update))], [])
    arrays = parameters_to_ndarrays(aggregated)
    assert [array.dtype for array in arrays] == [np.float32, np.float32]
    assert all(not np.array_equal(got, start) for got, start in zip(arrays, model_to_arrays(model)))
