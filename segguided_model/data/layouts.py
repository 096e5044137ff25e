"""On-disk dataset layouts (BraTS 2021, BraTS 2023+, MSD Task01) and the case record they yield.

A layout says how a case's modality files and segmentation are named (``.nii.gz`` or
``.nii``) and which label conventions its sites may hold; ``data.discovery`` finds the
cases. Every layout is reduced to a ``CaseRecord`` whose images are listed in the
canonical modality order ``MODALITIES`` (T1, T1c, T2, FLAIR), the network's input channels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from segguided_model.data.entries import nifti_stem

MODALITIES: tuple[str, ...] = ("t1", "t1c", "t2", "flair")
"""Canonical modality order: the network's input channels."""


LABEL_ROLE = "label"
"""The role of a case's segmentation file, beside the modalities' roles (``MODALITIES``)."""


@dataclass(frozen=True)
class CaseLayout:
    """File naming of one per-modality case-folder layout.

    A file is named ``<case-id><separator><suffix>`` plus ``.nii.gz`` or ``.nii``.

    Attributes:
        name: identifier used on the command line and in site configs.
        modality_suffixes: canonical modality → file-name suffix (before the NIfTI ending).
        label_suffix: suffix of the segmentation file.
        conventions: the label conventions a site in this layout may hold, its release's
            own first (the default); ``labels.decide_convention`` picks among them.
        separator: what joins the case id and the suffix in a file name.
    """

    name: str
    modality_suffixes: Mapping[str, str]
    label_suffix: str
    conventions: tuple[str, ...]
    separator: str

    @property
    def default_convention(self) -> str:
        """The label convention this release uses."""
        return self.conventions[0]

    def suffix_of(self, role: str) -> str:
        """The file-name suffix of a modality or of ``LABEL_ROLE``."""
        return self.label_suffix if role == LABEL_ROLE else self.modality_suffixes[role]

    def file_name(self, case_id: str, role: str, ending: str = ".nii.gz") -> str:
        """The name of one file of a case, e.g. ``BraTS2021_00001_t1ce.nii.gz``."""
        return f"{case_id}{self.separator}{self.suffix_of(role)}{ending}"

    def role_of(self, case_id: str, file_name: str) -> str | None:
        """Which file of case ``case_id`` a file named ``file_name`` is (a modality or ``LABEL_ROLE``), if any."""
        stem = nifti_stem(file_name)
        prefix = f"{case_id}{self.separator}"
        if stem is None or not stem.startswith(prefix):
            return None
        suffix = stem[len(prefix) :]
        for role in (*MODALITIES, LABEL_ROLE):
            if self.suffix_of(role) == suffix:
                return role
        return None

    def modality_path(self, case_dir: Path, modality: str) -> Path:
        """Where a writer puts a modality file (``.nii.gz``)."""
        return case_dir / self.file_name(case_dir.name, modality)

    def label_path(self, case_dir: Path) -> Path:
        """Where a writer puts the segmentation (``.nii.gz``)."""
        return case_dir / self.file_name(case_dir.name, LABEL_ROLE)


CASE_FOLDER_LAYOUTS: Mapping[str, CaseLayout] = {
    layout.name: layout
    for layout in (
        CaseLayout(
            "brats2021",
            {"t1": "t1", "t1c": "t1ce", "t2": "t2", "flair": "flair"},
            "seg",
            ("brats2021", "brats2023", "brats2024"),
            "_",
        ),
        CaseLayout(
            "brats2023",
            {"t1": "t1n", "t1c": "t1c", "t2": "t2w", "flair": "t2f"},
            "seg",
            # BraTS 2024 post-treatment kept the 2023 naming.
            ("brats2023", "brats2024", "brats2021"),
            "-",
        ),
    )
}
"""Layouts with one folder per case and one file per modality."""

FLAT_FILE_CONVENTIONS: tuple[str, ...] = ("brats2021", "brats2023", "brats2024")
"""Label conventions a folder of loose segmentation files (``<case-id>.nii.gz``) may hold,
the default first; MSD labels cannot be told from BraTS 2023 by their values and must be declared."""

MSD_CHANNEL_ORDER: tuple[str, ...] = ("flair", "t1", "t1c", "t2")
"""Modality of each channel of an MSD Task01 4D image (FLAIR, T1w, T1gd, T2w)."""


@dataclass(frozen=True)
class FolderPairLayout:
    """File naming of the MSD Task01 layout: 4D images and labels in sibling folders.

    Attributes:
        name: identifier used on the command line and in site configs.
        images_folder: folder of labelled training images (``imagesTr``).
        labels_folder: folder of their segmentations, same file names (``labelsTr``).
        unlabelled_folder: folder of images without segmentations (``imagesTs``).
        channel_order: modality of each channel of the 4D image.
        conventions: the label conventions a site in this layout may hold (MSD's only).
    """

    name: str
    images_folder: str
    labels_folder: str
    unlabelled_folder: str
    channel_order: tuple[str, ...]
    conventions: tuple[str, ...]

    @property
    def default_convention(self) -> str:
        """The label convention this release uses."""
        return self.conventions[0]


MSD_LAYOUT = FolderPairLayout("msd", "imagesTr", "labelsTr", "imagesTs", MSD_CHANNEL_ORDER, ("msd",))
"""Medical Segmentation Decathlon Task01 (BrainTumour)."""

LAYOUT_NAMES: tuple[str, ...] = ("brats2021", "brats2023", MSD_LAYOUT.name)
"""Every layout a site folder may be in, as named on the command line."""


@dataclass(frozen=True)
class CaseRecord:
    """One case found on disk, independent of its layout.

    Attributes:
        case_id: the case's identifier (its folder or file stem).
        image_paths: canonical modality → file. For MSD every modality maps to the same
            4D file and ``channel_order`` says which channel holds which modality.
        label_path: the segmentation, or ``None`` for inference-only cases.
        layout: name of the layout it was found in.
        convention: name of its label convention (``labels.CONVENTIONS``), if known.
        channel_order: modality of each channel of a 4D image file; empty for
            one-file-per-modality layouts.
    """

    case_id: str
    image_paths: Mapping[str, Path]
    label_path: Path | None
    layout: str
    convention: str | None
    channel_order: tuple[str, ...] = field(default=())

    @property
    def has_label(self) -> bool:
        return self.label_path is not None


def layout_conventions(layout: str) -> tuple[str, ...]:
    """The candidate label conventions of a layout named on the command line, its default first.

    Raises:
        ValueError: ``layout`` is not in ``LAYOUT_NAMES``.
    """
    if layout == MSD_LAYOUT.name:
        return MSD_LAYOUT.conventions
    if layout not in CASE_FOLDER_LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {list(LAYOUT_NAMES)}")
    return CASE_FOLDER_LAYOUTS[layout].conventions
