"""A hospital's plain training and evaluation replies, checked before anything reads them.

Without secure aggregation (``secure-aggregation = false``) Flower hands the strategy each
hospital's own ``FitRes`` and ``EvaluateRes``. One malformed reply must fail only its
sender (the README's threat model): unchecked, weights of the wrong shape made FedAvg's
average raise and end the ServerApp, a NaN weight turned the global model into NaN, a
negative case count flipped the sign of that hospital's update, a case count of 2**64 − 1
or weights of 1e38 replaced the global model, weights in float16 or float128 degraded or
broke the aggregate, a metric sent as text (``"nan"``, ``"abc"``) ended the ServerApp
where the server averages it, and a non-finite loss or metric went into the case-weighted
means and into ``metrics.json`` (which strict JSON readers then refuse).

A plain reply is held to the bounds a secure one is (``secure_unmasking``): at most
``secure-aggregation-max-cases`` cases and no weight further than
``secure-aggregation-clipping-range`` from the global model's, so that one hospital moves
the model no further without secure aggregation than with it. Secure rounds are checked
on their own (``secure_replies`` for each stage, ``secure_unmasking`` for the decoded sum),
and replies Flower cannot decode at all by ``decodable_replies``.

Each function raises ``ReplyRejected`` naming the rule the reply breaks (a weight's index
and the expected shape, a metric's key, a run-config key), never a value the hospital sent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from flwr.common import EvaluateRes, FitRes, Scalar, parameters_to_ndarrays

from segguided_federation import metric_keys as keys
from segguided_federation.run_config import RunConfig
from server.secure_replies import ReplyRejected

LARGEST_METRIC = 1e15
"""Largest magnitude of a loss or metric (the largest honest one, device memory in bytes, is near 1.5e11):
beyond it a case-weighted mean of a few hospitals could overflow to infinity."""


@dataclass(frozen=True)
class ReplyBounds:
    """What one hospital's plain reply may weigh and move.

    Attributes:
        max_cases: largest case count (``num_examples``) of one reply
            (run config ``secure-aggregation-max-cases``).
        clipping_range: largest ``|local − global|`` of one weight in one round
            (run config ``secure-aggregation-clipping-range``).
    """

    max_cases: int = 1000
    clipping_range: float = 1.0

    @classmethod
    def from_run_config(cls, config: RunConfig) -> ReplyBounds:
        return cls(config.secure_aggregation_max_cases, config.secure_aggregation_clipping_range)


def _check_case_count(count: object, bounds: ReplyBounds, smallest: int) -> None:
    if isinstance(count, bool) or not isinstance(count, int) or not smallest <= count <= bounds.max_cases:
        raise ReplyRejected(
            f"the case count (num_examples) must be an integer from {smallest} to "
            f"secure-aggregation-max-cases = {bounds.max_cases}"
        )


def _check_number(value: object, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ReplyRejected(f"{what} is not a number")
    try:
        finite = math.isfinite(value) and abs(value) <= LARGEST_METRIC
    except OverflowError:  # an integer beyond any float
        finite = False
    if not finite:
        raise ReplyRejected(f"{what} is not a finite number of magnitude at most {LARGEST_METRIC:g}")


def _check_metrics(metrics: Mapping[str, Scalar]) -> None:
    """Every metric the server reads is a number, but the site id, which is a site id."""
    for key, value in metrics.items():
        if key == keys.SITE_ID:
            if not isinstance(value, str) or not keys.SITE_ID_PATTERN.fullmatch(value):
                raise ReplyRejected(
                    f"metric {key!r} is not a site id (1 to 63 letters, digits, '.', '_' or '-', "
                    "starting with a letter or digit)"
                )
        else:
            _check_number(value, f"metric {key!r}")


def check_fit_reply(reply: FitRes, global_arrays: Sequence[np.ndarray], bounds: ReplyBounds = ReplyBounds()) -> None:
    """Raise ``ReplyRejected`` unless ``reply`` is an update FedAvg can weigh and average.

    Args:
        reply: a hospital's training reply.
        global_arrays: the global model the hospital was sent, in ``state_arrays.model_to_arrays``
            order; the update must match its number of arrays, their shapes and dtypes.
        bounds: the largest case count and per-weight change of one reply.

    Raises:
        ReplyRejected: a case count below 1 or above ``bounds.max_cases``; weights that do
            not decode, differ in number, shape or dtype from the global model's, hold a NaN
            or an infinity, or move a weight further than ``bounds.clipping_range``; a
            metric that is not a finite number (or, for ``site-id``, not a site id).
    """
    _check_case_count(reply.num_examples, bounds, smallest=1)
    try:
        arrays = parameters_to_ndarrays(reply.parameters)
    except Exception as error:  # noqa: BLE001 - whatever NumPy says of bytes that are no array
        raise ReplyRejected(f"the weights do not decode as NumPy arrays ({type(error).__name__})") from None
    if len(arrays) != len(global_arrays):
        raise ReplyRejected(f"expected {len(global_arrays)} weight arrays, got {len(arrays)}")
    for index, (array, reference) in enumerate(zip(arrays, global_arrays)):
        if tuple(array.shape) != tuple(reference.shape):
            raise ReplyRejected(
                f"weight array {index}: expected shape {tuple(reference.shape)}, got {tuple(array.shape)}"
            )
        if array.dtype != reference.dtype:
            raise ReplyRejected(f"weight array {index}: expected {reference.dtype}, got {array.dtype}")
        if not np.isfinite(array).all():
            raise ReplyRejected(f"weight array {index} holds a NaN or an infinity")
        if array.size and np.abs(array.astype(np.float64) - reference).max() > bounds.clipping_range:
            raise ReplyRejected(
                f"weight array {index} moves further from the global model than "
                f"secure-aggregation-clipping-range = {bounds.clipping_range:g}"
            )
    _check_metrics(reply.metrics)


def check_evaluate_reply(reply: EvaluateRes, bounds: ReplyBounds = ReplyBounds()) -> None:
    """Raise ``ReplyRejected`` unless ``reply``'s loss, case count and metrics can be recorded and averaged.

    Raises:
        ReplyRejected: a loss that is not a finite number; a case count that is not an
            integer from 0 to ``bounds.max_cases``; a metric that is not a finite number
            (or, for ``site-id``, not a site id).
    """
    _check_number(reply.loss, "the loss")
    _check_case_count(reply.num_examples, bounds, smallest=0)
    _check_metrics(reply.metrics)
