"""A hospital's plain training and evaluation replies, checked before anything reads them.

Without secure aggregation (``secure-aggregation = false``) Flower hands the strategy each
hospital's own ``FitRes`` and ``EvaluateRes``. One malformed reply must fail only its
sender (the README's threat model): unchecked, weights of the wrong shape made FedAvg's
average raise and end the ServerApp, a NaN weight turned the global model into NaN, a
negative case count flipped the sign of that hospital's update, and a non-finite loss or
metric went into the case-weighted means and into ``metrics.json`` (which strict JSON
readers then refuse). Secure rounds are checked on their own (``secure_replies`` for each
stage, ``secure_unmasking`` for the decoded sum).

Each function raises ``ReplyRejected`` naming the rule the reply breaks (a weight's index
and the expected shape, a metric's key), never a value the hospital sent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from flwr.common import EvaluateRes, FitRes, Scalar, parameters_to_ndarrays

from server.secure_replies import ReplyRejected


def _check_metrics(metrics: Mapping[str, Scalar]) -> None:
    for key, value in metrics.items():
        if isinstance(value, (int, float)) and not math.isfinite(value):
            raise ReplyRejected(f"metric {key!r} is not a finite number")


def check_fit_reply(reply: FitRes, shapes: Sequence[tuple[int, ...]]) -> None:
    """Raise ``ReplyRejected`` unless ``reply`` is an update FedAvg can weigh and average.

    Args:
        reply: a hospital's training reply.
        shapes: the global model's weight shapes, in ``state_arrays.model_to_arrays`` order.

    Raises:
        ReplyRejected: fewer than one case; weights that do not decode, are not
            floating-point numbers, differ in number or shape from the global model's, or
            hold a NaN or an infinity; a numeric metric that is not finite.
    """
    if not isinstance(reply.num_examples, int) or reply.num_examples < 1:
        raise ReplyRejected("the update weighs no case (num_examples must be a positive integer)")
    try:
        arrays = parameters_to_ndarrays(reply.parameters)
    except Exception as error:  # noqa: BLE001 - whatever NumPy says of bytes that are no array
        raise ReplyRejected(f"the weights do not decode as NumPy arrays ({type(error).__name__})") from None
    if len(arrays) != len(shapes):
        raise ReplyRejected(f"expected {len(shapes)} weight arrays, got {len(arrays)}")
    for index, (array, shape) in enumerate(zip(arrays, shapes)):
        if tuple(array.shape) != tuple(shape):
            raise ReplyRejected(f"weight array {index}: expected shape {tuple(shape)}, got {tuple(array.shape)}")
        if not np.issubdtype(array.dtype, np.floating):
            raise ReplyRejected(f"weight array {index}: expected floating-point numbers, got {array.dtype}")
        if not np.isfinite(array).all():
            raise ReplyRejected(f"weight array {index} holds a NaN or an infinity")
    _check_metrics(reply.metrics)


def check_evaluate_reply(reply: EvaluateRes) -> None:
    """Raise ``ReplyRejected`` unless ``reply``'s loss, case count and metrics can be recorded and averaged.

    Raises:
        ReplyRejected: a loss that is not a finite number, a negative or non-integer case
            count, or a numeric metric that is not finite.
    """
    if not isinstance(reply.loss, (int, float)) or not math.isfinite(reply.loss):
        raise ReplyRejected("the loss is not a finite number")
    if not isinstance(reply.num_examples, int) or reply.num_examples < 0:
        raise ReplyRejected("the case count (num_examples) must be a non-negative integer")
    _check_metrics(reply.metrics)
