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
