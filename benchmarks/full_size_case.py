"""The README's picture: a full-size phantom case (BraTS geometry, 1 mm) segmented by a model trained on full-size cases.

Generates one site of full-size phantom cases (timing the generation per case, and the
same on the 5 mm CPU grid), trains the main job's network centrally on them with the
main job's loss, segments a held-out case with ``segguided segment`` and scores it with
``segguided evaluate`` (regions and attention maps). The overlay goes to
``benchmarks/results/full-size-case-overlay.png`` (quantised to stay small), the numbers
to ``benchmarks/results/full_size_case.md``. CPU-heavy: about half an hour on 2 cores.

    python benchmarks/full_size_case.py [--cases 12] [--steps 240] [--patch 64]
"""

from __future__ import annotations

import argparse
import csv
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from segguided_federation.local_training import train_local_round
from segguided_federation.run_config import RunConfig
from segguided_model.checkpoint import save_checkpoint
from segguided_model.data.discovery import discover_cases
from segguided_model.data.phantom.case import brats_grid, synthesize_case
from segguided_model.data.phantom.scanner import draw_site_profiles
from segguided_model.data.phantom.template import brain_template
from segguided_model.data.synthetic import CPU_SPACING_MM, ensure_federation
from segguided_model.network import SegGuidedNet
from segguided_tools.cli.main import main as segguided
from segguided_tools.local_simulation import PROJECT_ROOT

RESULTS = PROJECT_ROOT / "benchmarks" / "results"
PICTURE = RESULTS / "full-size-case-overlay.png"


def generation_seconds(shape: tuple[int, int, int], cases: int) -> float:
    """Mean seconds to synthesise one case on ``shape`` (template already loaded)."""
    brain_template(240.0 / max(shape))
    profiles = draw_site_profiles(3, 0)
    started = time.perf_counter()
    for number in range(cases):
        synthesize_case(profiles[number % 3], shape, np.random.default_rng(number))
    return (time.perf_counter() - started) / cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=PROJECT_ROOT / ".scratch" / "full-size")
    parser.add_argument("--cases", type=int, default=12)
    parser.add_argument("--steps", type=int, default=240)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--note", default="nothing else ran on it", help="what else ran on the machine, for the results")
    args = parser.parse_args()
    torch.set_num_threads(2)
    args.work.mkdir(parents=True, exist_ok=True)

    coarse_seconds = generation_seconds(brats_grid(CPU_SPACING_MM), 5)
    full_seconds = generation_seconds(brats_grid(1.0), 2)
    started = time.perf_counter()
    federation = ensure_federation(args.work / "data", sites=1, cases=args.cases, val_cases=1, size=brats_grid(1.0), seed=0)
    data_seconds = time.perf_counter() - started

    config = RunConfig(patch_size=(args.patch,) * 3, batch_size=args.batch_size, attention_weight=0.1)
    torch.manual_seed(0)
    model = SegGuidedNet.from_config(config.model)
    cases = discover_cases(federation.site_dirs[0]).cases
    started, losses = time.perf_counter(), []
    chunk = 40
    for part, first in enumerate(range(0, args.steps, chunk)):
        result = train_local_round(model, cases, config, part, torch.device("cpu"), False, steps=min(chunk, args.steps - first))
        losses.append(result.loss)
        print(f"steps {first + result.steps}/{args.steps}: loss {result.loss:.3f} ({time.perf_counter() - started:.0f} s)", flush=True)
    train_seconds = time.perf_counter() - started
    checkpoint = save_checkpoint(args.work / "full-size.pt", model, extra={"steps": args.steps})

    case_dir = next(entry for entry in sorted(federation.validation_dir.iterdir()) if entry.is_dir())
    out = args.work / "segmentation"
    started = time.perf_counter()
    assert segguided(["segment", str(case_dir), "--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    segment_seconds = time.perf_counter() - started
    metrics = args.work / "metrics.csv"
    assert segguided(["evaluate", "--pred", str(out), "--ref", str(federation.validation_dir), "--out", str(metrics)]) == 0
    rows = list(csv.DictReader(metrics.open()))
    scores = {key: float(value) for key, value in rows[-1].items() if key != "case-id"}
    scores["dice-mean"] = (scores["dice-et"] + scores["dice-tc"] + scores["dice-wt"]) / 3

    RESULTS.mkdir(parents=True, exist_ok=True)
    overlay = next(out.glob("*-overlay.png"))
    Image.open(overlay).convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(PICTURE, optimize=True)
    shutil.copy(checkpoint, args.work / "kept.pt")
    lines = [
        "# A full-size phantom case segmented (the README's picture)",
        "",
        f"`python benchmarks/full_size_case.py --cases {args.cases} --steps {args.steps} --patch {args.patch} "
        f"--batch-size {args.batch_size}` on the project's 2-core CPU machine ({args.note}).",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| phantom generation, one case at 1 mm (240×240×155) | {full_seconds:.1f} s |",
        f"| phantom generation, one case at 5 mm (48×48×31) | {coarse_seconds:.2f} s |",
        f"| {args.cases + 1} full-size cases written (one site + one held-out case, incl. NIfTI compression) | {data_seconds:.0f} s |",
        f"| training: main job's network (width {config.model_base_width}, {config.model_levels} levels, gates' hidden layer "
        f"of {config.model_gate_hidden_channels}), {args.steps} steps of {args.batch_size}×{args.patch}³ patches | "
        f"{train_seconds / 60:.1f} min |",
        f"| `segguided segment` of the held-out case (128³ windows) | {segment_seconds:.0f} s |",
        f"| Dice ET / TC / WT / mean | {scores['dice-et']:.3f} / {scores['dice-tc']:.3f} / {scores['dice-wt']:.3f} / {scores['dice-mean']:.3f} |",
        f"| HD95 ET / TC / WT (mm) | {scores['hd95-et']:.1f} / {scores['hd95-tc']:.1f} / {scores['hd95-wt']:.1f} |",
        f"| attention maps: NCR on NCR / on ET | {scores['attention-dice-ncr']:.3f} / {scores['attention-ncr-on-et']:.3f} |",
        f"| attention maps: ET on ET / on NCR | {scores['attention-dice-et']:.3f} / {scores['attention-et-on-ncr']:.3f} |",
        f"| attention map: ED on ED | {scores['attention-dice-ed']:.3f} |",
        f"| training loss per {chunk} steps | {', '.join(f'{v:.2f}' for v in losses)} |",
        "",
        f"![overlay]({PICTURE.name})",
    ]
    (RESULTS / "full_size_case.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
