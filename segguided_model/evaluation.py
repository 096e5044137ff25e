"""Whole-volume evaluation: sliding-window prediction plus BraTS region metrics per case."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from segguided_model.inference import predict_volume
from segguided_model.metrics import case_metrics, mean_metrics


def evaluate_volumes(
    model: nn.Module,
    volumes: Iterable[dict],
    roi_size: tuple[int, int, int],
    device: torch.device,
    mixed_precision: bool = False,
) -> tuple[list[dict], dict[str, float]]:
    """Predict every volume and score it against its reference regions.

    Args:
        model: the network to evaluate (put in eval mode here).
        volumes: dicts with ``image`` ``(4, D, H, W)``, ``regions`` ``(3, D, H, W)`` and
            ``case_id``, as ``data.pipeline.build_eval_dataset`` yields them.
        roi_size: sliding-window size; must fit the network's stride divisor.
        device: where to run the network.
        mixed_precision: float16 autocast (CUDA only).

    Returns:
        One row per case (``case-id`` plus ``dice-*`` and ``hd95-*`` per region) and the
        means over cases (``metrics.mean_metrics``).
    """
    rows = []
    for volume in volumes:
        prediction = predict_volume(
            model,
            volume["image"],
            roi_size=roi_size,
            device=device,
            amp=mixed_precision,
        )
        reference = torch.as_tensor(volume["regions"]).bool().cpu()
        spacing = tuple(float(s) for s in volume.get("spacing", (1.0, 1.0, 1.0)))
        rows.append({"case-id": str(volume["case_id"]), **case_metrics(prediction.regions.cpu(), reference, spacing=spacing)})
    if not rows:
        raise ValueError("no volumes to evaluate")
    return rows, mean_metrics(rows)
