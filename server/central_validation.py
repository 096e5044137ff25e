"""Central validation: the server scores the global model on its own held-out cases."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from segguided_federation.run_config import RunConfig
from segguided_federation.synthetic_data import synthetic_federation
from segguided_model.data.layouts import CaseRecord
from segguided_model.data.pipeline import build_eval_dataset
from segguided_model.data.qa import DECLARE_HINT, run_qa
from segguided_model.evaluation import evaluate_volumes

log = logging.getLogger(__name__)


class ValidationDataError(RuntimeError):
    """The server's validation cases cannot be found or none of them is usable."""


def central_validation_cases(config: RunConfig) -> list[CaseRecord]:
    """The server's held-out cases (``server-validation-dir``, or the synthetic ones), after the QA gate.

    The gate reads the folder in ``server-validation-convention`` if set, otherwise in the
    one convention all its labels decide (``labels.decide_convention``).

    Raises:
        ValidationDataError: no validation folder is configured, or none of its cases
            passes QA (the message counts the reasons).
    """
    if config.server_validation_dir:
        folder = Path(config.server_validation_dir).expanduser()
    elif config.uses_synthetic_data:
        folder = synthetic_federation(config).validation_dir
    else:
        raise ValidationDataError(
            "data-dir points at real site data, so set server-validation-dir to the server's "
            "own held-out cases"
        )
    report = run_qa(folder, convention=config.server_validation_convention or None)
    for case_id, reason in report.rejected:
        log.warning("central validation: skipping case %s: %s (%s)", case_id, reason, report.details[case_id])
    labelled = report.trainable
    if not labelled:
        reasons = ", ".join(f"{reason} {count}" for reason, count in report.summary()["rejected-by-reason"].items())
        undecided = "label-convention-undecided" in report.summary()["rejected-by-reason"]
        raise ValidationDataError(
            f"no labelled case in {folder} passed the QA gate ({len(report.rejected)} rejected: {reasons or '-'})"
            + (f"; {DECLARE_HINT}" if undecided else "")
        )
    log.info("central validation on %d case(s) from %s, label convention %s (%s)",
             len(labelled), folder, report.convention, report.convention_reason)
    return labelled


class CentralValidator:
    """Sliding-window validation of a model on a fixed list of cases.

    Args:
        cases: labelled cases that passed the QA gate.
        roi_size: sliding-window size (MONAI's ``roi_size``; the training patch size).
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
