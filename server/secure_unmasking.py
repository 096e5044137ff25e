"""Unmasking the sum: genuine shares only, verified secrets, and an aggregate that must look like one.

* ``reconstruct_secrets`` keeps a revealed share only if it matches the digest its owner
  committed to at key sharing, combines a threshold of genuine shares, and checks the
  secret: a mask seed against the owner's seed digest, a private key against the owner's
  public key. A secret that cannot be recovered or checked
  halts the round. A share that does not match its commitment is left out and the pair is
  recorded as *disputed*, blaming neither: the server cannot tell a holder that revealed a
  wrong share from an owner that committed to a share it never sent (the share travelled
  encrypted between the two), so a malicious owner cannot frame an honest holder.
* ``remove_masks`` subtracts the survivors' own masks and the dropped clients' pairwise
  masks from the modular sum.
* ``aggregate_violation`` checks the decoded sum against what honest clients can produce:
  a total weight between the survivors and survivors × max cases, a finite mean update
  within the clipping range, finite training metrics within their bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives.asymmetric import ec
from flwr.common.secure_aggregation.crypto.shamir import combine_shares
from flwr.common.secure_aggregation.crypto.symmetric_encryption import (
    generate_shared_key,
)
from flwr.supercore.primitives.asymmetric import bytes_to_private_key

from segguided_federation.secure_encoding import METRIC_BOUND, DecodedSum
from segguided_federation.secure_masks import mask_words
from segguided_federation.secure_protocol import (
    KEY_PARSE_ERRORS,
    SessionId,
    load_agreement_key,
    seed_digest,
    share_digest,
)

SEED = "seed"
KEY = "key"


@dataclass
class Reconstruction:
    """What the revealed shares gave.

    Attributes:
        secrets: owner node id → its mask seed (survivors) or PEM private key (dropped).
        disputed: (owner, holder) → why the holder's revealed share of the owner's secret
            was left out: it does not match the owner's commitment, and either may have lied.
        failure: why the round must halt; empty if every secret was recovered.
    """

    secrets: dict[int, bytes] = field(default_factory=dict)
    disputed: dict[tuple[int, int], str] = field(default_factory=dict)
    failure: str = ""


def _secret_checks_out(kind: str, secret: bytes, owner_seed_digest: bytes, owner_public_key: bytes,
                       session: SessionId, owner: int) -> bool:
    if kind == SEED:
        return seed_digest(session, owner, secret) == owner_seed_digest
    try:
        private_key = bytes_to_private_key(secret)
    except KEY_PARSE_ERRORS:
        return False
    if not isinstance(private_key, ec.EllipticCurvePrivateKey):
        return False
    return private_key.public_key().public_numbers() == load_agreement_key(owner_public_key).public_numbers()


def reconstruct_secrets(
    session: SessionId,
    wanted: dict[int, str],
    revealed: dict[int, dict[int, bytes]],
    share_digests: dict[int, dict[int, tuple[bytes, bytes]]],
    seed_digests: dict[int, bytes],
    public_keys: dict[int, bytes],
    threshold: int,
) -> Reconstruction:
    """Recover each wanted secret from genuine shares.

    Args:
        session: the run and round the digests are bound to.
        wanted: owner node id → ``seed`` or ``key``.
        revealed: holder node id → {owner node id: share} from its unmask reply.
        share_digests: owner → holder → (seed-share digest, key-share digest) from key sharing.
        seed_digests: owner → its seed digest from key sharing.
        public_keys: owner → its first public key (PEM) from setup.
        threshold: shares needed per secret.

    Returns:
        The secrets, the disputed (owner, holder) pairs, and why the round halts, if it does.
    """
    result = Reconstruction()
    for owner, kind in sorted(wanted.items()):
        genuine = []
        for holder, shares in sorted(revealed.items()):
            if owner not in shares:
                continue
            committed = share_digests[owner].get(holder, (b"", b""))[0 if kind == SEED else 1]
            if share_digest(session, kind, owner, holder, shares[owner]) == committed:
                genuine.append(shares[owner])
            else:
                result.disputed[(owner, holder)] = (
                    f"node {holder}'s {kind} share of node {owner} does not match node {owner}'s commitment "
                    f"(left out; one of the two deviated)"
                )
        if len(genuine) < threshold:
            result.failure = (
                f"node {owner}'s {kind}: {len(genuine)} genuine shares, fewer than the reconstruction threshold "
                f"{threshold}"
            )
            return result
        try:
            secret = combine_shares(genuine[:threshold])
        except (ValueError, IndexError, TypeError):  # shares the owner committed to but that do not combine
            secret = b""
        if not _secret_checks_out(kind, secret, seed_digests.get(owner, b""), public_keys[owner], session, owner):
            result.failure = f"node {owner}'s {kind} reconstructed from genuine shares does not match its commitment"
            return result
        result.secrets[owner] = secret
    return result


def remove_masks(
    total: np.ndarray,
    seeds: dict[int, bytes],
    dropped_keys: dict[int, bytes],
    pairs: dict[int, list[int]],
    public_keys: dict[int, bytes],
) -> np.ndarray:
    """The modular sum without masks.

    Args:
        total: ``(L,)`` uint32, the sum of the survivors' masked vectors (modified in place).
        seeds: survivor → its private mask seed.
        dropped_keys: dropped client → its first private key (PEM).
        pairs: dropped client → the survivors that added a pairwise mask with it.
        public_keys: survivor → its first public key (PEM).

    Returns:
        ``total`` with every mask removed.
    """
    length = total.size
    for seed in seeds.values():
        total -= mask_words(seed, length)
    for dropped, secret in dropped_keys.items():
        private_key = bytes_to_private_key(secret)
        for survivor in pairs.get(dropped, []):
            pairwise = mask_words(generate_shared_key(private_key, load_agreement_key(public_keys[survivor])), length)
            # The survivor added the pair's mask if its id is larger, else subtracted it.
            if survivor > dropped:
                total -= pairwise
            else:
                total += pairwise
    return total


def aggregate_violation(decoded: DecodedSum, survivors: int, max_cases: int, clipping_range: float,
                        tolerance: float) -> str:
    """Why the decoded sum cannot come from ``survivors`` honest clients; empty if it can.

    Args:
        decoded: the unmasked, decoded sum.
        survivors: clients whose vectors are in it.
        max_cases: the largest weight of one client (1 under DP).
        clipping_range: the largest ``|Δ|`` of one weight.
        tolerance: the encoding's rounding, ``0.5 / S``.
    """
    low, high = survivors, survivors * max_cases
    if not low <= decoded.weight <= high:
        return (
            f"total weight {decoded.weight} outside [survivors, survivors × secure-aggregation-max-cases] = "
            f"[{low}, {high}]"
        )
    bound = (clipping_range + tolerance) * (1 + 1e-9)
    for index, update_sum in enumerate(decoded.update_sums):
        mean = np.asarray(update_sum, dtype=np.float64) / decoded.weight
        if not np.all(np.isfinite(mean)):
            return f"the mean update of weight array {index} is not finite"
        if mean.size and float(np.max(np.abs(mean))) > bound:
            return f"the mean update of weight array {index} is beyond the clipping range {clipping_range}"
    for key, value in decoded.metric_means().items():
        if not math.isfinite(value) or abs(value) > METRIC_BOUND:
            return f"the mean training metric {key!r} is not finite or beyond ±{METRIC_BOUND}"
    return ""
