"""The segmentations of a folder, by case id: what ``segguided evaluate`` reads predictions and references from.

A folder holds loose files (``<case-id>-seg.nii.gz`` as ``segguided segment`` writes them,
or ``<case-id>.nii.gz``; ``.nii`` alike), BraTS case folders (their segmentation file), or
is an MSD task folder (``labelsTr/``). Hidden entries are skipped (``data.entries``);
``segment``'s other outputs (attention maps, overlays) are recognised as such; a broken
link or a case given twice is an error; anything else is listed in ``skipped`` for a warning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from segguided_model.data.entries import (
    describe_broken_link,
    is_broken_link,
    nifti_stem,
    visible_entries,
)
from segguided_model.data.layouts import (
    CASE_FOLDER_LAYOUTS,
    FLAT_FILE_CONVENTIONS,
    LABEL_ROLE,
    MSD_LAYOUT,
)
from segguided_tools.cli.command_error import CommandError
from segguided_tools.cli.segment import (
    ATTENTION_SUFFIXES,
    OVERLAY_SUFFIX,
    SEGMENTATION_SUFFIX,
)


@dataclass(frozen=True)
class SegmentationFolder:
    """The segmentation files found in one folder.

    Attributes:
        folder: the folder searched.
        files: case id → segmentation file.
        conventions: the label conventions the folder may hold, its default first
            (``labels.decide_convention`` picks one for all its files).
        skipped: ``"<entry>: <why>"`` for each visible entry that holds no segmentation.
    """

    folder: Path
    files: dict[str, Path]
    conventions: tuple[str, ...]
    skipped: list[str] = field(default_factory=list)


def find_segmentations(folder: Path) -> SegmentationFolder:
    """Find every segmentation in ``folder`` (loose files, BraTS case folders or an MSD ``labelsTr``).

    Raises:
        CommandError: ``folder`` is missing, an entry is a broken link, or a case has two
            segmentation files (the message names them).
    """
    if not folder.is_dir():
        raise CommandError(f"folder {folder} does not exist")
    labels_dir = folder / MSD_LAYOUT.labels_folder
    if labels_dir.is_dir():
        files: dict[str, Path] = {}
        skipped: list[str] = []
        for entry in visible_entries(labels_dir):
            _add(files, skipped, entry, nifti_stem(entry.name), folder)
        return SegmentationFolder(folder, files, MSD_LAYOUT.conventions, skipped)
    return _flat_files_and_case_folders(folder)


def _flat_files_and_case_folders(folder: Path) -> SegmentationFolder:
    files: dict[str, Path] = {}
    skipped: list[str] = []
    layouts: set[str] = set()
    for entry in visible_entries(folder):
        stem = nifti_stem(entry.name)
        if entry.is_dir():
            found = _case_folder_segmentation(entry)
            if found is None:
                skipped.append(f"{entry.name}: a folder without a segmentation file")
                continue
            layout, path = found
            layouts.add(layout)
            _add(files, skipped, path, entry.name, folder)
        elif stem is not None and stem.endswith(ATTENTION_SUFFIXES):
            continue  # segment's attention maps
        elif stem is not None or is_broken_link(entry):
            case_id = stem.removesuffix(SEGMENTATION_SUFFIX) if stem else entry.name
            _add(files, skipped, entry, case_id, folder)
        elif not entry.name.endswith(OVERLAY_SUFFIX):
            skipped.append(f"{entry.name}: not a NIfTI file")
    only_case_folders = len(layouts) == 1 and all(path.parent != folder for path in files.values())
    conventions = CASE_FOLDER_LAYOUTS[layouts.pop()].conventions if only_case_folders else FLAT_FILE_CONVENTIONS
    return SegmentationFolder(folder, files, conventions, skipped)


def _case_folder_segmentation(case_dir: Path) -> tuple[str, Path] | None:
    """The layout and segmentation file of a BraTS case folder, if it has one."""
    for layout in CASE_FOLDER_LAYOUTS.values():
        labels = [
            entry for entry in visible_entries(case_dir) if layout.role_of(case_dir.name, entry.name) == LABEL_ROLE
        ]
        if len(labels) > 1:
            raise CommandError(
                f"case {case_dir.name} has {len(labels)} segmentation files in {case_dir}: "
                f"{' and '.join(path.name for path in labels)}; keep one"
            )
        if labels:
            return layout.name, labels[0]
    return None


def _add(files: dict[str, Path], skipped: list[str], path: Path, case_id: str | None, folder: Path) -> None:
    if is_broken_link(path):
        raise CommandError(describe_broken_link(path))
    if case_id is None or not path.is_file():
        skipped.append(f"{path.name}: not a NIfTI file")
        return
    if case_id in files:
        raise CommandError(f"case {case_id} has two files in {folder}: {files[case_id].name} and {path.name}")
    files[case_id] = path
