"""The hospital's metrics exporter: a real process serving what the ClientApp recorded last."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from federation_harness import PROJECT_ROOT, free_port
from prometheus_client.parser import text_string_to_metric_families

from client.metrics_exporter import client_registry, record_round

FIT_METRICS = {"site-id": "hospital-a", "loss": 0.75, "train-cases": 12, "steps-per-second": 1.5, "steps": 3}


def _scrape(url: str) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }


def _start_exporter(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "client.metrics_exporter", *args], cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )


def _wait_for(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"exporter exited {process.returncode}: {process.stderr.read()}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def test_recorded_round_is_exposed_with_site_and_device_labels(tmp_path):
    path = tmp_path / "client-metrics.json"
    registry = client_registry(path)
    assert list(registry.collect()) == []  # nothing before the first round
    record_round(path, 4, FIT_METRICS)
    assert registry.get_sample_value("segguided_client_loss", {"site": "hospital-a"}) == 0.75
    assert registry.get_sample_value("segguided_client_training_cases", {"site": "hospital-a"}) == 12
    assert registry.get_sample_value("segguided_client_steps_per_second", {"site": "hospital-a"}) == 1.5
    assert registry.get_sample_value("segguided_client_last_round", {"site": "hospital-a"}) == 4
    cpu_memory = registry.get_sample_value(
        "segguided_client_device_memory_peak_bytes", {"site": "hospital-a", "device": "cpu"}
    )
    assert cpu_memory > 1e6  # this process's peak RSS
    record_round(path, 5, {**FIT_METRICS, "device-memory-peak-bytes": 2**30})
    assert registry.get_sample_value(
        "segguided_client_device_memory_peak_bytes", {"site": "hospital-a", "device": "cuda"}
    ) == 2**30


@pytest.fixture
def exporter(tmp_path):
    port = free_port()
    config = tmp_path / "site.toml"
    config.write_text(
        f'site-id = "hospital-a"\ndata-path = "data"\nmetrics-file = "client-metrics.json"\nmetrics-port = {port}\n'
    )
    process = _start_exporter("--site-config", str(config))
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        _wait_for(url, process)
        yield tmp_path / "client-metrics.json", url, port
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def test_exporter_process_serves_each_new_round(exporter):
    path, url, _ = exporter
    assert not any(name.startswith("segguided_client") for name, _ in _scrape(url))
    record_round(path, 1, FIT_METRICS)
    assert _scrape(url)[("segguided_client_last_round", (("site", "hospital-a"),))] == 1
    record_round(path, 2, {**FIT_METRICS, "loss": 0.5})
    values = _scrape(url)
    assert values[("segguided_client_last_round", (("site", "hospital-a"),))] == 2
    assert values[("segguided_client_loss", (("site", "hospital-a"),))] == 0.5


def test_second_exporter_on_the_same_port_fails_clearly(exporter, tmp_path):
    _, _, port = exporter
    second = _start_exporter("--metrics-file", str(tmp_path / "other.json"), "--port", str(port))
    _, stderr = second.communicate(timeout=60)
    assert second.returncode == 2
    assert f"port {port} on 127.0.0.1 is already in use" in stderr


def test_exporter_without_a_metrics_file_says_so(tmp_path):
    process = _start_exporter("--port", str(free_port()))
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2 and "no metrics-file" in stderr


def test_an_unwritable_metrics_file_does_not_fail_the_round(tmp_path, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    record_round(blocker / "client-metrics.json", 1, FIT_METRICS)
    assert "cannot write metrics-file" in caplog.text
