"""Sliding-window inference over the brain of whole volumes of any size."""

from __future__ import annotations

import pytest
import torch

from segguided_model.inference import (
    SlidingWindow,
    VolumePrediction,
    brain_box,
    predict_volume,
    window_batch_size,
    window_bytes,
    window_within_memory,
)
from segguided_model.labels import CONVENTIONS, nest_regions
from segguided_model.network import SegGuidedNet

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model() -> SegGuidedNet:
    torch.manual_seed(0)
    return SegGuidedNet(base_width=4, levels=3)


@pytest.mark.parametrize("shape", [(10, 12, 9), (16, 16, 16), (37, 21, 18)])
def test_prediction_covers_volumes_smaller_larger_and_not_fitting_the_strides(model, shape):
    prediction = predict_volume(model, torch.randn(4, *shape), SlidingWindow(roi_size=16))
    assert isinstance(prediction, VolumePrediction)
    assert prediction.regions.shape == prediction.probabilities.shape == prediction.attention_maps.shape == (3, *shape)
    assert prediction.regions.dtype == torch.bool
    assert torch.equal(prediction.regions, nest_regions(prediction.probabilities > 0.5))
    assert 0 <= prediction.attention_maps.min() and prediction.attention_maps.max() <= 1


def test_single_window_matches_the_network_output(model):
    image = torch.randn(4, 16, 16, 16)
    prediction = predict_volume(model, image, SlidingWindow(roi_size=16))
    model.eval()
    with torch.no_grad():
        output = model(image[None])
    torch.testing.assert_close(prediction.probabilities, torch.sigmoid(output.logits[0]), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(prediction.attention_maps, output.attention_maps[-1][0], atol=1e-5, rtol=1e-4)


def test_predicted_regions_are_nested_as_segment_writes_them(model):
    prediction = predict_volume(model, torch.randn(4, 16, 16, 16), SlidingWindow(roi_size=16))
    et, tc, wt = prediction.regions
    assert bool((et <= tc).all() and (tc <= wt).all())
    raw = prediction.probabilities > 0.5
    assert torch.equal(prediction.regions[0], raw[0]) and torch.equal(prediction.regions[2], raw.any(0))


def test_model_training_mode_is_restored(model):
    model.train()
    predict_volume(model, torch.randn(4, 8, 8, 8), SlidingWindow(roi_size=8))
    assert model.training


def test_network_without_gates_has_no_attention_maps():
    prediction = predict_volume(
        SegGuidedNet(base_width=4, levels=2, attention_gates=False), torch.randn(4, 6, 6, 6), SlidingWindow(roi_size=4)
    )
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
        ({"roi_size": (16, 16)}, "roi_size"),
        ({"roi_size": 0}, "roi_size"),
        ({"overlap": 1.0}, "overlap"),
        ({"batch_size": 0}, "batch_size"),
        ({"memory_mb": 0.0}, "memory_mb"),
        ({"min_size": -1}, "min_size"),
        ({"min_size": (48, 48)}, "min_size"),
    ],
)
def test_ill_window_settings_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SlidingWindow(**kwargs)


def test_image_with_wrong_channels_raises_value_error(model):
    with pytest.raises(ValueError, match=r"expected image \(4, D, H, W\)"):
        predict_volume(model, torch.randn(3, 8, 8, 8), SlidingWindow(roi_size=8))


def test_window_is_rounded_up_to_the_divisor_and_capped_at_the_volume():
    window = SlidingWindow(roi_size=(128, 30, 6))
    assert window.window_for((134, 182, 122), divisor=16) == (128, 32, 16)
    assert window.window_for((10, 12, 9), divisor=4) == (12, 12, 8)


def test_a_window_is_never_smaller_than_the_training_patch():
    # A 5 mm phantom's brain box (26×33×28) gets the 48³ training patch, zero-padded as its
    # background is; a full-size brain box keeps the 128³ windows.
    window = SlidingWindow(roi_size=128, min_size=48)
    assert window.window_for((26, 33, 28), divisor=8) == (48, 48, 48)
    assert window.window_for((143, 181, 149), divisor=8) == (128, 128, 128)
    assert SlidingWindow(roi_size=128, min_size=(64, 64, 40)).window_for((26, 33, 28), divisor=8) == (64, 64, 40)


def test_a_small_brain_box_is_predicted_as_if_it_kept_its_background(model):
    # Zero padding to the training patch equals predicting on the uncropped volume whose
    # background is zero: same windows, same instance-normalisation statistics.
    image = torch.zeros(4, 16, 16, 16)
    image[:, 4:12, 4:12, 4:12] = torch.randn(4, 8, 8, 8)  # centred: MONAI pads both sides alike
    whole = predict_volume(model, image, SlidingWindow(roi_size=16, crop_to_brain=False))
    cropped = predict_volume(model, image, SlidingWindow(roi_size=16, min_size=16))
    capped = predict_volume(model, image, SlidingWindow(roi_size=16))
    inside = (slice(None), slice(4, 12), slice(4, 12), slice(4, 12))
    assert not torch.allclose(capped.probabilities[inside], whole.probabilities[inside], atol=1e-4)
    torch.testing.assert_close(cropped.probabilities[inside], whole.probabilities[inside], atol=1e-4, rtol=1e-4)


def test_only_the_brain_is_predicted_and_pasted_back(model):
    image = torch.zeros(4, 24, 20, 16)
    image[:, 5:17, 3:15, 2:14] = torch.randn(4, 12, 12, 12)
    assert brain_box(image) == (slice(5, 17), slice(3, 15), slice(2, 14))
    whole = predict_volume(model, image, SlidingWindow(roi_size=32))
    inside = predict_volume(model, image[:, 5:17, 3:15, 2:14], SlidingWindow(roi_size=32))
    torch.testing.assert_close(whole.probabilities[:, 5:17, 3:15, 2:14], inside.probabilities)
    outside = whole.probabilities.clone()
    outside[:, 5:17, 3:15, 2:14] = 0
    assert not outside.any() and not whole.regions[:, :5].any()


def test_mirroring_averages_the_predictions_of_all_eight_flips(model):
    image = torch.randn(4, 8, 8, 8)
    mirrored = predict_volume(model, image, SlidingWindow(roi_size=8, mirror=True))
    model.eval()
    expected = torch.zeros(3, 8, 8, 8)
    with torch.no_grad():
        for axes in [(), (1,), (2,), (3,), (1, 2), (1, 3), (2, 3), (1, 2, 3)]:
            flipped = image.flip(axes) if axes else image
            probabilities = torch.sigmoid(model(flipped[None]).logits[0])
            expected += probabilities.flip(axes) if axes else probabilities
    torch.testing.assert_close(mirrored.probabilities, expected / 8, atol=1e-5, rtol=1e-4)
    plain = predict_volume(model, image, SlidingWindow(roi_size=8))
    assert not torch.allclose(plain.probabilities, mirrored.probabilities)


def test_windows_per_forward_pass_follow_the_memory_budget(model):
    window = (32, 32, 32)
    one = window_bytes(model, window)
    assert window_bytes(model, (64, 32, 32)) == 2 * one
    assert window_batch_size(model, window, memory_mb=one * 5.5 / 2**20) == 5
    assert window_batch_size(model, window, memory_mb=one / 2 / 2**20) == 1  # never fewer than one
    small = predict_volume(model, torch.randn(4, 24, 24, 24), SlidingWindow(roi_size=8, memory_mb=1.0))
    batched = predict_volume(model, torch.randn(4, 24, 24, 24), SlidingWindow(roi_size=8, batch_size=27))
    assert small.probabilities.shape == batched.probabilities.shape


def test_a_window_over_the_memory_budget_shrinks_its_longest_axes_but_not_below_the_patch(model):
    divisor = model.size_divisor
    box = (64, 96, 48)
    assert window_within_memory(model, box, (16, 16, 16), memory_mb=window_bytes(model, box) / 2**20) == box
    budget = window_bytes(model, (48, 48, 48)) / 2**20
    shrunk = window_within_memory(model, box, (16, 16, 16), memory_mb=budget)
    assert window_bytes(model, shrunk) <= budget * 2**20
    assert all(edge % divisor == 0 and 16 <= edge <= whole for edge, whole in zip(shrunk, box))
    assert max(shrunk) - min(shrunk) <= divisor  # the longest axes gave up voxels first
    assert window_within_memory(model, box, (32, 32, 32), memory_mb=1e-6) == (32, 32, 32)  # floor wins


def test_predict_volume_covers_the_box_with_smaller_windows_when_the_budget_is_small(model):
    torch.manual_seed(0)
    image = torch.randn(4, 40, 40, 40)
    one_window = predict_volume(model, image, SlidingWindow(roi_size=64, overlap=0.5))
    budget = window_bytes(model, (24, 24, 24)) / 2**20
    tiled = predict_volume(model, image, SlidingWindow(roi_size=64, overlap=0.5, memory_mb=budget))
    assert tiled.probabilities.shape == one_window.probabilities.shape
    assert not torch.allclose(tiled.probabilities, one_window.probabilities)  # other windows, other context
