"""One round of local training on a site's cases: the recipe the ClientApp and the experiment baselines share."""

from __future__ import annotations

import math
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from segguided_federation.run_config import RunConfig
from segguided_federation.training_progress import TrainingProgress
from segguided_model.data.layouts import CaseRecord
from segguided_model.data.pipeline import build_train_loader
from segguided_model.losses import SegGuidedLoss
from segguided_model.network import SegGuidedNet
from segguided_model.training import TrainingResult, TrainingSettings, train_steps


def round_seed(seed: int, server_round: int, trainer: str) -> int:
    """A seed per (run seed, round, trainer): reproducible, and different across sites and rounds.

    Args:
        seed: the run's ``seed``.
        server_round: the round being trained (counted across resumes).
        trainer: the site id (or, for a baseline, the experiment's name).

    Returns:
        CRC-32 of ``"{seed}/{server_round}/{trainer}"``, an integer in ``[0, 2**32)``.
    """
    return zlib.crc32(f"{seed}/{server_round}/{trainer}".encode())


def local_steps(config: RunConfig, training_cases: int) -> int:
    """Optimiser steps one site takes in one round.

    ``local-epochs`` epochs of ``ceil(cases / batch-size)`` batches when set, else
    ``local-steps``.
    """
    if config.local_epochs:
        return config.local_epochs * math.ceil(training_cases / config.batch_size)
    return config.local_steps


def train_local_round(
    model: SegGuidedNet,
    cases: Sequence[CaseRecord],
    config: RunConfig,
    seed: int,
    device: torch.device,
    mixed_precision: bool,
    steps: int | None = None,
    proximal_mu: float = 0.0,
    cache_dir: Path | None = None,
    progress_label: str | None = None,
) -> TrainingResult:
    """Train ``model`` in place for one round on ``cases`` with the run's local settings.

    Seeds torch and NumPy with ``seed``, builds the patch loader (``patch-size``,
    ``batch-size``, ``data-loader-workers``) and takes ``steps`` optimiser steps with the
    run's optimiser and loss (``attention-weight``).

    Args:
        model: the network to train (the round's global model).
        cases: labelled training cases.
        config: the run configuration.
        seed: the round's seed (``round_seed``).
        device: where to train.
        mixed_precision: float16 autocast (CUDA only).
        steps: optimiser steps; default ``local_steps(config, len(cases))``.
        proximal_mu: FedProx's proximal weight (0: plain local training).
        cache_dir: where the deterministic preprocessing may be cached.
        progress_label: if given, progress lines are logged under it (``TrainingProgress``).

    Returns:
        The round's mean losses and timing.

    Raises:
        ValueError: no cases, or a case without segmentation.
        FloatingPointError: the loss became NaN or infinite.
    """
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    loader = build_train_loader(
        cases,
        patch_size=config.patch_size,
        batch_size=config.batch_size,
        seed=seed,
        num_workers=config.data_loader_workers,
        cache_dir=cache_dir,
    )
    settings = TrainingSettings(
        steps=steps if steps is not None else local_steps(config, len(cases)),
        learning_rate=config.learning_rate,
        optimizer=config.optimizer,
        weight_decay=config.weight_decay,
        proximal_mu=proximal_mu,
        mixed_precision=mixed_precision,
    )
    progress = TrainingProgress(progress_label) if progress_label else None
    return train_steps(
        model, loader, SegGuidedLoss(attention_weight=config.attention_weight), settings, device, on_step=progress
    )
