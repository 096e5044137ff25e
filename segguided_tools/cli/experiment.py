"""``segguided experiment GRID.toml``: run an experiment grid and write its report.

Listed in ``segguided_tools.cli.main.SUBCOMMANDS``; everything heavy
(Flower, torch) is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from segguided_tools.cli.command_error import CommandError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "experiment",
        help="run a grid of federated experiments and baselines from a TOML file",
        description=(
            "Run every experiment of GRID.toml (strategies × partitions × attention supervision × secure "
            "aggregation × seeds, each a real Flower simulation, plus centralised and local-only baselines), "
            "evaluate each final model on every site, and write report.md, plots and CSV/JSON. "
            "Finished experiments are not rerun."
        ),
    )
    parser.add_argument("grid", type=Path, help="the grid file (see experiments/tiny.toml)")
    parser.add_argument("--results", type=Path, default=None, help="results folder (default: results/<grid name>)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these experiments")
    parser.add_argument(
        "--plan", action="store_true",
        help="print the experiments and exit; it prepares the grid's data in the results folder first (generated "
             "or partitioned sites), because the number of non-empty sites decides the federations and the baselines",
    )
    parser.add_argument("--experiment-timeout", type=float, default=86400.0, help="seconds one simulation may take")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from segguided_tools.experiments.grid import GridError, load_grid
    from segguided_tools.experiments.report import write_report
    from segguided_tools.experiments.results import ResultMismatch
    from segguided_tools.experiments.runner import GridRunner
    from segguided_tools.experiments.site_folders import SiteFolderError

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        grid = load_grid(args.grid)
    except GridError as error:
        raise CommandError(str(error)) from None
    runner = GridRunner(grid, args.results or Path("results") / grid.name, experiment_timeout=args.experiment_timeout)
    try:
        if args.plan:
            for experiment in runner.prepare().experiments:
                print(f"{experiment.name:<60} {experiment.kind:<12} {experiment.partition}")
            return 0
        outcome = runner.run(only=args.only, report=write_report)
    except (SiteFolderError, ResultMismatch, ValueError) as error:
        raise CommandError(str(error)) from None
    print(
        f"{len(outcome.ran)} experiment(s) run, {len(outcome.skipped)} finished earlier, "
        f"{len(outcome.failed)} failed; report: {outcome.report}"
    )
    return 1 if outcome.failed else 0
