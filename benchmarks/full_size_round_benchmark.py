"""Where a full-size round goes: real federations of 240×240×155 synthetic cases, and today's costs beside them.

Three parts, all in one run on the same machine and the same cases:

1. **Components, before and after** (one site and the server's validation folder):
   the QA gate with no cache (as every round did before) against its second pass with
   the kept results; reading and preprocessing the validation cases every round against
   reading the cached volumes; and validating one case the way it was done before (the
   48³ training patch as window, overlap 0.5, one window per forward pass, the whole
   grid) against 128³ tiles on the brain's box (overlap 0.25, a memory-bounded batch) and
   against today's default, one window over the brain's box (``validation-roi-size``
   256, bounded by ``inference-memory-mb``), with the Dice and HD95 each gives, from a
   briefly trained network. Whether the larger window keeps Dice is measured on a
   properly trained network in ``validation_window_benchmark.py``.
2. **Federations** of two sites at two sizes (``--sizes``, cases per site), one local
   epoch per round, secure aggregation off so that each site's timings reach the server,
   every process one thread (``OMP_NUM_THREADS=1``: each site has a core of its own, as
   hospitals have their own machines, instead of sites queueing for shared cores), and
   ``evaluate-every`` equal to ``--rounds``: the round split that ``metrics.json`` records
   (training, data waiting, QA, central validation per case, federated evaluation,
   aggregation, Flower's own overhead) for a first round (cold caches), later rounds
   without validation, and the last round with it.

Results go to ``benchmarks/results/full_size_round.{md,json}``. It takes about half an
hour on a 2-core CPU; run it on a quiet machine:

    python benchmarks/full_size_round_benchmark.py [--sizes 4 8] [--rounds 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from segguided_federation.local_training import train_local_round
from segguided_federation.run_config import RunConfig
from segguided_model.data.pipeline import build_eval_dataset
from segguided_model.data.preprocessing import (
    IMAGE_KEY,
    REGIONS_KEY,
    SPACING_KEY,
    load_case,
)
from segguided_model.data.qa import run_qa
from segguided_model.data.synthetic import ensure_federation
from segguided_model.inference import SlidingWindow, predict_volume
from segguided_model.metrics import case_metrics
from segguided_model.network import SegGuidedNet
from segguided_tools.local_simulation import (
    PROJECT_ROOT,
    open_local_federation,
    run_config_argument,
)

RESULTS = PROJECT_ROOT / "benchmarks" / "results"
BRATS_SIZE = (240, 240, 155)
NETWORK = {"model-base-width": 8, "model-levels": 4}
"""The main job's network (1.05 M parameters): what a CPU federation trains."""

SITES = 2
BEFORE_WINDOW = SlidingWindow(roi_size=48, overlap=0.5, batch_size=1, crop_to_brain=False)
"""Validation before issue 14: the 48³ training patch as window over the whole grid, one window per pass."""
EVERY = (1, 2, 5, 10)
"""``evaluate-every`` values whose share of time outside training is reported."""
TILES_WINDOW = SlidingWindow(roi_size=128, overlap=0.25)
"""Issue 14's first step: 128³ tiles on the brain's box, batched within the memory budget."""


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


def generate(work: Path, cases: int, seed: int, sites: int = SITES) -> tuple[Path, Path, float]:
    """A federation of full-size sites; returns (folder of site links, validation folder, seconds)."""
    federation, seconds = timed(ensure_federation, work / f"data-{cases}", sites=sites, cases=cases, val_cases=2,
                                size=BRATS_SIZE, seed=seed)
    links = work / f"sites-{cases}"
    links.mkdir(exist_ok=True)
    for folder in federation.site_dirs:
        if not (links / folder.name).exists():
            (links / folder.name).symlink_to(folder)
    return links, federation.validation_dir, seconds


def components(site: Path, validation: Path, cache: Path) -> dict:
    """QA, preprocessing and validation of the same cases, before and after."""
    qa_before = timed(run_qa, site)[1]
    timed(run_qa, site, cache_dir=cache / "qa")
    report, qa_after = timed(run_qa, site, cache_dir=cache / "qa")
    training = report.trainable
    val_cases = run_qa(validation).trainable

    def read_all(dataset) -> None:
        for _ in dataset:
            pass

    preprocess_before = timed(read_all, build_eval_dataset(val_cases))[1]
    read_all(build_eval_dataset(val_cases, cache / "eval"))
    preprocess_after = timed(read_all, build_eval_dataset(val_cases, cache / "eval"))[1]

    config = RunConfig.from_flower({**NETWORK, "patch-size": "64", "batch-size": 2, "local-steps": 60})
    torch.manual_seed(0)
    model = SegGuidedNet.from_config(config.model)
    trained = train_local_round(model, training, config, seed=0, device=torch.device("cpu"), mixed_precision=False,
                                cache_dir=cache / "train")
    windows = {"tiles": TILES_WINDOW, "after": config.validation_window(mixed_precision=False)}
    rows = []
    for index, (case, cropped) in enumerate(zip(val_cases, build_eval_dataset(val_cases, cache / "eval"))):
        reference = cropped[REGIONS_KEY].bool()
        spacing = tuple(cropped[SPACING_KEY])
        row = {"case": case.case_id}
        for label, window in windows.items():
            new, new_seconds = timed(predict_volume, model, cropped[IMAGE_KEY], window)
            row.update({f"{label}-seconds": new_seconds, label: case_metrics(new.regions, reference, spacing)})
        if index == 0:  # the old way takes minutes per case: one case is enough to compare
            whole = load_case(case)
            old, old_seconds = timed(predict_volume, model, whole[IMAGE_KEY], BEFORE_WINDOW)
            row.update({"before-seconds": old_seconds,
                        "before": case_metrics(old.regions, whole[REGIONS_KEY].bool(), spacing)})
        rows.append(row)
    return {
        "site-cases": len(report.valid) + len(report.rejected),
        "qa-before-seconds": qa_before, "qa-after-seconds": qa_after,
        "preprocess-before-seconds": preprocess_before, "preprocess-after-seconds": preprocess_after,
        "validation-cases": len(val_cases),
        "training": {"steps": trained.steps, "seconds": trained.seconds, "loss": trained.loss},
        "validation": rows,
    }


def federation_round_split(work: Path, sites: Path, validation: Path, rounds: int) -> dict:
    """One simulated federation at full size; the split of every round from its ``metrics.json``."""
    os.environ["OMP_NUM_THREADS"] = "1"  # read by the SuperLink's processes, not by this one
    local = open_local_federation(work / f"federation-{sites.name}")
    output = work / "runs"
    settings = {
        **NETWORK, "data-dir": str(sites), "server-validation-dir": str(validation), "num-server-rounds": rounds,
        "evaluate-every": rounds, "local-epochs": 1, "batch-size": 2, "patch-size": "128",
        "secure-aggregation": False, "min-fit-clients": SITES, "min-available-clients": SITES,
        "min-evaluate-clients": SITES, "output-dir": str(output), "run-name": sites.name, "overwrite": True,
    }
    try:
        outcome = local.run(run_config_argument(settings), supernodes=SITES, timeout=6 * 3600)
    finally:
        local.stop()
    records = json.loads((output / sites.name / "metrics.json").read_text())["rounds"]
    return {"seconds": outcome.seconds, "rounds": [split(record) for record in records if record["round"] > 0]}


def split(record: dict) -> dict:
    """A round's time: the slowest site's training compute, and everything else by part."""
    timing, sites = record["timing"], record["site-training"]
    compute = {site: m["train-seconds"] - m.get("data-seconds", 0.0) for site, m in sites.items()}
    slowest = max(compute, key=compute.get)
    round_seconds = timing["round-seconds"]
    return {
        "round": record["round"],
        "validated": bool(record["central"]),
        "round-seconds": round_seconds,
        "training-compute-seconds": compute[slowest],
        "outside-training-fraction": 1.0 - compute[slowest] / round_seconds,
        "slowest-site": slowest,
        "steps": sites[slowest].get("steps"),
        "data-seconds": sites[slowest].get("data-seconds"),
        "qa-seconds": sites[slowest].get("qa-seconds"),
        "client-seconds": sites[slowest].get("client-seconds"),
        "central-validation-seconds": timing.get("central-validation-seconds"),
        "central-validation-seconds-per-case": timing.get("central-validation-seconds-per-case"),
        "federated-evaluation-seconds": timing.get("federated-evaluation-seconds"),
        "aggregation-seconds": timing.get("aggregation-seconds"),
        "flower-overhead-seconds": timing.get("flower-overhead-seconds"),
    }


def amortised(rounds: list[dict], every: int) -> float:
    """Share of ``every`` warm rounds spent outside training when the last of them validates.

    Computed from the measured warm rounds: the validated last round once, and the mean of
    the warm rounds without validation for the other ``every - 1``.
    """
    validated = rounds[-1]
    plain = [r for r in rounds[1:-1] if not r["validated"]] or [validated]
    plain_round = sum(r["round-seconds"] for r in plain) / len(plain)
    plain_training = sum(r["training-compute-seconds"] for r in plain) / len(plain)
    total = validated["round-seconds"] + (every - 1) * plain_round
    return 1.0 - (validated["training-compute-seconds"] + (every - 1) * plain_training) / total


def _seconds(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def write(results: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "full_size_round.json").write_text(json.dumps(results, indent=2))
    c = results["components"]
    lines = [
        "# Where a full-size round goes",
        "",
        f"Synthetic BraTS-geometry cases ({'×'.join(map(str, BRATS_SIZE))}, 1 mm), the main job's network "
        f"(width 8, 4 levels), 2-core CPU; `benchmarks/full_size_round_benchmark.py`, {results['date']}.",
        "",
        "## Before and after, same cases, same run",
        "",
        "| part | before | after | ratio |",
        "| --- | --- | --- | --- |",
        f"| QA gate, one site of {c['site-cases']} cases | {c['qa-before-seconds']:.1f} s (every round) | "
        f"{c['qa-after-seconds']:.3f} s (second round: kept results) | "
        f"{c['qa-before-seconds'] / c['qa-after-seconds']:.0f}× |",
        f"| reading and preprocessing {c['validation-cases']} validation cases | {c['preprocess-before-seconds']:.1f} s "
        f"(every round) | {c['preprocess-after-seconds']:.2f} s (cached) | "
        f"{c['preprocess-before-seconds'] / c['preprocess-after-seconds']:.0f}× |",
    ]
    first = c["validation"][0]
    lines += [
        f"| validating one case | {first['before-seconds']:.1f} s (48³ windows, overlap 0.5, whole grid) | "
        f"{first['tiles-seconds']:.1f} s (128³ tiles on the brain's box, overlap 0.25) | "
        f"{first['before-seconds'] / first['tiles-seconds']:.0f}× |",
        f"| validating one case | {first['before-seconds']:.1f} s (48³ windows, overlap 0.5, whole grid) | "
        f"{first['after-seconds']:.1f} s (default: one window over the brain's box) | "
        f"{first['before-seconds'] / first['after-seconds']:.0f}× |",
    ]
    lines += ["", "Scores of the same briefly trained network "
              f"({c['training']['steps']} steps of 2×64³ patches), per way of covering the case:", "",
              "| case | windows | s | Dice ET | Dice TC | Dice WT | HD95 ET (mm) | HD95 TC | HD95 WT |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in c["validation"]:
        for label in ("before", "tiles", "after"):
            if label in row:
                m = row[label]
                lines.append(f"| {row['case']} | {label} | {row[label + '-seconds']:.1f} | {m['dice-et']:.3f} | "
                             f"{m['dice-tc']:.3f} | {m['dice-wt']:.3f} | {m['hd95-et']:.1f} | {m['hd95-tc']:.1f} | "
                             f"{m['hd95-wt']:.1f} |")
    lines += ["", f"## Federations: {SITES} sites, one local epoch per round, one thread each", "",
              "| cases per site | round | validated | round (s) | training compute (s) | outside training | data (s) | "
              "QA (s) | central validation (s per case) | federated evaluation (s) | aggregation (s) | "
              "Flower overhead (s) |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for size, federation in results["federations"].items():
        for r in federation["rounds"]:
            central = r["central-validation-seconds"]
            central_cell = "–" if central is None else f"{central:.0f} ({r['central-validation-seconds-per-case']:.1f})"
            lines.append(
                f"| {size} | {r['round']} | {'yes' if r['validated'] else 'no'} | {r['round-seconds']:.0f} | "
                f"{r['training-compute-seconds']:.0f} | {100 * r['outside-training-fraction']:.0f} % | "
                f"{_seconds(r['data-seconds'], 1)} | {_seconds(r['qa-seconds'], 2)} | {central_cell} | "
                f"{_seconds(r['federated-evaluation-seconds'])} | {_seconds(r['aggregation-seconds'], 2)} | "
                f"{_seconds(r['flower-overhead-seconds'], 1)} |"
            )
    lines += ["", "Outside training over warm rounds, by `evaluate-every` (computed from the warm rounds above):", "",
              "| cases per site | " + " | ".join(f"every {k}" for k in EVERY) + " |",
              "| --- |" + " --- |" * len(EVERY)]
    for size, federation in results["federations"].items():
        lines.append(f"| {size} | " + " | ".join(f"{100 * amortised(federation['rounds'], k):.0f} %" for k in EVERY)
                     + " |")
    (RESULTS / "full_size_round.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 8], help="cases per site of each federation")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the last validates")
    parser.add_argument("--work", type=Path, default=None, help="where data, caches and runs go (default: a temp folder)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="full-size-round-"))
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    results: dict = {"date": time.strftime("%Y-%m-%d"), "sizes": args.sizes, "generation": {}, "federations": {}}
    prepared = {}
    for size in args.sizes:
        sites, validation, seconds = generate(work, size, seed=size)
        results["generation"][str(size)] = {"seconds": seconds, "cases": SITES * size + 2}
        prepared[size] = (sites, validation)
        print(f"{SITES * size + 2} full-size cases in {seconds:.0f} s", flush=True)
    smallest = min(args.sizes)
    site = next(p for p in sorted(prepared[smallest][0].iterdir()))
    results["components"] = components(site.resolve(), prepared[smallest][1], work / "component-cache")
    print(json.dumps(results["components"], indent=1), flush=True)
    for size in args.sizes:
        results["federations"][str(size)] = federation_round_split(work, *prepared[size], args.rounds)
        print(json.dumps(results["federations"][str(size)], indent=1), flush=True)
    write(results)


if __name__ == "__main__":
    main()
