"""The hospital's own rules for a secure session: what it refuses before any key or share leaves.

A deviating server sends hand-made requests (``InProcessGrid.ask``) to one hospital of an
in-process federation; the hospital's settings come from its node config only.
"""

from __future__ import annotations

import pytest
from flwr.common.secure_aggregation.secaggplus_constants import (
    RECORD_KEY_CONFIGS,
    Key,
    Stage,
)
from flwr.supercore.primitives.asymmetric import generate_key_pairs, public_key_to_bytes
from known_update_federation import (
    CASES,
    known_update_federation,
    registered_identities,
)


def _setup(sample: int, shares: int, threshold: int, max_weight: float = 1000.0, clipping: float = 1.0) -> dict:
    return {
        Key.SAMPLE_NUMBER: sample,
        Key.SHARE_NUMBER: shares,
        Key.THRESHOLD: threshold,
        Key.CLIPPING_RANGE: clipping,
        Key.TARGET_RANGE: 2**30,
        Key.MOD_RANGE: 2**32,
        Key.MAX_WEIGHT: max_weight,
    }


def _refusal(reply) -> str:
    assert reply.has_error(), "the hospital answered instead of refusing"
    return reply.error.reason


@pytest.mark.parametrize(
    "sample, shares, threshold, rule",
    [
        (1, 1, 1, "secure-aggregation-min-clients"),  # a threshold-1 share is the secret itself
        (2, 2, 2, "secure-aggregation-min-clients"),
        (4, 4, 2, "more than half"),
        (4, 4, 5, "more than half"),
        (3, 5, 3, "more shares than clients"),
    ],
)
def test_a_degenerate_session_is_refused_before_any_key_leaves(sample, shares, threshold, rule):
    federation = known_update_federation()
    reply = federation.grid.ask(1, _setup(sample, shares, threshold), server_round=1, stage=Stage.SETUP)
    assert rule in _refusal(reply)


def test_the_hospital_minimum_comes_from_its_own_node_config():
    federation = known_update_federation(node_configs={1: {"secure-aggregation-min-clients": 5}})
    assert "secure-aggregation-min-clients" in _refusal(federation.grid.ask(1, _setup(4, 4, 3), 1, Stage.SETUP))
    assert not federation.grid.ask(2, _setup(4, 4, 3), 1, Stage.SETUP).has_error()


@pytest.mark.parametrize(
    "setup, rule",
    [
        (_setup(4, 4, 3, max_weight=1.0), "secure-aggregation-lowest-max-cases"),
        (_setup(4, 4, 3, clipping=1e-6), "secure-aggregation-lowest-clipping-range"),
    ],
)
def test_probing_ranges_below_the_hospitals_floor_are_refused(setup, rule):
    lowered = {"secure-aggregation-lowest-max-cases": 1, "secure-aggregation-lowest-clipping-range": 1e-9}
    federation = known_update_federation(node_configs={2: lowered})
    assert rule in _refusal(federation.grid.ask(1, setup, server_round=1, stage=Stage.SETUP))
    assert not federation.grid.ask(2, setup, server_round=1, stage=Stage.SETUP).has_error()


def _signed_stranger(node: int, server_round: int) -> list[bytes]:
    """Keys for a node the server made up, signed by a key of its own (no roster: the signature verifies)."""
    from segguided_federation.secure_identity import IdentityKey, key_binding_message
    from segguided_federation.secure_protocol import SessionId

    identity = IdentityKey.ephemeral()
    pk1, pk2 = (public_key_to_bytes(generate_key_pairs()[1]) for _ in range(2))
    return [pk1, pk2, identity.public_bytes, identity.sign(key_binding_message(SessionId(1, server_round), node, pk1, pk2))]


def test_key_sharing_with_fewer_neighbours_than_the_threshold_is_refused():
    from segguided_federation.secure_protocol import IDENTITY, KEY_SIGNATURE

    federation = known_update_federation()
    keys = federation.grid.ask(1, _setup(4, 4, 2 + 1), server_round=1, stage=Stage.SETUP).content
    own = keys.config_records[RECORD_KEY_CONFIGS]
    neighbours = {
        "1": [own[Key.PUBLIC_KEY_1], own[Key.PUBLIC_KEY_2], own[IDENTITY], own[KEY_SIGNATURE]],
        "7": _signed_stranger(7, 1),
    }
    reply = federation.grid.ask(1, neighbours, server_round=1, stage=Stage.SHARE_KEYS)
    assert "threshold more than half of them and at most their number" in _refusal(reply)


def test_a_second_setup_for_a_round_already_started_is_refused():
    federation = known_update_federation()
    assert not federation.grid.ask(1, _setup(4, 4, 3), server_round=1, stage=Stage.SETUP).has_error()
    assert "round" in _refusal(federation.grid.ask(1, _setup(4, 4, 3), server_round=1, stage=Stage.SETUP))
    assert not federation.grid.ask(1, _setup(4, 4, 3), server_round=2, stage=Stage.SETUP).has_error()


def test_the_roster_and_identity_key_come_from_the_hospitals_site_config_file(tmp_path):
    identities = registered_identities(tmp_path / "keys", CASES)
    node_configs = {}
    for node, settings in identities.items():
        site = tmp_path / f"site-{node}.toml"
        lines = [f'data-path = "{tmp_path}"'] + [f'{key} = "{value}"' for key, value in settings.items()]
        site.write_text("\n".join(lines) + "\n")
        node_configs[node] = {"site-config": str(site)}

    federation = known_update_federation(node_configs=node_configs)
    federation.run()

    assert federation.reports[0].aggregated and federation.reports[0].key_binding == "roster"
