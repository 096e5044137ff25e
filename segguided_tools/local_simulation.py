"""Run the app on a private local SuperLink: simulations that scripts can start and wait for.

``flwr run .`` uses one shared local SuperLink under ``~/.flwr``; a script, a benchmark or a
test that must not touch it (or be touched by a SuperLink started from another checkout)
opens its own: a private ``FLWR_HOME``, free ports and its own synthetic-data cache. The
SuperLink and everything it spawned (the simulation runtime, Ray) are stopped with it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segguided_tools.launcher import RunOutcome, start_run, wait_for_run

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_config_argument(settings: dict[str, Any]) -> str:
    """Run-config overrides as one ``--run-config`` string (TOML values)."""

    def value(item: Any) -> str:
        if isinstance(item, bool):
            return "true" if item else "false"
        if isinstance(item, str):
            return json.dumps(item)
        return repr(item)

    return " ".join(f"{key}={value(item)}" for key, item in settings.items())


@dataclass
class LocalFederation:
    """The project's app on a private local SuperLink in simulation mode."""

    home: Path
    cache: Path
    env: dict[str, str]
    port: int

    def run(
        self, run_config: str, supernodes: int = 3, timeout: float = 900, app_dir: Path = PROJECT_ROOT,
        gpus_per_client: float = 0.0,
    ) -> RunOutcome:
        """Start a run of the app in ``app_dir`` and wait for it; ``RunFailed`` unless it completed."""
        run_id = self.start(run_config, supernodes, app_dir, gpus_per_client)
        return wait_for_run(run_id, app_dir, self.env, timeout=timeout)

    def start(
        self, run_config: str, supernodes: int = 3, app_dir: Path = PROJECT_ROOT, gpus_per_client: float = 0.0
    ) -> str:
        """Submit a run of the app in ``app_dir`` (this project by default); return its id.

        Each simulated client gets one CPU and ``gpus_per_client`` of a GPU (e.g. 0.33:
        three clients share one GPU).
        """
        federation = f"num-supernodes={supernodes} client-resources-num-cpus=1"
        if gpus_per_client:
            federation += f" client-resources-num-gpus={gpus_per_client}"
        return start_run(app_dir, run_config, federation, self.env)

    def process_ids(self) -> set[int]:
        """The SuperLink this harness started and its simulation runtime (Ray and the
        clients run inside the latter), found by this SuperLink's port on their command lines."""
        pids = set()
        for pattern in (f"flower-superlink.*--port {self.port}", f"127.0.0.1:{self.port}"):
            found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
            pids.update(int(p) for p in found.stdout.split())
        return pids

    def stop(self) -> None:
        """Stop the SuperLink this harness started, and whatever it spawned.

        The SuperLink runs in its own process group, and its simulation runtime starts
        another one: both groups are ended.
        """
        groups = set()
        for pid in self.process_ids():
            try:
                group = os.getpgid(pid)
            except ProcessLookupError:
                continue
            if group != os.getpgrp():  # never our own group
                groups.add(group)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for group in groups:
                try:
                    os.killpg(group, sig)
                except ProcessLookupError:
                    pass
            time.sleep(2)


def open_local_federation(root: Path) -> LocalFederation:
    """Prepare (not yet start) a private SuperLink whose state lives under ``root``."""
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
