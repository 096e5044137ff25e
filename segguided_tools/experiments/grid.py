"""The experiment grid a researcher writes in TOML, parsed once into a validated model.

A grid names its data (a synthetic federation, or a pooled BraTS folder), the partitions
of that data into sites, the run configuration every experiment shares, the factors to
vary (strategies × partitions × attention supervision × secure aggregation × seeds), the
baselines and the site profiles of the convergence score. Example (``experiments/tiny.toml``)::

    name = "tiny"

    [data]
    synthetic-sites = 2
    synthetic-cases-per-site = 4

    [[partitions]]
    name = "generated"
    kind = "generated"

    [run-config]
    num-server-rounds = 1

    [grid]
    strategies = ["fedavg"]
    attention-supervision = [true, false]

Every key is kebab-case; an unknown key, a wrong type or a key that the run configuration
(``segguided_federation/run_config.py``) does not have is refused with a message naming the file and key.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from segguided_federation.config_model import (
    KebabModel,
    describe_validation_error,
    known_keys,
    nearest_key,
    read_toml_file,
)
from segguided_federation.run_config import RunConfig, RunConfigError
from segguided_model.data.partitions import FETS_PARTITIONS

RESERVED_RUN_CONFIG_KEYS: dict[str, str] = {
    "data-dir": "the runner points it at the partition's site folders",
    "server-validation-dir": "the runner points it at [data]'s validation folder",
    "output-dir": "runs are written under the results folder",
    "run-name": "each experiment's run is named after the experiment",
    "resume": "the runner resumes interrupted runs itself",
    "overwrite": "the runner resumes interrupted runs and never replaces finished ones",
    "seed": "set [grid] seeds instead",
    "synthetic-sites": "set [data] synthetic-sites instead",
    "synthetic-cases-per-site": "set [data] synthetic-cases-per-site instead",
    "synthetic-validation-cases": "set [data] synthetic-validation-cases instead",
    "synthetic-size": "set [data] synthetic-size instead",
    "metrics-port": "experiments run without a metrics endpoint",
}
"""Run-config keys a grid may not set in ``[run-config]``, and why."""

GRID_FACTOR_KEYS: dict[str, str] = {
    "strategies": "strategy",
    "attention-supervision": "attention-weight",
    "secure-aggregation": "secure-aggregation",
    "server-learning-rates": "server-learning-rate",
    "seeds": "seed",
}
"""Grid factor → the run-config key it sets."""


class GridError(ValueError):
    """The grid file is invalid; the message names the file and every bad key."""


def run_config_keys() -> set[str]:
    """Every key ``RunConfig`` accepts, kebab-case."""
    return set(known_keys(RunConfig))


class DataSpec(KebabModel):
    """Where the cases come from.

    Either a synthetic federation (generated once into the results folder; its sites are
    deliberately non-IID) or ``pool-dir``, a folder of BraTS case folders, with the
    server's held-out cases in ``validation-dir``.
    """

    synthetic_sites: int = Field(4, ge=1)
    synthetic_cases_per_site: int = Field(10, ge=2)
    synthetic_validation_cases: int = Field(6, ge=1)
    synthetic_size: int = Field(48, ge=24, description="voxels along the largest axis; 48 = 5 mm (run config synthetic-size)")
    synthetic_seed: int = 0
    pool_dir: str = Field("", description="a folder of BraTS case folders; empty = synthetic data")
    validation_dir: str = Field("", description="the server's held-out cases; required with pool-dir")

    @model_validator(mode="after")
    def _validation_with_pool(self) -> "DataSpec":
        if self.pool_dir and not self.validation_dir:
            raise ValueError("pool-dir needs validation-dir: the server's own held-out cases")
        if self.validation_dir and not self.pool_dir:
            raise ValueError("validation-dir is only used with pool-dir")
        return self

    @property
    def synthetic(self) -> bool:
        return not self.pool_dir


class PartitionSpec(KebabModel):
    """How the pooled cases are grouped into sites.

    Kinds: ``generated`` keeps the synthetic sites as generated (each its own scanner and
    population: non-IID features); ``iid`` deals the pooled cases out evenly; ``skewed``
    draws Dirichlet site sizes (``skew``: smaller is more skewed); ``fets`` follows a FeTS
    partition CSV (``csv``: a path, relative to the grid file, or ``partitioning_1`` /
    ``partitioning_2``), optionally only the partitions in ``partition-ids``.
    """

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    kind: Literal["generated", "iid", "skewed", "fets"]
    sites: int | None = Field(None, ge=2)
    skew: float = Field(0.5, gt=0.0)
    seed: int = 0
    csv: str = ""
    partition_ids: list[str] | None = None

    @model_validator(mode="after")
    def _fields_fit_kind(self) -> "PartitionSpec":
        if self.kind in ("iid", "skewed") and self.sites is None:
            raise ValueError(f"partition {self.name!r} of kind {self.kind!r} needs sites (at least 2)")
        if self.kind == "fets" and not self.csv:
            raise ValueError(
                f"partition {self.name!r} of kind 'fets' needs csv: a partition file or one of {sorted(FETS_PARTITIONS)}"
            )
        if self.kind != "fets" and (self.csv or self.partition_ids):
            raise ValueError(f"partition {self.name!r}: csv and partition-ids apply to kind 'fets' only")
        if self.kind in ("generated", "fets") and self.sites is not None:
            raise ValueError(f"partition {self.name!r}: sites applies to kinds 'iid' and 'skewed' only")
        return self


class GridFactors(KebabModel):
    """The factors crossed into experiments; a factor left out takes the run config's value.

    ``design = "full"`` runs every combination; ``"one-at-a-time"`` runs the reference
    (the first level of every factor) plus, for each factor, each other level with the
    remaining factors at their reference.

    ``attention-supervision`` levels are ``true`` (the run config's ``attention-weight``),
    ``false`` (λ = 0) or a number (that λ). ``server-learning-rates`` (FedAdam, FedYogi)
    tunes the server optimiser's step.
    """

    design: Literal["full", "one-at-a-time"] = "full"
    strategies: list[str] | None = Field(None, min_length=1)
    partitions: list[str] | None = Field(None, min_length=1)
    attention_supervision: list[bool | float] | None = Field(None, min_length=1)
    secure_aggregation: list[bool] | None = Field(None, min_length=1)
    server_learning_rates: list[float] | None = Field(None, min_length=1)
    seeds: list[int] = Field([0], min_length=1)

    @field_validator("attention_supervision")
    @classmethod
    def _non_negative_weights(cls, levels: list | None) -> list | None:
        for level in levels or []:
            if not isinstance(level, bool) and not level >= 0:
                raise ValueError(f"an attention-supervision level is true, false or a λ >= 0, got {level}")
        return levels

    @field_validator("strategies", "partitions", "attention_supervision", "secure_aggregation", "server_learning_rates", "seeds")
    @classmethod
    def _distinct(cls, levels: list | None) -> list | None:
        # true and 1.0 are different attention levels (the run config's λ and λ = 1)
        if levels is not None and len({(isinstance(level, bool), level) for level in levels}) != len(levels):
            raise ValueError(f"levels must be distinct, got {levels}")
        return levels


class Baselines(KebabModel):
    """Non-federated baselines trained with the same total number of optimiser steps."""

    centralised: bool = True
    local_only: bool = True


class SiteTiming(KebabModel):
    """One hospital's simulated speed, as ``[mean, std]`` seconds (FeTS challenge style).

    A round's time at a site is download + validation + training + upload; each term is
    drawn from a normal distribution (floored at 0) seeded by the round.
    """

    download_seconds: tuple[float, float] = (100.0, 15.0)
    upload_seconds: tuple[float, float] = (150.0, 20.0)
    training_seconds_per_sample: tuple[float, float] = (5.0, 0.3)
    validation_seconds_per_case: tuple[float, float] = (15.0, 1.0)

    @field_validator("*")
    @classmethod
    def _non_negative(cls, value: tuple[float, float]) -> tuple[float, float]:
        if min(value) < 0:
            raise ValueError(f"expected [mean, std] of seconds, both >= 0, got {list(value)}")
        return value


class ConvergenceSpec(KebabModel):
    """The FeTS convergence score: best Dice integrated over simulated time, projected to a budget.

    Site ``i`` (in sorted site-folder order) gets ``site-profiles[i % len(site-profiles)]``.
    """

    time_budget_hours: float = Field(168.0, gt=0.0, description="FeTS used one week")
    metric: Literal["dice-mean", "dice-et", "dice-tc", "dice-wt"] = "dice-mean"
    seed: int = 0
    site_profiles: list[SiteTiming] = Field(default_factory=lambda: [SiteTiming()], min_length=1)


class ExperimentGrid(KebabModel):
    """A whole experiment grid (one TOML file)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    description: str = ""
    data: DataSpec = DataSpec()
    partitions: list[PartitionSpec] = Field(min_length=1)
    run_config: dict[str, Any] = Field(default_factory=dict)
    grid: GridFactors = GridFactors()
    baselines: Baselines = Baselines()
    convergence: ConvergenceSpec = ConvergenceSpec()

    @field_validator("run_config")
    @classmethod
    def _known_unreserved_keys(cls, settings: dict[str, Any]) -> dict[str, Any]:
        known = run_config_keys()
        problems = []
        for key in settings:
            if key in RESERVED_RUN_CONFIG_KEYS:
                problems.append(f"{key!r} is set by the experiment runner ({RESERVED_RUN_CONFIG_KEYS[key]})")
            elif key not in known:
                suggestion = nearest_key(key, sorted(known))
                hint = f"; did you mean {suggestion!r}?" if suggestion else ""
                problems.append(f"{key!r} is not a run-config key (segguided_federation/run_config.py RunConfig){hint}")
        if problems:
            raise ValueError("; ".join(problems))
        try:
            RunConfig.from_flower(settings)
        except RunConfigError as error:
            raise ValueError(str(error)) from None
        return settings

    @model_validator(mode="after")
    def _factors_exist(self) -> "ExperimentGrid":
        names = [p.name for p in self.partitions]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"partitions: names must be unique, got {duplicates} more than once")
        for name in self.grid.partitions or []:
            if name not in names:
                raise ValueError(f"grid.partitions: {name!r} is not a declared partition; expected one of {names}")
        known = run_config_keys()
        for factor, key in GRID_FACTOR_KEYS.items():
            if getattr(self.grid, _snake(factor)) is not None and key not in known:
                raise ValueError(
                    f"grid.{factor}: needs run-config key {key!r}, which segguided_federation/run_config.py (RunConfig) "
                    "does not have yet; remove the factor or update the code"
                )
        allowed = strategy_names()
        for strategy in self.grid.strategies or []:
            if strategy not in allowed:
                raise ValueError(f"grid.strategies: {strategy!r} is not a strategy; expected one of {list(allowed)}")
        if self.grid.attention_supervision and any(level is True for level in self.grid.attention_supervision):
            if self.run_config.get("attention-weight", 1.0) == 0:
                raise ValueError("grid.attention-supervision includes true but run-config attention-weight is 0")
        for partition in self.partitions:
            if partition.kind == "generated" and not self.data.synthetic:
                raise ValueError(f"partition {partition.name!r}: kind 'generated' needs synthetic data, not pool-dir")
        return self

    def partition(self, name: str) -> PartitionSpec:
        return next(p for p in self.partitions if p.name == name)


def _snake(name: str) -> str:
    return name.replace("-", "_")


def strategy_names() -> tuple[str, ...]:
    """The strategies the run configuration accepts."""
    return typing.get_args(RunConfig.model_fields["strategy"].annotation)


def load_grid(path: Path | str) -> ExperimentGrid:
    """Read and validate a grid file.

    Relative ``csv`` paths of FeTS partitions and ``pool-dir``/``validation-dir`` are
    resolved against the grid file's folder.

    Raises:
        GridError: the file is missing, not TOML, or invalid; the message names the file
            and each bad key.
    """
    path = Path(path)
    try:
        data = read_toml_file(path)
    except ValueError as error:
        raise GridError(f"grid file {path}: {error}") from None
    return parse_grid(data, source=path)


def parse_grid(data: dict[str, Any], source: Path | str = "<grid>") -> ExperimentGrid:
    """Validate a grid already read from TOML (``source`` names it in errors)."""
    try:
        grid = ExperimentGrid.model_validate(data)
    except ValidationError as error:
        raise GridError(f"invalid experiment grid {source}: " + describe_validation_error(error, "grid")) from None
    base = Path(source).parent if source != "<grid>" else Path.cwd()
    return _resolve_paths(grid, base)


def _resolve_paths(grid: ExperimentGrid, base: Path) -> ExperimentGrid:
    def resolve(value: str) -> str:
        return str((base / Path(value).expanduser()).resolve()) if value else value

    data = grid.data.model_copy(update={"pool_dir": resolve(grid.data.pool_dir), "validation_dir": resolve(grid.data.validation_dir)})
    partitions = [
        p.model_copy(update={"csv": p.csv if p.csv in FETS_PARTITIONS else resolve(p.csv)}) for p in grid.partitions
    ]
    return grid.model_copy(update={"data": data, "partitions": partitions})
