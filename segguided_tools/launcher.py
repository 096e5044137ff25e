"""Start a Flower run and wait for its real outcome.

``flwr run`` exits 0 even when the run fails, so scripts and tests that need to know go
through here: the run config is checked here first (Flower's SuperLink refuses an unknown
key with a bare "Invalid run configuration."; this names the key and its nearest known
spelling), the run is started with ``flwr run --format json``, then ``flwr list`` is
polled until the run is finished, and a run that did not complete raises ``RunFailed``
with its status details and the tail of its logs. Interrupted (Ctrl-C, SIGTERM), it says
which run goes on without it and how to follow or stop it.

Command line::

    python -m segguided_tools.launcher [APP_DIR] [--run-config "k=v ..."] [--federation-config "k=v ..."]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from flwr.common.config import flatten_dict, get_project_config, parse_config_args

from segguided_federation.config_model import known_keys, nearest_key
from segguided_federation.run_config import RunConfig, RunConfigError

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


def check_run_config(app_dir: Path, run_config: str | None) -> RunConfig:
    """Validate ``--run-config`` overrides against the app's defaults before submitting them.

    Args:
        app_dir: the Flower app (its ``pyproject.toml`` holds the defaults).
        run_config: the ``--run-config`` string (``"key=value ..."``), or ``None``.

    Returns:
        The run configuration the ServerApp would see.

    Raises:
        RunFailed: an unknown key (named, with the nearest known key), or a value the
            run configuration refuses (named by ``RunConfig``).
    """
    overrides = parse_config_args([run_config] if run_config else None)
    known = known_keys(RunConfig)
    for key in overrides:
        if key not in known:
            suggestion = nearest_key(key, known)
            hint = f"; did you mean {suggestion!r}?" if suggestion else f"; known keys: {', '.join(known)}"
            raise RunFailed(f"--run-config: unknown key {key!r}{hint}")
    defaults = flatten_dict(get_project_config(app_dir)["tool"]["flwr"]["app"].get("config", {}))
    try:
        return RunConfig.from_flower({**defaults, **overrides})
    except RunConfigError as error:
        raise RunFailed(f"--run-config: {error}") from None


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


def _run_row(run_id: str, app_dir: Path, env: Mapping[str, str] | None) -> dict:
    payload = _json_payload(_flwr(["list", "--run-id", run_id, "--format", "json"], app_dir, env))
    runs = payload.get("runs", [])
    if not runs:
        raise RunFailed(f"run {run_id} is unknown to the SuperLink")
    return dict(runs[0])


def run_status(run_id: str, app_dir: Path, env: Mapping[str, str] | None = None) -> str:
    """The run's status text, e.g. ``running`` or ``finished:completed``."""
    return str(_run_row(run_id, app_dir, env)["status"])


def run_status_details(run_id: str, app_dir: Path, env: Mapping[str, str] | None = None) -> str:
    """What the SuperLink says about the run's outcome (the ServerApp's exception, for a failed run)."""
    return str(_run_row(run_id, app_dir, env).get("status-details") or "")


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
        details = run_status_details(run_id, app_dir, env)
        tail = run_logs(run_id, app_dir, env)[-4000:]
        raise RunFailed(f"run {run_id} ended '{status}'" + (f": {details}" if details else "") + f". Last logs:\n{tail}")
    return RunOutcome(run_id, status, seconds)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m segguided_tools.launcher", description=__doc__.split("\n")[0])
    parser.add_argument("app_dir", nargs="?", default=".", type=Path)
    parser.add_argument("--run-config", default=None)
    parser.add_argument("--federation-config", default=None)
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args(argv)
    env = {**os.environ, "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
    app_dir = args.app_dir.resolve()
    signal.signal(signal.SIGTERM, _interrupt)
    run_id = None
    try:
        check_run_config(app_dir, args.run_config)
        run_id = start_run(app_dir, args.run_config, args.federation_config, env)
        print(f"run {run_id} started; waiting for it to finish", flush=True)
        outcome = wait_for_run(run_id, app_dir, env, timeout=args.timeout)
    except RunFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if run_id is not None:
            print(
                f"\nstopped waiting; run {run_id} goes on. Follow it with `flwr log {run_id} --stream`, check it "
                f"with `flwr list --run-id {run_id}`, stop it with `flwr stop {run_id}`.",
                file=sys.stderr, flush=True,
            )
        return 130
    print(f"run {outcome.run_id} {outcome.status} in {outcome.seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
