"""Whole-volume inference: sliding windows over the brain of a case of any size.

A BraTS volume (240×240×155) is mostly background; the skull-stripped brain fills about a
third of it. ``predict_volume`` crops the volume to the bounding box of its non-zero
voxels, covers that box with windows larger than the training patch (the network is
fully convolutional), runs as many windows per forward pass as a memory budget allows,
and pastes the result back into the full grid (background outside the box). MONAI's
``sliding_window_inference`` does the windowing and Gaussian blending; mirroring
test-time augmentation averages the predictions of all 2³ flips of each window, as
nnU-Net does (Isensee et al., Nature Methods 2021).

Measured on one 240×240×155 phantom case with the simulation network (width 8) on the
idle 2-core CPU: 48³ windows at overlap 0.5 over the whole grid took 114.2 s; 128³ windows
at overlap 0.25 on the brain's box 14.0 s; one window over the brain's box 3.4 s
(``benchmarks/results/full_size_round.md``). On trained 2 mm cases the one window scored
the same mean Dice as patch-sized tiles within noise (``benchmarks/results/validation_window.md``).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Sequence

import torch
from monai.inferers import sliding_window_inference

from segguided_model.labels import (
    SUBREGIONS,
    LabelConvention,
    label_map_from_regions,
    nest_regions,
)
from segguided_model.network import SegGuidedNet

BYTES_PER_VALUE = 4
"""Activations are estimated in float32 (half precision needs less; the estimate stays an upper bound)."""


@dataclass(frozen=True)
class VolumePrediction:
    """The network's prediction for one whole volume, on the input's voxel grid.

    Attributes:
        regions: boolean region masks ``(3, D, H, W)`` (ET, TC, WT), probability > 0.5,
            nested ET ⊂ TC ⊂ WT (``labels.nest_regions``): what ``label_map`` writes.
        probabilities: sigmoid region probabilities ``(3, D, H, W)``.
        attention_maps: the last (full-resolution) decoder stage's attention maps
            ``(3, D, H, W)`` in [0, 1] (NCR, ED, ET); ``None`` for a network without gates.
    """

    regions: torch.Tensor
    probabilities: torch.Tensor
    attention_maps: torch.Tensor | None

    def label_map(self, convention: LabelConvention) -> torch.Tensor:
        """The prediction as a ``uint8`` label map ``(D, H, W)`` in ``convention``."""
        return label_map_from_regions(self.regions, convention)


@dataclass(frozen=True)
class SlidingWindow:
    """How ``predict_volume`` covers a volume with windows.

    Attributes:
        roi_size: window edge, or ``(D, H, W)``, in voxels; rounded up to the network's
            size divisor and capped at the (cropped) volume, so a small volume is one
            window. Larger than the training patch is fine: the network is fully
            convolutional, and fewer, larger windows overlap less.
        overlap: fraction of overlap between neighbouring windows, in [0, 1).
        memory_mb: budget for the activations of one forward pass: a window larger than it
            shrinks towards ``min_size`` (``window_within_memory``), and it decides how many
            windows run together when ``batch_size`` is ``None`` (``window_batch_size``).
        batch_size: windows per forward pass; ``None`` derives it from ``memory_mb``.
        mirror: test-time augmentation: average over all 8 mirrorings of each window
            (8× the compute).
        crop_to_brain: predict only inside the bounding box of the non-zero voxels (the
            skull-stripped brain); background elsewhere.
        amp: half-precision forward passes (CUDA).
        min_size: smallest window edge, or ``(D, H, W)``: the training patch. A window over
            a volume (or brain box) smaller than it is zero-padded to it, as the background
            of a skull-stripped case is, so that instance normalisation sees the share of
            background the network was trained with; 0: no lower bound. Measured on the
            main job's 5 mm phantom: windows capped at the brain's box (26×33×28) scored
            central mean Dice 0.564 where the 48³ training patch scored 0.667.
    """

    roi_size: int | tuple[int, int, int] = 128
    overlap: float = 0.25
    memory_mb: float = 1024.0
    batch_size: int | None = None
    mirror: bool = False
    crop_to_brain: bool = True
    amp: bool = False
    min_size: int | tuple[int, int, int] = 0

    def __post_init__(self) -> None:
        sizes = _per_axis(self.roi_size)
        if len(sizes) != 3 or any(not isinstance(s, int) or s < 1 for s in sizes):
            raise ValueError(f"roi_size must be a positive integer or three of them, got {self.roi_size!r}")
        smallest = _per_axis(self.min_size)
        if len(smallest) != 3 or any(not isinstance(s, int) or s < 0 for s in smallest):
            raise ValueError(f"min_size must be a non-negative integer or three of them, got {self.min_size!r}")
        if not 0 <= self.overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        if not self.memory_mb > 0:
            raise ValueError(f"memory_mb must be positive, got {self.memory_mb}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")

    def window_for(self, spatial: Sequence[int], divisor: int) -> tuple[int, int, int]:
        """The window for a volume of ``spatial`` size: ``roi_size`` rounded up to ``divisor``,
        capped at the volume, and at least ``smallest_window``."""
        return tuple(  # type: ignore[return-value]
            max(min(_round_up(size, divisor), _round_up(extent, divisor)), least)
            for size, extent, least in zip(_per_axis(self.roi_size), spatial, self.smallest_window(divisor))
        )

    def smallest_window(self, divisor: int) -> tuple[int, int, int]:
        """``min_size`` rounded up to ``divisor`` (at least one ``divisor``)."""
        return tuple(_round_up(least, divisor) for least in _per_axis(self.min_size))  # type: ignore[return-value]


def _per_axis(size: int | Sequence[int]) -> tuple[int, ...]:
    """One edge for all three axes, or the edges as given."""
    return (size,) * 3 if isinstance(size, int) else tuple(size)


def _round_up(value: int, divisor: int) -> int:
    return max(divisor, math.ceil(value / divisor) * divisor)


def window_bytes(model: SegGuidedNet, window: Sequence[int]) -> int:
    """Estimated activation memory of one window in one forward pass (evaluation mode), bytes.

    While the decoder runs, every encoder level's output is kept for its skip connection
    (``Σ_l w_l / 8^l`` values per input voxel); the widest working set is a few
    full-resolution feature maps (a residual block's input, its two convolutions and the
    gate's product: ``4 · w_0``, and the gate's hidden layer); plus the input, the outputs
    and their sigmoids.

    Args:
        model: the network.
        window: ``(D, H, W)`` of the window.
    """
    config = model.config
    per_voxel = sum(width / 8**level for level, width in enumerate(config.widths))
    per_voxel += 4 * config.widths[0] + config.gate_hidden_channels + config.in_channels
    per_voxel += 2 * (config.out_channels + len(SUBREGIONS))
    return int(BYTES_PER_VALUE * per_voxel * math.prod(window))


def window_batch_size(model: SegGuidedNet, window: Sequence[int], memory_mb: float) -> int:
    """How many windows fit one forward pass within ``memory_mb`` (at least 1)."""
    return max(1, int(memory_mb * 2**20 // window_bytes(model, window)))


def window_within_memory(
    model: SegGuidedNet, window: Sequence[int], smallest: Sequence[int], memory_mb: float
) -> tuple[int, int, int]:
    """``window`` shrunk until one of it fits ``memory_mb`` (``window_bytes``), never below ``smallest``.

    The longest axis still above its floor gives up one size divisor at a time, so a window
    that covers a whole brain box on a GPU becomes several near-cubic tiles on a small
    budget. A window already at ``smallest`` is returned as it is, even over budget.

    Args:
        model: the network (its widths and size divisor).
        window: ``(D, H, W)`` in voxels, multiples of the size divisor.
        smallest: ``(D, H, W)`` floor (the training patch), multiples of the size divisor.
        memory_mb: activation budget of one forward pass, MiB.
    """
    divisor = model.size_divisor
    edges = list(window)
    budget = memory_mb * 2**20
    while window_bytes(model, edges) > budget:
        shrinkable = [axis for axis in range(3) if edges[axis] - divisor >= max(smallest[axis], divisor)]
        if not shrinkable:
            break
        longest = max(shrinkable, key=lambda axis: edges[axis])
        edges[longest] -= divisor
    return tuple(edges)  # type: ignore[return-value]


def brain_box(image: torch.Tensor) -> tuple[slice, slice, slice]:
    """The bounding box of the voxels non-zero in any channel of ``(C, D, H, W)``; the whole grid if none is."""
    nonzero = image.ne(0).any(dim=0)
    if not bool(nonzero.any()):
        return tuple(slice(0, size) for size in nonzero.shape)  # type: ignore[return-value]
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        present = nonzero.any(dim=other).nonzero().flatten()
        box.append(slice(int(present[0]), int(present[-1]) + 1))
    return tuple(box)  # type: ignore[return-value]


def _mirrorings() -> list[tuple[int, ...]]:
    """Every subset of the three spatial axes of a ``(B, C, D, H, W)`` batch: the 8 mirrorings."""
    axes = (2, 3, 4)
    return [combo for count in range(4) for combo in itertools.combinations(axes, count)]


def predict_volume(
    model: SegGuidedNet,
    image: torch.Tensor,
    window: SlidingWindow = SlidingWindow(),
    device: str | torch.device | None = None,
) -> VolumePrediction:
    """Segment one preprocessed volume with Gaussian-weighted sliding windows over its brain.

    Windows run on ``device``; the blended result is gathered on the CPU, so a GPU only
    holds one batch of windows. Volume sizes need not fit the network's strides.
    Probabilities (not logits) are blended across overlapping windows and mirrorings.

    Args:
        model: the network; moved to ``device`` and run in evaluation mode (its previous
            mode is restored afterwards).
        image: ``(4, D, H, W)`` float, as produced by the deterministic preprocessing
            (background 0).
        window: windows, overlap, memory budget, mirroring, crop (``SlidingWindow``).
        device: where the windows run; defaults to the model's device.

    Returns:
        ``VolumePrediction`` on the grid of ``image``.

    Raises:
        ValueError: ``image`` is not ``(C, D, H, W)`` with the model's channels.
    """
    channels = model.config.in_channels
    if image.ndim != 4 or image.shape[0] != channels:
        raise ValueError(f"expected image ({channels}, D, H, W), got shape {tuple(image.shape)}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device)
    n_regions = model.config.out_channels
    n_outputs = n_regions + (len(SUBREGIONS) if model.config.attention_gates else 0)
    mirrorings = _mirrorings() if window.mirror else [()]

    def predictor(windows: torch.Tensor) -> torch.Tensor:
        total = None
        for axes in mirrorings:
            flipped = windows.flip(axes) if axes else windows
            with torch.autocast(device_type=device.type, enabled=window.amp):
                output = model(flipped)
            parts = [torch.sigmoid(output.logits.float())]
            if output.attention_maps:
                parts.append(output.attention_maps[-1].float())
            result = torch.cat(parts, dim=1)
            result = result.flip(axes) if axes else result
            total = result if total is None else total.add_(result)
        return total / len(mirrorings)

    plain = image.as_subclass(torch.Tensor) if isinstance(image, torch.Tensor) else torch.as_tensor(image)
    plain = plain.float()
    box = brain_box(plain) if window.crop_to_brain else tuple(slice(0, s) for s in plain.shape[1:])
    cropped = plain[(slice(None), *box)]
    roi = window_within_memory(
        model,
        window.window_for(cropped.shape[1:], model.size_divisor),
        window.smallest_window(model.size_divisor),
        window.memory_mb,
    )
    batch = window.batch_size or window_batch_size(model, roi, window.memory_mb)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            blended = sliding_window_inference(
                cropped[None],
                roi_size=roi,
                sw_batch_size=batch,
                predictor=predictor,
                overlap=window.overlap,
                mode="gaussian",
                sw_device=device,
                device="cpu",
            )
    finally:
        model.train(was_training)
    blended = blended[0].as_subclass(torch.Tensor) if hasattr(blended, "as_tensor") else blended[0]
    full = torch.zeros((n_outputs, *plain.shape[1:]), dtype=blended.dtype)
    full[(slice(None), *box)] = blended
    probabilities = full[:n_regions]
    maps = full[n_regions:] if n_outputs > n_regions else None
    return VolumePrediction(regions=nest_regions(probabilities > 0.5), probabilities=probabilities, attention_maps=maps)
