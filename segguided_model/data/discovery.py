"""Find the cases in a site's data folder and tell its layout, without reading any image.

A site folder is either one folder per case (BraTS 2021 ``BraTS2021_00000/`` or BraTS
2023+ ``BraTS-GLI-00000-000/``, any ``BraTS-*`` prefix) or the MSD Task01 pair of
``imagesTr``/``labelsTr`` folders (plus unlabelled ``imagesTs``); files are ``.nii.gz`` or
``.nii``. Every visible entry is accounted for (hidden ones are skipped, see
``data.entries``): a case, a broken case (a missing modality, a broken link, a file given
twice, a NIfTI file the layout does not name — perhaps a misnamed segmentation) that the
QA gate rejects by name, or a stray entry reported to the site. Nothing is dropped silently.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping

from segguided_model.data.entries import (
    describe_broken_link,
    is_broken_link,
    nifti_stem,
    visible_entries,
)
from segguided_model.data.layouts import (
    CASE_FOLDER_LAYOUTS,
    LABEL_ROLE,
    LAYOUT_NAMES,
    MODALITIES,
    MSD_LAYOUT,
    CaseLayout,
    CaseRecord,
)
from segguided_model.labels import get_convention

DISCOVERY_FAILURES: Mapping[str, str] = {
    "missing-modality": "a modality file is missing",
    "duplicate-file": "a case has one of its files twice (e.g. as .nii and .nii.gz)",
    "unrecognised-file": "a case folder holds a NIfTI file its layout does not name (a misnamed segmentation?)",
}
"""Reasons a recognisable case cannot be used, code → description (part of ``qa.REASONS``);
a broken link is ``volume_file.READ_FAILURES["broken-link"]``."""

BROKEN_LINK = "broken-link"

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
        reason: a code from ``DISCOVERY_FAILURES`` or ``broken-link``.
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
        broken: recognisable cases that cannot be used (a missing modality, a broken
            link, a duplicate or unrecognised file).
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
            otherwise each case carries its layout's default until the QA gate decides.

    Returns:
        A ``DiscoveryResult``; cases without a segmentation have ``label_path=None``.

    Raises:
        FileNotFoundError: ``site_dir`` does not exist or is not a folder.
        ValueError: ``layout`` or ``convention`` is unknown.
    """
    site_dir = _checked_folder(site_dir, "site data folder", layout, convention)
    if layout == MSD_LAYOUT.name or (layout is None and (site_dir / MSD_LAYOUT.images_folder).is_dir()):
        result = _discover_msd(site_dir)
    else:
        result = _discover_case_folders(site_dir, layout)
    return _with_convention(result, convention)


def discover_case_folder(
    case_dir: Path | str, layout: str | None = None, convention: str | None = None
) -> DiscoveryResult:
    """Look at one case folder alone, as ``discover_cases`` looks at each case folder of a site.

    Args:
        case_dir: a BraTS case folder (2021 or 2023+ naming).
        layout: force ``"brats2021"`` or ``"brats2023"``; detected if ``None``.
        convention: force a label convention on the case.

    Returns:
        A ``DiscoveryResult`` whose ``site_dir`` is ``case_dir``, holding the case, or the
        case as broken, or the folder as a stray when its files match no layout.

    Raises:
        FileNotFoundError: ``case_dir`` does not exist or is not a folder.
        ValueError: ``layout`` is not a case-folder layout, or ``convention`` is unknown.
    """
    case_dir = _checked_folder(case_dir, "case folder", layout, convention)
    if layout is not None and layout not in CASE_FOLDER_LAYOUTS:
        raise ValueError(f"layout {layout!r} has no case folders; expected one of {sorted(CASE_FOLDER_LAYOUTS)}")
    found = _CaseFolderScan(case_dir, layout)
    result = DiscoveryResult(
        site_dir=case_dir,
        layout=found.layout.name if found.layout else None,
        convention=found.layout.default_convention if found.layout else None,
        cases=[found.record] if found.record else [],
        broken=[found.broken] if found.broken else [],
        strays=found.strays,
    )
    return _with_convention(result, convention)


def case_from_folder(case_dir: Path | str, layout: str | None = None) -> CaseRecord:
    """Read one BraTS case folder (2021 or 2023+ naming, ``.nii.gz`` or ``.nii``) into a ``CaseRecord``.

    Args:
        case_dir: folder named after the case, holding its modality files.
        layout: ``"brats2021"`` or ``"brats2023"``; detected from the file names if ``None``.

    Raises:
        FileNotFoundError: the folder does not exist, or the case is broken (the message
            says why and names the file).
        ValueError: the folder matches no known layout.
    """
    found = discover_case_folder(case_dir, layout)
    if found.broken:
        raise FileNotFoundError(found.broken[0].detail)
    if not found.cases:
        raise ValueError(f"{found.site_dir}: {found.strays[0].reason}")
    return found.cases[0]


def _checked_folder(folder: Path | str, what: str, layout: str | None, convention: str | None) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} {folder} does not exist or is not a folder")
    if layout is not None and layout not in LAYOUT_NAMES:
        raise ValueError(f"unknown layout {layout!r} for {folder}; expected one of {list(LAYOUT_NAMES)}")
    if convention is not None:
        get_convention(convention)
    return folder


def _with_convention(result: DiscoveryResult, convention: str | None) -> DiscoveryResult:
    if convention is None:
        return result
    return replace(
        result, convention=convention, cases=[replace(case, convention=convention) for case in result.cases]
    )


class _CaseFolderScan:
    """Every visible entry of one case folder, sorted into the case's files, problems and strays.

    Sets ``layout`` (``None`` when no file is named like any layout's), and then exactly
    one of ``record`` and ``broken``; ``strays`` lists entries that are no NIfTI file of
    the case (notes, sub-folders), named ``<case-id>/<entry>``.
    """

    def __init__(self, case_dir: Path, layout: str | None) -> None:
        self.case_id = case_dir.name
        self.record: CaseRecord | None = None
        self.broken: BrokenCase | None = None
        self.strays: list[StrayEntry] = []
        entries = visible_entries(case_dir)
        self.layout = _matching_layout(self.case_id, entries, layout)
        if self.layout is None:
            niftis = sum(nifti_stem(entry.name) is not None for entry in entries)
            self.strays.append(StrayEntry(self.case_id, (
                f"a folder whose {niftis} NIfTI file(s) match no case layout (expected names like "
                f"{self.case_id}_t1.nii.gz for BraTS 2021 or {self.case_id}-t1n.nii.gz for BraTS 2023)"
            )))
            return
        files: dict[str, list[Path]] = {}
        broken_links: list[Path] = []
        unrecognised: list[Path] = []
        for entry in entries:
            role = self.layout.role_of(self.case_id, entry.name)
            if is_broken_link(entry):
                broken_links.append(entry)
            elif role is not None and entry.is_file():
                files.setdefault(role, []).append(entry)
            elif nifti_stem(entry.name) is not None:
                unrecognised.append(entry)
            else:
                kind = "a folder inside a case folder" if entry.is_dir() else "not a NIfTI file"
                self.strays.append(StrayEntry(f"{self.case_id}/{entry.name}", kind))
        self.broken = self._problem(self.layout, case_dir, files, broken_links, unrecognised)
        if self.broken is None:
            label = files.get(LABEL_ROLE)
            self.record = CaseRecord(
                case_id=self.case_id,
                image_paths={modality: files[modality][0] for modality in MODALITIES},
                label_path=label[0] if label else None,
                layout=self.layout.name,
                convention=self.layout.default_convention,
            )

    def _problem(
        self,
        layout: CaseLayout,
        case_dir: Path,
        files: dict[str, list[Path]],
        broken_links: list[Path],
        unrecognised: list[Path],
    ) -> BrokenCase | None:
        case_id = self.case_id
        if broken_links:
            return BrokenCase(case_id, BROKEN_LINK, "; ".join(describe_broken_link(path) for path in broken_links))
        for role, paths in files.items():
            if len(paths) > 1:
                names = " and ".join(path.name for path in paths)
                return BrokenCase(case_id, "duplicate-file", f"case {case_id}: {names} are both its {role} file; keep one")
        unnamed = f" ({', '.join(p.name for p in unrecognised)} in the folder is named like no {layout.name} file)"
        missing = [modality for modality in MODALITIES if modality not in files]
        if missing:
            return BrokenCase(case_id, "missing-modality", (
                f"case {case_id}: missing modality file {layout.file_name(case_id, missing[0])} in {case_dir}"
                + (unnamed if unrecognised else "")
            ))
        if unrecognised:
            expected = ", ".join(layout.file_name(case_id, role) for role in (*MODALITIES, LABEL_ROLE))
            return BrokenCase(case_id, "unrecognised-file", (
                f"case {case_id}: {', '.join(p.name for p in unrecognised)} in {case_dir} is no file of a "
                f"{layout.name} case (expected {expected}, or .nii); rename it if it is the segmentation, "
                "otherwise move it out of the case folder"
            ))
        return None


def _matching_layout(case_id: str, entries: list[Path], layout: str | None) -> CaseLayout | None:
    """The layout that names most of ``entries`` as files of ``case_id``, or ``None`` if none names any."""
    candidates = [CASE_FOLDER_LAYOUTS[layout]] if layout else list(CASE_FOLDER_LAYOUTS.values())
    scores = {
        candidate.name: sum(candidate.role_of(case_id, entry.name) is not None for entry in entries)
        for candidate in candidates
    }
    best = max(candidates, key=lambda candidate: scores[candidate.name])
    return best if scores[best.name] > 0 else None


def _discover_case_folders(site_dir: Path, layout: str | None) -> DiscoveryResult:
    cases: list[CaseRecord] = []
    broken: list[BrokenCase] = []
    strays: list[StrayEntry] = []
    for entry in visible_entries(site_dir):
        if is_broken_link(entry):
            broken.append(BrokenCase(entry.name, BROKEN_LINK, describe_broken_link(entry)))
            continue
        if not entry.is_dir():
            strays.append(StrayEntry(entry.name, "a file, not a case folder"))
            continue
        scan = _CaseFolderScan(entry, layout)
        cases.extend([scan.record] if scan.record else [])
        broken.extend([scan.broken] if scan.broken else [])
        strays.extend(scan.strays)
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


def _nifti_files_by_stem(folder: Path, strays: list[StrayEntry]) -> dict[str, list[Path]]:
    """Stem → NIfTI entries of ``folder`` (broken links included); other entries become strays."""
    by_stem: dict[str, list[Path]] = {}
    for entry in visible_entries(folder):
        stem = nifti_stem(entry.name)
        if stem is None or not (entry.is_file() or is_broken_link(entry)):
            strays.append(StrayEntry(f"{folder.name}/{entry.name}", "not a NIfTI image"))
            continue
        by_stem.setdefault(stem, []).append(entry)
    return by_stem


def _discover_msd(site_dir: Path) -> DiscoveryResult:
    known = {MSD_LAYOUT.images_folder, MSD_LAYOUT.labels_folder, MSD_LAYOUT.unlabelled_folder}
    strays = [
        StrayEntry(entry.name, "not part of the MSD layout (expected imagesTr, labelsTr, imagesTs)")
        for entry in visible_entries(site_dir)
        if entry.name not in known | MSD_METADATA_FILES
    ]
    labels_dir = site_dir / MSD_LAYOUT.labels_folder
    labels = _nifti_files_by_stem(labels_dir, strays) if labels_dir.is_dir() else {}
    cases: list[CaseRecord] = []
    broken: list[BrokenCase] = []
    for folder_name, labelled in ((MSD_LAYOUT.images_folder, True), (MSD_LAYOUT.unlabelled_folder, False)):
        folder = site_dir / folder_name
        if not folder.is_dir():
            continue
        for stem, images in sorted(_nifti_files_by_stem(folder, strays).items()):
            label_files = labels.pop(stem, []) if labelled else []
            dead = [path for path in (*images, *label_files) if is_broken_link(path)]
            if dead:
                broken.append(BrokenCase(stem, BROKEN_LINK, "; ".join(describe_broken_link(path) for path in dead)))
            elif len(images) > 1 or len(label_files) > 1:
                names = " and ".join(path.name for path in (images if len(images) > 1 else label_files))
                broken.append(BrokenCase(stem, "duplicate-file", f"case {stem}: {names} are the same case's file; keep one"))
            else:
                cases.append(CaseRecord(
                    case_id=stem,
                    image_paths={modality: images[0] for modality in MODALITIES},
                    label_path=label_files[0] if label_files else None,
                    layout=MSD_LAYOUT.name,
                    convention=MSD_LAYOUT.default_convention,
                    channel_order=MSD_LAYOUT.channel_order,
                ))
    for _, files in sorted(labels.items()):
        strays.extend(
            StrayEntry(f"{labels_dir.name}/{path.name}", f"a segmentation without an image in {MSD_LAYOUT.images_folder}")
            for path in files
        )
    return DiscoveryResult(
        site_dir=site_dir,
        layout=MSD_LAYOUT.name,
        convention=MSD_LAYOUT.default_convention,
        cases=sorted(cases, key=lambda case: case.case_id),
        broken=broken,
        strays=strays,
    )
