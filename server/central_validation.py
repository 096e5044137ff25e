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
from segguided_model.data.pipeline import build_eval_dataset, cache_size_bytes
from segguided_model.data.qa import DECLARE_HINT, run_qa
from segguided_model.evaluation import evaluate_volumes
from segguided_model.inference import SlidingWindow

log = logging.getLogger(__name__)


class ValidationDataError(RuntimeError):
    """The server's validation cases cannot be found or none of them is usable."""


def central_validation_folder(config: RunConfig) -> Path:
    """The server's held-out cases: ``server-validation-dir``, or the synthetic federation's.

    Raises:
        ValidationDataError: real site data (``data-dir``) without ``server-validation-dir``.
    """
    if config.server_validation_dir:
        return Path(config.server_validation_dir).expanduser()
    if config.uses_synthetic_data:
        return synthetic_federation(config).validation_dir
    raise ValidationDataError(
        "data-dir points at real site data, so set server-validation-dir to the server's own held-out cases"
    )


def central_validation_cases(config: RunConfig, cache_dir: Path | None = None) -> list[CaseRecord]:
    """The server's held-out cases after the QA gate.

    The gate reads the folder in ``server-validation-convention`` if set, otherwise in the
    one convention all its labels decide (``labels.decide_convention``); with
    ``cache_dir`` it reads only cases whose files changed since their last check.

    Raises:
        ValidationDataError: no validation folder is configured, or none of its cases
            passes QA (the message counts the reasons).
    """
    folder = central_validation_folder(config)
    report = run_qa(folder, convention=config.server_validation_convention or None, cache_dir=cache_dir)
    log.info("central validation: QA gate: %s", report.reuse_line())
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
    """Whole-volume validation of a model on a fixed list of cases, preprocessed once.

    Args:
        cases: labelled cases that passed the QA gate.
        window: sliding windows over each case's brain (``validation-roi-size``,
            ``validation-overlap``, ``inference-memory-mb``, AMP).
        device: where to run inference.
        cache_dir: where the preprocessed cases are kept (``eval-v<N>/``): each case is
            read, reoriented and normalised once, then loaded from there every round.
    """

    def __init__(
        self,
        cases: Sequence[CaseRecord],
        window: SlidingWindow,
        device: torch.device,
        cache_dir: Path | None = None,
    ) -> None:
        self.volumes = build_eval_dataset(cases, cache_dir)
        self.window = window
        self.device = device
        self.cache_dir = cache_dir
        self._reported = False

    def __call__(self, model: nn.Module) -> tuple[list[dict], dict[str, float]]:
        result = evaluate_volumes(model, self.volumes, self.window, self.device)
        if self.cache_dir is not None and not self._reported:
            self._reported = True
            log.info("central validation: %d preprocessed case(s), %.1f MiB in %s", len(self.volumes),
                     cache_size_bytes(self.cache_dir) / 2**20, self.cache_dir)
        return result
