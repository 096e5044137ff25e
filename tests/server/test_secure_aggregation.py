"""The secure-aggregation protocol end to end in one process: real workflow, real client mod.

Clients are small NumPyClients with known updates, so the exact case-weighted FedAvg is
known; the transport serialises every message (see ``in_process_federation``).
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Context
from flwr.common import bytes_to_ndarray
from flwr.common.secure_aggregation.secaggplus_constants import (
    RECORD_KEY_CONFIGS,
    Key,
    Stage,
)
from in_process_federation import global_model
from known_update_federation import CASES, SHAPES, known_update_federation

from client.secure_update_mod import secure_update_mod
from segguided_federation.run_config import RunConfig
from segguided_federation.secure_encoding import FixedPointCodec


def _assert_close(got, want, tolerance):
    for a, b in zip(got, want, strict=True):
        assert np.max(np.abs(a - b)) <= tolerance


def test_secure_aggregate_equals_case_weighted_fedavg():
    federation = known_update_federation()
    result = federation.run()

    assert all(got.dtype == np.float32 for got in result)  # the global model travels as float32
    _assert_close(result, federation.fedavg(CASES), federation.tolerance())
    (report,) = federation.reports
    assert report.aggregated and report.survivors == 4
    assert report.training["train-cases"] == sum(CASES.values())
    weighted_loss = sum(CASES[n] * federation.losses[n] for n in CASES) / sum(CASES.values())
    assert report.training["loss"] == pytest.approx(weighted_loss, abs=1e-3)


def test_the_server_receives_nothing_it_can_read_one_client_update_from():
    federation = known_update_federation()
    federation.run()
    grid, updates = federation.grid, federation.updates
    codec = FixedPointCodec(len(CASES), 1000, 1.0, ("loss", "segmentation-loss", "attention-loss"))

    uploads = [message for stage, message in grid.received if stage == Stage.COLLECT_MASKED_VECTORS]
    assert len(uploads) == len(CASES)
    for message in uploads:
        node = message.metadata.src_node_id
        # Nothing in plaintext: no weight arrays, no case count, no per-site metrics.
        arrays = [array for record in message.content.array_records.values() for array in record.values()]
        assert all(len(array.data) == 0 for array in arrays)  # Flower's placeholder for no parameters
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
    federation = known_update_federation(silence=silent)
    result = federation.run()

    survivors = [1, 2, 4]
    _assert_close(result, federation.fedavg(survivors), federation.tolerance())
    reports = federation.reports
    assert reports[0].aggregated and reports[0].survivors == 3
    assert reports[0].training["train-cases"] == sum(CASES[n] for n in survivors)


def test_a_client_lost_during_setup_leaves_a_smaller_session_that_aggregates():
    """3 sampled, one lost before it sent keys: 2 neighbours, threshold 2 (a majority), as a killed SuperNode."""
    cases = {1: 5, 2: 6, 3: 7}
    silent = lambda stage, node, rnd: node == 3 and stage == Stage.SETUP
    federation = known_update_federation(cases=cases, silence=silent)
    result = federation.run()
    _assert_close(result, federation.fedavg([1, 2]), FixedPointCodec(3, 1000, 1.0).tolerance + 1e-7)
    assert federation.reports[0].aggregated and federation.reports[0].survivors == 2


def test_a_client_that_fails_during_unmasking_is_still_summed():
    silent = lambda stage, node, rnd: node == 2 and stage == Stage.UNMASK
    federation = known_update_federation(silence=silent)
    result = federation.run()
    _assert_close(result, federation.fedavg(CASES), federation.tolerance())
    assert federation.reports[0].aggregated


def test_too_few_survivors_halt_the_round_and_the_next_round_proceeds():
    cases = {1: 5, 2: 6, 3: 7}  # threshold: max(2, round(0.6 * 3)) = 2
    silent = lambda stage, node, rnd: rnd == 1 and node in (2, 3) and stage == Stage.COLLECT_MASKED_VECTORS
    federation = known_update_federation(cases=cases, silence=silent)
    reports = federation.reports

    after_first = federation.run(1)
    for got, before in zip(after_first, federation.initial):
        np.testing.assert_array_equal(got, before)
    assert not reports[0].aggregated
    assert "fewer than the reconstruction threshold 2" in reports[0].halted
    assert reports[0].survivors == 1

    federation.grid.resume()
    after_second = federation.run(2)
    _assert_close(after_second, federation.fedavg(cases), FixedPointCodec(3, 1000, 1.0).tolerance + 1e-7)
    assert reports[1].aggregated and reports[1].survivors == 3


def test_an_update_beyond_the_clipping_range_fails_that_client_loudly():
    """The hospitals accept a range this tight (their floor is lowered), and their updates exceed it."""
    floor = {"secure-aggregation-lowest-clipping-range": 0.001}
    federation = known_update_federation(
        run_config={"secure-aggregation-clipping-range": 0.01}, node_configs={n: floor for n in CASES}
    )
    global_before = global_model(federation.context)
    after = federation.run()
    report = federation.reports[0]
    assert any("secure-aggregation-clipping-range=0.01" in failure for failure in report.failures)
    assert not report.aggregated  # every client's update exceeds 0.01 here
    for got, before in zip(after, global_before):
        np.testing.assert_array_equal(got, before)


def test_differential_privacy_clips_noises_and_reports_epsilon():
    config = {"differential-privacy": True, "dp-clipping-norm": 0.05, "dp-noise-multiplier": 0.5}
    federation = known_update_federation(run_config=config)
    result = federation.run()
    initial, updates = federation.initial, federation.updates

    clipped = []
    for n in CASES:
        norm = np.sqrt(sum(float(np.sum(u.astype(np.float64) ** 2)) for u in updates[n]))
        clipped.append([u * min(1.0, 0.05 / norm) for u in updates[n]])
    exact = [g + sum(c[i] for c in clipped) / len(CASES) for i, g in enumerate(initial)]
    noise = np.concatenate([(r - e).ravel() for r, e in zip(result, exact)])
    assert noise.std() == pytest.approx(0.5 * 0.05 / len(CASES), rel=0.35)
    report = federation.reports[0]
    assert report.training == {"clients-summed": 4.0}  # no training metrics under DP
    assert report.epsilon is not None and report.epsilon > 0 and report.delta == 1e-5


def test_a_node_that_requires_secure_aggregation_refuses_plain_training():
    from flwr.app import Message, RecordDict
    from flwr.app.message_type import MessageType
    from flwr.supercore.task_identity import TaskIdentity

    from client.secure_update_mod import PlainTrainingRefused

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    plain = Message(content=RecordDict(), dst_node_id=5, message_type=MessageType.TRAIN, group_id="1")
    guarded = Context(run_id=1, node_id=5, node_config={"require-secure-aggregation": "true"}, state=RecordDict(),
                      run_config=RunConfig().to_flower())
    with pytest.raises(PlainTrainingRefused, match="require-secure-aggregation"):
        secure_update_mod(plain, guarded, lambda message, context: message)
    unguarded = Context(run_id=1, node_id=5, node_config={}, state=RecordDict(), run_config=RunConfig().to_flower())
    assert secure_update_mod(plain, unguarded, lambda message, context: "trained") == "trained"
