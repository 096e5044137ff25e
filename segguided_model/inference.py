"""Whole-volume inference: sliding windows over a case of any size."""

from __future__ import annotations

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


def _roi(roi_size: int | Sequence[int], divisor: int) -> tuple[int, int, int]:
    roi = (roi_size,) * 3 if isinstance(roi_size, int) else tuple(int(s) for s in roi_size)
    if len(roi) != 3 or any(s <= 0 or s % divisor for s in roi):
        raise ValueError(
            f"roi_size {roi_size!r} must be three positive multiples of the network's size divisor {divisor}"
        )
    return roi  # type: ignore[return-value]


def predict_volume(
    model: SegGuidedNet,
    image: torch.Tensor,
    roi_size: int | Sequence[int],
    sw_batch_size: int = 1,
    overlap: float = 0.5,
    device: str | torch.device | None = None,
    amp: bool = False,
) -> VolumePrediction:
    """Segment one preprocessed volume with Gaussian-weighted sliding windows.

    Windows run on ``device``; the blended result is gathered on the CPU, so a GPU only
    holds ``sw_batch_size`` windows. Volumes smaller than ``roi_size`` are padded and
    cropped back, and volume sizes need not fit the strides: only ``roi_size`` must.
    Probabilities (not logits) are blended across overlapping windows.

    Args:
        model: the network; moved to ``device`` and run in evaluation mode (its previous
            mode is restored afterwards).
        image: ``(4, D, H, W)`` float, as produced by the deterministic preprocessing.
        roi_size: window size, an int or three ints, each a multiple of
            ``model.size_divisor``.
        sw_batch_size: windows per forward pass.
        overlap: fraction of overlap between neighbouring windows, in [0, 1).
        device: where the windows run; defaults to the model's device.
        amp: autocast the forward passes to half precision (on CUDA).

    Returns:
        ``VolumePrediction`` on the grid of ``image``.

    Raises:
        ValueError: ``image`` is not ``(C, D, H, W)`` with the model's channels, or
            ``roi_size``, ``sw_batch_size`` or ``overlap`` are out of range.
    """
    channels = model.config.in_channels
    if image.ndim != 4 or image.shape[0] != channels:
        raise ValueError(f"expected image ({channels}, D, H, W), got shape {tuple(image.shape)}")
    roi = _roi(roi_size, model.size_divisor)
    if sw_batch_size < 1:
        raise ValueError(f"sw_batch_size must be at least 1, got {sw_batch_size}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    model.to(device)
    n_regions = model.config.out_channels

    def predictor(window: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=device.type, enabled=amp):
            output = model(window)
        probabilities = torch.sigmoid(output.logits.float())
        if output.attention_maps:
            return torch.cat([probabilities, output.attention_maps[-1].float()], dim=1)
        return probabilities

    plain = image.as_subclass(torch.Tensor) if isinstance(image, torch.Tensor) else torch.as_tensor(image)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            blended = sliding_window_inference(
                plain[None].float(),
                roi_size=roi,
                sw_batch_size=sw_batch_size,
                predictor=predictor,
                overlap=overlap,
                mode="gaussian",
                sw_device=device,
                device="cpu",
            )
    finally:
        model.train(was_training)
    blended = blended[0].as_subclass(torch.Tensor) if hasattr(blended, "as_tensor") else blended[0]
    probabilities = blended[:n_regions]
    maps = blended[n_regions : n_regions + len(SUBREGIONS)] if blended.shape[0] > n_regions else None
    regions = nest_regions(probabilities > 0.5)
    return VolumePrediction(regions=regions, probabilities=probabilities, attention_maps=maps)
