"""A real hospital deployment on 127.0.0.1, run from the runbook's own commands.

The coordinator: ``flower-superlink`` on 127.0.0.1 with TLS, SuperNode authentication and
a SuperExec secret, its ServerApp launcher, nginx as the Fleet proxy on the public port,
and Debian's Prometheus. Three hospitals, each with its own key (made in its own folder),
site config, ``flower-supernode`` through the proxy, approved-app launcher and metrics
exporter. The real app runs two rounds with SecAgg+ from a copy of the release the
hospitals reviewed. Every command comes from ``deploy/README.md`` (``runbook.read_runbook``)
and runs through ``bash -c`` with this test's variables.

Around that run the test tries what must fail: an outsider holding ``ca.crt`` calls the
Control API through the public port; a launcher without the secret asks for a task; a
SuperNode with an unregistered key, one without the CA certificate; a run of a bundle no
hospital approved and a run without secure aggregation. It kills hospital-c's SuperNode
after it received round 2's first message, and finally searches every file the deployment
wrote for a hospital's private key.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import yaml
from cryptography.hazmat.primitives.serialization import load_ssh_private_key
from federation_harness import PROJECT_ROOT, free_port, tiny_run_config
from prometheus_client.parser import text_string_to_metric_families
from release_checkout import copy_release
from runbook import STEPS_RUN_BY_THE_DEPLOYMENT_TEST, read_runbook
from system_tools import require_commands

from client.app_approval import project_app_digest
from segguided_model.checkpoint import load_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

HOSPITALS = ("hospital-a", "hospital-b", "hospital-c")
KILLED = "hospital-c"
CASES_PER_SITE = 4
STEP_TIMEOUT = 120
TOOLS = {"nginx": "nginx-light", "envsubst": "gettext-base", "prometheus": "prometheus", "curl": "curl"}


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


def _json_after(text: str, start: str = "{") -> dict:
    return json.JSONDecoder().raw_decode(text[text.index(start):])[0]


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

    def command(self, argv: list[str], env: dict[str, str], timeout: float = STEP_TIMEOUT) -> subprocess.CompletedProcess:
        """Run a command that is not a runbook step (what an outsider or an attacker would try)."""
        return subprocess.run(argv, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout)

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
        # Flower's helpers (ServerApps, ClientApps) may leave the process group; every one
        # of them carries this deployment's folder in its FLWR_HOME.
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
        nodes = _json_after(output)["nodes"]
    except (ValueError, KeyError):
        return {}
    return {node["node-id"]: node["status"] for node in nodes}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    require_commands(TOOLS)
    root = tmp_path_factory.mktemp("deployment")
    (root / "logs").mkdir()
    book = Deployment(root)
    try:
        yield from _deploy_and_run(book)
    finally:
        book.close()


def _prometheus_config(root: Path, server_metrics_port: int) -> Path:
    """deploy/prometheus.yml with this test's ServerApp port and a 1 s interval (the run is short)."""
    config = yaml.safe_load((PROJECT_ROOT / "deploy" / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    for job in config["scrape_configs"]:
        for group in job["static_configs"]:
            group["targets"] = [re.sub(r":9400$", f":{server_metrics_port}", t) for t in group["targets"]]
    path = root / "coordinator" / "prometheus.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


def _runtime_api_answers_without_the_secret(port: int, insecure: bool, ca_file: Path | None) -> str:
    """What an ``AcquireTask`` without the SuperExec signature gets from a runtime API: the HTTP error."""
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.runtime import RuntimeHttpClient

    client = RuntimeHttpClient.from_server_address(
        f"127.0.0.1:{port}", insecure=insecure, root_certificates=None if insecure else ca_file.read_bytes(),
        interceptors=[],
    )
    try:
        response = client.AcquireTask(AcquireTaskRequest(supported_task_types=["serverapp", "clientapp"]))
        return f"accepted: task={response.task.task_id} token={'yes' if response.token else 'no'}"
    except Exception as error:  # noqa: BLE001 - the refusal is what we record
        return str(error).splitlines()[0]
    finally:
        client.close()


def _deploy_and_run(book: Deployment):
    root = book.root
    observed: dict[str, object] = {"deployment": book}
    subprocess.run(
        ["segguided", "synth", str(root / "data"), "--sites", "3", "--cases", str(CASES_PER_SITE), "--val-cases", "2",
         "--size", "32", "32", "32", "--seed", "0"],
        check=True, capture_output=True, timeout=300,
    )
    site_dirs = sorted(p for p in (root / "data").iterdir() if p.is_dir() and p.name != "validation")
    # The release: the coordinator submits its checkout, the hospitals review theirs.
    coordinator_release = copy_release(root / "coordinator" / "release")
    hospital_release = copy_release(root / "hospital-release")
    public_port, control_port, server_metrics_port, prometheus_port = free_port(), free_port(), free_port(), free_port()
    coordinator = {
        **os.environ,
        "CREDS": str(root / "coordinator" / "credentials"),
        "STATE_DIR": str(root / "coordinator" / "state"),
        "FLWR_HOME": str(root / "coordinator" / "flwr-home"),
        "PROXY_DIR": str(root / "coordinator" / "fleet-proxy"),
        "RECEIVED_KEYS": str(root / "coordinator" / "hospital-keys"),
        "RELEASE_DIR": str(coordinator_release),
        "SUPERLINK_HOST": "localhost",
        "SUPERLINK_IP": "127.0.0.1",
        "PUBLIC_BIND": "127.0.0.1",
        "PUBLIC_PORT": str(public_port),
        "CONTROL_PORT": str(control_port),
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
        "PROMETHEUS_CONFIG": str(_prometheus_config(root, server_metrics_port)),
        "PROMETHEUS_DIR": str(root / "coordinator" / "prometheus"),
        "PROMETHEUS_PORT": str(prometheus_port),
        "CASE_DIR": str(next(p for p in sorted((root / "data" / "validation").iterdir()) if p.is_dir())),
        "PREDICTIONS": str(root / "predictions"),
        "SEGGUIDED_CACHE": str(root / "cache"),
        "RAY_DEDUP_LOGS": "0",
    }
    observed["coordinator"] = coordinator
    creds = Path(coordinator["CREDS"])

    # Coordinator: credentials, the SuperLink on loopback, its launcher, the proxy, Prometheus.
    book.run("certs", coordinator)
    book.run("connection", coordinator)
    book.start("superlink", coordinator, step="superlink")
    book.start("serverapp-launcher", coordinator, step="serverapp-launcher")
    book.start("fleet-proxy", coordinator, step="fleet-proxy")
    book.start("prometheus", coordinator, step="prometheus")
    _wait_until(lambda: book.run("nodes", coordinator, check=False).find('"success": true') >= 0,
                120, "the SuperLink to answer the flwr CLI on its loopback port")
    _wait_until(lambda: (Path(coordinator["PROXY_DIR"]) / "nginx.pid").exists(), 60, "nginx to start")
    observed["public-port"] = dict(
        line.split() for line in book.run("check-public-port", coordinator).splitlines() if line.strip()
    )
    observed["runtime-api-without-secret"] = _runtime_api_answers_without_the_secret(
        control_port, insecure=False, ca_file=creds / "ca.crt"
    )

    # Hospitals (and two that must be refused) make their own keys, in their own folders.
    hospitals: dict[str, dict[str, str]] = {}
    for name, site_dir in zip((*HOSPITALS, "intruder", "hospital-d"), [*site_dirs, site_dirs[0], site_dirs[0]]):
        home = root / name
        home.mkdir()
        (home / "ca.crt").write_bytes((creds / "ca.crt").read_bytes())  # the one file the coordinator sends
        hospitals[name] = {
            **os.environ,
            "HOSPITAL": name,
            "KEY_DIR": str(home / "keys"),
            "DATA_PATH": str(site_dir),
            "SITE_CONFIG": str(home / "site.toml"),
            "CA_CERT": str(home / "ca.crt"),
            "RELEASE_DIR": str(hospital_release),
            "SUPERLINK_ADDRESS": f"127.0.0.1:{public_port}",
            "FLWR_HOME": str(home / "flwr-home"),
            "RUNTIME_PORT": str(free_port()),
            "GPU": "",
            "CLIENT_METRICS_PORT": str(free_port()),
            "SEGGUIDED_CACHE": str(root / "cache"),
        }
    printed_fingerprints = {}
    for name, env in hospitals.items():
        printed = book.run("supernode-key", env)
        printed_fingerprints[name] = re.search(r"fingerprint: (SHA256:\S+)", printed).group(1)
        if name != "intruder":  # the intruder's key never reaches the coordinator
            received = Path(coordinator["RECEIVED_KEYS"])
            received.mkdir(parents=True, exist_ok=True)
            shutil.copy(Path(env["KEY_DIR"]) / "supernode.pub", received / f"{name}.pub")
    observed["printed-fingerprints"] = printed_fingerprints

    # QA gate and release review at every hospital at once.
    checks = {name: book.start(f"{name}-qa", hospitals[name], step="qa") for name in HOSPITALS}
    reviews = {name: book.start(f"{name}-approve", hospitals[name], step="approve") for name in HOSPITALS}
    for name in HOSPITALS:
        assert checks[name].wait(timeout=STEP_TIMEOUT) == 0, book.log(f"{name}-qa").read_text()
        assert reviews[name].wait(timeout=STEP_TIMEOUT) == 0, book.log(f"{name}-approve").read_text()
    digests = {name: book.log(f"{name}-approve").read_text().split()[-1] for name in HOSPITALS}
    observed["approved-digests"] = digests
    # The roster: the public keys the coordinator registers, installed at every hospital.
    roster = root / "roster.pub"
    roster.write_text("".join(path.read_text() for path in sorted(Path(coordinator["RECEIVED_KEYS"]).glob("*.pub"))))
    for name, env in hospitals.items():
        metrics_port = env["CLIENT_METRICS_PORT"]
        Path(env["SITE_CONFIG"]).write_text(
            f'site-id = "{name}"\ndata-path = "{env["DATA_PATH"]}"\ncache-dir = "cache"\n'
            f'metrics-file = "state/client-metrics.json"\nmetrics-port = {metrics_port}\nmetrics-host = "127.0.0.1"\n'
            f'allow-plain-training = false\nshare-evaluation-metrics = false\n'
            f'approved-app-digests = ["{digests.get(name, digests["hospital-a"])}"]\n'
            f'secure-aggregation-identity-key = "{env["KEY_DIR"]}/supernode.key"\n'
            f'secure-aggregation-roster = "{roster}"\n'
        )

    registered = book.run("register", coordinator)
    observed["register-output"] = registered
    node_ids = dict(zip(sorted([*HOSPITALS, "hospital-d"]), re.findall(r"SuperNode (\d+) registered", registered)))
    assert len(node_ids) == 4, registered
    observed["node-ids"] = node_ids

    # An outsider who holds ca.crt tries the Control API through the public port.
    outsider_home = root / "outsider" / "flwr-home"
    outsider_home.mkdir(parents=True)
    (outsider_home / "config.toml").write_text(
        f'[superlink]\ndefault = "public"\n\n[superlink.public]\naddress = "127.0.0.1:{public_port}"\n'
        f'root-certificates = "{root / "outsider" / "ca.crt"}"\n'
    )
    (root / "outsider" / "ca.crt").write_bytes((creds / "ca.crt").read_bytes())
    outsider = {**os.environ, "FLWR_HOME": str(outsider_home)}
    outsider_key = Path(hospitals["intruder"]["KEY_DIR"]) / "supernode.pub"
    observed["outsider"] = {
        "supernode register": book.command(["flwr", "supernode", "register", str(outsider_key)], outsider),
        "run": book.command(["flwr", "run", str(coordinator_release), "--run-config", "num-server-rounds=1"], outsider),
        "list": book.command(["flwr", "list"], outsider),
        "log": book.command(["flwr", "log", "1"], outsider),
    }

    # Each hospital's SuperNode (through the proxy), approved-app launcher and exporter.
    for name in HOSPITALS:
        book.start(f"{name}-supernode", hospitals[name], step="supernode")
        book.start(f"{name}-app-launcher", hospitals[name], step="app-launcher")
        book.start(f"{name}-metrics", hospitals[name], step="client-metrics")
    observed["hospitals"] = hospitals

    # Two SuperNodes that must be refused: an unregistered key, and no CA certificate.
    book.start("unregistered-supernode", hospitals["intruder"], step="supernode")
    step = book.steps["supernode"].replace('  --root-certificates "$CA_CERT" \\\n', "")
    assert "--root-certificates" not in step
    book.start("supernode-without-ca", hospitals["hospital-d"], command=["bash", "-c", step])

    _wait_until(
        lambda: all(_online_nodes(book, coordinator).get(node_ids[n]) == "online" for n in HOSPITALS),
        180, "the three hospitals' SuperNodes to come online", poll=3,
    )
    observed["hospital-runtime-api-without-secret"] = _runtime_api_answers_without_the_secret(
        int(hospitals["hospital-a"]["RUNTIME_PORT"]), insecure=True, ca_file=None
    )

    # Submit, follow, and kill hospital-c's SuperNode once it has received round 2's first message.
    started = time.monotonic()
    submit = book.start("submit", coordinator, step="submit")
    killed_at_round, last_server_scrape, server_step_output = None, None, ""
    deadline = time.monotonic() + 900
    while submit.poll() is None and time.monotonic() < deadline:
        scrape = _scrape(server_metrics_port)
        if scrape:
            last_server_scrape = scrape
            if scrape.get(("segguided_server_rounds_completed", ()), 0) >= 1 and not server_step_output:
                server_step_output = book.run("server-metrics", coordinator, check=False)
        if killed_at_round is None and "ROUND 2]" in book.log(f"{KILLED}-supernode").read_text():
            book.kill(f"{KILLED}-supernode")
            book.kill(f"{KILLED}-app-launcher")
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
    observed["prometheus-series"] = json.loads(book.run("prometheus-series", coordinator))["data"]
    observed["prometheus-site-series"] = json.loads(urllib.request.urlopen(
        f"http://127.0.0.1:{prometheus_port}/api/v1/series?match[]=" + urllib.parse.quote('{site=~".+"}'), timeout=10
    ).read())["data"]
    observed["online-after-run"] = _online_nodes(book, coordinator)
    observed["refused-exit-codes"] = {
        name: book.processes[name].poll() for name in ("unregistered-supernode", "supernode-without-ca")
    }

    # Two runs the hospitals must refuse, at once: plain training from the approved release,
    # and a bundle whose plain-training guard always passes (approved by nobody).
    tampered = copy_release(root / "coordinator" / "tampered-release")
    guard = tampered / "client" / "site_config.py"
    guard.write_text(guard.read_text().replace(
        "    return _hospital_setting(node_config, ALLOW_PLAIN_TRAINING)", "    return True  # the guard that always passes"
    ))
    observed["tampered-digest"] = project_app_digest(tampered)
    refused_runs = {}
    for name, release in (("plain-training", coordinator_release), ("tampered-bundle", tampered)):
        settings = tiny_run_config(
            root / "runs", **{"run-name": name, "server-validation-dir": str(root / "data" / "validation"),
                              "num-server-rounds": 1, "secure-aggregation": False, "fraction-evaluate": 0.0,
                              "local-steps": 1, "client-wait-timeout": 60.0},
        )
        refused_runs[name] = book.start(name, coordinator, command=[
            "python", "-m", "segguided_tools.launcher", str(release), "--run-config", settings
        ])
    for name, process in refused_runs.items():
        process.wait(timeout=600)
        observed[f"{name}-log"] = book.log(name).read_text()
    observed["launcher-logs"] = {name: book.log(f"{name}-app-launcher").read_text() for name in HOSPITALS}
    observed["client-step-output"] = {
        name: book.run("read-client-metrics", hospitals[name], check=False) for name in HOSPITALS
    }
    observed["client-scrapes"] = {name: _scrape(int(hospitals[name]["CLIENT_METRICS_PORT"])) for name in HOSPITALS}
    yield observed


def _rounds(deployment, run_name: str = "study-1") -> list[dict]:
    run = Path(deployment["coordinator"]["OUTPUT_DIR"]) / run_name
    return json.loads((run / "metrics.json").read_text())["rounds"]


def test_run_completed_and_wrote_its_checkpoints(deployment):
    assert deployment["submit-rc"] == 0, deployment["submit-log"]
    assert "finished:completed" in deployment["submit-log"]
    run = Path(deployment["coordinator"]["OUTPUT_DIR"]) / "study-1"
    for name in ("round-0001.pt", "round-0002.pt", "best.pt", "final.pt"):
        assert load_checkpoint(run / name).config.base_width == 4
    assert [r["round"] for r in _rounds(deployment)] == [0, 1, 2]
    status = _json_after(deployment["follow-output"])  # `flwr list`, then `flwr log`
    assert any(r["status"] == "finished:completed" for r in status["runs"])
    predictions = Path(deployment["coordinator"]["PREDICTIONS"])
    assert list(predictions.glob("*-seg.nii.gz")), deployment["collect-output"]


def test_round_one_used_every_hospital_through_the_proxy_with_secure_aggregation(deployment):
    first = _rounds(deployment)[1]
    assert first["clients-selected"] == 3 and first["clients-succeeded"] == 3 and first["clients-failed"] == 0
    assert first["secure-aggregation"]["survivors"] == 3 and first["site-training"] == {}
    assert first["secure-aggregation"]["key-binding"] == "roster"  # every hospital checked its neighbours' keys
    access_log = (Path(deployment["coordinator"]["PROXY_DIR"]) / "access.log").read_text()
    assert '"POST /v1/fleet/push-messages HTTP/1.1" 200' in access_log  # the hospitals came through the proxy
    assert not re.search(r'"POST /v1/(control|runtime)/\S+ HTTP/1.1" (?!404)', access_log)  # nothing else passed


def test_a_supernode_killed_during_a_round_does_not_end_the_federation(deployment):
    assert deployment["killed-at-round"] == 2, f"{KILLED} never received round 2's instructions"
    assert deployment["rounds-completed-at-kill"] == 1
    second = _rounds(deployment)[2]
    # hospital-c was asked in round 2 (it received the round's first message before it was
    # killed), dropped out, and the round aggregated the two others.
    assert second["clients-selected"] == 3, second
    assert second["clients-succeeded"] == 2 and second["secure-aggregation"]["survivors"] == 2, second
    node_ids = deployment["node-ids"]
    # The SuperLink answers for the dead node ("Node Unavailable") or the stage times out.
    assert second["clients-failed"] == 1 and len(second["failures"]) == 1, second
    assert f"node {node_ids[KILLED]}" in second["failures"][0], second
    assert re.search(r"Node Unavailable|no reply within", second["failures"][0]), second
    assert second["aggregated"] is True
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


def test_hospital_exporters_serve_liveness_round_duration_and_failures_only(deployment):
    for hospital in HOSPITALS:
        scrape = deployment["client-scrapes"][hospital]
        assert scrape is not None, f"{hospital}'s exporter did not answer"
        site = (("site", hospital),)
        assert scrape[("segguided_client_last_round", site)] == (1 if hospital == KILLED else 2)
        assert scrape[("segguided_client_round_duration_seconds", site)] > 0
        assert scrape[("segguided_client_last_update_timestamp_seconds", site)] > time.time() - 3600
        # hospital-a and -b refused the plain-training run and the unapproved bundle (each
        # counted once); hospital-c was dead by then.
        assert scrape[("segguided_client_failures_total", site)] == (0 if hospital == KILLED else 2)
        names = {name for name, _ in scrape}
        assert not any(word in name for name in names for word in ("loss", "cases", "dice", "hd95")), names
        assert f'segguided_client_last_round{{site="{hospital}"}}' in deployment["client-step-output"][hospital]
        assert deployment["hospitals"][hospital]["CLIENT_METRICS_PORT"] not in Path(
            deployment["coordinator"]["PROMETHEUS_CONFIG"]).read_text()


def test_the_coordinators_prometheus_holds_no_per_site_case_count_or_loss(deployment):
    series = set(deployment["prometheus-series"])
    assert "segguided_server_rounds_completed" in series, "Prometheus never scraped the ServerApp"
    assert not [name for name in series if name.startswith("segguided_client")]
    assert not [name for name in series if re.search(r"case|loss", name)], series
    assert deployment["prometheus-site-series"] == []  # no series carries a site label
    config = yaml.safe_load((PROJECT_ROOT / "deploy" / "prometheus.yml").read_text())
    assert [job["job_name"] for job in config["scrape_configs"]] == ["segguided-server"]
    targets = [t for job in config["scrape_configs"] for group in job["static_configs"] for t in group["targets"]]
    assert targets == ["127.0.0.1:9400"]


def test_an_outsider_with_the_ca_certificate_is_refused_by_the_public_port(deployment):
    for command, done in deployment["outsider"].items():
        output = done.stdout + done.stderr
        assert done.returncode != 0 and "404 Not Found" in output, f"flwr {command}: {output[-1500:]}"
    registered = _online_nodes(deployment["deployment"], deployment["coordinator"])
    assert set(registered) == set(deployment["node-ids"].values())  # the outsider's key is not among them


def test_the_public_port_forwards_only_fleet_routes(deployment):
    answers = deployment["public-port"]
    assert answers["fleet/get-run"] != "404"  # reaches the SuperLink, which wants a SuperNode's signature
    assert answers["control/list-runs"] == answers["control/register-node"] == answers["runtime/acquire-task"] == "404"


def test_the_runtime_api_refuses_a_launcher_without_the_secret(deployment):
    assert "401 Unauthorized" in deployment["runtime-api-without-secret"], deployment["runtime-api-without-secret"]
    hospital = deployment["hospital-runtime-api-without-secret"]
    assert "401 Unauthorized" in hospital, hospital


def test_plain_training_is_refused_by_default(deployment):
    record = _rounds(deployment, "plain-training")[1]
    assert record["aggregated"] is False and record["clients-succeeded"] == 0
    assert record["failures"] and all(
        "site config does not set allow-plain-training=true" in reason for reason in record["failures"]
    ), record["failures"]
    assert record["site-training"] == {}


def test_a_bundle_the_hospital_did_not_approve_is_refused(deployment):
    digest = deployment["tampered-digest"]
    assert digest not in deployment["approved-digests"].values()
    record = _rounds(deployment, "tampered-bundle")[1]
    assert record["aggregated"] is False and record["clients-succeeded"] == 0
    assert record["failures"] and all(f"app bundle {digest} is not approved" in r for r in record["failures"]), record
    assert record["site-training"] == {}
    for hospital in ("hospital-a", "hospital-b"):  # the guard that always passes was never imported
        log = deployment["launcher-logs"][hospital]
        assert f"app bundle {digest} is not approved" in log
        assert "approved by this hospital's site config; loading it" in log  # the approved release ran


def test_hospitals_approved_the_same_digest_from_their_own_checkout(deployment):
    digests = set(deployment["approved-digests"].values())
    assert len(digests) == 1
    assert project_app_digest(Path(deployment["coordinator"]["RELEASE_DIR"])) in digests


def test_the_coordinator_registered_public_keys_whose_fingerprints_the_hospitals_printed(deployment):
    received = Path(deployment["coordinator"]["RECEIVED_KEYS"])
    assert sorted(p.name for p in received.iterdir()) == sorted(f"{h}.pub" for h in (*HOSPITALS, "hospital-d"))
    for hospital in (*HOSPITALS, "hospital-d"):
        assert f"{deployment['printed-fingerprints'][hospital]}  {received / hospital}.pub" in deployment["register-output"]
    assert not (Path(deployment["coordinator"]["CREDS"]) / "supernodes").exists()


def test_a_hospitals_private_key_never_leaves_its_folder(deployment):
    root: Path = deployment["deployment"].root
    for hospital in HOSPITALS:
        key_dir = Path(deployment["hospitals"][hospital]["KEY_DIR"])
        assert stat.S_IMODE(key_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE((key_dir / "supernode.key").stat().st_mode) == 0o600
        private = (key_dir / "supernode.key").read_bytes()
        body = b"".join(line for line in private.splitlines() if not line.startswith(b"-----"))
        secret = load_ssh_private_key(private, None).private_numbers().private_value.to_bytes(48, "big")
        # The private scalar (raw and hex) and the end of the key file's text, which holds it;
        # the beginning of an OpenSSH key file is the same for every key of its type.
        needles = (secret, secret.hex().encode(), body[-64:])
        found = [
            path for path in root.rglob("*")
            if path.is_file() and path != key_dir / "supernode.key"
            and any(needle in path.read_bytes() for needle in needles)
        ]
        assert found == [], f"{hospital}'s private key was found in {found}"


def test_an_unregistered_supernode_is_refused(deployment):
    book: Deployment = deployment["deployment"]
    online = deployment["online-after-run"]
    assert set(online) == set(deployment["node-ids"].values())
    for record in _rounds(deployment)[1:]:
        assert "intruder" not in json.dumps(record)
    log = book.log("unregistered-supernode").read_text()
    assert "Failed to activate SuperNode" in log and "Exit Code: 305" in log, log[-2000:]
    assert deployment["refused-exit-codes"]["unregistered-supernode"] not in (None, 0)


def test_a_supernode_without_the_ca_certificate_is_refused(deployment):
    book: Deployment = deployment["deployment"]
    assert deployment["online-after-run"].get(deployment["node-ids"]["hospital-d"]) != "online"
    log = book.log("supernode-without-ca").read_text()
    assert "CERTIFICATE_VERIFY_FAILED" in log and "Exit Code: 305" in log, log[-2000:]
    assert deployment["refused-exit-codes"]["supernode-without-ca"] not in (None, 0)


def test_the_test_ran_every_runbook_step(deployment):
    assert deployment["deployment"].steps_run == STEPS_RUN_BY_THE_DEPLOYMENT_TEST
