"""The HTTP ``/metrics`` endpoint both apps' Prometheus exporters serve from.

``serve_metrics`` binds the endpoint in a daemon thread of the calling process (the
ServerApp, or the hospital's exporter beside its SuperNode) and turns a port that is
already taken into a ``MetricsPortError`` naming the port and its owner. Each exporter
passes its own ``CollectorRegistry``, so nothing leaks into the default registry that
other libraries use.
"""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server

log = logging.getLogger(__name__)


class MetricsPortError(OSError):
    """The metrics endpoint cannot bind its port; the message names the port and who wanted it."""


@dataclass
class MetricsEndpoint:
    """A running ``/metrics`` HTTP server."""

    server: WSGIServer
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve_metrics(registry: CollectorRegistry, host: str, port: int, owner: str) -> MetricsEndpoint:
    """Serve ``registry`` at ``http://host:port/metrics`` from a daemon thread.

    Args:
        registry: what to expose.
        host: address to bind (``127.0.0.1`` for local scraping, ``0.0.0.0`` in a container).
        port: TCP port, 1-65535.
        owner: who serves, for the error message (e.g. ``run config metrics-port``).

    Raises:
        MetricsPortError: the port is in use or cannot be bound.
    """
    if not 0 < port < 65536:
        raise MetricsPortError(f"{owner}: expected a TCP port between 1 and 65535, got {port}")
    try:
        server, _ = start_http_server(port, addr=host, registry=registry)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise MetricsPortError(
                f"{owner}: port {port} on {host} is already in use; stop the other process or choose "
                f"another port"
            ) from None
        raise MetricsPortError(f"{owner}: cannot serve metrics on {host}:{port}: {error}") from None
    log.info("Prometheus metrics at http://%s:%d/metrics", host, port)
    return MetricsEndpoint(server, host, port)
