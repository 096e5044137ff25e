"""Flower strategies by name, and the server-optimiser state a resumed run must restore."""

from __future__ import annotations

from typing import Any

import numpy as np
from flwr.common import Parameters, Scalar
from flwr.server.strategy import FedAdam, FedAvg, FedOpt, FedProx, FedYogi, Strategy

from segguided_federation.run_config import RunConfig


def build_strategy(config: RunConfig, initial_parameters: Parameters) -> Strategy:
    """The aggregation rule named by ``config.strategy``, from Flower's own implementations.

    All of them weight client updates by the ``num_examples`` the clients report, which
    our clients set to their number of training cases.
    """
    common: dict[str, Any] = dict(
        fraction_fit=config.fraction_fit,
        fraction_evaluate=config.fraction_evaluate,
        min_fit_clients=config.min_fit_clients,
        min_evaluate_clients=config.min_evaluate_clients,
        min_available_clients=config.min_available_clients,
        accept_failures=True,
        initial_parameters=initial_parameters,
        fit_metrics_aggregation_fn=weighted_mean_metrics,
        evaluate_metrics_aggregation_fn=weighted_mean_metrics,
    )
    if config.strategy == "fedprox":
        return FedProx(**common, proximal_mu=config.proximal_mu)
    if config.strategy == "fedadam":
        return FedAdam(**common, eta=config.server_learning_rate, tau=config.server_tau)
    if config.strategy == "fedyogi":
        return FedYogi(**common, eta=config.server_learning_rate, tau=config.server_tau)
    return FedAvg(**common)


def weighted_mean_metrics(results: list[tuple[int, dict[str, Scalar]]]) -> dict[str, Scalar]:
    """Average every numeric metric over clients, weighted by their number of cases."""
    total = sum(count for count, _ in results)
    if total == 0:
        return {}
    keys = {key for _, metrics in results for key, value in metrics.items() if isinstance(value, (int, float))}
    return {
        key: sum(count * float(metrics.get(key, 0.0)) for count, metrics in results) / total
        for key in sorted(keys)
    }


def export_optimizer_state(strategy: Strategy) -> dict[str, list[np.ndarray]]:
    """The server optimiser's moments (FedAdam/FedYogi); empty for stateless strategies."""
    if not isinstance(strategy, FedOpt):
        return {}
    return {
        name: [np.array(a, copy=True) for a in value]
        for name in ("m_t", "v_t")
        if (value := getattr(strategy, name)) is not None
    }


def restore_optimizer_state(strategy: Strategy, state: dict[str, list[np.ndarray]]) -> None:
    """Put saved moments back so that a resumed FedAdam/FedYogi continues where it stopped."""
    if not state:
        return
    if not isinstance(strategy, FedOpt):
        raise ValueError(f"checkpoint holds server-optimiser state but the strategy is {type(strategy).__name__}")
    for name, value in state.items():
        setattr(strategy, name, [np.asarray(a) for a in value])
