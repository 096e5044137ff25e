"""Entries of a data folder: which ones are visible, which are NIfTI files, which are broken links.

Every place that lists a folder of cases, sites or segmentations (discovery, the QA gate,
simulation partitions, ``segguided evaluate``) lists it with ``visible_entries``, so hidden
entries are skipped everywhere alike: dot-files and dot-folders (``.DS_Store``,
``.ipynb_checkpoints``, macOS AppleDouble sidecars ``._X.nii.gz``) and the ``__MACOSX``
folder that zip tools add. A NIfTI file is ``.nii.gz`` or uncompressed ``.nii``, both
accepted wherever one is.
"""

from __future__ import annotations

import os
from pathlib import Path

NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")
"""File-name endings of a NIfTI file, compressed first."""

HIDDEN_FOLDER_NAMES: frozenset[str] = frozenset({"__MACOSX"})
"""Names without a leading dot that are hidden all the same (macOS zip metadata)."""


def is_hidden(name: str) -> bool:
    """Whether an entry named ``name`` is skipped: a dot-name or a ``HIDDEN_FOLDER_NAMES`` member."""
    return name.startswith(".") or name in HIDDEN_FOLDER_NAMES


def visible_entries(folder: Path | str) -> list[Path]:
    """The entries of ``folder`` that are not hidden, sorted by name.

    Broken symbolic links are listed (they are visible; see ``is_broken_link``).

    Raises:
        FileNotFoundError / NotADirectoryError: ``folder`` is not a readable folder.
    """
    return sorted(entry for entry in Path(folder).iterdir() if not is_hidden(entry.name))


def nifti_stem(name: str) -> str | None:
    """``name`` without its NIfTI ending (``a.nii.gz`` and ``a.nii`` → ``a``), or ``None`` if it has none."""
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def is_broken_link(path: Path) -> bool:
    """Whether ``path`` is a symbolic link whose target does not exist (an unmounted share, an annex)."""
    return path.is_symlink() and not path.exists()


def describe_broken_link(path: Path) -> str:
    """``"<path> is a broken link to <target>"``, for reports that stay on the site."""
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    return f"{path} is a broken link to {target}"
