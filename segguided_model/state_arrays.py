"""A model's weights as a flat list of NumPy arrays, the form federated aggregation works on."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn


def model_to_arrays(model: nn.Module) -> list[np.ndarray]:
    """Every entry of ``model.state_dict()``, in its order, as float32/native NumPy copies."""
    return [tensor.detach().cpu().numpy().copy() for tensor in model.state_dict().values()]


def load_arrays(model: nn.Module, arrays: Sequence[np.ndarray]) -> None:
    """Load arrays produced by ``model_to_arrays`` (possibly aggregated) into ``model``.

    Raises:
        ValueError: the number or shapes of the arrays do not match the model, naming the
            first mismatching parameter.
    """
    state = model.state_dict()
    if len(arrays) != len(state):
        raise ValueError(f"expected {len(state)} weight arrays for this architecture, got {len(arrays)}")
    updated = {}
    for (name, reference), array in zip(state.items(), arrays):
        if tuple(array.shape) != tuple(reference.shape):
            raise ValueError(
                f"weight {name!r}: expected shape {tuple(reference.shape)}, got {tuple(array.shape)}"
            )
        updated[name] = torch.as_tensor(np.asarray(array), dtype=reference.dtype)
    model.load_state_dict(updated)
