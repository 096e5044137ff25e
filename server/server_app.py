"""The Flower ServerApp: read the run config, build the strategy, run the rounds, keep the results."""

from __future__ import annotations

import logging

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
from segguided_model.checkpoint import load_checkpoint
from segguided_model.metrics import DICE_MEAN_KEY
from segguided_model.network import SegGuidedNet
from segguided_model.state_arrays import model_to_arrays
from segguided_model.training import resolve_device, resolve_mixed_precision
from server.central_validation import CentralValidator, central_validation_cases
from server.checkpointed_strategy import CheckpointedStrategy
from server.history import RunHistory
from server.metrics_exporter import ServerMetrics
from server.privacy_accountant import PrivacyAccountant
from server.run_folder import RunFolder
from server.secure_aggregation import SecureAggregationWorkflow
from server.secure_round import SecureAggregationSettings
from server.strategies import build_strategy, restore_optimizer_state

log = logging.getLogger(__name__)

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    route_to_flower_console()
    config = RunConfig.from_flower(context.run_config)
    device = resolve_device(config.device)
    mixed_precision = resolve_mixed_precision(config.mixed_precision, device)
    folder = RunFolder.open(config, context.run_id)
    log.info("run folder: %s", folder.path)

    torch.manual_seed(config.seed)
    model = SegGuidedNet.from_config(config.model)
    resume = folder.resume_point() if config.resume else None
    completed_rounds = 0
    history = RunHistory(folder.path)
    if resume is not None:
        model = load_checkpoint(resume.checkpoint).model
        completed_rounds = resume.round
        history = RunHistory.load(folder.path, up_to_round=completed_rounds)
        log.info("resuming %s after round %d", folder.path, completed_rounds)
    folder.write_config(config)

    validator = CentralValidator(central_validation_cases(config), config.patch_size, device, mixed_precision)
    inner = build_strategy(config, ndarrays_to_parameters(model_to_arrays(model)))
    if resume is not None:
        saved = resume.extra.get("optimizer-state", {})
        restore_optimizer_state(inner, {name: [t.numpy() for t in arrays] for name, arrays in saved.items()})
    listeners, endpoint = (), None
    if config.metrics_port:
        metrics = ServerMetrics(context.run_id, folder.path.name)
        endpoint = serve_metrics(metrics.registry, config.metrics_host, config.metrics_port, "run config metrics-port")
        if completed_rounds in history.records:
            metrics.record_round(history.records[completed_rounds])
        listeners = (metrics.record_round,)
    strategy = CheckpointedStrategy(
        inner,
        model=model,
        validator=validator,
        folder=folder,
        history=history,
        completed_rounds=completed_rounds,
        min_fit_clients=config.min_fit_clients,
        fit_config={keys.RUN_SEED: config.seed},
        listeners=listeners,
    )

    remaining = config.num_server_rounds - completed_rounds
    if remaining > 0:
        legacy_context = LegacyContext(context, config=ServerConfig(num_rounds=remaining), strategy=strategy)
        fit_workflow = None
        if config.secure_aggregation:
            settings = SecureAggregationSettings.from_run_config(config)
            fit_workflow = SecureAggregationWorkflow(
                settings,
                on_round=strategy.record_secure_round,
                accountant=PrivacyAccountant(settings.privacy, rounds=completed_rounds) if settings.privacy else None,
            )
        DefaultWorkflow(fit_workflow=fit_workflow)(grid, legacy_context)
    folder.save_final(strategy.model, extra={"round": config.num_server_rounds, "run-folder": str(folder.path)})
    best = history.best_round()
    log.info("run finished: %d rounds, best central mean Dice %.3f in round %s; outputs in %s",
             config.num_server_rounds,
             history.records[best].central[DICE_MEAN_KEY] if best is not None else float("nan"),
             best, folder.path)
    if endpoint is not None:
        endpoint.close()
