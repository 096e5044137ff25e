"""A Grid that polls for replies with a short, growing interval instead of Flower's fixed 3 s."""

from __future__ import annotations

import time

from flwr.app import Message
from flwr.serverapp.grid import Grid

POLL_SECONDS = (0.05, 0.5)
"""First and longest wait between polls for replies (Flower's own grid waits a fixed 3 s)."""


class PromptGrid:
    """A Grid whose ``send_and_receive`` polls for replies with a short, growing interval.

    Flower's SuperLink grid sleeps 3 s between polls; secure aggregation has five exchanges
    per round, four of them answered in milliseconds, so the fixed sleep alone added about
    12 s to every round. Everything else is delegated to the wrapped grid.
    """

    def __init__(self, grid: Grid) -> None:
        self._grid = grid

    def __getattr__(self, name: str):
        return getattr(self._grid, name)

    def send_and_receive(self, messages, *, timeout: float | None = None) -> list[Message]:
        pending = set(self._grid.push_messages(messages))
        deadline = time.monotonic() + timeout if timeout is not None else float("inf")
        replies: list[Message] = []
        wait = POLL_SECONDS[0]
        while pending:
            received = list(self._grid.pull_messages(pending))
            replies.extend(received)
            pending -= {reply.metadata.reply_to_message_id for reply in received}
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(min(wait, max(0.0, deadline - time.monotonic())))
            wait = min(2 * wait, POLL_SECONDS[1])
        return replies
