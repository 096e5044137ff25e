"""Deterministic train/validation split of one site's cases, stable when cases are added.

Each case lands in validation when a hash of ``(seed, case_id)`` falls below the
validation fraction, so a case never changes side when other cases join or leave the
site. Small sites are the one exception: if the threshold leaves a side empty, the case
with the most extreme hash moves over so that both sides have at least one case.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

from segguided_model.data.layouts import CaseRecord


def case_hash(case_id: str, seed: int) -> float:
    """A uniform number in ``[0, 1)`` fixed by ``case_id`` and ``seed`` (SHA-256, not ``hash()``)."""
    digest = hashlib.sha256(f"{seed}:{case_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_cases(
    cases: Sequence[CaseRecord], validation_fraction: float, seed: int
) -> tuple[list[CaseRecord], list[CaseRecord]]:
    """Split a site's cases into training and validation.

    Args:
        cases: the site's cases (ids must be unique).
        validation_fraction: expected share of validation cases, in ``[0, 1)``.
        seed: another seed gives another split.

    Returns:
        ``(train, validation)``, each in the order of ``cases``. With two or more cases
        and a positive fraction both are non-empty.

    Raises:
        ValueError: the fraction is outside ``[0, 1)`` or a case id repeats.
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    ids = [case.case_id for case in cases]
    duplicates = sorted({case_id for case_id in ids if ids.count(case_id) > 1})
    if duplicates:
        raise ValueError(f"case ids must be unique to split a site, got duplicates {duplicates}")
    scores = {case.case_id: case_hash(case.case_id, seed) for case in cases}
    in_validation = {case_id for case_id, score in scores.items() if score < validation_fraction}
    if validation_fraction > 0 and len(cases) >= 2:
        if not in_validation:
            in_validation.add(min(scores, key=scores.__getitem__))
        elif len(in_validation) == len(cases):
            in_validation.discard(max(scores, key=scores.__getitem__))
    train = [case for case in cases if case.case_id not in in_validation]
    validation = [case for case in cases if case.case_id in in_validation]
    return train, validation
