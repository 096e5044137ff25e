"""The GPU checks in one prepared run: model speed and memory at full size, and a federation sharing one GPU.

For a machine with a CUDA GPU (none was lent to the sessions that wrote this; run it on
the next one, about 10 minutes on an H200):

1. ``model_benchmark.py --cuda-only``: a 2×4×128³ mixed-precision training step of
   ``SegGuidedNet()`` with and without gates (paired, alternating steps) and of MONAI
   SegResNet with matched parameters; a whole 240×240×155 volume's inference time and
   peak GPU memory. Results: ``benchmarks/results/model_benchmark_gpu_machine.{md,json}``.
2. A 2-round simulation of 3 hospitals sharing the GPU (0.33 each) on full-size synthetic
   cases (4 per site, 2 server validation cases) with the full-size default network,
   128³ patches, batch 2, AMP, one local epoch: round times and their split from
   ``metrics.json``, and the GPU's peak memory sampled with ``nvidia-smi`` once a second.
   Results: ``benchmarks/results/gpu_federation.{md,json}``.

    python benchmarks/gpu_benchmark.py [--work DIR] [--skip-model]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from full_size_round_benchmark import generate, split  # noqa: E402

from segguided_tools.local_simulation import (  # noqa: E402
    PROJECT_ROOT,
    open_local_federation,
    run_config_argument,
)

RESULTS = PROJECT_ROOT / "benchmarks" / "results"


def gpu_memory_mib() -> float:
    """Memory in use on GPU 0 right now, by every process (``nvidia-smi``)."""
    output = subprocess.run(
        ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "--id=0"],
        capture_output=True, text=True, check=True,
    ).stdout
    return float(output.strip().splitlines()[0])


def federation_on_one_gpu(work: Path) -> dict:
    sites, validation, _ = generate(work, cases=4, seed=4, sites=3)
    local = open_local_federation(work / "federation")
    settings = {
        "data-dir": str(sites), "server-validation-dir": str(validation), "num-server-rounds": 2,
        "local-epochs": 1, "batch-size": 2, "patch-size": "128", "model-base-width": 16, "model-levels": 4,
        "device": "cuda", "mixed-precision": "on", "secure-aggregation": False,
        "output-dir": str(work / "runs"), "run-name": "gpu", "overwrite": True,
    }
    peak, stop = [0.0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], gpu_memory_mib())
            time.sleep(1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        outcome = local.run(run_config_argument(settings), supernodes=3, timeout=3600, gpus_per_client=0.33)
    finally:
        stop.set()
        local.stop()
    records = json.loads((work / "runs" / "gpu" / "metrics.json").read_text())["rounds"]
    return {"seconds": outcome.seconds, "peak-gpu-memory-mib": peak[0], "gpu": torch.cuda.get_device_name(0),
            "rounds": [split(record) for record in records if record["round"] > 0],
            "final-central": records[-1]["central"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--skip-model", action="store_true", help="skip model_benchmark.py --cuda-only")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: run this on a GPU machine")
    if not args.skip_model:
        subprocess.run([sys.executable, str(Path(__file__).parent / "model_benchmark.py"), "--cuda-only",
                        "--name", "model_benchmark_gpu_machine"], check=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu-benchmark-"))
    result = federation_on_one_gpu(work)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "gpu_federation.json").write_text(json.dumps(result, indent=2))
    lines = [f"# 3 hospitals sharing one {result['gpu']}: 2 rounds at full size", "",
             f"Whole run {result['seconds']:.0f} s; peak GPU memory {result['peak-gpu-memory-mib']:.0f} MiB.", "",
             "| round | round (s) | training compute (s) | outside training | central validation (s per case) |",
             "| --- | --- | --- | --- | --- |"]
    for r in result["rounds"]:
        lines.append(f"| {r['round']} | {r['round-seconds']:.0f} | {r['training-compute-seconds']:.0f} | "
                     f"{100 * r['outside-training-fraction']:.0f} % | {r['central-validation-seconds-per-case']:.1f} |")
    (RESULTS / "gpu_federation.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
