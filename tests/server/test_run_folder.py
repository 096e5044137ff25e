"""The run folder: one run at a time, no silent restart, no leftovers, a history that loses no round."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
from pathlib import Path

import pytest

from segguided_federation.run_config import RunConfig
from segguided_model.checkpoint import load_checkpoint, save_checkpoint
from segguided_model.network import SegGuidedNet
from server.history import RoundRecord, RunHistory
from server.run_folder import ROUND_RECORD_KEY, RunFolder, RunFolderError


def _config(output: Path, **overrides) -> RunConfig:
    return RunConfig.from_flower({"output-dir": str(output), "run-name": "study", **overrides})


def _model() -> SegGuidedNet:
    return SegGuidedNet(base_width=2, levels=2)


def _hold_lock(output: str, started, release) -> None:
    with RunFolder.open(_config(Path(output)), run_id=111):
        started.set()
        release.wait(30)


def test_a_second_run_for_a_folder_in_use_is_refused_naming_the_holder(tmp_path):
    context = multiprocessing.get_context("spawn")
    started, release = context.Event(), context.Event()
    holder = context.Process(target=_hold_lock, args=(str(tmp_path), started, release))
    holder.start()
    try:
        assert started.wait(60)
        with pytest.raises(RunFolderError, match=rf"in use by run 111 \(process {holder.pid} on "):
            RunFolder.open(_config(tmp_path, **{"learning-rate": 0.01}), run_id=222)
    finally:
        release.set()
        holder.join(30)
    # The holder has ended (its lock went with it): the folder can be opened again.
    RunFolder.open(_config(tmp_path), run_id=333).close()


def test_a_killed_holders_lock_does_not_block_the_folder(tmp_path):
    code = (
        "import os, signal, sys; from pathlib import Path; from server.run_folder import RunFolder; "
        "from segguided_federation.run_config import RunConfig; "
        f"RunFolder.open(RunConfig.from_flower({{'output-dir': {str(tmp_path)!r}, 'run-name': 'study'}}), 1); "
        "os.kill(os.getpid(), signal.SIGKILL)"
    )
    subprocess.run(["python", "-c", code], check=False, timeout=120)
    with RunFolder.open(_config(tmp_path), run_id=2) as folder:
        assert json.loads((folder.path / ".run.owner").read_text())["run-id"] == "2"


def test_a_new_run_in_a_folder_with_checkpoints_is_refused_unless_overwrite(tmp_path):
    with RunFolder.open(_config(tmp_path), run_id=1) as folder:
        folder.write_config(_config(tmp_path))
        folder.save_round(_model(), 1, extra={"round": 1}, is_best=True)
        (folder.path / "metrics.json").write_text('{"rounds": []}')
    with pytest.raises(RunFolderError, match="already holds checkpoints.*resume=true.*overwrite=true"):
        RunFolder.open(_config(tmp_path), run_id=2)
    with RunFolder.open(_config(tmp_path, overwrite=True), run_id=3) as folder:
        assert sorted(p.name for p in folder.path.iterdir()) == [".run.lock", ".run.owner"]


def test_resume_with_every_checkpoint_unreadable_fails_naming_the_files(tmp_path):
    with RunFolder.open(_config(tmp_path), run_id=1) as folder:
        folder.write_config(_config(tmp_path))
        for number in (1, 2):
            folder.save_round(_model(), number, extra={"round": number}, is_best=False)
            path = folder.round_checkpoint(number)
            path.write_bytes(path.read_bytes()[:100])
    with RunFolder.open(_config(tmp_path, resume=True), run_id=2) as folder:
        with pytest.raises(RunFolderError, match=r"round-0001\.pt, round-0002\.pt\) are all unreadable.*overwrite=true"):
            folder.resume_point()


def test_resume_skips_a_damaged_newest_checkpoint_for_the_one_before(tmp_path):
    with RunFolder.open(_config(tmp_path), run_id=1) as folder:
        folder.write_config(_config(tmp_path))
        for number in (1, 2):
            folder.save_round(_model(), number, extra={"round": number}, is_best=False)
        folder.round_checkpoint(2).write_bytes(b"truncated")
        assert folder.resume_point().round == 1


def test_temporary_files_of_interrupted_writes_are_removed_when_the_folder_is_opened(tmp_path):
    run = tmp_path / "study"
    run.mkdir()
    stale = run / ".round-0002.pt.k3j2x1ab.tmp"
    stale.write_bytes(b"half a checkpoint")
    keep = run / "notes.tmp"
    keep.write_text("not ours")
    RunFolder.open(_config(tmp_path), run_id=1).close()
    assert not stale.exists() and keep.exists()


def test_best_is_repaired_when_a_crash_came_between_the_round_and_best(tmp_path):
    with RunFolder.open(_config(tmp_path), run_id=1) as folder:
        folder.save_round(_model(), 1, extra={"round": 1}, is_best=True)
        folder.save_round(_model(), 2, extra={"round": 2}, is_best=False)  # killed before best.pt
        folder.ensure_best(2)
        assert load_checkpoint(folder.path / "best.pt").extra["round"] == 2


def test_a_round_missing_from_the_history_is_rebuilt_from_its_checkpoint(tmp_path):
    with RunFolder.open(_config(tmp_path), run_id=1) as folder:
        history = RunHistory(folder.path)
        for number in (0, 1):
            history.round(number).central = {"dice-mean": 0.1 * number}
        history.write()
        lost = RoundRecord(round=2, central={"dice-mean": 0.5}, clients_succeeded=3)
        folder.save_round(_model(), 2, extra={"round": 2, ROUND_RECORD_KEY: lost.to_json()}, is_best=True)

        restored = RunHistory.load(folder.path, up_to_round=2, stored_record=folder.round_record)
        assert sorted(restored.records) == [0, 1, 2]
        assert restored.records[2].to_json() == lost.to_json()


def test_a_resumed_round_validated_after_the_resume_keeps_its_scores_when_the_history_write_was_cut_off(tmp_path):
    """Round 2 skipped validation (evaluate-every); a resume validated it and rewrote its checkpoint,
    then died before the history write: the row gets the checkpoint's scores, the rest of it stays."""
    with RunFolder.open(_config(tmp_path), run_id=1) as folder:
        history = RunHistory(folder.path)
        history.round(0).central = {"dice-mean": 0.1}
        history.round(2).clients_succeeded = 3
        history.round(2).timing = {"round-seconds": 9.0}
        history.write()
        validated = RoundRecord(round=2, central={"dice-mean": 0.5}, timing={"central-validation-seconds": 4.0})
        folder.save_round(_model(), 2, extra={"round": 2, ROUND_RECORD_KEY: validated.to_json()}, is_best=True)

        restored = RunHistory.load(folder.path, up_to_round=2, stored_record=folder.round_record).records[2]
        assert restored.central == {"dice-mean": 0.5}
        assert restored.clients_succeeded == 3
        assert restored.timing == {"round-seconds": 9.0, "central-validation-seconds": 4.0}


def test_rounds_after_the_resume_point_are_dropped_from_the_history(tmp_path):
    history = RunHistory(tmp_path)
    for number in range(4):
        history.round(number).central = {"dice-mean": 0.1 * number}
    history.write()
    assert sorted(RunHistory.load(tmp_path, up_to_round=2).records) == [0, 1, 2]


@pytest.fixture
def tiny_disk(tmp_path):
    """A 512 KiB tmpfs: a real file system that fills up (needs root, as on the CI machine)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()})")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=False)


def test_a_full_disk_names_the_file_and_the_space_and_keeps_earlier_checkpoints(tiny_disk):
    small = SegGuidedNet(base_width=2, levels=2)
    big = SegGuidedNet(base_width=16, levels=3)  # about 1.3 MB
    with RunFolder.open(_config(tiny_disk), run_id=1) as folder:
        folder.save_round(small, 1, extra={"round": 1}, is_best=False)
        with pytest.raises(OSError, match=r"cannot write .*round-0002\.pt: no space left on its disk \(it needs "
                                          r"[\d.]+ MiB, [\d.]+ MiB free"):
            folder.save_round(big, 2, extra={"round": 2}, is_best=False)
        assert load_checkpoint(folder.round_checkpoint(1)).extra["round"] == 1
        assert not folder.round_checkpoint(2).exists()
        assert [p.name for p in folder.path.iterdir() if p.name.endswith(".tmp")] == []


def test_a_disk_that_fills_while_writing_is_reported_the_same_way(tiny_disk):
    from segguided_model.atomic_write import atomic_output

    target = tiny_disk / "metrics.json"
    with pytest.raises(OSError, match=r"cannot write .*metrics\.json: no space left on its disk"):
        with atomic_output(target) as handle:  # size unknown up front
            handle.write(b"x" * 2**20)
    assert not target.exists()
    save_checkpoint(tiny_disk / "small.pt", _model())  # the space was given back


DP_RUN = {"differential-privacy": True, "dp-noise-multiplier": 1.0, "dp-clipping-norm": 0.5}


def _dp_config(tmp_path, **overrides) -> RunConfig:
    values = {**RunConfig().to_flower(), "output-dir": str(tmp_path), "run-name": "run", **DP_RUN, **overrides}
    return RunConfig.from_flower(values)


@pytest.mark.parametrize(
    "key, changes",
    [
        ("differential-privacy", {"differential-privacy": False}),
        ("dp-noise-multiplier", {"dp-noise-multiplier": 2.0}),
        ("dp-clipping-norm", {"dp-clipping-norm": 1.0}),
        ("dp-delta", {"dp-delta": 1e-6}),
        ("min-fit-clients", {"min-fit-clients": 3, "min-available-clients": 3}),
        # DP needs fraction-fit=1, so this resume also turns DP off; either change is refused.
        ("fraction-fit", {"fraction-fit": 0.5, "differential-privacy": False}),
    ],
)
def test_resume_refuses_a_change_to_privacy_or_sampling(tmp_path, key, changes):
    with RunFolder.open(_dp_config(tmp_path), run_id=1) as folder:
        folder.write_config(_dp_config(tmp_path))
    with pytest.raises(RunFolderError, match=key):
        RunFolder.open(_dp_config(tmp_path, resume=True, **changes), run_id=2)


def test_resume_with_the_same_settings_is_accepted(tmp_path):
    with RunFolder.open(_dp_config(tmp_path), run_id=1) as folder:
        folder.write_config(_dp_config(tmp_path))
    with RunFolder.open(_dp_config(tmp_path, resume=True, **{"num-server-rounds": 9}), run_id=2) as folder:
        assert folder.path.name == "run"
