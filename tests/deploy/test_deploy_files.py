"""The operator's kit, checked without Docker: every command in deploy/ is one Flower accepts,
the containers run what the runbook runs, and dashboards plot metrics that exist."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import tomllib
import yaml
from flwr.superlink.cli.flower_superlink import _parse_args_run_superlink
from flwr.supernode.cli.flower_supernode import _parse_args_run_supernode
from runbook import STEPS_RUN_BY_THE_DEPLOYMENT_TEST, expand, read_runbook

from client.metrics_exporter import client_registry, record_round
from client.site_config import SiteConfig
from server.history import RoundRecord
from server.metrics_exporter import ServerMetrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROJECT = DEPLOY.parent

# What the `shell` blocks may contain: commands that need Docker, systemd, a GPU or a download.
SHELL_PROGRAMS = {"python3", "pip", "nvidia-smi", "docker", "sudo"}


def _compose(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())


def _mount(volume: str) -> tuple[str, str]:
    """``(source, target)`` of a short-syntax volume (the source may be ``${VAR:?message}``)."""
    volume = re.sub(r":(ro|rw)$", "", volume)
    source, target = volume.rsplit(":", 1)
    return source, target


def _flower_arguments(parser_factory, argv: list[str]):
    """Parse ``argv`` with Flower's own parser; unknown flags fail the test."""
    namespace, unknown = parser_factory().parse_known_args(argv)
    assert unknown == [], f"Flower 1.42 does not accept {unknown}"
    return namespace


def _runbook_argv(step: str) -> list[str]:
    book = read_runbook()
    words = shlex.split(expand(book.steps[step], book.variables).replace("\\\n", " "))
    return [w for w in words if not re.match(r"^[A-Z_]+=", w)]


def test_every_runbook_command_is_run_by_a_test_or_needs_docker_or_a_gpu():
    book = read_runbook()
    assert book.unlabelled == [], "bash blocks must be '# variables' or '# step: NAME'"
    assert set(book.steps) == STEPS_RUN_BY_THE_DEPLOYMENT_TEST
    for command in book.shell_commands:
        for part in re.split(r"&&|\|", command):
            program = shlex.split(part)[0]
            assert program in SHELL_PROGRAMS or program == ".", f"untested command in a shell block: {command}"


def test_runbook_superlink_and_supernode_flags_are_flowers():
    superlink = _flower_arguments(_parse_args_run_superlink, _runbook_argv("superlink")[1:])
    assert superlink.enable_supernode_auth and superlink.ssl_certfile and superlink.ssl_ca_certfile
    supernode = _flower_arguments(_parse_args_run_supernode, _runbook_argv("supernode")[1:])
    assert supernode.root_certificates and supernode.auth_supernode_private_key and not supernode.insecure


def test_superlink_container_runs_the_runbook_command():
    service = _compose("compose.superlink.yml")["services"]["superlink"]
    command = service["command"]
    assert command[0] == "flower-superlink"
    parsed = _flower_arguments(_parse_args_run_superlink, command[1:])
    runbook = _flower_arguments(_parse_args_run_superlink, _runbook_argv("superlink")[1:])
    for flag in ("enable_supernode_auth", "insecure"):
        assert getattr(parsed, flag) == getattr(runbook, flag)
    mounted = {_mount(volume)[1] for volume in service["volumes"]}
    assert {parsed.ssl_certfile, parsed.ssl_keyfile, parsed.ssl_ca_certfile} <= mounted
    assert f"{parsed.port}:{parsed.port}" in service["ports"]
    assert service["environment"]["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] == "1"
    assert "./credentials/ca.key:" not in " ".join(service["volumes"])  # the CA key stays offline


def test_hospital_container_runs_the_runbook_commands_with_a_gpu():
    services = _compose("compose.hospital.yml")["services"]
    supernode, metrics = services["supernode"], services["metrics"]
    parsed = _flower_arguments(_parse_args_run_supernode, supernode["command"][1:])
    runbook = _flower_arguments(_parse_args_run_supernode, _runbook_argv("supernode")[1:])
    assert set(vars(parsed)) == set(vars(runbook))
    assert parsed.insecure is False and parsed.root_certificates and parsed.auth_supernode_private_key
    devices = supernode["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "cu" in supernode["build"]["args"]["TORCH_INDEX_URL"].rsplit("/", 1)[-1]

    mounts = {_mount(v)[1]: _mount(v)[0] for v in supernode["volumes"]}
    site_config_path = parsed.node_config.split("=", 1)[1].strip('"')
    assert site_config_path in mounts
    site = SiteConfig.load(DEPLOY / mounts[site_config_path].removeprefix("./"))
    assert str(site.data_path) in mounts and {parsed.root_certificates, parsed.auth_supernode_private_key} <= set(mounts)
    assert metrics["command"][:3] == ["python", "-m", "client.metrics_exporter"]
    assert metrics["command"][3:] == ["--site-config", site_config_path]
    assert any(port.endswith(f":{site.metrics_port}") for port in metrics["ports"])
    assert site.metrics_host == "0.0.0.0"
    state = next(_mount(v)[1] for v in metrics["volumes"] if v.startswith("hospital-state:"))
    assert str(site.metrics_file).startswith(state) and f"hospital-state:{state}" in supernode["volumes"]


def test_compose_variables_are_in_the_env_example():
    text = (DEPLOY / "compose.hospital.yml").read_text()
    used = set(re.findall(r"\$\{([A-Z_]+)", text))
    example = {line.split("=")[0] for line in (DEPLOY / "hospital.env.example").read_text().splitlines()
               if line and not line.startswith("#")}
    assert used <= example


def test_dockerfile_copies_what_exists_and_installs_the_project():
    text = (DEPLOY / "Dockerfile").read_text()
    for sources in re.findall(r"^COPY (.+) \S+$", text, flags=re.M):
        for source in sources.split():
            assert (PROJECT / source).exists(), source
    packages = tomllib.loads((PROJECT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    for package in packages["packages"]:
        assert f"COPY {package} ./{package}" in text
    assert "RUN pip install ." in text and "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1" in text
    assert re.search(r"^USER \w+", text, flags=re.M), "containers must not run as root"
    for name in ("compose.superlink.yml", "compose.hospital.yml"):
        for service in _compose(name)["services"].values():
            if "build" in service:
                assert service["build"]["dockerfile"] == "deploy/Dockerfile" and service["build"]["context"] == ".."


@pytest.mark.parametrize("unit", ["segguided-supernode.service", "segguided-client-metrics.service"])
def test_systemd_units_run_the_runbook_commands(unit):
    text = (DEPLOY / "systemd" / unit).read_text()
    exec_start = shlex.split(re.search(r"^ExecStart=(.+)$", text, flags=re.M).group(1))
    if exec_start[0].endswith("flower-supernode"):
        parsed = _flower_arguments(_parse_args_run_supernode, exec_start[1:])
        assert parsed.root_certificates and parsed.auth_supernode_private_key and not parsed.insecure
        assert parsed.node_config.startswith("site-config=")
        assert "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1" in text and "CUDA_VISIBLE_DEVICES" in text
    else:
        assert exec_start[1:] == ["-m", "client.metrics_exporter", "--site-config", "/etc/segguided/site.toml"]
    assert re.search(r"^User=(?!root)\w+", text, flags=re.M)


def _exported_metric_names(tmp_path: Path) -> set[str]:
    server = ServerMetrics(1, "run")
    server.record_round(RoundRecord(round=1, central={"dice-et": 0.5, "hd95-et": 3.0}, bytes_received=10))
    record_round(tmp_path / "m.json", 1, {"site-id": "a", "loss": 1.0, "train-cases": 2, "steps-per-second": 1.0})
    names = set()
    for registry in (server.registry, client_registry(tmp_path / "m.json")):
        names |= {sample.name for family in registry.collect() for sample in family.samples}
    return names


def test_dashboard_and_prometheus_use_metrics_the_exporters_expose(tmp_path):
    exported = _exported_metric_names(tmp_path)
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    used = {name for panel in dashboard["panels"] for target in panel["targets"]
            for name in re.findall(r"segguided_\w+", target["expr"])}
    assert used and used <= exported, used - exported
    documented = set(re.findall(r"`(segguided_(?:server|client)_\w+)`", (DEPLOY / "README.md").read_text()))
    assert {n for n in exported if not n.endswith(("_created",))} - documented <= {
        "segguided_server_clients_succeeded", "segguided_server_clients_failed"  # documented as `_succeeded`/`_failed`
    }

    scrape = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())["scrape_configs"]
    ports = {job["job_name"]: {t.rsplit(":", 1)[1] for c in job["static_configs"] for t in c["targets"]}
             for job in scrape}
    assert ports["segguided-hospitals"] == {str(SiteConfig.load(DEPLOY / "site-config.container.toml").metrics_port)}
    assert ports["segguided-server"] == {"9400"}
    labels = {key for job in scrape for c in job["static_configs"] for key in c.get("labels", {})}
    assert not labels & {"site", "region", "device"}, "target labels would shadow the exporters' labels"


def test_example_site_configs_are_valid():
    for name in ("site-config.example.toml", "site-config.container.toml"):
        assert SiteConfig.load(DEPLOY / name).metrics_port == 9401
