"""A wrapper around any Flower strategy that makes a run observable and resumable.

Flower's strategy decides whom to ask and how to aggregate; this wrapper adds what a
federated study needs around it, without copying its round loop:

* rounds are numbered from the resume point, so a resumed run continues at round k+1, and
  every log line names the true round;
* client results are aggregated in site order, so the aggregate is reproducible;
* a round aggregates only if at least ``min-fit-clients`` clients succeeded, otherwise
  the global model stays as it was (and the round is recorded as not aggregated);
* after every aggregation the history (``metrics.json``/``.csv``) is rewritten and the
  model is checkpointed atomically with the round's record, so a crash at any moment loses
  no round that has a checkpoint;
* the global model is validated centrally and evaluated on the sites after the rounds
  that ``validates_after`` names (``evaluate-every``: every round by default, and always
  the last); the other rounds only aggregate and checkpoint;
* federated-evaluation failures are recorded next to training failures.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import torch
from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import Strategy
from torch import nn

from segguided_federation import metric_keys as keys
from segguided_model.metrics import DICE_MEAN_KEY
from segguided_model.state_arrays import load_arrays, model_to_arrays
from server.failure_reasons import NodeFailure, describe_failure
from server.history import RoundRecord, RunHistory
from server.plain_replies import ReplyBounds, check_evaluate_reply, check_fit_reply
from server.run_folder import ROUND_RECORD_KEY, RunFolder
from server.secure_replies import ReplyRejected
from server.secure_round import SecureRoundReport
from server.strategies import export_optimizer_state

log = logging.getLogger(__name__)

Validator = Callable[[nn.Module], tuple[list[dict], dict[str, float]]]
"""Scores a model on the central validation set: per-case rows and their means."""

RoundListener = Callable[[RoundRecord], None]
"""Called with each finished round's record (metrics exporters, progress bars)."""


def _site_names(results: list[tuple[ClientProxy, FitRes | EvaluateRes]]) -> list[str]:
    """The site id each reply claims (its node id when it claims none), ``"<site> (node <id>)"`` for a
    site id claimed by more than one reply of the round: a hospital that claims another's id
    gets a row of its own instead of overwriting that hospital's."""
    claimed = [str(res.metrics.get(keys.SITE_ID, proxy.node_id)) for proxy, res in results]
    repeated = {name for name in claimed if claimed.count(name) > 1}
    if repeated:
        log.warning("site id(s) %s claimed by more than one node this round; recorded per node", sorted(repeated))
    return [
        f"{name} (node {proxy.node_id})" if name in repeated else name
        for name, (proxy, _) in zip(claimed, results)
    ]


def _site_rows(
    results: list[tuple[ClientProxy, FitRes | EvaluateRes]],
) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    """``{site id: {metric: value}}`` of the numeric metrics each client reported, in site order,
    and ``{site id: node id}``: which node each row's claim came from (site ids are claims;
    the node id is what SuperNode authentication vouches for)."""
    names = _site_names(results)
    rows = {
        name: {key: float(value) for key, value in res.metrics.items() if isinstance(value, (int, float))}
        for name, (_, res) in zip(names, results)
    }
    return dict(sorted(rows.items())), {name: proxy.node_id for name, (proxy, _) in sorted(zip(names, results))}


def _checked(results: list, check) -> tuple[list, list[NodeFailure]]:
    """``results`` split into the replies ``check`` accepts and, for the others, a ``NodeFailure``
    naming the node and the rule its reply breaks (a failure of that node alone). A check that
    raises anything else fails the node too, naming only the exception's type: no reply ends
    the round for the others."""
    accepted, rejected = [], []
    for proxy, res in results:
        try:
            check(res)
        except ReplyRejected as reason:
            rejected.append(NodeFailure(proxy.node_id, f"reply rejected: {reason}", verbatim=True))
        except Exception as error:  # noqa: BLE001 - a reply no rule foresaw still fails only its sender
            log.exception("node %d: checking its reply raised", proxy.node_id)
            rejected.append(NodeFailure(
                proxy.node_id, f"reply rejected: it could not be checked ({type(error).__name__})", verbatim=True
            ))
        else:
            accepted.append((proxy, res))
    return accepted, rejected


class CheckpointedStrategy(Strategy):
    """Delegates to ``inner`` and records, validates and checkpoints every round.

    Args:
        inner: the Flower strategy that samples clients and aggregates.
        model: a model of the run's architecture, reused to hold the global weights.
        validator: central validation of the global model.
        folder: where checkpoints and history go.
        history: the run's history (loaded from the folder when resuming).
        completed_rounds: rounds finished before this process started (0 for a new run).
        num_rounds: the run's total rounds (``num-server-rounds``), for the log.
        min_fit_clients: successful clients a round needs before it aggregates.
        fit_config: extra keys every client receives with its training instructions.
        reply_bounds: the largest case count and weight change of one plain reply
            (``ReplyBounds.from_run_config``).
        secure_aggregation: whether training results come from the secure workflow (one
            per survivor, each carrying the aggregate it decoded and checked, with DP noise
            that may exceed the clipping range); plain training replies are checked here.
        listeners: called with each finished round's record.
        validates_after: whether a round (numbered from the run's start) ends with central
            validation and federated evaluation (``RunConfig.validates_after``); every
            round by default.
    """

    def __init__(
        self,
        inner: Strategy,
        *,
        model: nn.Module,
        validator: Validator,
        folder: RunFolder,
        history: RunHistory,
        completed_rounds: int,
        num_rounds: int,
        min_fit_clients: int,
        fit_config: dict[str, Scalar],
        reply_bounds: ReplyBounds = ReplyBounds(),
        secure_aggregation: bool = False,
        listeners: tuple[RoundListener, ...] = (),
        validates_after: Callable[[int], bool] = lambda number: True,
    ) -> None:
        super().__init__()
        self.inner = inner
        self.model = model
        self.validator = validator
        self.folder = folder
        self.history = history
        self.completed_rounds = completed_rounds
        self.num_rounds = num_rounds
        self.min_fit_clients = min_fit_clients
        self.fit_config = fit_config
        self.reply_bounds = reply_bounds
        self.secure_aggregation = secure_aggregation
        self.listeners = listeners
        self.validates_after = validates_after
        self._started: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"CheckpointedStrategy({self.inner!r})"

    def _number(self, server_round: int) -> int:
        return self.completed_rounds + server_round

    def _instructions(self, number: int, instructions):
        extra: dict[str, Scalar] = {**self.fit_config, keys.SERVER_ROUND: number}
        for _, ins in instructions:
            ins.config.update(extra)
        return instructions

    # Parameters --------------------------------------------------------------------

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return self.inner.initialize_parameters(client_manager)

    # Training ----------------------------------------------------------------------

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        number = self._number(server_round)
        self._started = {"round": time.perf_counter()}
        resumed = f" (Flower's [ROUND {server_round}] of this resumed run)" if self.completed_rounds else ""
        log.info("round %d of %d: training%s", number, self.num_rounds, resumed)
        instructions = self.inner.configure_fit(number, parameters, client_manager)
        self.history.round(number).clients_selected = len(instructions)
        return self._instructions(number, instructions)

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        number = self._number(server_round)
        fit_phase = time.perf_counter() - self._started.get("round", time.perf_counter())
        record = self.history.round(number)
        # ``self.model`` holds the global model the round's clients were sent (``evaluate`` loaded it).
        global_arrays = model_to_arrays(self.model)
        if not self.secure_aggregation:
            results, rejected = _checked(results, lambda res: check_fit_reply(res, global_arrays, self.reply_bounds))
            failures = [*failures, *rejected]
        ordered = sorted(results, key=lambda item: str(item[1].metrics.get(keys.SITE_ID, item[0].node_id)))
        record.clients_succeeded = len(ordered)
        record.clients_failed = len(failures)
        # Under SecAgg+ every result carries the (same-sized) aggregate instead of the upload.
        record.bytes_received = sum(len(t) for _, res in ordered for t in res.parameters.tensors)
        record.failures = [describe_failure(f) for f in failures]
        # Under secure aggregation results carry no per-site metrics: nothing is recorded.
        record.site_training, record.site_nodes["training"] = _site_rows([(p, r) for p, r in ordered if r.metrics])
        for reason in record.failures:
            log.warning("round %d: a client failed: %s", number, reason)
        client_seconds = [float(res.metrics.get(keys.CLIENT_SECONDS, 0.0)) for _, res in ordered]
        record.timing["fit-phase-seconds"] = fit_phase
        record.timing["client-seconds-max"] = max(client_seconds, default=0.0)
        record.timing["client-training-seconds-max"] = max(
            (float(res.metrics.get(keys.TRAIN_SECONDS, 0.0)) for _, res in ordered), default=0.0
        )
        if len(ordered) < self.min_fit_clients:
            log.warning(
                "round %d: only %d client(s) succeeded, fewer than min-fit-clients=%d; "
                "the global model is left unchanged",
                number,
                len(ordered),
                self.min_fit_clients,
            )
            record.aggregated = False
            return None, {}
        started = time.perf_counter()
        parameters, metrics = self.inner.aggregate_fit(number, ordered, failures)
        if parameters is not None:  # FedAdam/FedYogi answer in float64: sent as is, it doubled every download
            arrays = parameters_to_ndarrays(parameters)
            if any(array.dtype != reference.dtype for array, reference in zip(arrays, global_arrays)):
                parameters = ndarrays_to_parameters(
                    [array.astype(reference.dtype) for array, reference in zip(arrays, global_arrays)]
                )
        record.timing["aggregation-seconds"] = time.perf_counter() - started
        return parameters, metrics

    def record_secure_round(self, server_round: int, report: SecureRoundReport) -> None:
        """Keep what a secure round revealed: survivors, aggregate training metrics, epsilon, stage times.

        A halted round (too few survivors, a secret that cannot be recovered, or a decoded
        sum no honest clients could produce) never reaches ``aggregate_fit``; it is recorded
        here as not aggregated, with the reason.
        """
        number = self._number(server_round)
        record = self.history.round(number)
        record.secure_aggregation = report.to_json()
        if not report.aggregated:
            record.aggregated = False
            record.clients_succeeded = report.survivors
            record.clients_failed = report.sampled - report.survivors
            record.failures = [*report.failures, report.halted]
            for reason in record.failures:
                log.warning("round %d: %s", number, reason)

    # Central validation and checkpoints ---------------------------------------------

    def evaluate(self, server_round: int, parameters: Parameters) -> tuple[float, dict[str, Scalar]] | None:
        number = self._number(server_round)
        record = self.history.round(number)
        if server_round == 0 and self.completed_rounds > 0 and (record.central or not self.validates_after(number)):
            return None  # the resumed round's model was validated before the interruption, or needs no validation
        load_arrays(self.model, parameters_to_ndarrays(parameters))
        rows: list[dict] = []
        if self.validates_after(number):
            started = time.perf_counter()
            rows, means = self.validator(self.model)
            record.central = {key: float(value) for key, value in means.items()}
            record.timing["central-validation-seconds"] = time.perf_counter() - started
            record.timing["central-validation-seconds-per-case"] = (
                record.timing["central-validation-seconds"] / len(rows)
            )
        else:
            log.info("round %d: not validated (evaluate-every); checkpoint only", number)
        is_best = bool(record.central) and self.history.best_round() == number
        # The checkpoint first: it holds the round's record, from which a history that lacks
        # the row is rebuilt. (The other order could leave a resumed round, validated after
        # the resume, with a checkpoint that lacks the scores its history row has.)
        self.folder.save_round(
            self.model,
            number,
            extra={
                "round": number,
                "central-metrics": record.central,
                "central-cases": rows,
                ROUND_RECORD_KEY: record.to_json(),
                "optimizer-state": {
                    name: [torch.from_numpy(a) for a in arrays]
                    for name, arrays in export_optimizer_state(self.inner).items()
                },
            },
            is_best=is_best,
        )
        self.history.write()
        # Federated evaluation closes the round, except the initial model's (it has none) and a
        # resumed round's that still lacked central validation (it is evaluated next).
        if (server_round == 0 and not self.completed_rounds) or self.inner_fraction_evaluate() == 0.0:
            self._close_round(number)
        if not record.central:
            return None
        return 1.0 - record.central[DICE_MEAN_KEY], dict(record.central)

    # Federated evaluation -----------------------------------------------------------

    def inner_fraction_evaluate(self) -> float:
        return float(getattr(self.inner, "fraction_evaluate", 1.0))

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        number = self._number(server_round)
        self._started["evaluate"] = time.perf_counter()
        instructions = []
        # The sites evaluate the rounds validated centrally (after ``evaluate`` has run: by
        # ``validates_after``, or before a resume whose settings no longer name the round).
        if self.history.round(number).central:
            instructions = self.inner.configure_evaluate(number, parameters, client_manager)
        if not instructions and self.inner_fraction_evaluate() > 0.0:
            self._close_round(number)
        return self._instructions(number, instructions)

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        number = self._number(server_round)
        record = self.history.round(number)
        record.timing["federated-evaluation-seconds"] = time.perf_counter() - self._started.get(
            "evaluate", time.perf_counter()
        )
        # A hospital shares its evaluation only if its site config says so (never under DP);
        # the others answer "withheld" with weight 0 and are left out of the record and the mean.
        results, rejected = _checked(results, lambda res: check_evaluate_reply(res, self.reply_bounds))
        failures = [*failures, *rejected]
        shared = [(proxy, res) for proxy, res in results if not res.metrics.get(keys.EVALUATION_WITHHELD)]
        if len(shared) < len(results):
            log.info("round %d: %d of %d site(s) kept their federated-evaluation metrics (site config "
                     "share-evaluation-metrics); central validation is this round's quality signal",
                     number, len(results) - len(shared), len(results))
        record.site_evaluation, record.site_nodes["evaluation"] = _site_rows(shared)
        record.site_evaluation_finished = True
        record.evaluation_failures = [describe_failure(failure) for failure in failures]
        for reason in record.evaluation_failures:
            log.warning("round %d: a client failed federated evaluation: %s", number, reason)
        # Replies weighing no case (a site without validation cases, or a hospital that says so)
        # are recorded but not averaged: Flower's case-weighted loss would divide by zero.
        weighted = [(proxy, res) for proxy, res in shared if res.num_examples > 0]
        aggregated = self.inner.aggregate_evaluate(number, weighted, failures) if weighted else (None, {})
        self._close_round(number)
        return aggregated

    # Bookkeeping -------------------------------------------------------------------

    def _close_round(self, number: int) -> None:
        record = self.history.round(number)
        if "round" in self._started and number > 0:
            timing = record.timing
            timing["round-seconds"] = time.perf_counter() - self._started["round"]
            timing["flower-overhead-seconds"] = max(
                0.0,
                timing.get("fit-phase-seconds", 0.0) - timing.get("client-seconds-max", 0.0),
            )
        self.history.write()
        log.info("central validation after round %d:\n%s", number, self.history.central_table())
        if sites := self.history.site_table(number):
            log.info("federated evaluation, round %d:\n%s", number, sites)
        for listener in self.listeners:
            listener(record)
