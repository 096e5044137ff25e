"""Run a grid: prepare the sites, run every unfinished experiment, evaluate it, write the report.

Federated experiments are real ``flwr run`` simulations on a private local SuperLink
(``segguided_tools.local_simulation``); baselines train in this process. After training, the
final model is evaluated on every site's validation split and, for federated runs, the
convergence score is computed; ``result.json`` is written last. Rerunning the same grid
skips every experiment with a ``result.json``, resumes an interrupted simulation from its
newest round checkpoint, and only re-scores finished runs if the convergence settings
changed. One failing experiment does not stop the others.

Layout of the results folder::

    grid.json                    the validated grid
    .gitignore                   keeps data/, runs/ and .flower/ out of a committed report
    data/                        the synthetic pool and every partition's site folders
    runs/<experiment>/           run folders (config, checkpoints, metrics.json)
    experiments/<experiment>/    result.json, rounds.csv, cross-site.csv
    report.md, *.png, summary.csv/json
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

import torch

from segguided_federation.local_training import local_steps
from segguided_federation.run_config import RunConfig
from segguided_federation.site_data import Site
from segguided_model.atomic_write import write_text_atomically
from segguided_model.checkpoint import load_checkpoint
from segguided_tools.experiments.baselines import train_baseline
from segguided_tools.experiments.convergence import (
    SiteWorkload,
    convergence_curve,
    round_durations,
)
from segguided_tools.experiments.cross_site import evaluate_across_sites, load_sites
from segguided_tools.experiments.grid import ConvergenceSpec, ExperimentGrid
from segguided_tools.experiments.plan import Experiment, Plan, build_plan
from segguided_tools.experiments.progress import Progress
from segguided_tools.experiments.results import (
    ExperimentResult,
    read_result,
    write_result,
)
from segguided_tools.experiments.site_folders import PreparedData, prepare_data
from segguided_tools.launcher import (
    COMPLETED,
    TERMINAL_PREFIX,
    RunFailed,
    run_logs,
    run_status,
)
from segguided_tools.local_simulation import (
    PROJECT_ROOT,
    LocalFederation,
    open_local_federation,
    run_config_argument,
)

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0


@dataclass
class GridOutcome:
    """What one invocation did."""

    plan: Plan
    results: list[ExperimentResult] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    report: Path | None = None


class GridRunner:
    """Runs one grid into one results folder.

    Args:
        grid: the validated grid.
        results_dir: where everything goes (created if missing).
        stream: where progress lines go.
        experiment_timeout: seconds one simulation may take before it counts as failed.
    """

    def __init__(self, grid: ExperimentGrid, results_dir: Path, stream: TextIO = sys.stdout, experiment_timeout: float = 86400) -> None:
        self.grid = grid
        self.results_dir = results_dir.absolute()
        self.stream = stream
        self.experiment_timeout = experiment_timeout
        self._federation: LocalFederation | None = None
        self._sites: dict[tuple, list[Site]] = {}
        self._data: PreparedData | None = None

    @property
    def data(self) -> PreparedData:
        """The prepared site folders (after ``prepare``)."""
        if self._data is None:
            raise RuntimeError("GridRunner.prepare() must run before the data is used")
        return self._data

    def prepare(self) -> Plan:
        """Write the grid, the data and the site folders; expand the plan."""
        self.results_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomically(self.results_dir / "grid.json", self.grid.model_dump_json(by_alias=True, indent=2))
        # what a committed report leaves out: symlinked data, checkpoints, the private SuperLink
        write_text_atomically(self.results_dir / ".gitignore", "data/\nruns/\n.flower/\n")
        self._data = prepare_data(self.grid, self.results_dir)
        return build_plan(self.grid, self.data.sites_per_partition())

    def config(self, experiment: Experiment) -> RunConfig:
        """The experiment's full run configuration, paths included."""
        return RunConfig.from_flower(self.overrides(experiment))

    def overrides(self, experiment: Experiment) -> dict[str, Any]:
        return {
            **experiment.run_config,
            "data-dir": str(self.data.partition_dir(experiment.partition)),
            "server-validation-dir": str(self.data.validation_dir),
            "output-dir": str(self.results_dir / "runs"),
            "run-name": experiment.name,
        }

    def sites(self, experiment: Experiment, config: RunConfig) -> list[Site]:
        """The partition's sites as its clients see them (cached per split setting)."""
        key = (experiment.partition, config.validation_fraction, config.seed)
        if key not in self._sites:
            self._sites[key] = load_sites(self.data.site_dirs[experiment.partition], config)
        return self._sites[key]

    def run(self, only: list[str] | None = None, report: Callable[..., Path] | None = None) -> GridOutcome:
        """Run every unfinished experiment (or only those named), then write the report.

        Raises:
            ValueError: ``only`` names an experiment the plan does not have.
        """
        plan = self.prepare()
        outcome = GridOutcome(plan)
        names = [e.name for e in plan.experiments]
        unknown = [name for name in only or [] if name not in names]
        if unknown:
            raise ValueError(f"--only names unknown experiment(s) {unknown}; the plan has {names}")
        selected = [e for e in plan.experiments if not only or e.name in only]
        finished = {e.name: read_result(self._folder(e), e.fingerprint) for e in selected}
        to_run = [e for e in selected if finished[e.name] is None]
        progress = Progress(len(selected), sum(self.config(e).num_server_rounds for e in to_run), self.stream)
        # Baselines and evaluations run here with one thread, as every simulated client does
        # (client-resources-num-cpus=1); more threads on a busy CPU are several times slower.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for index, experiment in enumerate(selected, start=1):
                result = finished[experiment.name]
                if result is not None:
                    progress.skip(index, experiment.name)
                    outcome.skipped.append(experiment.name)
                    outcome.results.append(self._rescored(experiment, result))
                    continue
                progress.start(index, experiment.name, self.config(experiment).num_server_rounds)
                try:
                    result = self._run_one(experiment, progress)
                except Exception as error:  # one failing experiment must not stop a long grid
                    log.exception("experiment %s failed", experiment.name)
                    outcome.failed[experiment.name] = f"{type(error).__name__}: {error}"
                    progress.finish("FAILED")
                    print(f"    {experiment.name} failed: {str(error)[:2000]}", file=self.stream, flush=True)
                    continue
                progress.finish()
                outcome.ran.append(experiment.name)
                outcome.results.append(result)
        finally:
            torch.set_num_threads(threads)
            if self._federation is not None:
                self._federation.stop()
                self._federation = None
        every_result = [r for e in plan.experiments if (r := read_result(self._folder(e))) is not None]
        if report is not None:
            outcome.report = report(self.results_dir, self.grid, every_result, outcome.failed)
        return outcome

    def _folder(self, experiment: Experiment) -> Path:
        return self.results_dir / "experiments" / experiment.name

    def _run_one(self, experiment: Experiment, progress: Progress) -> ExperimentResult:
        config = self.config(experiment)
        run_folder = self.results_dir / "runs" / experiment.name
        started = time.monotonic()
        if experiment.kind == "federated":
            self._simulate(experiment, run_folder, progress)
        else:
            train_baseline(experiment, config, self.sites(experiment, config), run_folder, on_round=progress.round)
        result = self._evaluate(experiment, config, run_folder, time.monotonic() - started)
        write_result(self._folder(experiment), result)
        return result

    def _simulate(self, experiment: Experiment, run_folder: Path, progress: Progress) -> None:
        """Run (or resume) the federated simulation until its run folder holds all rounds."""
        rounds = self.config(experiment).num_server_rounds
        if _completed_rounds(run_folder) >= rounds and (run_folder / "final.pt").exists():
            return  # trained in an earlier invocation that stopped before writing its results
        overrides = self.overrides(experiment)
        if any(run_folder.glob("round-*.pt")):
            overrides["resume"] = True
        if self._federation is None:
            self._federation = open_local_federation(self.results_dir / ".flower")
        supernodes = len(self.data.site_dirs[experiment.partition])
        run_id = self._federation.start(run_config_argument(overrides), supernodes)
        env = self._federation.env
        deadline = time.monotonic() + self.experiment_timeout
        while True:
            progress.round(_completed_rounds(run_folder))
            status = run_status(run_id, PROJECT_ROOT, env)
            if status.startswith(TERMINAL_PREFIX):
                break
            if time.monotonic() > deadline:
                raise RunFailed(f"run {run_id} still '{status}' after {self.experiment_timeout:.0f} s")
            time.sleep(POLL_SECONDS)
        if status != COMPLETED:
            raise RunFailed(f"run {run_id} ended '{status}'. Last logs:\n{run_logs(run_id, PROJECT_ROOT, env)[-4000:]}")
        progress.round(_completed_rounds(run_folder))

    def _evaluate(self, experiment: Experiment, config: RunConfig, run_folder: Path, wall: float) -> ExperimentResult:
        sites = self.sites(experiment, config)
        model = load_checkpoint(run_folder / "final.pt").model
        cross = evaluate_across_sites(model, sites, config)
        records = json.loads((run_folder / "metrics.json").read_text())["rounds"]
        result = ExperimentResult(
            name=experiment.name,
            kind=experiment.kind,
            partition=experiment.partition,
            factors=experiment.factors,
            fingerprint=experiment.fingerprint,
            run_folder=str(run_folder),
            rounds=[{"round": r["round"], "central": r.get("central", {})} for r in records],
            cross_site=cross.to_json(),
            workload=_workload(config, sites, model),
            wall_seconds=wall,
        )
        if experiment.kind == "federated":
            score(result, self.grid.convergence)
        return result

    def _rescored(self, experiment: Experiment, result: ExperimentResult) -> ExperimentResult:
        """A finished federated result re-scored if the grid's convergence settings changed."""
        settings = self.grid.convergence.model_dump(by_alias=True, mode="json")
        if experiment.kind == "federated" and result.convergence.get("settings") != settings:
            score(result, self.grid.convergence)
            write_result(self._folder(experiment), result)
        return result


def _completed_rounds(run_folder: Path) -> int:
    """The newest round in the run folder's ``metrics.json`` with central metrics (0 if none)."""
    try:
        rounds = json.loads((run_folder / "metrics.json").read_text())["rounds"]
    except (OSError, ValueError, KeyError):
        return 0
    return max((int(r["round"]) for r in rounds if r.get("central")), default=0)


def _workload(config: RunConfig, sites: list[Site], model) -> dict[str, Any]:
    validates = config.fraction_evaluate > 0
    return {
        "sites": [
            {
                "site-id": site.site_id,
                "training-samples": local_steps(config, len(site.training_cases)) * config.batch_size,
                "validation-cases": len(site.validation_cases) if validates else 0,
            }
            for site in sites
        ],
        "model-bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
    }


def score(result: ExperimentResult, spec: ConvergenceSpec) -> None:
    """Add simulated time and the projected convergence score to a federated result, in place."""
    workloads = [
        SiteWorkload(s["site-id"], int(s["training-samples"]), int(s["validation-cases"]))
        for s in result.workload["sites"]
    ]
    trained = [r for r in result.rounds if r["round"] > 0]
    durations = round_durations(spec.site_profiles, workloads, len(trained), spec.seed)
    points = convergence_curve([r["central"].get(spec.metric) for r in trained], durations, spec.time_budget_hours * 3600)
    for record, point in zip(trained, points):
        record["simulated-seconds"] = point.simulated_seconds
        record["projected-score"] = point.projected
    last_counted = [p for p in points if p.within_budget]
    result.convergence = {
        "score": last_counted[-1].projected if last_counted else 0.0,
        "metric": spec.metric,
        "simulated-hours": points[-1].simulated_seconds / 3600 if points else 0.0,
        "budget-hours": spec.time_budget_hours,
        "rounds-within-budget": len(last_counted),
        "settings": spec.model_dump(by_alias=True, mode="json"),
    }
