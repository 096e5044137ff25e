"""A hospital refuses plain (non-secure) training by default; only its own site config can allow it."""

from __future__ import annotations

from pathlib import Path

import pytest
from flwr.app import Context, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.supercore.task_identity import TaskIdentity

from client.secure_update_mod import PlainTrainingRefused, secure_update_mod
from client.site_config import plain_training_allowed
from segguided_federation.run_config import RunConfig


def _site_config(tmp_path: Path, extra: str = "") -> str:
    path = tmp_path / "site.toml"
    path.write_text(f'site-id = "hospital-a"\ndata-path = "/data/brats"\n{extra}')
    return str(path)


def _plain_training(node_config: dict) -> object:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    plain = Message(content=RecordDict(), dst_node_id=5, message_type=MessageType.TRAIN, group_id="1")
    context = Context(run_id=1, node_id=5, node_config=node_config, state=RecordDict(), run_config=RunConfig().to_flower())
    return secure_update_mod(plain, context, lambda message, ctxt: "trained")


def test_a_hospital_refuses_plain_training_by_default(tmp_path):
    node_config = {"site-config": _site_config(tmp_path)}
    assert plain_training_allowed(node_config) is False
    with pytest.raises(PlainTrainingRefused, match="site config does not set allow-plain-training=true"):
        _plain_training(node_config)


def test_its_own_site_config_can_allow_it(tmp_path):
    assert _plain_training({"site-config": _site_config(tmp_path, "allow-plain-training = true\n")}) == "trained"


def test_its_own_node_config_wins_over_the_file(tmp_path):
    node_config = {"site-config": _site_config(tmp_path, "allow-plain-training = true\n"), "allow-plain-training": False}
    with pytest.raises(PlainTrainingRefused):
        _plain_training(node_config)


def test_the_refusal_names_the_key_not_the_hospitals_files(tmp_path):
    with pytest.raises(PlainTrainingRefused) as refused:
        _plain_training({"site-config": _site_config(tmp_path)})
    assert str(tmp_path) not in str(refused.value) and "/data/brats" not in str(refused.value)


def test_a_simulation_node_without_a_site_config_follows_the_run_config():
    assert _plain_training({"partition-id": 0, "num-partitions": 3}) == "trained"
