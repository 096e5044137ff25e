"""One hospital as a Flower NumPyClient: local training and federated evaluation."""

from __future__ import annotations

import time
import zlib
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from flwr.client import NumPyClient
from flwr.common import NDArrays, Scalar

from client.metrics_exporter import record_round
from client.site import Site, load_site
from segguided_model.data.pipeline import build_eval_dataset, build_train_loader
from segguided_model.evaluation import evaluate_volumes
from segguided_model.losses import SegGuidedLoss
from segguided_model.network import SegGuidedNet
from segguided_model.state_arrays import load_arrays, model_to_arrays
from segguided_model.training import (
    TrainingSettings,
    resolve_device,
    resolve_mixed_precision,
    train_steps,
)
from server.config import RunConfig


def round_seed(seed: int, server_round: int, site_id: str) -> int:
    """A seed per (run seed, round, site): reproducible, and different across sites and rounds."""
    return zlib.crc32(f"{seed}/{server_round}/{site_id}".encode())


class SiteClient(NumPyClient):
    """Trains and evaluates the global model on one site's data.

    The site is loaded (QA gate, split) inside ``fit``/``evaluate``, so a site whose data
    is unusable reports a failed round instead of crashing its SuperNode.
    """

    def __init__(self, node_config: Mapping[str, Any], config: RunConfig) -> None:
        self.node_config = dict(node_config)
        self.config = config
        self.device = resolve_device(config.device)
        self.mixed_precision = resolve_mixed_precision(config.mixed_precision, self.device)

    def _model(self, parameters: NDArrays) -> SegGuidedNet:
        model = SegGuidedNet.from_config(self.config.model)
        load_arrays(model, parameters)
        return model

    def get_parameters(self, config: dict[str, Scalar]) -> NDArrays:
        return model_to_arrays(SegGuidedNet.from_config(self.config.model))

    def fit(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[NDArrays, int, dict[str, Scalar]]:
        started = time.perf_counter()
        site: Site = load_site(self.node_config, self.config)
        server_round = int(config.get("server-round", 0))
        seed = round_seed(int(config.get("seed", self.config.seed)), server_round, site.site_id)
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        model = self._model(parameters)
        loader = build_train_loader(
            site.training_cases,
            patch_size=self.config.patch_shape,
            batch_size=self.config.batch_size,
            seed=seed,
            num_workers=self.config.data_loader_workers,
            cache_dir=site.cache_dir,
        )
        steps = self.config.local_epochs * len(loader) if self.config.local_epochs else self.config.local_steps
        settings = TrainingSettings(
            steps=steps,
            learning_rate=self.config.learning_rate,
            optimizer=self.config.optimizer,
            weight_decay=self.config.weight_decay,
            proximal_mu=float(config.get("proximal_mu", 0.0)),
            mixed_precision=self.mixed_precision,
        )
        loss_fn = SegGuidedLoss(attention_weight=self.config.attention_weight)
        result = train_steps(model, loader, loss_fn, settings, self.device)
        metrics: dict[str, Scalar] = {
            "site-id": site.site_id,
            "train-cases": len(site.training_cases),
            "rejected-cases": len(site.rejected),
            "loss": result.loss,
            "segmentation-loss": result.segmentation_loss,
            "attention-loss": result.attention_loss,
            "steps": result.steps,
            "steps-per-second": result.steps_per_second,
            "train-seconds": result.seconds,
            "client-seconds": time.perf_counter() - started,
        }
        if self.device.type == "cuda":
            metrics["device-memory-peak-bytes"] = torch.cuda.max_memory_allocated(self.device)
        if "metrics-file" in self.node_config:  # deployment: read by python -m client.metrics_exporter
            record_round(Path(str(self.node_config["metrics-file"])), server_round, metrics)
        # FedAvg weights each site by its number of training cases, not by batches.
        return model_to_arrays(model), len(site.training_cases), metrics

    def evaluate(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[float, int, dict[str, Scalar]]:
        site = load_site(self.node_config, self.config)
        if not site.validation_cases:
            return 0.0, 0, {"site-id": site.site_id, "cases": 0}
        model = self._model(parameters)
        _, means = evaluate_volumes(
            model, build_eval_dataset(site.validation_cases), self.config.patch_shape, self.device, self.mixed_precision
        )
        metrics: dict[str, Scalar] = {"site-id": site.site_id, "cases": len(site.validation_cases)}
        metrics.update({key: float(value) for key, value in means.items()})
        return 1.0 - float(means["dice-mean"]), len(site.validation_cases), metrics
