"""One experiment's results on disk: ``result.json`` (the completion mark), ``rounds.csv``, ``cross-site.csv``.

Layout of ``<results>/experiments/<name>/``::

    rounds.csv       per round: central Dice/HD95, simulated time, projected convergence score
    cross-site.csv   the final model on every site's validation split
    result.json      everything above plus factors and timing; written last, atomically

An experiment whose ``result.json`` exists is finished and is never rerun.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from segguided_federation.config_model import kebab_case
from segguided_model.atomic_write import write_text_atomically
from server.history import rows_to_csv

RESULT_FILE = "result.json"


class ResultMismatch(RuntimeError):
    """A finished result was produced by a different grid entry than the one planned now."""


@dataclass
class ExperimentResult:
    """Everything measured for one experiment.

    Attributes:
        name: the experiment's name.
        kind: ``federated``, ``centralised`` or ``local-only``.
        partition: the partition's name.
        factors: the grid factors' values.
        fingerprint: ``Experiment.fingerprint`` of the plan entry that produced it.
        run_folder: where its checkpoints and ``metrics.json`` are.
        rounds: per round (0 = initial model): ``round``, ``central`` metrics, and for
            federated runs ``simulated-seconds`` and ``projected-score``.
        cross_site: ``CrossSiteResult.to_json()`` of the final model.
        convergence: score, simulated hours, budget and the settings that produced it
            (federated runs only).
        workload: per-site ``training-samples`` and ``validation-cases`` per round, and
            ``model-bytes``.
        wall_seconds: measured time to train and evaluate it.
    """

    name: str
    kind: str
    partition: str
    factors: dict[str, Any]
    fingerprint: str
    run_folder: str
    rounds: list[dict[str, Any]] = field(default_factory=list)
    cross_site: dict[str, Any] = field(default_factory=dict)
    convergence: dict[str, Any] = field(default_factory=dict)
    workload: dict[str, Any] = field(default_factory=dict)
    wall_seconds: float = 0.0

    @property
    def final_central(self) -> dict[str, float]:
        return self.rounds[-1]["central"] if self.rounds else {}

    def best_central(self, metric: str = "dice-mean") -> float:
        return max((r["central"].get(metric, 0.0) for r in self.rounds if r["round"] > 0), default=0.0)

    def to_json(self) -> dict[str, Any]:
        return {kebab_case(key): value for key, value in asdict(self).items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ExperimentResult":
        return cls(**{key.replace("-", "_"): value for key, value in data.items()})


def round_rows(result: ExperimentResult) -> list[dict[str, Any]]:
    """``rounds.csv``: one flat row per round."""
    rows = []
    for record in result.rounds:
        row = {"experiment": result.name, "round": record["round"]}
        row.update({f"central-{key}": value for key, value in record["central"].items()})
        row.update({key: value for key, value in record.items() if key not in ("round", "central")})
        rows.append(row)
    return rows


def write_result(folder: Path, result: ExperimentResult) -> Path:
    """Write the CSVs, then ``result.json`` (atomically, last: it marks the experiment finished)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomically(folder / "rounds.csv", rows_to_csv(round_rows(result)))
    sites = [{"experiment": result.name, "site": s, **m} for s, m in sorted(result.cross_site.get("sites", {}).items())]
    write_text_atomically(folder / "cross-site.csv", rows_to_csv(sites))
    path = folder / RESULT_FILE
    write_text_atomically(path, json.dumps(result.to_json(), indent=2))
    return path


def read_result(folder: Path, fingerprint: str | None = None) -> ExperimentResult | None:
    """The finished result in ``folder``, or ``None`` if the experiment has not finished.

    Raises:
        ResultMismatch: ``fingerprint`` is given and differs from the stored one.
    """
    path = folder / RESULT_FILE
    if not path.exists():
        return None
    result = ExperimentResult.from_json(json.loads(path.read_text()))
    if fingerprint is not None and result.fingerprint != fingerprint:
        raise ResultMismatch(
            f"{path} was produced by another setting of experiment {result.name!r} "
            f"(fingerprint {result.fingerprint}, the grid now gives {fingerprint}); "
            "delete that folder to rerun it, or use another results folder"
        )
    return result


def write_table(path: Path, rows: list[dict[str, Any]]) -> None:
    """A CSV of arbitrary rows (columns in first-seen order), written atomically."""
    write_text_atomically(path, rows_to_csv(rows))
