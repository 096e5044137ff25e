"""The Flower ClientApp: one SiteClient per SuperNode, configured by the run config."""

from __future__ import annotations

from flwr.app import Context
from flwr.client import Client
from flwr.clientapp import ClientApp

from client.failure_redaction import redact_failures_mod
from client.secure_update_mod import secure_update_mod
from client.site_client import SiteClient
from client.site_config import resolve_node_config
from segguided_federation.logging_setup import route_to_flower_console
from segguided_federation.run_config import RunConfig


def client_fn(context: Context) -> Client:
    route_to_flower_console()
    node_config = resolve_node_config(context.node_config)  # expands a hospital's site-config file
    return SiteClient(node_config, RunConfig.from_flower(context.run_config)).to_client()


MODS = (redact_failures_mod, secure_update_mod)
"""The ClientApp's mods, outermost first: failures leave only as their rule; training uploads are masked."""

app = ClientApp(client_fn=client_fn, mods=list(MODS))
