"""The FeTS challenge's convergence score: the best Dice so far, integrated over simulated time.

Time is simulated, not measured, so the score does not depend on the machine that ran
the experiment. A round lasts as long as its slowest site needs to download the global
model, validate it, train on its samples and upload its update; each term is drawn from
the site's profile (``[mean, std]`` seconds, normal, floored at 0, seeded per round).

With round ``r`` ending at simulated time ``T_r`` (``T_0 = 0``) and ``B_r`` the best
score of rounds ``1..r`` (the initial model is not counted), the area under the
best-so-far curve is ``A_r = sum_k B_k (T_k - T_{k-1})`` — the FeTS rule, which credits a
round's best over the round's own duration — and the projected score after round ``r`` is
``(A_r + (budget - T_r) B_r) / budget``: the current best carried forward to the end of
the time budget. Rounds that start after the budget are ignored and a round that crosses
it counts up to the budget only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from segguided_tools.experiments.grid import SiteTiming


@dataclass(frozen=True)
class SiteWorkload:
    """What one site does in every round.

    Attributes:
        site_id: its name.
        training_samples: samples it trains on (optimiser steps × batch size).
        validation_cases: cases it validates the global model on.
    """

    site_id: str
    training_samples: int
    validation_cases: int


@dataclass(frozen=True)
class ConvergencePoint:
    """The score after one round."""

    round: int
    round_seconds: float
    simulated_seconds: float
    score: float | None
    best: float
    projected: float
    within_budget: bool


def _draw(rng: np.random.Generator, mean_std: tuple[float, float]) -> float:
    mean, std = mean_std
    return max(0.0, float(rng.normal(mean, std))) if std > 0 else float(mean)


def site_round_seconds(profile: SiteTiming, workload: SiteWorkload, rng: np.random.Generator) -> float:
    """Simulated seconds of one round at one site: download + validation + training + upload."""
    download = _draw(rng, profile.download_seconds)
    validation = workload.validation_cases * _draw(rng, profile.validation_seconds_per_case)
    training = workload.training_samples * _draw(rng, profile.training_seconds_per_sample)
    upload = _draw(rng, profile.upload_seconds)
    return download + validation + training + upload


def round_durations(
    profiles: Sequence[SiteTiming], workloads: Sequence[SiteWorkload], rounds: int, seed: int = 0
) -> list[float]:
    """Simulated seconds of rounds ``1..rounds``: the slowest site's time in each.

    Args:
        profiles: site ``i`` gets ``profiles[i % len(profiles)]``.
        workloads: one per site, in site order.
        rounds: how many rounds.
        seed: the same seed gives the same draws (each round has its own stream).

    Raises:
        ValueError: no profile or no site.
    """
    if not profiles or not workloads:
        raise ValueError(f"expected at least one site profile and one site, got {len(profiles)} and {len(workloads)}")
    durations = []
    for number in range(1, rounds + 1):
        rng = np.random.default_rng([seed, number])
        durations.append(
            max(site_round_seconds(profiles[i % len(profiles)], w, rng) for i, w in enumerate(workloads))
        )
    return durations


def convergence_curve(
    scores: Sequence[float | None], durations: Sequence[float], budget_seconds: float
) -> list[ConvergencePoint]:
    """The projected convergence score after every round.

    Args:
        scores: the validation score of rounds ``1..R`` (``None`` where a round has none:
            the best so far carries on).
        durations: simulated seconds of the same rounds.
        budget_seconds: the time budget (FeTS: one week).

    Raises:
        ValueError: lengths differ or the budget is not positive.
    """
    if len(scores) != len(durations):
        raise ValueError(f"expected one duration per round, got {len(scores)} scores and {len(durations)} durations")
    if budget_seconds <= 0:
        raise ValueError(f"budget_seconds must be positive, got {budget_seconds}")
    points = []
    area, best, elapsed, projected = 0.0, 0.0, 0.0, 0.0
    for number, (score, duration) in enumerate(zip(scores, durations), start=1):
        within = elapsed < budget_seconds
        if within:
            if score is not None:
                best = max(best, float(score))
            counted = min(elapsed + duration, budget_seconds) - elapsed
            area += best * counted
            projected = (area + (budget_seconds - min(elapsed + duration, budget_seconds)) * best) / budget_seconds
        elapsed += duration
        points.append(ConvergencePoint(number, duration, elapsed, score, best, projected, within))
    return points


def convergence_score(scores: Sequence[float | None], durations: Sequence[float], budget_seconds: float) -> float:
    """The projected score after the last round within the budget (0 for no rounds)."""
    points = convergence_curve(scores, durations, budget_seconds)
    return points[-1].projected if points else 0.0
