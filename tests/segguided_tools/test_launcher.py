"""The launcher checks a run config before Flower's SuperLink sees it, and names what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from segguided_tools.launcher import RunFailed, check_run_config

PROJECT = Path(__file__).resolve().parents[2]


def test_an_unknown_key_is_named_with_the_nearest_known_key():
    with pytest.raises(RunFailed, match=r"unknown key 'learnig-rate'; did you mean 'learning-rate'\?"):
        check_run_config(PROJECT, "learnig-rate=0.01 num-server-rounds=2")


def test_an_impossible_value_is_named_without_dumping_the_whole_config():
    with pytest.raises(RunFailed) as raised:
        check_run_config(PROJECT, 'patch-size="36" model-levels=4')
    message = str(raised.value)
    assert "patch-size 36 does not fit model-levels=4" in message
    assert len(message) < 300  # the 1.4 kB config is not repeated


def test_a_valid_override_is_applied_over_the_apps_defaults():
    config = check_run_config(PROJECT, 'num-server-rounds=7 patch-size="32,32,16"')
    assert config.num_server_rounds == 7 and config.patch_size == (32, 32, 16)
    assert config.local_steps == 25  # from pyproject.toml
