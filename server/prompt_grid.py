"""A Grid that polls for replies with a short, growing interval, and says what it waits for.

Flower's SuperLink grid sleeps 3 s between polls; secure aggregation has five exchanges per
round, four of them answered in milliseconds, so the fixed sleep alone added about 12 s to
every round. While a stage waits (sites train for minutes on full-size data), a line
every ``REPORT_SECONDS`` says which round and stage it is and how many of the sites asked
have replied: counts only, nothing the server would not see anyway.
"""

from __future__ import annotations

import logging
import time
from typing import Iterable

from flwr.app import Message
from flwr.app.message_type import MessageType
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.serverapp.grid import Grid

log = logging.getLogger(__name__)

POLL_SECONDS = (0.05, 0.5)
"""First and longest wait between polls for replies (Flower's own grid waits a fixed 3 s)."""

REPORT_SECONDS = 30.0
"""How often a stage still waiting for replies is logged."""

_STAGE_NAMES = {MessageType.TRAIN: "training", MessageType.EVALUATE: "federated evaluation"}


def describe_stage(messages: list[Message], round_offset: int = 0) -> str:
    """``"round 4, training"`` or ``"round 4, secure aggregation stage unmask"`` for a batch of messages."""
    if not messages:
        return "no messages"
    first = messages[0]
    group = first.metadata.group_id
    round_text = f"round {int(group) + round_offset}" if group.isdigit() else "run start"
    configs = first.content.config_records.get(RECORD_KEY_CONFIGS) if first.has_content() else None
    if configs is not None and Key.STAGE in configs:
        return f"{round_text}, secure aggregation stage {configs[Key.STAGE]}"
    return f"{round_text}, {_STAGE_NAMES.get(first.metadata.message_type, first.metadata.message_type)}"


class PromptGrid:
    """A Grid whose ``send_and_receive`` polls with a short, growing interval and logs its progress.

    Args:
        grid: the grid to wrap (everything but ``send_and_receive`` is delegated to it).
        round_offset: rounds finished before this process (a resumed run), so that the
            log names the true round; Flower numbers this process's rounds from 1.
    """

    def __init__(self, grid: Grid, round_offset: int = 0) -> None:
        self._grid = grid.unwrapped if isinstance(grid, PromptGrid) else grid
        self.round_offset = round_offset if not isinstance(grid, PromptGrid) else grid.round_offset

    @property
    def unwrapped(self) -> Grid:
        return self._grid

    def __getattr__(self, name: str):
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        messages = list(messages)
        pending = set(self._grid.push_messages(messages))
        asked = len(pending)
        started = time.monotonic()
        deadline = started + timeout if timeout is not None else float("inf")
        next_report = started + REPORT_SECONDS
        replies: list[Message] = []
        wait = POLL_SECONDS[0]
        while pending:
            received = list(self._grid.pull_messages(pending))
            replies.extend(received)
            pending -= {reply.metadata.reply_to_message_id for reply in received}
            now = time.monotonic()
            if not pending or now >= deadline:
                break
            if now >= next_report:
                log.info("%s: %d of %d site(s) replied after %.0f s; waiting for %d",
                         describe_stage(messages, self.round_offset), asked - len(pending), asked, now - started,
                         len(pending))
                next_report = now + REPORT_SECONDS
            time.sleep(min(wait, max(0.0, deadline - now)))
            wait = min(2 * wait, POLL_SECONDS[1])
        return replies
