"""Results over seeds: each configuration's mean ± standard deviation, and which differences exceed seed-to-seed variation.

An experiment's configuration is its name without the ``-seed<N>`` suffix: every run of a
configuration differs only in the seed (initial weights, patch sampling, data split).
Two configurations are compared seed by seed (the same seed's runs share their initial
model and data split): the paired differences' mean and standard deviation, and a
two-sided paired t-test at 5 % (Student, with ``n - 1`` degrees of freedom). A
difference "exceeds seed-to-seed variation" when the test rejects equality; with 3 seeds
that needs the mean difference to be above 2.5 of its paired standard deviations.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from scipy.stats import t as student_t

SIGNIFICANCE = 0.05
_SEED_SUFFIX = re.compile(r"-seed(-?\d+)$")


def configuration_name(experiment: str) -> str:
    """``fedavg-hospitals-att-on-secagg-on-seed2`` → ``fedavg-hospitals-att-on-secagg-on``."""
    return _SEED_SUFFIX.sub("", experiment)


def seed_of(experiment: str) -> int | None:
    match = _SEED_SUFFIX.search(experiment)
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class Spread:
    """A metric over seeds: mean, sample standard deviation (0 for one seed) and count."""

    mean: float
    std: float
    count: int

    def __str__(self) -> str:
        return f"{self.mean:.3f} ± {self.std:.3f}" if self.count > 1 else f"{self.mean:.3f}"


def spread(values: Sequence[float]) -> Spread | None:
    values = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not values:
        return None
    return Spread(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values))


def by_configuration(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[int, Mapping[str, Any]]]:
    """Summary rows (``report.summary_row``) grouped: configuration → seed → row, in first-seen order."""
    groups: dict[str, dict[int, Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(configuration_name(row["experiment"]), {})[seed_of(row["experiment"]) or 0] = row
    return groups


def configuration_spreads(
    groups: Mapping[str, Mapping[int, Mapping[str, Any]]], metrics: Sequence[str]
) -> list[dict[str, Any]]:
    """One row per configuration: its kind, seeds, and a ``Spread`` per metric."""
    table = []
    for name, seeds in groups.items():
        first = next(iter(seeds.values()))
        row: dict[str, Any] = {"configuration": name, "kind": first.get("kind"), "seeds": len(seeds)}
        row.update({metric: spread([r.get(metric) for r in seeds.values()]) for metric in metrics})
        table.append(row)
    return table


@dataclass(frozen=True)
class Comparison:
    """``candidate − reference`` of one metric over the seeds both have.

    Attributes:
        mean: mean paired difference.
        std: standard deviation of the paired differences.
        seeds: how many seeds both configurations have.
        p_value: two-sided paired t-test (``None`` below 2 seeds or with identical differences).
    """

    mean: float
    std: float
    seeds: int
    p_value: float | None

    @property
    def exceeds_seed_variation(self) -> bool:
        return self.p_value is not None and self.p_value < SIGNIFICANCE

    def verdict(self) -> str:
        if self.seeds < 2:
            return f"{self.seeds} seed: no test"
        if self.p_value is None:
            return "identical on every seed"
        return ("**exceeds** seed variation" if self.exceeds_seed_variation else "within seed variation") + (
            f" (p = {self.p_value:.3f})"
        )


def compare(
    reference: Mapping[int, Mapping[str, Any]], candidate: Mapping[int, Mapping[str, Any]], metric: str
) -> Comparison | None:
    """Paired comparison of ``metric`` between two configurations' runs (seed → summary row)."""
    differences = [
        float(candidate[seed][metric]) - float(reference[seed][metric])
        for seed in sorted(set(reference) & set(candidate))
        if reference[seed].get(metric) is not None and candidate[seed].get(metric) is not None
    ]
    if not differences:
        return None
    mean = statistics.fmean(differences)
    if len(differences) < 2:
        return Comparison(mean, 0.0, len(differences), None)
    std = statistics.stdev(differences)
    if std == 0:
        return Comparison(mean, 0.0, len(differences), None if mean == 0 else 0.0)
    statistic = mean / (std / math.sqrt(len(differences)))
    p_value = float(2 * student_t.sf(abs(statistic), len(differences) - 1))
    return Comparison(mean, std, len(differences), p_value)
