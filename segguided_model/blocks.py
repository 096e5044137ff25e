"""Residual encoder and decoder stages of SegGuidedNet, built from MONAI blocks."""

from __future__ import annotations

from typing import Literal, get_args

import torch
from monai.networks.blocks import UnetResBlock
from monai.networks.blocks.dynunet_block import get_conv_layer
from torch import nn

Norm = Literal["instance", "group"]

_MAX_GROUPS = 8


def norm_layer_spec(norm: Norm, channels: int) -> tuple[str, dict]:
    """MONAI norm spec for ``channels`` features that FedAvg can average safely.

    Instance and group norm keep no running statistics, so averaging their weights
    across sites is sound (BatchNorm's running means are not). Both carry a learnable
    affine. Group norm uses the largest of 8, 4, 2, 1 groups that divides ``channels``.

    Raises:
        ValueError: ``norm`` is neither ``"instance"`` nor ``"group"``.
    """
    if norm == "instance":
        return ("instance", {"affine": True})
    if norm == "group":
        groups = next(g for g in (_MAX_GROUPS, 4, 2, 1) if channels % g == 0)
        return ("group", {"num_groups": groups})
    raise ValueError(f"norm must be 'instance' or 'group', got {norm!r}")


class EncoderStage(nn.Module):
    """One encoder level: ``blocks`` residual blocks, the first strided by 2 except at full resolution.

    Each block is ``monai.networks.blocks.UnetResBlock`` (conv-norm-act-conv-norm plus a
    1×1×1 projected shortcut when width or stride change). Further blocks keep width and
    resolution, so they add capacity where the level's voxels are few.

    Args:
        in_channels: input features.
        out_channels: output features.
        downsample: halve every spatial dimension.
        norm: ``"instance"`` or ``"group"``.
        blocks: residual blocks at this level (at least 1).

    Shapes:
        ``(B, in_channels, D, H, W)`` → ``(B, out_channels, D/s, H/s, W/s)``, s = 2 if
        ``downsample`` else 1.
    """

    def __init__(self, in_channels: int, out_channels: int, downsample: bool, norm: Norm, blocks: int = 1) -> None:
        super().__init__()
        if blocks < 1:
            raise ValueError(f"an encoder stage needs at least one block, got {blocks}")
        self.blocks = nn.Sequential(
            *(
                UnetResBlock(
                    spatial_dims=3,
                    in_channels=in_channels if index == 0 else out_channels,
                    out_channels=out_channels,
                    kernel_size=3,
                    stride=2 if downsample and index == 0 else 1,
                    norm_name=norm_layer_spec(norm, out_channels),
                )
                for index in range(blocks)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


SkipMerge = Literal["add", "concat"]
Upsample = Literal["trilinear", "transposed"]


class DecoderStage(nn.Module):
    """One decoder level: ×2 upsampling, merge with the skip, residual block.

    ``upsample="trilinear"`` (the default) interpolates trilinearly and mixes channels with
    a 1×1×1 convolution, as MONAI's SegResNet does (``upsample_mode="nontrainable"``).
    ``"transposed"`` is a transposed convolution with kernel 2 and stride 2, whose eight
    kernel positions paint each 2×2×2 output block with its own weights: a period-2
    checkerboard in everything downstream (Odena et al., "Deconvolution and Checkerboard
    Artifacts", Distill 2016), the attention maps included. Networks stored before the
    choice existed used it and still load with it.

    ``merge="add"`` adds the encoder skip to the upsampled features (SegResNet's decoder):
    the residual block then runs on ``out_channels`` features. ``merge="concat"``
    concatenates them (U-Net's decoder): the block's first convolution reads
    ``out_channels + skip_channels`` features and a 1×1×1 shortcut projects them, about
    half as much work again at every level, most of it at full resolution.

    Args:
        in_channels: features of the coarser level.
        skip_channels: features of the encoder skip at this level (equal to
            ``out_channels`` for ``"add"``).
        out_channels: output features.
        norm: ``"instance"`` or ``"group"``.
        merge: ``"add"`` or ``"concat"``.
        upsample: ``"trilinear"`` or ``"transposed"``.

    Shapes:
        ``x (B, in_channels, D, H, W)`` and ``skip (B, skip_channels, 2D, 2H, 2W)`` →
        ``(B, out_channels, 2D, 2H, 2W)``.

    Raises:
        ValueError: an unknown ``merge`` or ``upsample``, or ``"add"`` with
            ``skip_channels != out_channels``.
    """

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        norm: Norm,
        merge: SkipMerge = "add",
        upsample: Upsample = "trilinear",
    ) -> None:
        super().__init__()
        if merge not in get_args(SkipMerge):
            raise ValueError(f"merge must be one of {get_args(SkipMerge)}, got {merge!r}")
        if upsample not in get_args(Upsample):
            raise ValueError(f"upsample must be one of {get_args(Upsample)}, got {upsample!r}")
        if merge == "add" and skip_channels != out_channels:
            raise ValueError(
                f"merge='add' needs as many skip features as output features, got {skip_channels} and {out_channels}"
            )
        self.merge_mode = merge
        if upsample == "transposed":
            self.upsample = get_conv_layer(
                3, in_channels, out_channels, kernel_size=2, stride=2, conv_only=True, is_transposed=True, bias=False
            )
        else:
            self.upsample = nn.Sequential(
                nn.Conv3d(in_channels, out_channels, kernel_size=1, bias=False),
                nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False),
            )
        self.block = UnetResBlock(
            spatial_dims=3,
            in_channels=out_channels + skip_channels if merge == "concat" else out_channels,
            out_channels=out_channels,
            kernel_size=3,
            stride=1,
            norm_name=norm_layer_spec(norm, out_channels),
        )

    def merge(self, upsampled: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """The stage after upsampling: ``(B, out, 2D, 2H, 2W)`` and the skip → output."""
        merged = upsampled + skip if self.merge_mode == "add" else torch.cat([upsampled, skip], dim=1)
        return self.block(merged)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.merge(self.upsample(x), skip)
