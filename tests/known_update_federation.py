"""An in-process secure federation of hospitals with known updates, so the exact FedAvg is known.

Each hospital is a ``NumPyClient`` that returns the global model plus a fixed random
update, its case count and a loss; the real workflow and the real client mods run over
``in_process_federation.InProcessGrid``. Attack tests pass the grid's hooks (``outgoing``,
``incoming``) and per-node node configs (identity keys, rosters, hospital policy).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from flwr.app import Context
from flwr.client import NumPyClient
from flwr.clientapp import ClientApp
from flwr.server.strategy import FedAvg, Strategy
from in_process_federation import InProcessGrid, legacy_context, run_round

from client.client_app import MODS
from segguided_federation.run_config import RunConfig
from segguided_federation.secure_encoding import FixedPointCodec
from segguided_tools.credentials import create_supernode_key_pair
from server.secure_aggregation import SecureAggregationWorkflow
from server.secure_round import SecureAggregationSettings, SecureRoundReport

SHAPES = [(6, 5), (7,), (2, 3, 4)]
CASES = {1: 12, 2: 3, 3: 30, 4: 7}


class KnownUpdateClient(NumPyClient):
    """Returns the global model plus a fixed update, like a hospital after local training."""

    def __init__(self, update: list[np.ndarray], cases: int, loss: float) -> None:
        self.update, self.cases, self.loss = update, cases, loss

    def fit(self, parameters, config):
        local = [p + u for p, u in zip(parameters, self.update)]
        metrics = {"loss": self.loss, "segmentation-loss": self.loss, "attention-loss": 0.0, "site-id": "x"}
        return local, self.cases, metrics


@dataclass
class KnownUpdateFederation:
    """The grid, the server's context and workflow, and every hospital's true update."""

    grid: InProcessGrid
    context: object
    workflow: SecureAggregationWorkflow
    initial: list[np.ndarray]
    updates: dict[int, list[np.ndarray]]
    losses: dict[int, float]
    cases: dict[int, int]
    reports: list[SecureRoundReport] = field(default_factory=list)

    def run(self, server_round: int = 1) -> list[np.ndarray]:
        """One fit round; the global model afterwards."""
        return run_round(self.workflow, self.grid, self.context, server_round)

    def fedavg(self, nodes, start: list[np.ndarray] | None = None) -> list[np.ndarray]:
        """Exact case-weighted FedAvg of ``nodes``' updates applied to ``start`` (default: the initial model)."""
        start = self.initial if start is None else start
        total = sum(self.cases[n] for n in nodes)
        return [
            g + sum(self.cases[n] * self.updates[n][i].astype(np.float64) for n in nodes) / total
            for i, g in enumerate(start)
        ]

    def tolerance(self) -> float:
        """The documented tolerance of the secure aggregate, plus float32 rounding."""
        return FixedPointCodec(len(self.cases), 1000, 1.0).tolerance + 1e-7


def known_update_federation(
    run_config: dict | None = None,
    cases: dict[int, int] = CASES,
    seed: int = 0,
    strategy: Strategy | None = None,
    on_round: Callable[[int, SecureRoundReport], None] = lambda number, report: None,
    **grid_options,
) -> KnownUpdateFederation:
    """A federation of ``cases``' hospitals (node id → training cases) running the app's client mods.

    Args:
        run_config: run-config keys that differ from the defaults.
        cases: training cases per node id.
        seed: seeds the updates, losses and initial model.
        strategy: the server's strategy (default: FedAvg over every client, failures accepted).
        on_round: also called with each round's report (the reports are kept in ``reports`` too).
        grid_options: passed to ``InProcessGrid`` (``silence``, ``node_configs``, ``outgoing``, ``incoming``).
    """
    rng = np.random.default_rng(seed)
    updates = {n: [rng.normal(0, 0.02, s).astype(np.float32) for s in SHAPES] for n in cases}
    losses = {n: float(rng.uniform(0.5, 2.0)) for n in cases}

    def app(node: int) -> ClientApp:
        def client_fn(context: Context):
            return KnownUpdateClient(updates[node], cases[node], losses[node]).to_client()

        return ClientApp(client_fn=client_fn, mods=list(MODS))

    # A silent node is waited for this long in each stage, as a real timeout would.
    config = {**RunConfig().to_flower(), "secure-aggregation-timeout": 0.5, **(run_config or {})}
    grid = InProcessGrid({n: app(n) for n in cases}, config, **grid_options)
    initial = [rng.normal(0, 0.1, s).astype(np.float32) for s in SHAPES]
    strategy = strategy or FedAvg(fraction_fit=1.0, min_fit_clients=2, min_available_clients=2, accept_failures=True)
    reports: list[SecureRoundReport] = []
    workflow = SecureAggregationWorkflow(
        SecureAggregationSettings.from_run_config(RunConfig.from_flower(config)),
        on_round=lambda number, report: (reports.append(report), on_round(number, report)),
    )
    return KnownUpdateFederation(
        grid, legacy_context(grid, strategy, initial), workflow, initial, updates, losses, dict(cases), reports
    )


def registered_identities(folder: Path, nodes, unregistered: tuple[int, ...] = ()) -> dict[int, dict]:
    """Node configs that give each node a SuperNode key and the roster of every registered node's public key.

    Args:
        folder: where the keys and the roster are written.
        nodes: node ids.
        unregistered: nodes whose key is left off the roster (they still get one, and the roster).

    Returns:
        ``{node id: node config}`` with ``secure-aggregation-identity-key`` and ``secure-aggregation-roster``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    roster = folder / "roster.pub"
    lines = []
    configs = {}
    for node in nodes:
        private, public = create_supernode_key_pair(comment=f"hospital-{node}")
        key = folder / f"hospital-{node}.key"
        key.write_bytes(private)
        if node not in unregistered:
            lines.append(public.decode())
        configs[node] = {"secure-aggregation-identity-key": str(key), "secure-aggregation-roster": str(roster)}
    roster.write_text("# the federation's registered SuperNode keys\n" + "".join(lines))
    return configs
