"""Assign cases to sites: FeTS institutional partitions, or IID/skewed splits of one pool.

The FeTS 2022 challenge's partition files (``Partition_ID,Subject_ID``) ship in
``segguided_model/data/fets/``: ``partitioning_1.csv`` splits the 1,251 subjects into the
23 contributing institutions, ``partitioning_2.csv`` further splits the largest ones into
33 partitions. FeTS 2022 training data is the BraTS 2021 training set under new names;
subjects are mapped **by their numeric part**, ``FeTS2022_01341`` ↔ ``BraTS2021_01341``.
The files' 1,251 numbers (00000-01666 with gaps) match the size and id range of the
BraTS 2021 training release; the one-to-one correspondence of the numbers has not been
checked here against the challenge's own mapping table.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from segguided_model.data.layouts import CaseRecord

FETS_FOLDER = Path(__file__).with_name("fets")
FETS_PARTITIONS: Mapping[str, Path] = {
    "partitioning_1": FETS_FOLDER / "partitioning_1.csv",
    "partitioning_2": FETS_FOLDER / "partitioning_2.csv",
}
"""The FeTS 2022 partition files shipped with the package: 23 and 33 partitions."""

PARTITION_COLUMNS: tuple[str, str] = ("Partition_ID", "Subject_ID")

_SUBJECT_NUMBER = re.compile(r"^(?:FeTS2022|BraTS2021)_(\d{5})$")


def subject_number(subject_id: str) -> int | None:
    """The numeric part of a FeTS 2022 / BraTS 2021 subject id (``FeTS2022_01341`` → 1341), else ``None``."""
    match = _SUBJECT_NUMBER.match(subject_id)
    return int(match.group(1)) if match else None


def fets_to_brats2021_id(subject_id: str) -> str:
    """Map ``FeTS2022_01341`` to ``BraTS2021_01341`` (by numeric part).

    Raises:
        ValueError: ``subject_id`` is not a FeTS 2022 / BraTS 2021 style id.
    """
    number = subject_number(subject_id)
    if number is None:
        raise ValueError(f"subject id {subject_id!r} is not of the form FeTS2022_NNNNN or BraTS2021_NNNNN")
    return f"BraTS2021_{number:05d}"


def read_partition_csv(path: Path | str) -> dict[str, list[str]]:
    """Read a FeTS-style partition file.

    Args:
        path: a CSV with header ``Partition_ID,Subject_ID``, one subject per row;
            or a name in ``FETS_PARTITIONS`` (``"partitioning_1"``, ``"partitioning_2"``).

    Returns:
        Partition id → subject ids, both in file order.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a header column is missing, a row is incomplete, or a subject
            appears twice (the message names the file and line).
    """
    path = FETS_PARTITIONS.get(str(path), Path(path))
    partitions: dict[str, list[str]] = {}
    seen: dict[str, int] = {}
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in PARTITION_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; expected header {','.join(PARTITION_COLUMNS)}")
        for row in reader:
            line = reader.line_num
            partition = (row[PARTITION_COLUMNS[0]] or "").strip()
            subject = (row[PARTITION_COLUMNS[1]] or "").strip()
            if not partition or not subject:
                raise ValueError(f"{path}, line {line}: expected a partition id and a subject id, got {row}")
            if subject in seen:
                raise ValueError(f"{path}, line {line}: subject {subject} already listed on line {seen[subject]}")
            seen[subject] = line
            partitions.setdefault(partition, []).append(subject)
    return partitions


@dataclass
class PartitionAssignment:
    """Cases grouped into sites.

    Attributes:
        sites: site (partition) id → its cases, in partition-file or input order.
        unassigned: cases that no partition lists.
        missing_subjects: listed subjects without a case on disk.
    """

    sites: dict[str, list[CaseRecord]] = field(default_factory=dict)
    unassigned: list[CaseRecord] = field(default_factory=list)
    missing_subjects: list[str] = field(default_factory=list)


def _case_key(identifier: str) -> str:
    number = subject_number(identifier)
    return f"#{number}" if number is not None else identifier


def assign_by_partition(
    cases: Sequence[CaseRecord], partitions: Mapping[str, Sequence[str]]
) -> PartitionAssignment:
    """Assign cases to sites as a partition file says.

    Subjects and case ids match exactly or, for FeTS 2022 / BraTS 2021 ids, by their
    numeric part (``FeTS2022_00002`` lists case ``BraTS2021_00002``).

    Args:
        cases: every case of the pooled folder.
        partitions: partition id → subject ids (``read_partition_csv``).
    """
    by_key = {_case_key(case.case_id): case for case in cases}
    assignment = PartitionAssignment()
    used: set[str] = set()
    for partition, subjects in partitions.items():
        members = []
        for subject in subjects:
            case = by_key.get(_case_key(subject))
            if case is None:
                assignment.missing_subjects.append(subject)
            else:
                members.append(case)
                used.add(case.case_id)
        assignment.sites[str(partition)] = members
    assignment.unassigned = [case for case in cases if case.case_id not in used]
    return assignment


def split_pool(
    cases: Sequence[CaseRecord], sites: int, seed: int, skew: float | None = None
) -> list[list[CaseRecord]]:
    """Split one pooled folder into ``sites`` sites, IID or with skewed sizes.

    Args:
        cases: the pooled cases.
        sites: number of sites; each gets at least one case.
        seed: the same seed and cases give the same split.
        skew: ``None`` for equal-sized IID sites; otherwise the concentration of a
            Dirichlet draw of site sizes (smaller is more skewed, e.g. ``0.5`` gives a
            FeTS-like few-large/many-small mix).

    Returns:
        One list of cases per site, sorted by case id within each site.

    Raises:
        ValueError: fewer cases than sites, ``sites < 1`` or ``skew <= 0``.
    """
    if sites < 1 or len(cases) < sites:
        raise ValueError(f"cannot split {len(cases)} case(s) into {sites} site(s); expected 1 <= sites <= cases")
    if skew is not None and skew <= 0:
        raise ValueError(f"skew must be a positive Dirichlet concentration or None, got {skew}")
    rng = np.random.default_rng(seed)
    ordered = sorted(cases, key=lambda case: case.case_id)
    shuffled = [ordered[i] for i in rng.permutation(len(ordered))]
    if skew is None:
        groups = [shuffled[site::sites] for site in range(sites)]
    else:
        shares = rng.dirichlet(np.full(sites, skew))
        extra = rng.multinomial(len(cases) - sites, shares)
        ends = np.cumsum(extra + 1)
        groups = [shuffled[end - size : end] for end, size in zip(ends, extra + 1)]
    return [sorted(group, key=lambda case: case.case_id) for group in groups]
