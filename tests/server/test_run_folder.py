"""The run folder: a resumed run keeps the settings its checkpoints and its privacy budget depend on."""

from __future__ import annotations

import pytest

from segguided_federation.run_config import RunConfig
from server.run_folder import RunFolder, RunFolderError

DP_RUN = {"differential-privacy": True, "dp-noise-multiplier": 1.0, "dp-clipping-norm": 0.5}


def _config(tmp_path, **overrides) -> RunConfig:
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
    RunFolder.open(_config(tmp_path), run_id=1).write_config(_config(tmp_path))
    with pytest.raises(RunFolderError, match=key):
        RunFolder.open(_config(tmp_path, resume=True, **changes), run_id=2)


def test_resume_with_the_same_settings_is_accepted(tmp_path):
    RunFolder.open(_config(tmp_path), run_id=1).write_config(_config(tmp_path))
    assert RunFolder.open(_config(tmp_path, resume=True, **{"num-server-rounds": 9}), run_id=2).path.name == "run"
