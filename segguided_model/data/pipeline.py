"""Training and evaluation datasets: preprocessing, tumour-biased patch sampling, augmentation.

The deterministic part (``preprocessing.deterministic_transforms`` plus a crop to the
brain and padding to the patch size) can be cached on disk; the random part (patch
crops, flips, intensity augmentation) runs every epoch. Patches are centred on tumour
(any of ET, TC, WT) two times out of three, on brain otherwise.
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

VOLUME_KEYS: tuple[str, ...] = (IMAGE_KEY, REGIONS_KEY, SUBREGIONS_KEY)
"""Keys that are cropped, padded and flipped together."""

TUMOUR_PATCH_WEIGHT: float = 2.0
BRAIN_PATCH_WEIGHT: float = 1.0
"""Relative odds of a patch centred on tumour versus anywhere in the brain."""

INTENSITY_SCALE: float = 0.1
INTENSITY_SHIFT: float = 0.1
INTENSITY_PROBABILITY: float = 0.5
FLIP_PROBABILITY: float = 0.5

CACHE_VERSION = 2
"""Bump when the cached (deterministic) transforms change (2: files read by ``volume_file``)."""


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


def _is_brain(image: torch.Tensor) -> torch.Tensor:
    """Non-zero voxels: the brain of a skull-stripped, non-zero-normalised image."""
    return image != 0


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
        CropForegroundd(keys=keys, source_key=IMAGE_KEY, select_fn=_is_brain, allow_smaller=True),
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
    return [case_to_item(case) for case in cases]


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
            in a sub-folder per patch size and cache version).
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
    if cache_dir is None:
        dataset = Dataset(data=items, transform=transform)
    else:
        patch = "x".join(str(n) for n in _check_patch_size(patch_size))
        folder = Path(cache_dir) / f"train-v{CACHE_VERSION}-patch{patch}"
        folder.mkdir(parents=True, exist_ok=True)
        dataset = PersistentDataset(data=items, transform=transform, cache_dir=folder)
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


def build_eval_dataset(cases: Sequence[CaseRecord]) -> Dataset:
    """Whole preprocessed volumes for sliding-window validation, one case per item.

    Args:
        cases: labelled cases.

    Returns:
        A ``Dataset`` of dicts with ``"image"`` ``(4, D, H, W)``, ``"regions"`` and
        ``"subregions"`` ``(3, D, H, W)`` (MetaTensors, RAS, not cropped or padded),
        ``"spacing"`` (mm along D, H, W of that RAS grid, for HD95) and ``"case_id"``.

    Raises:
        ValueError: no cases, or a case without segmentation.
    """
    items = _labelled_items(cases, "evaluation")
    keys = [*VOLUME_KEYS, SPACING_KEY, CASE_ID_KEY]
    transform = Compose([*deterministic_transforms(with_label=True), SelectItemsd(keys=keys)])
    return Dataset(data=items, transform=transform)
