"""Whole-volume evaluation: sliding-window prediction plus BraTS region metrics per case."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from segguided_model.attention_scores import attention_scores, mean_attention_scores
from segguided_model.data.preprocessing import (
    CASE_ID_KEY,
    IMAGE_KEY,
    REGIONS_KEY,
    SPACING_KEY,
    SUBREGIONS_KEY,
)
from segguided_model.inference import SlidingWindow, predict_volume
from segguided_model.labels import nest_regions
from segguided_model.metrics import case_metrics, mean_metrics


def evaluate_volumes(
    model: nn.Module,
    volumes: Iterable[dict],
    window: SlidingWindow,
    device: torch.device,
) -> tuple[list[dict], dict[str, float]]:
    """Predict every volume and score it against its reference regions, HD95 in mm.

    The predicted regions are scored nested (``labels.nest_regions``), exactly as
    ``segguided segment`` writes them.

    Args:
        model: the network to evaluate (put in eval mode here).
        volumes: dicts with ``image`` ``(4, D, H, W)``, ``regions`` ``(3, D, H, W)``,
            ``spacing`` (mm along D, H, W) and ``case_id``, as
            ``data.pipeline.build_eval_dataset`` yields them.
        window: how each volume is covered by windows (size, overlap, memory, AMP).
        device: where to run the network.

    Returns:
        One row per case (``case-id`` plus ``dice-*`` and ``hd95-*`` per region) and the
        means over cases (``metrics.mean_metrics``). For a gated network and volumes with
        ``subregions``, rows and means also hold the attention maps' scores
        (``attention_scores.ATTENTION_KEYS``).

    Raises:
        ValueError: no volumes, or a volume without ``spacing`` (names the case).
    """
    rows = []
    for volume in volumes:
        case_id = str(volume[CASE_ID_KEY])
        if SPACING_KEY not in volume:
            raise ValueError(f"case {case_id}: no voxel spacing to compute HD95 in mm (expected key {SPACING_KEY!r})")
        spacing = tuple(float(s) for s in volume[SPACING_KEY])
        prediction = predict_volume(model, volume[IMAGE_KEY], window, device)
        predicted = nest_regions(prediction.regions).cpu()
        reference = torch.as_tensor(volume[REGIONS_KEY]).bool().cpu()
        row = {"case-id": case_id, **case_metrics(predicted, reference, spacing=spacing)}
        if prediction.attention_maps is not None and SUBREGIONS_KEY in volume:
            row.update(attention_scores(prediction.attention_maps, torch.as_tensor(volume[SUBREGIONS_KEY]).cpu()))
        rows.append(row)
    if not rows:
        raise ValueError("no volumes to evaluate")
    return rows, {**mean_metrics(rows), **mean_attention_scores(rows)}
