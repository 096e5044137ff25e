"""Choosing ``SegGuidedNet()``'s full-size default: parameters, update size, CPU step time and memory at 128³.

Candidates are SegGuidedNet widths and depths around SegResNet's BraTS configurations,
measured with MONAI's SegResNet of similar size in the same run, each in a fresh
process (``model_benchmark.run_isolated``: its own peak RSS). Step time is the median of
``--steps`` training steps (forward, loss with attention supervision, backward, SGD)
after one warm-up, batch 1 of 4×128³, on the CPU with ``--threads`` threads. Results go
to ``benchmarks/results/full_size_default.{md,json}``; ratios are against SegResNet init
16 (4.7 M parameters), BraTS 2018's winning configuration. Run:

    python benchmarks/full_size_default_benchmark.py [--threads 2] [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from model_benchmark import EXACT_MEMORY_ENV, RESULTS, machine, run_isolated  # noqa: E402

CANDIDATES: tuple[tuple[str, dict], ...] = (
    ("SegGuidedNet w32 L5 (before: the default)", {"base_width": 32, "levels": 5}),
    ("SegGuidedNet w16 L5", {"base_width": 16, "levels": 5}),
    ("SegGuidedNet w16 L5 max 128", {"base_width": 16, "levels": 5, "max_width": 128}),
    ("SegGuidedNet w16 L4", {"base_width": 16, "levels": 4}),
)
SEGRESNETS: tuple[int, ...] = (16, 32)
BASELINE = "SegResNet init 16"


def specs(args) -> list[dict]:
    common = {"size": 128, "batch": 1, "amp": False, "device": "cpu", "warmup": 1, "steps": args.steps}
    rows = [{"name": name, "model": "segguided", "fields": fields, **common} for name, fields in CANDIDATES]
    rows += [{"name": f"SegResNet init {f}", "model": "segresnet", "init_filters": f, **common} for f in SEGRESNETS]
    return rows


def write(results: dict, info: dict, args) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "full_size_default.json").write_text(json.dumps({"machine": info, "results": results}, indent=2))
    base = results[BASELINE]
    lines = [
        "# Full-size default: SegGuidedNet candidates vs MONAI SegResNet at 128³",
        "",
        f"Machine: {info['cpu']}, {args.threads} threads, torch {info['torch']}, MONAI {info['monai']}. "
        f"Training step: batch 1×4×128³, attention-supervision loss (SegGuidedNet) or region loss "
        f"(SegResNet), SGD; median of {args.steps} steps after a warm-up. Memory: the process's peak RSS.",
        "",
        "| network | parameters | update (float32) | step (s) | step / SegResNet-16 | peak RSS (MiB) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, result in results.items():
        lines.append(
            f"| {name} | {result['parameters'] / 1e6:.2f} M | {result['parameters'] * 4 / 1e6:.0f} MB | "
            f"{result['step_s']:.2f} | {result['step_s'] / base['step_s']:.2f}× | {result['peak_rss_mib']:.0f} |"
        )
    (RESULTS / "full_size_default.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    results = {}
    for spec in specs(args):
        results[spec["name"]] = run_isolated(spec, args.threads, EXACT_MEMORY_ENV)
        print(f"{spec['name']}: {results[spec['name']]['parameters'] / 1e6:.2f} M, "
              f"{results[spec['name']]['step_s']:.2f} s/step, {results[spec['name']]['peak_rss_mib']:.0f} MiB", flush=True)
    write(results, machine(), args)


if __name__ == "__main__":
    main()
