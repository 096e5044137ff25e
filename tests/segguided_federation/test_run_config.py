"""The run config: pyproject defaults match the typed model, and bad values fail by name."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib

from segguided_federation.run_config import RunConfig, RunConfigError

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _app_config() -> dict:
    return tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]


def test_pyproject_declares_every_key_with_the_typed_default():
    assert _app_config() == RunConfig().to_flower()


def test_pyproject_config_parses():
    config = RunConfig.from_flower(_app_config())
    assert config.patch_size == (48, 48, 48)
    assert config.model.levels == config.model_levels


def test_unknown_key_is_named():
    with pytest.raises(RunConfigError, match="num-rounds"):
        RunConfig.from_flower({**_app_config(), "num-rounds": 3})


def test_wrong_type_is_named():
    with pytest.raises(RunConfigError, match="learning-rate"):
        RunConfig.from_flower({**_app_config(), "learning-rate": "fast"})


@pytest.mark.parametrize(
    "key, value",
    [
        ("num-server-rounds", 0),
        ("fraction-fit", 1.5),
        ("strategy", "fedmagic"),
        ("attention-weight", -0.1),
        ("patch-size", "48,48"),
        ("model-encoder-blocks", "1,two,2,4"),
        ("model-encoder-blocks", "1,0,2,4"),
        ("model-encoder-blocks", "1,2,2"),
        ("model-skip-merge", "multiply"),
        ("server-validation-convention", "brats2025"),
        ("evaluate-every", 0),
    ],
)
def test_impossible_values_are_named(key, value):
    with pytest.raises(RunConfigError, match=key):
        RunConfig.from_flower({**_app_config(), key: value})


def test_encoder_blocks_and_skip_merge_reach_the_model():
    default = RunConfig.from_flower(_app_config())
    assert default.model.encoder_blocks == (1, 2, 2, 4)
    chosen = RunConfig.from_flower({**_app_config(), "model-encoder-blocks": " 1, 1,3,2", "model-skip-merge": "concat"})
    assert chosen.model.encoder_blocks == (1, 1, 3, 2)
    assert chosen.model.skip_merge == "concat"


def test_patch_size_must_fit_the_network_strides():
    with pytest.raises(RunConfigError, match="multiple of 8"):
        RunConfig.from_flower({**_app_config(), "patch-size": "44"})


def test_min_fit_clients_cannot_exceed_min_available():
    with pytest.raises(RunConfigError, match="min-fit-clients"):
        RunConfig.from_flower({**_app_config(), "min-fit-clients": 3, "min-available-clients": 2})


def test_anisotropic_patch_size():
    config = RunConfig.from_flower({**_app_config(), "patch-size": "64,64,32"})
    assert config.patch_size == (64, 64, 32)


def test_secure_aggregation_is_on_by_default():
    config = RunConfig.from_flower(_app_config())
    assert config.secure_aggregation and not config.differential_privacy


def test_differential_privacy_needs_secure_aggregation():
    with pytest.raises(RunConfigError, match="differential-privacy"):
        RunConfig.from_flower({**_app_config(), "differential-privacy": True, "secure-aggregation": False})


def test_secure_aggregation_needs_two_clients_per_round():
    with pytest.raises(RunConfigError, match="min-fit-clients"):
        RunConfig.from_flower({**_app_config(), "min-fit-clients": 1})


@pytest.mark.parametrize(
    "key, value",
    [("secure-aggregation-num-shares", 1.5), ("secure-aggregation-reconstruction-threshold", 0.0),
     ("secure-aggregation-clipping-range", 0.0), ("dp-delta", 1.0)],
)
def test_impossible_secure_aggregation_values_are_named(key, value):
    with pytest.raises(RunConfigError, match=key):
        RunConfig.from_flower({**_app_config(), key: value})


def test_server_validation_convention_accepts_every_known_convention_or_nothing():
    assert RunConfig.from_flower({**_app_config(), "server-validation-convention": "msd"}).server_validation_convention == "msd"
    assert RunConfig.from_flower(_app_config()).server_validation_convention == ""


def test_differential_privacy_needs_every_client_in_every_round():
    """Flower samples max(int(N·f), min-fit-clients) clients: not the rate f an accountant would be given."""
    with pytest.raises(RunConfigError, match="fraction-fit"):
        RunConfig.from_flower(
            {**_app_config(), "differential-privacy": True, "fraction-fit": 0.1, "min-fit-clients": 2}
        )
    assert RunConfig.from_flower({**_app_config(), "differential-privacy": True}).fraction_fit == 1.0


@pytest.mark.parametrize(
    ("every", "rounds", "validated"),
    [(1, 3, [0, 1, 2, 3]), (2, 5, [0, 2, 4, 5]), (3, 6, [0, 3, 6]), (10, 4, [0, 4])],
)
def test_evaluate_every_validates_every_kth_round_the_initial_model_and_the_last(every, rounds, validated):
    config = RunConfig.from_flower({"evaluate-every": every, "num-server-rounds": rounds})
    assert [n for n in range(rounds + 1) if config.validates_after(n)] == validated
