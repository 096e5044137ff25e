"""The ServerApp's Prometheus endpoint: real HTTP on 127.0.0.1, values of the rounds it was given."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from federation_harness import free_port
from prometheus_client.parser import text_string_to_metric_families

from segguided_federation.metrics_endpoint import MetricsPortError, serve_metrics
from server.history import RoundRecord
from server.metrics_exporter import ServerMetrics


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """``{(sample name, sorted labels): value}`` of one scrape."""
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _round(number: int, dice: float) -> RoundRecord:
    return RoundRecord(
        round=number,
        central={"dice-et": dice, "dice-tc": dice + 0.1, "dice-wt": dice + 0.2, "dice-mean": dice + 0.1,
                 "hd95-et": 12.5, "hd95-tc": 10.0, "hd95-wt": 8.0, "hd95-mean": 10.17},
        clients_selected=3, clients_succeeded=2, clients_failed=1, bytes_received=4096,
        timing={"round-seconds": 42.0, "aggregation-seconds": 0.25},
    )


@pytest.fixture
def served():
    metrics = ServerMetrics(run_id=1234, run_name="study-1")
    endpoint = serve_metrics(metrics.registry, "127.0.0.1", free_port(), "test")
    yield metrics, endpoint
    endpoint.close()


def test_initial_model_sets_only_the_central_metrics(served):
    metrics, endpoint = served
    metrics.record_round(_round(0, 0.1))
    values = scrape(endpoint.url)
    assert values[("segguided_server_central_dice", (("region", "et"),))] == pytest.approx(0.1)
    assert values[("segguided_server_rounds_completed", ())] == 0
    assert values[("segguided_server_run_info", (("run_id", "1234"), ("run_name", "study-1")))] == 1


def test_finished_rounds_are_published_with_their_values(served):
    metrics, endpoint = served
    metrics.record_round(_round(1, 0.3))
    metrics.record_round(_round(2, 0.5))
    values = scrape(endpoint.url)
    assert values[("segguided_server_rounds_completed", ())] == 2
    assert values[("segguided_server_round_duration_seconds", ())] == 42.0
    assert values[("segguided_server_clients_selected", ())] == 3
    assert values[("segguided_server_clients_succeeded", ())] == 2
    assert values[("segguided_server_clients_failed", ())] == 1
    assert values[("segguided_server_aggregation_seconds", ())] == 0.25
    assert values[("segguided_server_bytes_received", ())] == 4096
    assert values[("segguided_server_received_bytes_total", ())] == 8192
    assert values[("segguided_server_central_dice", (("region", "wt"),))] == pytest.approx(0.7)
    assert values[("segguided_server_central_hd95_mm", (("region", "et"),))] == 12.5


def test_a_resumed_round_publishes_its_values_but_counts_no_bytes_and_each_round_counts_once(served):
    metrics, endpoint = served
    metrics.record_round(_round(3, 0.3), received_here=False)  # the round the run resumes from
    assert scrape(endpoint.url)[("segguided_server_rounds_completed", ())] == 3
    metrics.record_round(_round(3, 0.4))  # its pending evaluation ended
    metrics.record_round(_round(4, 0.5))
    metrics.record_round(_round(4, 0.5))
    values = scrape(endpoint.url)
    assert values[("segguided_server_received_bytes_total", ())] == 4096
    assert values[("segguided_server_rounds_completed", ())] == 4


def test_two_exporters_in_one_process_do_not_share_values():
    first, second = ServerMetrics(1, "a"), ServerMetrics(2, "b")
    first.record_round(_round(1, 0.3))
    assert second.registry.get_sample_value("segguided_server_rounds_completed") == 0
    assert first.registry.get_sample_value("segguided_server_rounds_completed") == 1


def test_port_in_use_is_a_clear_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(MetricsPortError, match=f"run config metrics-port: port {port} .* already in use"):
            serve_metrics(ServerMetrics(1, "a").registry, "127.0.0.1", port, "run config metrics-port")


@pytest.mark.parametrize("port", [0, 70000])
def test_impossible_port_is_named(port):
    with pytest.raises(MetricsPortError, match=str(port)):
        serve_metrics(ServerMetrics(1, "a").registry, "127.0.0.1", port, "test")
