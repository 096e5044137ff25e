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

Every metric must be one the ClientApp sends (``metric_keys``), within its range
(``FIT_METRIC_RANGES``, ``EVALUATE_METRIC_RANGES``: a Dice within [0, 1], seconds within
116 days, ...): a key the server does not read would become a history column (thousands of
them slowed every write), and one hospital's Dice of 1e15 would be the round's mean.

Each function raises ``ReplyRejected`` naming the rule the reply breaks (a weight's index
and the expected shape and dtype, a metric key of the server's own, a run-config key),
never a value, key or shape the hospital sent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from flwr.common import EvaluateRes, FitRes, Scalar, bytes_to_ndarray

from segguided_federation import metric_keys as keys
from segguided_federation.run_config import RunConfig
from segguided_model.attention_scores import ATTENTION_KEYS
from segguided_model.metrics import DICE_KEYS, DICE_MEAN_KEY, HD95_KEYS, HD95_MEAN_KEY
from server.secure_replies import ReplyRejected

Range = tuple[float, float]

_SECONDS: Range = (0.0, 1e7)
"""A duration a client reports, in seconds: up to 116 days."""
_LOSS: Range = (0.0, 1e6)
_COUNT: Range = (0.0, 1e9)
_UNIT: Range = (0.0, 1.0)
_MILLIMETRES: Range = (0.0, 1e4)
"""An HD95: 373.13 mm is the BraTS volume's diagonal (``metrics.HD95_ONE_EMPTY``), 10 m any scan's."""

FIT_METRIC_RANGES: dict[str, Range] = {
    keys.REJECTED_CASES: _COUNT,
    keys.LOSS: _LOSS,
    keys.SEGMENTATION_LOSS: _LOSS,
    keys.ATTENTION_LOSS: _LOSS,
    keys.STEPS: _COUNT,
    keys.STEPS_PER_SECOND: _COUNT,
    keys.TRAIN_SECONDS: _SECONDS,
    keys.DATA_SECONDS: _SECONDS,
    keys.QA_SECONDS: _SECONDS,
    keys.CLIENT_SECONDS: _SECONDS,
    keys.DEVICE_MEMORY_PEAK_BYTES: (0.0, 1e15),
}
"""Each numeric training metric a ClientApp sends and its range (``train-cases`` is bounded by
``secure-aggregation-max-cases``, ``site-id`` by ``SITE_ID_PATTERN``)."""

EVALUATE_METRIC_RANGES: dict[str, Range] = {
    **{key: _UNIT for key in (*DICE_KEYS, DICE_MEAN_KEY, *ATTENTION_KEYS)},
    **{key: _MILLIMETRES for key in (*HD95_KEYS, HD95_MEAN_KEY)},
    keys.QA_SECONDS: _SECONDS,
    keys.CLIENT_SECONDS: _SECONDS,
    keys.EVALUATION_WITHHELD: _UNIT,
}
"""Each numeric evaluation metric a ClientApp sends and its range (``cases`` is bounded by
``secure-aggregation-max-cases``)."""

EVALUATION_LOSS_RANGE: Range = _UNIT
"""The evaluation loss is 1 − mean Dice."""


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


def _check_number(value: object, what: str, bounds: Range) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ReplyRejected(f"{what} is not a number")
    low, high = bounds
    slack = 1e-6 * max(1.0, abs(low), abs(high))  # a mean of Dice scores may round past 1
    try:
        within = math.isfinite(value) and low - slack <= value <= high + slack
    except OverflowError:  # an integer beyond any float
        within = False
    if not within:
        raise ReplyRejected(f"{what} is not a finite number within [{low:g}, {high:g}]")


def _check_metrics(metrics: Mapping[str, Scalar], ranges: Mapping[str, Range], counts: str, bounds: ReplyBounds) -> None:
    """Every metric is one the server reads, within its range; the site id is a site id."""
    for key, value in metrics.items():
        if key == keys.SITE_ID:
            if not isinstance(value, str) or not keys.SITE_ID_PATTERN.fullmatch(value):
                raise ReplyRejected(f"metric {keys.SITE_ID!r} is not a site id ({keys.SITE_ID_RULE})")
        elif key == counts:
            _check_number(value, f"metric {counts!r}", (0, bounds.max_cases))
        elif key in ranges:
            _check_number(value, f"metric {key!r}", ranges[key])
        else:
            raise ReplyRejected("a metric key this server does not read (metric_keys names those it does)")


def _decoded(tensors: Sequence[bytes], expected: int) -> list[np.ndarray]:
    if len(tensors) != expected:  # counted before anything is decoded
        raise ReplyRejected(f"expected {expected} weight arrays")
    arrays = []
    for index, tensor in enumerate(tensors):
        try:
            array = bytes_to_ndarray(tensor)
        except Exception as error:  # noqa: BLE001 - whatever NumPy says of bytes that are no array
            raise ReplyRejected(f"weight array {index} does not decode as a NumPy array ({type(error).__name__})") from None
        if not isinstance(array, np.ndarray):  # np.load of a zip archive gives an NpzFile
            if hasattr(array, "close"):
                array.close()
            raise ReplyRejected(f"weight array {index} is not one .npy array")
        arrays.append(array)
    return arrays


def check_fit_reply(reply: FitRes, global_arrays: Sequence[np.ndarray], bounds: ReplyBounds = ReplyBounds()) -> None:
    """Raise ``ReplyRejected`` unless ``reply`` is an update FedAvg can weigh and average.

    Args:
        reply: a hospital's training reply.
        global_arrays: the global model the hospital was sent, in ``state_arrays.model_to_arrays``
            order; the update must match its number of arrays, their shapes and dtypes.
        bounds: the largest case count and per-weight change of one reply.

    Raises:
        ReplyRejected: a case count below 1 or above ``bounds.max_cases``; weights that do
            not decode as one ``.npy`` array each, differ in number, shape or dtype from the
            global model's, hold a NaN or an infinity, or move a weight further than
            ``bounds.clipping_range``; a metric the server does not read, or outside its
            range (``FIT_METRIC_RANGES``), or a ``site-id`` that is no site id.
    """
    _check_case_count(reply.num_examples, bounds, smallest=1)
    arrays = _decoded(reply.parameters.tensors, len(global_arrays))
    for index, (array, reference) in enumerate(zip(arrays, global_arrays)):
        if tuple(array.shape) != tuple(reference.shape):
            raise ReplyRejected(f"weight array {index} does not have the global model's shape {tuple(reference.shape)}")
        if array.dtype != reference.dtype:
            raise ReplyRejected(f"weight array {index} is not {reference.dtype} (the global model's dtype)")
        if not np.isfinite(array).all():
            raise ReplyRejected(f"weight array {index} holds a NaN or an infinity")
        if array.size and np.abs(array.astype(np.float64) - reference).max() > bounds.clipping_range:
            raise ReplyRejected(
                f"weight array {index} moves further from the global model than "
                f"secure-aggregation-clipping-range = {bounds.clipping_range:g}"
            )
    _check_metrics(reply.metrics, FIT_METRIC_RANGES, keys.TRAIN_CASES, bounds)


def check_evaluate_reply(reply: EvaluateRes, bounds: ReplyBounds = ReplyBounds()) -> None:
    """Raise ``ReplyRejected`` unless ``reply``'s loss, case count and metrics can be recorded and averaged.

    Raises:
        ReplyRejected: a loss that is not a number within ``EVALUATION_LOSS_RANGE``; a
            case count that is not an integer from 0 to ``bounds.max_cases``; a metric the
            server does not read, or outside its range (``EVALUATE_METRIC_RANGES``), or a
            ``site-id`` that is no site id.
    """
    _check_number(reply.loss, "the loss", EVALUATION_LOSS_RANGE)
    _check_case_count(reply.num_examples, bounds, smallest=0)
    _check_metrics(reply.metrics, EVALUATE_METRIC_RANGES, keys.EVALUATION_CASES, bounds)
