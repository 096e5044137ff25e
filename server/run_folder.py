"""One folder per run: resolved config, round checkpoints, best/final models and history.

Layout of ``<output-dir>/<run-name>/``::

    config.json          the resolved run configuration
    round-0003.pt        global model after round 3 (the newest ``keep-round-checkpoints``),
                         with that round's history record
    best.pt              the round with the highest central mean Dice
    final.pt             the model after the last round (only if some round aggregated)
    metrics.json/.csv    the history (``server.history``)
    .run.lock            held by the run writing the folder (``.run.owner`` says which)

Every file is written atomically, so a server killed at any moment leaves a folder that
``resume=true`` continues from its newest round checkpoint; the temporary files such a
kill leaves are removed when the folder is opened again. One run at a time: a second run
for the same folder is refused while the first holds its lock (``filelock``: an OS file
lock that its holder's death releases).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from torch import nn

from segguided_federation.run_config import RunConfig
from segguided_model.atomic_write import remove_stale_temporaries, write_text_atomically
from segguided_model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)

ROUND_CHECKPOINT = re.compile(r"^round-(\d{4,})\.pt$")
LOCK_FILE = ".run.lock"
OWNER_FILE = ".run.owner"
SETTINGS_FIXED_ON_RESUME = (
    "model-base-width", "model-levels", "model-encoder-blocks", "model-skip-merge", "deep-supervision", "strategy", "seed",
    # The privacy budget replays the finished rounds with the current settings: they must be the ones spent.
    "differential-privacy", "dp-noise-multiplier", "dp-clipping-norm", "dp-delta",
    "fraction-fit", "min-fit-clients", "min-available-clients",
)
ROUND_RECORD_KEY = "round-record"
"""Checkpoint extra holding the round's history record, so that a history that lost the round can be rebuilt."""


class RunFolderError(RuntimeError):
    """The run folder cannot be created, locked or resumed as asked; the message says why and what to do."""


@dataclass(frozen=True)
class ResumePoint:
    """Where an interrupted run stands: its last finished round and that round's checkpoint."""

    round: int
    checkpoint: Path
    extra: dict[str, Any]


class RunFolder:
    """The output folder of one run, locked for as long as the run writes it.

    Use ``RunFolder.open`` and close it (or use it as a context manager) when the run ends.
    """

    def __init__(self, path: Path, keep_round_checkpoints: int, lock: FileLock | None = None) -> None:
        self.path = path
        self.keep_round_checkpoints = keep_round_checkpoints
        self._lock = lock

    @classmethod
    def open(cls, config: RunConfig, run_id: int | str) -> "RunFolder":
        """Lock a new run's folder, or the one to resume, and clear what a crash left in it.

        A new run (``resume=false``) may not start in a folder that holds checkpoints, and
        a resumed run needs a readable round checkpoint, unless ``overwrite=true``, which
        starts the run afresh in the folder (its checkpoints and history are replaced).

        Raises:
            RunFolderError: another run holds the folder; resuming a folder that holds no
                run or no readable checkpoint; a new run in a folder with checkpoints.
        """
        output = Path(config.output_dir).expanduser().resolve()
        if config.resume and not config.run_name:
            path = cls._latest_run(output)
        else:
            path = output / (config.run_name or f"{time.strftime('%Y%m%d-%H%M%S')}-run{run_id}")
        path.mkdir(parents=True, exist_ok=True)
        folder = cls(path, config.keep_round_checkpoints, _acquire(path, run_id))
        try:
            for stale in remove_stale_temporaries(path):
                log.warning("removed %s, left by a write that an earlier crash interrupted", stale.name)
            folder._check_start(config)
        except BaseException:
            folder.close()
            raise
        return folder

    def close(self) -> None:
        """Release the folder's lock (idempotent)."""
        if self._lock is not None:
            (self.path / OWNER_FILE).unlink(missing_ok=True)
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @staticmethod
    def _latest_run(output: Path) -> Path:
        runs = sorted((p for p in output.glob("*/config.json")), key=lambda p: p.stat().st_mtime)
        if not runs:
            raise RunFolderError(f"resume=true but {output} holds no runs; give run-name or start a new run")
        return runs[-1].parent

    def _check_start(self, config: RunConfig) -> None:
        checkpoints = self._round_checkpoints()
        if config.overwrite:
            if checkpoints or (self.path / "metrics.json").exists():
                log.warning("overwrite=true: starting %s afresh; its checkpoints and history are replaced", self.path)
                self._clear()
            return
        if config.resume:
            if not (self.path / "config.json").exists():
                raise RunFolderError(
                    f"resume=true but {self.path} holds no run to resume (no config.json); "
                    "start a new run (resume=false)"
                )
            self._check_resumable_with(config)
            return
        if checkpoints or any(self.path.glob("*.pt")):
            raise RunFolderError(
                f"run folder {self.path} already holds checkpoints; pass resume=true to continue it, "
                "overwrite=true to start it afresh, or choose another run-name"
            )

    def _clear(self) -> None:
        for entry in self.path.iterdir():
            if entry.is_file() and entry.name not in (LOCK_FILE, OWNER_FILE):
                entry.unlink()

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

    def _round_checkpoints(self) -> list[tuple[int, Path]]:
        return sorted(
            (int(m.group(1)), p) for p in self.path.glob("round-*.pt") if (m := ROUND_CHECKPOINT.match(p.name))
        )

    def resume_point(self) -> ResumePoint:
        """The newest round checkpoint that loads.

        Raises:
            RunFolderError: no round checkpoint loads (each unreadable one is named), so
                the run would silently start over; ``overwrite=true`` starts it afresh.
        """
        unreadable = []
        for number, path in reversed(self._round_checkpoints()):
            try:
                loaded = load_checkpoint(path)
            except CheckpointError as error:  # a damaged file must not stop the resume
                log.warning("skipping unreadable checkpoint %s: %s", path.name, error)
                unreadable.append(path.name)
                continue
            return ResumePoint(number, path, loaded.extra)
        found = f"its round checkpoints ({', '.join(sorted(unreadable))}) are all unreadable" if unreadable else (
            "it holds no round checkpoint"
        )
        raise RunFolderError(
            f"cannot resume {self.path}: {found}; pass overwrite=true to start this run afresh "
            "(its history is replaced)"
        )

    def round_record(self, number: int) -> dict[str, Any] | None:
        """Round ``number``'s history record as its checkpoint stored it, if that checkpoint loads."""
        path = self.round_checkpoint(number)
        if not path.exists():
            return None
        try:
            record = load_checkpoint(path).extra.get(ROUND_RECORD_KEY)
        except CheckpointError:
            return None
        return dict(record) if isinstance(record, dict) else None

    def save_round(self, model: nn.Module, number: int, extra: dict[str, Any], is_best: bool) -> None:
        """Write round ``number``'s checkpoint (and ``best.pt``), then prune old rounds.

        Raises:
            DiskFullError: the disk cannot hold the checkpoint (the previous ones are intact).
        """
        save_checkpoint(self.round_checkpoint(number), model, extra=extra)
        if is_best:
            save_checkpoint(self.path / "best.pt", model, extra=extra)
        self._prune()

    def ensure_best(self, best_round: int | None) -> None:
        """Make ``best.pt`` hold round ``best_round`` if a crash came between its round checkpoint and ``best.pt``."""
        if best_round is None or not self.round_checkpoint(best_round).exists():
            return
        best = self.path / "best.pt"
        try:
            current = load_checkpoint(best).extra.get("round") if best.exists() else None
        except CheckpointError:
            current = None
        if current != best_round:
            log.warning("best.pt held round %s, the best is round %d: rewriting it", current, best_round)
            shutil.copyfile(self.round_checkpoint(best_round), best)

    def save_final(self, model: nn.Module, extra: dict[str, Any]) -> None:
        save_checkpoint(self.path / "final.pt", model, extra=extra)

    def _prune(self) -> None:
        if self.keep_round_checkpoints == 0:
            return
        for _, stale in self._round_checkpoints()[: -self.keep_round_checkpoints]:
            stale.unlink(missing_ok=True)


def _acquire(path: Path, run_id: int | str) -> FileLock:
    """Take ``path``'s run lock without waiting and record who holds it.

    Raises:
        RunFolderError: another live process holds it; names that run.
    """
    lock = FileLock(path / LOCK_FILE)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        try:
            owner = json.loads((path / OWNER_FILE).read_text())
            holder = f"run {owner['run-id']} (process {owner['pid']} on {owner['host']}, since {owner['since']})"
        except (OSError, ValueError, KeyError):
            holder = "another run"
        raise RunFolderError(
            f"run folder {path} is in use by {holder}; wait for it to end, stop it (flwr stop), "
            "or choose another run-name"
        ) from None
    owner = {"run-id": str(run_id), "pid": os.getpid(), "host": socket.gethostname(),
             "since": time.strftime("%Y-%m-%d %H:%M:%S %z")}
    write_text_atomically(path / OWNER_FILE, json.dumps(owner))
    return lock
