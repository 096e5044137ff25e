"""The Flower app bundle that ``flwr run`` builds from the project leaves experiment output out.

An experiment's results folder may sit inside the project (``experiments/results/...``,
as the committed report does). Its private SuperLink home holds extracted copies of the
app, nested deeper than Flower allows, so if the bundle picked them up every experiment
after the first would fail to start.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import zipfile
from pathlib import Path

from flwr.cli.build import build_fab_from_disk

PROJECT = Path(__file__).resolve().parents[2]


def _copy_of_project(destination: Path) -> Path:
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=PROJECT, capture_output=True, check=True
    ).stdout.decode().split("\0")
    for name in filter(None, tracked):
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT / name, target)
    return destination


def test_bundle_excludes_an_experiments_superlink_home_data_and_runs(tmp_path):
    project = _copy_of_project(tmp_path / "project")
    results = project / "experiments" / "results" / "report"
    deep_app = results / ".flower" / "flwr-home" / "apps" / "segguided.app" / "tests" / "a" / "b" / "c" / "d"
    outputs = {
        deep_app / "metrics.json": "{}",
        results / "data" / "sites" / "site-1" / "qa.json": "{}",
        results / "runs" / "fedavg" / "metrics.json": "{}",
        results / "report.md": "# report\n",
    }
    for path, text in outputs.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    names = zipfile.ZipFile(io.BytesIO(build_fab_from_disk(project))).namelist()

    assert "experiments/results/report/report.md" in names  # the report itself may travel
    assert "server/server_app.py" in names and "client/client_app.py" in names
    leaked = [n for n in names if n.startswith("experiments/results/report/") and n.split("/")[3] in {".flower", "data", "runs"}]
    assert leaked == []
