"""Fixed-point encoding of one client's weighted update for secure summation modulo 2**32.

A client sends ``[w, w·m_1 … w·m_k, w·q(Δ)]`` as one uint32 vector, where ``w`` is its
number of training cases, ``m_j`` its training metrics, ``Δ = local − global`` its update
and ``q(x) = round(x · S)`` with a power-of-two scale ``S``. Sums wrap modulo 2**32, so
the server's unmasked total read as signed 32-bit integers is exactly
``[Σw, Σw·m_j, Σw·q(Δ)]``, and ``Σw·q(Δ) / (S·Σw)`` is the case-weighted FedAvg update
with an absolute error of at most ``0.5 / S`` per weight (rounding only; the integer sum
is exact).

``S`` is the largest power of two for which the sum of all sampled clients cannot
overflow: ``K · M · (C·S + 1) ≤ 2**30`` for ``K`` clients, at most ``M`` cases each and
``|Δ| ≤ C``. A client whose update leaves ``[-C, C]``, is not finite, or whose case count
exceeds ``M`` raises ``SecureRangeError`` instead of being clipped; its public part names
the rule and the key, its private part (the hospital's log only) the value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from segguided_federation.metric_keys import TRAINING_LOSS_KEYS
from segguided_federation.redaction import RedactedError

SUM_BUDGET = 2**30
"""Largest magnitude the sum of all clients may reach (half the signed 32-bit range)."""

METRIC_BOUND = 64.0
"""Largest magnitude of a training metric carried in the masked vector (losses are ≤ 3)."""

MIN_SCALE_BITS = 8


class SecureRangeError(RedactedError, ValueError):
    """Values do not fit the secure-aggregation encoding: ``public`` names the key, ``private`` the value."""


@dataclass(frozen=True)
class DecodedSum:
    """The unmasked sum of all surviving clients.

    Attributes:
        weight: ``Σw``, the total number of training cases (clients, under DP).
        metric_sums: ``Σw·m`` per metric key.
        update_sums: ``Σw·Δ`` per weight array, float64, in the model's shapes.
    """

    weight: int
    metric_sums: dict[str, float]
    update_sums: list[np.ndarray]

    def metric_means(self) -> dict[str, float]:
        return {key: value / self.weight for key, value in self.metric_sums.items()} if self.weight else {}


def _scale_bits(clients: int, max_weight: int, bound: float) -> int:
    per_client = SUM_BUDGET / (clients * max_weight) - 1.0
    if per_client <= 0 or bound <= 0:
        return -1_000
    return math.floor(math.log2(per_client / bound))


@dataclass(frozen=True)
class FixedPointCodec:
    """Encodes client updates and decodes their sum.

    Args:
        clients: clients sampled in this round (``K``).
        max_weight: largest case count one client may report (``M``,
            ``secure-aggregation-max-cases``).
        clipping_range: largest ``|Δ|`` of any weight (``C``,
            ``secure-aggregation-clipping-range``).
        metric_keys: training metrics carried, case-weighted, in the masked vector.

    Raises:
        SecureRangeError: the resulting resolution is coarser than ``2**-8``.
    """

    clients: int
    max_weight: int
    clipping_range: float
    metric_keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.clients < 1 or self.max_weight < 1:
            raise SecureRangeError(f"expected clients ≥ 1 and max cases ≥ 1, got {self.clients} and {self.max_weight}")
        if self.scale_bits < MIN_SCALE_BITS:
            raise SecureRangeError(
                f"{self.clients} clients × secure-aggregation-max-cases={self.max_weight} × "
                f"secure-aggregation-clipping-range={self.clipping_range} leave a resolution coarser than "
                f"2**-{MIN_SCALE_BITS}; lower either setting"
            )

    @property
    def scale_bits(self) -> int:
        return _scale_bits(self.clients, self.max_weight, self.clipping_range)

    @property
    def scale(self) -> float:
        """``S``: an update ``Δ`` travels as ``round(Δ · S)``."""
        return float(2**self.scale_bits)

    @property
    def tolerance(self) -> float:
        """Largest absolute difference from exact case-weighted FedAvg, per weight."""
        return 0.5 / self.scale

    @property
    def metric_scale(self) -> float:
        return float(2 ** _scale_bits(self.clients, self.max_weight, METRIC_BOUND))

    def length(self, shapes: Sequence[tuple[int, ...]]) -> int:
        """Words in an encoded vector for weight arrays of these shapes."""
        return 1 + len(self.metric_keys) + sum(int(np.prod(shape, dtype=np.int64)) for shape in shapes)

    def encode(self, updates: Sequence[np.ndarray], weight: int, metrics: Mapping[str, float]) -> np.ndarray:
        """One client's contribution.

        Args:
            updates: ``Δ`` per weight array (any shapes, floating point).
            weight: the client's number of training cases (1 under DP).
            metrics: must hold every key of ``metric_keys``.

        Returns:
            ``(length(shapes),)`` uint32 vector, to be masked and summed modulo 2**32.

        Raises:
            SecureRangeError: ``weight`` outside ``[1, max_weight]``, a metric missing or
                beyond ``±METRIC_BOUND``, or an update not finite or beyond ``±clipping_range``.
        """
        if not 1 <= int(weight) <= self.max_weight:
            raise SecureRangeError(
                f"a client's training cases are outside 1 to secure-aggregation-max-cases={self.max_weight}",
                f"{weight} training cases",
            )
        head = [int(weight)]
        for key in self.metric_keys:
            if key not in metrics:
                raise SecureRangeError(f"training metric {key!r} missing from the client's results")
            value = float(metrics[key])
            if not math.isfinite(value) or abs(value) > METRIC_BOUND:
                raise SecureRangeError(f"training metric {key!r} is not finite or beyond ±{METRIC_BOUND}", f"{value}")
            head.append(int(weight) * int(round(value * self.metric_scale)))
        parts = [np.asarray(head, dtype=np.int64).astype(np.uint32)]
        for index, update in enumerate(updates):
            update = np.asarray(update)
            if update.size == 0:
                continue
            largest = float(np.max(np.abs(update)))
            where = f"weight array {index} {tuple(update.shape)}"
            if not math.isfinite(largest):
                raise SecureRangeError("the update is not finite", where)
            if largest > self.clipping_range:
                raise SecureRangeError(
                    f"an update exceeds secure-aggregation-clipping-range={self.clipping_range}; raise it (the "
                    "aggregate would otherwise be clipped)",
                    f"{where}: largest |update| {largest:.4g}",
                )
            quantised = np.rint(update.astype(np.float64, copy=False).ravel() * self.scale).astype(np.int64)
            parts.append((quantised * int(weight)).astype(np.uint32))
        return np.concatenate(parts)

    def decode(self, total: np.ndarray, shapes: Sequence[tuple[int, ...]]) -> DecodedSum:
        """Read the unmasked modular sum of every survivor's ``encode``.

        Args:
            total: ``(length(shapes),)`` uint32, the sum modulo 2**32.
            shapes: the weight arrays' shapes, in order.

        Raises:
            SecureRangeError: ``total`` does not have ``length(shapes)`` words.
        """
        total = np.asarray(total, dtype=np.uint32)
        if total.shape != (self.length(shapes),):
            raise SecureRangeError(f"expected {self.length(shapes)} aggregated words, got shape {total.shape}")
        signed = total.view(np.int32).astype(np.int64)
        weight = int(signed[0])
        metric_sums = {
            key: float(signed[1 + index]) / self.metric_scale for index, key in enumerate(self.metric_keys)
        }
        offset = 1 + len(self.metric_keys)
        update_sums = []
        for shape in shapes:
            size = int(np.prod(shape, dtype=np.int64))
            update_sums.append((signed[offset : offset + size] / self.scale).reshape(shape))
            offset += size
        return DecodedSum(weight, metric_sums, update_sums)


def carried_metric_keys(differential_privacy: bool) -> tuple[str, ...]:
    """Metrics in the masked vector: none under DP, whose noise protects only the update."""
    return () if differential_privacy else TRAINING_LOSS_KEYS
