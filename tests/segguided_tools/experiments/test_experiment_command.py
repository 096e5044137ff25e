"""``segguided experiment experiments/tiny.toml`` end to end, in a real process, and once more to resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from segguided_tools.experiments.grid import run_config_keys
from segguided_tools.local_simulation import PROJECT_ROOT

# tiny.toml varies secure aggregation; that run-config key arrives with the secure-aggregation change.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        "secure-aggregation" not in run_config_keys(), reason="run-config key secure-aggregation not in segguided_federation/run_config.py yet"
    ),
]

EXPERIMENTS = (
    "fedavg-generated-att-on-secagg-off-seed0",
    "fedavg-generated-att-off-secagg-off-seed0",
    "centralised-generated-att-on-seed0",
    "local-site01-generated-att-on-seed0",
    "local-site02-generated-att-on-seed0",
)


def _experiment(results, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "segguided_tools.cli", "experiment", str(PROJECT_ROOT / "experiments" / "tiny.toml"),
               "--results", str(results), *extra]
    env = {**os.environ, "SEGGUIDED_CACHE": str(results.parent / "cache")}
    return subprocess.run(command, cwd=results.parent, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    results = tmp_path_factory.mktemp("experiment") / "tiny"
    completed = _experiment(results)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return results, completed.stdout


def test_every_experiment_and_baseline_has_results(first_run):
    results, stdout = first_run
    assert "5 experiment(s) run, 0 finished earlier, 0 failed" in stdout
    for name in EXPERIMENTS:
        result = json.loads((results / "experiments" / name / "result.json").read_text())
        assert [r["round"] for r in result["rounds"]] == [0, 1]
        assert 0.0 <= result["rounds"][-1]["central"]["dice-mean"] <= 1.0
        assert sorted(result["cross-site"]["sites"]) == ["site-01", "site-02"]
        assert result["cross-site"]["worst-site"] in ("site-01", "site-02")
        assert (results / "runs" / name / "final.pt").exists()
    federated = json.loads((results / "experiments" / EXPERIMENTS[0] / "result.json").read_text())
    assert federated["factors"]["attention-supervision"] is True
    assert 0.0 < federated["convergence"]["score"] <= 1.0
    assert federated["rounds"][-1]["simulated-seconds"] > 0 and "projected-score" in federated["rounds"][-1]
    # the federated run and its baselines take the same total number of optimiser steps
    central = json.loads((results / "runs" / EXPERIMENTS[2] / "metrics.json").read_text())["rounds"]
    assert [r["site-training"][EXPERIMENTS[2]]["steps"] for r in central[1:]] == [4]  # 2 sites × 2 steps


def test_progress_names_experiment_round_and_time_left(first_run):
    _, stdout = first_run
    assert f"[1/5] {EXPERIMENTS[0]}: round 1/1" in stdout
    assert "left" in stdout


def test_report_is_written(first_run):
    results, _ = first_run
    report = (results / "report.md").read_text()
    assert all(name in report for name in EXPERIMENTS)
    assert (results / "dice-per-round.png").stat().st_size > 0
    assert (results / ".gitignore").read_text().split() == ["data/", "runs/", ".flower/"]


def test_second_invocation_reruns_nothing(first_run):
    results, _ = first_run
    stamps = {name: (results / "experiments" / name / "result.json").stat().st_mtime_ns for name in EXPERIMENTS}
    completed = _experiment(results)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "0 experiment(s) run, 5 finished earlier, 0 failed" in completed.stdout
    assert completed.stdout.count("finished earlier, not rerun") == 5
    assert stamps == {name: (results / "experiments" / name / "result.json").stat().st_mtime_ns for name in EXPERIMENTS}
    assert ": started" not in completed.stdout  # no simulation and no baseline was started
