"""Find the cases in a site's data folder and tell its layout, without reading any image.

A site folder is either one folder per case (BraTS 2021 ``BraTS2021_00000/`` or BraTS
2023+ ``BraTS-GLI-00000-000/``, any ``BraTS-*`` prefix) or the MSD Task01 pair of
``imagesTr``/``labelsTr`` folders (plus unlabelled ``imagesTs``). Everything in the folder
that is not a case is reported as a stray entry, never silently dropped; hidden entries
(``.DS_Store``, lock files) are ignored. A case folder missing one of its modality files
is reported as a broken case, so the QA gate can reject it by name.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from segguided_model.data.layouts import (
    CASE_FOLDER_LAYOUTS,
    LAYOUT_NAMES,
    MODALITIES,
    MSD_LAYOUT,
    CaseRecord,
    case_from_folder,
    case_from_msd_image,
)
from segguided_model.labels import get_convention

MSD_METADATA_FILES: frozenset[str] = frozenset({"dataset.json", "labelsTs"})
"""Entries of an MSD task folder that belong to the release but hold no case."""


@dataclass(frozen=True)
class StrayEntry:
    """Something in a site folder that is not a case.

    Attributes:
        name: the entry's name, relative to the site folder.
        reason: why it is not a case, for the site's own report.
    """

    name: str
    reason: str


@dataclass(frozen=True)
class BrokenCase:
    """A folder that is recognisably a case but cannot be used as one.

    Attributes:
        case_id: the case's folder name.
        reason: a QA reason code (``missing-modality``).
        detail: what exactly is wrong, naming the file.
    """

    case_id: str
    reason: str
    detail: str


@dataclass(frozen=True)
class DiscoveryResult:
    """What ``discover_cases`` found in a site folder.

    Attributes:
        site_dir: the folder searched.
        layout: the site's layout (forced, or the one most cases use); ``None`` when no
            case was found.
        convention: the label convention cases carry for now (forced, or the layout's
            default); the QA gate refines it from the label values.
        cases: usable case records, sorted by case id.
        broken: recognisable cases that cannot be used (a missing modality).
        strays: entries that are not cases.
    """

    site_dir: Path
    layout: str | None
    convention: str | None
    cases: list[CaseRecord] = field(default_factory=list)
    broken: list[BrokenCase] = field(default_factory=list)
    strays: list[StrayEntry] = field(default_factory=list)


def discover_cases(
    site_dir: Path | str, layout: str | None = None, convention: str | None = None
) -> DiscoveryResult:
    """Find every case in ``site_dir``.

    Args:
        site_dir: the site's data folder.
        layout: force ``"brats2021"``, ``"brats2023"`` or ``"msd"``; detected if ``None``
            (an ``imagesTr`` folder means MSD, otherwise case folders are matched by
            their file names, each case on its own).
        convention: force a label convention (``labels.CONVENTIONS``) on every case;
            otherwise each case carries its layout's default.

    Returns:
        A ``DiscoveryResult``; cases without a segmentation have ``label_path=None``.

    Raises:
        FileNotFoundError: ``site_dir`` does not exist or is not a folder.
        ValueError: ``layout`` or ``convention`` is unknown.
    """
    site_dir = Path(site_dir)
    if not site_dir.is_dir():
        raise FileNotFoundError(f"site data folder {site_dir} does not exist or is not a folder")
    if layout is not None and layout not in LAYOUT_NAMES:
        raise ValueError(f"unknown layout {layout!r} for {site_dir}; expected one of {list(LAYOUT_NAMES)}")
    if convention is not None:
        get_convention(convention)
    if layout == MSD_LAYOUT.name or (layout is None and (site_dir / MSD_LAYOUT.images_folder).is_dir()):
        result = _discover_msd(site_dir)
    else:
        result = _discover_case_folders(site_dir, layout)
    if convention is not None:
        result = DiscoveryResult(
            site_dir=result.site_dir,
            layout=result.layout,
            convention=convention,
            cases=[replace(case, convention=convention) for case in result.cases],
            broken=result.broken,
            strays=result.strays,
        )
    return result


def _visible_entries(folder: Path) -> list[Path]:
    return sorted(entry for entry in folder.iterdir() if not entry.name.startswith("."))


def _is_nifti(path: Path) -> bool:
    return path.is_file() and path.name.endswith((".nii.gz", ".nii"))


def _discover_msd(site_dir: Path) -> DiscoveryResult:
    images_dir = site_dir / MSD_LAYOUT.images_folder
    labels_dir = site_dir / MSD_LAYOUT.labels_folder
    known = {MSD_LAYOUT.images_folder, MSD_LAYOUT.labels_folder, MSD_LAYOUT.unlabelled_folder}
    strays = [
        StrayEntry(entry.name, "not part of the MSD layout (expected imagesTr, labelsTr, imagesTs)")
        for entry in _visible_entries(site_dir)
        if entry.name not in known | MSD_METADATA_FILES
    ]
    cases: list[CaseRecord] = []
    for folder, labels in ((images_dir, labels_dir), (site_dir / MSD_LAYOUT.unlabelled_folder, None)):
        if not folder.is_dir():
            continue
        for entry in _visible_entries(folder):
            if _is_nifti(entry):
                cases.append(case_from_msd_image(entry, labels))
            else:
                strays.append(StrayEntry(f"{folder.name}/{entry.name}", "not a NIfTI image"))
    return DiscoveryResult(
        site_dir=site_dir,
        layout=MSD_LAYOUT.name,
        convention=MSD_LAYOUT.default_convention,
        cases=sorted(cases, key=lambda case: case.case_id),
        strays=strays,
    )


def _discover_case_folders(site_dir: Path, layout: str | None) -> DiscoveryResult:
    cases: list[CaseRecord] = []
    broken: list[BrokenCase] = []
    strays: list[StrayEntry] = []
    for entry in _visible_entries(site_dir):
        if not entry.is_dir():
            strays.append(StrayEntry(entry.name, "a file, not a case folder"))
            continue
        matched = _matching_layout(entry, layout)
        if matched is None:
            strays.append(StrayEntry(entry.name, "a folder whose files match no case layout"))
            continue
        try:
            cases.append(case_from_folder(entry, matched))
        except FileNotFoundError as error:
            broken.append(BrokenCase(entry.name, "missing-modality", str(error)))
    site_layout = layout
    if site_layout is None and cases:
        site_layout = Counter(case.layout for case in cases).most_common(1)[0][0]
    return DiscoveryResult(
        site_dir=site_dir,
        layout=site_layout,
        convention=CASE_FOLDER_LAYOUTS[site_layout].default_convention if site_layout else None,
        cases=cases,
        broken=broken,
        strays=strays,
    )


def _matching_layout(case_dir: Path, layout: str | None) -> str | None:
    """The layout whose modality or label files ``case_dir`` holds most of, or ``None``."""
    candidates = [CASE_FOLDER_LAYOUTS[layout]] if layout else list(CASE_FOLDER_LAYOUTS.values())
    scores = {
        candidate.name: sum(candidate.modality_path(case_dir, m).exists() for m in MODALITIES)
        + candidate.label_path(case_dir).exists()
        for candidate in candidates
    }
    best = max(scores, key=lambda name: scores[name])
    return best if scores[best] > 0 else None
