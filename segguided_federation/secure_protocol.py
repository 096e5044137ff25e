"""The secure-aggregation wire protocol both apps follow: stages, record keys, parameter rules, digests.

We run Flower's SecAgg+ stages with one stage added after the masked vectors are in:

``setup`` → ``share-keys`` → ``collect-masked-vectors`` → ``consistency-check`` → ``unmask``

* **setup**: the server sends the session's parameters; a hospital checks them against
  its own rules (``client/secure_checks.py``) and answers with two fresh P-384 public
  keys, signed with its identity key (``secure_identity.py``).
* **share-keys**: each hospital receives its neighbours' signed keys, checks them, and
  sends each neighbour an encrypted Shamir share of its mask seed and of its first private
  key; it also gives the server a SHA-256 digest of every share and of its seed, so that
  the server can tell a genuine share from a bogus one when it unmasks.
* **collect-masked-vectors**: training; each hospital uploads its masked vector.
* **consistency-check** (after Bonawitz et al., CCS 2017, round 3): the server announces
  the survivors; each hospital signs that set and answers with its signature.
* **unmask**: the server forwards the survivors' signatures; a hospital that sees at least
  the reconstruction threshold of its neighbours confirm the same set reveals, for each
  neighbour, either the seed share (survivor) or the key share (dropped), never both.

The records keep Flower's keys (``flwr.common.secure_aggregation.secaggplus_constants.Key``)
and add the ones below. Every length here is a cap a reply must respect.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flwr.common.secure_aggregation.secaggplus_constants import Stage

CONSISTENCY_CHECK = "consistency-check"
STAGES: tuple[str, ...] = (Stage.SETUP, Stage.SHARE_KEYS, Stage.COLLECT_MASKED_VECTORS, CONSISTENCY_CHECK, Stage.UNMASK)
"""The stages of one session, in order."""

# Record keys we add to Flower's.
IDENTITY = "identity"
"""setup reply: the hospital's identity public key (OpenSSH line)."""
KEY_SIGNATURE = "key-signature"
"""setup reply: the identity key's signature of ``key_binding_message``."""
KEY_BINDING = "key-binding"
"""setup reply: ``roster`` if the hospital checks its neighbours against a roster, else ``none``."""
SHARE_HOLDERS = "share-holders"
"""share-keys reply: the node ids holding a share (every destination and the sender itself)."""
SHARE_DIGESTS = "share-digests"
"""share-keys reply: per holder, ``share_digest`` of its seed share then of its key share (64 bytes)."""
SEED_DIGEST = "seed-digest"
"""share-keys reply: ``seed_digest`` of the sender's private mask seed."""
SURVIVORS = "survivors"
"""consistency-check request: the node ids whose masked vectors are in the sum."""
SURVIVORS_SIGNATURE = "survivors-signature"
"""consistency-check reply: the identity key's signature of ``survivors_message``."""
SIGNERS = "signers"
"""unmask request: node ids whose survivor signatures follow, in order."""
SIGNATURES = "signatures"
"""unmask request: their signatures of ``survivors_message``."""

NEIGHBOUR_ENTRY_LENGTH = 4
"""share-keys request: each neighbour's value is ``[pk1, pk2, identity, key signature]``."""

KEY_BINDINGS = ("roster", "none")

MAX_PUBLIC_KEY_BYTES = 1024
MAX_IDENTITY_BYTES = 1024
MAX_SIGNATURE_BYTES = 256
MAX_CIPHERTEXT_BYTES = 4096
MAX_SHARE_BYTES = 1024
DIGEST_BYTES = 32

KEY_PARSE_ERRORS: tuple[type[Exception], ...] = (ValueError, TypeError, IndexError, UnsupportedAlgorithm)
"""What ``cryptography`` raises on key bytes it cannot use; untrusted key bytes are parsed under these."""

AGREEMENT_CURVE = ec.SECP384R1
"""Flower 1.42's SecAgg+ key pairs (``flwr.supercore.primitives.asymmetric.generate_key_pairs``)."""


@dataclass(frozen=True)
class SessionId:
    """What every signature and digest of one session is bound to: the Flower run and the round.

    The round is the request's ``group_id``; a hospital runs at most one session per round.
    """

    run_id: int
    round: int


def majority_threshold(holders: int) -> int:
    """The smallest reconstruction threshold above half of ``holders`` shares.

    With honest holders, a server then cannot collect a threshold of seed shares and a
    threshold of key shares of the same hospital: each holder reveals only one kind.
    """
    return holders // 2 + 1


def encode_fields(domain: bytes, *fields: int | bytes) -> bytes:
    """An unambiguous byte string of a domain label and fields (integers as 8 bytes, bytes length-prefixed)."""
    parts = [len(domain).to_bytes(4, "big"), domain]
    for value in fields:
        if isinstance(value, int):
            parts.append(b"i" + value.to_bytes(8, "big", signed=False))
        else:
            parts.append(b"b" + len(value).to_bytes(4, "big") + value)
    return b"".join(parts)


def share_digest(session: SessionId, kind: str, owner: int, holder: int, share: bytes) -> bytes:
    """SHA-256 commitment to the share of ``owner``'s secret (``seed`` or ``key``) that ``holder`` keeps.

    A share is at least 16 uniformly random bytes per chunk, so its digest reveals nothing
    a guess could be checked against faster than searching the secret itself.
    """
    fields = encode_fields(b"segguided-fl/secure-aggregation/share/v1", kind.encode(), session.run_id,
                           session.round, owner, holder, share)
    return hashlib.sha256(fields).digest()


def seed_digest(session: SessionId, owner: int, seed: bytes) -> bytes:
    """SHA-256 commitment to ``owner``'s private mask seed (32 random bytes)."""
    fields = encode_fields(b"segguided-fl/secure-aggregation/seed/v1", session.run_id, session.round, owner, seed)
    return hashlib.sha256(fields).digest()


def load_agreement_key(data: bytes) -> ec.EllipticCurvePublicKey:
    """A SecAgg+ public key: PEM SubjectPublicKeyInfo of a P-384 key.

    Raises:
        ValueError: not a PEM public key, not elliptic-curve, or another curve.
    """
    if not isinstance(data, bytes) or len(data) > MAX_PUBLIC_KEY_BYTES:
        raise ValueError(f"expected a PEM public key of at most {MAX_PUBLIC_KEY_BYTES} bytes")
    try:
        key = serialization.load_pem_public_key(data)
    except KEY_PARSE_ERRORS as error:
        raise ValueError(f"not a PEM public key ({type(error).__name__})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, AGREEMENT_CURVE):
        raise ValueError("expected a P-384 elliptic-curve public key")
    return key
