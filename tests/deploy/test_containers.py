"""The deployment in real containers: the images built from deploy/Dockerfile, one round through the compose files.

No image can be pulled here, so the base image is Debian bookworm built with
``debootstrap --variant=minbase`` and ``docker import`` (cached: the image, and the root
file system as a tarball under ``SEGGUIDED_DOCKER_CACHE``). pip inside the build uses this
machine's own pip configuration: local ``file://`` indexes and wheel folders are served to
the build over HTTP on 127.0.0.1. Docker's layer cache keeps rebuilds to the changed sources.

The coordinator's compose file starts the SuperLink, its ServerApp launcher and the Fleet
proxy (Prometheus and Grafana come from a public registry and are left out); two
hospitals' compose files start each one's SuperNode and approved-app launcher.
Every container uses host networking on 127.0.0.1. The coordinator registers the
hospitals' public keys and submits one round with SecAgg+ from the release the hospitals
approved, with the ``flwr`` CLI on this machine.

On a machine without Docker the test installs it (``docker.io``, ``docker-compose``,
``debootstrap`` from Debian, as root) and starts ``dockerd`` with the vfs storage driver;
it is skipped, with the reason, where that is impossible.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import socket
import socketserver
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from federation_harness import PROJECT_ROOT, free_port, tiny_run_config
from release_checkout import copy_release
from system_tools import require_commands

from client.app_approval import project_app_digest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3000)]

BASE_IMAGE = "segguided-base:bookworm"
IMAGE = "segguided-fl:test"
CACHE = Path(os.environ.get("SEGGUIDED_DOCKER_CACHE", "/var/cache/segguided-docker"))
DEBIAN_MIRROR = os.environ.get("SEGGUIDED_DEBIAN_MIRROR", "http://deb.debian.org/debian")
CONTAINER_USER = 10001
HOSPITALS = ("hospital-a", "hospital-b", "hospital-c")
"""Three: a hospital refuses a secure-aggregation session of fewer (``secure-aggregation-min-clients``)."""
PIP_SERVE_PORT = 38741
DOCKER = ["docker"]
COMPOSE = ["docker-compose"]


def _run(argv: list[str], timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(argv[:6])} ... exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def _daemon_answers() -> bool:
    return subprocess.run([*DOCKER, "info"], capture_output=True, timeout=60).returncode == 0


@pytest.fixture(scope="module")
def docker(tmp_path_factory):
    """A running Docker daemon: this machine's, or one this test starts (and stops) itself."""
    require_commands({"docker": "docker.io", "docker-compose": "docker-compose", "debootstrap": "debootstrap"})
    if _daemon_answers():
        yield
        return
    if os.geteuid() != 0 or shutil.which("dockerd") is None:
        pytest.skip("no Docker daemon answers and this test cannot start one (needs root and dockerd)")
    log = open(tmp_path_factory.mktemp("dockerd") / "dockerd.log", "w")
    daemon = subprocess.Popen(
        ["dockerd", "--storage-driver=vfs", "--bridge=none", "--iptables=false"], stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not _daemon_answers():
            if daemon.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"dockerd did not start (see {log.name})")
            time.sleep(1)
        yield
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)


def _image_exists(name: str) -> bool:
    return subprocess.run([*DOCKER, "image", "inspect", name], capture_output=True, timeout=60).returncode == 0


@pytest.fixture(scope="module")
def base_image(docker) -> str:
    """Debian bookworm (minbase) as a local image: reused, imported from the cached tarball, or built."""
    if _image_exists(BASE_IMAGE):
        return BASE_IMAGE
    started = time.monotonic()
    tarball = CACHE / "bookworm-minbase.tar"
    if not tarball.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=CACHE) as rootfs:
            os.chmod(rootfs, 0o755)  # it becomes the image's "/": the containers' user must enter it
            _run(["debootstrap", "--variant=minbase", "bookworm", rootfs, DEBIAN_MIRROR], timeout=1200)
            _run(["tar", "-C", rootfs, "-cf", f"{tarball}.partial", "."], timeout=600)
        os.replace(f"{tarball}.partial", tarball)
    with open(tarball, "rb") as stream:
        _run([*DOCKER, "import", "-", BASE_IMAGE], stdin=stream, timeout=600)
    print(f"base image {BASE_IMAGE} made in {time.monotonic() - started:.0f} s")
    return BASE_IMAGE


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def _pip_settings() -> dict[str, list[str]]:
    """This machine's pip index, wheel-folder and CA settings (``pip config list`` and ``PIP_*``)."""
    listed = subprocess.run(["pip", "config", "list"], capture_output=True, text=True, timeout=60).stdout
    settings: dict[str, list[str]] = {}
    for line in listed.splitlines():
        match = re.match(r"^[^.]+\.(index-url|extra-index-url|find-links|cert)='(.*)'$", line)
        if match:
            settings.setdefault(match.group(1), []).extend(match.group(2).split())
    for key in ("index-url", "extra-index-url", "find-links"):
        if os.environ.get(f"PIP_{key.upper().replace('-', '_')}"):
            settings[key] = os.environ[f"PIP_{key.upper().replace('-', '_')}"].split()
    return {key: list(dict.fromkeys(values)) for key, values in settings.items()}


@pytest.fixture(scope="module")
def image(base_image, tmp_path_factory) -> str:
    """``deploy/Dockerfile`` built on the local Debian image, with this machine's pip settings served to it."""
    served = tmp_path_factory.mktemp("pip-served")
    build_args: dict[str, str] = {}
    # The URLs are build arguments, part of the layer cache's key: a fixed port keeps the cache valid.
    port = PIP_SERVE_PORT if _port_is_free(PIP_SERVE_PORT) else free_port()
    for key, values in _pip_settings().items():
        if key == "cert":
            continue
        urls = []
        for number, value in enumerate(values):
            local = Path(value.removeprefix("file://"))
            if value.startswith("file://") or local.is_absolute():
                if local.exists():
                    # A simple index links its files relative to its parent (../../files/...): serve that.
                    name, tail = (local.parent, f"{local.name}/") if local.name == "simple" else (local, "")
                    (served / f"{key}-{number}").symlink_to(name)
                    urls.append(f"http://127.0.0.1:{port}/{key}-{number}/{tail}")
            else:
                urls.append(value)
        if urls:
            build_args[f"PIP_{key.upper().replace('-', '_')}"] = " ".join(urls)
    if build_args:
        build_args["TORCH_INDEX_URL"] = ""  # the machine's own indexes and wheels hold torch
        build_args["PIP_TRUSTED_HOST"] = "127.0.0.1"
    server = socketserver.ThreadingTCPServer(
        ("127.0.0.1", port), functools.partial(_QuietHandler, directory=str(served))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    # The build context: a clean checkout, plus this machine's CA bundle when pip uses one
    # (a TLS-inspecting proxy's CA must reach pip inside the build too).
    context = copy_release(tmp_path_factory.mktemp("build-context"))
    ca_bundle = os.environ.get("PIP_CERT") or _pip_settings().get("cert", [""])[0]
    if ca_bundle and Path(ca_bundle).is_file():
        shutil.copy(ca_bundle, context / "build-ca.crt")
        build_args["PIP_CERT"] = "/app/build-ca.crt"
    try:
        argv = [*DOCKER, "build", "--network", "host", "-f", "deploy/Dockerfile", "-t", IMAGE,
                "--build-arg", f"BASE_IMAGE={base_image}"]
        for key, value in build_args.items():
            argv += ["--build-arg", f"{key}={value}"]
        started = time.monotonic()
        _run([*argv, "."], cwd=context, timeout=2400, env={**os.environ, "DOCKER_BUILDKIT": "0"})
        print(f"image {IMAGE} built in {time.monotonic() - started:.0f} s")
    finally:
        server.shutdown()
        server.server_close()
    return IMAGE


def _give_to_container_user(*paths: Path) -> None:
    for path in paths:
        os.chown(path, CONTAINER_USER, CONTAINER_USER)


def _wait_until(condition, timeout: float, what: str, poll: float = 2.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Federation:
    """Compose projects started by the test; ``close`` takes every one down with its volumes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.projects: list[tuple[str, list[str]]] = []

    def up(self, project: str, files: list[str], env_file: Path, services: list[str] = ()) -> None:
        argv = [*COMPOSE, "-p", project, *[a for f in files for a in ("-f", f"deploy/{f}")], "--env-file", str(env_file)]
        self.projects.append((project, argv))
        _run([*argv, "up", "-d", "--no-build", *services], cwd=PROJECT_ROOT, timeout=600)

    def logs(self) -> str:
        return "\n".join(
            subprocess.run([*argv, "logs", "--no-color", "--tail", "60"], cwd=PROJECT_ROOT, capture_output=True,
                           text=True, timeout=120).stdout
            for _, argv in self.projects
        )

    def close(self) -> None:
        for _, argv in reversed(self.projects):
            subprocess.run([*argv, "down", "-v", "-t", "5"], cwd=PROJECT_ROOT, capture_output=True, timeout=300)


def _write_env(path: Path, values: dict[str, str]) -> Path:
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    return path


def test_one_secure_round_through_the_compose_files(image):
    root = Path(tempfile.mkdtemp(prefix="segguided-containers-"))
    os.chmod(root, 0o755)  # the containers' user reads the data and writes the runs below it
    federation = Federation(root)
    try:
        _run(["segguided", "synth", str(root / "data"), "--sites", str(len(HOSPITALS)), "--cases", "3", "--val-cases", "1",
              "--size", "32", "32", "32", "--seed", "0"], timeout=300)
        _run(["chmod", "-R", "a+rX", str(root / "data")])
        release = copy_release(root / "release")
        digest = project_app_digest(release)

        # Coordinator: credentials for the containers' user, the compose file, the flwr CLI here.
        creds, runs = root / "credentials", root / "runs"
        _run(["segguided", "certs", str(creds), "--host", "localhost", "--host", "127.0.0.1"])
        _give_to_container_user(creds / "server.key", creds / "superexec.secret")
        runs.mkdir()
        _give_to_container_user(runs)
        (root / "grafana-admin-password").write_text("not-used-here\n")
        public_port, control_port = free_port(), free_port()
        coordinator_env = _write_env(root / "coordinator.env", {
            "IMAGE": image, "CREDS": str(creds), "VALIDATION_DIR": str(root / "data" / "validation"),
            "RUNS_DIR": str(runs), "PUBLIC_BIND": "127.0.0.1", "PUBLIC_PORT": str(public_port),
            "CONTROL_PORT": str(control_port), "PROMETHEUS_PORT": str(free_port()), "GRAFANA_PORT": str(free_port()),
            "GRAFANA_ADMIN_PASSWORD_FILE": str(root / "grafana-admin-password"),
        })
        federation.up("segguided-test-coordinator", ["compose.superlink.yml"], coordinator_env,
                      ["superlink", "serverapp-launcher", "fleet-proxy"])
        flwr_home = root / "flwr-home"
        flwr_home.mkdir()
        (flwr_home / "config.toml").write_text(
            f'[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = "127.0.0.1:{control_port}"\n'
            f'root-certificates = "{creds / "ca.crt"}"\n'
        )
        cli = {**os.environ, "FLWR_HOME": str(flwr_home), "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
        _wait_until(lambda: '"success": true' in subprocess.run(
            ["flwr", "supernode", "list", "--format", "json"], env=cli, capture_output=True, text=True, timeout=120
        ).stdout, 180, "the SuperLink container to answer on its loopback port")

        # Hospitals: each makes its key, pins the release, starts its compose project.
        node_ids = {}
        for number, hospital in enumerate(HOSPITALS):
            home = root / hospital
            home.mkdir()
            _run(["segguided", "supernode-key", str(home / "keys"), "--hospital", hospital])
            _give_to_container_user(home / "keys" / "supernode.key", home / "keys" / "superexec.secret")
            shutil.copy(creds / "ca.crt", home / "ca.crt")
            registered = _run(["flwr", "supernode", "register", str(home / "keys" / "supernode.pub"), "--name", hospital],
                              env=cli).stdout
            node_ids[hospital] = re.search(r"SuperNode (\d+) registered", registered).group(1)
            (home / "site.toml").write_text(
                f'site-id = "{hospital}"\ndata-path = "/data"\ncache-dir = "/var/lib/segguided/cache"\n'
                f'metrics-file = "/var/lib/segguided/client-metrics.json"\nmetrics-port = {free_port()}\n'
                f'metrics-host = "127.0.0.1"\nallow-plain-training = false\nshare-evaluation-metrics = false\n'
                f'approved-app-digests = ["{digest}"]\n'
            )
            hospital_env = _write_env(home / "hospital.env", {
                "IMAGE": image, "SUPERLINK_ADDRESS": f"127.0.0.1:{public_port}",
                "DATA_PATH": str(sorted((root / "data").glob("site-*"))[number]), "SITE_CONFIG": str(home / "site.toml"),
                "CA_CERT": str(home / "ca.crt"), "KEY_DIR": str(home / "keys"), "RUNTIME_PORT": str(free_port()),
                "GPU": "0",
            })
            # The exporter is left out here (deploy tests check its command; the deployment test runs it):
            # with Docker's vfs driver every container costs a copy of the 1.8 GB image.
            federation.up(f"segguided-test-{hospital}", ["compose.hospital.yml"], hospital_env, ["supernode", "app-launcher"])

        def online() -> bool:
            listed = subprocess.run(["flwr", "supernode", "list", "--format", "json"], env=cli, capture_output=True,
                                    text=True, timeout=120).stdout
            try:
                nodes = json.JSONDecoder().raw_decode(listed[listed.index("{"):])[0]["nodes"]
            except ValueError:
                return False
            return {n["node-id"] for n in nodes if n["status"] == "online"} >= set(node_ids.values())

        _wait_until(online, 300, "the hospitals' SuperNode containers to come online through the proxy container")

        settings = tiny_run_config(Path("/srv/segguided/runs"), **{
            "run-name": "containers", "server-validation-dir": "/srv/segguided/validation", "num-server-rounds": 1,
            "local-steps": 1, "fraction-evaluate": 0.0, "synthetic-sites": len(HOSPITALS),
        })
        started = time.monotonic()
        submitted = subprocess.run(
            ["python", "-m", "segguided_tools.launcher", str(release), "--run-config", settings, "--timeout", "1500"],
            env=cli, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=1600,
        )
        print(f"one round through the containers in {time.monotonic() - started:.0f} s")
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr + federation.logs()
        rounds = json.loads((runs / "containers" / "metrics.json").read_text())["rounds"]
        assert rounds[1]["aggregated"] is True and rounds[1]["clients-succeeded"] == len(HOSPITALS)
        assert rounds[1]["secure-aggregation"]["survivors"] == len(HOSPITALS) and rounds[1]["site-training"] == {}
        assert (runs / "containers" / "final.pt").exists()
        logs = federation.logs()
        assert f"app bundle {digest} is approved by this hospital's site config" in logs
    finally:
        started = time.monotonic()
        federation.close()
        shutil.rmtree(root, ignore_errors=True)
        print(f"compose projects taken down in {time.monotonic() - started:.0f} s")
