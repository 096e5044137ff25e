"""SegGuidedLoss: region Dice + BCE plus the supervision of the attention maps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from monai.losses import DeepSupervisionLoss, DiceLoss
from torch import nn

from segguided_model.network import SegGuidedOutput


@dataclass(frozen=True)
class LossTerms:
    """The loss and its parts, each a scalar tensor.

    Attributes:
        total: what to back-propagate: ``segmentation + sum_i weight_i * attention_i``.
        segmentation: region Dice + BCE (with deep supervision when the output has it).
        attention: unweighted mean over decoder stages of the attention-map loss, for
            monitoring; zero when the network has no gates.
    """

    total: torch.Tensor
    segmentation: torch.Tensor
    attention: torch.Tensor


class RegionDiceBCELoss(nn.Module):
    """Soft Dice (MONAI ``DiceLoss``, batch-wise) plus BCE on sigmoid region logits.

    MONAI's ``DiceCELoss`` is not used: with more than one channel it applies a softmax
    cross-entropy even when ``sigmoid=True``, which is wrong for the nested, overlapping
    ET/TC/WT regions.

    Shapes:
        ``logits (B, 3, D, H, W)``, ``target (B, 3, D, H, W)`` in {0, 1} → scalar.
    """

    def __init__(self, dice_weight: float = 1.0, bce_weight: float = 1.0) -> None:
        super().__init__()
        self.dice = DiceLoss(sigmoid=True, batch=True)
        self.bce = nn.BCEWithLogitsLoss()
        self.dice_weight = dice_weight
        self.bce_weight = bce_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.float()
        return self.dice_weight * self.dice(logits, target) + self.bce_weight * self.bce(logits, target)


class AttentionMapLoss(nn.Module):
    """BCE plus soft Dice between attention maps and sub-region masks.

    The masks are average-pooled to the maps' resolution, so a coarse stage learns the
    fraction of each coarse voxel covered by NCR, ED and ET. Computed in float32 outside
    autocast. The cross-entropy is taken on the maps' logits
    (``binary_cross_entropy_with_logits``: stable, and on a CPU a fifth of the cost of
    cross-entropy on probabilities), the Dice on the maps themselves.

    Shapes:
        ``map_logits (B, 3, d, h, w)``, ``maps = sigmoid(map_logits)`` (same shape; computed
        here when not given), ``subregions (B, 3, D, H, W)`` → scalar.
    """

    def __init__(self) -> None:
        super().__init__()
        self.dice = DiceLoss(sigmoid=False, batch=True)

    def forward(
        self, map_logits: torch.Tensor, subregions: torch.Tensor, maps: torch.Tensor | None = None
    ) -> torch.Tensor:
        with torch.autocast(device_type=map_logits.device.type, enabled=False):
            map_logits = map_logits.float()
            maps = torch.sigmoid(map_logits) if maps is None else maps.float()
            target = subregions.float()
            if target.shape[2:] != map_logits.shape[2:]:
                target = F.interpolate(target, size=map_logits.shape[2:], mode="area")
            return F.binary_cross_entropy_with_logits(map_logits, target) + self.dice(maps, target)


class SegGuidedLoss(nn.Module):
    """Segmentation loss plus λ-weighted attention supervision of every gated stage.

    ``total = seg(logits, regions) + sum_i λ_i * att(attention_logits[i], subregions)``.
    With λ = 0 (or a network without gates, which hands out no maps) the total is exactly
    the plain network's segmentation loss. With deep supervision in the output, the
    segmentation term is MONAI's ``DeepSupervisionLoss`` (weights 1, 0.5, 0.25, ... from
    full resolution down; targets resampled by nearest neighbour).

    Args:
        attention_weight: λ, one value for every stage or one per decoder stage
            (coarsest first, as ``SegGuidedOutput.attention_logits``).
        dice_weight: weight of the Dice part of the segmentation term.
        bce_weight: weight of the BCE part of the segmentation term.

    Raises:
        ValueError: a negative or non-finite weight, or an empty sequence.
    """

    def __init__(
        self,
        attention_weight: float | Sequence[float] = 0.1,
        dice_weight: float = 1.0,
        bce_weight: float = 1.0,
    ) -> None:
        super().__init__()
        weights = (
            (float(attention_weight),)
            if isinstance(attention_weight, (int, float))
            else tuple(float(w) for w in attention_weight)
        )
        if not weights or any(not (w >= 0 and w < float("inf")) for w in weights):
            raise ValueError(
                f"attention_weight must be a non-negative number or a non-empty sequence "
                f"of them, got {attention_weight!r}"
            )
        for name, value in (("dice_weight", dice_weight), ("bce_weight", bce_weight)):
            if not value >= 0:
                raise ValueError(f"{name} must be non-negative, got {value!r}")
        self.attention_weights = weights
        self.per_stage = not isinstance(attention_weight, (int, float))
        self.segmentation_loss = DeepSupervisionLoss(
            RegionDiceBCELoss(dice_weight, bce_weight), weight_mode="exp"
        )
        self.attention_loss = AttentionMapLoss()

    def stage_weights(self, n_stages: int) -> tuple[float, ...]:
        """λ for each of ``n_stages`` decoder stages (coarsest first)."""
        if not self.per_stage:
            return self.attention_weights * n_stages
        if len(self.attention_weights) != n_stages:
            raise ValueError(
                f"attention_weight has {len(self.attention_weights)} values but the network "
                f"hands out {n_stages} attention stages"
            )
        return self.attention_weights

    def forward(
        self, output: SegGuidedOutput, regions: torch.Tensor, subregions: torch.Tensor
    ) -> LossTerms:
        """Compute the loss terms.

        Args:
            output: the network's output.
            regions: ground-truth region masks ``(B, 3, D, H, W)`` (ET, TC, WT), float or bool.
            subregions: ground-truth sub-region masks ``(B, 3, D, H, W)`` (NCR, ED, ET).

        Raises:
            ValueError: target shapes do not match the logits.
        """
        for name, target in (("regions", regions), ("subregions", subregions)):
            if target.shape != output.logits.shape:
                raise ValueError(
                    f"{name} shape {tuple(target.shape)} does not match the logits "
                    f"{tuple(output.logits.shape)}"
                )
        regions = regions.float()
        if output.deep_supervision_logits:
            predictions = [output.logits, *reversed(output.deep_supervision_logits)]
            segmentation = self.segmentation_loss(predictions, regions)
        else:
            segmentation = self.segmentation_loss(output.logits, regions)

        total = segmentation
        attention = segmentation.new_zeros(())
        stages = output.attention_logits
        if stages:
            weights = self.stage_weights(len(stages))
            stage_losses = [
                self.attention_loss(stage_logits, subregions, stage_maps)
                for stage_logits, stage_maps in zip(stages, output.attention_maps)
            ]
            attention = torch.stack(stage_losses).mean()
            for weight, stage_loss in zip(weights, stage_losses):
                if weight:
                    total = total + weight * stage_loss
        return LossTerms(total=total, segmentation=segmentation, attention=attention)
