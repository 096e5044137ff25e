"""Central DP, the hospital's half: L2 clipping of one client's update, and the settings checked."""

from __future__ import annotations

import numpy as np
import pytest

from segguided_federation.differential_privacy import PrivacySettings, clip_update


def test_clipping_bounds_the_joint_norm_and_keeps_small_updates():
    big = [np.full((3, 4), 1.0, dtype=np.float32), np.full(5, -2.0, dtype=np.float32)]
    clipped, norm = clip_update(big, 0.5)
    assert norm == pytest.approx(np.sqrt(12 + 20))
    assert np.sqrt(sum(float(np.sum(c.astype(np.float64) ** 2)) for c in clipped)) == pytest.approx(0.5, rel=1e-6)
    small = [np.array([0.01, -0.02], dtype=np.float32)]
    np.testing.assert_array_equal(clip_update(small, 0.5)[0][0], small[0])


def test_a_clipped_update_fits_the_range_exactly_even_with_one_dominant_weight():
    clipped, _ = clip_update([np.array([3.0, 0.0], dtype=np.float32)], 0.05)
    assert np.max(np.abs(clipped[0])) <= 0.05  # float32(0.05) would exceed 0.05


@pytest.mark.parametrize("kwargs", [dict(noise_multiplier=0.0), dict(clipping_norm=-1.0), dict(delta=1.5)])
def test_impossible_settings_are_named(kwargs):
    settings = dict(noise_multiplier=1.0, clipping_norm=1.0, delta=1e-5) | kwargs
    with pytest.raises(ValueError, match="dp-"):
        PrivacySettings(**settings)
