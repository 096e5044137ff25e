"""The server's half of central differential privacy: Gaussian noise on the unmasked sum, and the ε spent.

See ``segguided_federation/differential_privacy.py`` for the mechanism and what a
hospital does (clipping) before its update is masked.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from segguided_federation.differential_privacy import PrivacySettings

SAMPLE_RATE = 1.0
"""Every hospital in every round: DP requires ``fraction-fit=1`` (see ``differential_privacy.py``)."""


def gaussian_noise(shape: tuple[int, ...], std: float, random_bytes: Callable[[int], bytes] | None = None) -> np.ndarray:
    """Independent N(0, std²) values drawn from the operating system's CSPRNG.

    NumPy's generators (PCG64, Mersenne Twister) are fast but not cryptographically secure:
    their state can be recovered from enough output, and seeding one per round from
    ``secrets`` only moves that problem. Here every value takes 64 fresh bits of
    ``os.urandom``: pairs of 53-bit uniforms in ``(0, 1)`` become two normal values by the
    Box–Muller transform, in float64. What this does not address is the floating-point
    pattern of the noise itself (Mironov, CCS 2012); the released model is float32, whose
    rounding discards the noise's low-order bits.

    Args:
        shape: shape of the result.
        std: standard deviation.
        random_bytes: source of random bytes (``os.urandom`` when None; tests may pass another).

    Returns:
        float64 array of ``shape``.
    """
    count = math.prod(shape)
    pairs = (count + 1) // 2
    words = np.frombuffer((random_bytes or os.urandom)(16 * pairs), dtype="<u8").reshape(2, pairs)
    uniform = ((words >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53  # in (0, 1), never 0
    radius = np.sqrt(-2.0 * np.log(uniform[0]))
    angle = 2.0 * np.pi * uniform[1]
    normal = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])[:count]
    return (std * normal).reshape(shape)


def add_noise(sums: Sequence[np.ndarray], std: float) -> list[np.ndarray]:
    """``sums`` plus independent N(0, std²) in every entry, from ``gaussian_noise``."""
    return [np.asarray(s, dtype=np.float64) + gaussian_noise(np.shape(s), std) for s in sums]


@dataclass
class PrivacyAccountant:
    """ε spent so far at ``settings.delta``, by Opacus' RDP accountant at sample rate 1.

    Args:
        settings: the mechanism's parameters.
        rounds: noised rounds already released (a resumed run passes its completed rounds;
            resume refuses any change to the DP and sampling settings, so they are the same).
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
        self._accountant.step(noise_multiplier=self.settings.noise_multiplier, sample_rate=SAMPLE_RATE)

    def spend_round(self) -> float:
        """Record one more noised round; return the total ε."""
        self.rounds += 1
        self._step()
        return self.epsilon()

    def epsilon(self) -> float:
        return float(self._accountant.get_epsilon(delta=self.settings.delta)) if self.rounds else 0.0
