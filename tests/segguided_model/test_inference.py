"""Sliding-window inference over whole volumes of any size."""

from __future__ import annotations

import pytest
import torch

from segguided_model.inference import VolumePrediction, predict_volume
from segguided_model.labels import CONVENTIONS, nest_regions
from segguided_model.network import SegGuidedNet

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model() -> SegGuidedNet:
    torch.manual_seed(0)
    return SegGuidedNet(base_width=4, levels=3)


@pytest.mark.parametrize("shape", [(10, 12, 9), (16, 16, 16), (37, 21, 18)])
def test_prediction_covers_volumes_smaller_larger_and_not_fitting_the_strides(model, shape):
    prediction = predict_volume(model, torch.randn(4, *shape), roi_size=16)
    assert isinstance(prediction, VolumePrediction)
    assert prediction.regions.shape == prediction.probabilities.shape == prediction.attention_maps.shape == (3, *shape)
    assert prediction.regions.dtype == torch.bool
    assert torch.equal(prediction.regions, nest_regions(prediction.probabilities > 0.5))
    assert 0 <= prediction.attention_maps.min() and prediction.attention_maps.max() <= 1


def test_single_window_matches_the_network_output(model):
    image = torch.randn(4, 16, 16, 16)
    prediction = predict_volume(model, image, roi_size=16)
    model.eval()
    with torch.no_grad():
        output = model(image[None])
    torch.testing.assert_close(prediction.probabilities, torch.sigmoid(output.logits[0]), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(prediction.attention_maps, output.attention_maps[-1][0], atol=1e-5, rtol=1e-4)


def test_predicted_regions_are_nested_as_segment_writes_them(model):
    prediction = predict_volume(model, torch.randn(4, 16, 16, 16), roi_size=16)
    et, tc, wt = prediction.regions
    assert bool((et <= tc).all() and (tc <= wt).all())
    raw = prediction.probabilities > 0.5
    assert torch.equal(prediction.regions[0], raw[0]) and torch.equal(prediction.regions[2], raw.any(0))


def test_model_training_mode_is_restored(model):
    model.train()
    predict_volume(model, torch.randn(4, 8, 8, 8), roi_size=8)
    assert model.training


def test_network_without_gates_has_no_attention_maps():
    prediction = predict_volume(SegGuidedNet(base_width=4, levels=2, attention_gates=False), torch.randn(4, 6, 6, 6), 4)
    assert prediction.attention_maps is None


def test_label_map_is_written_in_the_requested_convention():
    regions = torch.zeros(3, 2, 2, 2, dtype=torch.bool)
    regions[:, 0, 0, 0] = True
    prediction = VolumePrediction(regions, regions.float(), None)
    assert prediction.label_map(CONVENTIONS["brats2021"])[0, 0, 0] == 4
    assert prediction.label_map(CONVENTIONS["brats2023"])[0, 0, 0] == 3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"roi_size": 14}, "multiples of the network's size divisor 4"),
        ({"roi_size": (16, 16)}, "roi_size"),
        ({"roi_size": 16, "overlap": 1.0}, "overlap"),
        ({"roi_size": 16, "sw_batch_size": 0}, "sw_batch_size"),
    ],
)
def test_ill_arguments_raise_value_error(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        predict_volume(model, torch.randn(4, 8, 8, 8), **kwargs)


def test_image_with_wrong_channels_raises_value_error(model):
    with pytest.raises(ValueError, match=r"expected image \(4, D, H, W\)"):
        predict_volume(model, torch.randn(3, 8, 8, 8), roi_size=8)
