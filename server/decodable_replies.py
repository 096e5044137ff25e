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
"""

from __future__ import annotations

from typing import Callable, Iterable

from flwr.app import Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.compat.common import recorddict_compat as compat
from flwr.server import LegacyContext
from flwr.server.workflow.default_workflows import default_evaluate_workflow, default_fit_workflow
from flwr.serverapp import Grid

from server.failure_reasons import NodeError

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
    """

    def __init__(self, grid: Grid, decode: Decode, kind: str) -> None:
        self._grid = grid
        self._decode = decode
        self._kind = kind

    def __getattr__(self, name: str):
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        return [self._decodable(reply) for reply in self._grid.send_and_receive(messages, timeout=timeout)]

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


def fit_workflow(grid: Grid, context: LegacyContext) -> None:
    """Flower's ``default_fit_workflow``, where a reply it cannot decode fails only its sender."""
    default_fit_workflow(DecodableRepliesGrid(grid, _decode_fit_result, "training result"), context)


def evaluate_workflow(grid: Grid, context: LegacyContext) -> None:
    """Flower's ``default_evaluate_workflow``, where a reply it cannot decode fails only its sender."""
    default_evaluate_workflow(
        DecodableRepliesGrid(grid, compat.recorddict_to_evaluateres, "evaluation result"), context
    )
