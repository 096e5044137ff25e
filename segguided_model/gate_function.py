"""The attention gate as one autograd node of matrix products, with a cheap backward pass.

The attention gates mix a handful of channels at every voxel. As convolutions (CPU) or
as plain matrix products under autograd (GPU) these small operations cost far more than
their arithmetic: CPU convolution kernels are slow for 3 channels and a 1×1×1 kernel,
and the weight gradient of a product over millions of voxels, ``(3, N) @ (N, C)``, is a
matrix product with a tiny output that has little parallel work. On an H200 (default
network, 2×4×128³, AMP) the gated network's step took 106 ms against 78 ms without
gates, and 19 ms of that went to a fallback half-precision GEMM kernel that only the
gates' 3-channel products use. Here the weight gradients are summed per depth slice in
one batched product (every slice its own block of work). (Whether this closes the GPU
gap is not yet measured; see ``benchmarks/results/model_benchmark_gpu_machine.md``.)

On a CPU (2 threads, the simulation network's three gates: width 8, 48³ patch, batch 2)
forward and backward took 32 ms as separate product and gating nodes under
``torch.matmul`` (which copied the voxels twice, transposed in and out), 18 ms with
``torch.bmm``, and 11 ms as the single node below, which keeps only the features and
maps and builds the features' gradient in one tensor.
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
    out = torch.bmm(_per_sample(matrix, batch), flat)
    return out.reshape(batch, matrix.shape[0], *spatial)


def _per_sample(matrix: torch.Tensor, batch: int) -> torch.Tensor:
    """``(C_out, C_in)`` → ``(batch, C_out, C_in)``, a broadcast view for ``torch.bmm``."""
    return matrix.unsqueeze(0).expand(batch, -1, -1)


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


def _scale(maps: torch.Tensor, weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The gating factor ``1 + conv1x1(maps, weight)`` in ``dtype``: ``(B, M, *S)`` → ``(B, C, *S)``."""
    return _apply(_matrix(weight, dtype), maps.to(dtype)).add_(1)


class _SegmentationGate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features, map_weight, map_bias, gate_weight, readout):
        dtype = features.dtype
        source = features if readout is None else readout
        bias = map_bias.to(dtype).reshape(1, -1, *([1] * (features.ndim - 2)))
        map_logits = _apply(_matrix(map_weight, dtype), source.to(dtype)).add_(bias)
        maps = torch.sigmoid(map_logits)
        gated = _scale(maps, gate_weight, dtype).mul_(features)
        ctx.save_for_backward(features, maps, map_weight, gate_weight, readout)
        ctx.set_materialize_grads(False)
        return gated, maps, map_logits

    @staticmethod
    def backward(ctx, grad_gated, grad_maps, grad_logits):
        # Two feature-sized temporaries, one after the other: the gating factor's gradient,
        # then the features' gradient, into which the maps' branch is added in place.
        features, maps, map_weight, gate_weight, readout = ctx.saved_tensors
        dtype, batch = features.dtype, features.shape[0]
        # our own copy: it is updated in place below, and autograd's gradients are not ours to change
        grad_maps = torch.zeros_like(maps) if grad_maps is None else grad_maps.to(dtype, copy=True)
        if grad_gated is None:
            grad_gate_weight = torch.zeros_like(gate_weight)
            grad_features = torch.zeros_like(features)
        else:
            grad_gated = grad_gated.to(dtype)
            grad_scale = grad_gated * features
            grad_gate_weight = summed_outer_product(grad_scale, maps).reshape(gate_weight.shape).to(gate_weight.dtype)
            grad_maps += _apply(_matrix(gate_weight, dtype).t(), grad_scale)
            del grad_scale
            grad_features = _scale(maps, gate_weight, dtype).mul_(grad_gated)
        grad_map_logits = grad_maps.mul_(maps * (1 - maps))  # through the sigmoid
        if grad_logits is not None:
            grad_map_logits += grad_logits.to(dtype)
        back = (_per_sample(_matrix(map_weight, dtype).t(), batch), grad_map_logits.reshape(batch, maps.shape[1], -1))
        if readout is None:  # the maps read the features: both paths add into one gradient
            grad_features.view(batch, features.shape[1], -1).baddbmm_(*back)
            grad_readout, source = None, features
        else:
            grad_readout = torch.bmm(*back).reshape(readout.shape).to(readout.dtype)
            source = readout.to(dtype)
        grad_map_weight = summed_outer_product(grad_map_logits, source).reshape(map_weight.shape).to(map_weight.dtype)
        grad_map_bias = grad_map_logits.float().sum(dim=(0, *range(2, grad_map_logits.ndim))).to(map_weight.dtype)
        return grad_features, grad_map_weight, grad_map_bias, grad_gate_weight, grad_readout


def segmentation_gate(
    features: torch.Tensor,
    map_weight: torch.Tensor,
    map_bias: torch.Tensor,
    gate_weight: torch.Tensor,
    readout: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The whole gate in one autograd node: map logits, maps, gated features.

    ``map_logits = conv1x1(readout, map_weight, map_bias)``, ``maps = sigmoid(map_logits)``,
    ``gated = features * (1 + conv1x1(maps, gate_weight))``. ``readout`` is what the maps
    are read from: the features themselves when ``None`` (a linear read-out), or a hidden
    layer computed from them (``attention.SegAttentionGate`` with hidden channels). Computed in ``features``'
    dtype (under autocast in half precision, like a convolution); gradients come back in
    each argument's own dtype. Backward keeps only the features and the maps: the
    feature-sized gating factor is recomputed from the maps, and the two paths by which
    the features reach the outputs add into one gradient tensor instead of two. Gating
    so adds one feature-sized activation (its output, which the next layer keeps) to a
    network without gates.

    Shapes:
        ``features (B, C, D, H, W)``, ``map_weight (M, C, 1, 1, 1)``, ``map_bias (M,)``,
        ``gate_weight (C, M, 1, 1, 1)``, ``readout (B, R, D, H, W)`` with ``map_weight (M, R, 1, 1, 1)``
        → ``gated (B, C, D, H, W)``, ``maps (B, M, D, H, W)`` in [0, 1], ``map_logits (B, M, D, H, W)``.
    """
    return _SegmentationGate.apply(features, map_weight, map_bias, gate_weight, readout)
