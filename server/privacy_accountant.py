"""The server's half of central differential privacy: Gaussian noise on the unmasked sum, and the ε spent.

See ``segguided_federation/differential_privacy.py`` for the mechanism and what a
hospital does (clipping) before its update is masked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from segguided_federation.differential_privacy import PrivacySettings


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
