"""Central DP pieces: L2 clipping of one client's update, noise scale, and the accountant's ε."""

from __future__ import annotations

import numpy as np
import pytest

from server.differential_privacy import PrivacyAccountant, PrivacySettings, add_noise, clip_update


def test_clipping_bounds_the_joint_norm_and_keeps_small_updates():
    big = [np.full((3, 4), 1.0, dtype=np.float32), np.full(5, -2.0, dtype=np.float32)]
    clipped, norm = clip_update(big, 0.5)
    assert norm == pytest.approx(np.sqrt(12 + 20))
    assert np.sqrt(sum(float(np.sum(c.astype(np.float64) ** 2)) for c in clipped)) == pytest.approx(0.5, rel=1e-6)
    small = [np.array([0.01, -0.02], dtype=np.float32)]
    np.testing.assert_array_equal(clip_update(small, 0.5)[0][0], small[0])


def test_noise_has_the_requested_standard_deviation():
    noised = add_noise([np.zeros(100_000)], std=0.3, rng=np.random.default_rng(0))[0]
    assert noised.std() == pytest.approx(0.3, rel=0.02)


def test_epsilon_grows_with_rounds_and_shrinks_with_more_noise():
    low_noise = PrivacyAccountant(PrivacySettings(noise_multiplier=1.0, clipping_norm=1.0, delta=1e-5, sample_rate=1.0))
    spent = [low_noise.spend_round() for _ in range(3)]
    assert spent == sorted(spent) and spent[0] > 0
    high_noise = PrivacyAccountant(PrivacySettings(4.0, 1.0, 1e-5, 1.0), rounds=3)
    assert high_noise.epsilon() < spent[-1]
    resumed = PrivacyAccountant(PrivacySettings(1.0, 1.0, 1e-5, 1.0), rounds=3)
    assert resumed.epsilon() == pytest.approx(spent[-1])


@pytest.mark.parametrize("kwargs", [dict(noise_multiplier=0.0), dict(delta=1.5), dict(sample_rate=0.0)])
def test_impossible_settings_are_named(kwargs):
    settings = dict(noise_multiplier=1.0, clipping_norm=1.0, delta=1e-5, sample_rate=1.0) | kwargs
    with pytest.raises(ValueError, match="dp-|sample rate"):
        PrivacySettings(**settings)
