"""The operator's kit, checked without Docker: every command in deploy/ is one Flower accepts,
the containers run what the runbook runs, nothing but the Fleet API faces the hospitals,
every hospital artefact carries the privacy defaults, and dashboards plot metrics that exist."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import tomllib
import yaml
from flwr.supercore.cli.flower_superexec import _parse_args as _parse_args_run_superexec
from flwr.superlink.cli.flower_superlink import _parse_args_run_superlink
from flwr.superlink.routers.fleet.router import router as fleet_router
from flwr.supernode.cli.flower_supernode import _parse_args_run_supernode
from runbook import STEPS_RUN_BY_THE_DEPLOYMENT_TEST, expand, read_runbook
from system_tools import require_commands

from client.metrics_exporter import client_registry, record_failure, record_round
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


def _mounts(service: dict) -> dict[str, str]:
    """``{target: source}`` of a service's volumes."""
    return {_mount(v)[1]: _mount(v)[0] for v in service.get("volumes", [])}


def _flower_arguments(parser_factory, argv: list[str]):
    """Parse ``argv`` with Flower's own parser; unknown flags fail the test."""
    namespace, unknown = parser_factory().parse_known_args(argv)
    assert unknown == [], f"Flower 1.42 does not accept {unknown}"
    return namespace


def _runbook_argv(step: str) -> list[str]:
    book = read_runbook()
    words = shlex.split(expand(book.steps[step], book.variables).replace("\\\n", " "))
    return [w for w in words if not re.match(r"^[A-Z_]+=", w)]


def _compose_argv(command: list[str]) -> list[str]:
    """A compose command with its ``${VAR:-default}`` references replaced by the defaults."""
    return [re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", word) for word in command]


def test_every_runbook_command_is_run_by_a_test_or_needs_docker_or_a_gpu():
    book = read_runbook()
    assert book.unlabelled == [], "bash blocks must be '# variables' or '# step: NAME'"
    assert set(book.steps) == STEPS_RUN_BY_THE_DEPLOYMENT_TEST
    for command in book.shell_commands:
        for part in re.split(r"&&|\|", command):
            program = shlex.split(part)[0]
            assert program in SHELL_PROGRAMS or program == ".", f"untested command in a shell block: {command}"


def test_the_superlink_listens_on_loopback_with_tls_auth_and_a_superexec_secret():
    superlink = _flower_arguments(_parse_args_run_superlink, _runbook_argv("superlink")[1:])
    assert superlink.enable_supernode_auth and superlink.ssl_certfile and superlink.ssl_ca_certfile
    assert superlink.host == "127.0.0.1" and not superlink.insecure
    # Flower ignores the secret in the default subprocess isolation: it must be process isolation.
    assert superlink.isolation == "process" and superlink.superexec_auth_secret_file
    launcher = _flower_arguments(_parse_args_run_superexec, _runbook_argv("serverapp-launcher")[1:])
    assert launcher.runtime_api_address == f"127.0.0.1:{superlink.port}"
    assert launcher.superexec_auth_secret_file == superlink.superexec_auth_secret_file
    assert launcher.root_certificates == superlink.ssl_ca_certfile and not launcher.insecure


def test_a_hospital_runs_its_supernode_and_its_approved_app_launcher_with_one_secret():
    supernode = _flower_arguments(_parse_args_run_supernode, _runbook_argv("supernode")[1:])
    assert supernode.root_certificates and supernode.auth_supernode_private_key and not supernode.insecure
    assert supernode.isolation == "process" and supernode.superexec_auth_secret_file
    assert supernode.node_config.startswith("site-config=")
    argv = _runbook_argv("app-launcher")
    assert argv[:3] == ["python", "-m", "client.approved_app_launcher"]
    launcher = _flower_arguments(_parse_args_run_superexec, argv[3:])
    assert launcher.runtime_api_address == f"127.0.0.1:{supernode.port}"
    assert launcher.superexec_auth_secret_file == supernode.superexec_auth_secret_file


def test_the_proxy_forwards_exactly_flowers_fleet_routes_and_nothing_else():
    template = (DEPLOY / "fleet-proxy.nginx.conf").read_text()
    locations = re.findall(r"^\s*location (.+?) \{", template, flags=re.M)
    assert len(locations) == 2, locations
    fleet = re.fullmatch(r"~ \^/v1/fleet/\((.+)\)\$", locations[0])
    assert fleet, locations[0]
    assert {f"/v1/fleet/{name}" for name in fleet.group(1).split("|")} == {r.path for r in fleet_router.routes}
    assert locations[1] == "/" and re.search(r"location / \{\s*return 404;", template)
    assert "proxy_ssl_verify on;" in template and "listen ${PUBLIC_BIND}:${PUBLIC_PORT} ssl;" in template
    variables = set(re.findall(r"\$\{(\w+)\}", template))
    step = read_runbook().steps["fleet-proxy"]
    assert variables == set(re.search(r"envsubst '([^']+)'", step).group(1).replace("$", "").split())


def test_the_rendered_proxy_configuration_is_valid_nginx(tmp_path):
    require_commands({"nginx": "nginx-light", "envsubst": "gettext-base"})
    values = {"PUBLIC_BIND": "127.0.0.1", "PUBLIC_PORT": "19093", "CONTROL_PORT": "19091",
              "CREDS": str(tmp_path), "PROXY_DIR": str(tmp_path)}
    from segguided_tools.credentials import write_credentials

    write_credentials(tmp_path, ["127.0.0.1"])
    rendered = subprocess.run(
        ["envsubst", " ".join(f"${name}" for name in values)], input=(DEPLOY / "fleet-proxy.nginx.conf").read_text(),
        env=values, capture_output=True, text=True, check=True,
    ).stdout
    (tmp_path / "nginx.conf").write_text(rendered)
    checked = subprocess.run(["nginx", "-t", "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path),
                              "-e", str(tmp_path / "error.log")], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr


def test_coordinator_containers_run_the_runbook_commands_on_the_admin_side():
    services = _compose("compose.superlink.yml")["services"]
    assert all(service.get("network_mode") == "host" and "ports" not in service for service in services.values())
    superlink = services["superlink"]
    parsed = _flower_arguments(_parse_args_run_superlink, _compose_argv(superlink["command"][1:]))
    runbook = _flower_arguments(_parse_args_run_superlink, _runbook_argv("superlink")[1:])
    for flag in ("enable_supernode_auth", "insecure", "isolation", "host"):
        assert getattr(parsed, flag) == getattr(runbook, flag), flag
    mounted = set(_mounts(superlink))
    assert {parsed.ssl_certfile, parsed.ssl_keyfile, parsed.ssl_ca_certfile, parsed.superexec_auth_secret_file} <= mounted
    assert not any("ca.key" in volume for s in services.values() for volume in s.get("volumes", []))

    launcher = services["serverapp-launcher"]
    assert launcher["command"][0] == "flower-superexec"
    parsed_launcher = _flower_arguments(_parse_args_run_superexec, _compose_argv(launcher["command"][1:]))
    assert parsed_launcher.runtime_api_address == f"127.0.0.1:{parsed.port}"
    assert {parsed_launcher.superexec_auth_secret_file, "/srv/segguided/runs", "/srv/segguided/validation"} <= set(
        _mounts(launcher)
    )

    proxy = " ".join(services["fleet-proxy"]["command"])
    assert "/etc/segguided/fleet-proxy.nginx.conf" in proxy and "exec nginx" in proxy
    assert "/etc/segguided/fleet-proxy.nginx.conf" in (DEPLOY / "Dockerfile").read_text()

    assert "--web.listen-address=127.0.0.1:${PROMETHEUS_PORT:-9090}" in services["prometheus"]["command"]
    grafana = services["grafana"]["environment"]
    assert grafana["GF_SERVER_HTTP_ADDR"] == "127.0.0.1"
    assert grafana["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"
    assert "GF_SECURITY_ADMIN_PASSWORD" not in grafana
    assert "grafana_admin_password" in _compose("compose.superlink.yml")["secrets"]


def test_hospital_containers_run_the_runbook_commands_and_keep_the_key_from_the_clientapps():
    services = _compose("compose.hospital.yml")["services"]
    assert all(service.get("network_mode") == "host" and "ports" not in service for service in services.values())
    supernode, launcher, metrics = services["supernode"], services["app-launcher"], services["metrics"]
    parsed = _flower_arguments(_parse_args_run_supernode, _compose_argv(supernode["command"][1:]))
    runbook = _flower_arguments(_parse_args_run_supernode, _runbook_argv("supernode")[1:])
    assert {k for k, v in vars(parsed).items() if v} == {k for k, v in vars(runbook).items() if v}
    assert parsed.isolation == "process" and not parsed.insecure

    mounts = _mounts(supernode)
    site_config_path = parsed.node_config.split("=", 1)[1].strip('"')
    assert {site_config_path, parsed.root_certificates, parsed.auth_supernode_private_key,
            parsed.superexec_auth_secret_file} <= set(mounts)

    assert launcher["command"][:3] == ["python", "-m", "client.approved_app_launcher"]
    parsed_launcher = _flower_arguments(_parse_args_run_superexec, _compose_argv(launcher["command"][3:]))
    assert parsed_launcher.runtime_api_address == f"127.0.0.1:{parsed.port}"
    launcher_mounts = _mounts(launcher)
    # The ClientApps read the site config (the approval check) and the data; never the private key.
    assert {site_config_path, "/data", parsed_launcher.superexec_auth_secret_file} <= set(launcher_mounts)
    assert not any("supernode.key" in source for source in launcher_mounts.values())

    assert metrics["command"] == ["python", "-m", "client.metrics_exporter", "--site-config", site_config_path]
    site = SiteConfig.load(DEPLOY / "site-config.container.toml")
    assert site.metrics_host == "127.0.0.1" and str(site.data_path) == "/data"
    state = next(_mount(v)[1] for v in metrics["volumes"] if v.startswith("hospital-state:"))
    assert str(site.metrics_file).startswith(state) and f"hospital-state:{state}" in launcher["volumes"]


def test_the_gpu_is_an_override_of_the_clientapps_only():
    gpu = _compose("compose.hospital.gpu.yml")["services"]
    assert set(gpu) == {"app-launcher"}
    devices = gpu["app-launcher"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


@pytest.mark.parametrize("compose, example", [
    ("compose.superlink.yml", "coordinator.env.example"), ("compose.hospital.yml", "hospital.env.example"),
])
def test_compose_variables_are_in_the_env_example(compose, example):
    used = set(re.findall(r"\$\{([A-Z_]+)", (DEPLOY / compose).read_text()))
    lines = (DEPLOY / example).read_text().splitlines()
    assert used <= {line.split("=")[0] for line in lines if line and not line.startswith("#")}


def test_dockerfile_takes_its_base_image_as_an_argument_and_installs_the_project():
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=\S+\nFROM \$\{BASE_IMAGE\}$", text, flags=re.M)
    for sources in re.findall(r"^COPY (.+) \S+$", text, flags=re.M):
        for source in sources.split():
            assert (PROJECT / source).exists() or "[" in source, source  # a [x] pattern is optional
    # `COPY . ./` takes what .dockerignore lets in: every package, and the proxy template.
    allowed = {line[1:] for line in (PROJECT / ".dockerignore").read_text().splitlines() if line.startswith("!")}
    packages = tomllib.loads((PROJECT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert set(packages["packages"]) | {"pyproject.toml", "README.md", "deploy/fleet-proxy.nginx.conf"} <= allowed
    assert "COPY . ./" in text and "/etc/segguided/fleet-proxy.nginx.conf" in text
    assert "pip install --no-deps ." in text and "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1" in text
    assert re.search(r"apt-get install [^&]*nginx-light gettext-base", text)
    assert re.search(r"^USER \w+", text, flags=re.M), "containers must not run as root"
    for name in ("compose.superlink.yml", "compose.hospital.yml"):
        for service in _compose(name)["services"].values():
            if "build" in service:
                assert service["build"]["dockerfile"] == "deploy/Dockerfile" and service["build"]["context"] == ".."


@pytest.mark.parametrize(
    "unit", ["segguided-supernode.service", "segguided-app-launcher.service", "segguided-client-metrics.service"]
)
def test_systemd_units_run_the_runbook_commands(unit):
    text = (DEPLOY / "systemd" / unit).read_text()
    exec_start = shlex.split(re.search(r"^ExecStart=(.+)$", text, flags=re.M).group(1))
    if exec_start[0].endswith("flower-supernode"):
        parsed = _flower_arguments(_parse_args_run_supernode, exec_start[1:])
        runbook = _flower_arguments(_parse_args_run_supernode, _runbook_argv("supernode")[1:])
        assert {k for k, v in vars(parsed).items() if v} == {k for k, v in vars(runbook).items() if v}
        assert parsed.isolation == "process" and parsed.node_config.startswith("site-config=")
        assert "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1" in text
    elif "client.approved_app_launcher" in exec_start:
        assert exec_start[1:3] == ["-m", "client.approved_app_launcher"]
        launcher = _flower_arguments(_parse_args_run_superexec, exec_start[3:])
        assert launcher.superexec_auth_secret_file and launcher.runtime_api_address.startswith("127.0.0.1:")
        assert "CUDA_VISIBLE_DEVICES" in text and "FLWR_HOME" in text
    else:
        assert exec_start[1:] == ["-m", "client.metrics_exporter", "--site-config", "/etc/segguided/site.toml"]
    assert re.search(r"^User=(?!root)\w+", text, flags=re.M)


def test_every_hospital_artefact_states_the_privacy_defaults():
    for name in ("site-config.example.toml", "site-config.container.toml"):
        raw = tomllib.loads((DEPLOY / name).read_text())
        assert raw["allow-plain-training"] is False and raw["share-evaluation-metrics"] is False, name
        assert "approved-app-digests" in raw, name
    runbook_site_config = re.search(r"```toml\n(.+?)```", (DEPLOY / "README.md").read_text(), flags=re.S).group(1)
    raw = tomllib.loads(runbook_site_config)
    assert raw["allow-plain-training"] is False and raw["share-evaluation-metrics"] is False
    for name in ("compose.hospital.yml", "systemd/segguided-supernode.service"):
        assert "allow-plain-training = false" in (DEPLOY / name).read_text(), name


def _exported_metric_names(tmp_path: Path) -> tuple[set[str], set[str]]:
    server = ServerMetrics(1, "run")
    server.record_round(RoundRecord(round=1, central={"dice-et": 0.5, "hd95-et": 3.0}, bytes_received=10))
    record_round(tmp_path / "m.json", 1, {"site-id": "a", "loss": 1.0, "train-cases": 2, "client-seconds": 1.0})
    record_failure(tmp_path / "m.json", "a")
    names = [{s.name for family in registry.collect() for s in family.samples}
             for registry in (server.registry, client_registry(tmp_path / "m.json"))]
    return names[0], names[1]


def test_the_coordinator_monitors_the_serverapp_only(tmp_path):
    server, client = _exported_metric_names(tmp_path)
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    used = {name for panel in dashboard["panels"] for target in panel["targets"]
            for name in re.findall(r"segguided_\w+", target["expr"])}
    assert used and used <= server, used - server
    documented = set(re.findall(r"`(segguided_(?:server|client)_\w+)`", (DEPLOY / "README.md").read_text()))
    assert {n for n in server | client if not n.endswith(("_created",))} - documented <= {
        "segguided_server_clients_succeeded", "segguided_server_clients_failed"  # documented as `_succeeded`/`_failed`
    }
    scrape = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())["scrape_configs"]
    targets = {t for job in scrape for c in job["static_configs"] for t in c["targets"]}
    assert [job["job_name"] for job in scrape] == ["segguided-server"] and targets == {"127.0.0.1:9400"}
    labels = {key for job in scrape for c in job["static_configs"] for key in c.get("labels", {})}
    assert not labels & {"site", "region", "device"}, "target labels would shadow the exporters' labels"


def test_example_site_configs_are_valid():
    for name in ("site-config.example.toml", "site-config.container.toml"):
        config = SiteConfig.load(DEPLOY / name)
        assert config.metrics_port == 9401 and config.metrics_host == "127.0.0.1"
