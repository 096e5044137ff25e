"""Local training: a fixed number of optimiser steps over a site's patch loader.

Plain functions over a model, a loader and a device, so that a Flower client, a
centralised baseline and a test all train the same way.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Literal, Sequence

import torch
from torch import nn

from segguided_model.losses import SegGuidedLoss


@dataclass(frozen=True)
class TrainingSettings:
    """How one round (or one centralised epoch) of local training runs.

    Attributes:
        steps: optimiser steps to take; the loader is cycled if it runs out.
        learning_rate: optimiser step size.
        optimizer: ``"adamw"`` or ``"sgd"`` (momentum 0.9, Nesterov).
        weight_decay: decoupled weight decay (AdamW) or L2 (SGD).
        proximal_mu: FedProx weight of ``mu / 2 * ||w - w_global||²``; 0 disables it.
        mixed_precision: autocast to float16 on CUDA (bfloat16 on CPU is not used: it
            is slower than float32 on most CPUs).
        max_grad_norm: gradient clipping threshold; keeps early federated rounds stable.
    """

    steps: int
    learning_rate: float
    optimizer: Literal["adamw", "sgd"] = "adamw"
    weight_decay: float = 1e-5
    proximal_mu: float = 0.0
    mixed_precision: bool = False
    max_grad_norm: float = 12.0


@dataclass(frozen=True)
class TrainingResult:
    """Mean losses over the steps taken, and where the time went.

    Attributes:
        seconds: the whole loop.
        data_seconds: the part spent waiting for batches (reading, preprocessing and
            augmenting cases); the rest is the network's.
    """

    loss: float
    segmentation_loss: float
    attention_loss: float
    steps: int
    seconds: float
    data_seconds: float = 0.0

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else math.inf


def resolve_device(requested: Literal["auto", "cpu", "cuda"]) -> torch.device:
    """``auto`` picks CUDA when available; asking for CUDA without one is an error."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but no CUDA device is available")
    if requested == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def resolve_mixed_precision(requested: Literal["auto", "on", "off"], device: torch.device) -> bool:
    """Mixed precision runs on CUDA only; ``auto`` turns it on there."""
    if requested == "on" and device.type != "cuda":
        raise RuntimeError("mixed-precision 'on' needs a CUDA device; use 'auto' or 'off' on CPU")
    return device.type == "cuda" and requested != "off"


def build_optimizer(model: nn.Module, settings: TrainingSettings) -> torch.optim.Optimizer:
    if settings.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=settings.learning_rate,
            momentum=0.9,
            nesterov=True,
            weight_decay=settings.weight_decay,
        )
    return torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)


def _cycle(loader: Iterable[dict]) -> Iterator[dict]:
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError("the training loader yielded no batch: the site has no training cases")


def _proximal_term(model: nn.Module, anchor: Sequence[torch.Tensor]) -> torch.Tensor:
    return sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor))  # type: ignore[return-value]


StepCallback = Callable[[int, int, float], None]
"""Called after every optimiser step with (steps done, steps in total, seconds since the first)."""


def train_steps(
    model: nn.Module,
    loader: Iterable[dict],
    loss_fn: SegGuidedLoss,
    settings: TrainingSettings,
    device: torch.device,
    on_step: StepCallback | None = None,
) -> TrainingResult:
    """Train ``model`` in place for ``settings.steps`` optimiser steps.

    Args:
        model: a ``SegGuidedNet`` (anything returning ``SegGuidedOutput``).
        loader: yields dicts with ``image`` ``(B, 4, D, H, W)``, ``regions`` and
            ``subregions`` ``(B, 3, D, H, W)``.
        loss_fn: segmentation plus attention-supervision loss.
        settings: steps, optimiser and FedProx settings.
        device: where to train.
        on_step: progress callback (``StepCallback``), e.g. a log line now and then.

    Returns:
        Mean total, segmentation and attention losses over the steps, and timing.

    Raises:
        FloatingPointError: the loss became NaN or infinite (the update is unusable).
    """
    if settings.steps < 1:
        raise ValueError(f"steps must be at least 1, got {settings.steps}")
    model.to(device).train()
    optimizer = build_optimizer(model, settings)
    scaler = torch.amp.GradScaler("cuda", enabled=settings.mixed_precision)
    anchor = [p.detach().clone() for p in model.parameters()] if settings.proximal_mu > 0 else []
    totals = torch.zeros(3, dtype=torch.float64)
    batches = _cycle(loader)
    start = time.perf_counter()
    data_seconds = 0.0
    for step in range(settings.steps):
        waited = time.perf_counter()
        batch = next(batches)
        data_seconds += time.perf_counter() - waited
        image = batch["image"].to(device, non_blocking=True)
        regions = batch["regions"].to(device, non_blocking=True)
        subregions = batch["subregions"].to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=settings.mixed_precision):
            terms = loss_fn(model(image), regions, subregions)
        loss = terms.total
        if anchor:
            loss = loss + settings.proximal_mu / 2 * _proximal_term(model, anchor)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss.item()} at step {step}")
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        totals += torch.stack(
            [torch.as_tensor(t).detach().double().cpu() for t in (terms.total, terms.segmentation, terms.attention)]
        )
        if on_step is not None:
            on_step(step + 1, settings.steps, time.perf_counter() - start)
    seconds = time.perf_counter() - start
    means = (totals / settings.steps).tolist()
    return TrainingResult(means[0], means[1], means[2], settings.steps, seconds, data_seconds)
