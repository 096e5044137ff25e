"""Central validation: the server scores the global model on its own held-out cases."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from segguided_model.data.layouts import CaseRecord
from segguided_model.data.pipeline import build_eval_dataset
from segguided_model.evaluation import evaluate_volumes


class CentralValidator:
    """Sliding-window validation of a model on a fixed list of cases.

    Args:
        cases: labelled cases that passed the QA gate.
        roi_size: sliding-window size (the training patch size).
        device: where to run inference.
        mixed_precision: float16 autocast on CUDA.
    """

    def __init__(
        self,
        cases: Sequence[CaseRecord],
        roi_size: tuple[int, int, int],
        device: torch.device,
        mixed_precision: bool = False,
    ) -> None:
        self.volumes = build_eval_dataset(cases)
        self.roi_size = roi_size
        self.device = device
        self.mixed_precision = mixed_precision

    def __call__(self, model: nn.Module) -> tuple[list[dict], dict[str, float]]:
        return evaluate_volumes(model, self.volumes, self.roi_size, self.device, self.mixed_precision)
