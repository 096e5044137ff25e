"""A clean checkout of this working tree, as a hospital or the coordinator would have of a release."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from federation_harness import PROJECT_ROOT


def copy_release(destination: Path) -> Path:
    """Copy the tracked files and the untracked ones git does not ignore (a ``git clone`` of this tree)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=PROJECT_ROOT,
        capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (PROJECT_ROOT / name).is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT_ROOT / name, target)
    return destination
