"""1×1×1 convolutions and voxel-wise gating as matrix products, with cheap backward passes.

The attention gates mix a handful of channels at every voxel. As convolutions (CPU) or
as plain matrix products under autograd (GPU) these small operations cost far more than
their arithmetic: CPU convolution kernels are slow for 3 channels and a 1×1×1 kernel,
and the weight gradient of a product over millions of voxels, ``(3, N) @ (N, C)``, is a
matrix product with a tiny output that has little parallel work. On an H200 (default
network, 2×4×128³, AMP) the gated network's step took 106 ms against 78 ms without
gates, and 19 ms of that went to a fallback half-precision GEMM kernel that only the
gates' 3-channel products use. Here the weight gradients are summed per depth slice in
one batched product (every slice its own block of work), and the gating keeps no
intermediate for backward. (Whether this closes the GPU gap is not yet measured; see
``benchmarks/results/model_benchmark_gpu_machine.md``.) On a CPU, ``torch.matmul`` of a
matrix with a batch of feature maps copied the voxels twice (transposed in, transposed
out): with ``torch.bmm`` the three gates of the simulation network (width 8, 48³ patch,
batch 2) take 18 ms for forward and backward instead of 32 ms.
"""

from __future__ import annotations

import torch


def _matrix(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``(C_out, C_in, 1, 1, 1)`` convolution weight → ``(C_out, C_in)`` matrix in ``dtype``."""
    return weight.reshape(weight.shape[0], weight.shape[1]).to(dtype)


def _apply(matrix: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """``(C_out, C_in)`` matrix applied at every voxel: ``(B, C_in, *S)`` → ``(B, C_out, *S)``.

    One batched product with the matrix broadcast over the batch. (``torch.matmul`` of a
    matrix with a 3-d tensor would transpose the voxels to the front and copy them twice.)
    """
    batch, channels, *spatial = inputs.shape
    flat = inputs.reshape(batch, channels, -1)
    out = torch.bmm(matrix.unsqueeze(0).expand(batch, -1, -1), flat)
    return out.reshape(batch, matrix.shape[0], *spatial)


def summed_outer_product(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """``sum over b and voxels of left[b, i, v] * right[b, j, v]``, in float32.

    One batched matrix product per batch element over the depth slices, then a sum: every
    slice is its own block of work, where one product over all voxels would reduce
    millions of terms per output element on a few thread blocks.

    Shapes:
        ``left (B, I, D, H, W)``, ``right (B, J, D, H, W)`` → ``(I, J)`` float32.
    """
    depth = left.shape[2]
    total = left.new_zeros((left.shape[1], right.shape[1]), dtype=torch.float32)
    for sample_left, sample_right in zip(left, right):
        slices_left = sample_left.reshape(sample_left.shape[0], depth, -1).transpose(0, 1)  # (D, I, HW)
        slices_right = sample_right.reshape(sample_right.shape[0], depth, -1).permute(1, 2, 0)  # (D, HW, J)
        total += torch.bmm(slices_left, slices_right.to(slices_left.dtype)).float().sum(0)
    return total


class _Pointwise(torch.autograd.Function):
    @staticmethod
    def forward(ctx, inputs, weight, bias):
        ctx.save_for_backward(inputs, weight)
        ctx.has_bias = bias is not None
        out = _apply(_matrix(weight, inputs.dtype), inputs)
        return out if bias is None else out.add_(bias.to(out.dtype).reshape(1, -1, *([1] * (out.ndim - 2))))

    @staticmethod
    def backward(ctx, grad):
        inputs, weight = ctx.saved_tensors
        grad_inputs = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_inputs = _apply(_matrix(weight, grad.dtype).t(), grad).to(inputs.dtype)
        if ctx.needs_input_grad[1]:
            grad_weight = summed_outer_product(grad, inputs).reshape(weight.shape).to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.float().sum(dim=(0, *range(2, grad.ndim))).to(weight.dtype)
        return grad_inputs, grad_weight, grad_bias


def pointwise(inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """A 1×1×1 convolution, ``F.conv3d(inputs, weight, bias)``, as one matrix product.

    Computed in ``inputs``' dtype (so under autocast in half precision, like a
    convolution); gradients come back in each argument's own dtype.

    Shapes:
        ``inputs (B, C_in, D, H, W)``, ``weight (C_out, C_in, 1, 1, 1)``, ``bias (C_out,)``
        → ``(B, C_out, D, H, W)``.
    """
    return _Pointwise.apply(inputs, weight, bias)


def _scale(maps: torch.Tensor, weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The gating factor ``1 + pointwise(maps, weight)`` in ``dtype``: ``(B, M, *S)`` → ``(B, C, *S)``."""
    return _apply(_matrix(weight, dtype), maps.to(dtype)).add_(1)


class _MapGating(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features, maps, weight):
        ctx.save_for_backward(features, maps, weight)
        return _scale(maps, weight, features.dtype).mul_(features)

    @staticmethod
    def backward(ctx, grad):
        # one feature-sized temporary at a time: backward's memory peak is where it starts
        features, maps, weight = ctx.saved_tensors
        grad_scale = grad * features.to(grad.dtype)
        grad_maps = _apply(_matrix(weight, grad.dtype).t(), grad_scale).to(maps.dtype)
        grad_weight = summed_outer_product(grad_scale, maps).reshape(weight.shape).to(weight.dtype)
        del grad_scale
        grad_features = _scale(maps, weight, grad.dtype).mul_(grad)
        return grad_features.to(features.dtype), grad_maps, grad_weight


def gate_with_maps(features: torch.Tensor, maps: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``features * (1 + pointwise(maps, weight))``, keeping only its inputs for backward.

    Autograd would also keep the feature-sized scale; it is recomputed from the maps
    instead, so gating adds one feature-sized tensor (its output, which the next layer
    keeps) to the activations of a network without gates.

    Shapes:
        ``features (B, C, D, H, W)``, ``maps (B, M, D, H, W)``, ``weight (C, M, 1, 1, 1)``
        → ``(B, C, D, H, W)``.
    """
    return _MapGating.apply(features, maps, weight)
