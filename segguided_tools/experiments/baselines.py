"""Non-federated baselines within the federated runs' training budget: centralised and local-only.

Both start from the federated runs' initial model (``torch.manual_seed(seed)``) and train
"round" by round with the same local settings (steps, batch size, optimiser, loss), using
the framework-free ``segguided_model`` functions:

* **centralised** pools every site's training split and takes, per round, as many steps
  as all sites together take in one federated round — the same total number of optimiser
  steps as the federated run;
* **local-only** trains one site alone on its training split with that site's own steps
  per round — the sites' local-only models together take the federated total.

After every round the model is validated on the server's held-out cases, so the baseline
has a ``metrics.json`` in the federated runs' format and a ``final.pt``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Sequence

import torch

from segguided_federation import metric_keys as keys
from segguided_federation.local_training import (
    local_steps,
    round_seed,
    train_local_round,
)
from segguided_federation.run_config import RunConfig
from segguided_federation.site_data import Site, site_cache_dir
from segguided_model.checkpoint import save_checkpoint
from segguided_model.data.pipeline import build_eval_dataset
from segguided_model.evaluation import evaluate_volumes
from segguided_model.metrics import DICE_MEAN_KEY
from segguided_model.network import SegGuidedNet
from segguided_model.training import resolve_device, resolve_mixed_precision
from segguided_tools.experiments.plan import Experiment
from server.central_validation import (
    central_validation_cases,
    central_validation_folder,
)
from server.history import RunHistory

log = logging.getLogger(__name__)


def baseline_sites(experiment: Experiment, sites: Sequence[Site]) -> tuple[list, int]:
    """The training cases a baseline uses and its optimiser steps per round.

    Raises:
        ValueError: a local-only baseline names a site that does not exist.
    """
    config = experiment.config()
    if experiment.kind == "centralised":
        cases = [case for site in sites for case in site.training_cases]
        steps = sum(local_steps(config, len(site.training_cases)) for site in sites)
        return cases, steps
    if experiment.site is None or not 0 <= experiment.site < len(sites):
        raise ValueError(f"{experiment.name}: site index {experiment.site} outside the partition's {len(sites)} sites")
    site = sites[experiment.site]
    return list(site.training_cases), local_steps(config, len(site.training_cases))


def train_baseline(
    experiment: Experiment,
    config: RunConfig,
    sites: Sequence[Site],
    run_folder: Path,
    on_round: Callable[[int], None] = lambda number: None,
) -> Path:
    """Train and validate one baseline; write ``metrics.json`` after every round and ``final.pt``.

    Args:
        experiment: a ``centralised`` or ``local-only`` plan entry.
        config: its full run configuration (with ``server-validation-dir`` set).
        sites: the partition's sites, in simulation order (``cross_site.load_sites``).
        run_folder: where to write; created if missing, previous contents overwritten.
        on_round: called with each finished round number (progress).

    Returns:
        The path of ``final.pt``.
    """
    device = resolve_device(config.device)
    mixed_precision = resolve_mixed_precision(config.mixed_precision, device)
    cases, steps = baseline_sites(experiment, sites)
    validation_cache = site_cache_dir(central_validation_folder(config))
    validation = build_eval_dataset(central_validation_cases(config, validation_cache), validation_cache)
    torch.manual_seed(config.seed)
    model = SegGuidedNet.from_config(config.model)
    run_folder.mkdir(parents=True, exist_ok=True)
    history = RunHistory(run_folder)

    def validate(number: int) -> None:
        _, means = evaluate_volumes(model, validation, config.validation_window(mixed_precision), device)
        history.round(number).central = {key: float(value) for key, value in means.items()}
        history.write()

    validate(0)
    for number in range(1, config.num_server_rounds + 1):
        seed = round_seed(config.seed, number, experiment.name)
        result = train_local_round(model, cases, config, seed, device, mixed_precision, steps=steps)
        history.round(number).site_training = {
            experiment.name: {keys.LOSS: result.loss, keys.STEPS: result.steps, keys.TRAIN_CASES: len(cases)}
        }
        history.round(number).timing = {"round-seconds": result.seconds}
        validate(number)
        log.info("%s: round %d, loss %.3f, central Dice %.3f", experiment.name, number, result.loss,
                 history.round(number).central[DICE_MEAN_KEY])
        on_round(number)
    return save_checkpoint(run_folder / "final.pt", model, extra={"round": config.num_server_rounds})
