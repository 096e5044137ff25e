"""Runs the secure-aggregation workflow against real ClientApps in this process, one round at a time.

The transport is the only stand-in: every message is serialised to Flower's protobuf
and back in both directions (so no object is shared between server and clients), every
reply the server receives is kept for inspection, bytes and client time are counted per
node (and client time per stage), and a
test may make chosen nodes stop answering at a chosen stage (as a timed-out hospital would).

Attack tests use two hooks: ``outgoing`` rewrites what the server sends (a deviating
server, or a SuperLink in its hands) and ``incoming`` rewrites what a hospital answers (a
malicious hospital); ``ask`` sends one hand-made request, as a deviating server would.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.app.error import Error
from flwr.app.message_type import MessageType
from flwr.clientapp import ClientApp
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.compat.common import recorddict_compat as compat
from flwr.server import LegacyContext, ServerConfig
from flwr.server.client_manager import SimpleClientManager
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.strategy import Strategy
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.serverapp.grid import Grid
from flwr.supercore.task_identity import TaskIdentity

Silence = Callable[[str, int, int], bool]
"""(stage, node id, round) -> whether that node stops answering from this stage on."""

Rewrite = Callable[[str, Message], Message]
"""(stage, message) -> the message that is delivered instead."""


def _unchanged(stage: str, message: Message) -> Message:
    return message


def stage_of(message: Message) -> str:
    """The SecAgg+ stage a message belongs to, or ``plain``."""
    configs = message.content.config_records if not message.has_error() else {}
    return str(configs[RECORD_KEY_CONFIGS].get(Key.STAGE, "plain")) if RECORD_KEY_CONFIGS in configs else "plain"


def _copy(message: Message) -> tuple[Message, int]:
    proto = message_to_proto(message)
    return message_from_proto(proto), proto.ByteSize()


@dataclass
class InProcessGrid(Grid):
    """Delivers each message to its node's ClientApp with that node's persistent Context."""

    apps: dict[int, ClientApp]
    run_config: dict
    silence: Silence = lambda stage, node_id, server_round: False
    node_configs: dict[int, dict] = field(default_factory=dict)
    outgoing: Rewrite = _unchanged
    incoming: Rewrite = _unchanged
    received: list[tuple[str, Message]] = field(default_factory=list)
    bytes_sent: dict[int, int] = field(default_factory=dict)
    bytes_received: dict[int, int] = field(default_factory=dict)
    contexts: dict[int, Context] = field(default_factory=dict)
    silenced: set[int] = field(default_factory=set)
    client_seconds: dict[int, float] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    _outbox: dict[str, Message] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # What a ServerApp process knows about itself when it creates messages.
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
        for node_id in self.apps:
            self.contexts[node_id] = Context(
                run_id=1, node_id=node_id, node_config={"partition-id": node_id - 1, **self.node_configs.get(node_id, {})},
                state=RecordDict(),
                run_config=dict(self.run_config),
            )
            self.bytes_sent[node_id] = self.bytes_received[node_id] = 0
            self.client_seconds[node_id] = 0.0

    # Grid's interface --------------------------------------------------------------
    def set_run(self, run) -> None:  # pragma: no cover - not used in process
        pass

    @property
    def run(self):
        class _Run:
            run_id = 1
        return _Run()

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None) -> Message:
        return Message(content=content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.apps)

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        """Deliver each message at once; its reply (if the node answers) waits to be pulled."""
        ids = []
        for message in messages:
            message_id = uuid.uuid4().hex
            message.metadata.__dict__["_message_id"] = message_id  # the SuperLink's job
            ids.append(message_id)
            if (reply := self._deliver(message)) is not None:
                self._outbox[message_id] = reply
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        """The replies to ``message_ids`` that are in, in the order they arrived."""
        wanted = set(message_ids)
        return [self._outbox.pop(message_id) for message_id in list(self._outbox) if message_id in wanted]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        return self.pull_messages(self.push_messages(messages))

    def ask(self, node_id: int, configs: dict, server_round: int, stage: str) -> Message:
        """Send one hand-made SecAgg+ request (``configs`` plus ``stage``) to a node; return its reply."""
        content = RecordDict({RECORD_KEY_CONFIGS: ConfigRecord({Key.STAGE: stage, **configs})})
        message = Message(content=content, dst_node_id=node_id, message_type=MessageType.TRAIN, group_id=str(server_round))
        return self.send_and_receive([message])[0]

    def _deliver(self, message: Message) -> Message | None:
        node_id = message.metadata.dst_node_id
        stage = stage_of(message)
        if node_id in self.silenced or self.silence(stage, node_id, int(message.metadata.group_id or 0)):
            self.silenced.add(node_id)
            return None  # no reply within the timeout
        delivered, size = _copy(self.outgoing(stage, message))
        self.bytes_sent[node_id] += size
        started = time.perf_counter()
        try:
            reply = self.apps[node_id](delivered, self.contexts[node_id])
        except Exception as error:  # the ClientApp runtime turns exceptions into error replies
            reply = Message(Error(code=0, reason=f"{type(error).__name__}: {error}"), reply_to=delivered)
        elapsed = time.perf_counter() - started
        self.client_seconds[node_id] += elapsed
        self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + elapsed
        received, size = _copy(self.incoming(stage, reply))
        self.bytes_received[node_id] += size
        self.received.append((stage, received))
        return received

    def resume(self) -> None:
        """Silenced nodes answer again (they come back for the next round)."""
        self.silenced.clear()


def legacy_context(grid: InProcessGrid, strategy: Strategy, initial: list[np.ndarray]) -> LegacyContext:
    """A ServerApp context holding ``initial`` as the global model, every node registered."""
    context = LegacyContext(
        Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=dict(grid.run_config)),
        config=ServerConfig(num_rounds=1),
        strategy=strategy,
        client_manager=SimpleClientManager(),
    )
    for node_id in grid.apps:
        context.client_manager.register(GridClientProxy(node_id=node_id, grid=grid, run_id=1))
    context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
        ndarrays_to_parameters(initial), keep_input=True
    )
    context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: 0})
    return context


def run_round(workflow, grid: InProcessGrid, context: LegacyContext, server_round: int) -> list[np.ndarray]:
    """Run one fit round; return the global model afterwards."""
    context.state.config_records[MAIN_CONFIGS_RECORD][WorkflowKey.CURRENT_ROUND] = server_round
    workflow(grid, context)
    return global_model(context)


def global_model(context: LegacyContext) -> list[np.ndarray]:
    return parameters_to_ndarrays(
        compat.arrayrecord_to_parameters(context.state.array_records[MAIN_PARAMS_RECORD], keep_input=True)
    )
