"""The layers of the architecture hold: import-linter's contracts in ``pyproject.toml`` are kept."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def test_every_import_contract_is_kept():
    completed = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports())"],
        cwd=PROJECT,
        env={**os.environ, "PYTHONPATH": str(PROJECT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-2000:]
    assert "2 kept, 0 broken" in completed.stdout


def test_the_cli_registers_every_sub_command_module_explicitly():
    from segguided_tools.cli import main

    commands = main.build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(commands) == {
        "segment", "evaluate", "qa", "synth", "certs", "supernode-key", "app-digest", "experiment"
    }
