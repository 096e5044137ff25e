"""Deterministic preprocessing shared by training, central validation and ``segguided segment``.

A ``CaseRecord`` becomes a dict item (``case_to_item``) that ``deterministic_transforms``
turn into::

    image       (4, D, H, W) float32 MetaTensor, MODALITIES order (T1, T1c, T2, FLAIR),
                RAS orientation, z-scored per channel over non-zero (brain) voxels
    label       (1, D, H, W) int16 MetaTensor in the case's label convention (with labels)
    regions     (3, D, H, W) float32, ET/TC/WT (with labels)
    subregions  (3, D, H, W) float32, NCR/ED/ET (with labels)
    spacing     voxel size in mm along D, H, W of the RAS grid, from the file's affine
    convention  name of the label convention (required with labels: from the QA gate)
    case_id     the case's identifier

Files are read by ``data.volume_file.read_volume``, the reader the QA gate uses, so both
accept the same files (``.nii``, 4D singletons). Nothing is resampled: the voxel grid only
changes by the axis flips and permutations of the reorientation to RAS, which
``restore_orientation`` undoes exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Hashable, Mapping

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    MapTransform,
    NormalizeIntensityd,
    Orientation,
    Orientationd,
)

from segguided_model.data.layouts import MODALITIES, CaseRecord
from segguided_model.data.volume_file import read_label_map, read_volume, spacing_of
from segguided_model.labels import (
    get_convention,
    regions_from_subregions,
    subregion_masks,
)

IMAGE_KEY = "image"
LABEL_KEY = "label"
REGIONS_KEY = "regions"
SUBREGIONS_KEY = "subregions"
CONVENTION_KEY = "convention"
CASE_ID_KEY = "case_id"
CHANNEL_ORDER_KEY = "channel_order"
SPACING_KEY = "spacing"

_AXIS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))
"""Axis-code letters for MONAI's Orientation (NIfTI world space is RAS)."""


def case_to_item(record: CaseRecord) -> dict[str, Any]:
    """The dict item of one case for the MONAI dict transforms.

    One key per modality in ``MODALITIES`` pointing at its file or, for 4D MSD images
    (``record.channel_order`` non-empty), ``"image"`` pointing at the 4D file and
    ``"channel_order"`` saying which channel holds which modality. ``"label"`` only when
    the record has one; ``"convention"`` may be ``None`` only for a case read without it.

    Raises:
        ValueError: the record lacks a modality or names several 4D files.
    """
    item: dict[str, Any] = {CASE_ID_KEY: record.case_id, CONVENTION_KEY: record.convention}
    missing = [m for m in MODALITIES if m not in record.image_paths]
    if missing:
        raise ValueError(f"case {record.case_id}: no image file for modality {missing[0]!r}")
    if record.channel_order:
        files = {Path(record.image_paths[m]) for m in MODALITIES}
        if len(files) != 1:
            raise ValueError(
                f"case {record.case_id}: a channel_order needs one 4D image file, got {sorted(map(str, files))}"
            )
        item[IMAGE_KEY] = str(files.pop())
        item[CHANNEL_ORDER_KEY] = tuple(record.channel_order)
    else:
        for modality in MODALITIES:
            item[modality] = str(record.image_paths[modality])
    if record.label_path is not None:
        item[LABEL_KEY] = str(record.label_path)
    return item


class LoadVolumed(MapTransform):
    """Read the items' NIfTI files with ``volume_file.read_volume`` into channel-first MetaTensors.

    Modality keys and ``"label"`` become ``(1, X, Y, Z)`` (a 4D singleton file is read as
    3D); ``"image"`` with a ``"channel_order"`` becomes ``(C, X, Y, Z)``. Images are float32,
    the label int16 (``read_label_map``: non-integer labels are refused). The metadata holds
    what the later transforms need: ``affine`` and ``original_affine`` (the file's),
    ``spatial_shape`` and ``filename_or_obj``.

    Raises:
        FileNotFoundError, volume_file.VolumeFileError: a file is missing or unreadable
            (the message names it).
    """

    def __init__(self, keys: list[str]) -> None:
        super().__init__(keys=keys, allow_missing_keys=True)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        item = dict(data)
        for key in self.key_iterator(item):
            path = item[key]
            if key == LABEL_KEY:
                volume, array, _ = read_label_map(path)
            else:
                channels = len(item[CHANNEL_ORDER_KEY]) if key == IMAGE_KEY and item.get(CHANNEL_ORDER_KEY) else 1
                volume = read_volume(path, channels=channels)
                array = volume.data.astype(np.float32, copy=False)
            channel_first = np.moveaxis(array, -1, 0) if array.ndim == 4 else array[None]
            affine = torch.as_tensor(volume.grid.affine, dtype=torch.float64)
            meta = {
                "affine": affine,
                "original_affine": volume.grid.affine,
                "spatial_shape": np.asarray(volume.grid.shape),
                "filename_or_obj": str(path),
                "space": "RAS",
            }
            item[key] = MetaTensor(torch.from_numpy(np.ascontiguousarray(channel_first)), meta=meta)
        return item


class RecordSpacingd(MapTransform):
    """Write the voxel spacing of ``"image"`` (mm along its D, H, W, from its affine) to ``"spacing"``.

    Placed after the reorientation to RAS, it is the spacing of the grid that validation
    scores on, which HD95 needs in mm.
    """

    def __init__(self) -> None:
        super().__init__(keys=[IMAGE_KEY])

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        item = dict(data)
        item[SPACING_KEY] = spacing_of(np.asarray(item[IMAGE_KEY].affine, dtype=np.float64))
        return item


class StackModalitiesd(MapTransform):
    """Stack the modality images into ``"image"`` ``(4, D, H, W)`` in ``MODALITIES`` order.

    Items with one channel-first image per modality key are concatenated (the modality
    keys are then dropped). Items with a 4D ``"image"`` and a ``"channel_order"`` get
    their channels reordered.

    Raises:
        ValueError: modality grids differ, or a 4D image's channels do not match its
            channel order; the message names the case.
    """

    def __init__(self) -> None:
        super().__init__(keys=list(MODALITIES), allow_missing_keys=True)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        item = dict(data)
        case = item.get(CASE_ID_KEY, "?")
        if item.get(CHANNEL_ORDER_KEY):
            order = tuple(item[CHANNEL_ORDER_KEY])
            image = item[IMAGE_KEY]
            if image.shape[0] != len(order) or set(MODALITIES) - set(order):
                raise ValueError(
                    f"case {case}: 4D image has {image.shape[0]} channels, channel order {order} "
                    f"must list each of {MODALITIES} once"
                )
            item[IMAGE_KEY] = image[[order.index(m) for m in MODALITIES]]
            return item
        images = [item.pop(m) for m in MODALITIES]
        for modality, image in zip(MODALITIES, images):
            if image.shape != images[0].shape:
                raise ValueError(
                    f"case {case}: modality {modality} has shape {tuple(image.shape[1:])}, "
                    f"{MODALITIES[0]} has {tuple(images[0].shape[1:])}"
                )
        item[IMAGE_KEY] = torch.cat(images, dim=0)
        return item


class LabelToRegionsd(MapTransform):
    """Turn ``"label"`` into ``"regions"`` (ET, TC, WT) and ``"subregions"`` (NCR, ED, ET).

    Uses the item's ``"convention"``, which the QA gate (or a declared convention) sets
    once for the whole site; a label is never read in a convention guessed from its own
    values. Both outputs are float32 MetaTensors ``(3, D, H, W)`` sharing the label's metadata.

    Raises:
        ValueError: the item has no convention, or the label holds values its convention
            does not define (names the case, the values and the convention).
    """

    def __init__(self) -> None:
        super().__init__(keys=[LABEL_KEY])

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        item = dict(data)
        label = item[LABEL_KEY]
        plain = torch.as_tensor(label).as_subclass(torch.Tensor).long()
        name = item.get(CONVENTION_KEY)
        case = item.get(CASE_ID_KEY, "?")
        if not name:
            raise ValueError(
                f"case {case}: its segmentation has no label convention; run the QA gate (data.qa.run_qa) "
                "over its site or declare the convention"
            )
        try:
            convention = get_convention(name)
            subregions = subregion_masks(plain, convention)
        except ValueError as error:
            raise ValueError(f"case {case}: {error}") from None
        meta = label.meta if isinstance(label, MetaTensor) else {}
        item[CONVENTION_KEY] = convention.name
        item[SUBREGIONS_KEY] = MetaTensor(subregions.float(), meta=dict(meta))
        item[REGIONS_KEY] = MetaTensor(regions_from_subregions(subregions).float(), meta=dict(meta))
        return item


def deterministic_transforms(with_label: bool) -> list[MapTransform]:
    """The deterministic MONAI dict transforms from file paths to network-ready tensors.

    Read (``LoadVolumed``), stack the modalities into ``"image"`` ``(4, D, H, W)``
    float32, reorient to RAS, record the RAS ``"spacing"``, z-score each channel over its
    non-zero voxels; with ``with_label`` also read ``"label"`` (int16), reorient it alike
    and derive ``"regions"`` and ``"subregions"``. Training appends its crops and augmentations.
    """
    oriented = [IMAGE_KEY, LABEL_KEY] if with_label else [IMAGE_KEY]
    transforms: list[MapTransform] = [
        LoadVolumed(keys=[*MODALITIES, *oriented]),
        StackModalitiesd(),
        Orientationd(keys=oriented, axcodes="RAS", labels=_AXIS_LABELS),
        RecordSpacingd(),
        NormalizeIntensityd(keys=IMAGE_KEY, nonzero=True, channel_wise=True),
    ]
    if with_label:
        transforms.append(LabelToRegionsd())
    return transforms


def load_case(record: CaseRecord, with_label: bool | None = None) -> dict[str, Any]:
    """Run ``deterministic_transforms`` on one case.

    Args:
        record: the case.
        with_label: load the label too; defaults to whether the record has one.

    Raises:
        ValueError: ``with_label`` is true but the record has no label, modality grids
            differ, or label values do not fit the convention (the message names the case).
    """
    if with_label is None:
        with_label = record.has_label
    if with_label and not record.has_label:
        raise ValueError(f"case {record.case_id} has no label file")
    item = case_to_item(record)
    if not with_label:
        item.pop(LABEL_KEY, None)
    try:
        return Compose(deterministic_transforms(with_label))(item)
    except RuntimeError as error:
        # MONAI wraps a transform's exception in "applying transform ..."; surface ours.
        cause = error.__cause__
        while isinstance(cause, RuntimeError) and cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, (ValueError, FileNotFoundError)):
            raise cause from None
        raise


def restore_orientation(volume: torch.Tensor, image: MetaTensor) -> torch.Tensor:
    """Put a volume in the preprocessed (RAS) grid back in the input file's voxel grid.

    Args:
        volume: ``(C, D, H, W)`` on the grid of ``image``, e.g. a prediction.
        image: the preprocessed ``"image"``; its metadata holds the RAS affine and the
            file's ``original_affine``.

    Returns:
        Plain tensor ``(C, D', H', W')`` whose voxels align one-to-one with the file's.

    Raises:
        ValueError: ``volume``'s spatial shape differs from ``image``'s.
    """
    if tuple(volume.shape[1:]) != tuple(image.shape[1:]):
        raise ValueError(
            f"volume spatial shape {tuple(volume.shape[1:])} differs from the image's {tuple(image.shape[1:])}"
        )
    original = np.asarray(image.meta["original_affine"], dtype=np.float64)
    codes = "".join(nib.aff2axcodes(original))
    plain = volume.as_tensor() if isinstance(volume, MetaTensor) else volume
    oriented = MetaTensor(plain.detach().cpu(), affine=image.affine.clone())
    restored = Orientation(axcodes=codes, labels=_AXIS_LABELS)(oriented)
    return restored.as_tensor()
