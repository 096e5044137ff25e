"""Atomic file writes: readers see the old file or the new one, never half of either.

A write goes to a hidden temporary file beside its target (``.<name>.<random>.tmp``),
is flushed to disk and renamed over the target. A process killed mid-write leaves that
temporary file behind; ``remove_stale_temporaries`` clears them. A full disk is reported
as ``DiskFullError``, naming the file, the space it needs and the space left.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

TEMPORARY_NAME = re.compile(r"^\.(?P<target>.+)\.[A-Za-z0-9_]+\.tmp$")
"""Names of the temporary files ``atomic_output`` creates (``.round-0002.pt.k3j2x1.tmp``)."""

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(OSError):
    """A file could not be written because its file system is full (or over quota).

    Attributes:
        path: the file that was being written.
        needed_bytes: its size, when known.
        free_bytes: space left on the file system when the write failed.
    """

    def __init__(self, path: Path, needed_bytes: int | None, free_bytes: int) -> None:
        self.path, self.needed_bytes, self.free_bytes = Path(path), needed_bytes, free_bytes
        needed = f"it needs {_mib(needed_bytes)}, " if needed_bytes is not None else ""
        super().__init__(
            errno.ENOSPC,
            f"cannot write {path}: no space left on its disk ({needed}{_mib(free_bytes)} free in "
            f"{path.parent}); free some space or point the output elsewhere",
        )

    def __str__(self) -> str:
        return str(self.args[1])


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def _free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 0


@contextmanager
def atomic_output(path: Path, expected_bytes: int | None = None) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path``; on success fsync it and rename it over ``path``.

    If the body raises, the temporary file is removed and ``path`` is untouched.

    Args:
        path: the file to (re)write; its folder is created if missing.
        expected_bytes: the size about to be written, if known: refused up front, as a
            ``DiskFullError``, when the file system has less space left.

    Raises:
        DiskFullError: the file system is full (or over quota) before or while writing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if expected_bytes is not None and _free_bytes(path.parent) < expected_bytes:
        raise DiskFullError(path, expected_bytes, _free_bytes(path.parent))
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        if error.errno in _DISK_FULL and not isinstance(error, DiskFullError):
            raise DiskFullError(path, expected_bytes, _free_bytes(path.parent)) from error
        raise
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def write_bytes_atomically(path: Path, data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` atomically; ``DiskFullError`` if the disk cannot hold it."""
    with atomic_output(path, expected_bytes=len(data)) as handle:
        handle.write(data)


def write_text_atomically(path: Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically; ``DiskFullError`` if the disk cannot hold it."""
    write_bytes_atomically(path, text.encode("utf-8"))


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files that writes interrupted by a crash left in ``folder``.

    Call it only while no other process writes into ``folder`` (a run folder under its
    lock): a temporary file of a write in progress looks the same.

    Returns:
        The files removed.
    """
    removed = []
    for entry in Path(folder).iterdir():
        if entry.is_file() and TEMPORARY_NAME.match(entry.name):
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed
