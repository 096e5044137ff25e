"""What a hospital approves: the content digest of a Flower app bundle (FAB), and the check against it.

Flower 1.42 verifies app signatures only for apps fetched from Flower Hub; a bundle that
``flwr run .`` submits carries none, so a SuperNode started with ``--trusted-entities``
refuses every such run (see ``deploy/README.md``). A hospital instead pins the digests of
the releases it reviewed in its site config (``approved-app-digests``), and its ClientApp
launcher (``client.approved_clientapp``) refuses to install or import any other bundle.

The digest covers every file of the bundle: ``sha256`` over the sorted lines
``<path>\\0<sha256 of its content>\\n``. It does not depend on how the zip was compressed,
so a hospital computes the same digest from its own checkout of a release
(``segguided app-digest DIR``) as from the bundle the coordinator submits.
"""

from __future__ import annotations

import hashlib
import io
import unicodedata
import zipfile
from pathlib import Path
from typing import Sequence

APP_DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"
MAX_UNPACKED_BYTES = 512 * 2**20
"""Largest total size of a bundle's files; a bigger one is refused before it is read."""


class AppNotApprovedError(RuntimeError):
    """This hospital did not approve the app bundle it was asked to run (or cannot read it)."""


def app_digest(bundle: bytes) -> str:
    """The content digest (``sha256:<hex>``) of a Flower app bundle.

    Raises:
        AppNotApprovedError: not a zip file, a directory entry, a name given twice (up to case and
            Unicode normalisation) or not in canonical form, or larger than
            ``MAX_UNPACKED_BYTES``.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(bundle))
    except zipfile.BadZipFile:
        raise AppNotApprovedError("the app bundle is not a valid zip file") from None
    with archive:
        entries = archive.infolist()
        if any(info.is_dir() for info in entries):
            raise AppNotApprovedError(
                "the app bundle has a directory entry: the digest covers files only (Flower's bundler writes none)"
            )
        names = [info.filename for info in entries]
        if len({_folded(name) for name in names}) != len(names):
            raise AppNotApprovedError(
                "the app bundle names a file twice (counting names that differ only in case or Unicode "
                "normalisation, which some filesystems store as one file)"
            )
        if not all(_canonical(name) for name in names):
            raise AppNotApprovedError(
                "the app bundle names a file in a non-canonical form (a leading '/', an empty, '.' or '..' "
                "part, or a backslash): unpacking would map it onto another name"
            )
        if sum(info.file_size for info in entries) > MAX_UNPACKED_BYTES:
            raise AppNotApprovedError(f"the app bundle unpacks to more than {MAX_UNPACKED_BYTES // 2**20} MiB")
        digest = hashlib.sha256()
        for info in sorted(entries, key=lambda entry: entry.filename):
            content = hashlib.sha256(archive.read(info)).hexdigest()
            digest.update(f"{info.filename}\0{content}\n".encode())
    return f"sha256:{digest.hexdigest()}"


def _folded(name: str) -> str:
    """``name`` as a case-insensitive, normalising filesystem (macOS, Windows) compares it."""
    return unicodedata.normalize("NFC", name).casefold()


def _canonical(name: str) -> bool:
    """Whether unpacking writes ``name`` to exactly ``name``.

    ``zipfile`` drops empty, ``.`` and ``..`` parts when it extracts, so ``a/./b``,
    ``./a/b`` and ``a//b`` would all land on ``a/b`` (and ``a/../b`` on ``a/b`` too), and whichever entry
    comes last would win: the digest (over sorted names) would not pin what is installed.
    """
    parts = name.split("/")
    return "\\" not in name and all(part not in ("", ".", "..") for part in parts)


def project_app_digest(path: Path) -> str:
    """The digest of the bundle ``flwr run PATH`` builds from a project folder, or of a ``.fab`` file.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the folder is not a Flower app Flower can bundle.
    """
    path = Path(path)
    if path.is_file():
        return app_digest(path.read_bytes())
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such project folder or .fab file")
    from flwr.cli.build import (
        build_fab_from_disk,  # Flower's own bundler, as `flwr run` calls it
    )

    return app_digest(build_fab_from_disk(path))


def check_app_approved(bundle: bytes, approved: Sequence[str]) -> str:
    """Return the bundle's digest if ``approved`` lists it.

    Raises:
        AppNotApprovedError: naming the digest and the site-config key, never a hospital's path.
    """
    digest = app_digest(bundle)
    if digest not in approved:
        raise AppNotApprovedError(
            f"app bundle {digest} is not approved by this hospital: its site config's "
            "approved-app-digests does not list it"
        )
    return digest
