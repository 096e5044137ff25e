"""Progress lines while a grid runs: which experiment, which round, and the time left.

Work is counted in rounds (a baseline's rounds count like a federated run's); the time
left is the measured seconds per round of this invocation times the rounds still to run.
Experiments finished in an earlier invocation are skipped and count for nothing.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO


def format_duration(seconds: float) -> str:
    """``75`` → ``1m15s``; ``3725`` → ``1h02m``."""
    seconds = max(0, int(round(seconds)))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class Progress:
    """Prints one line per experiment start, finished round and experiment end.

    Args:
        experiments: how many experiments the plan has.
        rounds_to_run: total rounds of the experiments that will actually run.
        stream: where lines go.
        clock: seconds, monotonic (tests pass a fake).
    """

    def __init__(
        self,
        experiments: int,
        rounds_to_run: int,
        stream: TextIO = sys.stdout,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.experiments = experiments
        self.rounds_to_run = rounds_to_run
        self.stream = stream
        self.clock = clock
        self.started = clock()
        self.rounds_done = 0
        self.index = 0
        self.name = ""
        self.rounds = 0
        self.last_round = 0

    def time_left(self) -> float | None:
        """Estimated seconds until the last experiment finishes, ``None`` before the first round."""
        if self.rounds_done == 0:
            return None
        rate = (self.clock() - self.started) / self.rounds_done
        return rate * (self.rounds_to_run - self.rounds_done)

    def _print(self, message: str) -> None:
        left = self.time_left()
        estimate = "estimating time left" if left is None else f"~{format_duration(left)} left"
        elapsed = format_duration(self.clock() - self.started)
        print(f"[{self.index}/{self.experiments}] {message} · {elapsed} elapsed, {estimate}", file=self.stream, flush=True)

    def skip(self, index: int, name: str) -> None:
        self.index = index
        print(f"[{index}/{self.experiments}] {name}: finished earlier, not rerun", file=self.stream, flush=True)

    def start(self, index: int, name: str, rounds: int) -> None:
        self.index, self.name, self.rounds, self.last_round = index, name, rounds, 0
        self._print(f"{name}: started")

    def round(self, number: int) -> None:
        """Report that round ``number`` of the current experiment has finished (repeats are ignored)."""
        if number <= self.last_round:
            return
        self.rounds_done += number - self.last_round
        self.last_round = number
        self._print(f"{self.name}: round {number}/{self.rounds}")

    def finish(self, detail: str = "") -> None:
        self.rounds_done += max(0, self.rounds - self.last_round)  # rounds resumed from an earlier run
        self.last_round = self.rounds
        self._print(f"{self.name}: finished" + (f" ({detail})" if detail else ""))
