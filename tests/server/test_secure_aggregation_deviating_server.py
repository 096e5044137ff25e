"""A deviating server against the hospitals: it cannot unmask one hospital's update or invent neighbours.

The server's messages are rewritten on their way (``InProcessGrid.outgoing``), as a
coordinator who runs a modified ServerApp (or holds the SuperLink) could; every test then
plays the attacker: it takes everything the server received and tries to recover one
hospital's update (``_recover``), or checks that a hospital refused the request and named
the rule it broke.
"""

from __future__ import annotations

import numpy as np
import pytest
from flwr.common import bytes_to_ndarray
from flwr.common.secure_aggregation.crypto.shamir import combine_shares
from flwr.common.secure_aggregation.crypto.symmetric_encryption import (
    generate_shared_key,
)
from flwr.common.secure_aggregation.secaggplus_constants import (
    RECORD_KEY_CONFIGS,
    Key,
    Stage,
)
from flwr.supercore.primitives.asymmetric import (
    bytes_to_private_key,
    bytes_to_public_key,
    generate_key_pairs,
    public_key_to_bytes,
)
from known_update_federation import (
    CASES,
    SHAPES,
    known_update_federation,
    registered_identities,
)

from segguided_federation.metric_keys import TRAINING_LOSS_KEYS
from segguided_federation.secure_encoding import FixedPointCodec
from segguided_federation.secure_masks import mask_words

TARGET = 3
SEED_SHARE_BYTES = 4 + 48
"""A share of a 32-byte mask seed: a 4-byte index and 3 padded 16-byte chunks (a key share is longer)."""


def _configs(message):
    return message.content.config_records[RECORD_KEY_CONFIGS]


def _replies(federation, stage):
    return [m for s, m in federation.grid.received if s == stage and not m.has_error()]


def _refusals(federation, stage):
    return {m.metadata.src_node_id: m.error.reason for s, m in federation.grid.received if s == stage and m.has_error()}


def _recover(federation, target=TARGET) -> list[np.ndarray] | None:
    """The target's update, as the server could compute it from the replies it received; None if it cannot.

    The server needs the target's private mask seed and its first private key (for its
    pairwise masks): a threshold of seed shares and a threshold of key shares.
    """
    public_keys = {m.metadata.src_node_id: _configs(m)[Key.PUBLIC_KEY_1] for m in _replies(federation, Stage.SETUP)}
    vectors = [m for m in _replies(federation, Stage.COLLECT_MASKED_VECTORS) if m.metadata.src_node_id == target]
    seed_shares, key_shares = set(), set()
    for message in _replies(federation, Stage.UNMASK):
        for owner, share in zip(_configs(message)[Key.NODE_ID_LIST], _configs(message)[Key.SHARE_LIST]):
            if owner == target:
                (seed_shares if len(share) == SEED_SHARE_BYTES else key_shares).add(share)
    if not vectors or len(seed_shares) < 2 or len(key_shares) < 2:
        return None
    try:
        seed = combine_shares(sorted(seed_shares))
        private_key = bytes_to_private_key(combine_shares(sorted(key_shares)))
    except ValueError:
        return None
    vector = bytes_to_ndarray(_configs(vectors[0])[Key.MASKED_PARAMETERS][0])
    vector = vector - mask_words(seed, vector.size)
    for node, public_key in public_keys.items():
        if node != target:
            pairwise = mask_words(generate_shared_key(private_key, bytes_to_public_key(public_key)), vector.size)
            vector = vector - pairwise if target > node else vector + pairwise
    decoded = FixedPointCodec(len(public_keys), 1000, 1.0, TRAINING_LOSS_KEYS).decode(vector, SHAPES)
    return [update / max(decoded.weight, 1) for update in decoded.update_sums]


def _recovered(federation) -> bool:
    recovered = _recover(federation)
    if recovered is None:
        return False
    return all(
        np.allclose(got, want, atol=1e-4) for got, want in zip(recovered, federation.updates[TARGET], strict=True)
    )


def _lists(message):
    return list(_configs(message)[Key.ACTIVE_NODE_ID_LIST]), list(_configs(message)[Key.DEAD_NODE_ID_LIST])


def _set_lists(message, active, dead):
    _configs(message)[Key.ACTIVE_NODE_ID_LIST] = sorted(active)
    _configs(message)[Key.DEAD_NODE_ID_LIST] = sorted(dead)


def _target_active_and_dropped(stage, message):
    """One request to every hospital: the target both among the active and among the dropped."""
    if stage == Stage.UNMASK:
        active, dead = _lists(message)
        _set_lists(message, active, {*dead, TARGET})
    return message


def _split_neighbours(stage, message):
    """Nodes 1 and 2 are told the target is active; node 4 and the target itself that it dropped out."""
    if stage == Stage.UNMASK and message.metadata.dst_node_id in (4, TARGET):
        active, dead = _lists(message)
        _set_lists(message, set(active) - {TARGET}, {*dead, TARGET})
    return message


def _split_with_its_own_survivor_set(stage, message):
    """As ``_split_neighbours``, and node 4 is also shown a survivor set without the target to confirm."""
    if stage == "consistency-check" and message.metadata.dst_node_id == 4:
        for key, value in list(_configs(message).items()):
            if isinstance(value, list) and TARGET in value:
                _configs(message)[key] = [node for node in value if node != TARGET]
    return _split_neighbours(stage, message)


DEVIATIONS = {
    "target active and dropped in one request": _target_active_and_dropped,
    "neighbours told different survivors": _split_neighbours,
    "neighbours confirming different survivor sets": _split_with_its_own_survivor_set,
}


@pytest.mark.parametrize("deviation", DEVIATIONS)
def test_no_deviation_in_the_unmask_requests_recovers_one_hospitals_update(deviation):
    federation = known_update_federation(outgoing=DEVIATIONS[deviation])
    try:
        federation.run()
        crash = None
    except Exception as error:  # the deviating server's own aggregation may fail; its attack is what counts
        crash = error

    assert not _recovered(federation)
    assert crash is None  # and the workflow survives the hospitals' refusals
    assert _refusals(federation, Stage.UNMASK)  # the deviation was seen and refused


def test_an_active_and_dropped_request_is_refused_naming_the_rule():
    federation = known_update_federation(outgoing=_target_active_and_dropped)
    federation.run()

    refusals = _refusals(federation, Stage.UNMASK)
    assert set(refusals) == set(CASES)
    assert all("active and dropped" in reason for reason in refusals.values()), refusals


def test_asking_again_after_the_round_yields_no_second_kind_of_share():
    """After an honest round, the server replays each unmask request with the target moved to the dropped."""
    sent = {}

    def keep(stage, message):
        if stage == Stage.UNMASK:
            sent[message.metadata.dst_node_id] = {k: v for k, v in _configs(message).items() if k != Key.STAGE}
        return message

    federation = known_update_federation(outgoing=keep)
    federation.run()
    assert federation.reports[0].aggregated
    for node, configs in sent.items():
        active = [n for n in configs[Key.ACTIVE_NODE_ID_LIST] if n != TARGET]
        replay = {**configs, Key.ACTIVE_NODE_ID_LIST: active, Key.DEAD_NODE_ID_LIST: [TARGET]}
        reply = federation.grid.ask(node, replay, server_round=1, stage=Stage.UNMASK)
        assert reply.has_error()

    assert not _recovered(federation)


def _impostor_entry(folder):
    """Keys for a made-up node 99, signed by an identity key that is not on the roster."""
    from segguided_federation.secure_identity import IdentityKey, key_binding_message
    from segguided_federation.secure_protocol import SessionId

    impostor = registered_identities(folder / "impostor", [99])[99]
    identity = IdentityKey.load(impostor["secure-aggregation-identity-key"])
    pk1, pk2 = (public_key_to_bytes(generate_key_pairs()[1]) for _ in range(2))
    signature = identity.sign(key_binding_message(SessionId(run_id=1, round=1), 99, pk1, pk2))
    return [pk1, pk2, identity.public_bytes, signature]


def test_a_roster_federation_aggregates_and_says_its_keys_are_bound(tmp_path):
    federation = known_update_federation(node_configs=registered_identities(tmp_path, CASES))
    result = federation.run()

    (report,) = federation.reports
    assert report.aggregated and report.key_binding == "roster"
    for got, want in zip(result, federation.fedavg(CASES), strict=True):
        assert np.max(np.abs(got - want)) <= federation.tolerance()


def test_without_a_roster_the_report_says_keys_are_not_bound():
    federation = known_update_federation()
    federation.run()
    assert federation.reports[0].key_binding.startswith("none")


@pytest.mark.parametrize("deviation", ["invented neighbour", "keys swapped under a real signature", "unregistered"])
def test_a_neighbour_off_the_roster_or_badly_signed_is_refused(tmp_path, deviation):
    unregistered = (4,) if deviation == "unregistered" else ()
    identities = registered_identities(tmp_path, CASES, unregistered=unregistered)
    if unregistered:  # node 4 signs with a key no roster lists (and checks none itself)
        del identities[4]["secure-aggregation-roster"]

    def outgoing(stage, message):
        if stage != Stage.SHARE_KEYS or message.metadata.dst_node_id != 1:
            return message
        if deviation == "invented neighbour":  # in place of node 4, so the count still fits
            del _configs(message)["4"]
            _configs(message)["99"] = _impostor_entry(tmp_path)
        elif deviation == "keys swapped under a real signature":
            entry = list(_configs(message)["2"])
            entry[0] = public_key_to_bytes(generate_key_pairs()[1])
            _configs(message)["2"] = entry
        return message

    federation = known_update_federation(node_configs=identities, outgoing=outgoing)
    federation.run()

    reason = _refusals(federation, Stage.SHARE_KEYS).get(1, "")
    expected = "signature" if deviation == "keys swapped under a real signature" else "secure-aggregation-roster"
    assert expected in reason, reason
    assert 1 not in {m.metadata.src_node_id for m in _replies(federation, Stage.COLLECT_MASKED_VECTORS)}
