"""Per-site train/validation split: deterministic, stable when cases join, never one-sided."""

from __future__ import annotations

from pathlib import Path

import pytest

from segguided_model.data.layouts import CaseRecord
from segguided_model.data.split import split_cases


def _cases(count: int, start: int = 0) -> list[CaseRecord]:
    return [
        CaseRecord(f"BraTS-GLI-{n:05d}-000", {}, Path("seg.nii.gz"), "brats2023", "brats2023")
        for n in range(start, start + count)
    ]


def _ids(cases):
    return [case.case_id for case in cases]


def test_same_seed_gives_the_same_split():
    cases = _cases(40)
    train, validation = split_cases(cases, 0.25, seed=1)
    assert split_cases(cases, 0.25, seed=1) == (train, validation)
    reversed_train, reversed_validation = split_cases(cases[::-1], 0.25, seed=1)
    assert set(_ids(reversed_validation)) == set(_ids(validation))


def test_split_covers_every_case_once_and_other_seeds_differ():
    cases = _cases(40)
    train, validation = split_cases(cases, 0.25, seed=1)
    assert sorted(_ids(train) + _ids(validation)) == _ids(cases)
    assert 4 <= len(validation) <= 16
    assert split_cases(cases, 0.25, seed=2) != (train, validation)


def test_adding_cases_moves_no_existing_case():
    _, validation = split_cases(_cases(40), 0.25, seed=3)
    _, grown = split_cases(_cases(60), 0.25, seed=3)
    assert set(_ids(validation)) == set(_ids(grown)) & set(_ids(_cases(40)))


def test_small_sites_get_a_case_on_each_side():
    for seed in range(20):
        train, validation = split_cases(_cases(2), 0.1, seed=seed)
        assert len(train) == 1 and len(validation) == 1


def test_zero_fraction_keeps_everything_for_training():
    train, validation = split_cases(_cases(5), 0.0, seed=0)
    assert len(train) == 5 and validation == []


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_fraction_outside_range_is_rejected(fraction):
    with pytest.raises(ValueError, match=str(fraction)):
        split_cases(_cases(3), fraction, seed=0)


def test_duplicate_case_ids_are_rejected():
    with pytest.raises(ValueError, match="BraTS-GLI-00000-000"):
        split_cases(_cases(2) + _cases(1), 0.5, seed=0)
