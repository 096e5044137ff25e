"""The Flower ClientApp: one SiteClient per SuperNode, configured by the run config."""

from __future__ import annotations

from flwr.app import Context
from flwr.client import Client
from flwr.clientapp import ClientApp

from client.site_client import SiteClient
from server.config import RunConfig
from server.logging_setup import route_to_flower_console


def client_fn(context: Context) -> Client:
    route_to_flower_console()
    return SiteClient(context.node_config, RunConfig.from_flower(context.run_config)).to_client()


app = ClientApp(client_fn=client_fn)
