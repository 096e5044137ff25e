"""Central differential privacy on top of secure aggregation: clipping, noise, and the ε spent.

Each client clips its update ``Δ`` to L2 norm ``C`` (``dp-clipping-norm``) before masking
and contributes with weight 1, so one hospital changes the securely summed ``ΣΔ`` by at most
``C``. The server adds Gaussian noise of standard deviation ``z·C`` (``z`` =
``dp-noise-multiplier``) to that sum once it is unmasked, then divides by the number of
contributing clients. Opacus' RDP accountant turns ``z``, the client sampling rate and the
number of noised rounds into ``ε`` at ``δ`` (``dp-delta``).

Dropouts: the noise is added to the sum of the survivors, whose sensitivity is still ``C``,
so a round with dropouts spends the same ε as a full one; only the relative noise in the
average grows (``z·C / survivors``). A round that halts (fewer survivors than the
reconstruction threshold) releases nothing and spends nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class PrivacySettings:
    """Args:
        noise_multiplier: ``z``; noise std on the sum is ``z · clipping_norm``.
        clipping_norm: ``C``, the largest L2 norm of one client's update.
        delta: ``δ`` at which ε is reported.
        sample_rate: fraction of clients sampled each round (``fraction-fit``).
    """

    noise_multiplier: float
    clipping_norm: float
    delta: float
    sample_rate: float

    def __post_init__(self) -> None:
        if self.noise_multiplier <= 0 or self.clipping_norm <= 0:
            raise ValueError(
                f"expected dp-noise-multiplier > 0 and dp-clipping-norm > 0, got "
                f"{self.noise_multiplier} and {self.clipping_norm}"
            )
        if not 0 < self.delta < 1 or not 0 < self.sample_rate <= 1:
            raise ValueError(f"expected 0 < dp-delta < 1 and 0 < sample rate ≤ 1, got {self.delta}, {self.sample_rate}")

    @property
    def noise_std(self) -> float:
        return self.noise_multiplier * self.clipping_norm


def clip_update(updates: Sequence[np.ndarray], clipping_norm: float) -> tuple[list[np.ndarray], float]:
    """Scale ``updates`` down so that their joint L2 norm is at most ``clipping_norm``.

    Returns:
        The clipped arrays (same shapes, float32) and the norm before clipping.
    """
    norm = math.sqrt(sum(float(np.sum(np.square(u, dtype=np.float64))) for u in updates))
    factor = min(1.0, clipping_norm / norm) if norm > 0 else 1.0
    return [(np.asarray(u, dtype=np.float64) * factor).astype(np.float32) for u in updates], norm


def add_noise(sums: Sequence[np.ndarray], std: float, rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """``sums`` plus independent N(0, std²) in every entry (a fresh OS-seeded generator by default)."""
    rng = rng if rng is not None else np.random.default_rng()
    return [np.asarray(s, dtype=np.float64) + rng.normal(0.0, std, size=np.shape(s)) for s in sums]


@dataclass
class PrivacyAccountant:
    """ε spent so far at ``settings.delta``, by Opacus' RDP accountant.

    Args:
        settings: the mechanism's parameters.
        rounds: noised rounds already released (a resumed run passes its completed rounds).
    """

    settings: PrivacySettings
    rounds: int = 0
    _accountant: object = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        from opacus.accountants import RDPAccountant  # heavy import, only when DP is on

        self._accountant = RDPAccountant()
        for _ in range(self.rounds):
            self._step()

    def _step(self) -> None:
        self._accountant.step(noise_multiplier=self.settings.noise_multiplier, sample_rate=self.settings.sample_rate)

    def spend_round(self) -> float:
        """Record one more noised round; return the total ε."""
        self.rounds += 1
        self._step()
        return self.epsilon()

    def epsilon(self) -> float:
        return float(self._accountant.get_epsilon(delta=self.settings.delta)) if self.rounds else 0.0
