"""BraTS evaluation: per-region Dice and HD95 with an explicit policy for empty regions.

Built on MONAI's ``compute_dice`` and ``compute_hausdorff_distance`` (95th percentile,
physical voxel spacing). Empty regions follow the BraTS 2021 convention:

========================  ======  =======================
prediction / reference    Dice    HD95 (mm)
========================  ======  =======================
both empty                1       0
exactly one empty         0       ``HD95_ONE_EMPTY`` 373.13
========================  ======  =======================

373.13 mm is the diagonal of the 240×240×155 BraTS volume at 1 mm, the worst
distance possible.
"""

from __future__ import annotations

import warnings
from typing import Iterable, Mapping, Sequence

import torch
from monai.metrics import compute_dice, compute_hausdorff_distance

from segguided_model.labels import REGIONS

HD95_ONE_EMPTY = 373.13
"""HD95 when exactly one of prediction and reference is empty (BraTS 2021)."""

DICE_KEYS: tuple[str, ...] = tuple(f"dice-{region.lower()}" for region in REGIONS)
HD95_KEYS: tuple[str, ...] = tuple(f"hd95-{region.lower()}" for region in REGIONS)
METRIC_KEYS: tuple[str, ...] = DICE_KEYS + HD95_KEYS
"""Per-case metric keys, in CSV column order."""

DICE_MEAN_KEY = "dice-mean"
HD95_MEAN_KEY = "hd95-mean"
SUMMARY_KEYS: tuple[str, ...] = (*DICE_KEYS, DICE_MEAN_KEY, *HD95_KEYS, HD95_MEAN_KEY)
"""What ``mean_metrics`` returns: every per-region mean and the means over regions."""


def region_dice(pred: torch.Tensor, ref: torch.Tensor) -> float:
    """Dice of one boolean mask ``(D, H, W)`` against another; 1 when both are empty."""
    value = compute_dice(pred[None, None].float(), ref[None, None].float(), ignore_empty=False)
    return float(value.item())


def region_hd95(
    pred: torch.Tensor, ref: torch.Tensor, spacing: Sequence[float] = (1.0, 1.0, 1.0)
) -> float:
    """95th-percentile symmetric Hausdorff distance in mm between two boolean masks.

    Returns 0 when both masks are empty and ``HD95_ONE_EMPTY`` when exactly one is.
    """
    pred_empty, ref_empty = not bool(pred.any()), not bool(ref.any())
    if pred_empty and ref_empty:
        return 0.0
    if pred_empty or ref_empty:
        return HD95_ONE_EMPTY
    with warnings.catch_warnings():
        # MONAI 1.5+ warns about its own internal use of a deprecated argument.
        warnings.simplefilter("ignore", FutureWarning)
        value = compute_hausdorff_distance(
            pred[None, None].float(),
            ref[None, None].float(),
            include_background=True,
            percentile=95,
            spacing=[float(s) for s in spacing],
        )
    return float(value.item())


def case_metrics(
    pred_regions: torch.Tensor,
    ref_regions: torch.Tensor,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
) -> dict[str, float]:
    """Dice and HD95 of each region (ET, TC, WT) for one case.

    Args:
        pred_regions: predicted region masks ``(3, D, H, W)`` in ``REGIONS`` order.
        ref_regions: reference region masks of the same shape.
        spacing: voxel size in mm along D, H, W.

    Returns:
        ``{"dice-et", "dice-tc", "dice-wt", "hd95-et", "hd95-tc", "hd95-wt"}`` → value.

    Raises:
        ValueError: shapes differ or are not ``(3, D, H, W)``, or ``spacing`` is not
            three positive numbers.
    """
    if pred_regions.shape != ref_regions.shape:
        raise ValueError(
            f"prediction shape {tuple(pred_regions.shape)} differs from reference "
            f"shape {tuple(ref_regions.shape)}"
        )
    if pred_regions.ndim != 4 or pred_regions.shape[0] != len(REGIONS):
        raise ValueError(f"expected region masks (3, D, H, W), got shape {tuple(pred_regions.shape)}")
    if len(spacing) != 3 or any(not s > 0 for s in spacing):
        raise ValueError(f"spacing must be three positive numbers, got {tuple(spacing)}")
    row: dict[str, float] = {}
    pred, ref = pred_regions.bool(), ref_regions.bool()
    for index, key in enumerate(DICE_KEYS):
        row[key] = region_dice(pred[index], ref[index])
    for index, key in enumerate(HD95_KEYS):
        row[key] = region_hd95(pred[index], ref[index], spacing)
    return row


def mean_metrics(rows: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Mean of each metric over cases, plus ``dice-mean`` and ``hd95-mean`` over regions, in ``SUMMARY_KEYS`` order.

    Keys other than ``METRIC_KEYS`` (such as ``case-id``) are ignored.

    Raises:
        ValueError: no rows, or a row lacks a metric key.
    """
    rows = list(rows)
    if not rows:
        raise ValueError("cannot average metrics over zero cases")
    means: dict[str, float] = {}
    for key in METRIC_KEYS:
        missing = [index for index, row in enumerate(rows) if key not in row]
        if missing:
            raise ValueError(f"metric {key!r} is missing from row {missing[0]}")
        means[key] = sum(float(row[key]) for row in rows) / len(rows)
    means[DICE_MEAN_KEY] = sum(means[key] for key in DICE_KEYS) / len(DICE_KEYS)
    means[HD95_MEAN_KEY] = sum(means[key] for key in HD95_KEYS) / len(HD95_KEYS)
    return {key: means[key] for key in SUMMARY_KEYS}
