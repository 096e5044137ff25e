"""Secure aggregation: SecAgg+ with identity-bound keys, a consistency check and exact fixed-point sums.

``SecureAggregationWorkflow`` is the fit workflow of every federated round unless
``secure-aggregation=false``. It runs the five stages of
``segguided_federation/secure_protocol.py`` (setup, share-keys, collect-masked-vectors,
consistency-check, unmask) on Flower's primitives (P-384 ECDH, Fernet, Shamir shares) and
replaces what carries the model:

* each client uploads one uint32 vector ``encode(Δ) + own mask ± pairwise masks`` (see
  ``client/secure_update_mod.py`` and ``segguided_federation/secure_encoding.py``), where ``Δ`` is its
  update relative to the global model, weighted by its training cases;
* masks come from ``segguided_federation/secure_masks.py`` (AES-256-CTR keyed by the whole seed) instead
  of Flower's 32-bit-seeded Mersenne Twister;
* the server sums the vectors modulo 2**32, removes the survivors' own masks and the
  dropped clients' pairwise masks from reconstructed secrets, and decodes
  ``global + Σw·Δ / Σw`` in float32 — case-weighted FedAvg within ``0.5 / S`` per weight.

Robustness against one malicious hospital: every reply is read by ``server/secure_replies.py``;
a bad one fails its sender for the round and nobody else. The expected vector length
comes from the global model. A revealed share must match its owner's digest
(``server/secure_unmasking.py``); a secret that cannot be recovered halts the round, and so
does a decoded sum no honest clients could produce. A halted round leaves the global model
as it was; the next round starts afresh.

What the server learns: the sum, the number of survivors, and (unless DP is on) the
case-weighted mean of each training metric. Each round is reported to ``on_round`` as a
``SecureRoundReport``.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Callable, cast

import flwr.compat.common.recorddict_compat as compat
import numpy as np
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.common import (
    Code,
    FitRes,
    Parameters,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
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

from segguided_federation import metric_keys as keys
from segguided_federation.flower_pin import require_verified_flower
from segguided_federation.secure_encoding import (
    SUM_BUDGET,
    FixedPointCodec,
    SecureRangeError,
    carried_metric_keys,
)
from segguided_federation.secure_identity import survivors_message
from segguided_federation.secure_protocol import (
    CONSISTENCY_CHECK,
    SIGNATURES,
    SIGNERS,
    SURVIVORS,
    SessionId,
)
from server.failure_reasons import NodeFailure, describe_failure
from server.privacy_accountant import PrivacyAccountant, add_noise
from server.prompt_grid import PromptGrid
from server.secure_replies import (
    ReplyRejected,
    read_key_shares,
    read_masked_vector,
    read_setup,
    read_survivors_signature,
    read_unmask,
)
from server.secure_round import (
    SecureAggregationSettings,
    SecureRoundReport,
    SecureWorkflowState,
    key_binding,
    neighbour_ring,
    reconstruction_threshold,
    repeating_keys,
    secrets_to_recover,
    share_count,
)
from server.secure_unmasking import (
    KEY,
    aggregate_violation,
    reconstruct_secrets,
    remove_masks,
)

log = logging.getLogger(__name__)

MODULUS = 2**32


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
        current_round = _current_round(context)
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
            (CONSISTENCY_CHECK, self.consistency_check_stage),
            ("unmask", self.unmask_stage),
        )
        for name, stage in stages:
            started = time.perf_counter()
            completed = stage(grid, context, state)
            report.timing[f"{name}-seconds"] = time.perf_counter() - started
            report.sampled = len(state.sampled_node_ids)
            report.num_shares, report.threshold = state.num_shares, state.threshold
            report.failures = [describe_failure(failure) for failure in state.failures]
            if not completed:
                report.halted = (
                    f"secure aggregation halted in stage {name}: "
                    + (state.halt or f"{len(state.active_node_ids)} of {report.sampled} clients left, fewer than "
                       f"the reconstruction threshold {state.threshold} some client needs")
                    + "; the global model is left unchanged"
                )
                report.survivors = len(state.survivors or state.active_node_ids)
                log.error("round %d: %s", current_round + self.round_offset, report.halted)
                break
        self.on_round(current_round, report)

    # Helpers ------------------------------------------------------------------------

    def _exchange(self, grid: Grid, context: LegacyContext, state: SecureWorkflowState, stage: str,
                  contents: dict[int, RecordDict]) -> dict[int, Message]:
        """Send each node its content; return the first reply of each node that was asked."""
        messages = [
            Message(content=content, dst_node_id=node, message_type=MessageType.TRAIN,
                    group_id=str(_current_round(context)))
            for node, content in contents.items()
        ]
        if messages and state.session.round == 0:
            state.session = SessionId(int(messages[0].metadata.run_id), _current_round(context))
        replies: dict[int, Message] = {}
        for reply in grid.send_and_receive(messages, timeout=self.timeout):
            if reply.metadata.src_node_id in contents:
                replies.setdefault(reply.metadata.src_node_id, reply)
        return replies

    @staticmethod
    def _fail(state: SecureWorkflowState, node: int, stage: str, reason: str) -> None:
        failure = NodeFailure(node, f"{stage}: {reason}", verbatim=True)  # the hospital's part is reduced already
        state.failures.append(failure)
        log.warning("%s", describe_failure(failure))

    @staticmethod
    def _configs_record(stage: str, values: dict) -> RecordDict:
        return RecordDict({RECORD_KEY_CONFIGS: ConfigRecord({Key.STAGE: stage, **values})})

    def _neighbours(self, state: SecureWorkflowState, node: int) -> set[int]:
        return state.nid_to_neighbours[node] & state.active_node_ids

    # Stages -------------------------------------------------------------------------

    def setup_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        """Sample clients, fix the session's parameters and collect each client's signed keys."""
        state = cast(SecureWorkflowState, state)
        current_round = _current_round(context)
        parameters = compat.arrayrecord_to_parameters(context.state.array_records[MAIN_PARAMS_RECORD], keep_input=True)
        instructions = context.strategy.configure_fit(current_round, parameters, context.client_manager)
        state.nid_to_fitins = {proxy.node_id: compat.fitins_to_recorddict(ins, True) for proxy, ins in instructions}
        state.nid_to_proxies = {proxy.node_id: proxy for proxy, _ in instructions}
        sampled = list(state.nid_to_fitins)
        if len(sampled) < 2:
            state.halt = f"the strategy sampled {len(sampled)} client(s); secure aggregation needs at least 2"
            return False
        state.num_shares = share_count(self.settings.num_shares, len(sampled))
        state.threshold = reconstruction_threshold(self.settings.reconstruction_threshold, state.num_shares)
        random.SystemRandom().shuffle(sampled)
        state.nid_to_neighbours = neighbour_ring(sampled, state.num_shares)
        state.sampled_node_ids = set(sampled)
        parameters_record = {
            Key.SAMPLE_NUMBER: len(sampled),
            Key.SHARE_NUMBER: state.num_shares,
            Key.THRESHOLD: state.threshold,
            Key.CLIPPING_RANGE: float(self.settings.clipping_range),
            Key.TARGET_RANGE: SUM_BUDGET,
            Key.MOD_RANGE: MODULUS,
            Key.MAX_WEIGHT: float(self.settings.max_cases),
        }
        replies = self._exchange(grid, context, state, Stage.SETUP,
                                 {n: self._configs_record(Stage.SETUP, parameters_record) for n in sampled})
        for node in sampled:
            try:
                state.setup_replies[node] = read_setup(_reply_of(replies, node), state.session)
            except ReplyRejected as rejected:
                self._fail(state, node, Stage.SETUP, str(rejected))
        for node in repeating_keys(state.setup_replies):
            self._fail(state, node, Stage.SETUP, "a public key or identity another client also presents")
            del state.setup_replies[node]
        state.active_node_ids = set(state.setup_replies)
        state.nid_to_publickeys = {node: reply.public_keys for node, reply in state.setup_replies.items()}
        self._report.key_binding = key_binding(state.setup_replies)
        if self._report.key_binding != "roster":
            log.warning("round %d: %s", current_round, self._report.key_binding)
        return self._check_threshold(state)

    def share_keys_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        """Send each client its neighbours' signed keys; collect encrypted shares and their digests."""
        state = cast(SecureWorkflowState, state)

        def entry(node: int) -> list[bytes]:
            reply = state.setup_replies[node]
            return [*reply.public_keys, reply.identity, reply.signature]

        contents = {
            node: self._configs_record(Stage.SHARE_KEYS, {str(n): entry(n) for n in self._neighbours(state, node)})
            for node in state.active_node_ids
        }
        replies = self._exchange(grid, context, state, Stage.SHARE_KEYS, contents)
        for node in sorted(state.active_node_ids):
            try:
                state.key_shares[node] = read_key_shares(_reply_of(replies, node), self._neighbours(state, node) - {node})
            except ReplyRejected as rejected:
                self._fail(state, node, Stage.SHARE_KEYS, str(rejected))
        state.active_node_ids = set(state.key_shares)
        state.forward_srcs, state.forward_ciphertexts = {}, {}
        for destination in sorted(state.active_node_ids):
            sources = [s for s in sorted(state.key_shares) if destination in state.key_shares[s].ciphertexts]
            state.forward_srcs[destination] = sources
            state.forward_ciphertexts[destination] = [state.key_shares[s].ciphertexts[destination] for s in sources]
        state.sources = dict(state.forward_srcs)
        return self._check_threshold(state)

    def collect_masked_vectors_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        """Send the training instructions with the forwarded shares; sum the masked vectors of the right length."""
        state = cast(SecureWorkflowState, state)
        try:
            length = self.codec(len(state.sampled_node_ids)).length([a.shape for a in _global_model(context)])
        except SecureRangeError as error:
            state.halt = str(error)
            return False
        contents = {}
        for node in state.active_node_ids:
            content = state.nid_to_fitins[node]
            content.config_records[RECORD_KEY_CONFIGS] = ConfigRecord({
                Key.STAGE: Stage.COLLECT_MASKED_VECTORS,
                Key.CIPHERTEXT_LIST: state.forward_ciphertexts[node],
                Key.SOURCE_LIST: state.forward_srcs[node],
            })
            contents[node] = content
        replies = self._exchange(grid, context, state, Stage.COLLECT_MASKED_VECTORS, contents)
        del state.forward_ciphertexts, state.forward_srcs, state.nid_to_fitins
        total = np.zeros(length, dtype=np.uint32)
        for node in sorted(state.active_node_ids):
            try:
                vector = read_masked_vector(_reply_of(replies, node), length)
            except ReplyRejected as rejected:
                self._fail(state, node, Stage.COLLECT_MASKED_VECTORS, str(rejected))
                continue
            np.add(total, vector, out=total)
            state.survivors.append(node)
            # The strategy sees one result per survivor; the aggregate replaces its parameters.
            fitres = FitRes(Status(Code.OK, "masked"), Parameters(tensors=[], tensor_type=""), 1, {})
            state.legacy_results.append((state.nid_to_proxies[node], fitres))
        state.active_node_ids = set(state.survivors)
        state.aggregate_ndarrays = [total]
        return bool(state.survivors) and self._check_threshold(state)

    def consistency_check_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        """Have every survivor sign the survivor set (Bonawitz et al.'s consistency check)."""
        state = cast(SecureWorkflowState, state)
        record = self._configs_record(CONSISTENCY_CHECK, {SURVIVORS: state.survivors})
        replies = self._exchange(grid, context, state, CONSISTENCY_CHECK, {n: record for n in state.survivors})
        message = survivors_message(state.session, state.survivors)
        for node in state.survivors:
            try:
                identity = state.setup_replies[node].identity
                state.signers[node] = read_survivors_signature(_reply_of(replies, node), identity, message)
            except ReplyRejected as rejected:
                self._fail(state, node, CONSISTENCY_CHECK, str(rejected))
        # Every secret to recover needs a threshold of holders that can reveal (they confirmed the set).
        for owner in secrets_to_recover(state):
            confirming = len(state.nid_to_neighbours[owner] & set(state.signers))
            if confirming < state.threshold:
                state.halt = (
                    f"{confirming} of node {owner}'s neighbours confirmed the survivor set, fewer than the "
                    f"reconstruction threshold {state.threshold}"
                )
                return False
        return True

    def unmask_stage(self, grid: Grid, context: LegacyContext, state: WorkflowState) -> bool:
        """Collect genuine shares, remove every mask, decode and check the weighted mean update, hand it on."""
        state = cast(SecureWorkflowState, state)
        survivors = set(state.survivors)
        contents = {}
        for node in state.signers:
            holders = set(state.sources[node]) | {node}
            confirmers = sorted(set(state.signers) & holders)
            contents[node] = self._configs_record(Stage.UNMASK, {
                Key.ACTIVE_NODE_ID_LIST: sorted(holders & survivors),
                Key.DEAD_NODE_ID_LIST: sorted(set(state.sources[node]) - survivors),
                SIGNERS: confirmers,
                SIGNATURES: [state.signers[n] for n in confirmers],
            })
        replies = self._exchange(grid, context, state, Stage.UNMASK, contents)
        revealed: dict[int, dict[int, bytes]] = {}
        for node, content in sorted(contents.items()):
            configs = content.config_records[RECORD_KEY_CONFIGS]
            owners = {*configs[Key.ACTIVE_NODE_ID_LIST], *configs[Key.DEAD_NODE_ID_LIST]}
            try:
                revealed[node] = read_unmask(_reply_of(replies, node), cast(set[int], owners))
            except ReplyRejected as rejected:
                self._fail(state, node, Stage.UNMASK, str(rejected))
        owners = secrets_to_recover(state)
        recovered = reconstruct_secrets(
            state.session, owners, revealed,
            {owner: state.key_shares[owner].share_digests for owner in owners},
            {owner: state.key_shares[owner].seed_digest for owner in owners},
            {owner: state.setup_replies[owner].public_keys[0] for owner in owners}, state.threshold,
        )
        for _, reason in sorted(recovered.disputed.items()):
            self._report.disputed.append(reason)
            log.warning("round %d: disputed share: %s", self._report.round, reason)
        if recovered.failure:
            state.halt = f"share reconstruction failed: {recovered.failure}"
            return False
        dropped = {owner for owner, kind in owners.items() if kind == KEY}
        total = remove_masks(
            state.aggregate_ndarrays[0],
            seeds={owner: recovered.secrets[owner] for owner in survivors},
            dropped_keys={owner: recovered.secrets[owner] for owner in dropped},
            pairs={owner: [s for s in state.survivors if owner in state.sources[s]] for owner in dropped},
            public_keys={node: state.setup_replies[node].public_keys[0] for node in survivors},
        )
        return self._release(context, state, total)

    def _release(self, context: LegacyContext, state: SecureWorkflowState, total: np.ndarray) -> bool:
        """Decode and check the unmasked sum; add DP noise; hand the new global model to the strategy."""
        report = self._report
        current_round = _current_round(context)
        global_arrays = _global_model(context)
        codec = self.codec(len(state.sampled_node_ids))
        decoded = codec.decode(total, [a.shape for a in global_arrays])
        violation = aggregate_violation(decoded, len(state.survivors), self.settings.max_cases,
                                        self.settings.clipping_range, codec.tolerance)
        if violation:
            state.halt = f"the decoded aggregate fails a sanity bound: {violation}"
            return False
        sums = decoded.update_sums
        if self.settings.privacy is not None and self.accountant is not None:
            sums = add_noise(sums, self.settings.privacy.noise_std)
            report.epsilon = self.accountant.spend_round()
            log.info("round %d: differential privacy spent so far: epsilon %.3f at delta %g",
                     current_round + self.round_offset, report.epsilon, self.settings.privacy.delta)
        updated = [
            (g.astype(np.float64) + s / decoded.weight).astype(g.dtype) for g, s in zip(global_arrays, sums)
        ]
        report.survivors = len(state.survivors)
        report.tolerance = codec.tolerance
        count_key = "clients-summed" if self.settings.privacy is not None else keys.TRAIN_CASES
        report.training = {count_key: float(decoded.weight), **decoded.metric_means()}
        report.failures = [describe_failure(failure) for failure in state.failures]

        parameters = ndarrays_to_parameters(updated)
        for _, fitres in state.legacy_results:
            fitres.parameters = parameters
        aggregated, metrics = context.strategy.aggregate_fit(current_round, state.legacy_results, state.failures)
        if aggregated:
            context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(aggregated, True)
            context.history.add_metrics_distributed_fit(server_round=current_round, metrics=metrics)
            report.aggregated = True
        return True


def _current_round(context: LegacyContext) -> int:
    return cast(int, context.state.config_records[MAIN_CONFIGS_RECORD][WorkflowKey.CURRENT_ROUND])


def _global_model(context: LegacyContext) -> list[np.ndarray]:
    return parameters_to_ndarrays(
        compat.arrayrecord_to_parameters(context.state.array_records[MAIN_PARAMS_RECORD], keep_input=True)
    )


def _reply_of(replies: dict[int, Message], node: int) -> Message:
    if node not in replies:
        raise ReplyRejected("no reply within secure-aggregation-timeout")
    return replies[node]
