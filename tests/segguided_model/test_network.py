"""SegGuidedNet: shapes, ill arguments, gate ablation and parameter budget."""

from __future__ import annotations

import pytest
import torch

from segguided_model.network import ModelConfig, SegGuidedNet, SegGuidedOutput

torch.set_num_threads(1)


def n_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "levels, size",
    [(2, (8, 6, 4)), (3, (16, 16, 16)), (4, (16, 24, 8)), (5, (32, 16, 16))],
)
def test_output_shapes_follow_input_size_and_depth(levels, size):
    model = SegGuidedNet(base_width=4, levels=levels)
    output = model(torch.randn(2, 4, *size))
    assert isinstance(output, SegGuidedOutput)
    assert output.logits.shape == (2, 3, *size)
    assert len(output.attention_maps) == levels - 1
    for stage, maps in enumerate(output.attention_maps):
        factor = 2 ** (levels - 2 - stage)
        assert maps.shape == (2, 3, *(s // factor for s in size))
        assert 0 <= maps.min() and maps.max() <= 1
    assert output.deep_supervision_logits == ()


def test_output_is_the_same_type_in_training_and_evaluation():
    model = SegGuidedNet(base_width=4, levels=3)
    x = torch.randn(1, 4, 8, 8, 8)
    model.train()
    trained = model(x)
    model.eval()
    evaluated = model(x)
    assert type(trained) is type(evaluated)
    assert len(trained.attention_maps) == len(evaluated.attention_maps) == 2


def test_deep_supervision_outputs_every_decoder_stage_but_the_last():
    model = SegGuidedNet(base_width=4, levels=4, deep_supervision=True)
    output = model(torch.randn(1, 4, 16, 16, 16))
    assert [tuple(t.shape) for t in output.deep_supervision_logits] == [(1, 3, 4, 4, 4), (1, 3, 8, 8, 8)]


def test_network_without_gates_hands_out_no_maps():
    model = SegGuidedNet(base_width=4, levels=3, attention_gates=False)
    output = model(torch.randn(1, 4, 8, 8, 8))
    assert output.attention_maps == ()
    assert output.logits.shape == (1, 3, 8, 8, 8)


def test_fresh_gates_compute_exactly_the_network_without_gates():
    gated = SegGuidedNet(base_width=4, levels=3)
    plain = SegGuidedNet(base_width=4, levels=3, attention_gates=False)
    missing, unexpected = gated.load_state_dict(plain.state_dict(), strict=False)
    assert unexpected == [] and all(key.startswith("gates.") for key in missing)
    x = torch.randn(1, 4, 8, 8, 8)
    torch.testing.assert_close(gated(x).logits, plain(x).logits)


def test_default_configuration_is_segresnets_brats_size_and_the_earlier_one_stays_reachable():
    # SegResNet's BraTS configuration (Myronenko 2018: init 16, blocks 1, 2, 2, 4), chosen
    # from benchmarks/results/full_size_default.md; the earlier default is a config away.
    config = SegGuidedNet().config
    assert config == ModelConfig()
    assert (config.base_width, config.levels, config.encoder_blocks) == (16, 4, (1, 2, 2, 4))
    assert SegGuidedNet().size_divisor == 8
    assert 4e6 < n_parameters(SegGuidedNet()) < 5e6
    assert n_parameters(SegGuidedNet(base_width=32, levels=5)) > 40e6


def test_gates_add_less_than_0_2_percent_parameters_at_default_size():
    gated, plain = n_parameters(SegGuidedNet()), n_parameters(SegGuidedNet(attention_gates=False))
    overhead = (gated - plain) / plain
    print(f"default SegGuidedNet: {gated} parameters, without gates {plain}, overhead {overhead:.4%}")
    assert 0 < overhead < 0.002


def test_encoder_blocks_default_to_segresnets_schedule_and_count_per_level():
    assert ModelConfig(levels=2).encoder_blocks == (1, 2)
    assert ModelConfig(levels=4).encoder_blocks == (1, 2, 2, 4)
    assert ModelConfig(levels=5).encoder_blocks == (1, 2, 2, 4, 4)
    model = SegGuidedNet(base_width=4, levels=3, encoder_blocks=(1, 3, 2))
    assert [len(stage.blocks) for stage in model.encoder] == [1, 3, 2]
    assert model(torch.randn(1, 4, 8, 8, 8)).logits.shape == (1, 3, 8, 8, 8)
    # a further block keeps width and resolution: two 3×3×3 convolutions with norms, no shortcut
    width = model.config.widths[1]
    one_more = SegGuidedNet(base_width=4, levels=3, encoder_blocks=(1, 4, 2))
    assert n_parameters(one_more) - n_parameters(model) == 2 * (27 * width * width + 2 * width)


def test_skip_merge_adds_by_default_and_concatenates_on_request():
    added = SegGuidedNet(base_width=4, levels=3, attention_gates=False)
    joined = SegGuidedNet(base_width=4, levels=3, attention_gates=False, skip_merge="concat")
    assert added.config.skip_merge == "add"
    # concatenation widens each decoder block's input by the skip: a wider first
    # convolution and a 1×1×1 projected shortcut
    extra = sum(27 * w * w + 2 * w * w + 2 * w for w in added.config.widths[:-1])
    assert n_parameters(joined) - n_parameters(added) == extra
    x = torch.randn(1, 4, 8, 8, 8)
    assert added(x).logits.shape == joined(x).logits.shape == (1, 3, 8, 8, 8)


def test_from_config_rebuilds_the_same_architecture():
    config = ModelConfig(base_width=4, levels=3, norm="group", deep_supervision=True)
    model = SegGuidedNet.from_config(config)
    assert model.config == config
    assert set(model.state_dict()) == set(SegGuidedNet(**config.model_dump()).state_dict())


@pytest.mark.parametrize(
    "fields, field_name",
    [
        ({"levels": 1}, "levels"),
        ({"base_width": 0}, "base_width"),
        ({"norm": "batch"}, "norm"),
        ({"max_width": 4, "base_width": 8}, "max_width"),
        ({"widht": 8}, "widht"),
        ({"levels": 3, "encoder_blocks": (1, 2)}, "encoder_blocks"),
        ({"levels": 3, "encoder_blocks": (1, 0, 2)}, "encoder_blocks"),
        ({"skip_merge": "multiply"}, "skip_merge"),
    ],
)
def test_ill_arguments_raise_value_error_naming_the_field(fields, field_name):
    with pytest.raises(ValueError, match=field_name):
        SegGuidedNet(**fields)


def test_config_is_frozen():
    with pytest.raises(ValueError):
        ModelConfig().levels = 3


def test_input_size_that_does_not_fit_the_strides_names_fitting_sizes():
    model = SegGuidedNet(base_width=4, levels=4)
    with pytest.raises(ValueError, match=r"multiple of 8.*33 -> 32 or 40"):
        model(torch.randn(1, 4, 33, 16, 16))


@pytest.mark.parametrize("shape", [(4, 16, 16, 16), (1, 3, 16, 16, 16)])
def test_input_of_wrong_rank_or_channels_raises_value_error(shape):
    with pytest.raises(ValueError, match="expected"):
        SegGuidedNet(base_width=4, levels=3)(torch.randn(*shape))
