"""Which windows per-round validation can use: the same network, the same cases, three ways.

Issue 14 asks for validation sized to the brain, at least 20× faster than the training
patch slid over the whole grid, with the same Dice within noise. Whether a window larger
than the training patch changes the prediction (instance normalisation sees a different
share of background) can only be measured with a network trained long enough to make
sensible predictions, which a 128³ network on this CPU is not within a benchmark. So this
runs the question at half the resolution, where it is affordable and the geometry is the
same: phantom cases at 2 mm (BraTS's field of view on a 120×120×78 grid), a network
trained on 64³ patches (the full-size run's 128³ patch, halved), and three ways to cover
a case:

- **before**: the training patch as window over the whole grid, overlap 0.5, one window
  per forward pass (validation before issue 14);
- **tiles**: patch-sized windows on the brain's bounding box, overlap 0.25, batched
  (issue 14's first step; ``validation-roi-size = 128`` at full size);
- **box**: one window covering the brain's bounding box (the default ``validation-roi-size``
  256 caps at the box), never smaller than the patch.

Per case: Dice and HD95 (mm) of ET, TC and WT and the seconds taken; per method: means,
and the paired difference to ``before`` with a 95 % interval over cases (Student's t).
Results go to ``benchmarks/results/validation_window.{md,json}``. About 20 minutes on the
2-core CPU (most of it training); the trained network is kept in ``--work`` and reused.

    python benchmarks/validation_window_benchmark.py [--steps 300] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch
from scipy import stats

from segguided_federation.local_training import train_local_round
from segguided_federation.run_config import RunConfig
from segguided_model.data.pipeline import build_eval_dataset
from segguided_model.data.preprocessing import IMAGE_KEY, REGIONS_KEY, SPACING_KEY, load_case
from segguided_model.data.qa import run_qa
from segguided_model.data.synthetic import ensure_federation
from segguided_model.inference import SlidingWindow, brain_box, predict_volume
from segguided_model.metrics import case_metrics
from segguided_model.network import SegGuidedNet
from segguided_tools.local_simulation import PROJECT_ROOT

RESULTS = PROJECT_ROOT / "benchmarks" / "results"
GRID = (120, 120, 78)
"""BraTS's 240×240×155 mm field of view at 2 mm."""
PATCH = 64
SETTINGS = {"model-base-width": 8, "model-levels": 4, "patch-size": str(PATCH), "batch-size": 2}
"""The main job's network (1.05 M parameters), trained on half the full-size run's 128³ patch."""
METHODS = {
    "before": SlidingWindow(roi_size=PATCH, overlap=0.5, batch_size=1, crop_to_brain=False),
    "tiles": SlidingWindow(roi_size=PATCH, overlap=0.25, min_size=PATCH),
    "box": SlidingWindow(roi_size=4 * PATCH, overlap=0.25, min_size=PATCH),
}
REGIONS = ("et", "tc", "wt")


def trained_network(work: Path, steps: int) -> tuple[SegGuidedNet, list, dict]:
    """The network trained on one 2 mm site, its validation cases, and how it was trained."""
    federation = ensure_federation(work / "data", sites=1, cases=16, val_cases=8, size=GRID, seed=14)
    config = RunConfig.from_flower({**SETTINGS, "local-steps": steps})
    validation = run_qa(federation.validation_dir).trainable
    model = SegGuidedNet.from_config(config.model)
    checkpoint = work / f"network-{steps}.pt"
    if checkpoint.exists():
        saved = torch.load(checkpoint)
        model.load_state_dict(saved["state"])
        return model, validation, saved["training"]
    torch.manual_seed(0)
    cases = run_qa(federation.site_dirs[0]).trainable
    result = train_local_round(model, cases, config, seed=0, device=torch.device("cpu"), mixed_precision=False,
                               cache_dir=work / "train-cache")
    training = {"steps": result.steps, "seconds": result.seconds, "loss": result.loss, "cases": len(cases)}
    torch.save({"state": model.state_dict(), "training": training}, checkpoint)
    return model, validation, training


def compare(model: SegGuidedNet, validation: list, work: Path) -> list[dict]:
    rows = []
    for case, cropped in zip(validation, build_eval_dataset(validation, work / "eval-cache")):
        whole = load_case(case)
        reference = whole[REGIONS_KEY].bool()
        spacing = tuple(float(s) for s in cropped[SPACING_KEY])
        row = {"case": case.case_id, "box": [s.stop - s.start for s in brain_box(cropped[IMAGE_KEY])]}
        for name, window in METHODS.items():
            image = whole[IMAGE_KEY] if name == "before" else cropped[IMAGE_KEY]
            started = time.perf_counter()
            prediction = predict_volume(model, image, window)
            seconds = time.perf_counter() - started
            truth = reference if name == "before" else cropped[REGIONS_KEY].bool()
            metrics = case_metrics(prediction.regions, truth, spacing)
            dice_mean = statistics.fmean(metrics[f"dice-{r}"] for r in REGIONS)
            row[name] = {**metrics, "dice-mean": dice_mean, "seconds": seconds}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def paired(rows: list[dict], method: str, key: str, baseline: str = "before") -> dict:
    """Mean of ``method − baseline`` over cases for ``key``, with a 95 % Student-t interval."""
    differences = [row[method][key] - row[baseline][key] for row in rows]
    finite = [d for d in differences if math.isfinite(d)]
    mean = statistics.fmean(finite)
    half = stats.t.ppf(0.975, len(finite) - 1) * statistics.stdev(finite) / math.sqrt(len(finite))
    return {"mean": mean, "low": mean - half, "high": mean + half, "cases": len(finite)}


def summarise(rows: list[dict]) -> dict:
    summary = {}
    for method in METHODS:
        entry = {key: statistics.fmean(row[method][key] for row in rows)
                 for key in [f"dice-{r}" for r in REGIONS] + [f"hd95-{r}" for r in REGIONS] + ["dice-mean", "seconds"]}
        if method != "before":
            entry["speed-up"] = statistics.fmean(row["before"]["seconds"] for row in rows) / entry["seconds"]
            compared = [f"dice-{r}" for r in REGIONS] + ["dice-mean"] + [f"hd95-{r}" for r in REGIONS]
            entry["difference"] = {key: paired(rows, method, key) for key in compared}
            if method == "box":
                entry["difference-to-tiles"] = {key: paired(rows, method, key, "tiles") for key in compared}
        summary[method] = entry
    return summary


def write(results: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "validation_window.json").write_text(json.dumps(results, indent=2))
    s, t = results["summary"], results["training"]
    lines = [
        "# Which windows per-round validation can use",
        "",
        f"Phantom cases at 2 mm ({'×'.join(map(str, GRID))}), the main job's network (width 8, 4 levels) trained "
        f"{t['steps']} steps on 2×{PATCH}³ patches of {t['cases']} cases (final loss {t['loss']:.3f}), "
        f"{len(results['cases'])} held-out cases, 2-core CPU; `benchmarks/validation_window_benchmark.py`, "
        f"{results['date']}.",
        "",
        "| method | windows | Dice ET | Dice TC | Dice WT | Dice mean | HD95 ET (mm) | HD95 TC | HD95 WT | "
        "s per case | speed-up |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    described = {"before": f"{PATCH}³, overlap 0.5, whole grid, 1 per pass",
                 "tiles": f"{PATCH}³, overlap 0.25, brain's box, batched",
                 "box": "one window over the brain's box"}
    for method, entry in s.items():
        lines.append(
            f"| {method} | {described[method]} | {entry['dice-et']:.3f} | {entry['dice-tc']:.3f} | "
            f"{entry['dice-wt']:.3f} | {entry['dice-mean']:.3f} | {entry['hd95-et']:.1f} | {entry['hd95-tc']:.1f} | "
            f"{entry['hd95-wt']:.1f} | {entry['seconds']:.2f} | {entry.get('speed-up', 1.0):.1f}× |")
    lines += ["", "Paired differences over the same cases (mean and 95 % interval):", "",
              "| comparison | Dice ET | Dice TC | Dice WT | Dice mean | HD95 ET (mm) | HD95 TC | HD95 WT |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for method, label, key in (("tiles", "tiles − before", "difference"), ("box", "box − before", "difference"),
                               ("box", "box − tiles", "difference-to-tiles")):
        d = s[method][key]
        cells = [f"{d[k]['mean']:+.3f} [{d[k]['low']:+.3f}, {d[k]['high']:+.3f}]"
                 for k in ("dice-et", "dice-tc", "dice-wt", "dice-mean")]
        cells += [f"{d[k]['mean']:+.1f} [{d[k]['low']:+.1f}, {d[k]['high']:+.1f}]"
                  for k in ("hd95-et", "hd95-tc", "hd95-wt")]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    (RESULTS / "validation_window.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps to train the network")
    parser.add_argument("--work", type=Path, default=None, help="data, caches and the trained network (default: temp)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="validation-window-"))
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)
    model, validation, training = trained_network(work, args.steps)
    rows = compare(model, validation, work)
    write({"date": time.strftime("%Y-%m-%d"), "training": training, "cases": rows, "summary": summarise(rows)})


if __name__ == "__main__":
    main()
