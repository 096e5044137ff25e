"""Prometheus metrics of one hospital, for the hospital's own eyes: alive, last round, its duration, failures.

A SuperNode starts a fresh ClientApp process for every message, so an HTTP endpoint
inside the ClientApp would exist only while it trains. Instead the ClientApp records its
last round (``record_round``) and every failed training request (``record_failure``) in a
small JSON file (``metrics-file``), and this exporter, a process that runs beside the
SuperNode, serves that file's values on every scrape:

    python -m client.metrics_exporter --site-config /etc/segguided/site.toml
    python -m client.metrics_exporter --metrics-file FILE --port 9401 [--host 127.0.0.1]

Exposed (all labelled ``site``): the last round trained and when, its duration, the
failed training requests and when the last one happened, and the peak device memory
(label ``device``: ``cuda``, or ``cpu`` for the process's peak RSS). Nothing derived from
the site's data: no case counts, losses or evaluation metrics. The exporter binds
``127.0.0.1`` by default and the coordinator does not scrape it: what a hospital's
monitoring shows stays at the hospital.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from client.site_config import SiteConfig, SiteConfigError
from segguided_federation.metrics_endpoint import MetricsPortError, serve_metrics
from segguided_model.atomic_write import write_text_atomically

log = logging.getLogger(__name__)

# metrics-file key -> (Prometheus name, help)
GAUGES = {
    "server-round": ("segguided_client_last_round", "The server round this site trained last"),
    "recorded-at": ("segguided_client_last_update_timestamp_seconds", "When the last round was recorded (Unix time)"),
    "round-seconds": ("segguided_client_round_duration_seconds", "Wall time of the last local training round"),
    "last-failure-at": ("segguided_client_last_failure_timestamp_seconds", "When a training request last failed (Unix time)"),
}
FAILURES = ("failures", "segguided_client_failures", "Training requests this site failed (refusals included)")


def _read_state(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def _write_state(path: Path, state: Mapping[str, object]) -> None:
    try:
        write_text_atomically(Path(path), json.dumps(state, indent=2))
    except OSError as error:  # monitoring must never fail a training round
        log.warning("cannot write metrics-file %s: %s", path, error)


def record_round(path: Path, server_round: int, metrics: Mapping[str, object]) -> None:
    """Record a finished local round for the exporter (atomically: a scrape never sees half a file).

    Of the round's fit metrics only the site id, the round's duration and the device's peak
    memory are kept; the failure count recorded so far is carried over.

    Args:
        path: the site's ``metrics-file``.
        server_round: the round just trained.
        metrics: the fit metrics the client reports (``segguided_federation.metric_keys``).
    """
    # Imported here: the metric keys module loads torch, which the exporter process does not need.
    from segguided_federation import metric_keys as keys

    if keys.DEVICE_MEMORY_PEAK_BYTES in metrics:
        device, memory = "cuda", float(metrics[keys.DEVICE_MEMORY_PEAK_BYTES])  # type: ignore[arg-type]
    else:
        # ru_maxrss is in KiB on Linux: the ClientApp process's peak resident memory.
        device, memory = "cpu", float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    previous = _read_state(path)
    _write_state(path, {
        **{key: previous[key] for key in ("failures", "last-failure-at") if key in previous},
        "site-id": str(metrics.get(keys.SITE_ID, previous.get("site-id", ""))),
        "server-round": server_round,
        "round-seconds": float(metrics.get(keys.CLIENT_SECONDS, 0.0)),  # type: ignore[arg-type]
        "device": device,
        "device-memory-peak-bytes": memory,
        "recorded-at": time.time(),
    })


def record_failure(path: Path, site_id: str) -> None:
    """Count one failed training request (any stage, refusals included) in the site's ``metrics-file``."""
    state = _read_state(path)
    state.update({
        "site-id": state.get("site-id") or site_id,
        "failures": int(state.get("failures", 0)) + 1,
        "last-failure-at": time.time(),
    })
    _write_state(path, state)


class ClientMetricsCollector(Collector):
    """Reads the metrics file at every scrape; exposes nothing until the first round is recorded."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        state = _read_state(self.path)
        if not state:
            return  # no round yet (or the file is unreadable): an empty scrape, not an error page
        site = str(state.get("site-id", ""))
        for key, (name, documentation) in GAUGES.items():
            if key in state:
                family = GaugeMetricFamily(name, documentation, labels=["site"])
                family.add_metric([site], float(state[key]))
                yield family
        key, name, documentation = FAILURES
        failures = CounterMetricFamily(name, documentation, labels=["site"])
        failures.add_metric([site], float(state.get(key, 0)))
        yield failures
        if "device-memory-peak-bytes" in state:
            family = GaugeMetricFamily(
                "segguided_client_device_memory_peak_bytes",
                "Peak device memory of the last round (cuda: allocated; cpu: process peak RSS)",
                labels=["site", "device"],
            )
            family.add_metric([site, str(state.get("device", ""))], float(state["device-memory-peak-bytes"]))
            yield family


def client_registry(path: Path) -> CollectorRegistry:
    """A registry of its own holding the collector for ``path``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ClientMetricsCollector(path))
    return registry


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m client.metrics_exporter", description=__doc__.split("\n")[0])
    parser.add_argument("--site-config", type=Path, help="the hospital's site config (metrics-file, -port, -host)")
    parser.add_argument("--metrics-file", type=Path, help="overrides the site config's metrics-file")
    parser.add_argument("--port", type=int, help="overrides the site config's metrics-port")
    parser.add_argument("--host", help="overrides the site config's metrics-host (default 127.0.0.1)")
    args = parser.parse_args(argv)
    try:
        site = SiteConfig.load(args.site_config) if args.site_config else None
    except SiteConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    metrics_file = args.metrics_file or (site.metrics_file if site else None)
    port = args.port if args.port is not None else (site.metrics_port if site else 0)
    host = args.host or (site.metrics_host if site else "127.0.0.1")
    source = f"site config {args.site_config}" if site else "command line"
    if metrics_file is None:
        print(f"error: {source}: no metrics-file given (--metrics-file or metrics-file in the site config)",
              file=sys.stderr)
        return 2
    try:
        endpoint = serve_metrics(client_registry(metrics_file), host, port, f"{source} metrics-port")
    except MetricsPortError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"serving {metrics_file} at {endpoint.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
