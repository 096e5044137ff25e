"""Training and evaluation datasets: preprocessing, tumour-biased patch sampling, augmentation.

The deterministic part (``preprocessing.deterministic_transforms``, a crop to the
bounding box of brain and tumour, region masks as ``uint8``; for training also padding
to the patch size) is cached on disk once per case in a site's cache folder
(``PersistentDataset``): ``train-v<N>-patch<D>x<H>x<W>/`` and ``eval-v<N>/``. A cached
case is read again when one of its files changes (their sizes and modification times are
part of the cache key). The random part (patch crops, flips, intensity augmentation)
runs every epoch. Patches are centred on tumour (any of ET, TC, WT) two times out of
three, on brain otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.data import DataLoader, Dataset, PersistentDataset
from monai.transforms import (
    Compose,
    CropForegroundd,
    EnsureTyped,
    MapTransform,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    SelectItemsd,
    SpatialPadd,
)

from segguided_model.data.layouts import CaseRecord
from segguided_model.data.preprocessing import (
    CASE_ID_KEY,
    IMAGE_KEY,
    REGIONS_KEY,
    SPACING_KEY,
    SUBREGIONS_KEY,
    case_to_item,
    deterministic_transforms,
)
from segguided_model.data.qa_cache import file_identity

VOLUME_KEYS: tuple[str, ...] = (IMAGE_KEY, REGIONS_KEY, SUBREGIONS_KEY)
"""Keys that are cropped, padded and flipped together."""

TUMOUR_PATCH_WEIGHT: float = 2.0
BRAIN_PATCH_WEIGHT: float = 1.0
"""Relative odds of a patch centred on tumour versus anywhere in the brain."""

INTENSITY_SCALE: float = 0.1
INTENSITY_SHIFT: float = 0.1
INTENSITY_PROBABILITY: float = 0.5
FLIP_PROBABILITY: float = 0.5

CACHE_VERSION = 3
"""Bump when the cached (deterministic) transforms change (2: files read by ``volume_file``;
3: crop to brain and tumour, ``uint8`` region masks, files' identity in the key)."""

FILE_IDENTITY_KEY = "file_identity"
"""Item key holding the case files' sizes and modification times: part of the cache key, then dropped."""

FOREGROUND_KEY = "foreground"


class Contiguousd(MapTransform):
    """Copy tensors that are views into compact contiguous tensors.

    A crop is a view of the whole volume's storage; caching it would save the whole
    volume. ``.contiguous()`` alone keeps a view that is already contiguous in memory
    layout, so tensors whose storage is larger than themselves are cloned.
    """

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        item = dict(data)
        for key in self.key_iterator(item):
            tensor = item[key]
            if isinstance(tensor, torch.Tensor):
                compact = tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()
                item[key] = tensor.contiguous() if compact else tensor.clone(memory_format=torch.contiguous_format)
        return item


class Foregroundd(MapTransform):
    """Add ``"foreground"`` ``(1, D, H, W)``: voxels of the brain (non-zero in any modality) or of the tumour.

    The box to crop to: the brain of a skull-stripped, non-zero-normalised image, and any
    labelled voxel even where the images are zero, so that no reference voxel is cut off.
    """

    def __init__(self) -> None:
        super().__init__(keys=[IMAGE_KEY])

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        item = dict(data)
        mask = torch.as_tensor(item[IMAGE_KEY]).ne(0).any(dim=0, keepdim=True)
        if REGIONS_KEY in item:
            mask |= torch.as_tensor(item[REGIONS_KEY]).ne(0).any(dim=0, keepdim=True)
        item[FOREGROUND_KEY] = mask
        return item


def _cropped_to_foreground(keys: list[str]) -> list[MapTransform]:
    """Crop ``keys`` to the bounding box of brain and tumour; region masks become ``uint8``."""
    return [
        Foregroundd(),
        CropForegroundd(keys=keys, source_key=FOREGROUND_KEY, allow_smaller=True),
        EnsureTyped(keys=[REGIONS_KEY, SUBREGIONS_KEY], dtype=torch.uint8, allow_missing_keys=True),
    ]


def _check_patch_size(patch_size: Sequence[int]) -> tuple[int, int, int]:
    patch = tuple(int(n) for n in patch_size)
    if len(patch) != 3 or min(patch) < 1:
        raise ValueError(f"patch_size must be three positive integers (D, H, W), got {tuple(patch_size)}")
    return patch


def training_transforms(patch_size: Sequence[int], samples_per_case: int = 1) -> tuple[list, list]:
    """The training transforms, split into ``(cacheable, random)``.

    Args:
        patch_size: ``(D, H, W)`` of the patches.
        samples_per_case: patches drawn from each case per epoch.

    Returns:
        ``cacheable`` ends with compact ``(4|3, D', H', W')`` tensors of at least
        ``patch_size``; ``random`` turns one into ``samples_per_case`` patch items.
    """
    patch = _check_patch_size(patch_size)
    keys = list(VOLUME_KEYS)
    cacheable = [
        *deterministic_transforms(with_label=True),
        SelectItemsd(keys=[*keys, CASE_ID_KEY]),
        *_cropped_to_foreground(keys),
        SpatialPadd(keys=keys, spatial_size=patch),
        SelectItemsd(keys=[*keys, CASE_ID_KEY]),  # drop the crop's coordinate keys
        Contiguousd(keys=keys),
    ]
    random = [
        RandCropByPosNegLabeld(
            keys=keys,
            label_key=REGIONS_KEY,
            spatial_size=patch,
            pos=TUMOUR_PATCH_WEIGHT,
            neg=BRAIN_PATCH_WEIGHT,
            num_samples=samples_per_case,
            image_key=IMAGE_KEY,
            image_threshold=0.0,
        ),
        *(RandFlipd(keys=keys, prob=FLIP_PROBABILITY, spatial_axis=axis) for axis in range(3)),
        RandScaleIntensityd(keys=IMAGE_KEY, factors=INTENSITY_SCALE, prob=INTENSITY_PROBABILITY, channel_wise=True),
        RandShiftIntensityd(keys=IMAGE_KEY, offsets=INTENSITY_SHIFT, prob=INTENSITY_PROBABILITY, channel_wise=True),
        EnsureTyped(keys=keys, dtype=torch.float32, track_meta=False),
    ]
    return cacheable, random


def _labelled_items(cases: Sequence[CaseRecord], purpose: str) -> list[dict]:
    if not cases:
        raise ValueError(f"no cases to build the {purpose} data from")
    unlabelled = [case.case_id for case in cases if not case.has_label]
    if unlabelled:
        raise ValueError(f"{purpose} needs segmentations; case(s) {unlabelled[:5]} have none")
    return [{**case_to_item(case), FILE_IDENTITY_KEY: file_identity(case)} for case in cases]


def _dataset(items: list[dict], transform: Compose, cache_dir: Path | None, folder: str) -> Dataset:
    """``items`` through ``transform``, the deterministic part kept in ``cache_dir/folder`` when given."""
    if cache_dir is None:
        return Dataset(data=items, transform=transform)
    path = Path(cache_dir) / folder
    path.mkdir(parents=True, exist_ok=True)
    return PersistentDataset(data=items, transform=transform, cache_dir=path)


def cache_size_bytes(cache_dir: Path) -> int:
    """Bytes held by the preprocessed volumes in a site's cache folder (every ``train-*``/``eval-*`` folder)."""
    return sum(
        entry.stat().st_size
        for folder in Path(cache_dir).glob("*-v*")
        if folder.is_dir()
        for entry in folder.iterdir()
        if entry.is_file()
    )


def build_train_loader(
    cases: Sequence[CaseRecord],
    patch_size: tuple[int, int, int],
    batch_size: int,
    seed: int,
    num_workers: int = 0,
    cache_dir: Path | None = None,
    samples_per_case: int = 1,
) -> DataLoader:
    """A shuffling loader of augmented training patches.

    Args:
        cases: labelled cases (the site's training split).
        patch_size: ``(D, H, W)`` of each patch.
        batch_size: cases per batch; each contributes ``samples_per_case`` patches.
        seed: fixes shuffling, patch positions and augmentation (also with workers).
        num_workers: loader worker processes.
        cache_dir: if set, the deterministic part is cached there (``PersistentDataset``,
            in a sub-folder per patch size and cache version) and read from there afterwards.
        samples_per_case: patches drawn from each case per epoch.

    Returns:
        A ``DataLoader`` yielding dicts with ``"image"`` ``(B, 4, D, H, W)``,
        ``"regions"`` ``(B, 3, D, H, W)`` (ET, TC, WT), ``"subregions"``
        ``(B, 3, D, H, W)`` (NCR, ED, ET), float32, and ``"case_id"`` (list of ``B``),
        where ``B = batch_size * samples_per_case`` (the last batch may be smaller).

    Raises:
        ValueError: no cases, a case without segmentation, or a bad size or count.
    """
    if batch_size < 1 or samples_per_case < 1 or num_workers < 0:
        raise ValueError(
            f"expected batch_size >= 1, samples_per_case >= 1 and num_workers >= 0, got "
            f"{batch_size}, {samples_per_case}, {num_workers}"
        )
    items = _labelled_items(cases, "training")
    cacheable, random = training_transforms(patch_size, samples_per_case)
    transform = Compose([*cacheable, *random])
    patch = "x".join(str(n) for n in _check_patch_size(patch_size))
    dataset = _dataset(items, transform, cache_dir, f"train-v{CACHE_VERSION}-patch{patch}")
    generator = torch.Generator()
    generator.manual_seed(seed)
    transform.set_random_state(seed=seed % np.iinfo(np.uint32).max)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=num_workers,
        generator=generator,
        persistent_workers=False,
    )


def build_eval_dataset(cases: Sequence[CaseRecord], cache_dir: Path | None = None) -> Dataset:
    """Preprocessed volumes for whole-volume validation, one case per item, cropped to brain and tumour.

    Outside the crop every image is zero and every mask empty, so Dice and HD95 on the
    crop equal those on the whole grid for any prediction that is background there
    (``inference.predict_volume``'s is).

    Args:
        cases: labelled cases.
        cache_dir: if set, each case is preprocessed once and read from
            ``cache_dir/eval-v<N>/`` afterwards.

    Returns:
        A ``Dataset`` of dicts with ``"image"`` ``(4, D, H, W)`` float32, ``"regions"``
        and ``"subregions"`` ``(3, D, H, W)`` uint8 (MetaTensors, RAS, cropped),
        ``"spacing"`` (mm along D, H, W of that RAS grid, for HD95) and ``"case_id"``.

    Raises:
        ValueError: no cases, or a case without segmentation.
    """
    items = _labelled_items(cases, "evaluation")
    keys = [*VOLUME_KEYS, SPACING_KEY, CASE_ID_KEY]
    transform = Compose([
        *deterministic_transforms(with_label=True),
        SelectItemsd(keys=keys),
        *_cropped_to_foreground(list(VOLUME_KEYS)),
        SelectItemsd(keys=keys),
        Contiguousd(keys=list(VOLUME_KEYS)),
    ])
    return _dataset(items, transform, cache_dir, f"eval-v{CACHE_VERSION}")
