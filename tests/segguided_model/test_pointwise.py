"""1×1×1 products and gating with hand-written backward passes: values and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from segguided_model.pointwise import gate_with_maps, pointwise, summed_outer_product


def test_pointwise_equals_a_1x1x1_convolution():
    inputs, weight, bias = torch.randn(2, 5, 3, 4, 6), torch.randn(3, 5, 1, 1, 1), torch.randn(3)
    torch.testing.assert_close(pointwise(inputs, weight, bias), F.conv3d(inputs, weight, bias))
    torch.testing.assert_close(pointwise(inputs, weight), F.conv3d(inputs, weight))


@pytest.mark.parametrize("with_bias", [True, False])
def test_pointwise_gradients_match_finite_differences(with_bias):
    inputs = torch.randn(2, 4, 3, 2, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 4, 1, 1, 1, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, requires_grad=True) if with_bias else None
    assert torch.autograd.gradcheck(pointwise, (inputs, weight, bias))


def test_gating_equals_its_formula_and_its_gradients_match_finite_differences():
    features = torch.randn(2, 4, 3, 2, 5, dtype=torch.float64, requires_grad=True)
    maps = torch.rand(2, 3, 3, 2, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 3, 1, 1, 1, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(gate_with_maps(features, maps, weight), features * (1 + F.conv3d(maps, weight)))
    assert torch.autograd.gradcheck(gate_with_maps, (features, maps, weight))


def test_summed_outer_product_sums_over_batch_and_voxels():
    left, right = torch.randn(3, 4, 5, 2, 3), torch.randn(3, 2, 5, 2, 3)
    expected = torch.einsum("bivhw,bjvhw->ij", left, right)
    torch.testing.assert_close(summed_outer_product(left, right), expected, rtol=1e-5, atol=1e-5)


def test_half_precision_inputs_give_gradients_in_each_arguments_dtype():
    features = torch.randn(1, 4, 2, 3, 2, dtype=torch.bfloat16, requires_grad=True)
    weight = torch.randn(3, 4, 1, 1, 1, requires_grad=True)  # float32 parameter
    bias = torch.randn(3, requires_grad=True)
    maps = torch.sigmoid(pointwise(features, weight, bias))
    gate_weight = torch.randn(4, 3, 1, 1, 1, requires_grad=True)
    gated = gate_with_maps(features, maps, gate_weight)
    assert maps.dtype == gated.dtype == torch.bfloat16
    gated.float().sum().backward()
    assert features.grad.dtype == torch.bfloat16
    assert weight.grad.dtype == bias.grad.dtype == gate_weight.grad.dtype == torch.float32
    assert all(torch.isfinite(t.grad).all() for t in (features, weight, bias, gate_weight))
