"""Unmasking on its own: genuine shares only, verified secrets, aggregates that honest clients could produce."""

from __future__ import annotations

import os

import numpy as np
import pytest
from flwr.common.secure_aggregation.crypto.shamir import create_shares

from segguided_federation.secure_encoding import DecodedSum
from segguided_federation.secure_protocol import SessionId, seed_digest, share_digest
from server.secure_unmasking import SEED, aggregate_violation, reconstruct_secrets

SESSION = SessionId(1, 1)
OWNER, HOLDERS, THRESHOLD = 1, (1, 2, 3, 4), 3


def _shared_seed():
    seed = os.urandom(32)
    shares = dict(zip(HOLDERS, create_shares(seed, THRESHOLD, len(HOLDERS))))
    digests = {OWNER: {h: (share_digest(SESSION, SEED, OWNER, h, s), b"") for h, s in shares.items()}}
    return seed, shares, digests, {OWNER: seed_digest(SESSION, OWNER, seed)}


def _reconstruct(revealed, digests, seeds):
    return reconstruct_secrets(SESSION, {OWNER: SEED}, revealed, digests, seeds, {OWNER: b""}, THRESHOLD)


def test_a_share_that_does_not_match_its_commitment_is_left_out_and_disputed():
    seed, shares, digests, seeds = _shared_seed()
    revealed = {h: {OWNER: s} for h, s in shares.items()}
    revealed[2] = {OWNER: shares[2][:4] + bytes(len(shares[2]) - 4)}

    result = _reconstruct(revealed, digests, seeds)

    assert result.secrets == {OWNER: seed} and not result.failure
    assert list(result.disputed) == [(OWNER, 2)]  # the pair, not a verdict on either


def test_too_few_genuine_shares_halt_with_the_reason():
    _, shares, digests, seeds = _shared_seed()
    revealed = {h: {OWNER: s} for h, s in list(shares.items())[:THRESHOLD - 1]}
    assert "fewer than the reconstruction threshold" in _reconstruct(revealed, digests, seeds).failure


def test_shares_of_another_seed_than_committed_halt_the_round():
    _, shares, digests, _ = _shared_seed()
    revealed = {h: {OWNER: s} for h, s in shares.items()}
    result = _reconstruct(revealed, digests, {OWNER: seed_digest(SESSION, OWNER, os.urandom(32))})
    assert "does not match its commitment" in result.failure


def _decoded(weight, mean):
    return DecodedSum(weight, {"loss": 1.5 * weight}, [np.full((2, 2), mean * weight)])


@pytest.mark.parametrize(
    "decoded, violation",
    [
        (_decoded(3, 0.5), ""),
        (_decoded(2, 0.5), "total weight"),
        (_decoded(3001, 0.5), "total weight"),
        (_decoded(3, 1.01), "clipping range"),
        (_decoded(3, float("nan")), "not finite"),
        (DecodedSum(3, {"loss": 1e4}, [np.zeros(2)]), "loss"),
    ],
)
def test_an_aggregate_honest_clients_cannot_produce_is_named(decoded, violation):
    found = aggregate_violation(decoded, survivors=3, max_cases=1000, clipping_range=1.0, tolerance=1e-6)
    assert (violation in found) if violation else found == ""
