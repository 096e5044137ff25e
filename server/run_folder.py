"""One folder per run: resolved config, round checkpoints, best/final models and history.

Layout of ``<output-dir>/<run-name>/``::

    config.json          the resolved run configuration
    round-0003.pt        global model after round 3 (the newest ``keep-round-checkpoints``)
    best.pt              the round with the highest central mean Dice
    final.pt             the model after the last round
    metrics.json/.csv    the history (``server.history``)

Every file is written atomically, so a server killed at any moment leaves a folder that
``resume=true`` continues from its newest round checkpoint.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from segguided_federation.run_config import RunConfig
from segguided_model.atomic_write import write_text_atomically
from segguided_model.checkpoint import load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)

ROUND_CHECKPOINT = re.compile(r"^round-(\d{4,})\.pt$")
SETTINGS_FIXED_ON_RESUME = (
    "model-base-width", "model-levels", "model-encoder-blocks", "model-skip-merge", "deep-supervision", "strategy", "seed",
    # The privacy budget replays the finished rounds with the current settings: they must be the ones spent.
    "differential-privacy", "dp-noise-multiplier", "dp-clipping-norm", "dp-delta",
    "fraction-fit", "min-fit-clients", "min-available-clients",
)


class RunFolderError(RuntimeError):
    """The run folder cannot be created or resumed as asked."""


@dataclass(frozen=True)
class ResumePoint:
    """Where an interrupted run stands: its last finished round and that round's checkpoint."""

    round: int
    checkpoint: Path
    extra: dict[str, Any]


class RunFolder:
    """The output folder of one run."""

    def __init__(self, path: Path, keep_round_checkpoints: int) -> None:
        self.path = path
        self.keep_round_checkpoints = keep_round_checkpoints

    @classmethod
    def open(cls, config: RunConfig, run_id: int | str) -> "RunFolder":
        """Create a new run folder, or find the one to resume.

        Raises:
            RunFolderError: resuming with no run to resume, or starting a new run in a
                folder that already holds checkpoints.
        """
        output = Path(config.output_dir).expanduser().resolve()
        if config.resume:
            path = output / config.run_name if config.run_name else cls._latest_run(output)
            if not (path / "config.json").exists():
                raise RunFolderError(f"resume=true but {path} holds no run to resume (no config.json)")
            folder = cls(path, config.keep_round_checkpoints)
            folder._check_resumable_with(config)
            return folder
        name = config.run_name or f"{time.strftime('%Y%m%d-%H%M%S')}-run{run_id}"
        path = output / name
        if path.exists() and any(path.glob("*.pt")):
            raise RunFolderError(
                f"run folder {path} already holds checkpoints; pass resume=true to continue it "
                "or choose another run-name"
            )
        path.mkdir(parents=True, exist_ok=True)
        return cls(path, config.keep_round_checkpoints)

    @staticmethod
    def _latest_run(output: Path) -> Path:
        runs = sorted((p for p in output.glob("*/config.json")), key=lambda p: p.stat().st_mtime)
        if not runs:
            raise RunFolderError(f"resume=true but {output} holds no runs")
        return runs[-1].parent

    def _check_resumable_with(self, config: RunConfig) -> None:
        stored = json.loads((self.path / "config.json").read_text())
        current = config.to_flower()
        changed = [key for key in SETTINGS_FIXED_ON_RESUME if stored.get(key) != current.get(key)]
        if changed:
            details = ", ".join(f"{k}: {stored.get(k)!r} -> {current.get(k)!r}" for k in changed)
            raise RunFolderError(f"cannot resume {self.path} with different settings ({details})")

    def write_config(self, config: RunConfig) -> None:
        write_text_atomically(self.path / "config.json", json.dumps(config.to_flower(), indent=2, sort_keys=True))

    def round_checkpoint(self, number: int) -> Path:
        return self.path / f"round-{number:04d}.pt"

    def resume_point(self) -> ResumePoint | None:
        """The newest round checkpoint that loads, or ``None`` for a fresh run."""
        candidates = sorted(
            (int(m.group(1)), p) for p in self.path.glob("round-*.pt") if (m := ROUND_CHECKPOINT.match(p.name))
        )
        for number, path in reversed(candidates):
            try:
                loaded = load_checkpoint(path)
            except ValueError as error:  # a damaged file must not stop the resume
                log.warning("skipping unreadable checkpoint %s: %s", path, error)
                continue
            return ResumePoint(number, path, loaded.extra)
        return None

    def save_round(self, model: nn.Module, number: int, extra: dict[str, Any], is_best: bool) -> None:
        """Write round ``number``'s checkpoint (and ``best.pt``), then prune old rounds."""
        save_checkpoint(self.round_checkpoint(number), model, extra=extra)
        if is_best:
            save_checkpoint(self.path / "best.pt", model, extra=extra)
        self._prune()

    def save_final(self, model: nn.Module, extra: dict[str, Any]) -> None:
        save_checkpoint(self.path / "final.pt", model, extra=extra)

    def _prune(self) -> None:
        if self.keep_round_checkpoints == 0:
            return
        rounds = sorted(p for p in self.path.glob("round-*.pt") if ROUND_CHECKPOINT.match(p.name))
        for stale in rounds[: -self.keep_round_checkpoints]:
            stale.unlink(missing_ok=True)
