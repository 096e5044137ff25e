"""Whole-volume evaluation: nested regions as ``segment`` writes them, HD95 in mm from each volume's spacing."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from segguided_model.evaluation import evaluate_volumes
from segguided_model.inference import SlidingWindow
from segguided_model.labels import CONVENTIONS, label_map_from_regions, region_masks


class RegionsFromChannels(nn.Module):
    """Stand-in network: the ET, TC and WT logits are +10 where image channels 0, 1 and 2 are positive, else -10."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))
        self.config = SimpleNamespace(in_channels=4, out_channels=3, attention_gates=False, widths=(1,), gate_hidden_channels=0)
        self.size_divisor = 1

    def forward(self, image: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(logits=torch.where(image[:, :3] > 0, 10.0, -10.0) + self.anchor, attention_maps=())


WINDOW = SlidingWindow(roi_size=12, batch_size=1)


def _block(slices) -> torch.Tensor:
    mask = torch.zeros(12, 12, 12, dtype=torch.bool)
    mask[slices] = True
    return mask


def _volume(predicted: tuple[torch.Tensor, torch.Tensor, torch.Tensor], reference: torch.Tensor, spacing) -> dict:
    image = torch.full((4, 12, 12, 12), -1.0)
    for channel, mask in enumerate(predicted):
        image[channel][mask] = 1.0
    return {"image": image, "regions": reference.float(), "spacing": spacing, "case_id": "c1"}


def test_regions_are_scored_nested_as_segment_writes_them():
    enhancing, oedema = _block((slice(4, 6),) * 3), _block((slice(3, 8), slice(3, 8), slice(7, 9)))
    nothing = torch.zeros_like(enhancing)
    # The network says ET here and WT there but no TC at all; segment writes ET as ET (so TC) and WT.
    volume = _volume((enhancing, nothing, oedema), torch.stack([enhancing, enhancing, enhancing | oedema]), (1.0, 1.0, 1.0))
    rows, _ = evaluate_volumes(RegionsFromChannels(), [volume], WINDOW, torch.device("cpu"))
    assert [rows[0][key] for key in ("dice-et", "dice-tc", "dice-wt")] == [1.0, 1.0, 1.0]
    written = label_map_from_regions(torch.stack([enhancing, nothing, oedema]), CONVENTIONS["brats2023"])
    assert torch.equal(region_masks(written, CONVENTIONS["brats2023"]), volume["regions"].bool())


@pytest.mark.parametrize("spacing, expected", [((1.0, 1.0, 1.0), 1.0), ((1.0, 1.0, 5.0), 5.0), ((5.0, 5.0, 1.0), 1.0)])
def test_hd95_is_in_mm_from_each_volume_spacing(spacing, expected):
    reference = _block((slice(3, 9),) * 3)
    shifted = _block((slice(3, 9), slice(3, 9), slice(4, 10)))  # one voxel along the last axis
    volume = _volume((shifted, shifted, shifted), torch.stack([reference] * 3), spacing)
    rows, means = evaluate_volumes(RegionsFromChannels(), [volume], WINDOW, torch.device("cpu"))
    assert [rows[0][key] for key in ("hd95-et", "hd95-tc", "hd95-wt")] == pytest.approx([expected] * 3)
    assert means["hd95-mean"] == pytest.approx(expected)
    assert rows[0]["dice-et"] == pytest.approx(5 / 6)


def test_volume_without_spacing_is_refused_naming_the_case():
    volume = _volume((_block((slice(0, 2),)),) * 3, torch.stack([_block((slice(0, 2),))] * 3), (1.0, 1.0, 1.0))
    del volume["spacing"]
    with pytest.raises(ValueError, match="case c1: no voxel spacing"):
        evaluate_volumes(RegionsFromChannels(), [volume], WINDOW, torch.device("cpu"))
