"""Saving and loading SegGuidedNet checkpoints: architecture, weights and free-form extras."""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from segguided_model.atomic_write import write_bytes_atomically
from segguided_model.network import ModelConfig, SegGuidedNet

CHECKPOINT_FORMAT = "segguided-checkpoint"
CHECKPOINT_VERSION = 4
"""Bumped when the stored layout changes; older versions stay loadable (``_upgrade``)."""

_SHOWN_KEYS = 3


class CheckpointError(ValueError):
    """A file is not a SegGuidedNet checkpoint, or holds another architecture."""


@dataclass
class LoadedCheckpoint:
    """A checkpoint read back: the rebuilt network, its architecture and the extras.

    Attributes:
        model: ``SegGuidedNet`` with the stored weights, in training mode.
        config: its ``ModelConfig``.
        extra: whatever was passed as ``extra`` when saving (round, metrics, ...).
    """

    model: SegGuidedNet
    config: ModelConfig
    extra: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(path: str | os.PathLike, model: SegGuidedNet, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` to ``path`` atomically.

    The checkpoint is serialised in memory, then written to a temporary file in the same
    folder, flushed to disk and renamed over ``path``, so a crash never leaves a
    half-written checkpoint and a full disk is found before anything is overwritten.
    ``extra`` must hold only tensors and plain Python values (it is read back with
    ``torch.load(weights_only=True)``).

    Returns:
        The checkpoint's path.

    Raises:
        TypeError: ``model`` is not a ``SegGuidedNet``.
        DiskFullError: the disk cannot hold the checkpoint (names the file and both sizes).
    """
    model = getattr(model, "_orig_mod", model)  # unwrap torch.compile
    if not isinstance(model, SegGuidedNet):
        raise TypeError(f"expected a SegGuidedNet, got {type(model).__name__}")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "config": model.config.model_dump(),
        "state_dict": {key: value.detach().cpu() for key, value in model.state_dict().items()},
        "extra": dict(extra or {}),
    }
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_bytes_atomically(path, buffer.getbuffer())
    return path


def _describe_mismatch(path: Path, stored: dict[str, torch.Tensor], model: SegGuidedNet) -> str | None:
    expected = model.state_dict()
    missing = [key for key in expected if key not in stored]
    unexpected = [key for key in stored if key not in expected]
    reshaped = [
        f"{key} {tuple(stored[key].shape)} (expected {tuple(value.shape)})"
        for key, value in expected.items()
        if key in stored and tuple(stored[key].shape) != tuple(value.shape)
    ]
    problems = []
    for what, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", reshaped)):
        if keys:
            more = f" and {len(keys) - _SHOWN_KEYS} more" if len(keys) > _SHOWN_KEYS else ""
            problems.append(f"{what}: {', '.join(keys[:_SHOWN_KEYS])}{more}")
    if not problems:
        return None
    return f"checkpoint {path} holds another architecture ({'; '.join(problems)})"


def _upgrade(config: dict[str, Any], state_dict: dict[str, torch.Tensor], version: int) -> tuple[dict, dict]:
    """Bring a checkpoint of an older format ``version`` to the current layout.

    Version 1 predates ``ModelConfig.encoder_blocks`` and ``skip_merge``: every encoder
    level had one residual block, stored as ``encoder.<level>.block.*`` (now
    ``encoder.<level>.blocks.0.*``), and the decoder concatenated its skips. Versions 1
    and 2 predate ``ModelConfig.upsample``: every decoder upsampled by transposed
    convolution. Versions 1 to 3 predate ``ModelConfig.gate_hidden_channels``: every gate
    read its maps linearly from the features.
    """
    if version == 1:
        levels = int(config.get("levels", ModelConfig.model_fields["levels"].default))
        config = {**config, "encoder_blocks": (1,) * levels, "skip_merge": "concat"}
        state_dict = {
            re.sub(r"^encoder\.(\d+)\.block\.", r"encoder.\1.blocks.0.", key): value for key, value in state_dict.items()
        }
    if version <= 2:
        config = {**config, "upsample": "transposed"}
    if version <= 3:
        config = {**config, "gate_hidden_channels": 0}
    return config, state_dict


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Rebuild the network stored in ``path``.

    Raises:
        CheckpointError: the file is missing, unreadable, not a SegGuidedNet checkpoint,
            of a newer format version, or its weights do not fit its architecture
            (missing or unexpected keys, wrong shapes); the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many types for foreign files
        detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise CheckpointError(
            f"checkpoint {path} is not a readable PyTorch file ({type(error).__name__}: {detail[:200]})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not a SegGuidedNet checkpoint (expected format {CHECKPOINT_FORMAT!r}; "
            "a bare state_dict or another model's checkpoint?)"
        )
    version = payload.get("format_version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {version!r}; this code reads up to {CHECKPOINT_VERSION}"
        )
    state_dict = payload.get("state_dict")
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"checkpoint {path} has no state_dict")
    try:
        stored_config, state_dict = _upgrade(dict(payload.get("config", {})), state_dict, version)
        config = ModelConfig(**stored_config)
    except (ValidationError, TypeError, ValueError) as error:
        raise CheckpointError(f"checkpoint {path} has an invalid model config: {error}") from None
    model = SegGuidedNet.from_config(config)
    problem = _describe_mismatch(path, state_dict, model)
    if problem:
        raise CheckpointError(problem)
    model.load_state_dict(state_dict)
    model.to(map_location)
    return LoadedCheckpoint(model=model, config=config, extra=dict(payload.get("extra") or {}))
