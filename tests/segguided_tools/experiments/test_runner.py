"""Runner pieces that need no simulation: the run-config string, and finishing a trained run."""

from __future__ import annotations

import io
import json

import pytest
import tomllib

from segguided_model.checkpoint import save_checkpoint
from segguided_model.network import SegGuidedNet
from segguided_tools.experiments.grid import load_grid, run_config_keys
from segguided_tools.experiments.progress import Progress
from segguided_tools.experiments.results import ResultMismatch, read_result
from segguided_tools.experiments.runner import GridRunner
from segguided_tools.local_simulation import PROJECT_ROOT, run_config_argument

needs_secure_aggregation_key = pytest.mark.skipif(
    "secure-aggregation" not in run_config_keys(), reason="run-config key secure-aggregation not in segguided_federation/run_config.py yet"
)


def test_run_config_argument_is_toml_that_flower_reads_back():
    settings = {"strategy": "fedprox", "patch-size": "32", "resume": True, "dp-delta": 1e-05, "local-steps": 3,
                "data-dir": "/tmp/a b/c"}
    text = run_config_argument(settings)
    assert text == 'strategy="fedprox" patch-size="32" resume=true dp-delta=1e-05 local-steps=3 data-dir="/tmp/a b/c"'
    # each key=value is a TOML assignment, as Flower parses --run-config
    assert tomllib.loads("\n".join(run_config_argument({k: v}) for k, v in settings.items())) == settings


@needs_secure_aggregation_key
def test_a_trained_run_without_results_is_evaluated_not_retrained(tmp_path):
    runner = GridRunner(load_grid(PROJECT_ROOT / "experiments" / "tiny.toml"), tmp_path / "results", io.StringIO())
    plan = runner.prepare()
    experiment = plan.federated[0]
    config = runner.config(experiment)
    run_folder = tmp_path / "results" / "runs" / experiment.name
    run_folder.mkdir(parents=True)
    rounds = [{"round": n, "central": {"dice-mean": 0.1 * n}} for n in range(config.num_server_rounds + 1)]
    (run_folder / "metrics.json").write_text(json.dumps({"rounds": rounds}))
    save_checkpoint(run_folder / "final.pt", SegGuidedNet.from_config(config.model))

    progress = Progress(1, config.num_server_rounds, io.StringIO())
    progress.start(1, experiment.name, config.num_server_rounds)
    result = runner._run_one(experiment, progress)

    assert runner._federation is None  # no simulation was started
    assert [r["round"] for r in result.rounds] == list(range(config.num_server_rounds + 1))
    assert sorted(result.cross_site["sites"]) == ["site-01", "site-02"]
    assert result.convergence["rounds-within-budget"] == config.num_server_rounds
    assert read_result(tmp_path / "results" / "experiments" / experiment.name, experiment.fingerprint) == result
    with pytest.raises(ResultMismatch, match="delete that folder to rerun it"):
        read_result(tmp_path / "results" / "experiments" / experiment.name, "0" * 16)
