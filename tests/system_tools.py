"""Operating-system programs the deployment tests need (nginx, Prometheus, Docker), installed on demand.

A CI machine like this project's is a clean Debian with root: a missing program is
installed from Debian's own packages with ``apt-get`` (seconds), so the tests run there
without a setup step of their own. Anywhere else (no root, no ``apt-get``, no network) the
test is skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Mapping

import pytest

APT_TIMEOUT = 600


def missing(commands: Mapping[str, str]) -> dict[str, str]:
    """``{command: Debian package}`` of the commands not on ``PATH``."""
    return {command: package for command, package in commands.items() if shutil.which(command) is None}


def require_commands(commands: Mapping[str, str]) -> None:
    """Skip the test unless every command exists, installing missing Debian packages first when root.

    Args:
        commands: ``{command: the Debian package that provides it}``.
    """
    absent = missing(commands)
    if not absent:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(f"needs {', '.join(sorted(absent))} (Debian packages {', '.join(sorted(set(absent.values())))}); "
                    "not root or no apt-get to install them")
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    packages = sorted(set(absent.values()))
    steps = [["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages]]
    for step in steps:
        done = subprocess.run(step, env=environment, capture_output=True, text=True, timeout=APT_TIMEOUT)
        if done.returncode != 0:
            pytest.skip(f"cannot install {', '.join(packages)} with apt-get: {done.stderr.strip()[-500:]}")
    still = missing(commands)
    if still:
        pytest.skip(f"apt-get installed {', '.join(packages)} but {', '.join(still)} is still missing")
