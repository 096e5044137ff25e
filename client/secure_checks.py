"""The rules a hospital applies to each secure-aggregation request before it answers.

Every check raises ``SecureAggregationRefused``: its public part names the rule (and the
setting, where one applies) and reaches the server; its private part (node ids, counts,
the server's values) stays in the hospital's log. Nothing is revealed before every rule
of the stage has passed.
"""

from __future__ import annotations

from typing import Any, Mapping, cast

from flwr.client.mod.secure_aggregation.secaggplus_mod import SecAggPlusState
from flwr.common.secure_aggregation.secaggplus_constants import Key, Stage

from client.secure_policy import SecureAggregationPolicy
from client.secure_session import KEY_SHARE, SEED_SHARE, SessionRecord
from segguided_federation.redaction import RedactedError
from segguided_federation.secure_identity import (
    Roster,
    key_binding_message,
    normalise_identity,
    survivors_message,
    verify_signature,
)
from segguided_federation.secure_protocol import (
    MAX_CIPHERTEXT_BYTES,
    MAX_IDENTITY_BYTES,
    MAX_PUBLIC_KEY_BYTES,
    MAX_SIGNATURE_BYTES,
    NEIGHBOUR_ENTRY_LENGTH,
    SIGNATURES,
    SIGNERS,
    STAGES,
    SURVIVORS,
    SessionId,
    load_agreement_key,
    majority_threshold,
)

Neighbours = dict[int, tuple[bytes, bytes, bytes, bytes]]
"""node id → (pk1, pk2, identity, key signature)."""


class SecureAggregationRefused(RedactedError):
    """This hospital refuses a secure-aggregation request; ``public`` names the rule it breaks."""


def _int_list(configs: Mapping[str, Any], key: str) -> list[int]:
    values = configs.get(key)
    if not isinstance(values, list) or any(type(v) is not int for v in values) or len(set(values)) != len(values):
        raise SecureAggregationRefused(f"the request's {key} is not a list of distinct node ids")
    return values


def check_stage(record: SessionRecord, stage: str, session: SessionId) -> None:
    """One session per round, its stages in order.

    Raises:
        SecureAggregationRefused: an unknown stage; a setup for a round this hospital already
            started (or an earlier one); any other stage out of order or of another session.
    """
    if stage not in STAGES:
        raise SecureAggregationRefused("unknown secure-aggregation stage", stage)
    same_run = record.run_id == session.run_id
    if stage == Stage.SETUP:
        if same_run and session.round <= record.round:
            raise SecureAggregationRefused(
                "a secure-aggregation session for this round was already started",
                f"round {session.round}, last started {record.round}",
            )
        return
    expected = STAGES[STAGES.index(record.stage) + 1] if record.stage in STAGES[:-1] else Stage.SETUP
    if not same_run or session.round != record.round or stage != expected:
        raise SecureAggregationRefused(
            f"secure-aggregation stage out of order: expected {expected} of the current session",
            f"got {stage} for run {session.run_id} round {session.round}; session: run {record.run_id} "
            f"round {record.round} after {record.stage or 'nothing'}",
        )


def check_setup(policy: SecureAggregationPolicy, configs: Mapping[str, Any], differential_privacy: bool) -> None:
    """The session's parameters against this hospital's rules (``configs`` passed Flower's type checks).

    Raises:
        SecureAggregationRefused: fewer clients or shares than ``secure-aggregation-min-clients``;
            more shares than clients; a threshold not above half of the shares or above their
            number; without DP, ranges below the hospital's lowest accepted ones.
    """
    if type(configs.get(Key.MAX_WEIGHT)) is not float:
        raise SecureAggregationRefused(f"malformed setup request: {Key.MAX_WEIGHT} is not a float")
    sample, shares, threshold = (int(configs[k]) for k in (Key.SAMPLE_NUMBER, Key.SHARE_NUMBER, Key.THRESHOLD))
    values = f"{sample} clients, {shares} shares, threshold {threshold}"
    if min(sample, shares) < policy.secure_aggregation_min_clients:
        raise SecureAggregationRefused(
            "the session has fewer clients or shares than this hospital's secure-aggregation-min-clients",
            f"{values}; minimum {policy.secure_aggregation_min_clients}",
        )
    if shares > sample:
        raise SecureAggregationRefused("the session gives more shares than clients", values)
    if not majority_threshold(shares) <= threshold <= shares:
        raise SecureAggregationRefused(
            "the reconstruction threshold must be more than half of the shares and at most their number", values
        )
    if differential_privacy:
        return  # weight 1 and updates clipped to the range: no value of this hospital can fail them
    if float(configs[Key.MAX_WEIGHT]) < policy.secure_aggregation_lowest_max_cases:
        raise SecureAggregationRefused(
            "secure-aggregation-max-cases is below this hospital's secure-aggregation-lowest-max-cases",
            f"{configs[Key.MAX_WEIGHT]} < {policy.secure_aggregation_lowest_max_cases}",
        )
    if float(configs[Key.CLIPPING_RANGE]) < policy.secure_aggregation_lowest_clipping_range:
        raise SecureAggregationRefused(
            "secure-aggregation-clipping-range is below this hospital's secure-aggregation-lowest-clipping-range",
            f"{configs[Key.CLIPPING_RANGE]} < {policy.secure_aggregation_lowest_clipping_range}",
        )


def _neighbour_entries(configs: Mapping[str, Any]) -> Neighbours:
    limits = (MAX_PUBLIC_KEY_BYTES, MAX_PUBLIC_KEY_BYTES, MAX_IDENTITY_BYTES, MAX_SIGNATURE_BYTES)
    entries: Neighbours = {}
    for key, value in configs.items():
        if key == Key.STAGE:
            continue
        if not key.isdigit() or not isinstance(value, list) or len(value) != NEIGHBOUR_ENTRY_LENGTH or any(
            not isinstance(part, bytes) or len(part) > limit for part, limit in zip(value, limits)
        ):
            raise SecureAggregationRefused(
                f"a neighbour entry is not a node id with [pk1, pk2, identity, key signature] (at most {limits} bytes)",
                f"entry {key!r}",
            )
        entries[int(key)] = cast(tuple[bytes, bytes, bytes, bytes], tuple(value))
    return entries


def check_neighbours(
    roster: Roster | None,
    state: SecAggPlusState,
    own_entry: tuple[bytes, bytes, bytes, bytes],
    configs: Mapping[str, Any],
    session: SessionId,
) -> Neighbours:
    """The key-sharing neighbours the server announced, each bound to its identity.

    Fewer neighbours than clients at setup are allowed (a client may drop out of setup),
    down to the threshold, which must stay above half of them.

    Args:
        roster: the registered identities, or None (simulation: signatures are checked
            against the key each neighbour presents, which binds nothing).
        state: Flower's SecAgg+ state after setup (this node's id, share number, threshold).
        own_entry: this hospital's own (pk1, pk2, identity, signature), as it sent them.
        configs: the share-keys request.
        session: this session's run and round.

    Returns:
        The neighbours, this hospital included.

    Raises:
        SecureAggregationRefused: a malformed entry; this hospital missing or misquoted;
            more neighbours than shares; a threshold not above half of them or above their
            number; a repeated key or identity; a key that is not
            P-384; an identity not on ``secure-aggregation-roster``; a signature that fails.
    """
    neighbours = _neighbour_entries(configs)
    count = len(neighbours)
    if neighbours.get(state.nid) != own_entry:
        raise SecureAggregationRefused("the neighbour list does not quote this hospital's own keys", f"node {state.nid}")
    if count > state.share_num or not majority_threshold(count) <= state.threshold <= count:
        raise SecureAggregationRefused(
            "the neighbours must be at most the shares, and the threshold more than half of them and at most "
            "their number",
            f"{count} neighbours, {state.share_num} shares, threshold {state.threshold}",
        )
    keys = [key for entry in neighbours.values() for key in entry[:2]]
    identities = [normalise_identity_or_refuse(entry[2]) for entry in neighbours.values()]
    if len(set(keys)) != len(keys) or len(set(identities)) != len(identities):
        raise SecureAggregationRefused("two neighbours present the same public key or identity")
    for node, (pk1, pk2, identity, signature) in neighbours.items():
        try:
            load_agreement_key(pk1), load_agreement_key(pk2)
        except ValueError:
            raise SecureAggregationRefused("a neighbour's SecAgg+ key is not a P-384 public key", f"node {node}") from None
        if roster is not None and identity not in roster:
            raise SecureAggregationRefused("a neighbour's identity key is not on secure-aggregation-roster", f"node {node}")
        if not verify_signature(identity, key_binding_message(session, node, pk1, pk2), signature):
            raise SecureAggregationRefused("a neighbour's key signature does not verify", f"node {node}")
    return neighbours


def normalise_identity_or_refuse(identity: bytes) -> bytes:
    try:
        return normalise_identity(identity)
    except ValueError:
        raise SecureAggregationRefused("a neighbour's identity is not an ECDSA OpenSSH public key") from None


def check_forwarded_shares(record: SessionRecord, state: SecAggPlusState, configs: Mapping[str, Any]) -> list[int]:
    """The neighbours whose encrypted shares the server forwards; returns their ids.

    Raises:
        SecureAggregationRefused: a source that is not a key-sharing neighbour (or is this
            hospital), a repeated source, lists of different lengths, or fewer holders than
            the threshold.
    """
    sources = _int_list(configs, Key.SOURCE_LIST)
    ciphertexts = configs.get(Key.CIPHERTEXT_LIST)
    if not isinstance(ciphertexts, list) or len(ciphertexts) != len(sources) or any(
        not isinstance(c, bytes) or len(c) > MAX_CIPHERTEXT_BYTES for c in ciphertexts
    ):
        raise SecureAggregationRefused("the forwarded shares do not match their sources one to one")
    if not set(sources) <= set(record.neighbour_ids) - {state.nid}:
        raise SecureAggregationRefused("a forwarded share comes from a node that is not a key-sharing neighbour")
    if len(sources) + 1 < state.threshold:
        raise SecureAggregationRefused(
            "fewer neighbours hold shares than the reconstruction threshold", f"{len(sources) + 1} < {state.threshold}"
        )
    return sources


def check_survivors(record: SessionRecord, state: SecAggPlusState, configs: Mapping[str, Any]) -> list[int]:
    """The survivor set this hospital is asked to confirm; returns it sorted.

    Raises:
        SecureAggregationRefused: not distinct node ids, this hospital missing, or fewer of
            its share holders among them than the threshold.
    """
    survivors = _int_list(configs, SURVIVORS)
    if state.nid not in survivors:
        raise SecureAggregationRefused("the survivor set leaves out this hospital")
    holders = set(record.sources) | {state.nid}
    if len(holders & set(survivors)) < state.threshold:
        raise SecureAggregationRefused(
            "fewer of this hospital's share holders survive than the reconstruction threshold",
            f"{len(holders & set(survivors))} < {state.threshold}",
        )
    return sorted(survivors)


def check_unmask_request(
    record: SessionRecord, state: SecAggPlusState, configs: Mapping[str, Any], session: SessionId
) -> dict[int, str]:
    """Which share to reveal for whom; every rule passes before anything is revealed.

    Returns:
        owner node id → ``seed`` (it survived) or ``key`` (it dropped out).

    Raises:
        SecureAggregationRefused: a node both active and dropped; this hospital not active;
            an id that is not a key-sharing neighbour; fewer active than the threshold; lists
            that differ from the survivor set this hospital confirmed; a kind of share other
            than the one already revealed for a node; fewer than the threshold of valid
            confirmations of that set by its neighbours.
    """
    active, dropped = _int_list(configs, Key.ACTIVE_NODE_ID_LIST), _int_list(configs, Key.DEAD_NODE_ID_LIST)
    if set(active) & set(dropped):
        raise SecureAggregationRefused("the unmask request lists a node as both active and dropped")
    if state.nid not in active:
        raise SecureAggregationRefused("the unmask request does not list this hospital among the active")
    holders = set(record.sources) | {state.nid}
    if not set(active) | set(dropped) <= holders:
        raise SecureAggregationRefused("the unmask request names a node that is not one of this hospital's share holders")
    if len(active) < state.threshold:
        raise SecureAggregationRefused(
            "the unmask request lists fewer active nodes than the reconstruction threshold",
            f"{len(active)} < {state.threshold}",
        )
    survivors = set(record.survivors)
    if set(active) != holders & survivors or set(dropped) != set(record.sources) - survivors:
        raise SecureAggregationRefused("the unmask request does not match the survivor set this hospital confirmed")
    kinds = {**{node: SEED_SHARE for node in active}, **{node: KEY_SHARE for node in dropped}}
    revealed = record.revealed()
    if any(revealed.get(node, kind) != kind for node, kind in kinds.items()):
        raise SecureAggregationRefused("the unmask request asks for the other kind of share than already revealed")
    _check_confirmations(record, configs, session, holders & survivors, state.threshold)
    return kinds


def _check_confirmations(
    record: SessionRecord, configs: Mapping[str, Any], session: SessionId, confirmers: set[int], threshold: int
) -> None:
    signers = _int_list(configs, SIGNERS)
    signatures = configs.get(SIGNATURES)
    if not isinstance(signatures, list) or len(signatures) != len(signers) or any(
        not isinstance(s, bytes) or len(s) > MAX_SIGNATURE_BYTES for s in signatures
    ):
        raise SecureAggregationRefused("the survivor confirmations do not match their signers one to one")
    message = survivors_message(session, record.survivors)
    valid = {
        signer for signer, signature in zip(signers, signatures)
        if signer in confirmers and verify_signature(record.identity_of(signer), message, signature)
    }
    if len(valid) < threshold:
        raise SecureAggregationRefused(
            "fewer neighbours than the reconstruction threshold confirmed the survivor set",
            f"{len(valid)} valid confirmations < {threshold}",
        )
