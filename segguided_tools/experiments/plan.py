"""Expand a grid into named experiments, each a set of run-config overrides, plus its baselines.

Names are built from every factor's value (not only the varied ones), so an experiment
keeps its name — and its finished results — when the grid around it grows.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from segguided_federation.run_config import RunConfig
from segguided_tools.experiments.grid import ExperimentGrid

ExperimentKind = Literal["federated", "centralised", "local-only"]


@dataclass(frozen=True)
class Experiment:
    """One thing to train and evaluate.

    Attributes:
        name: unique, filesystem-safe; names the run folder and the results folder.
        kind: a federated simulation, or a centralised / local-only baseline.
        partition: the name of the partition whose sites it uses.
        factors: the grid factors' values (``strategy``, ``partition``,
            ``attention-supervision``, ``secure-aggregation``, ``seed``).
        run_config: run-config overrides (kebab-case), without the paths the runner adds.
        site: for a local-only baseline, the index of its site in sorted site order.
        data: the grid's ``[data]`` and this partition's settings, without folder paths
            (so that a moved results folder or pool keeps its finished experiments).
    """

    name: str
    kind: ExperimentKind
    partition: str
    factors: dict[str, Any]
    run_config: dict[str, Any]
    site: int | None = None
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        """A hash of everything that determines the results (changes when the grid entry does)."""
        payload = json.dumps(
            {"kind": self.kind, "partition": self.partition, "run-config": self.run_config, "site": self.site,
             "data": self.data},
            sort_keys=True,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def config(self) -> RunConfig:
        return RunConfig.from_flower(self.run_config)


@dataclass(frozen=True)
class Plan:
    """Every experiment of a grid, federated ones first, in a stable order."""

    grid: ExperimentGrid
    experiments: list[Experiment] = field(default_factory=list)

    @property
    def federated(self) -> list[Experiment]:
        return [e for e in self.experiments if e.kind == "federated"]

    @property
    def baselines(self) -> list[Experiment]:
        return [e for e in self.experiments if e.kind != "federated"]


def _on_off(value: bool) -> str:
    return "on" if value else "off"


def attention_level_name(level: bool | float) -> str:
    """``true`` → ``on``, ``false`` → ``off``, a λ → itself (``0.5``)."""
    return _on_off(level) if isinstance(level, bool) else f"{level:g}"


def attention_weight(level: bool | float, reference: float) -> float:
    """The λ an ``attention-supervision`` level trains with (``true``: the run config's ``reference``)."""
    if isinstance(level, bool):
        return reference if level else 0.0
    return float(level)


def _levels(grid: ExperimentGrid) -> dict[str, list[Any]]:
    """Each factor's levels; a factor the grid leaves out has the base run config's value."""
    base = RunConfig.from_flower(grid.run_config)
    factors = grid.grid
    return {
        "strategy": factors.strategies or [base.strategy],
        "partition": factors.partitions or [p.name for p in grid.partitions],
        "attention-supervision": factors.attention_supervision or [base.attention_weight > 0],
        "secure-aggregation": factors.secure_aggregation
        if factors.secure_aggregation is not None
        else [bool(getattr(base, "secure_aggregation", False))],
        **({"server-learning-rate": factors.server_learning_rates} if factors.server_learning_rates else {}),
        "seed": factors.seeds,
    }


def _combinations(levels: dict[str, list[Any]], design: str) -> list[dict[str, Any]]:
    names = list(levels)
    if design == "full":
        return [dict(zip(names, values)) for values in itertools.product(*levels.values())]
    reference = {name: values[0] for name, values in levels.items()}
    combos = [reference]
    for name, values in levels.items():
        if name in ("partition", "seed"):
            continue  # partitions and seeds are always crossed, never varied one at a time
        combos += [{**reference, name: value} for value in values[1:]]
    crossed = []
    for partition, seed in itertools.product(levels["partition"], levels["seed"]):
        crossed += [{**combo, "partition": partition, "seed": seed} for combo in combos]
    return crossed


def experiment_name(factors: dict[str, Any]) -> str:
    server_rate = f"-slr{factors['server-learning-rate']:g}" if "server-learning-rate" in factors else ""
    return (
        f"{factors['strategy']}{server_rate}-{factors['partition']}-att-{attention_level_name(factors['attention-supervision'])}"
        f"-secagg-{_on_off(factors['secure-aggregation'])}-seed{factors['seed']}"
    )


def data_settings(grid: ExperimentGrid, partition: str) -> dict[str, Any]:
    """What decides an experiment's cases: ``[data]`` and the partition, folder paths left out."""
    data = grid.data.model_dump(by_alias=True, mode="json", exclude={"pool_dir", "validation_dir"})
    spec = grid.partition(partition).model_dump(by_alias=True, mode="json")
    spec["csv"] = Path(spec["csv"]).name if spec["csv"] else ""
    return {"data": data, "pool": bool(grid.data.pool_dir), "partition": spec}


def build_plan(grid: ExperimentGrid, sites_per_partition: dict[str, int]) -> Plan:
    """Expand ``grid`` into its experiments.

    Args:
        grid: the validated grid.
        sites_per_partition: how many site folders each partition has (known once the
            data is prepared; needed for ``min-available-clients`` and local baselines).

    Returns:
        Federated experiments (``design`` order), then per partition and seed a
        centralised baseline and one local-only baseline per site, if enabled.
    """
    attention_on = float(grid.run_config.get("attention-weight", RunConfig().attention_weight))
    experiments = []
    for factors in _combinations(_levels(grid), grid.grid.design):
        sites = sites_per_partition[factors["partition"]]
        overrides = dict(grid.run_config)
        overrides["strategy"] = factors["strategy"]
        overrides["attention-weight"] = attention_weight(factors["attention-supervision"], attention_on)
        if grid.grid.secure_aggregation is not None:
            overrides["secure-aggregation"] = factors["secure-aggregation"]
        if "server-learning-rate" in factors:
            overrides["server-learning-rate"] = factors["server-learning-rate"]
        overrides["seed"] = factors["seed"]
        # every site takes part in every round, so a round lasts as long as its slowest site
        overrides.setdefault("min-available-clients", sites)
        experiments.append(Experiment(
            experiment_name(factors), "federated", factors["partition"], factors, overrides,
            data=data_settings(grid, factors["partition"]),
        ))
    experiments += _baselines(grid, experiments, sites_per_partition)
    return Plan(grid, experiments)


def _baselines(grid: ExperimentGrid, federated: list[Experiment], sites_per_partition: dict[str, int]) -> list[Experiment]:
    """Baselines train like the reference experiment of each (partition, seed)."""
    baselines = []
    seen = set()
    for reference in federated:
        key = (reference.partition, reference.factors["seed"])
        if key in seen:
            continue
        seen.add(key)
        overrides = {k: v for k, v in reference.run_config.items() if k not in ("secure-aggregation",)}
        overrides["strategy"] = "fedavg"
        factors = {**reference.factors, "strategy": "none", "secure-aggregation": False}
        partition, seed = key
        attention = attention_level_name(reference.factors["attention-supervision"])
        if grid.baselines.centralised:
            name = f"centralised-{partition}-att-{attention}-seed{seed}"
            baselines.append(Experiment(name, "centralised", partition, factors, overrides, data=reference.data))
        if grid.baselines.local_only:
            for site in range(sites_per_partition[partition]):
                name = f"local-site{site + 1:02d}-{partition}-att-{attention}-seed{seed}"
                baselines.append(
                    Experiment(name, "local-only", partition, factors, overrides, site=site, data=reference.data)
                )
    return baselines
