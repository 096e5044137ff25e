"""A client mod that counts this hospital's failed training requests in its own metrics file.

Outermost of the ClientApp's mods, it sees every training message of every stage: a
local round that fails, an update outside the secure-aggregation range, a refused plain
training request. Each failure adds one to the count the hospital's exporter serves
(``segguided_client_failures_total``); the reason goes to the ClientApp's log and to the
server's reply as before. Nodes without a ``metrics-file`` (a simulation) record nothing.
"""

from __future__ import annotations

from pathlib import Path

from flwr.app import Context, Message
from flwr.app.message_type import MessageType
from flwr.clientapp.typing import ClientAppCallable

from client.metrics_exporter import record_failure
from client.site_config import SiteConfigError, resolve_node_config


def _record(ctxt: Context) -> None:
    try:
        node_config = resolve_node_config(ctxt.node_config)
    except SiteConfigError:
        return  # the site config's own error is what the hospital needs to see, not this one
    if "metrics-file" in node_config:
        record_failure(Path(str(node_config["metrics-file"])), str(node_config.get("site-id", "")))


def training_failure_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Pass the message on; count it as failed if it raises or its reply carries an error."""
    if msg.metadata.message_type != MessageType.TRAIN:
        return call_next(msg, ctxt)
    try:
        reply = call_next(msg, ctxt)
    except Exception:
        _record(ctxt)
        raise
    if reply.has_error():
        _record(ctxt)
    return reply
