"""Secure aggregation: Flower's SecAgg+ stages with cryptographic masks and exact fixed-point sums.

``SecureAggregationWorkflow`` is the fit workflow of every federated round unless
``secure-aggregation=false``. It keeps Flower's setup and key-sharing stages (X25519 key
agreement, Shamir shares of each client's secrets, threshold checks) and replaces what
carries the model:

* each client uploads one uint32 vector ``encode(Δ) + own mask ± pairwise masks`` (see
  ``client/secure_update_mod.py`` and ``segguided_federation/secure_encoding.py``), where ``Δ`` is its
  update relative to the global model, weighted by its training cases;
* masks come from ``segguided_federation/secure_masks.py`` (AES-256-CTR keyed by the whole seed) instead
  of Flower's 32-bit-seeded Mersenne Twister;
* the server sums the vectors modulo 2**32, removes the survivors' own masks and the
  dropped clients' pairwise masks from reconstructed secrets, and decodes
  ``global + Σw·Δ / Σw`` in float32 — case-weighted FedAvg within ``0.5 / S`` per weight;
* a client that drops out after key sharing is removed from the sum by unmasking its pairwise
  masks; fewer survivors than the reconstruction threshold halt the round, and the global
  model stays as it was.

What the server learns: the sum, the number of survivors, and (unless DP is on) the
case-weighted mean of each training metric. Per-client metrics and case counts are stripped
before upload. Each round is reported to ``on_round`` as a ``SecureRoundReport``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, cast

import flwr.compat.common.recorddict_compat as compat
import numpy as np
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.common import bytes_to_ndarray, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.crypto.shamir import combine_shares
from flwr.common.secure_aggregation.crypto.symmetric_encryption import (
    generate_shared_key,
)
from flwr.common.secure_aggregation.secaggplus_constants import (
    RECORD_KEY_CONFIGS,
    Key,
    Stage,
)
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState
from flwr.serverapp.grid import Grid
from flwr.supercore.primitives.asymmetric import (
    bytes_to_private_key,
    bytes_to_public_key,
)

from segguided_federation import metric_keys as keys
from segguided_federation.differential_privacy import PrivacySettings
from segguided_federation.flower_pin import require_verified_flower
from segguided_federation.run_config import RunConfig
from segguided_federation.secure_encoding import (
    SUM_BUDGET,
    FixedPointCodec,
    carried_metric_keys,
)
from segguided_federation.secure_masks import mask_words
from server.failure_reasons import describe_failure
from server.privacy_accountant import PrivacyAccountant, add_noise

log = logging.getLogger(__name__)

MODULUS = 2**32

POLL_SECONDS = (0.05, 0.5)
"""First and longest wait between polls for replies (Flower's own grid waits a fixed 3 s)."""


class PromptGrid:
    """A Grid whose ``send_and_receive`` polls for replies with a short, growing interval.

    Flower's SuperLink grid sleeps 3 s between polls; SecAgg+ has four exchanges per round,
    three of them answered in milliseconds, so the fixed sleep alone added about 9 s to
    every round. Everything else is delegated to the wrapped grid.
    """

    def __init__(self, grid: Grid) -> None:
        self._grid = grid

    def __getattr__(self, name: str):
        return getattr(self._grid, name)

    def send_and_receive(self, messages, *, timeout: float | None = None) -> list[Message]:
        pending = set(self._grid.push_messages(messages))
        deadline = time.monotonic() + timeout if timeout is not None else float("inf")
        replies: list[Message] = []
        wait = POLL_SECONDS[0]
        while pending:
            received = list(self._grid.pull_messages(pending))
            replies.extend(received)
            pending -= {reply.metadata.reply_to_message_id for reply in received}
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(min(wait, max(0.0, deadline - time.monotonic())))
            wait = min(2 * wait, POLL_SECONDS[1])
        return replies


@dataclass(frozen=True)
class SecureAggregationSettings:
    """The protocol's parameters, from the ``secure-aggregation-*`` and ``dp-*`` run-config keys.

    Attributes:
        num_shares: fraction of a round's clients each client shares its secrets with.
        reconstruction_threshold: fraction of those shares (at least 2) that unmask.
        timeout: seconds to wait for replies in each stage.
        clipping_range: largest ``|Δ|`` per weight (``dp-clipping-norm`` under DP).
        max_cases: largest case count of one client (1 under DP: unweighted).
        privacy: central DP parameters, or ``None``.
    """

    num_shares: float = 1.0
    reconstruction_threshold: float = 0.6
    timeout: float | None = 1800.0
    clipping_range: float = 1.0
    max_cases: int = 1000
    privacy: PrivacySettings | None = None

    @classmethod
    def from_run_config(cls, config: RunConfig) -> "SecureAggregationSettings":
        privacy = None
        if config.differential_privacy:
            privacy = PrivacySettings(
                noise_multiplier=config.dp_noise_multiplier,
                clipping_norm=config.dp_clipping_norm,
                delta=config.dp_delta,
                sample_rate=config.fraction_fit,
            )
        return cls(
            num_shares=config.secure_aggregation_num_shares,
            reconstruction_threshold=config.secure_aggregation_reconstruction_threshold,
            timeout=config.secure_aggregation_timeout,
            clipping_range=privacy.clipping_norm if privacy else config.secure_aggregation_clipping_range,
            max_cases=1 if privacy else config.secure_aggregation_max_cases,
            privacy=privacy,
        )


@dataclass
class SecureRoundReport:
    """What one secure round revealed and cost; becomes ``secure-aggregation`` in the history."""

    round: int
    sampled: int = 0
    survivors: int = 0
    num_shares: int = 0
    threshold: int = 0
    aggregated: bool = False
    halted: str = ""
    failures: list[str] = field(default_factory=list)
    training: dict[str, float] = field(default_factory=dict)
    tolerance: float = 0.0
    epsilon: float | None = None
    delta: float | None = None
    timing: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {key.replace("_", "-"): value for key, value in asdict(self).items()}


@dataclass
class SecureWorkflowState(WorkflowState):
    """Flower's workflow state plus the clients that completed key sharing."""

    key_holders: set[int] = field(default_factory=set)


class SecureAggregationWorkflow(SecAggPlusWorkflow):
    """The fit workflow for ``DefaultWorkflow(fit_workflow=...)``.

    Args:
        settings: protocol parameters.
        on_round: called with the round number (as the workflow counts it) and its report.
        accountant: tracks ε when ``settings.privacy`` is set; built from it when omitted.
        round_offset: rounds finished before this process (a resumed run), so that the
            log names the true round; Flower counts this process's rounds from 1.

    Raises:
        UnverifiedFlowerError: the installed Flower is not a verified version.
    """

    def __init__(
        self,
        settings: SecureAggregationSettings,
        on_round: Callable[[int, SecureRoundReport], None] = lambda number, report: None,
        accountant: PrivacyAccountant | None = None,
        round_offset: int = 0,
    ) -> None:
        require_verified_flower()
        super().__init__(
            num_shares=settings.num_shares,
            reconstruction_threshold=settings.reconstruction_threshold,
            max_weight=float(settings.max_cases),
            clipping_range=float(settings.clipping_range),
            quantization_range=SUM_BUDGET,
            modulus_range=MODULUS,
            timeout=settings.timeout,
        )
        self.settings = settings
        self.on_round = on_round
        self.accountant = accountant
        self.round_offset = round_offset
        if settings.privacy is not None and accountant is None:
            self.accountant = PrivacyAccountant(settings.privacy)
        self._report = SecureRoundReport(round=0)

    def codec(self, clients: int) -> FixedPointCodec:
        """The encoding both sides derive from the round's setup values."""
        return FixedPointCodec(
            clients=clients,
            max_weight=self.settings.max_cases,
            clipping_range=self.settings.clipping_range,
            metric_keys=carried_metric_keys(self.settings.privacy is not None),
        )

    def __call__(self, grid: Grid, context: LegacyContext) -> None:  # type: ignore[override]
        if not isinstance(context, LegacyContext):
            raise TypeError(f"expected a LegacyContext, got {type(context).__name__}")
        current_round = cast(int, context.state.config_records[MAIN_CONFIGS_RECORD][WorkflowKey.CURRENT_ROUND])
        grid = PromptGrid(grid)  # type: ignore[assignment]
        state = SecureWorkflowState()
        self._report = report = SecureRoundReport(round=current_round + self.round_offset)
        if self.settings.privacy is not None:
            report.delta = self.settings.privacy.delta
            report.epsilon = self.accountant.epsilon() if self.accountant else None
        stages = (
            ("setup", self.setup_stage),
            ("share-keys", self.share_keys_stage),
            ("collect-masked-vectors", self.collect_masked_vectors_stage),
            ("unmask", self.unmask_stage),
        )
        for name, stage in stages:
            started = time.perf_counter()
            completed = stage(grid, context, state)
            report.timing[f"{name}-seconds"] = time.perf_counter() - started
            report.sampled = len(state.sampled_node_ids)
            report.num_shares, report.threshold = state.num_shares, state.threshold
            if not completed:
                report.halted = report.halted or (
                    f"secure aggregation halted in stage {name}: {len(state.active_node_ids)} of "
                    f"{report.sampled} clients left, fewer than the reconstruction threshold {state.threshold} "
                    "some client needs; the global model is left unchanged"
                )
                report.survivors = len(state.active_node_ids)
                report.failures = [describe_failure(failure) for failure in state.failures]
                log.error("round %d: %s", current_round + self.round_offset, report.halted)
                break
        self.on_round(current_round, report)

    def share_keys_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        completed = super().share_keys_stage(grid, context, state)
        cast(SecureWorkflowState, state).key_holders = set(state.active_node_ids)
        return completed

    def collect_masked_vectors_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        """Send the training instructions with the forwarded shares; sum the masked vectors."""
        group = str(context.state.config_records[MAIN_CONFIGS_RECORD][WorkflowKey.CURRENT_ROUND])

        def make(node_id: int) -> Message:
            content = state.nid_to_fitins[node_id]
            content.config_records[RECORD_KEY_CONFIGS] = ConfigRecord(
                {
                    Key.STAGE: Stage.COLLECT_MASKED_VECTORS,
                    Key.CIPHERTEXT_LIST: state.forward_ciphertexts[node_id],
                    Key.SOURCE_LIST: state.forward_srcs[node_id],
                }
            )
            return Message(content=content, dst_node_id=node_id, message_type=MessageType.TRAIN, group_id=group)

        replies = grid.send_and_receive([make(n) for n in state.active_node_ids], timeout=self.timeout)
        del state.forward_ciphertexts, state.forward_srcs, state.nid_to_fitins
        total: np.ndarray | None = None
        survivors = set()
        for reply in replies:
            if reply.has_error():
                state.failures.append(Exception(reply.error))
                continue
            vectors = cast(list[bytes], reply.content.config_records[RECORD_KEY_CONFIGS][Key.MASKED_PARAMETERS])
            vector = bytes_to_ndarray(vectors[0]) if len(vectors) == 1 else None
            if vector is None or vector.dtype != np.uint32 or vector.ndim != 1:
                state.failures.append(
                    Exception(f"node {reply.metadata.src_node_id}: expected one uint32 masked vector")
                )
                continue
            if total is not None and vector.shape != total.shape:
                state.failures.append(
                    Exception(f"node {reply.metadata.src_node_id}: masked vector of {vector.size} words, "
                              f"expected {total.size}")
                )
                continue
            total = vector.copy() if total is None else np.add(total, vector, out=total)
            survivors.add(reply.metadata.src_node_id)
            fitres = compat.recorddict_to_fitres(reply.content, keep_input=False)
            state.legacy_results.append((state.nid_to_proxies[reply.metadata.src_node_id], fitres))
        state.active_node_ids = survivors
        state.aggregate_ndarrays = [total] if total is not None else []
        return bool(survivors) and self._check_threshold(state)

    def unmask_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        """Collect shares, remove every mask, decode the weighted mean update, hand it to the strategy."""
        state = cast(SecureWorkflowState, state)
        report = self._report
        current_round = cast(int, context.state.config_records[MAIN_CONFIGS_RECORD][WorkflowKey.CURRENT_ROUND])
        active = set(state.active_node_ids)
        dropped = state.key_holders - active  # their pairwise masks are in the survivors' vectors

        def make(node_id: int) -> Message:
            neighbours = state.nid_to_neighbours[node_id]
            content = RecordDict(
                {
                    RECORD_KEY_CONFIGS: ConfigRecord(
                        {
                            Key.STAGE: Stage.UNMASK,
                            Key.ACTIVE_NODE_ID_LIST: sorted(neighbours & active),
                            Key.DEAD_NODE_ID_LIST: sorted(neighbours & dropped),
                        }
                    )
                }
            )
            return Message(content=content, dst_node_id=node_id, message_type=MessageType.TRAIN,
                           group_id=str(current_round))

        replies = grid.send_and_receive([make(n) for n in active], timeout=self.timeout)
        shares: dict[int, list[bytes]] = {node_id: [] for node_id in active | dropped}
        for reply in replies:
            if reply.has_error():
                state.failures.append(Exception(reply.error))
                continue
            configs = reply.content.config_records[RECORD_KEY_CONFIGS]
            for owner, share in zip(cast(list[int], configs[Key.NODE_ID_LIST]),
                                    cast(list[bytes], configs[Key.SHARE_LIST]), strict=True):
                if owner in shares:
                    shares[owner].append(share)
        short = {owner: len(got) for owner, got in shares.items() if len(got) < state.threshold}
        if short:
            report.halted = (
                f"secure aggregation halted in stage unmask: the secrets of {len(short)} client(s) have fewer "
                f"than {state.threshold} shares ({sorted(short.values())}); the global model is left unchanged"
            )
            return False

        total = state.aggregate_ndarrays[0]
        length = total.size
        for owner, owner_shares in shares.items():
            secret = combine_shares(owner_shares)
            if owner in active:
                total -= mask_words(secret, length)  # the survivor's own mask
                continue
            for neighbour in (state.nid_to_neighbours[owner] - {owner}) & active:
                shared_key = generate_shared_key(
                    bytes_to_private_key(secret), bytes_to_public_key(state.nid_to_publickeys[neighbour][0])
                )
                # The neighbour added the pair's mask if its id is larger, else subtracted it.
                if neighbour > owner:
                    total -= mask_words(shared_key, length)
                else:
                    total += mask_words(shared_key, length)

        global_arrays = parameters_to_ndarrays(
            compat.arrayrecord_to_parameters(context.state.array_records[MAIN_PARAMS_RECORD], keep_input=True)
        )
        codec = self.codec(len(state.sampled_node_ids))
        decoded = codec.decode(total, [a.shape for a in global_arrays])
        sums = decoded.update_sums
        if self.settings.privacy is not None and self.accountant is not None:
            sums = add_noise(sums, self.settings.privacy.noise_std)
            report.epsilon = self.accountant.spend_round()
            log.info("round %d: differential privacy spent so far: epsilon %.3f at delta %g",
                     current_round + self.round_offset, report.epsilon, self.settings.privacy.delta)
        updated = [
            (g.astype(np.float64) + s / decoded.weight).astype(g.dtype) for g, s in zip(global_arrays, sums)
        ]
        report.survivors = len(active)
        report.tolerance = codec.tolerance
        count_key = "clients-summed" if self.settings.privacy is not None else keys.TRAIN_CASES
        report.training = {count_key: float(decoded.weight), **decoded.metric_means()}
        report.failures = [describe_failure(failure) for failure in state.failures]

        parameters = ndarrays_to_parameters(updated)
        for _, fitres in state.legacy_results:
            fitres.parameters, fitres.num_examples, fitres.metrics = parameters, 1, {}
        aggregated, metrics = context.strategy.aggregate_fit(current_round, state.legacy_results, state.failures)
        if aggregated:
            context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(aggregated, True)
            context.history.add_metrics_distributed_fit(server_round=current_round, metrics=metrics)
            report.aggregated = True
        return True
