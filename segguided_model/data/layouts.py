"""On-disk dataset layouts (BraTS 2021, BraTS 2023+, MSD Task01) and the case record they yield.

A layout says where a case's modality files and segmentation live. Every layout is
reduced to a ``CaseRecord`` whose images are listed in the canonical modality order
``MODALITIES`` (T1, T1c, T2, FLAIR), which is the network's input channel order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

MODALITIES: tuple[str, ...] = ("t1", "t1c", "t2", "flair")
"""Canonical modality order: the network's input channels."""


@dataclass(frozen=True)
class CaseLayout:
    """File naming of one per-modality case-folder layout.

    Attributes:
        name: identifier used on the command line and in site configs.
        modality_suffixes: canonical modality → file-name suffix (before ``.nii.gz``).
        label_suffix: suffix of the segmentation file.
        default_convention: the label convention this release uses.
        separator: what joins the case id and the suffix in a file name.
    """

    name: str
    modality_suffixes: Mapping[str, str]
    label_suffix: str
    default_convention: str
    separator: str

    def modality_path(self, case_dir: Path, modality: str) -> Path:
        return self._file(case_dir, self.modality_suffixes[modality])

    def label_path(self, case_dir: Path) -> Path:
        return self._file(case_dir, self.label_suffix)

    def _file(self, case_dir: Path, suffix: str) -> Path:
        return case_dir / f"{case_dir.name}{self.separator}{suffix}.nii.gz"


CASE_FOLDER_LAYOUTS: Mapping[str, CaseLayout] = {
    layout.name: layout
    for layout in (
        CaseLayout(
            "brats2021",
            {"t1": "t1", "t1c": "t1ce", "t2": "t2", "flair": "flair"},
            "seg",
            "brats2021",
            "_",
        ),
        CaseLayout(
            "brats2023",
            {"t1": "t1n", "t1c": "t1c", "t2": "t2w", "flair": "t2f"},
            "seg",
            "brats2023",
            "-",
        ),
    )
}
"""Layouts with one folder per case and one file per modality."""

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
        default_convention: the label convention this release uses.
    """

    name: str
    images_folder: str
    labels_folder: str
    unlabelled_folder: str
    channel_order: tuple[str, ...]
    default_convention: str


MSD_LAYOUT = FolderPairLayout("msd", "imagesTr", "labelsTr", "imagesTs", MSD_CHANNEL_ORDER, "msd")
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


def case_from_folder(case_dir: Path, layout: str | None = None) -> CaseRecord:
    """Read one BraTS case folder (2021 or 2023+ naming) into a ``CaseRecord``.

    Args:
        case_dir: folder named after the case, holding its modality files.
        layout: ``"brats2021"`` or ``"brats2023"``; detected from the file names if ``None``.

    Raises:
        FileNotFoundError: the folder does not exist, or a modality file is missing
            (the message names the file).
        ValueError: the folder matches no known layout.
    """
    case_dir = Path(case_dir)
    if not case_dir.is_dir():
        raise FileNotFoundError(f"case folder {case_dir} does not exist")
    candidates = [CASE_FOLDER_LAYOUTS[layout]] if layout else list(CASE_FOLDER_LAYOUTS.values())
    best = max(
        candidates,
        key=lambda candidate: sum(
            candidate.modality_path(case_dir, modality).exists() for modality in MODALITIES
        ),
    )
    present = {m: best.modality_path(case_dir, m) for m in MODALITIES}
    if layout is None and not any(path.exists() for path in present.values()):
        raise ValueError(
            f"{case_dir} matches no known case layout: expected files like "
            f"{case_dir.name}_t1.nii.gz (BraTS 2021) or {case_dir.name}-t1n.nii.gz (BraTS 2023)"
        )
    missing = [path for path in present.values() if not path.exists()]
    if missing:
        raise FileNotFoundError(
            f"case {case_dir.name}: missing modality file {missing[0].name} in {case_dir}"
        )
    label = best.label_path(case_dir)
    return CaseRecord(
        case_id=case_dir.name,
        image_paths=present,
        label_path=label if label.exists() else None,
        layout=best.name,
        convention=best.default_convention,
    )


def case_from_msd_image(image_path: Path, labels_dir: Path | None) -> CaseRecord:
    """Read one MSD Task01 4D image (and its label in ``labels_dir``, if any) into a ``CaseRecord``.

    Args:
        image_path: ``imagesTr/BRATS_001.nii.gz`` or ``imagesTs/...``; a 4D
            ``(H, W, D, 4)`` volume whose channels follow ``MSD_CHANNEL_ORDER``.
        labels_dir: folder holding the segmentation under the same file name, or
            ``None`` for unlabelled images.

    Raises:
        FileNotFoundError: the image does not exist (the message names it).
    """
    image_path = Path(image_path)
    if not image_path.is_file():
        raise FileNotFoundError(f"MSD image {image_path} does not exist")
    label = Path(labels_dir) / image_path.name if labels_dir is not None else None
    return CaseRecord(
        case_id=image_path.name.removesuffix(".nii.gz").removesuffix(".nii"),
        image_paths={modality: image_path for modality in MODALITIES},
        label_path=label if label is not None and label.is_file() else None,
        layout=MSD_LAYOUT.name,
        convention=MSD_LAYOUT.default_convention,
        channel_order=MSD_LAYOUT.channel_order,
    )
