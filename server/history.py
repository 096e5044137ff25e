"""The run's metrics history: one row per round, written as ``metrics.json`` and ``metrics.csv``.

A row holds the central validation metrics (Dice and HD95 per region and their means),
the per-site federated metrics, how many clients succeeded and failed, and where the
round's time went. Rows are plain dictionaries with kebab-case keys so that they cross
into JSON, CSV and Prometheus unchanged.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from segguided_federation import metric_keys as keys
from segguided_model.atomic_write import write_text_atomically
from segguided_model.metrics import (
    DICE_KEYS,
    DICE_MEAN_KEY,
    HD95_MEAN_KEY,
    SUMMARY_KEYS,
)

log = logging.getLogger(__name__)

SITE_TABLE_KEYS: tuple[str, ...] = (*DICE_KEYS, DICE_MEAN_KEY, HD95_MEAN_KEY, keys.EVALUATION_CASES)
"""Columns of the per-site federated-evaluation table in the log."""


def rows_to_csv(rows: list[dict[str, Any]]) -> str:
    """CSV text of rows whose keys may differ: the columns are every key, in first-seen order."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


@dataclass
class RoundRecord:
    """Everything measured in one round. Round 0 is the initial model."""

    round: int
    central: dict[str, float] = field(default_factory=dict)
    site_training: dict[str, dict[str, float]] = field(default_factory=dict)
    site_evaluation: dict[str, dict[str, float]] = field(default_factory=dict)
    site_nodes: dict[str, dict[str, int]] = field(default_factory=dict)
    """``{"training" | "evaluation": {site id: node id}}``: the node each site row's claim came from."""
    clients_selected: int = 0
    clients_succeeded: int = 0
    clients_failed: int = 0
    bytes_received: int = 0
    failures: list[str] = field(default_factory=list)
    evaluation_failures: list[str] = field(default_factory=list)
    aggregated: bool = True
    timing: dict[str, float] = field(default_factory=dict)
    secure_aggregation: dict[str, Any] = field(default_factory=dict)
    site_evaluation_finished: bool = False
    """The round's federated evaluation ran to its end (its site metrics may still be empty:
    every site may withhold them, or fail)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "central": self.central,
            "site-training": self.site_training,
            "site-evaluation": self.site_evaluation,
            "site-nodes": self.site_nodes,
            "clients-selected": self.clients_selected,
            "clients-succeeded": self.clients_succeeded,
            "clients-failed": self.clients_failed,
            "bytes-received": self.bytes_received,
            "failures": self.failures,
            "evaluation-failures": self.evaluation_failures,
            "aggregated": self.aggregated,
            "timing": self.timing,
            "secure-aggregation": self.secure_aggregation,
            "site-evaluation-finished": self.site_evaluation_finished,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RoundRecord":
        return cls(
            round=int(data["round"]),
            central=dict(data.get("central", {})),
            site_training=dict(data.get("site-training", {})),
            site_evaluation=dict(data.get("site-evaluation", {})),
            site_nodes={phase: dict(nodes) for phase, nodes in data.get("site-nodes", {}).items()},
            clients_selected=int(data.get("clients-selected", 0)),
            clients_succeeded=int(data.get("clients-succeeded", 0)),
            clients_failed=int(data.get("clients-failed", 0)),
            bytes_received=int(data.get("bytes-received", 0)),
            failures=list(data.get("failures", [])),
            evaluation_failures=list(data.get("evaluation-failures", [])),
            aggregated=bool(data.get("aggregated", True)),
            timing=dict(data.get("timing", {})),
            secure_aggregation=dict(data.get("secure-aggregation", {})),
            # histories written before the key existed: a round with site metrics was evaluated
            site_evaluation_finished=bool(data.get("site-evaluation-finished", bool(data.get("site-evaluation")))),
        )

    def flat(self) -> dict[str, Any]:
        """One CSV row: central metrics, counts, timing and ``<site>:eval:<metric>``/``<site>:train:<metric>`` columns.

        ``:`` is in no site id and no metric key, so no site's column can be another's
        (with ``-`` a site ``a-train`` and a key ``cases`` named site ``a``'s ``train-cases``).
        """
        row: dict[str, Any] = {"round": self.round}
        row.update({f"central-{key}": self.central.get(key) for key in SUMMARY_KEYS})
        row["clients-selected"] = self.clients_selected
        row["clients-succeeded"] = self.clients_succeeded
        row["clients-failed"] = self.clients_failed
        row["bytes-received"] = self.bytes_received
        row["aggregated"] = self.aggregated
        row.update({f"{key}": value for key, value in self.timing.items()})
        secure = self.secure_aggregation
        row.update({f"secure-{key}": value for key, value in secure.get("training", {}).items()})
        row.update({f"secure-{key}": secure[key] for key in ("survivors", "epsilon") if secure.get(key) is not None})
        for site, metrics in sorted(self.site_evaluation.items()):
            row.update({f"{site}:eval:{key}": value for key, value in metrics.items()})
        for site, metrics in sorted(self.site_training.items()):
            row.update({f"{site}:train:{key}": value for key, value in metrics.items()})
        for phase, nodes in sorted(self.site_nodes.items()):
            row.update({f"{site}:{phase}:node-id": node for site, node in sorted(nodes.items())})
        return row


class RunHistory:
    """Round records of one run, kept in order and written after every change."""

    def __init__(self, folder: Path, records: list[RoundRecord] | None = None) -> None:
        self.folder = folder
        self.records: dict[int, RoundRecord] = {r.round: r for r in records or []}

    @classmethod
    def load(
        cls, folder: Path, up_to_round: int, stored_record: Callable[[int], dict[str, Any] | None] = lambda n: None
    ) -> "RunHistory":
        """Read ``metrics.json`` from an interrupted run, keeping rounds ≤ ``up_to_round``.

        A round missing from the file (a crash between its checkpoint and the history
        write) is rebuilt from ``stored_record(round)``, the record its checkpoint holds.

        A round in neither place (``metrics.json`` deleted by hand) stays missing, with a
        warning: the model resumes correctly, only that row of the history is lost.

        The round resumed from may have been validated centrally after a resume, its
        checkpoint rewritten with the scores, and the process killed before the history
        write: its row then takes the checkpoint's central metrics (and their timing).
        """
        path = folder / "metrics.json"
        rows = json.loads(path.read_text())["rounds"] if path.exists() else []
        history = cls(folder, [RoundRecord.from_json(row) for row in rows if int(row["round"]) <= up_to_round])
        resumed = history.records.get(up_to_round)
        if resumed is not None and not resumed.central:
            stored = RoundRecord.from_json(stored_record(up_to_round) or {"round": up_to_round})
            if stored.central:
                log.warning("metrics.json lacked round %d's central validation: restored it from that round's "
                            "checkpoint", up_to_round)
                resumed.central = stored.central
                resumed.timing.update({k: v for k, v in stored.timing.items() if k.startswith("central-validation")})
        for number in range(up_to_round + 1):
            if number in history.records:
                continue
            stored = stored_record(number)
            if stored is None:
                log.warning("%s lacks round %d and no checkpoint holds its record: that row stays missing",
                            path, number)
                continue
            log.warning("metrics.json lacked round %d: restored it from that round's checkpoint", number)
            history.records[number] = RoundRecord.from_json(stored)
        return history

    def aggregated_rounds(self) -> list[int]:
        """Rounds (after round 0) that updated the global model."""
        return [number for number, record in sorted(self.records.items()) if number > 0 and record.aggregated]

    def round(self, number: int) -> RoundRecord:
        return self.records.setdefault(number, RoundRecord(round=number))

    def best_round(self) -> int | None:
        scored = [r for r in self.records.values() if DICE_MEAN_KEY in r.central]
        return max(scored, key=lambda r: r.central[DICE_MEAN_KEY]).round if scored else None

    def write(self) -> None:
        rows = [self.records[n] for n in sorted(self.records)]
        write_text_atomically(
            self.folder / "metrics.json", json.dumps({"rounds": [r.to_json() for r in rows]}, indent=2)
        )
        write_text_atomically(self.folder / "metrics.csv", rows_to_csv([r.flat() for r in rows]))

    def central_table(self) -> str:
        """The per-round central validation table, as logged after every round."""
        header = f"{'round':>5} | " + " | ".join(f"{k:>9}" for k in SUMMARY_KEYS) + " | ok/failed"
        lines = [header, "-" * len(header)]
        for number in sorted(self.records):
            record = self.records[number]
            if not record.central:
                continue
            cells = " | ".join(f"{record.central.get(k, float('nan')):9.3f}" for k in SUMMARY_KEYS)
            lines.append(f"{number:>5} | {cells} | {record.clients_succeeded}/{record.clients_failed}")
        return "\n".join(lines)

    def site_table(self, number: int) -> str:
        """Federated evaluation of one round, one line per site."""
        record = self.records.get(number)
        if record is None or not record.site_evaluation:
            return ""
        lines = [f"{'site':>10} | " + " | ".join(f"{k:>9}" for k in SITE_TABLE_KEYS)]
        for site, metrics in sorted(record.site_evaluation.items()):
            lines.append(f"{site:>10} | " + " | ".join(f"{metrics.get(k, float('nan')):9.3f}" for k in SITE_TABLE_KEYS))
        return "\n".join(lines)
