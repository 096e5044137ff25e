"""Start a Flower run and wait for its real outcome.

``flwr run`` exits 0 even when the run fails, so scripts and tests that need to know go
through here: the run is started with ``flwr run --format json``, then ``flwr list`` is
polled until the run is finished, and a run that did not complete raises ``RunFailed``
with the tail of its logs.

Command line::

    python -m segguided_tools.launcher [APP_DIR] [--run-config "k=v ..."] [--federation-config "k=v ..."]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

TERMINAL_PREFIX = "finished"
COMPLETED = "finished:completed"


class RunFailed(RuntimeError):
    """The run ended in a state other than ``finished:completed``, or did not end in time."""


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    status: str
    seconds: float


def _flwr(args: Sequence[str], cwd: Path, env: Mapping[str, str] | None, timeout: float = 120) -> str:
    completed = subprocess.run(
        ["flwr", *args], cwd=cwd, env=dict(env) if env is not None else None,
        capture_output=True, text=True, timeout=timeout,
    )
    if completed.returncode != 0:
        raise RunFailed(f"`flwr {' '.join(args)}` exited {completed.returncode}: {completed.stderr or completed.stdout}")
    return completed.stdout


def _json_payload(output: str) -> dict:
    start = output.find("{")
    if start < 0:
        raise RunFailed(f"expected JSON from flwr, got: {output[:500]}")
    return json.loads(output[start:])


def start_run(
    app_dir: Path,
    run_config: str | None = None,
    federation_config: str | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """Submit the app in ``app_dir`` to the configured SuperLink; return the run id."""
    args = ["run", str(app_dir), "--format", "json"]
    if run_config:
        args += ["--run-config", run_config]
    if federation_config:
        args += ["--federation-config", federation_config]
    payload = _json_payload(_flwr(args, app_dir, env))
    if not payload.get("success") or not payload.get("run-id"):
        raise RunFailed(f"the SuperLink did not start the run: {payload}")
    return str(payload["run-id"])


def run_status(run_id: str, app_dir: Path, env: Mapping[str, str] | None = None) -> str:
    """The run's status text, e.g. ``running`` or ``finished:completed``."""
    payload = _json_payload(_flwr(["list", "--run-id", run_id, "--format", "json"], app_dir, env))
    runs = payload.get("runs", [])
    if not runs:
        raise RunFailed(f"run {run_id} is unknown to the SuperLink")
    return str(runs[0]["status"])


def run_logs(run_id: str, app_dir: Path, env: Mapping[str, str] | None = None) -> str:
    """Everything the run has logged so far (best effort)."""
    try:
        completed = subprocess.run(
            ["flwr", "log", run_id, "--show"], cwd=app_dir, env=dict(env) if env is not None else None,
            capture_output=True, text=True, timeout=60,
        )
        return completed.stdout + completed.stderr
    except (subprocess.TimeoutExpired, OSError) as error:
        return f"(logs unavailable: {error})"


def wait_for_run(
    run_id: str,
    app_dir: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 1800,
    poll_seconds: float = 2.0,
) -> RunOutcome:
    """Block until the run is finished; raise ``RunFailed`` unless it completed."""
    started = time.monotonic()
    while True:
        status = run_status(run_id, app_dir, env)
        if status.startswith(TERMINAL_PREFIX):
            break
        if time.monotonic() - started > timeout:
            raise RunFailed(f"run {run_id} still '{status}' after {timeout:.0f} s")
        time.sleep(poll_seconds)
    seconds = time.monotonic() - started
    if status != COMPLETED:
        tail = run_logs(run_id, app_dir, env)[-4000:]
        raise RunFailed(f"run {run_id} ended '{status}'. Last logs:\n{tail}")
    return RunOutcome(run_id, status, seconds)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m segguided_tools.launcher", description=__doc__.split("\n")[0])
    parser.add_argument("app_dir", nargs="?", default=".", type=Path)
    parser.add_argument("--run-config", default=None)
    parser.add_argument("--federation-config", default=None)
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args(argv)
    env = {**os.environ, "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
    try:
        run_id = start_run(args.app_dir.resolve(), args.run_config, args.federation_config, env)
        print(f"run {run_id} started; waiting for it to finish", flush=True)
        outcome = wait_for_run(run_id, args.app_dir.resolve(), env, timeout=args.timeout)
    except RunFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"run {outcome.run_id} {outcome.status} in {outcome.seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
