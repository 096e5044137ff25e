"""Checkpoints: round trip, atomic write, and one-line errors for foreign files."""

from __future__ import annotations

import pytest
import torch

from segguided_model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from segguided_model.network import SegGuidedNet


def tiny(**fields) -> SegGuidedNet:
    return SegGuidedNet(base_width=4, levels=3, **fields)


def test_saved_model_loads_back_with_its_config_weights_and_extras(tmp_path):
    model = tiny(norm="group", deep_supervision=True)
    path = save_checkpoint(tmp_path / "nested" / "model.pt", model, extra={"round": 7, "dice": 0.8})
    loaded = load_checkpoint(path)
    assert loaded.config == model.config
    assert loaded.extra == {"round": 7, "dice": 0.8}
    x = torch.randn(1, 4, 8, 8, 8)
    model.eval(), loaded.model.eval()
    torch.testing.assert_close(loaded.model(x).logits, model(x).logits)


def test_version_1_checkpoint_from_before_encoder_blocks_still_loads(tmp_path):
    """Version 1 stored one block per encoder level as ``encoder.<level>.block.*`` and concatenated skips."""
    model = tiny(encoder_blocks=(1, 1, 1), skip_merge="concat", upsample="transposed", gate_hidden_channels=0)
    config = model.config.model_dump()
    del config["encoder_blocks"], config["skip_merge"], config["upsample"], config["gate_hidden_channels"]
    old_keys = {key.replace(".blocks.0.", ".block."): value for key, value in model.state_dict().items()}
    assert any(".block." in key for key in old_keys)
    path = tmp_path / "old.pt"
    torch.save({"format": "segguided-checkpoint", "format_version": 1, "config": config, "state_dict": old_keys, "extra": {}}, path)
    loaded = load_checkpoint(path)
    assert loaded.config.encoder_blocks == (1, 1, 1) and loaded.config.skip_merge == "concat"
    x = torch.randn(1, 4, 8, 8, 8)
    model.eval(), loaded.model.eval()
    torch.testing.assert_close(loaded.model(x).logits, model(x).logits)


def test_version_2_checkpoint_from_before_the_upsample_choice_loads_with_transposed_convolutions(tmp_path):
    """Version 2 had no ``upsample``: its decoders upsampled by transposed convolution (``upsample.conv.weight``)."""
    model = tiny(upsample="transposed", gate_hidden_channels=0)
    config = model.config.model_dump()
    del config["upsample"], config["gate_hidden_channels"]
    path = tmp_path / "v2.pt"
    torch.save({"format": "segguided-checkpoint", "format_version": 2, "config": config,
                "state_dict": model.state_dict(), "extra": {}}, path)
    loaded = load_checkpoint(path)
    assert loaded.config.upsample == "transposed"
    x = torch.randn(1, 4, 8, 8, 8)
    model.eval(), loaded.model.eval()
    torch.testing.assert_close(loaded.model(x).logits, model(x).logits)
    assert tiny().config.upsample == "trilinear"  # what new networks use


def test_version_3_checkpoint_from_before_the_gates_hidden_layer_loads_with_linear_read_outs(tmp_path):
    """Version 3 had no ``gate_hidden_channels``: every gate read its maps linearly (no ``gates.*.hidden``)."""
    model = tiny(gate_hidden_channels=0)
    config = model.config.model_dump()
    del config["gate_hidden_channels"]
    path = tmp_path / "v3.pt"
    torch.save({"format": "segguided-checkpoint", "format_version": 3, "config": config,
                "state_dict": model.state_dict(), "extra": {}}, path)
    loaded = load_checkpoint(path)
    assert loaded.config.gate_hidden_channels == 0
    x = torch.randn(1, 4, 8, 8, 8)
    model.eval(), loaded.model.eval()
    torch.testing.assert_close(loaded.model(x).attention_maps[-1], model(x).attention_maps[-1])
    assert tiny().config.gate_hidden_channels == 8  # what new networks use


def test_save_leaves_no_temporary_file_and_replaces_the_old_checkpoint(tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(path, tiny())
    save_checkpoint(path, tiny(attention_gates=False))
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]
    assert load_checkpoint(path).config.attention_gates is False


def test_missing_file_raises_checkpoint_error_naming_it(tmp_path):
    with pytest.raises(CheckpointError, match="absent.pt does not exist"):
        load_checkpoint(tmp_path / "absent.pt")


def test_non_torch_file_raises_checkpoint_error(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="notes.pt is not a readable PyTorch file"):
        load_checkpoint(path)


def test_bare_state_dict_of_another_model_raises_checkpoint_error(tmp_path):
    path = tmp_path / "segresnet.pt"
    torch.save({"conv.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(CheckpointError, match="segresnet.pt is not a SegGuidedNet checkpoint"):
        load_checkpoint(path)


def test_weights_of_another_architecture_raise_checkpoint_error_naming_keys(tmp_path):
    path = save_checkpoint(tmp_path / "model.pt", tiny())
    payload = torch.load(path, weights_only=True)
    payload["config"]["base_width"] = 8
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"model.pt holds another architecture \(.*wrong shapes"):
        load_checkpoint(path)


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)


def test_saving_something_else_than_segguidednet_raises_type_error(tmp_path):
    with pytest.raises(TypeError, match="Linear"):
        save_checkpoint(tmp_path / "x.pt", torch.nn.Linear(2, 2))
