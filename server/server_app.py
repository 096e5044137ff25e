"""The Flower ServerApp: read the run config, build the strategy, run the rounds, keep the results."""

from __future__ import annotations

import logging
from functools import partial

import torch
from flwr.app import Context
from flwr.common import ndarrays_to_parameters
from flwr.server import LegacyContext, ServerConfig
from flwr.server.workflow import DefaultWorkflow
from flwr.serverapp import Grid, ServerApp

from segguided_federation import metric_keys as keys
from segguided_federation.logging_setup import route_to_flower_console
from segguided_federation.metrics_endpoint import serve_metrics
from segguided_federation.run_config import RunConfig
from segguided_federation.site_data import site_cache_dir
from segguided_model.checkpoint import load_checkpoint
from segguided_model.metrics import DICE_MEAN_KEY
from segguided_model.network import SegGuidedNet
from segguided_model.state_arrays import model_to_arrays
from segguided_model.training import resolve_device, resolve_mixed_precision
from server.central_validation import (
    CentralValidator,
    central_validation_cases,
    central_validation_folder,
)
from server.checkpointed_strategy import CheckpointedStrategy
from server import decodable_replies
from server.history import RunHistory
from server.metrics_exporter import ServerMetrics
from server.plain_replies import ReplyBounds
from server.privacy_accountant import PrivacyAccountant
from server.prompt_grid import PromptGrid
from server.resumed_round import EvaluateInterruptedRound, evaluate_interrupted_round, lacks_evaluation
from server.run_folder import RunFolder, RunFolderError
from server.secure_aggregation import SecureAggregationWorkflow
from server.secure_round import SecureAggregationSettings
from server.startup_checks import check_data_folders, check_federation_size
from server.strategies import build_strategy, restore_optimizer_state
from server.supernode_wait import PatientClientManager, wait_for_supernodes

log = logging.getLogger(__name__)

app = ServerApp()


class NothingAggregated(RuntimeError):
    """Every round of the run failed to aggregate: there is no trained model to keep."""


@app.main()
def main(grid: Grid, context: Context) -> None:
    route_to_flower_console()
    run_server(grid, context)


def run_server(grid: Grid, context: Context) -> None:
    """The ServerApp's work: check the configuration, lock the run folder, run the rounds, keep the results.

    Raises:
        RunConfigError, StartupCheckError: the run config cannot work (names the key).
        RunFolderError: the run folder is in use, or cannot be resumed as asked.
        SuperNodesUnavailable: fewer than min-available-clients SuperNodes within client-wait-timeout.
        NothingAggregated: no round updated the global model (no final.pt is written).
        DiskFullError: a checkpoint or the history did not fit on the disk.
    """
    log.info(
        "run %s: if you stop following it (Ctrl-C), it goes on; follow it again with `flwr log %s --stream`, "
        "stop it with `flwr stop %s`", context.run_id, context.run_id, context.run_id,
    )
    config = RunConfig.from_flower(context.run_config)
    check_data_folders(config)
    with RunFolder.open(config, context.run_id) as folder:
        log.info("run folder: %s", folder.path)
        _run_rounds(grid, context, config, folder)


def _run_rounds(grid: Grid, context: Context, config: RunConfig, folder: RunFolder) -> None:
    device = resolve_device(config.device)
    mixed_precision = resolve_mixed_precision(config.mixed_precision, device)
    torch.manual_seed(config.seed)
    model = SegGuidedNet.from_config(config.model)
    resume = folder.resume_point() if config.resume and not config.overwrite else None
    completed_rounds = 0
    history = RunHistory(folder.path)
    if resume is not None:
        model = load_checkpoint(resume.checkpoint).model
        completed_rounds = resume.round
        if completed_rounds > config.num_server_rounds:
            raise RunFolderError(
                f"cannot resume {folder.path}: it holds round {completed_rounds}, beyond num-server-rounds = "
                f"{config.num_server_rounds}; set num-server-rounds to at least {completed_rounds}, or pick a new "
                "run-name (or overwrite=true) to start afresh"
            )
        history = RunHistory.load(folder.path, up_to_round=completed_rounds, stored_record=folder.round_record)
        history.write()
        folder.ensure_best(history.best_round())
        log.info("resuming %s after round %d", folder.path, completed_rounds)
    folder.write_config(config)

    supernodes = wait_for_supernodes(
        lambda: len(grid.get_node_ids()), config.min_available_clients, config.client_wait_timeout, "run start"
    )
    check_federation_size(config, supernodes)
    validation_cache = site_cache_dir(central_validation_folder(config))
    validator = CentralValidator(
        central_validation_cases(config, validation_cache), config.validation_window(mixed_precision), device,
        validation_cache,
    )
    inner = build_strategy(config, ndarrays_to_parameters(model_to_arrays(model)))
    if resume is not None:
        saved = resume.extra.get("optimizer-state", {})
        restore_optimizer_state(inner, {name: [t.numpy() for t in arrays] for name, arrays in saved.items()})
    listeners, endpoint = (), None
    if config.metrics_port:
        metrics = ServerMetrics(context.run_id, folder.path.name)
        endpoint = serve_metrics(metrics.registry, config.metrics_host, config.metrics_port, "run config metrics-port")
        if completed_rounds in history.records:
            metrics.record_round(history.records[completed_rounds], received_here=False)
        listeners = (metrics.record_round,)
    strategy = CheckpointedStrategy(
        inner,
        model=model,
        validator=validator,
        folder=folder,
        history=history,
        completed_rounds=completed_rounds,
        num_rounds=config.num_server_rounds,
        min_fit_clients=config.min_fit_clients,
        fit_config={keys.RUN_SEED: config.seed},
        reply_bounds=ReplyBounds.from_run_config(config),
        secure_aggregation=config.secure_aggregation,
        listeners=listeners,
        validates_after=config.validates_after,
    )
    # A run killed after round k's checkpoint but before its federated evaluation resumes from
    # round k without it (round 0 has none: the initial model is only validated centrally); so
    # does a round that skipped validation (evaluate-every) and is the last of the resumed run.
    # The strategy validates such a round centrally when Flower evaluates the initial parameters.
    unscored = resume is not None and completed_rounds > 0 and lacks_evaluation(
        history.round(completed_rounds), config.validates_after(completed_rounds), config.fraction_evaluate
    )
    try:
        remaining = config.num_server_rounds - completed_rounds
        legacy_context = LegacyContext(
            context,
            config=ServerConfig(num_rounds=remaining),
            strategy=strategy,
            client_manager=PatientClientManager(config.client_wait_timeout),
        )
        # Plain training and federated evaluation: a reply Flower cannot decode, or none within
        # reply-timeout, fails only its site (server/decodable_replies.py).
        evaluate_workflow = partial(decodable_replies.evaluate_workflow, timeout=config.reply_timeout)
        if remaining > 0:
            fit_workflow = partial(decodable_replies.fit_workflow, timeout=config.reply_timeout)
            if config.secure_aggregation:
                settings = SecureAggregationSettings.from_run_config(config)
                fit_workflow = SecureAggregationWorkflow(
                    settings,
                    on_round=strategy.record_secure_round,
                    accountant=PrivacyAccountant(settings.privacy, rounds=completed_rounds) if settings.privacy else None,
                    round_offset=completed_rounds,
                )
            DefaultWorkflow(
                fit_workflow=EvaluateInterruptedRound(fit_workflow, evaluate_workflow, pending=unscored),
                evaluate_workflow=evaluate_workflow,
            )(PromptGrid(grid, round_offset=completed_rounds), legacy_context)
        elif unscored:
            evaluate_interrupted_round(PromptGrid(grid, round_offset=completed_rounds), legacy_context, evaluate_workflow)
    finally:
        if endpoint is not None:
            endpoint.close()
    _finish(config, folder, history, strategy.model)


def _finish(config: RunConfig, folder: RunFolder, history: RunHistory, model: SegGuidedNet) -> None:
    """Write ``final.pt`` and the closing log line, or fail the run if no round aggregated."""
    aggregated = history.aggregated_rounds()
    if not aggregated:
        reasons = sorted({reason for record in history.records.values() for reason in record.failures})
        raise NothingAggregated(
            f"no round of this run updated the global model ({config.num_server_rounds} round(s) tried), so no "
            f"final.pt was written; the clients' reasons: {'; '.join(reasons[:5]) or 'none recorded'} "
            f"(history in {folder.path / 'metrics.json'})"
        )
    folder.save_final(model, extra={"round": config.num_server_rounds, "run-folder": str(folder.path)})
    best = history.best_round()
    skipped = config.num_server_rounds - len(aggregated)
    log.info("run finished: %d rounds (%d aggregated%s), best central mean Dice %.3f in round %s; outputs in %s",
             config.num_server_rounds, len(aggregated), f", {skipped} not" if skipped else "",
             history.records[best].central[DICE_MEAN_KEY] if best is not None else float("nan"),
             best, folder.path)
