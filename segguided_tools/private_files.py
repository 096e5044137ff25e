"""Folders and files that hold secrets: created owner-only whatever the umask, checked when they exist.

Key folders are ``0700``, private keys and secrets ``0600``, public files ``0644``. The modes
are set explicitly after creation, so a umask of ``000`` changes nothing. A folder that
already exists with wider permissions is repaired (``chmod 700``) and reported as such. A
private file that already exists with wider permissions is refused: someone may have read
it, so only its owner can decide whether to narrow it (``chmod 600``) or replace it; it is
never reported as private when it is not.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from segguided_model.atomic_write import write_bytes_atomically

FOLDER_MODE = 0o700
PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644


class PrivateFileError(ValueError):
    """A secret's file or folder is unusable (too open, not a folder); the message names it and the fix."""


@dataclass(frozen=True)
class FileAction:
    """What happened to one file or folder: ``created``, ``replaced``, ``kept`` or ``repaired``.

    Attributes:
        path: the file or folder.
        action: what was done.
        mode: its permission bits now (as read back from disk).
        private: whether it holds a secret (a private key or a shared secret).
        note: why it was repaired, or other detail worth printing.
    """

    path: Path
    action: str
    mode: int
    private: bool
    note: str = ""

    def describe(self) -> str:
        """One line for the operator: ``created  /path (private, 0600)``."""
        kind = "private" if self.private else ("folder" if self.path.is_dir() else "public")
        note = f"; {self.note}" if self.note else ""
        return f"{self.action:>8}  {self.path} ({kind}, {self.mode:04o}{note})"


def file_mode(path: Path) -> int:
    """The permission bits of ``path`` (``0o600``)."""
    return stat.S_IMODE(Path(path).stat().st_mode)


def ensure_private_folder(folder: Path) -> FileAction:
    """Create ``folder`` (and its parents) owner-only, or narrow an existing one to ``0700``.

    Raises:
        PrivateFileError: ``folder`` exists and is not a folder.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise PrivateFileError(f"{folder} exists and is not a folder; expected a folder for keys")
    if not folder.exists():
        folder.mkdir(parents=True)
        os.chmod(folder, FOLDER_MODE)
        return FileAction(folder, "created", file_mode(folder), private=False)
    before = file_mode(folder)
    if before & 0o077:
        os.chmod(folder, FOLDER_MODE)
        return FileAction(folder, "repaired", file_mode(folder), private=False, note=f"was {before:04o}")
    return FileAction(folder, "kept", before, private=False)


def check_private_file(path: Path) -> FileAction:
    """An existing secret, kept: refused if anyone but its owner may read or write it.

    Raises:
        PrivateFileError: ``path`` is readable or writable by its group or others.
    """
    mode = file_mode(path)
    if mode & 0o077:
        raise PrivateFileError(
            f"{path} has mode {mode:04o}: others on this machine may have read it, expected {PRIVATE_MODE:04o}. "
            f"If nobody else could have, narrow it with `chmod 600 {path}`; otherwise replace it with --force"
        )
    return FileAction(path, "kept", mode, private=True)


def write_file(path: Path, data: bytes, *, private: bool) -> FileAction:
    """Write ``data`` atomically with mode ``0600`` (private) or ``0644``; report created or replaced."""
    path = Path(path)
    existed = path.exists()
    # mkstemp creates the temporary file 0600, so a secret is never readable by others, not even briefly.
    write_bytes_atomically(path, data)
    os.chmod(path, PRIVATE_MODE if private else PUBLIC_MODE)
    return FileAction(path, "replaced" if existed else "created", file_mode(path), private=private)
