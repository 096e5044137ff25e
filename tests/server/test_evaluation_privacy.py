"""The server records per-site federated evaluation only from hospitals that shared it."""

from __future__ import annotations

from flwr.common import Code, EvaluateRes, Status
from flwr.server.strategy import FedAvg

from segguided_federation import metric_keys as keys
from server.checkpointed_strategy import CheckpointedStrategy
from server.history import RunHistory
from server.strategies import weighted_mean_metrics


class _Proxy:
    def __init__(self, node_id: int) -> None:
        self.node_id = node_id


def _strategy(tmp_path) -> CheckpointedStrategy:
    inner = FedAvg(evaluate_metrics_aggregation_fn=weighted_mean_metrics)
    return CheckpointedStrategy(
        inner, model=None, validator=None, folder=None, history=RunHistory(tmp_path), completed_rounds=0,
        num_rounds=1, min_fit_clients=2, fit_config={},
    )


def _result(metrics: dict, cases: int, loss: float = 0.0) -> EvaluateRes:
    return EvaluateRes(Status(Code.OK, ""), loss, cases, metrics)


def test_withheld_sites_are_neither_recorded_nor_averaged(tmp_path):
    strategy = _strategy(tmp_path)
    shared = {keys.SITE_ID: "hospital-a", keys.EVALUATION_CASES: 4, "dice-mean": 0.8}
    results = [
        (_Proxy(1), _result(shared, 4, 0.2)),
        (_Proxy(2), _result({keys.EVALUATION_WITHHELD: 1}, 0)),
        (_Proxy(3), _result({keys.EVALUATION_WITHHELD: 1}, 0)),
    ]
    loss, metrics = strategy.aggregate_evaluate(1, results, [])
    assert loss == 0.2 and metrics["dice-mean"] == 0.8
    assert list(strategy.history.round(1).site_evaluation) == ["hospital-a"]


def test_a_round_where_every_site_withheld_records_nothing_per_site(tmp_path):
    strategy = _strategy(tmp_path)
    results = [(_Proxy(n), _result({keys.EVALUATION_WITHHELD: 1}, 0)) for n in (1, 2, 3)]
    assert strategy.aggregate_evaluate(1, results, []) == (None, {})
    assert strategy.history.round(1).site_evaluation == {}
    assert "hospital" not in (tmp_path / "metrics.json").read_text()


def test_a_shared_reply_of_zero_cases_does_not_crash_the_server(tmp_path):
    """A hospital (malicious, or honest with no validation case) that shares a reply weighing 0
    cases is recorded, but left out of the case-weighted loss, which would divide by zero."""
    strategy = _strategy(tmp_path)
    results = [(_Proxy(1), _result({keys.SITE_ID: "hospital-a", keys.EVALUATION_CASES: 0}, 0, 0.3))]
    assert strategy.aggregate_evaluate(1, results, []) == (None, {})
    assert list(strategy.history.round(1).site_evaluation) == ["hospital-a"]
    assert strategy.history.round(1).site_evaluation_finished

    results.append((_Proxy(2), _result({keys.SITE_ID: "hospital-b", keys.EVALUATION_CASES: 4, "dice-mean": 0.8}, 4, 0.2)))
    loss, metrics = strategy.aggregate_evaluate(2, results, [])
    assert loss == 0.2 and metrics["dice-mean"] == 0.8
