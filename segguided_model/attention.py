"""SegAttentionGate: supervised sub-region attention maps that gate decoder features."""

from __future__ import annotations

import torch
from torch import nn

from segguided_model.blocks import PointwiseConv3d
from segguided_model.labels import SUBREGIONS


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

    Args:
        channels: number of decoder feature channels ``C``.

    Shapes:
        ``features (B, C, D, H, W)`` → ``(gated (B, C, D, H, W), maps (B, 3, D, H, W))``.

    Raises:
        ValueError: ``channels`` is not a positive integer.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        if not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive integer, got {channels!r}")
        n_maps = len(SUBREGIONS)
        self.to_maps = PointwiseConv3d(channels, n_maps)
        self.to_gate = PointwiseConv3d(n_maps, channels, bias=False)
        nn.init.zeros_(self.to_gate.weight)

    def attention_maps(self, features: torch.Tensor) -> torch.Tensor:
        """Step 1: ``features (B, C, D, H, W)`` → ``maps (B, 3, D, H, W)`` in [0, 1]."""
        return torch.sigmoid(self.to_maps(features))

    def modulate(self, features: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        """Step 2: ``features * (1 + conv1x1(maps))``, shaped like ``features``."""
        # one fused kernel and one full-size temporary fewer than features * (1 + gate)
        return torch.addcmul(features, features, self.to_gate(maps))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.attention_maps(features)
        return self.modulate(features, maps), maps
