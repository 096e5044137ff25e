"""Runs that tell the truth, under faults injected into real federations.

A ServerApp is killed (SIGKILL, ``tests/fault_injection_app.py``) at four moments of a
round and resumed; two runs are submitted for one folder; data folders are missing or
broken; the output disk fills up; too few SuperNodes connect. Every run is a real
``flwr run`` simulation on a private SuperLink, with a few seconds of training.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from federation_harness import LocalFederation, tiny_run_config

from segguided_model.checkpoint import load_checkpoint
from segguided_model.state_arrays import model_to_arrays
from segguided_tools.launcher import RunFailed, run_logs, run_status, wait_for_run
from segguided_tools.local_simulation import PROJECT_ROOT

pytestmark = pytest.mark.slow

ROUNDS = 4
KILL_CHAIN = ("training@1", "checkpoint-write@2", "after-checkpoint@3", "evaluation@4")
"""One run killed four times, at each moment of a round, and resumed after each kill."""
DETERMINISTIC_KEYS = (
    "round", "central", "site-evaluation", "clients-selected", "clients-succeeded", "clients-failed", "failures",
    "evaluation-failures", "aggregated",
)


@pytest.fixture(scope="module")
def fault_app(tmp_path_factory) -> Path:
    """A copy of the project whose ServerApp dies where run-config ``fault-point`` says."""
    app = tmp_path_factory.mktemp("fault-app")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT_ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (PROJECT_ROOT / name).is_file():
            (app / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT_ROOT / name, app / name)
    pyproject = app / "pyproject.toml"
    text = pyproject.read_text()
    for old, new in (
        ('serverapp = "server.server_app:app"', 'serverapp = "tests.fault_injection_app:app"'),
        ('clientapp = "client.client_app:app"', 'clientapp = "tests.fault_injection_app:client_app"'),
        ("[tool.flwr.app.config]\n", '[tool.flwr.app.config]\nfault-point = ""\n'),
    ):
        assert old in text, old
        text = text.replace(old, new)
    pyproject.write_text(text)
    return app


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def reference(federation, runs) -> tuple[Path, str]:
    """An uninterrupted run: the history and model every killed-and-resumed run must reach."""
    outcome = federation.run(tiny_run_config(runs, **{"run-name": "reference", "num-server-rounds": ROUNDS}))
    return runs / "reference", outcome.run_id


def _without_timings(value):
    """``value`` without its ``*-seconds`` entries (a site's evaluation reports its QA and client time)."""
    if isinstance(value, dict):
        return {key: _without_timings(item) for key, item in value.items() if not key.endswith("-seconds")}
    return value


def _history(run_folder: Path) -> list[dict]:
    rounds = json.loads((run_folder / "metrics.json").read_text())["rounds"]
    comparable = []
    for record in rounds:
        row = {key: _without_timings(record.get(key)) for key in DETERMINISTIC_KEYS}
        secure = record.get("secure-aggregation") or {}
        row["secure"] = {key: secure.get(key) for key in ("survivors", "aggregated", "halted", "training")}
        comparable.append(row)
    return comparable


def _assert_close(actual, expected, path: str) -> None:
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and sorted(actual) == sorted(expected), f"{path}: keys differ"
        for key in expected:
            _assert_close(actual[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{path}: lengths differ"
        for index, (a, e) in enumerate(zip(actual, expected)):
            _assert_close(a, e, f"{path}[{index}]")
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, abs=1e-6), f"{path}: {actual} != {expected}"
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def _kill(
    federation: LocalFederation, fault_app: Path, output: Path, name: str, point: str, resume: bool, **run_config
) -> None:
    """Run until the ServerApp kills itself at ``point``, then stop the dead run."""
    settings = {"run-name": name, "num-server-rounds": ROUNDS, "fault-point": point, "resume": resume, **run_config}
    marker = output / f"{name}.killed"
    marker.unlink(missing_ok=True)
    run_id = federation.start(tiny_run_config(output, **settings), app_dir=fault_app)
    deadline = time.monotonic() + 600
    while not marker.exists() and not run_status(run_id, fault_app, federation.env).startswith("finished"):
        assert time.monotonic() < deadline, f"the ServerApp was not killed at {point}"
        time.sleep(1)
    assert marker.exists(), f"run {run_id} ended before its ServerApp was killed at {point}"
    # The SuperLink would notice the dead ServerApp only after its heartbeat timeout.
    subprocess.run(["flwr", "stop", run_id], cwd=fault_app, env=federation.env, capture_output=True, timeout=120)
    with pytest.raises(RunFailed):
        wait_for_run(run_id, fault_app, federation.env, timeout=300)


def test_a_run_killed_at_every_moment_of_a_round_resumes_to_the_uninterrupted_history_and_model(
    federation, fault_app, runs, reference
):
    """Killed while training round 1, mid-write of round 2's checkpoint, after round 3's checkpoint
    (before its federated evaluation) and during round 4's evaluation; resumed after each kill."""
    name = "killed"
    folder, (expected_folder, _) = runs / name, reference
    for index, point in enumerate(KILL_CHAIN):
        _kill(federation, fault_app, runs, name, point, resume=index > 0)
        if point.startswith("checkpoint-write"):
            assert [p.name for p in folder.iterdir() if p.name.endswith(".tmp")], "the cut-off write left nothing"
    federation.run(tiny_run_config(runs, **{"run-name": name, "num-server-rounds": ROUNDS, "resume": True}))

    _assert_close(_history(folder), _history(expected_folder), "history")
    for resumed, uninterrupted in zip(model_to_arrays(load_checkpoint(folder / "final.pt").model),
                                      model_to_arrays(load_checkpoint(expected_folder / "final.pt").model)):
        np.testing.assert_allclose(resumed, uninterrupted, atol=1e-6)
    assert load_checkpoint(folder / "best.pt").extra["round"] == load_checkpoint(expected_folder / "best.pt").extra[
        "round"]
    assert [p.name for p in folder.iterdir() if p.name.endswith(".tmp")] == []


def test_a_round_that_becomes_the_last_on_resume_is_validated_centrally_and_on_the_sites(federation, fault_app, runs):
    """Killed after round 1's checkpoint in a run that validates every 2nd round (round 1 kept no
    scores), then resumed with ``num-server-rounds = 1``: round 1 is now the last, which is always
    validated. The first resume is killed while it rewrites round 1's checkpoint with the scores;
    the second finishes, and the checkpoint and the history agree."""
    name = "shortened"
    _kill(federation, fault_app, runs, name, "after-checkpoint@1", resume=False, **{"evaluate-every": 2})
    killed = load_checkpoint(runs / name / "round-0001.pt").extra["round-record"]  # the history has no row yet
    assert killed["central"] == {} and killed["site-evaluation"] == {}
    shortened = {"num-server-rounds": 1, "evaluate-every": 2}
    _kill(federation, fault_app, runs, name, "checkpoint-write@1", resume=True, **shortened)

    federation.run(tiny_run_config(runs, **{"run-name": name, **shortened, "resume": True}))
    rounds = {r["round"]: r for r in json.loads((runs / name / "metrics.json").read_text())["rounds"]}
    assert sorted(rounds) == [0, 1]
    assert 0.0 <= rounds[1]["central"]["dice-mean"] <= 1.0
    assert sorted(rounds[1]["site-evaluation"]) == ["site-1", "site-2", "site-3"]
    checkpoint = load_checkpoint(runs / name / "round-0001.pt")
    assert checkpoint.extra["central-metrics"] == pytest.approx(rounds[1]["central"])
    best = 0 if rounds[0]["central"]["dice-mean"] >= rounds[1]["central"]["dice-mean"] else 1
    assert load_checkpoint(runs / name / "best.pt").extra["round"] == best


def test_a_validated_round_gets_its_site_evaluation_on_resume_even_when_no_longer_due(federation, fault_app, runs):
    """The last round of a one-round run (validated) killed before its federated evaluation, then
    resumed as a two-round run that validates every 2nd round: round 1 is no longer due, but
    its central validation happened, so its sites evaluate it before round 2 trains."""
    name = "extended"
    every_2 = {"evaluate-every": 2}
    _kill(federation, fault_app, runs, name, "after-checkpoint@1", resume=False, **{"num-server-rounds": 1, **every_2})
    federation.run(tiny_run_config(runs, **{"run-name": name, "num-server-rounds": 2, **every_2, "resume": True}))
    rounds = {r["round"]: r for r in json.loads((runs / name / "metrics.json").read_text())["rounds"]}
    assert sorted(rounds) == [0, 1, 2]
    for number in (1, 2):
        assert rounds[number]["central"] and rounds[number]["site-evaluation-finished"]
        assert sorted(rounds[number]["site-evaluation"]) == ["site-1", "site-2", "site-3"]


def test_resume_with_fewer_rounds_than_the_folder_holds_fails_naming_both(federation, runs, reference):
    shortened = runs / "fewer-rounds"
    shutil.copytree(reference[0], shortened)
    history = (shortened / "metrics.json").read_text()
    with pytest.raises(RunFailed, match=rf"holds round {ROUNDS}.*num-server-rounds = 2"):
        federation.run(tiny_run_config(runs, **{"run-name": "fewer-rounds", "num-server-rounds": 2, "resume": True}))
    assert (shortened / "metrics.json").read_text() == history


def test_the_run_tells_how_to_follow_or_stop_it_when_the_stream_is_interrupted(federation, reference):
    _, run_id = reference
    logs = run_logs(run_id, PROJECT_ROOT, federation.env)
    assert f"flwr log {run_id} --stream" in logs and f"flwr stop {run_id}" in logs


def test_resume_with_every_checkpoint_unreadable_fails_naming_them(federation, runs, reference):
    broken = runs / "unreadable"
    shutil.copytree(reference[0], broken)
    for checkpoint in broken.glob("round-*.pt"):
        checkpoint.write_bytes(checkpoint.read_bytes()[:200])
    history = (broken / "metrics.json").read_text()
    with pytest.raises(RunFailed, match=r"round-0003\.pt, round-0004\.pt\) are all unreadable.*overwrite=true"):
        federation.run(tiny_run_config(runs, **{"run-name": "unreadable", "num-server-rounds": ROUNDS, "resume": True}))
    assert (broken / "metrics.json").read_text() == history  # nothing was started over


def test_two_runs_for_one_folder_leave_it_to_one_of_them(federation, runs):
    first = federation.start(tiny_run_config(runs, **{"run-name": "shared", "num-server-rounds": 1,
                                                       "learning-rate": 0.001}))
    second = federation.start(tiny_run_config(runs, **{"run-name": "shared", "num-server-rounds": 1,
                                                        "learning-rate": 0.005}))
    outcomes = {}
    for run_id, rate in ((first, 0.001), (second, 0.005)):
        try:
            wait_for_run(run_id, PROJECT_ROOT, federation.env, timeout=600)
            outcomes[rate] = "completed"
        except RunFailed as error:
            outcomes[rate] = str(error)
    completed = [rate for rate, outcome in outcomes.items() if outcome == "completed"]
    assert len(completed) == 1, outcomes
    refused = next(outcome for outcome in outcomes.values() if outcome != "completed")
    assert "is in use by run" in refused or "already holds checkpoints" in refused
    stored = json.loads((runs / "shared" / "config.json").read_text())
    assert stored["learning-rate"] == completed[0]
    assert load_checkpoint(runs / "shared" / "final.pt").extra["round"] == 1


def test_a_missing_data_dir_fails_at_start_naming_the_key(federation, tmp_path):
    settings = {"data-dir": str(tmp_path / "no-such-sites"), "server-validation-dir": str(tmp_path)}
    with pytest.raises(RunFailed, match=r"data-dir .*no-such-sites does not exist"):
        federation.run(tiny_run_config(tmp_path / "runs", **settings))


def test_a_run_whose_rounds_all_fail_ends_failed_without_a_final_model(federation, reference, tmp_path):
    sites = tmp_path / "sites"
    for number in (1, 2, 3):
        (sites / f"site-{number}" / "BraTS-GLI-00001-000").mkdir(parents=True)
        (sites / f"site-{number}" / "BraTS-GLI-00001-000" / "BraTS-GLI-00001-000-t1n.nii.gz").write_bytes(b"junk")
    validation = next(federation.cache.glob("synthetic-*/validation"))  # the reference run's
    settings = {"run-name": "untrainable", "data-dir": str(sites), "server-validation-dir": str(validation)}
    with pytest.raises(RunFailed, match="no round of this run updated the global model"):
        federation.run(tiny_run_config(tmp_path / "runs", **settings))
    folder = tmp_path / "runs" / "untrainable"
    assert not (folder / "final.pt").exists()
    rounds = json.loads((folder / "metrics.json").read_text())["rounds"]
    assert [r["aggregated"] for r in rounds[1:]] == [False, False]


def test_too_few_supernodes_fail_the_run_naming_min_available_clients(federation, tmp_path):
    settings = {"min-available-clients": 4, "client-wait-timeout": 3.0}
    with pytest.raises(RunFailed, match=r"only 3 SuperNode\(s\) connected .* min-available-clients=4"):
        federation.run(tiny_run_config(tmp_path, **settings))


def test_a_full_output_disk_is_named_in_the_runs_status(federation, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()})")
    try:
        with pytest.raises(RunFailed, match=r"ended 'finished:failed': .*cannot write .*: no space left on its disk"):
            federation.run(tiny_run_config(disk, **{"run-name": "full", "num-server-rounds": 1}))
    finally:
        subprocess.run(["umount", str(disk)], check=False)

