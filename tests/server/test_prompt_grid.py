"""While a stage waits for sites, the server says which round and stage it is and how many replied."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.supercore.task_identity import TaskIdentity

import server.prompt_grid as prompt_grid
from server.prompt_grid import PromptGrid, describe_stage


@dataclass
class SlowSites:
    """A grid whose sites reply one after another, ``delay`` seconds apart."""

    delay: float
    pushed: dict[str, Message] = field(default_factory=dict)
    started: float = 0.0

    def push_messages(self, messages):
        self.started = time.monotonic()
        ids = []
        for index, message in enumerate(messages):
            message.metadata.__dict__["_message_id"] = f"m{index}"
            self.pushed[f"m{index}"] = message
            ids.append(f"m{index}")
        return ids

    def pull_messages(self, ids):
        due = int((time.monotonic() - self.started) / self.delay)
        ready = [i for i in sorted(ids) if int(i[1:]) < due]
        return [Message(RecordDict(), reply_to=self.pushed[i]) for i in ready]

    def get_node_ids(self):
        return [1, 2, 3]


def _messages(message_type=MessageType.TRAIN, group="2", stage=None):
    # What a ServerApp process knows about itself when it creates messages.
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    content = RecordDict({RECORD_KEY_CONFIGS: ConfigRecord({Key.STAGE: stage})}) if stage else RecordDict()
    return [Message(content, dst_node_id=node, message_type=message_type, group_id=group) for node in (1, 2, 3)]


def test_a_waiting_stage_reports_its_round_stage_and_replies(monkeypatch, caplog):
    monkeypatch.setattr(prompt_grid, "REPORT_SECONDS", 0.2)
    caplog.set_level(logging.INFO, logger="server.prompt_grid")
    grid = PromptGrid(SlowSites(delay=0.25), round_offset=3)
    replies = grid.send_and_receive(_messages())
    assert len(replies) == 3
    lines = [r.getMessage() for r in caplog.records if "replied" in r.getMessage()]
    assert lines and all(line.startswith("round 5, training: ") for line in lines)
    assert any("1 of 3 site(s) replied" in line and "waiting for 2" in line for line in lines)


def test_a_quick_stage_logs_nothing(caplog):
    caplog.set_level(logging.INFO, logger="server.prompt_grid")
    assert len(PromptGrid(SlowSites(delay=0.001)).send_and_receive(_messages())) == 3
    assert "replied" not in caplog.text


def test_stages_are_named_as_an_operator_reads_them():
    assert describe_stage(_messages(MessageType.EVALUATE, "4")) == "round 4, federated evaluation"
    assert describe_stage(_messages(stage="unmask"), round_offset=2) == "round 4, secure aggregation stage unmask"


def test_wrapping_twice_keeps_one_wrapper_and_its_offset():
    inner = PromptGrid(SlowSites(delay=0.01), round_offset=7)
    outer = PromptGrid(inner)
    assert outer.unwrapped is inner.unwrapped and outer.round_offset == 7
    assert outer.get_node_ids() == [1, 2, 3]


def test_a_stage_with_a_deadline_returns_the_replies_in_by_then():
    """A site that never answers cannot hold the round past its deadline (run config reply-timeout)."""
    replies = PromptGrid(SlowSites(delay=1.0)).send_and_receive(_messages(), timeout=1.5)
    assert [reply.metadata.reply_to_message_id for reply in replies] == ["m0"]
