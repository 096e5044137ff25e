"""A hospital's training progress on its own console: steps done of total and time left, now and then.

Local training is the long, silent part of a round (minutes per site on full-size data).
``TrainingProgress`` is the ``on_step`` callback of ``training.train_steps``: it logs a
line such as ``site-1, round 3: training step 40/120 (33 %), 1 min 12 s so far, about
2 min 24 s left`` at most every ``interval`` seconds, and once at the end. The lines go
to the ClientApp's logger, which Flower shows on the SuperNode's console (and, in a
simulation, in the ``flwr run --stream`` output). They never reach the server.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_SECONDS = 15.0


def format_seconds(seconds: float) -> str:
    """``72.4`` → ``"1 min 12 s"``; under a minute ``"12.4 s"``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


class TrainingProgress:
    """Logs training progress at most every ``interval`` seconds, and when the last step is done.

    Args:
        label: who is training, e.g. ``"site-1, round 3"``.
        interval: least seconds between two lines.
        clock: a monotonic clock (tests pass their own).
    """

    def __init__(self, label: str, interval: float = DEFAULT_INTERVAL_SECONDS, clock=time.monotonic) -> None:
        self.label = label
        self.interval = interval
        self.clock = clock
        self._last: float | None = None
        self.lines: list[str] = []

    def __call__(self, done: int, total: int, elapsed: float) -> None:
        now = self.clock()
        if done < total and self._last is not None and now - self._last < self.interval:
            return
        if self._last is None and done < total and elapsed < self.interval:
            self._last = now - elapsed  # the first line comes one interval after the start
            return
        self._last = now
        left = elapsed / done * (total - done) if done else 0.0
        line = (
            f"{self.label}: training step {done}/{total} ({100 * done // total} %), "
            f"{format_seconds(elapsed)} so far"
            + (f", about {format_seconds(left)} left" if done < total else ", done")
        )
        self.lines.append(line)
        log.info("%s", line)
