"""The unmask rules on their own: whatever the server asks, in whatever order, one kind of share per node."""

from __future__ import annotations

import itertools

import pytest
from flwr.client.mod.secure_aggregation.secaggplus_mod import SecAggPlusState
from flwr.common.secure_aggregation.secaggplus_constants import Key

from client.secure_checks import SecureAggregationRefused, check_unmask_request
from client.secure_session import SessionRecord
from segguided_federation.secure_identity import IdentityKey, survivors_message
from segguided_federation.secure_protocol import SIGNATURES, SIGNERS, SessionId

SESSION = SessionId(1, 1)
ME, NEIGHBOURS = 1, (1, 2, 3, 4)
KEYS = {node: IdentityKey.ephemeral() for node in NEIGHBOURS}


def _hospital(survivors) -> tuple[SessionRecord, SecAggPlusState]:
    record = SessionRecord(run_id=1, round=1, neighbour_ids=list(NEIGHBOURS),
                           neighbour_identities=[KEYS[n].public_bytes for n in NEIGHBOURS],
                           sources=[2, 3, 4], survivors=sorted(survivors))
    state = SecAggPlusState()
    state.nid, state.threshold = ME, 3
    return record, state


def _request(active, dead, confirmed) -> dict:
    """An unmask request with every neighbour's confirmation of ``confirmed`` (the server holds them)."""
    message = survivors_message(SESSION, confirmed)
    return {Key.ACTIVE_NODE_ID_LIST: sorted(active), Key.DEAD_NODE_ID_LIST: sorted(dead),
            SIGNERS: list(NEIGHBOURS), SIGNATURES: [KEYS[n].sign(message) for n in NEIGHBOURS]}


def test_a_request_matching_the_confirmed_set_reveals_one_kind_per_node():
    record, state = _hospital(survivors=[1, 2, 4])
    kinds = check_unmask_request(record, state, _request([1, 2, 4], [3], [1, 2, 4]), SESSION)
    assert kinds == {1: "seed", 2: "seed", 4: "seed", 3: "key"}


@pytest.mark.parametrize(
    "active, dead, confirmed, rule",
    [
        ([1, 2, 3, 4], [3], [1, 2, 3, 4], "both active and dropped"),
        ([2, 3, 4], [1], [2, 3, 4], "among the active"),
        ([1, 2, 4, 9], [3], [1, 2, 4], "share holders"),
        ([1, 2], [3, 4], [1, 2], "fewer active"),
        ([1, 2, 3, 4], [], [1, 2, 3, 4], "does not match the survivor set"),  # the hospital confirmed 1, 2, 4
        ([1, 2, 4], [3], [1, 2, 3, 4], "confirmed the survivor set"),  # confirmations of another set
    ],
)
def test_each_rule_is_named(active, dead, confirmed, rule):
    record, state = _hospital(survivors=[1, 2, 4])
    with pytest.raises(SecureAggregationRefused, match=rule):
        check_unmask_request(record, state, _request(active, dead, confirmed), SESSION)


@pytest.mark.parametrize("first, second", itertools.product([[1, 2, 3, 4], [1, 2, 4]], repeat=2))
def test_no_sequence_of_requests_reveals_both_kinds_for_a_node(first, second):
    """Even if the stage order were bypassed and the confirmed set changed in between, the memory holds."""
    record, state = _hospital(survivors=first)
    revealed: dict[int, set[str]] = {}
    for survivors in (first, second):
        record.survivors = sorted(survivors)
        dead = sorted(set(record.sources) - set(survivors))
        try:
            kinds = check_unmask_request(record, state, _request(survivors, dead, survivors), SESSION)
        except SecureAggregationRefused as refused:
            assert "other kind of share" in refused.public
            continue
        record.remember_revealed(kinds)
        for node, kind in kinds.items():
            revealed.setdefault(node, set()).add(kind)
    assert all(len(kinds) == 1 for kinds in revealed.values()), revealed
