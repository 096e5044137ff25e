"""The FeTS convergence score on hand-computed curves, and simulated round times."""

from __future__ import annotations

import numpy as np
import pytest

from segguided_tools.experiments.convergence import (
    SiteWorkload,
    convergence_curve,
    convergence_score,
    round_durations,
    site_round_seconds,
)
from segguided_tools.experiments.grid import SiteTiming


def _fixed(download=10.0, upload=20.0, train=1.0, validate=2.0) -> SiteTiming:
    return SiteTiming(
        download_seconds=(download, 0.0),
        upload_seconds=(upload, 0.0),
        training_seconds_per_sample=(train, 0.0),
        validation_seconds_per_case=(validate, 0.0),
    )


def test_site_round_time_is_download_validation_training_upload():
    workload = SiteWorkload("a", training_samples=5, validation_cases=2)
    # 10 + 2 × 2 + 5 × 1 + 20
    assert site_round_seconds(_fixed(), workload, np.random.default_rng(0)) == pytest.approx(39.0)


def test_a_round_lasts_as_long_as_its_slowest_site_and_profiles_cycle():
    workloads = [SiteWorkload("a", 5, 2), SiteWorkload("b", 10, 2), SiteWorkload("c", 5, 0)]
    profiles = [_fixed(), _fixed(upload=100.0)]
    # a: 39; b: 10 + 4 + 10 + 100 = 124; c gets profile 0 again: 10 + 0 + 5 + 20 = 35
    assert round_durations(profiles, workloads, rounds=3) == pytest.approx([124.0] * 3)


def test_jittered_rounds_are_reproducible_and_differ_between_rounds():
    profile = SiteTiming(download_seconds=(100.0, 30.0))
    workloads = [SiteWorkload("a", 4, 1)]
    first = round_durations([profile], workloads, rounds=3, seed=7)
    assert first == round_durations([profile], workloads, rounds=3, seed=7)
    assert len(set(first)) == 3
    assert first != round_durations([profile], workloads, rounds=3, seed=8)


def test_projected_score_known_answer():
    # after round 1: best 0.2, area 2, projected (2 + 30 × 0.2) / 40 = 0.2
    # after round 2: best 0.5, area 2 + 5 = 7, projected (7 + 20 × 0.5) / 40 = 0.425
    points = convergence_curve([0.2, 0.5], [10.0, 10.0], budget_seconds=40.0)
    assert [p.projected for p in points] == pytest.approx([0.2, 0.425])
    assert [p.simulated_seconds for p in points] == [10.0, 20.0]
    assert convergence_score([0.2, 0.5], [10.0, 10.0], 40.0) == pytest.approx(0.425)


def test_a_worse_round_keeps_the_best_so_far():
    assert convergence_score([0.5, 0.3], [10.0, 10.0], 20.0) == pytest.approx(0.5)
    assert convergence_score([0.4, None, 0.6], [10.0, 10.0, 20.0], 40.0) == pytest.approx((4 + 4 + 12) / 40)


def test_faster_rounds_score_higher_for_the_same_curve():
    slow = convergence_score([0.2, 0.8], [30.0, 30.0], 100.0)
    fast = convergence_score([0.2, 0.8], [10.0, 10.0], 100.0)
    # slow: (6 + 24 + 40 × 0.8) / 100 = 0.62; fast: (2 + 8 + 80 × 0.8) / 100 = 0.74
    assert (slow, fast) == pytest.approx((0.62, 0.74))


def test_rounds_after_the_budget_do_not_count():
    # round 2 crosses the budget at 20 s: it counts for 10 s; round 3 starts after it
    points = convergence_curve([0.2, 0.6, 0.9], [10.0, 20.0, 10.0], budget_seconds=20.0)
    assert [p.within_budget for p in points] == [True, True, False]
    assert [p.projected for p in points] == pytest.approx([0.2, 0.4, 0.4])


def test_ill_arguments_are_refused():
    with pytest.raises(ValueError, match="one duration per round"):
        convergence_curve([0.1], [1.0, 2.0], 10.0)
    with pytest.raises(ValueError, match="budget_seconds must be positive"):
        convergence_curve([0.1], [1.0], 0.0)
    with pytest.raises(ValueError, match="at least one site profile"):
        round_durations([], [SiteWorkload("a", 1, 1)], 1)
