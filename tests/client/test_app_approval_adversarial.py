"""Adversarial review of the app-digest approval: one approved digest must mean one installed app."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from flwr.cli.archive_utils import safe_extract_zip

from client.app_approval import AppNotApprovedError, app_digest

GOOD, EVIL = b"RULES = 'the hospital reviewed these'\n", b"RULES = 'reveal everything'\n"


def _zip(entries: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in entries:
            archive.writestr(name, content)
    return buffer.getvalue()


def _installed(bundle: bytes, folder: Path) -> bytes:
    """What Flower's ``install_from_fab`` would put at ``client/rules.py`` (same extraction)."""
    folder.mkdir()
    with zipfile.ZipFile(io.BytesIO(bundle)) as archive:
        safe_extract_zip(archive, folder)
    return (folder / "client" / "rules.py").read_bytes()


@pytest.mark.parametrize("alias", ["client/./rules.py", "./client/rules.py", "client//rules.py"])
def test_names_that_extract_to_one_file_cannot_carry_an_approval_to_other_code(tmp_path, alias):
    """The digest sorts entries by name, but extraction lets the last entry of a path win.

    A bundle naming one file twice under two spellings (``client/rules.py`` and an alias
    that zipfile extracts to the same path) has the same digest whichever order its entries
    are in, yet installs the reviewed file in one order and the other file in the other.
    A hospital that approved the first (it reviewed what it unpacked) would run the second.
    """
    approved = _zip([(alias, EVIL), ("client/rules.py", GOOD)])
    swapped = _zip([("client/rules.py", GOOD), (alias, EVIL)])
    assert _installed(approved, tmp_path / "approved") == GOOD
    assert _installed(swapped, tmp_path / "swapped") == EVIL

    refused = []
    for bundle in (approved, swapped):
        try:
            app_digest(bundle)
        except AppNotApprovedError:
            refused.append(bundle)
    # Either such bundles are refused outright, or their digests differ.
    assert len(refused) == 2 or app_digest(approved) != app_digest(swapped)


@pytest.mark.parametrize(
    "alias",
    ["client/RULES.py", "Client/rules.py", "client/rules.PY"],
)
def test_names_one_case_insensitive_filesystem_merges_cannot_carry_an_approval_to_other_code(alias):
    """On a case-insensitive filesystem (macOS, Windows) ``client/rules.py`` and ``client/RULES.py`` are one file.

    Both entries are in the digest, which sorts them, so the two orders of the same
    entries have one digest; extraction writes them in archive order and the last one
    wins. A hospital whose SuperNode runs on such a filesystem would run ``EVIL`` under the
    approval of a bundle that installed ``GOOD`` where it was reviewed.
    """
    approved = _zip([(alias, EVIL), ("client/rules.py", GOOD)])
    swapped = _zip([("client/rules.py", GOOD), (alias, EVIL)])
    _assert_refused_or_told_apart(approved, swapped)


def test_names_one_normalising_filesystem_merges_cannot_carry_an_approval_to_other_code():
    """macOS (HFS+, and APFS's lookups) treats the NFC and NFD spellings of a name as one file."""
    composed, decomposed = "client/r\u00e9gles.py", "client/re\u0301gles.py"
    assert composed != decomposed
    approved = _zip([(decomposed, EVIL), (composed, GOOD)])
    swapped = _zip([(composed, GOOD), (decomposed, EVIL)])
    _assert_refused_or_told_apart(approved, swapped)


def test_directory_entries_cannot_change_the_installed_tree_under_one_digest(tmp_path):
    """The digest skips directory entries, yet extraction creates them.

    An empty folder named like an optional dependency (``wandb/``) becomes an importable
    namespace package once the app folder is on ``sys.path``, so ``import wandb`` starts
    succeeding in code that tests for it: the same approved digest installs two different
    trees. Flower's own bundler writes no directory entries, so refusing them costs nothing.
    """
    plain = _zip([("client/rules.py", GOOD)])
    with_folder = _zip([("client/rules.py", GOOD), ("wandb/", b"")])
    for name, bundle in (("plain", plain), ("with-folder", with_folder)):
        folder = tmp_path / name
        _installed(bundle, folder)
    assert (tmp_path / "with-folder" / "wandb").is_dir() and not (tmp_path / "plain" / "wandb").exists()
    _assert_refused_or_told_apart(plain, with_folder, either=True)


def _assert_refused_or_told_apart(first: bytes, second: bytes, either: bool = False) -> None:
    """Both bundles refused (or, with ``either``, at least one), or their digests differ."""
    refused = []
    for bundle in (first, second):
        try:
            app_digest(bundle)
        except AppNotApprovedError:
            refused.append(bundle)
    if refused:
        assert either or len(refused) == 2
        return
    assert app_digest(first) != app_digest(second)
