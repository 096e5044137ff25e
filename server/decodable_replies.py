"""Plain rounds whose replies Flower can decode, or an error from their sender.

Flower's ``default_fit_workflow`` and ``default_evaluate_workflow`` turn every reply into a
``FitRes`` or ``EvaluateRes`` (``recorddict_to_fitres``, ``recorddict_to_evaluateres``)
before the strategy sees any of them, outside any ``try``: one hospital's reply that lacks
a record, carries a list as a metric or an unknown status code raised there and ended the
ServerApp for every hospital. ``fit_workflow`` and ``evaluate_workflow`` run Flower's own
workflows over a grid that first tries that conversion on each reply and, where it fails,
hands the workflow an error reply from the same node instead, which the workflow counts
as that node's failure (``failure_reasons.describe_failure`` reads it, with the node id the
reply came from) while the others aggregate. What the decoded replies hold is checked next, by ``plain_replies``.

Flower's workflows also wait for replies without a deadline (a message's TTL, 12 h), so
one hospital that takes its instructions and never answers held every round. The grid
waits at most ``reply-timeout`` seconds and turns each site still silent then into an
error reply of its own, a failure of that site.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Iterable

from flwr.app import Message, Metadata, RecordDict
from flwr.common.constant import ErrorCode
from flwr.compat.common import recorddict_compat as compat
from flwr.server import LegacyContext
from flwr.server.workflow.default_workflows import default_evaluate_workflow, default_fit_workflow
from flwr.serverapp import Grid

from server.failure_reasons import NodeError

log = logging.getLogger(__name__)

Decode = Callable[[RecordDict], object]


def _decode_fit_result(content: RecordDict) -> object:
    return compat.recorddict_to_fitres(content, keep_input=True)


class DecodableRepliesGrid:
    """A Grid whose ``send_and_receive`` replaces each reply ``decode`` raises on with an error reply.

    Every error reply it passes on carries its source node (``failure_reasons.NodeError``),
    so that the failure is attributed by the server, never by the text the node sent.

    Args:
        grid: the grid to wrap (everything but ``send_and_receive`` is delegated to it).
        decode: what the workflow will do with each reply's content (it must keep the
            content intact: ``keep_input=True``).
        kind: what the reply should have been, for the failure message (``"training result"``).
        timeout: seconds to wait for replies when the workflow sets no deadline (run config
            ``reply-timeout``); a node silent by then gets an error reply. ``None``: wait as
            Flower does.
    """

    def __init__(self, grid: Grid, decode: Decode, kind: str, timeout: float | None = None) -> None:
        self._grid = grid
        self._decode = decode
        self._kind = kind
        self._timeout = timeout

    def __getattr__(self, name: str):
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        messages = list(messages)
        timeout = self._timeout if timeout is None else timeout
        asked = {message.metadata.dst_node_id for message in messages}
        first: dict[int, Message] = {}  # one reply per node asked, as the secure workflow keeps
        for reply in self._grid.send_and_receive(messages, timeout=timeout):
            if reply.metadata.src_node_id in asked and reply.metadata.src_node_id not in first:
                first[reply.metadata.src_node_id] = reply
            else:
                log.warning("node %d: a reply beyond its first, or unasked, left out", reply.metadata.src_node_id)
        replies = [self._decodable(reply) for reply in first.values()]
        if timeout is not None:
            replies += [_silent(message, timeout) for message in messages if message.metadata.dst_node_id not in first]
        return replies

    def _decodable(self, reply: Message) -> Message:
        node = reply.metadata.src_node_id
        if reply.has_error():  # tagged with its source, which Flower's workflows drop
            return Message(metadata=reply.metadata, error=NodeError(reply.error.code, reply.error.reason, node))
        try:
            self._decode(reply.content)
        except Exception as error:  # noqa: BLE001 - whatever Flower's conversion raises on a malformed reply
            reason = f"reply rejected: it is no Flower {self._kind} ({type(error).__name__} while decoding it)"
            return Message(metadata=reply.metadata, error=NodeError(ErrorCode.UNKNOWN, reason, node, verbatim=True))
        return reply


def _silent(message: Message, timeout: float) -> Message:
    """The error reply of a node that did not answer ``message`` within ``timeout`` seconds."""
    sent = message.metadata
    metadata = Metadata(
        run_id=sent.run_id, message_id="", src_node_id=sent.dst_node_id, dst_node_id=sent.src_node_id,
        reply_to_message_id=sent.message_id, group_id=sent.group_id, created_at=time.time(), ttl=sent.ttl,
        message_type=sent.message_type,
    )
    reason = f"no reply within reply-timeout = {timeout:g} s"
    return Message(metadata=metadata, error=NodeError(ErrorCode.REPLY_MESSAGE_UNAVAILABLE, reason, sent.dst_node_id,
                                                     verbatim=True))


def fit_workflow(grid: Grid, context: LegacyContext, timeout: float | None = None) -> None:
    """Flower's ``default_fit_workflow``, where a reply it cannot decode, or none within ``timeout`` seconds,
    fails only its sender."""
    default_fit_workflow(DecodableRepliesGrid(grid, _decode_fit_result, "training result", timeout), context)


def evaluate_workflow(grid: Grid, context: LegacyContext, timeout: float | None = None) -> None:
    """Flower's ``default_evaluate_workflow``, where a reply it cannot decode, or none within ``timeout``
    seconds, fails only its sender."""
    default_evaluate_workflow(
        DecodableRepliesGrid(grid, compat.recorddict_to_evaluateres, "evaluation result", timeout), context
    )
