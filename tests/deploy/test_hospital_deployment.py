"""A real hospital deployment on 127.0.0.1, run from the runbook's own commands.

A ``flower-superlink`` with TLS and SuperNode authentication, three ``flower-supernode``
processes (one per synthetic hospital, each with its own site config, Flower home and
metrics exporter) and the real app for two rounds with its default aggregation (SecAgg+
once ``secure-aggregation`` defaults to true). Every command comes from ``deploy/README.md``
(``runbook.read_runbook``) and runs through ``bash -c`` with this test's variables.

While the run goes on the test scrapes the ServerApp's metrics, kills hospital-c's SuperNode
in round 2, and starts two SuperNodes that must be refused: one whose key was never
registered, one that does not trust the federation's CA.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
from federation_harness import PROJECT_ROOT, free_port, tiny_run_config
from prometheus_client.parser import text_string_to_metric_families
from runbook import STEPS_RUN_BY_THE_DEPLOYMENT_TEST, read_runbook

from segguided_federation.run_config import RunConfig
from segguided_federation.site_data import load_site
from segguided_model.checkpoint import load_checkpoint
from segguided_tools.credentials import write_credentials

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

HOSPITALS = ("hospital-a", "hospital-b", "hospital-c")
KILLED = "hospital-c"
CASES_PER_SITE = 4
STEP_TIMEOUT = 120


def _wait_until(condition: Callable[[], object], timeout: float, what: str, poll: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _scrape(port: int) -> dict[tuple[str, tuple], float] | None:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }


@dataclass
class Deployment:
    """The processes and folders of one test deployment; ``close`` ends every process it started."""

    root: Path
    steps: dict[str, str] = field(default_factory=lambda: read_runbook().steps)
    steps_run: set[str] = field(default_factory=set)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def log(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def _command(self, step: str) -> list[str]:
        self.steps_run.add(step)
        return ["bash", "-c", self.steps[step]]

    def run(self, step: str, env: dict[str, str], timeout: float = STEP_TIMEOUT, check: bool = True) -> str:
        """Run a runbook step to completion; return its stdout."""
        done = subprocess.run(
            self._command(step), env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout
        )
        if check and done.returncode != 0:
            raise AssertionError(f"step {step} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done.stdout

    def start(self, name: str, env: dict[str, str], step: str | None = None, command: list[str] | None = None):
        """Start a long-running step (or command) in its own process group, logging to logs/NAME.log."""
        log = open(self.log(name), "w")
        process = subprocess.Popen(
            command or self._command(step), env=env, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes[name] = process
        return process

    def kill(self, name: str) -> None:
        process = self.processes[name]
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=30)

    def close(self) -> None:
        for process in self.processes.values():
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        time.sleep(2)
        for name in list(self.processes):
            self.kill(name)
        # Flower's helpers (SuperExec, ServerApp, ClientApps) may leave the process group;
        # every one of them carries this deployment's folder in its FLWR_HOME.
        marker = str(self.root).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if marker in (entry / "environ").read_bytes():
                    os.kill(int(entry.name), signal.SIGKILL)
            except (OSError, ProcessLookupError):
                continue


def _online_nodes(deployment: Deployment, env: dict[str, str]) -> dict[str, str]:
    output = deployment.run("nodes", env, check=False)
    try:
        nodes = json.loads(output[output.index("{"):])["nodes"]
    except ValueError:
        return {}
    return {node["node-id"]: node["status"] for node in nodes}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    root = tmp_path_factory.mktemp("deployment")
    (root / "logs").mkdir()
    book = Deployment(root)
    try:
        yield from _deploy_and_run(book)
    finally:
        book.close()


def _deploy_and_run(book: Deployment):
    root = book.root
    observed: dict[str, object] = {"deployment": book}
    subprocess.run(
        ["segguided", "synth", str(root / "data"), "--sites", "3", "--cases", str(CASES_PER_SITE), "--val-cases", "2",
         "--size", "32", "32", "32", "--seed", "0"],
        check=True, capture_output=True, timeout=300,
    )
    site_dirs = sorted(p for p in (root / "data").iterdir() if p.is_dir() and p.name != "validation")
    superlink_port, server_metrics_port = free_port(), free_port()
    coordinator = {
        **os.environ,
        "CREDS": str(root / "credentials"),
        "STATE_DIR": str(root / "state"),
        "FLWR_HOME": str(root / "coordinator" / "flwr-home"),
        "SUPERLINK_HOST": "localhost",
        "SUPERLINK_IP": "127.0.0.1",
        "SUPERLINK_BIND": "127.0.0.1",
        "SUPERLINK_PORT": str(superlink_port),
        "SUPERLINK_ADDRESS": f"127.0.0.1:{superlink_port}",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "RUN_CONFIG": tiny_run_config(
            root / "runs",
            # Federated evaluation off and one local step: the 2-core budget goes to the deployment.
            **{"run-name": "study-1", "server-validation-dir": str(root / "data" / "validation"),
               "metrics-port": server_metrics_port, "fraction-evaluate": 0.0, "local-steps": 1},
        ),
        "OUTPUT_DIR": str(root / "runs"),
        "RUN_NAME": "study-1",
        "SERVER_METRICS_PORT": str(server_metrics_port),
        "CASE_DIR": str(next(p for p in sorted((root / "data" / "validation").iterdir()) if p.is_dir())),
        "PREDICTIONS": str(root / "predictions"),
        "SEGGUIDED_CACHE": str(root / "cache"),
        "RAY_DEDUP_LOGS": "0",
    }
    observed["coordinator"] = coordinator
    creds = Path(coordinator["CREDS"])

    # Coordinator: credentials (plus keys for the two SuperNodes that must be refused).
    book.run("certs", coordinator)
    write_credentials(creds, ["localhost", "127.0.0.1"], ["intruder", "hospital-d"])
    book.run("connection", coordinator)
    book.start("superlink", coordinator, step="superlink")
    _wait_until(lambda: book.run("nodes", coordinator, check=False).find('"success": true') >= 0,
                120, "the SuperLink to answer the flwr CLI over TLS")
    registered = book.run("register", coordinator)
    node_ids = dict(zip(HOSPITALS, re.findall(r"SuperNode (\d+) registered", registered)))
    assert len(node_ids) == 3, registered
    hospital_d = subprocess.run(
        ["flwr", "supernode", "register", str(creds / "supernodes" / "hospital-d.pub"), "--format", "json"],
        env=coordinator, capture_output=True, text=True, timeout=STEP_TIMEOUT,
    )
    observed["hospital-d-node-id"] = str(json.loads(hospital_d.stdout[hospital_d.stdout.index("{"):])["node-id"])
    observed["node-ids"] = node_ids

    # Hospitals: QA gate, site config, SuperNode, metrics exporter.
    hospitals: dict[str, dict[str, str]] = {}
    for hospital, site_dir in zip(HOSPITALS, site_dirs):
        home = root / hospital
        home.mkdir()
        metrics_port = free_port()
        (home / "site.toml").write_text(
            f'site-id = "{hospital}"\ndata-path = "{site_dir}"\ncache-dir = "cache"\n'
            f'metrics-file = "state/client-metrics.json"\nmetrics-port = {metrics_port}\nmetrics-host = "127.0.0.1"\n'
        )
        (home / "ca.crt").write_bytes((creds / "ca.crt").read_bytes())
        hospitals[hospital] = env = {
            **os.environ,
            "DATA_PATH": str(site_dir),
            "SITE_CONFIG": str(home / "site.toml"),
            "CA_CERT": str(home / "ca.crt"),
            "SUPERNODE_KEY": str(creds / "supernodes" / f"{hospital}.key"),
            "SUPERLINK_ADDRESS": f"127.0.0.1:{superlink_port}",
            "FLWR_HOME": str(home / "flwr-home"),
            "RUNTIME_PORT": str(free_port()),
            "GPU": "",
            "CLIENT_METRICS_PORT": str(metrics_port),
            "SEGGUIDED_CACHE": str(root / "cache"),
        }
    # QA gate at every hospital at once, then each hospital's SuperNode and exporter.
    checks = {hospital: book.start(f"{hospital}-qa", env, step="qa") for hospital, env in hospitals.items()}
    for hospital, check in checks.items():
        assert check.wait(timeout=STEP_TIMEOUT) == 0, book.log(f"{hospital}-qa").read_text()
    for hospital, env in hospitals.items():
        book.start(f"{hospital}-supernode", env, step="supernode")
        book.start(f"{hospital}-metrics", env, step="client-metrics")
    observed["hospitals"] = hospitals

    # Two SuperNodes that must be refused: an unregistered key, and no CA certificate.
    intruder = {**hospitals["hospital-a"], "SUPERNODE_KEY": str(creds / "supernodes" / "intruder.key"),
                "RUNTIME_PORT": str(free_port()), "FLWR_HOME": str(root / "intruder")}
    book.start("unregistered-supernode", intruder, step="supernode")
    without_ca = {**hospitals["hospital-a"], "SUPERNODE_KEY": str(creds / "supernodes" / "hospital-d.key"),
                  "RUNTIME_PORT": str(free_port()), "FLWR_HOME": str(root / "without-ca")}
    step = book.steps["supernode"].replace('--root-certificates "$CA_CERT" \\\n', "")
    assert "--root-certificates" not in step
    book.start("supernode-without-ca", without_ca, command=["bash", "-c", step])

    _wait_until(
        lambda: all(_online_nodes(book, coordinator).get(n) == "online" for n in node_ids.values()),
        180, "the three hospitals' SuperNodes to come online", poll=3,
    )

    # Submit, follow, and kill hospital-c's SuperNode once it has received round 2's first message.
    started = time.monotonic()
    submit = book.start("submit", coordinator, step="submit")
    killed_at_round, last_server_scrape, server_step_output = None, None, ""
    deadline = time.monotonic() + 600
    while submit.poll() is None and time.monotonic() < deadline:
        scrape = _scrape(server_metrics_port)
        if scrape:
            last_server_scrape = scrape
            if scrape.get(("segguided_server_rounds_completed", ()), 0) >= 1 and not server_step_output:
                server_step_output = book.run("server-metrics", coordinator, check=False)
        if killed_at_round is None and "ROUND 2]" in book.log(f"{KILLED}-supernode").read_text():
            book.kill(f"{KILLED}-supernode")
            killed_at_round = 2
            after_kill = _scrape(server_metrics_port) or {}
            observed["rounds-completed-at-kill"] = after_kill.get(("segguided_server_rounds_completed", ()))
        time.sleep(0.5)
    if submit.poll() is None:
        raise AssertionError(f"the run did not finish in time; see {book.log('submit')}")
    observed["seconds"] = time.monotonic() - started
    observed["submit-rc"] = submit.returncode
    observed["submit-log"] = book.log("submit").read_text()
    observed["killed-at-round"] = killed_at_round
    observed["server-scrape"] = last_server_scrape
    observed["server-step-output"] = server_step_output
    run_id = re.search(r"run (\d+) started", observed["submit-log"])
    assert run_id, observed["submit-log"]
    coordinator["RUN_ID"] = run_id.group(1)

    observed["follow-output"] = book.run("follow", coordinator)
    observed["collect-output"] = book.run("collect", coordinator)
    observed["client-step-output"] = {
        hospital: book.run("read-client-metrics", env, check=False) for hospital, env in hospitals.items()
    }
    observed["client-scrapes"] = {hospital: _scrape(int(env["CLIENT_METRICS_PORT"])) for hospital, env in hospitals.items()}
    observed["online-after-run"] = _online_nodes(book, coordinator)
    observed["refused-exit-codes"] = {
        name: book.processes[name].poll() for name in ("unregistered-supernode", "supernode-without-ca")
    }
    yield observed


def _rounds(deployment) -> list[dict]:
    run = Path(deployment["coordinator"]["OUTPUT_DIR"]) / "study-1"
    return json.loads((run / "metrics.json").read_text())["rounds"]


def test_run_completed_and_wrote_its_checkpoints(deployment):
    assert deployment["submit-rc"] == 0, deployment["submit-log"]
    assert "finished:completed" in deployment["submit-log"]
    run = Path(deployment["coordinator"]["OUTPUT_DIR"]) / "study-1"
    for name in ("round-0001.pt", "round-0002.pt", "best.pt", "final.pt"):
        assert load_checkpoint(run / name).config.base_width == 4
    assert [r["round"] for r in _rounds(deployment)] == [0, 1, 2]
    follow = deployment["follow-output"]
    status, _ = json.JSONDecoder().raw_decode(follow[follow.index("{"):])  # `flwr list`, then `flwr log`
    assert any(r["status"] == "finished:completed" for r in status["runs"])
    predictions = Path(deployment["coordinator"]["PREDICTIONS"])
    assert list(predictions.glob("*-seg.nii.gz")), deployment["collect-output"]


def test_round_one_used_every_hospital_by_its_site_config(deployment):
    first = _rounds(deployment)[1]
    assert first["clients-selected"] == 3 and first["clients-succeeded"] == 3 and first["clients-failed"] == 0
    assert first["bytes-received"] > 0
    if first["site-training"]:  # plain aggregation; secure aggregation reveals no per-site figures
        assert sorted(first["site-training"]) == list(HOSPITALS)


def test_a_supernode_killed_during_a_round_does_not_end_the_federation(deployment):
    assert deployment["killed-at-round"] == 2, "hospital-c never received round 2's instructions"
    assert deployment["rounds-completed-at-kill"] == 1
    second = _rounds(deployment)[2]
    assert second["aggregated"] is True
    assert second["clients-succeeded"] == 2
    assert KILLED not in second["site-training"]
    assert any("Node Unavailable" in reason for reason in second["failures"]) or second["clients-selected"] == 2
    node_ids = deployment["node-ids"]
    assert deployment["online-after-run"].get(node_ids[KILLED]) != "online"


def test_server_metrics_answered_with_the_values_of_the_run(deployment):
    scrape = deployment["server-scrape"]
    assert scrape is not None, "the ServerApp's metrics endpoint never answered"
    completed = int(scrape[("segguided_server_rounds_completed", ())])
    assert completed >= 1
    record = _rounds(deployment)[completed]
    assert scrape[("segguided_server_clients_selected", ())] == record["clients-selected"]
    assert scrape[("segguided_server_clients_succeeded", ())] == record["clients-succeeded"]
    assert scrape[("segguided_server_clients_failed", ())] == record["clients-failed"]
    assert scrape[("segguided_server_bytes_received", ())] == record["bytes-received"]
    assert scrape[("segguided_server_round_duration_seconds", ())] == pytest.approx(record["timing"]["round-seconds"])
    for region in ("et", "tc", "wt", "mean"):
        assert scrape[("segguided_server_central_dice", (("region", region),))] == pytest.approx(
            record["central"][f"dice-{region}"]
        )
    run_info = [key for key in scrape if key[0] == "segguided_server_run_info"]
    assert dict(run_info[0][1])["run_name"] == "study-1"
    assert "segguided_server_rounds_completed" in deployment["server-step-output"]


def test_client_metrics_answered_with_each_hospitals_last_round(deployment):
    rounds = _rounds(deployment)
    run = Path(deployment["coordinator"]["OUTPUT_DIR"]) / "study-1"
    run_config = RunConfig.from_flower(json.loads((run / "config.json").read_text()))
    for hospital in HOSPITALS:
        scrape = deployment["client-scrapes"][hospital]
        assert scrape is not None, f"{hospital}'s exporter did not answer"
        site = (("site", hospital),)
        last = int(scrape[("segguided_client_last_round", site)])
        assert last == (1 if hospital == KILLED else 2)
        expected = load_site({"data-path": deployment["hospitals"][hospital]["DATA_PATH"]}, run_config)
        assert scrape[("segguided_client_training_cases", site)] == len(expected.training_cases)
        assert scrape[("segguided_client_loss", site)] > 0 and scrape[("segguided_client_steps_per_second", site)] > 0
        trained = rounds[last]["site-training"].get(hospital)
        if trained:  # plain aggregation: the server saw the same figures
            assert scrape[("segguided_client_loss", site)] == pytest.approx(trained["loss"])
            assert scrape[("segguided_client_steps_per_second", site)] == pytest.approx(trained["steps-per-second"])
        assert scrape[("segguided_client_device_memory_peak_bytes", (("device", "cpu"), ("site", hospital)))] > 0
        assert f'segguided_client_last_round{{site="{hospital}"}}' in deployment["client-step-output"][hospital]


def test_an_unregistered_supernode_is_refused(deployment):
    book: Deployment = deployment["deployment"]
    online = deployment["online-after-run"]
    assert set(online) == set(deployment["node-ids"].values()) | {deployment["hospital-d-node-id"]}
    for record in _rounds(deployment)[1:]:
        assert "intruder" not in json.dumps(record)
    log = book.log("unregistered-supernode").read_text()
    assert "Failed to activate SuperNode" in log and "Exit Code: 305" in log, log[-2000:]
    assert deployment["refused-exit-codes"]["unregistered-supernode"] not in (None, 0)


def test_a_supernode_without_the_ca_certificate_is_refused(deployment):
    book: Deployment = deployment["deployment"]
    assert deployment["online-after-run"].get(deployment["hospital-d-node-id"]) != "online"
    log = book.log("supernode-without-ca").read_text()
    assert "CERTIFICATE_VERIFY_FAILED" in log and "Exit Code: 305" in log, log[-2000:]
    assert deployment["refused-exit-codes"]["supernode-without-ca"] not in (None, 0)


def test_the_test_ran_every_runbook_step(deployment):
    assert deployment["deployment"].steps_run == STEPS_RUN_BY_THE_DEPLOYMENT_TEST
