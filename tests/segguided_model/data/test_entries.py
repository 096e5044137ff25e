"""Folder entries: hidden ones skipped, NIfTI endings, broken links."""

from __future__ import annotations

import pytest

from segguided_model.data.entries import (
    describe_broken_link,
    is_broken_link,
    nifti_stem,
    visible_entries,
)


def test_hidden_entries_are_not_visible(tmp_path):
    for name in (".ipynb_checkpoints", "__MACOSX", "site-b", "site-a"):
        (tmp_path / name).mkdir()
    for name in ("._a.nii.gz", ".DS_Store", "notes.txt"):
        (tmp_path / name).write_text("")
    assert [entry.name for entry in visible_entries(tmp_path)] == ["notes.txt", "site-a", "site-b"]


@pytest.mark.parametrize("name, stem", [("a.nii.gz", "a"), ("a-seg.nii", "a-seg"), ("a.gz", None), (".nii", None)])
def test_nifti_stem(name, stem):
    assert nifti_stem(name) == stem


def test_broken_links_are_visible_and_described_with_their_target(tmp_path):
    link = tmp_path / "a.nii.gz"
    link.symlink_to(tmp_path / "share" / "a.nii.gz")
    assert visible_entries(tmp_path) == [link] and is_broken_link(link)
    assert describe_broken_link(link) == f"{link} is a broken link to {tmp_path}/share/a.nii.gz"
