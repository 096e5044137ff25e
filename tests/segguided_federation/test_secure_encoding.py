"""Fixed-point encoding: exact modular sums, loud range errors, the documented tolerance."""

from __future__ import annotations

import numpy as np
import pytest

from segguided_federation.secure_encoding import (
    SUM_BUDGET,
    FixedPointCodec,
    SecureRangeError,
)

SHAPES = [(3, 4), (5,), ()]
KEYS = ("loss",)


def _updates(rng, scale=0.05):
    return [rng.normal(0, scale, size=s).astype(np.float32) for s in SHAPES]


def test_sum_of_encodings_decodes_to_the_case_weighted_mean_within_tolerance():
    rng = np.random.default_rng(0)
    codec = FixedPointCodec(clients=5, max_weight=1000, clipping_range=1.0, metric_keys=KEYS)
    clients = [(_updates(rng), int(rng.integers(1, 1000)), float(rng.uniform(0, 3))) for _ in range(5)]
    total = np.zeros(codec.length(SHAPES), dtype=np.uint32)
    for updates, weight, loss in clients:
        total += codec.encode(updates, weight, {"loss": loss})
    decoded = codec.decode(total, SHAPES)

    weights = np.array([w for _, w, _ in clients], dtype=np.float64)
    assert decoded.weight == int(weights.sum())
    assert decoded.metric_means()["loss"] == pytest.approx(
        np.dot(weights, [l for _, _, l in clients]) / weights.sum(), abs=1 / codec.metric_scale
    )
    for index, shape in enumerate(SHAPES):
        exact = sum(w * u[index].astype(np.float64) for u, w, _ in clients) / weights.sum()
        mean = decoded.update_sums[index] / decoded.weight
        assert mean.shape == shape
        assert np.max(np.abs(mean - exact), initial=0.0) <= codec.tolerance


def test_extreme_values_from_every_client_do_not_overflow():
    codec = FixedPointCodec(clients=50, max_weight=1000, clipping_range=1.0)
    shapes = [(4,)]
    total = np.zeros(codec.length(shapes), dtype=np.uint32)
    for _ in range(50):
        total += codec.encode([np.array([1.0, -1.0, 1.0, -1.0], dtype=np.float32)], 1000, {})
    decoded = codec.decode(total, shapes)
    np.testing.assert_allclose(decoded.update_sums[0] / decoded.weight, [1, -1, 1, -1], atol=codec.tolerance)
    assert 50 * 1000 * (codec.clipping_range * codec.scale + 1) <= SUM_BUDGET


def test_an_update_beyond_the_clipping_range_fails_loudly_naming_the_key():
    codec = FixedPointCodec(clients=3, max_weight=100, clipping_range=0.5)
    with pytest.raises(SecureRangeError, match="secure-aggregation-clipping-range=0.5"):
        codec.encode([np.array([0.1, -0.7], dtype=np.float32)], 10, {})


@pytest.mark.parametrize(
    "updates, weight, metrics, match",
    [
        ([np.array([np.nan], dtype=np.float32)], 1, {"loss": 1.0}, "not finite"),
        ([np.zeros(2, dtype=np.float32)], 101, {"loss": 1.0}, "secure-aggregation-max-cases=100"),
        ([np.zeros(2, dtype=np.float32)], 0, {"loss": 1.0}, "training cases"),
        ([np.zeros(2, dtype=np.float32)], 1, {}, "'loss' missing"),
        ([np.zeros(2, dtype=np.float32)], 1, {"loss": 1e9}, "'loss'"),
    ],
)
def test_values_that_do_not_fit_are_refused(updates, weight, metrics, match):
    codec = FixedPointCodec(clients=3, max_weight=100, clipping_range=1.0, metric_keys=KEYS)
    with pytest.raises(SecureRangeError, match=match):
        codec.encode(updates, weight, metrics)


def test_settings_that_leave_too_coarse_a_resolution_are_refused():
    with pytest.raises(SecureRangeError, match="secure-aggregation-max-cases"):
        FixedPointCodec(clients=50, max_weight=100_000, clipping_range=10.0)


def test_tolerance_shrinks_with_fewer_clients():
    tolerances = [FixedPointCodec(k, 1000, 1.0).tolerance for k in (3, 10, 20, 50)]
    assert tolerances == sorted(tolerances)
    assert tolerances[0] < 2e-6 and tolerances[-1] < 4e-5
