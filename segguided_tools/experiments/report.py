"""The grid's summary report: Markdown tables, PNG plots and a summary CSV/JSON, from the results.

Written into the results folder:

    report.md                 tables of every experiment, the baselines, the ablations
    summary.csv/json          one row per experiment
    dice-per-round.png        central mean Dice per round, one line per experiment
    cross-site.png            the final models' mean Dice on every site's validation split
    attention-ablation.png    attention supervision on vs off, everything else equal
    convergence.png           projected convergence score over simulated time

With several seeds, every configuration (an experiment's name without ``-seedN``) is also
reported as mean ± standard deviation over its seeds, the per-round plot draws its mean
with a ± 1 std band, and each comparison (one factor changed from the reference, or a
baseline against federated training) gives the paired difference and whether it exceeds
seed-to-seed variation (``seed_statistics``).

Only measured numbers go in: the report states differences, it does not interpret them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence

from matplotlib.figure import Figure

from segguided_model.atomic_write import write_text_atomically
from segguided_model.attention_scores import ATTENTION_DICE_KEYS
from segguided_model.metrics import DICE_KEYS, DICE_MEAN_KEY, HD95_MEAN_KEY
from segguided_tools.experiments.grid import ExperimentGrid
from segguided_tools.experiments.progress import format_duration
from segguided_tools.experiments.results import ExperimentResult, write_table
from segguided_tools.experiments.seed_statistics import (
    by_configuration,
    compare,
    configuration_name,
    configuration_spreads,
    spread,
)

ATTENTION_COLUMNS: tuple[str, ...] = (*ATTENTION_DICE_KEYS, "attention-ncr-on-et", "attention-et-on-ncr")
"""The attention maps' scores the report shows: each map on its own sub-region, and NCR and ET on each other's."""

SEED_METRICS: tuple[str, ...] = (
    "final-dice-mean", "final-dice-et", "final-dice-tc", "final-dice-wt", "cross-site-dice-mean",
    "worst-site-dice-mean", "convergence-score",
)
"""Summary columns reported as mean ± std over seeds."""

PLOTS: tuple[str, ...] = ("dice-per-round.png", "cross-site.png", "attention-ablation.png", "convergence.png")


def summary_row(result: ExperimentResult) -> dict[str, Any]:
    """One experiment as a flat row: factors, final central metrics, cross-site summary, convergence."""
    final = result.final_central
    cross = result.cross_site
    return {
        "experiment": result.name,
        "kind": result.kind,
        "partition": result.partition,
        "strategy": result.factors.get("strategy"),
        "attention-supervision": result.factors.get("attention-supervision"),
        "secure-aggregation": result.factors.get("secure-aggregation"),
        "seed": result.factors.get("seed"),
        "rounds": max((r["round"] for r in result.rounds), default=0),
        **{f"final-{key}": final.get(key) for key in (DICE_MEAN_KEY, *DICE_KEYS, HD95_MEAN_KEY)},
        "best-dice-mean": result.best_central(),
        "cross-site-dice-mean": cross.get("mean", {}).get("dice-mean"),
        "cross-site-hd95-mean": cross.get("mean", {}).get("hd95-mean"),
        "worst-site": cross.get("worst-site"),
        "worst-site-dice-mean": cross.get("worst-dice-mean"),
        "site-spread": cross.get("spread"),
        "site-std": cross.get("std"),
        "convergence-score": result.convergence.get("score"),
        "simulated-hours": result.convergence.get("simulated-hours"),
        "wall-seconds": result.wall_seconds,
        **{f"final-{key}": final.get(key) for key in ATTENTION_COLUMNS},
    }


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A Markdown table of ``columns`` from ``rows`` (floats to 3 decimals, booleans on/off)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def paired(results: Iterable[ExperimentResult], factor: str) -> list[tuple[ExperimentResult, ExperimentResult]]:
    """Federated ``(on, off)`` pairs that differ only in the boolean ``factor`` (a λ level is neither)."""
    groups: dict[str, dict[bool, ExperimentResult]] = {}
    for result in results:
        if result.kind != "federated" or not isinstance(result.factors.get(factor), bool):
            continue
        others = json.dumps({k: v for k, v in result.factors.items() if k != factor}, sort_keys=True)
        groups.setdefault(others, {})[bool(result.factors.get(factor))] = result
    return [(pair[True], pair[False]) for pair in groups.values() if len(pair) == 2]


def _kind_style(kind: str) -> dict[str, Any]:
    return {"federated": {"linestyle": "-"}, "centralised": {"linestyle": "--", "color": "black"}}.get(
        kind, {"linestyle": ":", "alpha": 0.6}
    )


def plot_dice_per_round(results: Sequence[ExperimentResult], path: Path, metric: str = "dice-mean") -> None:
    """Central ``metric`` per round: one line per configuration (mean over its seeds, ± 1 std shaded)."""
    figure = Figure(figsize=(8, 5), layout="constrained")
    axes = figure.add_subplot()
    configurations: dict[str, list[ExperimentResult]] = {}
    for result in results:
        configurations.setdefault(configuration_name(result.name), []).append(result)
    for name, runs in configurations.items():
        by_round: dict[int, list[float]] = {}
        for run in runs:
            for record in run.rounds:
                if metric in record["central"]:
                    by_round.setdefault(record["round"], []).append(record["central"][metric])
        rounds = sorted(by_round)
        spreads = [spread(by_round[r]) for r in rounds]
        means = [s.mean for s in spreads]
        label = f"{name} ({len(runs)} seed{'s' if len(runs) > 1 else ''})"
        line, = axes.plot(rounds, means, marker="o", markersize=3, label=label, **_kind_style(runs[0].kind))
        if len(runs) > 1:
            axes.fill_between(rounds, [s.mean - s.std for s in spreads], [s.mean + s.std for s in spreads],
                              color=line.get_color(), alpha=0.15)
    axes.set(xlabel="round (baselines: the same number of optimiser steps)", ylabel=f"central {metric}",
             title="Central validation per round (mean over seeds, ± 1 std shaded)")
    axes.legend(fontsize=6, loc="best")
    figure.savefig(path, dpi=120)


def plot_cross_site(results: Sequence[ExperimentResult], path: Path) -> None:
    figure = Figure(figsize=(max(6, 1.5 + 0.5 * len(results)), 5), layout="constrained")
    axes = figure.add_subplot()
    sites = sorted({site for r in results for site in r.cross_site.get("sites", {})})
    width = 0.8 / max(1, len(results))
    for index, result in enumerate(results):
        values = [result.cross_site.get("sites", {}).get(site, {}).get("dice-mean", 0.0) for site in sites]
        axes.bar([i + index * width for i in range(len(sites))], values, width, label=result.name)
    axes.set_xticks([i + 0.4 - width / 2 for i in range(len(sites))], sites)
    axes.set(ylabel="mean Dice on the site's validation split", title="Final model on every site")
    axes.legend(fontsize=6, loc="best")
    figure.savefig(path, dpi=120)


def plot_attention_ablation(pairs: Sequence[tuple[ExperimentResult, ExperimentResult]], path: Path) -> None:
    figure = Figure(figsize=(max(6, 2 + 1.2 * len(pairs)), 5), layout="constrained")
    axes = figure.add_subplot()
    labels = [on.name.replace("-att-on", "") for on, _ in pairs]
    for offset, (label, pick) in enumerate((("attention supervision on", 0), ("off", 1))):
        values = [pair[pick].final_central.get("dice-mean", 0.0) for pair in pairs]
        axes.bar([i + offset * 0.4 for i in range(len(pairs))], values, 0.4, label=label)
    axes.set_xticks([i + 0.2 for i in range(len(pairs))], labels, rotation=20, ha="right", fontsize=7)
    axes.set(ylabel="final central mean Dice", title="Attention-supervision ablation")
    if not pairs:
        axes.text(0.5, 0.5, "no on/off pair in this grid", ha="center", va="center", transform=axes.transAxes)
    axes.legend(fontsize=7)
    figure.savefig(path, dpi=120)


def plot_convergence(results: Sequence[ExperimentResult], path: Path) -> None:
    figure = Figure(figsize=(8, 5), layout="constrained")
    axes = figure.add_subplot()
    for result in results:
        points = [(r["simulated-seconds"] / 3600, r["projected-score"]) for r in result.rounds if "projected-score" in r]
        if points:
            axes.plot(*zip(*points), marker="o", markersize=3, label=result.name)
    axes.set(xlabel="simulated hours", ylabel="projected convergence score", title="FeTS convergence score")
    axes.legend(fontsize=6, loc="best")
    figure.savefig(path, dpi=120)


def _pair_rows(pairs: Sequence[tuple[ExperimentResult, ExperimentResult]]) -> list[dict[str, Any]]:
    rows = []
    for on, off in pairs:
        rows.append({
            "experiment (on)": on.name,
            "final Dice on": on.final_central.get("dice-mean"),
            "final Dice off": off.final_central.get("dice-mean"),
            "on − off": (on.final_central.get("dice-mean") or 0.0) - (off.final_central.get("dice-mean") or 0.0),
            "cross-site Dice on": on.cross_site.get("mean", {}).get("dice-mean"),
            "cross-site Dice off": off.cross_site.get("mean", {}).get("dice-mean"),
            "wall on": format_duration(on.wall_seconds),
            "wall off": format_duration(off.wall_seconds),
        })
    return rows


def _reference_configuration(rows: Sequence[dict[str, Any]], grid: ExperimentGrid) -> str | None:
    """The first federated configuration: the grid's reference (first level of every factor)."""
    federated = [row for row in rows if row["kind"] == "federated"]
    return configuration_name(federated[0]["experiment"]) if federated else None


def comparison_rows(rows: Sequence[dict[str, Any]], grid: ExperimentGrid, metric: str = "final-dice-mean") -> list[dict[str, Any]]:
    """Every configuration against the reference, paired by seed: ``candidate − reference`` of ``metric``."""
    groups = by_configuration(rows)
    reference = _reference_configuration(rows, grid)
    if reference is None:
        return []
    table = []
    for name, seeds in groups.items():
        if name == reference:
            continue
        result = compare(groups[reference], seeds, metric)
        if result is None:
            continue
        table.append({
            "configuration − reference": f"`{name}` − `{reference}`",
            "seeds": result.seeds,
            f"Δ {metric}": f"{result.mean:+.3f} ± {result.std:.3f}",
            "verdict": result.verdict(),
        })
    return table


def _seed_sections(rows: Sequence[dict[str, Any]], grid: ExperimentGrid) -> list[str]:
    groups = by_configuration(rows)
    if all(len(seeds) < 2 for seeds in groups.values()):
        return []
    spreads = configuration_spreads(groups, [*SEED_METRICS, *(f"final-{k}" for k in ATTENTION_COLUMNS)])
    formatted = [{key: (str(value) if value is not None and not isinstance(value, (str, int)) else value)
                  for key, value in row.items()} for row in spreads]
    reference = _reference_configuration(rows, grid)
    return [
        "## Over seeds (mean ± standard deviation)",
        "Each configuration's final central Dice, cross-site Dice, worst site and FeTS convergence score over "
        "its seeds (sample standard deviation).",
        markdown_table(formatted, ["configuration", "seeds", *SEED_METRICS]),
        "Attention maps of the final model on the central cases (each map thresholded at 0.5; "
        "`attention-ncr-on-et`: the NCR map's Dice with the ET sub-region).",
        markdown_table(formatted, ["configuration", "seeds", *(f"final-{k}" for k in ATTENTION_COLUMNS)]),
        "## Differences against the reference, paired by seed",
        f"Reference: `{reference}`. Δ = configuration − reference of the final central mean Dice, per seed; "
        "mean ± std of the paired differences; two-sided paired t-test at 5 %.",
        markdown_table(comparison_rows(rows, grid), ["configuration − reference", "seeds", "Δ final-dice-mean", "verdict"]),
        "Same, for the final central ET Dice:",
        markdown_table(comparison_rows(rows, grid, "final-dice-et"),
                       ["configuration − reference", "seeds", "Δ final-dice-et", "verdict"]),
        "Same, for the FeTS convergence score (federated configurations only):",
        markdown_table(comparison_rows(rows, grid, "convergence-score"),
                       ["configuration − reference", "seeds", "Δ convergence-score", "verdict"]),
    ]


def render_markdown(grid: ExperimentGrid, results: Sequence[ExperimentResult], failed: dict[str, str]) -> str:
    rows = [summary_row(r) for r in results]
    federated = [row for row in rows if row["kind"] == "federated"]
    baselines = [row for row in rows if row["kind"] != "federated"]
    spec = grid.convergence
    parts = [
        f"# Experiment grid `{grid.name}`",
        grid.description,
        f"{len(federated)} federated experiment(s), {len(baselines)} baseline(s)"
        + (f", {len(failed)} failed" if failed else "") + ". Numbers are measured; see `summary.csv` for all columns.",
        "## Federated experiments",
        markdown_table(federated, ["experiment", "final-dice-mean", "final-dice-et", "final-dice-tc", "final-dice-wt",
                                   "final-hd95-mean", "best-dice-mean", "cross-site-dice-mean", "worst-site",
                                   "worst-site-dice-mean", "site-spread", "convergence-score", "simulated-hours",
                                   "wall-seconds"]),
        "## Baselines (same total number of optimiser steps)",
        markdown_table(baselines, ["experiment", "final-dice-mean", "final-hd95-mean", "best-dice-mean",
                                   "cross-site-dice-mean", "worst-site", "worst-site-dice-mean", "site-spread",
                                   "wall-seconds"]),
        "![Central Dice per round](dice-per-round.png)",
        *_seed_sections(rows, grid),
        "## Cross-site evaluation",
        "Each final model on every site's validation split (mean Dice over ET, TC, WT).",
        markdown_table(
            [{"experiment": r.name, **{s: m.get("dice-mean") for s, m in r.cross_site.get("sites", {}).items()}} for r in results],
            ["experiment", *sorted({s for r in results for s in r.cross_site.get("sites", {})})],
        ),
        "![Per-site Dice](cross-site.png)",
        "## Attention-supervision ablation",
        markdown_table(_pair_rows(paired(results, "attention-supervision")),
                       ["experiment (on)", "final Dice on", "final Dice off", "on − off", "cross-site Dice on",
                        "cross-site Dice off", "wall on", "wall off"]),
        "![Attention ablation](attention-ablation.png)",
        "## Secure aggregation on vs off",
        markdown_table(_pair_rows(paired(results, "secure-aggregation")),
                       ["experiment (on)", "final Dice on", "final Dice off", "on − off", "wall on", "wall off"]),
        "## Convergence score",
        f"FeTS-style: best central `{spec.metric}` so far integrated over simulated time and projected to a "
        f"{spec.time_budget_hours:g} h budget; a round lasts as long as its slowest site's download + validation + "
        f"training + upload ({len(spec.site_profiles)} site profile(s), seed {spec.seed}).",
        "![Convergence](convergence.png)",
    ]
    if failed:
        parts += ["## Failed experiments", "\n".join(f"* `{name}`: {reason.splitlines()[0][:300]}" for name, reason in failed.items())]
    return "\n\n".join(p for p in parts if p) + "\n"


def write_report(
    results_dir: Path, grid: ExperimentGrid, results: Sequence[ExperimentResult], failed: dict[str, str] | None = None
) -> Path:
    """Write ``report.md``, the plots and ``summary.csv``/``summary.json``; return the report's path."""
    failed = failed or {}
    results_dir.mkdir(parents=True, exist_ok=True)
    rows = [summary_row(r) for r in results]
    write_table(results_dir / "summary.csv", rows)
    write_text_atomically(results_dir / "summary.json", json.dumps(rows, indent=2))
    federated = [r for r in results if r.kind == "federated"]
    plot_dice_per_round(results, results_dir / "dice-per-round.png", "dice-mean")
    plot_cross_site(results, results_dir / "cross-site.png")
    plot_attention_ablation(paired(results, "attention-supervision"), results_dir / "attention-ablation.png")
    plot_convergence(federated, results_dir / "convergence.png")
    path = results_dir / "report.md"
    write_text_atomically(path, render_markdown(grid, results, failed))
    return path
