"""The QA gate's memory: a case's check outcome kept until one of its files changes.

Checking a case reads every voxel of every file (2.9 s for one 240×240×155 case on a
2-core CPU), and a site is checked before every training and evaluation round. The
outcome of ``qa._check_case`` depends only on the case's files, so it is kept in
``<cache dir>/qa-results.json`` under the identity of each file (absolute path, size,
modification time in nanoseconds). A case is checked again when any of its files is new,
gone, resized or touched, or when the QA rules changed (``QA_RULES_VERSION``). Only the
decision that needs every case at once (the site's label convention) is made afresh each
time, from the kept label values.

What is kept stays on the site: reason codes, details naming files, and label values.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segguided_model.atomic_write import write_text_atomically
from segguided_model.data.layouts import CaseRecord

log = logging.getLogger(__name__)

QA_RULES_VERSION = 2
"""Bump whenever a check of ``qa._check_case`` changes: every kept outcome is then discarded."""

CACHE_FILE = "qa-results.json"


@dataclass(frozen=True)
class CaseOutcome:
    """What checking one case found: its label values, or the problem that rejects it.

    Attributes:
        label_values: the segmentation's values (``None`` without a segmentation or when rejected).
        reason: a ``qa.REASONS`` code when the case was rejected, else ``None``.
        detail: what exactly failed (names the file), when rejected.
    """

    label_values: frozenset[int] | None = None
    reason: str | None = None
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        values = sorted(self.label_values) if self.label_values is not None else None
        return {"label-values": values, "reason": self.reason, "detail": self.detail}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "CaseOutcome":
        values = data.get("label-values")
        return cls(frozenset(int(v) for v in values) if values is not None else None, data.get("reason"),
                   str(data.get("detail", "")))


def case_files(case: CaseRecord) -> list[Path]:
    """Every file a case is read from, each once, in a fixed order."""
    files = dict.fromkeys([*(Path(p) for p in case.image_paths.values())])
    if case.label_path is not None:
        files[Path(case.label_path)] = None
    return list(files)


def file_identity(case: CaseRecord) -> list[list[Any]] | None:
    """``[[absolute path, size, mtime_ns], ...]`` of the case's files, or ``None`` if one cannot be stat'ed."""
    identity = []
    for path in case_files(case):
        try:
            stat = path.stat()
        except OSError:
            return None
        identity.append([str(path.absolute()), stat.st_size, stat.st_mtime_ns])
    return identity


class QACache:
    """Kept case outcomes of one site; ``lookup`` before checking a case, ``store`` after, ``save`` at the end.

    Args:
        folder: the site's cache folder; ``None`` keeps nothing (every case is checked).
    """

    def __init__(self, folder: Path | None) -> None:
        self.path = Path(folder) / CACHE_FILE if folder is not None else None
        self.reused = 0
        self.checked = 0
        self._kept: dict[str, dict[str, Any]] = {}
        self._seen: dict[str, dict[str, Any]] = {}
        if self.path is not None and self.path.is_file():
            try:
                document = json.loads(self.path.read_text())
            except (OSError, ValueError) as error:
                log.warning("ignoring unreadable QA cache %s: %s", self.path, error)
                document = {}
            if document.get("rules-version") == QA_RULES_VERSION:
                self._kept = dict(document.get("cases", {}))

    def lookup(self, case: CaseRecord) -> CaseOutcome | None:
        """The kept outcome of ``case`` if none of its files changed since, else ``None``."""
        identity = file_identity(case)
        entry = self._kept.get(case.case_id)
        if identity is None or entry is None or entry.get("files") != identity:
            return None
        self._seen[case.case_id] = entry
        self.reused += 1
        return CaseOutcome.from_json(entry["outcome"])

    def store(self, case: CaseRecord, outcome: CaseOutcome) -> None:
        """Keep the outcome of a case just checked."""
        self.checked += 1
        identity = file_identity(case)
        if identity is not None:
            self._seen[case.case_id] = {"files": identity, "outcome": outcome.to_json()}

    def save(self) -> None:
        """Write the outcomes of the cases seen this time (cases gone from the site are dropped)."""
        if self.path is None:
            return
        document = {"rules-version": QA_RULES_VERSION, "cases": self._seen}
        try:
            write_text_atomically(self.path, json.dumps(document))
        except OSError as error:  # a cache that cannot be written must not stop the gate
            log.warning("cannot keep QA results in %s: %s", self.path, error)
