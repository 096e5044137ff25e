"""The outermost client mod: a failure reaches the server as its rule; the hospital's log keeps the rest."""

from __future__ import annotations

import logging

import pytest
from flwr.app import Context, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.supercore.task_identity import TaskIdentity

from client.failure_redaction import SiteFailure, redact_failures_mod
from segguided_federation.secure_encoding import SecureRangeError


def _message() -> Message:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    return Message(content=RecordDict(), dst_node_id=5, message_type=MessageType.TRAIN, group_id="1")


def _context() -> Context:
    return Context(run_id=1, node_id=5, node_config={}, state=RecordDict(), run_config={})


@pytest.mark.parametrize(
    "error, public",
    [
        (SecureRangeError("cases outside 1 to secure-aggregation-max-cases=1", "137 training cases"),
         "cases outside 1 to secure-aggregation-max-cases=1"),
        (OSError("/data/hospital-a/case-0137 unreadable"), "OSError (details in the hospital's log)"),
    ],
)
def test_only_the_public_part_leaves_and_the_log_keeps_the_detail(caplog, error, public):
    def failing(message, context):
        raise error

    with caplog.at_level(logging.ERROR, logger="client.failure_redaction"), pytest.raises(SiteFailure) as raised:
        redact_failures_mod(_message(), _context(), failing)

    assert str(raised.value) == public
    assert raised.value.__cause__ is None and raised.value.__suppress_context__  # no chained original text
    assert "137" in caplog.text


def test_a_reply_passes_through_unchanged():
    assert redact_failures_mod(_message(), _context(), lambda message, context: "reply") == "reply"
