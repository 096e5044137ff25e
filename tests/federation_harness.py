"""A private Flower home and local SuperLink for tests that run real federations.

Each test session gets its own ``FLWR_HOME``, its own SuperLink ports and its own data
cache, so a SuperLink that a developer left running (possibly for another checkout) is
never used, and the one started here is stopped afterwards.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from server.run_status import RunOutcome, start_run, wait_for_run

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tiny_settings(output_dir: Path, **overrides: object) -> dict[str, object]:
    """Run-config overrides small enough for a 2-core CPU: 32³ volumes, width 4, a few steps."""
    settings: dict[str, object] = {
        "num-server-rounds": 2,
        "local-steps": 3,
        "batch-size": 1,
        "patch-size": "32",
        "model-base-width": 4,
        "model-levels": 3,
        "synthetic-sites": 3,
        "synthetic-cases-per-site": 4,
        "synthetic-validation-cases": 2,
        "synthetic-size": 32,
        "validation-fraction": 0.25,
        "output-dir": str(output_dir),
    }
    settings.update(overrides)
    return settings


def tiny_run_config(output_dir: Path, **overrides: object) -> str:
    """``tiny_settings`` as a ``--run-config`` argument."""
    settings = tiny_settings(output_dir, **overrides)
    return " ".join(f"{key}={_toml(value)}" for key, value in settings.items())


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


@dataclass
class LocalFederation:
    """Runs the project's app on a private local SuperLink in simulation mode."""

    home: Path
    cache: Path
    env: dict[str, str]
    port: int

    def run(self, run_config: str, supernodes: int = 3, timeout: float = 900) -> RunOutcome:
        run_id = self.start(run_config, supernodes)
        return wait_for_run(run_id, PROJECT_ROOT, self.env, timeout=timeout)

    def start(self, run_config: str, supernodes: int = 3) -> str:
        federation = f"num-supernodes={supernodes} client-resources-num-cpus=1"
        return start_run(PROJECT_ROOT, run_config, federation, self.env)

    def stop(self) -> None:
        """Stop the SuperLink this harness started, and whatever it spawned."""
        found = subprocess.run(
            ["pgrep", "-f", f"flower-superlink.*--port {self.port}"], capture_output=True, text=True
        )
        groups = set()
        for pid in (int(p) for p in found.stdout.split()):
            try:
                group = os.getpgid(pid)
            except ProcessLookupError:
                continue
            if group != os.getpgrp():  # never our own group
                groups.add(group)
        # The SuperLink's simulation runtime and Ray live in its process group.
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for group in groups:
                try:
                    os.killpg(group, sig)
                except ProcessLookupError:
                    pass
            time.sleep(2)


def open_local_federation(root: Path) -> LocalFederation:
    home, cache = root / "flwr-home", root / "cache"
    home.mkdir(parents=True, exist_ok=True)
    port, control_port = free_port(), free_port()
    env = {
        **os.environ,
        "FLWR_HOME": str(home),
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(port),
        "FLWR_LOCAL_CONTROL_API_PORT": str(control_port),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "SEGGUIDED_CACHE": str(cache),
        "RAY_DEDUP_LOGS": "0",
    }
    return LocalFederation(home, cache, env, port)
