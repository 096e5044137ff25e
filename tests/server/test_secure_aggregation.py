"""The secure-aggregation protocol end to end in one process: real workflow, real client mod.

Clients are small NumPyClients with known updates, so the exact case-weighted FedAvg is
known; the transport serialises every message (see ``in_process_federation``).
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Context
from flwr.client import NumPyClient
from flwr.clientapp import ClientApp
from flwr.common import bytes_to_ndarray
from flwr.common.secure_aggregation.secaggplus_constants import (
    RECORD_KEY_CONFIGS,
    Key,
    Stage,
)
from flwr.server.strategy import FedAvg
from in_process_federation import InProcessGrid, global_model, legacy_context, run_round

from client.secure_update_mod import secure_update_mod
from segguided_federation.run_config import RunConfig
from segguided_federation.secure_encoding import FixedPointCodec
from server.secure_aggregation import (
    SecureAggregationSettings,
    SecureAggregationWorkflow,
)

SHAPES = [(6, 5), (7,), (2, 3, 4)]
CASES = {1: 12, 2: 3, 3: 30, 4: 7}


class KnownUpdateClient(NumPyClient):
    """Returns the global model plus a fixed update, like a hospital after local training."""

    def __init__(self, update, cases, loss):
        self.update, self.cases, self.loss = update, cases, loss

    def fit(self, parameters, config):
        local = [p + u for p, u in zip(parameters, self.update)]
        metrics = {"loss": self.loss, "segmentation-loss": self.loss, "attention-loss": 0.0, "site-id": "x"}
        return local, self.cases, metrics


def _federation(run_config=None, silence=None, cases=CASES, seed=0):
    rng = np.random.default_rng(seed)
    updates = {n: [rng.normal(0, 0.02, s).astype(np.float32) for s in SHAPES] for n in cases}
    losses = {n: float(rng.uniform(0.5, 2.0)) for n in cases}
    def app(node):
        def client_fn(context: Context):
            return KnownUpdateClient(updates[node], cases[node], losses[node]).to_client()

        return ClientApp(client_fn=client_fn, mods=[secure_update_mod])

    apps = {n: app(n) for n in cases}
    # A silent node is waited for this long in each stage, as a real timeout would.
    config = {**RunConfig().to_flower(), "secure-aggregation-timeout": 0.5, **(run_config or {})}
    grid = InProcessGrid(apps, config, **({"silence": silence} if silence else {}))
    initial = [rng.normal(0, 0.1, s).astype(np.float32) for s in SHAPES]
    strategy = FedAvg(fraction_fit=1.0, min_fit_clients=2, min_available_clients=2, accept_failures=True)
    reports = []
    workflow = SecureAggregationWorkflow(
        SecureAggregationSettings.from_run_config(RunConfig.from_flower(config)),
        on_round=lambda number, report: reports.append(report),
    )
    return grid, legacy_context(grid, strategy, initial), workflow, initial, updates, losses, reports


def _fedavg(initial, updates, nodes, cases=CASES):
    total = sum(cases[n] for n in nodes)
    return [g + sum(cases[n] * updates[n][i].astype(np.float64) for n in nodes) / total for i, g in enumerate(initial)]


def _tolerance(clients):
    return FixedPointCodec(clients, 1000, 1.0).tolerance + 1e-7


def test_secure_aggregate_equals_case_weighted_fedavg():
    grid, context, workflow, initial, updates, losses, reports = _federation()
    result = run_round(workflow, grid, context, 1)

    expected = _fedavg(initial, updates, CASES)
    for got, want in zip(result, expected):
        assert got.dtype == np.float32  # the global model travels as float32
        assert np.max(np.abs(got - want)) <= _tolerance(len(CASES))
    (report,) = reports
    assert report.aggregated and report.survivors == 4
    assert report.training["train-cases"] == sum(CASES.values())
    weighted_loss = sum(CASES[n] * losses[n] for n in CASES) / sum(CASES.values())
    assert report.training["loss"] == pytest.approx(weighted_loss, abs=1e-3)


def test_the_server_receives_nothing_it_can_read_one_client_update_from():
    grid, context, workflow, initial, updates, _, _ = _federation()
    run_round(workflow, grid, context, 1)
    codec = FixedPointCodec(len(CASES), 1000, 1.0, ("loss", "segmentation-loss", "attention-loss"))

    uploads = [message for stage, message in grid.received if stage == Stage.COLLECT_MASKED_VECTORS]
    assert len(uploads) == len(CASES)
    for message in uploads:
        node = message.metadata.src_node_id
        # Nothing in plaintext: no weight arrays, no case count, no per-site metrics.
        assert all(len(record) == 0 for record in message.content.array_records.values())
        assert message.content.metric_records["fitres.num_examples"]["num_examples"] == 0
        assert len(message.content.config_records["fitres.metrics"]) == 0
        (vector,) = [bytes_to_ndarray(b) for b in message.content.config_records[RECORD_KEY_CONFIGS][Key.MASKED_PARAMETERS]]
        plain = codec.encode(updates[node], CASES[node], {"loss": 1.0, "segmentation-loss": 1.0, "attention-loss": 0.0})
        # The masked words are uniform and unrelated to the client's encoded update.
        assert np.mean(vector == plain) < 0.01
        unmasked = (vector - plain).astype(np.float64)
        assert abs(unmasked.mean() / 2**32 - 0.5) < 0.15
        decoded = codec.decode(vector, SHAPES)
        read = np.concatenate([a.ravel() for a in decoded.update_sums])
        true = np.concatenate([a.ravel() for a in updates[node]])
        assert abs(np.corrcoef(read, true)[0, 1]) < 0.4  # 98 values: |r| < 0.4 is 4 standard errors


def test_a_client_that_stops_answering_after_key_sharing_leaves_the_survivors_average():
    silent = lambda stage, node, rnd: node == 3 and stage == Stage.COLLECT_MASKED_VECTORS
    grid, context, workflow, initial, updates, _, reports = _federation(silence=silent)
    result = run_round(workflow, grid, context, 1)

    survivors = [1, 2, 4]
    for got, want in zip(result, _fedavg(initial, updates, survivors)):
        assert np.max(np.abs(got - want)) <= _tolerance(len(CASES))
    assert reports[0].aggregated and reports[0].survivors == 3
    assert reports[0].training["train-cases"] == sum(CASES[n] for n in survivors)


def test_a_client_that_fails_during_unmasking_is_still_summed():
    silent = lambda stage, node, rnd: node == 2 and stage == Stage.UNMASK
    grid, context, workflow, initial, updates, _, reports = _federation(silence=silent)
    result = run_round(workflow, grid, context, 1)
    for got, want in zip(result, _fedavg(initial, updates, CASES)):
        assert np.max(np.abs(got - want)) <= _tolerance(len(CASES))
    assert reports[0].aggregated


def test_too_few_survivors_halt_the_round_and_the_next_round_proceeds():
    cases = {1: 5, 2: 6, 3: 7}  # threshold: max(2, round(0.6 * 3)) = 2
    silent = lambda stage, node, rnd: rnd == 1 and node in (2, 3) and stage == Stage.COLLECT_MASKED_VECTORS
    grid, context, workflow, initial, updates, _, reports = _federation(silence=silent, cases=cases)

    after_first = run_round(workflow, grid, context, 1)
    for got, before in zip(after_first, initial):
        np.testing.assert_array_equal(got, before)
    assert not reports[0].aggregated
    assert "fewer than the reconstruction threshold 2" in reports[0].halted
    assert reports[0].survivors == 1

    grid.resume()
    after_second = run_round(workflow, grid, context, 2)
    for got, want in zip(after_second, _fedavg(initial, updates, cases, cases)):
        assert np.max(np.abs(got - want)) <= _tolerance(3)
    assert reports[1].aggregated and reports[1].survivors == 3


def test_an_update_beyond_the_clipping_range_fails_that_client_loudly():
    grid, context, workflow, initial, updates, _, reports = _federation(
        run_config={"secure-aggregation-clipping-range": 0.01}
    )
    global_before = global_model(context)
    run_round(workflow, grid, context, 1)
    report = reports[0]
    assert any("secure-aggregation-clipping-range=0.01" in failure for failure in report.failures)
    assert not report.aggregated  # every client's update exceeds 0.01 here
    for got, before in zip(global_model(context), global_before):
        np.testing.assert_array_equal(got, before)


def test_differential_privacy_clips_noises_and_reports_epsilon():
    config = {"differential-privacy": True, "dp-clipping-norm": 0.05, "dp-noise-multiplier": 0.5}
    grid, context, workflow, initial, updates, _, reports = _federation(run_config=config)
    result = run_round(workflow, grid, context, 1)

    clipped = []
    for n in CASES:
        norm = np.sqrt(sum(float(np.sum(u.astype(np.float64) ** 2)) for u in updates[n]))
        clipped.append([u * min(1.0, 0.05 / norm) for u in updates[n]])
    exact = [g + sum(c[i] for c in clipped) / len(CASES) for i, g in enumerate(initial)]
    noise = np.concatenate([(r - e).ravel() for r, e in zip(result, exact)])
    assert noise.std() == pytest.approx(0.5 * 0.05 / len(CASES), rel=0.35)
    report = reports[0]
    assert report.training == {"clients-summed": 4.0}  # no training metrics under DP
    assert report.epsilon is not None and report.epsilon > 0 and report.delta == 1e-5


def test_a_node_that_requires_secure_aggregation_refuses_plain_training():
    from flwr.app import Message, RecordDict
    from flwr.app.message_type import MessageType
    from flwr.supercore.task_identity import TaskIdentity

    from client.secure_update_mod import PlainTrainingRefused

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    plain = Message(content=RecordDict(), dst_node_id=5, message_type=MessageType.TRAIN, group_id="1")
    guarded = Context(run_id=1, node_id=5, node_config={"allow-plain-training": False}, state=RecordDict(),
                      run_config=RunConfig().to_flower())
    with pytest.raises(PlainTrainingRefused, match="allow-plain-training"):
        secure_update_mod(plain, guarded, lambda message, context: message)
    unguarded = Context(run_id=1, node_id=5, node_config={}, state=RecordDict(), run_config=RunConfig().to_flower())
    assert secure_update_mod(plain, unguarded, lambda message, context: "trained") == "trained"
