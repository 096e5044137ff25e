"""One hospital as a Flower NumPyClient: local training and federated evaluation."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Mapping

import torch
from flwr.client import NumPyClient
from flwr.common import NDArrays, Scalar

from client.metrics_exporter import record_round
from client.site_config import evaluation_metrics_shared
from segguided_federation import metric_keys as keys
from segguided_federation.local_training import round_seed, train_local_round
from segguided_federation.run_config import RunConfig
from segguided_federation.site_data import Site, load_site
from segguided_model.data.pipeline import build_eval_dataset, cache_size_bytes
from segguided_model.evaluation import evaluate_volumes
from segguided_model.metrics import DICE_MEAN_KEY
from segguided_model.network import SegGuidedNet
from segguided_model.state_arrays import load_arrays, model_to_arrays
from segguided_model.training import resolve_device, resolve_mixed_precision

log = logging.getLogger(__name__)


class SiteClient(NumPyClient):
    """Trains and evaluates the global model on one site's data.

    The site is loaded (QA gate, split) inside ``fit``/``evaluate``, so a site whose data
    is unusable reports a failed round instead of crashing its SuperNode. What it reports
    is the contract in ``segguided_federation.metric_keys``.
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
        qa_seconds = time.perf_counter() - started
        server_round = int(config.get(keys.SERVER_ROUND, 0))
        model = self._model(parameters)
        result = train_local_round(
            model,
            site.training_cases,
            self.config,
            seed=round_seed(int(config.get(keys.RUN_SEED, self.config.seed)), server_round, site.site_id),
            device=self.device,
            mixed_precision=self.mixed_precision,
            proximal_mu=float(config.get(keys.PROXIMAL_MU, 0.0)),
            cache_dir=site.cache_dir,
            progress_label=f"{site.site_id}, round {server_round}",
        )
        log.info("%s: %.1f MiB of preprocessed volumes kept in %s", site.site_id,
                 cache_size_bytes(site.cache_dir) / 2**20, site.cache_dir)
        metrics: dict[str, Scalar] = {
            keys.SITE_ID: site.site_id,
            keys.TRAIN_CASES: len(site.training_cases),
            keys.REJECTED_CASES: len(site.rejected),
            keys.LOSS: result.loss,
            keys.SEGMENTATION_LOSS: result.segmentation_loss,
            keys.ATTENTION_LOSS: result.attention_loss,
            keys.STEPS: result.steps,
            keys.STEPS_PER_SECOND: result.steps_per_second,
            keys.TRAIN_SECONDS: result.seconds,
            keys.DATA_SECONDS: result.data_seconds,
            keys.QA_SECONDS: qa_seconds,
            keys.CLIENT_SECONDS: time.perf_counter() - started,
        }
        if self.device.type == "cuda":
            metrics[keys.DEVICE_MEMORY_PEAK_BYTES] = torch.cuda.max_memory_allocated(self.device)
        if "metrics-file" in self.node_config:  # deployment: read by python -m client.metrics_exporter
            record_round(Path(str(self.node_config["metrics-file"])), server_round, metrics)
        # FedAvg weights each site by its number of training cases, not by batches.
        return model_to_arrays(model), len(site.training_cases), metrics

    def evaluate(self, parameters: NDArrays, config: dict[str, Scalar]) -> tuple[float, int, dict[str, Scalar]]:
        if self.config.differential_privacy or not evaluation_metrics_shared(self.node_config):
            # The site's validation results stay here (site config share-evaluation-metrics, off by
            # default, and never under DP): the server learns only that they were withheld.
            return 0.0, 0, {keys.EVALUATION_WITHHELD: 1}
        started = time.perf_counter()
        site = load_site(self.node_config, self.config)
        qa_seconds = time.perf_counter() - started
        if not site.validation_cases:
            return 0.0, 0, {keys.SITE_ID: site.site_id, keys.EVALUATION_CASES: 0}
        model = self._model(parameters)
        volumes = build_eval_dataset(site.validation_cases, site.cache_dir)
        _, means = evaluate_volumes(model, volumes, self.config.validation_window(self.mixed_precision), self.device)
        metrics: dict[str, Scalar] = {keys.SITE_ID: site.site_id, keys.EVALUATION_CASES: len(site.validation_cases)}
        metrics.update({key: float(value) for key, value in means.items()})
        metrics.update({keys.QA_SECONDS: qa_seconds, keys.CLIENT_SECONDS: time.perf_counter() - started})
        return 1.0 - float(means[DICE_MEAN_KEY]), len(site.validation_cases), metrics
