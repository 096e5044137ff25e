"""The client side of secure aggregation: a hospital's answers to each stage, under its own rules.

``secure_update_mod`` is a Flower client mod for the stages of
``segguided_federation/secure_protocol.py``. Before each answer it applies this hospital's
rules (``client/secure_checks.py``, settings from ``client/secure_policy.py``):

1. **setup**: refuses degenerate sessions and out-of-policy ranges; makes two fresh P-384
   key pairs (Flower's ``_setup``) and signs them with its identity key;
2. **share-keys**: checks every neighbour's keys against the roster and its signature,
   then sends each neighbour encrypted Shamir shares of its mask seed and first private key
   (Flower's primitives) and gives the server a digest of every share;
3. **collect-masked-vectors**: trains, and uploads ``encode(Δ) + own mask ± pairwise
   masks`` modulo 2**32 (``masked_update``) — no weights, case count or metrics in plaintext;
4. **consistency-check**: signs the survivor set it is shown, once;
5. **unmask**: reveals one kind of share per neighbour, only if the request matches the
   survivor set that a threshold of its neighbours confirmed.

Messages without SecAgg+ configs (federated evaluation, or a run with
``secure-aggregation=false``) pass through, unless the node config sets
``require-secure-aggregation=true``, in which case a plain training request is refused.
"""

from __future__ import annotations

import logging
import os
from typing import cast

import flwr.compat.common.recorddict_compat as compat
import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.client.mod.secure_aggregation.secaggplus_mod import (
    SecAggPlusState,
    _setup,
    check_configs,
)
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import (
    Code,
    FitRes,
    Parameters,
    Status,
    ndarray_to_bytes,
    parameters_to_ndarrays,
)
from flwr.common.secure_aggregation.crypto.shamir import create_shares
from flwr.common.secure_aggregation.crypto.symmetric_encryption import (
    decrypt,
    encrypt,
    generate_shared_key,
)
from flwr.common.secure_aggregation.secaggplus_constants import (
    RECORD_KEY_CONFIGS,
    RECORD_KEY_STATE,
    Key,
    Stage,
)
from flwr.common.secure_aggregation.secaggplus_utils import (
    share_keys_plaintext_concat,
    share_keys_plaintext_separate,
)
from flwr.supercore.primitives.asymmetric import (
    bytes_to_private_key,
    bytes_to_public_key,
)

from client.secure_checks import (
    Neighbours,
    SecureAggregationRefused,
    check_forwarded_shares,
    check_neighbours,
    check_setup,
    check_stage,
    check_survivors,
    check_unmask_request,
)
from client.secure_policy import SecureAggregationPolicy
from client.secure_session import KEY_SHARE, SEED_SHARE, SessionRecord
from client.site_config import resolve_node_config
from segguided_federation.differential_privacy import clip_update
from segguided_federation.flower_pin import require_verified_flower
from segguided_federation.redaction import RedactedError
from segguided_federation.run_config import RunConfig
from segguided_federation.secure_encoding import FixedPointCodec, carried_metric_keys
from segguided_federation.secure_identity import (
    IdentityKey,
    key_binding_message,
    survivors_message,
)
from segguided_federation.secure_masks import mask_words
from segguided_federation.secure_protocol import (
    CONSISTENCY_CHECK,
    IDENTITY,
    KEY_BINDING,
    KEY_SIGNATURE,
    SEED_DIGEST,
    SHARE_DIGESTS,
    SHARE_HOLDERS,
    SURVIVORS_SIGNATURE,
    SessionId,
    seed_digest,
    share_digest,
)

log = logging.getLogger(__name__)


class PlainTrainingRefused(RedactedError):
    """This node requires secure aggregation and was asked to upload plain weights."""


def _requires_secure_aggregation(node_config) -> bool:
    return str(node_config.get("require-secure-aggregation", "false")).lower() in ("1", "true", "yes")


def _session_of(msg: Message) -> SessionId:
    try:
        return SessionId(run_id=int(msg.metadata.run_id), round=int(msg.metadata.group_id))
    except ValueError:
        raise SecureAggregationRefused("a secure-aggregation request's group id is not a round number") from None


def secure_update_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Answer one secure-aggregation stage; pass every other message on unchanged.

    Raises:
        SecureAggregationRefused: the request breaks one of this hospital's rules.
        SecurePolicyError, IdentityError: this hospital's own settings are unusable.
        PlainTrainingRefused: a plain training request to a node that requires secure aggregation.
        SecureRangeError: its update does not fit the session's encoding.
    """
    if msg.metadata.message_type != MessageType.TRAIN:
        return call_next(msg, ctxt)
    if RECORD_KEY_CONFIGS not in msg.content.config_records:
        if _requires_secure_aggregation(ctxt.node_config):
            raise PlainTrainingRefused(
                "node config require-secure-aggregation=true, but the server asked for plain training "
                "(run config secure-aggregation=false?)"
            )
        return call_next(msg, ctxt)

    policy = SecureAggregationPolicy.from_node_config(resolve_node_config(ctxt.node_config))
    session = _session_of(msg)
    record = SessionRecord.load(ctxt.state)
    configs = msg.content.config_records[RECORD_KEY_CONFIGS]
    stage = str(configs.get(Key.STAGE, ""))
    check_stage(record, stage, session)
    del configs[Key.STAGE]
    if stage == Stage.SETUP:
        record.start(session.run_id, session.round)
        state = SecAggPlusState()
    else:
        state = SecAggPlusState(**ctxt.state.config_records[RECORD_KEY_STATE])

    out_content = RecordDict()
    if stage == Stage.SETUP:
        result = _setup_keys(state, record, policy, configs, msg, RunConfig.from_flower(ctxt.run_config))
    elif stage == Stage.SHARE_KEYS:
        own = (state.pk1, state.pk2, record.own_identity, record.own_signature)
        neighbours = check_neighbours(policy.roster(), state, own, configs, session)
        result = share_secrets(state, record, neighbours, session)
    elif stage == Stage.COLLECT_MASKED_VECTORS:
        record.sources = check_forwarded_shares(record, state, configs)
        global_arrays = parameters_to_ndarrays(compat.recorddict_to_fitins(msg.content, keep_input=True).parameters)
        fitres = compat.recorddict_to_fitres(call_next(msg, ctxt).content, keep_input=False)
        if fitres.status.code != Code.OK:
            raise RedactedError("local training failed", fitres.status.message)
        vector = masked_update(state, configs, global_arrays, fitres, RunConfig.from_flower(ctxt.run_config))
        # Only the masked vector leaves: no weights, case count or per-site metrics.
        out_content = compat.fitres_to_recorddict(
            FitRes(Status(Code.OK, "masked"), Parameters(tensors=[], tensor_type=""), 0, {}), keep_input=False
        )
        result = {Key.MASKED_PARAMETERS: [ndarray_to_bytes(vector)]}
    elif stage == CONSISTENCY_CHECK:
        record.survivors = check_survivors(record, state, configs)
        result = {SURVIVORS_SIGNATURE: _signing_key(record, policy).sign(survivors_message(session, record.survivors))}
    else:
        result = reveal_shares(state, record, check_unmask_request(record, state, configs, session))

    record.stage = stage
    record.save(ctxt.state)
    ctxt.state.config_records[RECORD_KEY_STATE] = ConfigRecord(state.to_dict())
    out_content.config_records[RECORD_KEY_CONFIGS] = ConfigRecord(result, False)
    return Message(out_content, reply_to=msg)


def _signing_key(record: SessionRecord, policy: SecureAggregationPolicy) -> IdentityKey:
    """The identity key, or the session's own key when none is configured."""
    return policy.identity() or IdentityKey.from_private_pem(record.session_key)


def _setup_keys(
    state: SecAggPlusState,
    record: SessionRecord,
    policy: SecureAggregationPolicy,
    configs: ConfigRecord,
    msg: Message,
    config: RunConfig,
) -> dict:
    """Check the session's parameters, make fresh SecAgg+ key pairs and sign them."""
    require_verified_flower()
    try:
        check_configs(Stage.SETUP, configs)  # Flower's own checks: keys present, types
    except (KeyError, TypeError) as error:  # their messages name Flower's keys and types only
        raise SecureAggregationRefused(f"malformed setup request: {error}") from None
    check_setup(policy, configs, config.differential_privacy)
    roster = policy.roster()
    identity = policy.identity()
    if identity is None:
        identity = IdentityKey.ephemeral()
        record.session_key = identity.private_pem()
    if roster is not None and identity.public_bytes not in roster:
        raise SecureAggregationRefused("this hospital's own identity key is not on its secure-aggregation-roster")
    if roster is None:
        log.warning(
            "secure aggregation without secure-aggregation-roster: neighbours' keys are not bound to registered "
            "hospitals, so a deviating server could invent neighbours (acceptable in simulation only)"
        )
    state.nid = msg.metadata.dst_node_id
    keys = _setup(state, configs)
    session = _session_of(msg)
    record.own_identity = identity.public_bytes
    record.own_signature = identity.sign(key_binding_message(session, state.nid, state.pk1, state.pk2))
    return {
        **keys,
        IDENTITY: record.own_identity,
        KEY_SIGNATURE: record.own_signature,
        KEY_BINDING: "roster" if roster is not None else "none",
    }


def share_secrets(state: SecAggPlusState, record: SessionRecord, neighbours: Neighbours, session: SessionId) -> dict:
    """Shamir-share the mask seed and the first private key among ``neighbours``; encrypt each neighbour's pair.

    Every share is committed to by a digest the server keeps, so that a bogus share revealed
    later by a malicious neighbour can be told from a genuine one.

    Returns:
        The share-keys reply: destinations, ciphertexts, share holders and digests, seed digest.
    """
    record.neighbour_ids = list(neighbours)
    record.neighbour_identities = [entry[2] for entry in neighbours.values()]
    state.public_keys_dict = {node: (entry[0], entry[1]) for node, entry in neighbours.items()}
    state.rd_seed = os.urandom(32)
    seed_shares = create_shares(state.rd_seed, state.threshold, state.share_num)
    key_shares = create_shares(state.sk1, state.threshold, state.share_num)
    own_agreement_key = bytes_to_private_key(state.sk2)
    destinations, ciphertexts, holders, digests = [], [], [], []
    for index, (node, (_, pk2, _, _)) in enumerate(sorted(neighbours.items())):
        holders.append(node)
        digests.append(
            share_digest(session, SEED_SHARE, state.nid, node, seed_shares[index])
            + share_digest(session, KEY_SHARE, state.nid, node, key_shares[index])
        )
        if node == state.nid:
            state.rd_seed_share_dict[node], state.sk1_share_dict[node] = seed_shares[index], key_shares[index]
            continue
        shared_key = generate_shared_key(own_agreement_key, bytes_to_public_key(pk2))
        state.ss2_dict[node] = shared_key
        plaintext = share_keys_plaintext_concat(state.nid, node, seed_shares[index], key_shares[index])
        destinations.append(node)
        ciphertexts.append(encrypt(shared_key, plaintext))
    return {
        Key.DESTINATION_LIST: destinations,
        Key.CIPHERTEXT_LIST: ciphertexts,
        SHARE_HOLDERS: holders,
        SHARE_DIGESTS: digests,
        SEED_DIGEST: seed_digest(session, state.nid, state.rd_seed),
    }


def reveal_shares(state: SecAggPlusState, record: SessionRecord, kinds: dict[int, str]) -> dict:
    """The checked unmask answer: a seed share for each survivor, a key share for each dropped neighbour."""
    record.remember_revealed(kinds)
    owners = sorted(kinds)
    shares = [state.rd_seed_share_dict[n] if kinds[n] == SEED_SHARE else state.sk1_share_dict[n] for n in owners]
    return {Key.NODE_ID_LIST: owners, Key.SHARE_LIST: shares}


def masked_update(
    state: SecAggPlusState,
    configs: ConfigRecord,
    global_arrays: list[np.ndarray],
    fitres: FitRes,
    config: RunConfig,
) -> np.ndarray:
    """This client's encoded update plus its own and its pairwise masks.

    Args:
        state: the SecAgg+ state after key sharing (keys, own mask seed, round settings).
        configs: the stage's forwarded ciphertexts (neighbours' shares) and their sources,
            already checked by ``check_forwarded_shares``.
        global_arrays: the global model the round started from.
        fitres: the local ``fit`` result (full weights, number of training cases, metrics).
        config: the run config (whether differential privacy is on).

    Returns:
        ``(L,)`` uint32 vector with ``L = 1 + metrics + number of weights``.

    Raises:
        SecureRangeError: a value outside the agreed encoding range (names the key to change).
        SecureAggregationRefused: a forwarded share that does not decrypt, or is addressed
            to another node or from another source.
    """
    sources = cast(list[int], configs[Key.SOURCE_LIST])
    ciphertexts = cast(list[bytes], configs[Key.CIPHERTEXT_LIST])
    for source, ciphertext in zip(sources, ciphertexts, strict=True):
        try:
            plaintext = decrypt(state.ss2_dict[source], ciphertext)
        except Exception:  # Fernet's InvalidToken, or a malformed token
            raise SecureAggregationRefused("a forwarded share does not decrypt", f"from node {source}") from None
        actual_source, destination, seed_share, key_share = share_keys_plaintext_separate(plaintext)
        if actual_source != source or destination != state.nid:
            raise SecureAggregationRefused(
                "a forwarded share is addressed to another node or comes from another source",
                f"share from {actual_source} to {destination} forwarded as from {source}",
            )
        state.rd_seed_share_dict[source] = seed_share
        state.sk1_share_dict[source] = key_share

    local_arrays = parameters_to_ndarrays(fitres.parameters)
    if len(local_arrays) != len(global_arrays):
        raise ValueError(f"fit returned {len(local_arrays)} weight arrays for a model of {len(global_arrays)}")
    updates = [np.subtract(local, glob, dtype=np.float64) for local, glob in zip(local_arrays, global_arrays)]
    weight = int(fitres.num_examples)
    if config.differential_privacy:
        # Clipped to the session's range itself, so no value of this hospital can fail the encoding.
        updates, norm = clip_update(updates, state.clipping_range)
        if norm > state.clipping_range:
            log.info("update norm %.4g clipped to dp-clipping-norm=%g", norm, state.clipping_range)
        weight = 1
    codec = FixedPointCodec(
        clients=state.sample_num,
        max_weight=int(state.max_weight),
        clipping_range=state.clipping_range,
        metric_keys=carried_metric_keys(config.differential_privacy),
    )
    vector = codec.encode(updates, weight, fitres.metrics)
    vector += mask_words(state.rd_seed, vector.size)
    own_key = bytes_to_private_key(state.sk1)
    for neighbour in sources:
        pairwise = mask_words(
            generate_shared_key(own_key, bytes_to_public_key(state.public_keys_dict[neighbour][0])), vector.size
        )
        if state.nid > neighbour:
            vector += pairwise
        else:
            vector -= pairwise
    return vector
