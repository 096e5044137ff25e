"""Measure the README's main job: wall time, accuracy, memory, and where a round's time goes.

Runs the default ``flwr run .`` configuration (3 simulated hospitals, synthetic data
generated from scratch) on a private local SuperLink, samples the resident memory of
the whole process group (SuperLink, ServerApp, simulation runtime, Ray, clients) once a
second, and splits every round into client training, Flower overhead, aggregation,
central validation and federated evaluation from the run's own ``metrics.json``.

Results go to ``benchmarks/results/main_job.md`` and ``.json``. Run it on a quiet
machine: the timings are only as good as the CPU is idle.

    python benchmarks/main_job_benchmark.py [--run-config "k=v ..."]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import threading
import time
from pathlib import Path

from segguided_tools.local_simulation import (
    PROJECT_ROOT,
    LocalFederation,
    open_local_federation,
)

RESULTS = PROJECT_ROOT / "benchmarks" / "results"
TIMING_PARTS = (
    "client-training-seconds-max",
    "flower-overhead-seconds",
    "aggregation-seconds",
    "central-validation-seconds",
    "federated-evaluation-seconds",
    "round-seconds",
)


def session_rss_bytes(session: int) -> int:
    """Resident memory of every process in session ``session``, read from /proc."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) != session:  # field 6 of /proc/PID/stat: session id
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except (OSError, IndexError, ValueError):
            continue
    return total


class MemorySampler(threading.Thread):
    """Samples the total RSS of the SuperLink's and the simulation runtime's sessions (Ray
    and the clients run in the latter) until stopped; keeps the peak."""

    def __init__(self, federation: LocalFederation) -> None:
        super().__init__(daemon=True)
        self.federation = federation
        self.peak = 0
        self.stopped = threading.Event()

    def _sessions(self) -> set[int]:
        """The SuperLink's session and the simulation runtime's (it starts its own, with Ray)."""
        sessions = set()
        for pid in self.federation.process_ids():
            try:
                sessions.add(os.getsid(pid))
            except ProcessLookupError:
                continue
        return sessions

    def run(self) -> None:
        while not self.stopped.is_set():
            total = sum(session_rss_bytes(session) for session in self._sessions())
            self.peak = max(self.peak, total)
            self.stopped.wait(1.0)


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-config", default="", help="extra run-config overrides")
    parser.add_argument("--keep-run", type=Path, default=None, metavar="DIR", help="copy the run folder (checkpoints) here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="segguided-main-job-") as scratch:
        federation = open_local_federation(Path(scratch))
        output = Path(scratch) / "runs"
        run_config = f'output-dir="{output}" run-name="benchmark" {args.run_config}'.strip()
        sampler = MemorySampler(federation)
        sampler.start()
        started = time.perf_counter()
        try:
            outcome = federation.run(run_config, supernodes=3, timeout=3600)
        finally:
            wall = time.perf_counter() - started
            sampler.stopped.set()
            sampler.join()
            federation.stop()
        rounds = json.loads((output / "benchmark" / "metrics.json").read_text())["rounds"]
        config = json.loads((output / "benchmark" / "config.json").read_text())
        if args.keep_run is not None:
            shutil.copytree(output / "benchmark", args.keep_run, dirs_exist_ok=True)

    trained = [r for r in rounds if r["round"] > 0]
    final = rounds[-1]["central"]
    result = {
        "machine": f"{cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        "run-status": outcome.status,
        "run-config-overrides": args.run_config,
        "num-server-rounds": config["num-server-rounds"],
        "secure-aggregation": config.get("secure-aggregation"),
        "wall-seconds-including-startup-and-data": wall,
        "peak-rss-bytes-all-processes": sampler.peak,
        "central-dice-by-round": [round(r["central"].get("dice-mean", float("nan")), 4) for r in rounds],
        "final-central": final,
        "round-timing-mean": {
            part: sum(r["timing"].get(part, 0.0) for r in trained) / max(len(trained), 1) for part in TIMING_PARTS
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "main_job.json").write_text(json.dumps(result, indent=2))
    timing = result["round-timing-mean"]
    lines = [
        "# Main job (`flwr run .` defaults) on this machine",
        "",
        f"Machine: {result['machine']}. Run status: `{outcome.status}`.",
        f"Secure aggregation: {result['secure-aggregation']}. Rounds: {result['num-server-rounds']}.",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| wall time incl. SuperLink start, data generation, all rounds | {wall:.0f} s ({wall / 60:.1f} min) |",
        f"| peak memory, all processes (SuperLink, ServerApp, Ray, clients) | {sampler.peak / 2**30:.2f} GiB |",
        f"| final central Dice ET / TC / WT / mean | {final['dice-et']:.3f} / {final['dice-tc']:.3f} / "
        f"{final['dice-wt']:.3f} / {final['dice-mean']:.3f} |",
        f"| final central HD95 mean | {final['hd95-mean']:.2f} mm |",
        f"| central mean Dice by round (0 = initial) | {', '.join(f'{d:.3f}' for d in result['central-dice-by-round'])} |",
        "",
        "## Where a round's time goes (mean over rounds)",
        "",
        "| part | seconds | share of round |",
        "|---|---:|---:|",
    ]
    for part in TIMING_PARTS[:-1]:
        lines.append(f"| {part} | {timing[part]:.1f} | {timing[part] / timing['round-seconds']:.0%} |")
    lines.append(f"| **round total** | {timing['round-seconds']:.1f} | 100% |")
    lines += [
        "",
        "client-training is the slowest client's optimiser steps; Flower overhead is the fit phase",
        "minus the slowest client's whole fit (scheduling on Ray, message passing, client start-up",
        "and the wait for a free CPU when clients outnumber cores); central validation is the",
        "server's sliding-window inference and metrics; federated evaluation is the sites' own.",
    ]
    if result["secure-aggregation"]:
        lines += [
            "",
            "With secure aggregation (the default) the server never sees a client's training time,",
            "so client-training reads 0 and the clients' local training is inside 'flower-overhead'.",
        ]
    (RESULTS / "main_job.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
