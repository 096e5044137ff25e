"""SegGuidedNet: a 3D residual encoder-decoder whose decoder stages are gated by supervised attention."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator
from torch import nn

from segguided_model.attention import SegAttentionGate
from segguided_model.blocks import DecoderStage, EncoderStage, SkipMerge, Upsample
from segguided_model.labels import REGIONS


def default_encoder_blocks(levels: int) -> tuple[int, ...]:
    """Residual blocks per encoder level when none are given: 1, 2, 2, then 4 per level.

    SegResNet's ``blocks_down`` schedule (Myronenko, BraTS 2018 winner). A block costs
    parameters ∝ width² but compute ∝ width² × voxels, and every level has 8× fewer voxels
    than the one above: extra blocks at the coarse levels buy capacity almost for free,
    while the full-resolution level, where the compute is, keeps a single block.
    """
    return tuple(1 if level == 0 else 2 if level < 3 else 4 for level in range(levels))


class ModelConfig(BaseModel):
    """Architecture of a ``SegGuidedNet``; stored in every checkpoint.

    Attributes:
        in_channels: input modalities (T1, T1c, T2, FLAIR).
        out_channels: region logits (ET, TC, WT).
        base_width: features at full resolution; doubled at each coarser level.
        levels: resolution levels including full resolution; the input's spatial size
            must be divisible by ``2 ** (levels - 1)``.
        max_width: cap on the features of any level.
        encoder_blocks: residual blocks at each encoder level, full resolution first; one
            per level. Left out, ``default_encoder_blocks(levels)``: SegResNet's schedule
            (1, 2, 2, 4, 4, ...), which puts capacity where voxels are few.
        skip_merge: how a decoder stage merges the encoder skip: ``"add"`` (SegResNet's
            decoder, the default) or ``"concat"`` (U-Net's; about 1.3× the decoder's
            work at full resolution).
        upsample: how a decoder stage doubles the resolution: ``"trilinear"`` (interpolation
            and a 1×1×1 convolution, the default) or ``"transposed"`` (kernel-2 stride-2
            transposed convolution, which leaves a checkerboard in the attention maps;
            checkpoints stored before this field had it).
        attention_gates: put a ``SegAttentionGate`` after every decoder stage.
        gate_hidden_channels: the gates read their maps through a hidden layer of this
            many channels (1×1×1 convolution and ReLU, as the additive attention gate of
            Attention U-Net, Oktay et al. 2018); 0 reads them linearly from the features,
            as checkpoints of format ≤ 3 do. A linear read-out cannot light a rim one voxel
            wide without its centre (``benchmarks/results/attention_maps.md``).
        deep_supervision: also output region logits of the coarser decoder stages.
        norm: ``"instance"`` or ``"group"`` normalisation (both federate safely).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    in_channels: int = Field(4, ge=1)
    out_channels: int = Field(len(REGIONS), ge=1)
    base_width: int = Field(16, ge=2)
    levels: int = Field(4, ge=2, le=8)
    max_width: int = Field(320, ge=2)
    encoder_blocks: tuple[PositiveInt, ...]
    skip_merge: SkipMerge = "add"
    upsample: Upsample = "trilinear"
    attention_gates: bool = True
    gate_hidden_channels: int = Field(8, ge=0)
    deep_supervision: bool = False
    norm: Literal["instance", "group"] = "instance"

    @model_validator(mode="before")
    @classmethod
    def _default_encoder_blocks(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("encoder_blocks") is None:
            levels = data.get("levels", cls.model_fields["levels"].default)
            if isinstance(levels, int) and not isinstance(levels, bool):
                data = {**data, "encoder_blocks": default_encoder_blocks(max(levels, 1))}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> "ModelConfig":
        if self.max_width < self.base_width:
            raise ValueError(
                f"max_width ({self.max_width}) must be at least base_width ({self.base_width})"
            )
        if len(self.encoder_blocks) != self.levels:
            raise ValueError(
                f"encoder_blocks {self.encoder_blocks} has {len(self.encoder_blocks)} entries; "
                f"a {self.levels}-level network needs one per level"
            )
        return self

    @property
    def widths(self) -> tuple[int, ...]:
        """Features of each level, full resolution first."""
        return tuple(min(self.base_width * 2**level, self.max_width) for level in range(self.levels))

    @property
    def size_divisor(self) -> int:
        """Every spatial input dimension must be a multiple of this: ``2 ** (levels - 1)``."""
        return 2 ** (self.levels - 1)


@dataclass(frozen=True)
class SegGuidedOutput:
    """What ``SegGuidedNet.forward`` returns, in training and evaluation alike.

    Attributes:
        logits: region logits ``(B, 3, D, H, W)`` in ``labels.REGIONS`` order (ET, TC, WT);
            apply a sigmoid for probabilities.
        attention_maps: one ``(B, 3, d_i, h_i, w_i)`` tensor in [0, 1] per decoder stage,
            in ``labels.SUBREGIONS`` order (NCR, ED, ET), coarsest stage first, so the
            last is at full resolution. Empty without attention gates.
        deep_supervision_logits: region logits of every decoder stage but the last,
            coarsest first. Empty without deep supervision.
        attention_logits: the attention maps before their sigmoid, same shapes and order;
            what the attention loss reads.
    """

    logits: torch.Tensor
    attention_maps: tuple[torch.Tensor, ...] = ()
    deep_supervision_logits: tuple[torch.Tensor, ...] = ()
    attention_logits: tuple[torch.Tensor, ...] = ()


class SegGuidedNet(nn.Module):
    """3D residual encoder-decoder over four MRI modalities with segmentation-attention gates.

    Encoder: ``levels`` residual stages (``EncoderStage``, ``encoder_blocks[level]``
    residual blocks each), the first at full resolution, each further one strided by 2.
    Decoder: ``levels - 1`` stages (``DecoderStage``) that upsample, add (``skip_merge``,
    or concatenate) the encoder skip and apply a residual block. After each decoder
    stage a ``SegAttentionGate`` predicts NCR/ED/ET attention maps, gates the features
    with them and hands the maps out for supervision.

    The head predicts the three nested BraTS regions (ET, TC, WT) as independent sigmoid
    logits rather than mutually exclusive labels with a softmax: the BraTS metrics are
    computed on those regions, and optimising them directly (region-based training) is
    what nnU-Net and the BraTS challenge winners do.

    ``SegGuidedNet()`` builds the default full-size network; ``attention_gates=False``
    builds the identical network without gates (the ablation baseline).

    Args:
        **fields: any field of ``ModelConfig``.

    Shapes:
        ``x (B, in_channels, D, H, W)`` with D, H, W multiples of ``size_divisor`` →
        ``SegGuidedOutput`` (see there).

    Raises:
        ValueError: a field is invalid (pydantic's ``ValidationError`` names it).
    """

    def __init__(self, **fields: Any) -> None:
        super().__init__()
        self.config = ModelConfig(**fields)
        cfg = self.config
        widths = cfg.widths
        self.encoder = nn.ModuleList(
            EncoderStage(
                cfg.in_channels if level == 0 else widths[level - 1],
                widths[level],
                downsample=level > 0,
                norm=cfg.norm,
                blocks=cfg.encoder_blocks[level],
            )
            for level in range(cfg.levels)
        )
        decoder_levels = range(cfg.levels - 2, -1, -1)  # coarsest decoder stage first
        self.decoder = nn.ModuleList(
            DecoderStage(
                widths[level + 1], widths[level], widths[level], norm=cfg.norm, merge=cfg.skip_merge, upsample=cfg.upsample
            )
            for level in decoder_levels
        )
        self.gates = nn.ModuleList(
            SegAttentionGate(widths[level], cfg.gate_hidden_channels) for level in decoder_levels if cfg.attention_gates
        )
        self.deep_supervision_heads = nn.ModuleList(
            nn.Conv3d(widths[level], cfg.out_channels, kernel_size=1)
            for level in decoder_levels
            if cfg.deep_supervision and level > 0
        )
        self.head = nn.Conv3d(widths[0], cfg.out_channels, kernel_size=1)

    @classmethod
    def from_config(cls, config: ModelConfig) -> "SegGuidedNet":
        return cls(**config.model_dump())

    @property
    def size_divisor(self) -> int:
        """Every spatial input dimension must be a multiple of this: ``2 ** (levels - 1)``."""
        return self.config.size_divisor

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` if ``x`` is not ``(B, in_channels, D, H, W)`` with fitting sizes."""
        if x.ndim != 5:
            raise ValueError(f"expected input (B, C, D, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"expected {self.config.in_channels} input channels, got {x.shape[1]} "
                f"(shape {tuple(x.shape)})"
            )
        divisor = self.size_divisor
        spatial = tuple(x.shape[2:])
        bad = [size for size in spatial if size % divisor or size == 0]
        if bad:
            hints = ", ".join(
                f"{size} -> {max(divisor, size // divisor * divisor)} or {(size // divisor + 1) * divisor}"
                for size in dict.fromkeys(bad)
            )
            raise ValueError(
                f"input spatial size {spatial} does not fit the strides of a {self.config.levels}-level "
                f"network: every dimension must be a multiple of {divisor} (e.g. {hints})"
            )

    def forward(self, x: torch.Tensor) -> SegGuidedOutput:
        self.check_input(x)
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        skips.pop()  # the bottleneck is x itself
        upsampled = self.decoder[0].upsample(x)
        attention_maps, attention_logits = [], []
        deep_logits = []
        for index, stage in enumerate(self.decoder):
            features = stage.merge(upsampled, skips.pop())
            last = index == len(self.decoder) - 1
            consumers = [self.head if last else self.decoder[index + 1].upsample]
            if index < len(self.deep_supervision_heads):
                consumers.append(self.deep_supervision_heads[index])
            if self.gates:
                features, maps, map_logits = self.gates[index](features)
                attention_maps.append(maps)
                attention_logits.append(map_logits)
            outputs = [consumer(features) for consumer in consumers]
            upsampled = outputs[0]
            if len(outputs) > 1:
                deep_logits.append(outputs[1])
        return SegGuidedOutput(upsampled, tuple(attention_maps), tuple(deep_logits), tuple(attention_logits))
