"""SegAttentionGate: supervised sub-region attention maps that gate decoder features."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from segguided_model.gate_function import segmentation_gate
from segguided_model.labels import SUBREGIONS


class GateOutput(NamedTuple):
    """What a ``SegAttentionGate`` hands on.

    Attributes:
        features: the gated features ``(B, C, D, H, W)``.
        maps: attention maps ``(B, 3, D, H, W)`` in [0, 1] (NCR, ED, ET).
        map_logits: the maps before their sigmoid, ``(B, 3, D, H, W)``, for a loss that
            is cheaper and more stable on logits (binary cross-entropy).
    """

    features: torch.Tensor
    maps: torch.Tensor
    map_logits: torch.Tensor


MAP_PRIOR = 0.02
"""Initial value of every attention map: about the share of brain voxels in a sub-region."""


class SegAttentionGate(nn.Module):
    """Turn decoder features into NCR/ED/ET attention maps and gate the features with them.

    The gate is deliberately lightweight (``6 * channels + 3`` parameters):

    1. ``maps = sigmoid(conv1x1(features))``: three maps in [0, 1], one per sub-region in
       ``labels.SUBREGIONS`` order (NCR, ED, ET). The attention loss supervises them
       with the ground-truth sub-region masks at this stage's resolution.
    2. ``gated = features * (1 + conv1x1(maps))``: a learned per-channel mix of the three
       maps rescales every feature voxel-wise. The mixing convolution starts at zero, so
       a freshly built gated network computes exactly what the network without gates
       does; the gates then learn how much each sub-region should amplify or damp each
       feature channel.

    The maps' bias starts at ``logit(MAP_PRIOR)``, so a new gate's maps read about 0.02,
    close to where most voxels' targets are, not 0.5 (the prior initialisation of
    RetinaNet, Lin et al., ICCV 2017): early training is not spent pushing every map down
    before the sub-regions can stand out.

    The gate runs as one autograd node (``segguided_model.gate_function.segmentation_gate``):
    both 1×1×1 convolutions as matrix products, and only the features and maps kept for
    backward. Its cost is a few per-voxel products, small beside the 3×3×3 convolutions
    of the stage it follows.

    Args:
        channels: number of decoder feature channels ``C``.

    Shapes:
        ``features (B, C, D, H, W)`` → ``GateOutput`` (gated features, maps, map logits).

    Raises:
        ValueError: ``channels`` is not a positive integer.
    """

    def __init__(self, channels: int, hidden_channels: int = 0) -> None:
        super().__init__()
        if not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive integer, got {channels!r}")
        if not isinstance(hidden_channels, int) or hidden_channels < 0:
            raise ValueError(f"hidden_channels must be a non-negative integer, got {hidden_channels!r}")
        n_maps = len(SUBREGIONS)
        self.hidden = nn.Conv3d(channels, hidden_channels, kernel_size=1) if hidden_channels else None
        self.to_maps = nn.Conv3d(hidden_channels or channels, n_maps, kernel_size=1)
        nn.init.constant_(self.to_maps.bias, math.log(MAP_PRIOR / (1 - MAP_PRIOR)))
        self.to_gate = nn.Conv3d(n_maps, channels, kernel_size=1, bias=False)
        nn.init.zeros_(self.to_gate.weight)

    def forward(self, features: torch.Tensor) -> GateOutput:
        readout = None if self.hidden is None else torch.relu_(self.hidden(features))
        return GateOutput(
            *segmentation_gate(features, self.to_maps.weight, self.to_maps.bias, self.to_gate.weight, readout)
        )
