"""SegAttentionGate: map range, shapes, identity at initialisation."""

from __future__ import annotations

import pytest
import torch

from segguided_model.attention import MAP_PRIOR, SegAttentionGate


def test_gate_returns_gated_features_and_three_maps_in_unit_range():
    gate = SegAttentionGate(6)
    features = torch.randn(2, 6, 4, 5, 3) * 10
    gated, maps, map_logits = gate(features)
    assert gated.shape == features.shape
    assert maps.shape == (2, 3, 4, 5, 3)
    assert maps.min() >= 0 and maps.max() <= 1
    torch.testing.assert_close(maps, torch.sigmoid(map_logits))


def test_fresh_gate_passes_features_through_unchanged():
    features = torch.randn(1, 5, 3, 3, 3)
    gated = SegAttentionGate(5)(features).features
    torch.testing.assert_close(gated, features)


def test_gate_rescales_features_once_trained():
    gate = SegAttentionGate(2)
    torch.nn.init.constant_(gate.to_gate.weight, 1.0)
    features = torch.ones(1, 2, 2, 2, 2)
    output = gate(features)
    torch.testing.assert_close(output.features, features * (1 + output.maps.sum(dim=1, keepdim=True)))


def test_gate_is_lightweight():
    assert sum(p.numel() for p in SegAttentionGate(32).parameters()) == 6 * 32 + 3
    # with a hidden layer of 8: 32·8 + 8 (hidden), 8·3 + 3 (maps), 3·32 (mixing)
    assert sum(p.numel() for p in SegAttentionGate(32, hidden_channels=8).parameters()) == 32 * 8 + 8 + 8 * 3 + 3 + 3 * 32


def test_a_gate_with_a_hidden_layer_reads_its_maps_through_it():
    gate = SegAttentionGate(4, hidden_channels=6)
    features = torch.randn(1, 4, 3, 3, 3)
    expected = torch.sigmoid(gate.to_maps(torch.relu(gate.hidden(features))))
    output = gate(features)
    torch.testing.assert_close(output.maps, expected)
    torch.testing.assert_close(output.features, features)  # still the identity when fresh


@pytest.mark.parametrize("hidden", [-1, 2.5])
def test_bad_hidden_channels_raise_value_error(hidden):
    with pytest.raises(ValueError, match="hidden_channels"):
        SegAttentionGate(4, hidden_channels=hidden)


@pytest.mark.parametrize("channels", [0, -1, 2.5])
def test_non_positive_channels_raise_value_error(channels):
    with pytest.raises(ValueError, match="channels"):
        SegAttentionGate(channels)


def test_new_maps_start_at_the_sub_regions_prior_not_at_one_half():
    gate = SegAttentionGate(4)
    torch.nn.init.zeros_(gate.to_maps.weight)  # only the bias speaks
    maps = gate(torch.randn(1, 4, 3, 3, 3)).maps
    torch.testing.assert_close(maps, torch.full_like(maps, MAP_PRIOR))
