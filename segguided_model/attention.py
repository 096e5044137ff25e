"""SegAttentionGate: supervised sub-region attention maps that gate decoder features."""

from __future__ import annotations

import torch
from torch import nn

from segguided_model.labels import SUBREGIONS


def pointwise(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """A 1×1×1 convolution computed as one batched matrix product.

    Equal to ``F.conv3d(features, weight, bias)``; on CPU, convolution kernels are slow
    for a handful of channels and a 1×1×1 kernel, while a matrix product is not.

    Shapes:
        ``features (B, C_in, D, H, W)``, ``weight (C_out, C_in, 1, 1, 1)``, ``bias (C_out,)``
        → ``(B, C_out, D, H, W)``.
    """
    batch, channels, *spatial = features.shape
    matrix = weight.reshape(weight.shape[0], channels).to(features.dtype)
    out = torch.matmul(matrix, features.reshape(batch, channels, -1))
    if bias is not None:
        out = out + bias.to(out.dtype)[:, None]
    return out.reshape(batch, weight.shape[0], *spatial)


class _MapGating(torch.autograd.Function):
    """``features * (1 + pointwise(maps, weight))`` that keeps only its inputs for backward."""

    @staticmethod
    def forward(ctx, features: torch.Tensor, maps: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(features, maps, weight)
        scale = pointwise(maps.to(features.dtype), weight)
        return scale.add_(1).mul_(features)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # one feature-sized temporary at a time: backward's memory peak is where it starts
        features, maps, weight = ctx.saved_tensors
        batch, channels, n_maps = grad.shape[0], grad.shape[1], maps.shape[1]
        flat_maps = maps.to(grad.dtype).reshape(batch, n_maps, -1)
        matrix = weight.reshape(channels, n_maps).to(grad.dtype)
        grad_scale = (grad * features).reshape(batch, channels, -1)
        grad_maps = torch.matmul(matrix.t(), grad_scale).reshape(maps.shape).to(maps.dtype)
        grad_weight = torch.matmul(grad_scale, flat_maps.transpose(1, 2)).sum(0)
        del grad_scale
        grad_features = pointwise(maps.to(grad.dtype), weight).add_(1).mul_(grad)
        return grad_features.to(features.dtype), grad_maps, grad_weight.reshape(weight.shape).to(weight.dtype)


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

    Both 1×1×1 convolutions run as matrix products and the gating keeps no intermediate
    for backward (``segguided_model.pointwise``): the gate's cost is a few per-voxel
    products, small beside the 3×3×3 convolutions of the stage it follows.

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
        self.to_maps = nn.Conv3d(channels, n_maps, kernel_size=1)
        self.to_gate = nn.Conv3d(n_maps, channels, kernel_size=1, bias=False)
        nn.init.zeros_(self.to_gate.weight)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = torch.sigmoid(pointwise(features, self.to_maps.weight, self.to_maps.bias))
        gated = _MapGating.apply(features, maps, self.to_gate.weight)
        return gated, maps
