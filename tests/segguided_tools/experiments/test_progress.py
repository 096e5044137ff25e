"""Progress lines: experiment, round and a time-left estimate from the measured rate."""

from __future__ import annotations

import io

from segguided_tools.experiments.progress import Progress, format_duration


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_durations_read_like_a_person_writes_them():
    assert [format_duration(s) for s in (0, 59.6, 75, 3725)] == ["0s", "1m00s", "1m15s", "1h02m"]


def test_time_left_is_the_measured_rate_times_the_rounds_still_to_run():
    clock, stream = FakeClock(), io.StringIO()
    progress = Progress(experiments=3, rounds_to_run=6, stream=stream, clock=clock)
    progress.skip(1, "done-before")
    progress.start(2, "a", rounds=3)
    assert progress.time_left() is None
    clock.now = 20.0
    progress.round(1)
    progress.round(1)  # repeated polls print nothing new
    assert progress.time_left() == 100.0  # 20 s per round, 5 rounds to go
    clock.now = 60.0
    progress.round(3)  # two rounds at once
    progress.finish()
    assert progress.time_left() == 60.0
    lines = stream.getvalue().splitlines()
    assert lines[0] == "[1/3] done-before: finished earlier, not rerun"
    assert lines[1] == "[2/3] a: started · 0s elapsed, estimating time left"
    assert lines[2] == "[2/3] a: round 1/3 · 20s elapsed, ~1m40s left"
    assert lines[3] == "[2/3] a: round 3/3 · 1m00s elapsed, ~1m00s left"
    assert len(lines) == 5 and lines[4].startswith("[2/3] a: finished")
