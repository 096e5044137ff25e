"""Central DP, the server's half: the noise scale and the accountant's ε."""

from __future__ import annotations

import numpy as np
import pytest

from segguided_federation.differential_privacy import PrivacySettings
from server.privacy_accountant import PrivacyAccountant, add_noise


def test_noise_has_the_requested_standard_deviation():
    noised = add_noise([np.zeros((200, 501))], std=0.3)[0]
    assert noised.shape == (200, 501)
    assert noised.std() == pytest.approx(0.3, rel=0.02) and abs(noised.mean()) < 0.01


def test_epsilon_grows_with_rounds_and_shrinks_with_more_noise():
    low_noise = PrivacyAccountant(PrivacySettings(noise_multiplier=1.0, clipping_norm=1.0, delta=1e-5))
    spent = [low_noise.spend_round() for _ in range(3)]
    assert spent == sorted(spent) and spent[0] > 0
    high_noise = PrivacyAccountant(PrivacySettings(4.0, 1.0, 1e-5), rounds=3)
    assert high_noise.epsilon() < spent[-1]
    resumed = PrivacyAccountant(PrivacySettings(1.0, 1.0, 1e-5), rounds=3)
    assert resumed.epsilon() == pytest.approx(spent[-1])


def test_noise_comes_from_the_operating_systems_random_source(monkeypatch):
    """NumPy's generators are not cryptographically secure; the noise must not use them."""

    def refuse(*args, **kwargs):
        raise AssertionError("noise drawn from a NumPy generator")

    monkeypatch.setattr(np.random, "default_rng", refuse)
    monkeypatch.setattr(np.random, "normal", refuse)
    drawn = []
    monkeypatch.setattr("os.urandom", lambda size: drawn.append(size) or (bytes(range(256)) * (size // 256 + 1))[:size])
    add_noise([np.zeros(1000)], std=0.3)
    assert sum(drawn) >= 1000 * 8  # at least 64 random bits per noised value


def test_the_noise_is_gaussian():
    from scipy import stats

    from server.privacy_accountant import gaussian_noise

    sample = gaussian_noise((50_001,), std=2.0)
    assert stats.kstest(sample / 2.0, "norm").pvalue > 1e-4
