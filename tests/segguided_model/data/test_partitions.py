"""FeTS partitions and pooled splits: the shipped files, the id mapping, IID and skewed sites."""

from __future__ import annotations

from pathlib import Path

import pytest

from segguided_model.data.layouts import CaseRecord
from segguided_model.data.partitions import (
    FETS_PARTITIONS,
    assign_by_partition,
    fets_to_brats2021_id,
    read_partition_csv,
    split_pool,
)


def _case(case_id: str) -> CaseRecord:
    return CaseRecord(case_id, {}, Path("seg.nii.gz"), "brats2021", "brats2021")


@pytest.mark.parametrize(("name", "partitions"), [("partitioning_1", 23), ("partitioning_2", 33)])
def test_shipped_fets_files_hold_1251_subjects(name, partitions):
    parsed = read_partition_csv(name)
    subjects = [s for members in parsed.values() for s in members]
    assert len(parsed) == partitions
    assert len(subjects) == len(set(subjects)) == 1251
    assert all(s.startswith("FeTS2022_") for s in subjects)


def test_both_fets_files_partition_the_same_subjects():
    first, second = (read_partition_csv(path) for path in FETS_PARTITIONS.values())
    assert {s for m in first.values() for s in m} == {s for m in second.values() for s in m}


def test_fets_ids_map_to_brats2021_ids_by_number():
    assert fets_to_brats2021_id("FeTS2022_01341") == "BraTS2021_01341"
    with pytest.raises(ValueError, match="FeTS2022_13"):
        fets_to_brats2021_id("FeTS2022_13")


def test_brats2021_cases_are_assigned_to_fets_institutions():
    partitions = read_partition_csv("partitioning_1")
    subjects = [s for members in partitions.values() for s in members]
    cases = [_case(fets_to_brats2021_id(s)) for s in subjects[:-1]] + [_case("BraTS2021_99999")]
    assignment = assign_by_partition(cases, partitions)
    assert len(assignment.sites) == 23
    assert sum(len(members) for members in assignment.sites.values()) == 1250
    assert assignment.missing_subjects == [subjects[-1]]
    assert [case.case_id for case in assignment.unassigned] == ["BraTS2021_99999"]
    assert assignment.sites["1"][0].case_id == fets_to_brats2021_id(partitions["1"][0])


def test_partition_file_errors_name_the_file_and_line(tmp_path):
    duplicate = tmp_path / "dup.csv"
    duplicate.write_text("Partition_ID,Subject_ID\n1,FeTS2022_00000\n2,FeTS2022_00000\n")
    with pytest.raises(ValueError, match=r"dup.csv, line 3.*line 2"):
        read_partition_csv(duplicate)
    headerless = tmp_path / "bad.csv"
    headerless.write_text("site,case\n1,x\n")
    with pytest.raises(ValueError, match="bad.csv.*Partition_ID"):
        read_partition_csv(headerless)


def test_iid_split_is_balanced_deterministic_and_complete():
    cases = [_case(f"BraTS2021_{n:05d}") for n in range(31)]
    sites = split_pool(cases, 4, seed=0)
    assert sorted(len(site) for site in sites) == [7, 8, 8, 8]
    assert sorted(c.case_id for site in sites for c in site) == [c.case_id for c in cases]
    assert split_pool(list(reversed(cases)), 4, seed=0) == sites
    assert split_pool(cases, 4, seed=1) != sites


def test_skewed_split_gives_unequal_sites_of_at_least_one_case():
    cases = [_case(f"BraTS2021_{n:05d}") for n in range(60)]
    sizes = [len(site) for site in split_pool(cases, 6, seed=0, skew=0.3)]
    assert sum(sizes) == 60 and min(sizes) >= 1 and max(sizes) >= 2 * min(sizes)


def test_pool_smaller_than_site_count_is_rejected():
    with pytest.raises(ValueError, match="2 case"):
        split_pool([_case("a"), _case("b")], 3, seed=0)
