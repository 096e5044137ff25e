"""The fused gate and its products: values against convolutions, gradients against finite differences."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from segguided_model.gate_function import segmentation_gate, summed_outer_product


def reference_gate(features, map_weight, map_bias, gate_weight, readout=None):
    """The gate as autograd would build it from convolutions."""
    map_logits = F.conv3d(features if readout is None else readout, map_weight, map_bias)
    maps = torch.sigmoid(map_logits)
    return features * (1 + F.conv3d(maps, gate_weight)), maps, map_logits


def gate_arguments(dtype=torch.float64, channels=4, maps=3):
    return (
        torch.randn(2, channels, 3, 2, 5, dtype=dtype, requires_grad=True),
        torch.randn(maps, channels, 1, 1, 1, dtype=dtype, requires_grad=True),
        torch.randn(maps, dtype=dtype, requires_grad=True),
        torch.randn(channels, maps, 1, 1, 1, dtype=dtype, requires_grad=True),
    )


def test_gate_equals_its_convolutions():
    arguments = gate_arguments(torch.float32)
    for fused, reference in zip(segmentation_gate(*arguments), reference_gate(*arguments)):
        torch.testing.assert_close(fused, reference)


def test_gate_gradients_match_finite_differences():
    assert torch.autograd.gradcheck(segmentation_gate, gate_arguments())


@pytest.mark.parametrize("used", [(0,), (1,), (2,), (0, 2), (1, 2)])
def test_gate_gradients_match_autograd_when_only_some_outputs_are_used(used):
    arguments = gate_arguments()
    weights = [torch.randn_like(output) for output in reference_gate(*arguments)]

    def gradients(gate):
        outputs = gate(*arguments)
        loss = sum((outputs[i] * weights[i]).sum() for i in used)
        return torch.autograd.grad(loss, arguments, materialize_grads=True)

    # weight gradients are accumulated in float32 (summed_outer_product)
    for fused, reference in zip(gradients(segmentation_gate), gradients(reference_gate)):
        torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-6)


def readout_arguments(dtype=torch.float64, channels=4, hidden=5, maps=3):
    """Gate arguments whose maps are read from a separate ``(B, hidden, ...)`` tensor."""
    features, _, map_bias, gate_weight = gate_arguments(dtype, channels, maps)
    readout = torch.randn(2, hidden, *features.shape[2:], dtype=dtype, requires_grad=True)
    map_weight = torch.randn(maps, hidden, 1, 1, 1, dtype=dtype, requires_grad=True)
    return features, map_weight, map_bias, gate_weight, readout


def test_gate_with_a_readout_equals_its_convolutions_and_its_gradients_match_finite_differences():
    arguments = readout_arguments()
    for fused, reference in zip(segmentation_gate(*arguments), reference_gate(*arguments)):
        torch.testing.assert_close(fused, reference)
    assert torch.autograd.gradcheck(segmentation_gate, arguments)


@pytest.mark.parametrize("used", [(0,), (1,), (2,), (0, 2)])
def test_gate_with_a_readout_matches_autograd_when_only_some_outputs_are_used(used):
    arguments = readout_arguments()
    weights = [torch.randn_like(output) for output in reference_gate(*arguments)]

    def gradients(gate):
        outputs = gate(*arguments)
        loss = sum((outputs[i] * weights[i]).sum() for i in used)
        return torch.autograd.grad(loss, arguments, materialize_grads=True)

    for fused, reference in zip(gradients(segmentation_gate), gradients(reference_gate)):
        torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-6)


def test_summed_outer_product_sums_over_batch_and_voxels():
    left, right = torch.randn(3, 4, 5, 2, 3), torch.randn(3, 2, 5, 2, 3)
    expected = torch.einsum("bivhw,bjvhw->ij", left, right)
    torch.testing.assert_close(summed_outer_product(left, right), expected, rtol=1e-5, atol=1e-5)


def test_half_precision_features_give_gradients_in_each_arguments_dtype():
    features = torch.randn(1, 4, 2, 3, 2, dtype=torch.bfloat16, requires_grad=True)
    map_weight = torch.randn(3, 4, 1, 1, 1, requires_grad=True)  # float32 parameters
    map_bias = torch.randn(3, requires_grad=True)
    gate_weight = torch.randn(4, 3, 1, 1, 1, requires_grad=True)
    gated, maps, map_logits = segmentation_gate(features, map_weight, map_bias, gate_weight)
    assert gated.dtype == maps.dtype == map_logits.dtype == torch.bfloat16
    (gated.float().sum() + map_logits.float().sum()).backward()
    assert features.grad.dtype == torch.bfloat16
    assert map_weight.grad.dtype == map_bias.grad.dtype == gate_weight.grad.dtype == torch.float32
    assert all(torch.isfinite(t.grad).all() for t in (features, map_weight, map_bias, gate_weight))
