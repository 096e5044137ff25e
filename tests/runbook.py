"""The operator's runbook (deploy/README.md) as data: its variables and its numbered steps.

Every fenced ``bash`` block of the runbook is either a ``# variables`` block (``export``
lines the test replaces with its own values) or a ``# step: NAME`` block, run verbatim by
the deployment test with ``bash -c``. Blocks fenced ``shell`` need Docker, systemd or a
GPU and are only checked statically.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

RUNBOOK = Path(__file__).resolve().parents[1] / "deploy" / "README.md"

# Runbook steps the deployment test runs (tests/deploy/test_hospital_deployment.py checks it ran each).
STEPS_RUN_BY_THE_DEPLOYMENT_TEST = frozenset({
    # coordinator
    "certs", "connection", "superlink", "serverapp-launcher", "fleet-proxy", "check-public-port", "register",
    "nodes", "submit", "follow", "server-metrics", "prometheus", "prometheus-series", "collect",
    # hospital
    "supernode-key", "qa", "approve", "supernode", "app-launcher", "client-metrics", "read-client-metrics",
})

_FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass
class Runbook:
    """Steps by name (in order), exported variables with their example values, and the ``shell`` commands."""

    steps: dict[str, str] = field(default_factory=dict)
    variables: dict[str, str] = field(default_factory=dict)
    shell_commands: list[str] = field(default_factory=list)
    unlabelled: list[str] = field(default_factory=list)


def _blocks(text: str) -> list[tuple[str, list[str]]]:
    blocks, language, lines = [], None, []
    for line in text.splitlines():
        match = _FENCE.match(line)
        if match and language is None:
            language, lines = match.group(1), []
        elif line.strip() == "```" and language is not None:
            blocks.append((language, lines))
            language = None
        elif language is not None:
            lines.append(line)
    return blocks


def _commands(lines: list[str]) -> list[str]:
    """Lines joined across backslash continuations, comments and blanks dropped."""
    commands, current = [], ""
    for line in lines:
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip("\\").rstrip() + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            commands.append(current.strip())
            current = ""
    return commands


def read_runbook(path: Path = RUNBOOK) -> Runbook:
    book = Runbook()
    for language, lines in _blocks(path.read_text()):
        if language == "shell":
            book.shell_commands += _commands(lines)
        elif language == "bash":
            head = lines[0].strip() if lines else ""
            if head == "# variables":
                for command in _commands(lines):
                    words = shlex.split(command, comments=True)
                    if words[:1] != ["export"]:
                        book.unlabelled.append(command)
                    book.variables.update(word.split("=", 1) for word in words[1:])
            elif head.startswith("# step:"):
                name = head.removeprefix("# step:").strip()
                book.steps[name] = "\n".join(lines[1:]).strip() + "\n"
            else:
                book.unlabelled += _commands(lines)
    return book


def expand(text: str, values: dict[str, str]) -> str:
    """``$NAME`` and ``${NAME}`` replaced from ``values`` (the runbook's own examples by default)."""
    return re.sub(r"\$\{?(\w+)\}?", lambda match: values.get(match.group(1), match.group(0)), text)
