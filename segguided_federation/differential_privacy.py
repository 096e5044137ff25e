"""Central differential privacy on top of secure aggregation: its settings and the hospital's clipping.

Each client clips its update ``Δ`` to L2 norm ``C`` (``dp-clipping-norm``) before masking
and contributes with weight 1, so one hospital changes the securely summed ``ΣΔ`` by at most
``C``. The server adds Gaussian noise of standard deviation ``z·C`` (``z`` =
``dp-noise-multiplier``) to that sum once it is unmasked, then divides by the number of
contributing clients. Opacus' RDP accountant turns ``z``, the client sampling rate and the
number of noised rounds into ``ε`` at ``δ`` (``dp-delta``). The noise and the accountant
are the server's (``server/privacy_accountant.py``); the settings and the clipping, which a
hospital applies before masking, are here.

Dropouts: the noise is added to the sum of the survivors, whose sensitivity is still ``C``,
so a round with dropouts spends the same ε as a full one; only the relative noise in the
average grows (``z·C / survivors``). A round that halts (fewer survivors than the
reconstruction threshold) releases nothing and spends nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
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
