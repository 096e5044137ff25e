"""Every failed training request of a hospital, refusals included, is counted for its own exporter."""

from __future__ import annotations

import pytest
from flwr.app import Context, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.supercore.task_identity import TaskIdentity

from client.client_app import MODS
from client.failure_redaction import SiteFailure, redact_failures_mod
from client.metrics_exporter import client_registry
from client.secure_update_mod import PlainTrainingRefused
from client.training_failure_mod import training_failure_mod
from segguided_federation.run_config import RunConfig


def _message(message_type: str = MessageType.TRAIN) -> Message:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    return Message(content=RecordDict(), dst_node_id=5, message_type=message_type, group_id="1")


def _context(tmp_path) -> Context:
    site = tmp_path / "site.toml"
    site.write_text('site-id = "hospital-a"\ndata-path = "/data"\nmetrics-file = "metrics.json"\n')
    return Context(run_id=1, node_id=5, node_config={"site-config": str(site)}, state=RecordDict(),
                   run_config=RunConfig().to_flower())


def _failures(tmp_path) -> float | None:
    return client_registry(tmp_path / "metrics.json").get_sample_value(
        "segguided_client_failures_total", {"site": "hospital-a"}
    )


def test_a_refused_plain_training_request_is_counted(tmp_path):
    # The ClientApp's own chain: failure redaction outermost, then this mod, then secure
    # aggregation's guard refuses.
    redaction, counting, guard = MODS
    assert redaction is redact_failures_mod and counting is training_failure_mod

    def chain(msg, ctxt):
        return guard(msg, ctxt, lambda m, c: m)

    with pytest.raises(PlainTrainingRefused):
        training_failure_mod(_message(), _context(tmp_path), chain)
    assert _failures(tmp_path) == 1

    # Through the whole chain the server is told the rule, and the count goes up again.
    with pytest.raises(SiteFailure, match="allow-plain-training=true"):
        redaction(_message(), _context(tmp_path), lambda m, c: counting(m, c, chain))
    assert _failures(tmp_path) == 2


def test_successes_and_other_messages_are_not_counted(tmp_path):
    context = _context(tmp_path)
    training_failure_mod(_message(), context, lambda msg, ctxt: Message(RecordDict(), reply_to=msg))

    def failing_evaluation(msg, ctxt):
        raise RuntimeError("evaluation failed")

    with pytest.raises(RuntimeError):
        training_failure_mod(_message(MessageType.EVALUATE), context, failing_evaluation)
    assert _failures(tmp_path) is None
