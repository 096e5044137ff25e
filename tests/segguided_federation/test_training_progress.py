"""A hospital sees its training progress: steps done of total and time left, not too often."""

from __future__ import annotations

import logging

from segguided_federation.training_progress import TrainingProgress, format_seconds


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_is_logged_every_interval_and_at_the_end(caplog):
    caplog.set_level(logging.INFO, logger="segguided_federation.training_progress")
    clock = Clock()
    progress = TrainingProgress("site-1, round 3", interval=15.0, clock=clock)
    for step in range(1, 121):  # 0.5 s a step, 60 s in all
        clock.now = 0.5 * step
        progress(step, 120, clock.now)
    assert progress.lines == [
        "site-1, round 3: training step 30/120 (25 %), 15.0 s so far, about 45.0 s left",
        "site-1, round 3: training step 60/120 (50 %), 30.0 s so far, about 30.0 s left",
        "site-1, round 3: training step 90/120 (75 %), 45.0 s so far, about 15.0 s left",
        "site-1, round 3: training step 120/120 (100 %), 1 min 0 s so far, done",
    ]
    assert caplog.text.count("training step") == 4


def test_a_short_round_logs_one_line():
    clock = Clock()
    progress = TrainingProgress("site-2, round 1", clock=clock)
    for step in (1, 2, 3):
        clock.now = step
        progress(step, 3, clock.now)
    assert progress.lines == ["site-2, round 1: training step 3/3 (100 %), 3.0 s so far, done"]


def test_durations_read_as_a_person_would_say_them():
    assert [format_seconds(s) for s in (12.44, 72.4, 3725)] == ["12.4 s", "1 min 12 s", "1 h 2 min"]
