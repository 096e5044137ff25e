"""A hospital runs only the app bundles it approved: the digest, the check, and what is loaded after it."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib
from federation_harness import PROJECT_ROOT
from flwr.cli.build import build_fab_from_disk
from flwr.supercore.constant import TaskType
from flwr.supercore.superexec.executor.types import ExecutionSpec
from flwr.supernode.cli.flwr_clientapp import _parse_args_run_flwr_clientapp

from client.app_approval import (
    AppNotApprovedError,
    app_digest,
    project_app_digest,
)
from client.approved_app_launcher import ApprovedClientAppExecutor, clientapp_command
from client.approved_clientapp import PROJECT_PACKAGES, ApprovalCheck

FILES = {"pyproject.toml": b"[project]\nname = 'app'\n", "client/client_app.py": b"app = 1\n", "README.md": b"# app\n"}


def _zip(files: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def test_the_digest_covers_every_file_but_not_the_compression():
    digest = app_digest(_zip(FILES))
    assert digest.startswith("sha256:") and len(digest) == 7 + 64
    assert app_digest(_zip(FILES, zipfile.ZIP_STORED)) == digest
    assert app_digest(_zip(dict(reversed(list(FILES.items()))))) == digest
    assert app_digest(_zip({**FILES, "client/client_app.py": b"app = 2\n"})) != digest
    assert app_digest(_zip({**FILES, "extra.py": b""})) != digest


def test_a_bundle_that_names_a_file_twice_or_is_no_zip_is_refused():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive, pytest.warns(UserWarning, match="Duplicate"):
        archive.writestr("a.py", b"1")
        archive.writestr("a.py", b"2")
    with pytest.raises(AppNotApprovedError, match="names a file twice"):
        app_digest(buffer.getvalue())
    with pytest.raises(AppNotApprovedError, match="not a valid zip"):
        app_digest(b"not a zip")


def test_a_project_folder_and_flowers_own_bundle_of_it_have_one_digest():
    bundle = build_fab_from_disk(PROJECT_ROOT)  # what `flwr run .` submits
    assert project_app_digest(PROJECT_ROOT) == app_digest(bundle)


def _check(tmp_path: Path, bundle: bytes, approved: list[str], announced: str | None = None) -> ApprovalCheck:
    site = tmp_path / "site.toml"
    listed = ", ".join(f'"{digest}"' for digest in approved)
    site.write_text(f'data-path = "/data"\napproved-app-digests = [{listed}]\n')
    check = ApprovalCheck()
    check.node_config = {"site-config": str(site)}
    check.announced_hash = announced or hashlib.sha256(bundle).hexdigest()
    return check


def test_an_approved_bundle_passes_and_any_other_is_refused_naming_the_key(tmp_path):
    bundle, tampered = _zip(FILES), _zip({**FILES, "client/client_app.py": b"app = 'always passes'\n"})
    assert _check(tmp_path, bundle, [app_digest(bundle)]).verify(bundle) == app_digest(bundle)
    with pytest.raises(AppNotApprovedError, match=rf"{app_digest(tampered)} is not approved.*approved-app-digests"):
        _check(tmp_path, tampered, [app_digest(bundle)]).verify(tampered)
    with pytest.raises(AppNotApprovedError, match="not approved"):
        _check(tmp_path, bundle, []).verify(bundle)  # nothing is approved until the hospital pins a digest


def test_a_bundle_that_is_not_the_announced_one_is_refused(tmp_path):
    bundle = _zip(FILES)
    with pytest.raises(AppNotApprovedError, match="does not match the hash it was announced with"):
        _check(tmp_path, bundle, [app_digest(bundle)], announced="0" * 64).verify(bundle)


def test_without_a_readable_site_config_nothing_is_approved_and_no_path_leaves(tmp_path):
    check = ApprovalCheck()
    with pytest.raises(AppNotApprovedError, match="names no site-config"):
        check.verify(_zip(FILES))
    check.node_config = {"site-config": str(tmp_path / "secret-folder" / "site.toml")}
    with pytest.raises(AppNotApprovedError, match="cannot be read") as refused:
        check.verify(_zip(FILES))
    assert "secret-folder" not in str(refused.value)


def test_once_approved_the_bundles_own_code_is_loaded_not_the_installed_copy(tmp_path):
    bundle_dir = tmp_path / "installed-bundle"
    (bundle_dir / "client").mkdir(parents=True)
    (bundle_dir / "client" / "__init__.py").write_text("")
    (bundle_dir / "client" / "client_app.py").write_text("ORIGIN = 'bundle'\n")
    script = (
        "import sys\n"
        "from client.approved_clientapp import forget_project_modules\n"  # imports the installed `client`
        "import client.site_config\n"
        "forgotten = forget_project_modules()\n"
        "assert 'client.site_config' in forgotten, forgotten\n"
        f"sys.path.insert(0, {str(bundle_dir)!r})\n"  # what Flower's load_app does with the bundle
        "import client.client_app\n"
        "print(client.client_app.ORIGIN, client.client_app.__file__)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["bundle", str(bundle_dir / "client" / "client_app.py")]


def test_project_packages_are_the_wheels():
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    assert set(PROJECT_PACKAGES) == set(pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"])


def _spec(task_type: TaskType, **overrides) -> ExecutionSpec:
    fields = dict(task_type=task_type, runtime_api_address="127.0.0.1:9094", token="t0k3n", insecure=True,
                  root_certificates_path=None, runtime_dependency_install=False, parent_pid=42,
                  suppress_output=True, task_id=7)
    return ExecutionSpec(**{**fields, **overrides})


def test_the_launcher_starts_clientapps_through_the_check_with_flowers_own_arguments():
    command = clientapp_command(_spec(TaskType.CLIENT_APP))
    module_at = command.index("-m") + 1
    assert command[0] == sys.executable and command[module_at] == "client.approved_clientapp"
    arguments = _parse_args_run_flwr_clientapp().parse_args(command[module_at + 1:])
    assert (arguments.runtime_api_address, arguments.token, arguments.insecure, arguments.parent_pid) == (
        "127.0.0.1:9094", "t0k3n", True, 42
    )
    tls = clientapp_command(_spec(TaskType.CLIENT_APP, insecure=False, root_certificates_path="/ca.crt"))
    assert tls[-4:] == ["--root-certificates", "/ca.crt", "--parent-pid", "42"]


def test_the_launcher_runs_nothing_but_clientapps():
    result = ApprovedClientAppExecutor().launch(_spec(TaskType.AGENT_APP))
    assert result.status == "failed" and "ClientApps only" in result.message


def test_a_refusal_is_counted_in_the_hospitals_metrics_file(tmp_path):
    from client.metrics_exporter import client_registry

    bundle = _zip(FILES)
    check = _check(tmp_path, bundle, [])
    site = Path(check.node_config["site-config"])
    site.write_text(site.read_text() + 'site-id = "hospital-a"\nmetrics-file = "metrics.json"\n')
    installed = []
    with pytest.raises(AppNotApprovedError):
        check.guarding(lambda content, *args, **kwargs: installed.append(content))(bundle)
    assert installed == []  # refused before Flower's installer ran
    assert client_registry(tmp_path / "metrics.json").get_sample_value(
        "segguided_client_failures_total", {"site": "hospital-a"}
    ) == 1
