"""Every secure-aggregation reply read and checked on its own: a bad reply fails its sender, nothing else.

Each ``read_*`` function takes one client's reply to one stage and returns what the
workflow needs, typed, or raises ``ReplyRejected`` naming the rule the reply breaks: an
error reply, a reply larger than the stage allows, a missing record or key, a wrong type,
lists of different lengths, a repeated or unexpected node id, a key that is not P-384, a
signature that does not verify, a vector of another length than the global model's.
Nothing in a reply is trusted before its function returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Message
from flwr.common import bytes_to_ndarray
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key

from segguided_federation.secure_identity import (
    key_binding_message,
    normalise_identity,
    verify_signature,
)
from segguided_federation.secure_protocol import (
    DIGEST_BYTES,
    IDENTITY,
    KEY_BINDING,
    KEY_BINDINGS,
    KEY_SIGNATURE,
    MAX_CIPHERTEXT_BYTES,
    MAX_IDENTITY_BYTES,
    MAX_PUBLIC_KEY_BYTES,
    MAX_SHARE_BYTES,
    MAX_SIGNATURE_BYTES,
    SEED_DIGEST,
    SHARE_DIGESTS,
    SHARE_HOLDERS,
    SURVIVORS_SIGNATURE,
    SessionId,
    load_agreement_key,
)
from server.failure_reasons import reduced_reason

RECORD_OVERHEAD_BYTES = 64 * 1024
"""Room in any reply for Flower's own records (status, empty FitRes) beyond the stage's payload."""


class ReplyRejected(Exception):
    """A client's reply breaks the protocol; the message names the rule, never a value the client sent."""


@dataclass(frozen=True)
class SetupReply:
    """A client's SecAgg+ public keys, bound to its identity.

    Attributes:
        public_keys: ``[pk1, pk2]``, PEM P-384 (pairwise masks, share encryption).
        identity: its identity public key (normalised OpenSSH line).
        signature: the identity key's signature of the keys.
        key_binding: ``roster`` if it checks its neighbours against a roster, else ``none``.
    """

    public_keys: list[bytes]
    identity: bytes
    signature: bytes
    key_binding: str


@dataclass(frozen=True)
class KeySharesReply:
    """A client's encrypted shares for its neighbours and its commitments to them.

    Attributes:
        ciphertexts: destination node id → the encrypted pair of shares for it.
        share_digests: holder node id (destinations and the sender) → (seed-share digest, key-share digest).
        seed_digest: the digest of the sender's private mask seed.
    """

    ciphertexts: dict[int, bytes]
    share_digests: dict[int, tuple[bytes, bytes]]
    seed_digest: bytes


def content_size(message: Message) -> int:
    """Bytes a reply's records hold (8 per number), to compare with a stage's cap."""
    content = message.content
    size = sum(len(array.data) for record in content.array_records.values() for array in record.values())
    size += 8 * sum(len(value) if isinstance(value, list) else 1
                    for record in content.metric_records.values() for value in record.values())
    for record in content.config_records.values():
        for value in record.values():
            for item in value if isinstance(value, list) else [value]:
                size += len(item) if isinstance(item, (bytes, str)) else 8
    return size


def _configs(reply: Message, payload_bytes: int) -> ConfigRecord:
    if reply.has_error():
        raise ReplyRejected(f"the client failed: {reduced_reason(reply.error.reason or '')}")
    if content_size(reply) > payload_bytes + RECORD_OVERHEAD_BYTES:
        raise ReplyRejected(f"reply larger than the stage allows ({payload_bytes + RECORD_OVERHEAD_BYTES} bytes)")
    if RECORD_KEY_CONFIGS not in reply.content.config_records:
        raise ReplyRejected(f"reply without its {RECORD_KEY_CONFIGS} record")
    return reply.content.config_records[RECORD_KEY_CONFIGS]


def _value(configs: ConfigRecord, key: str, kind: type, max_bytes: int = 0) -> Any:
    if key not in configs:
        raise ReplyRejected(f"reply without {key}")
    value = configs[key]
    if type(value) is not kind or (max_bytes and len(value) > max_bytes):
        raise ReplyRejected(f"{key} is not {kind.__name__}" + (f" of at most {max_bytes} bytes" if max_bytes else ""))
    return value


def _list(configs: ConfigRecord, key: str, kind: type, max_bytes: int = 0) -> list:
    values = _value(configs, key, list)
    if any(type(v) is not kind or (max_bytes and len(v) > max_bytes) for v in values):
        raise ReplyRejected(f"{key} is not a list of {kind.__name__}" + (f" of at most {max_bytes} bytes" if max_bytes else ""))
    return values


def _node_ids(configs: ConfigRecord, key: str, expected: set[int]) -> list[int]:
    nodes = _list(configs, key, int)
    if len(set(nodes)) != len(nodes):
        raise ReplyRejected(f"{key} repeats a node id")
    if set(nodes) != expected:
        raise ReplyRejected(f"{key} is not the set of node ids the request implies")
    return nodes


def _same_length(first: str, first_values: list, second: str, second_values: list) -> None:
    if len(first_values) != len(second_values):
        raise ReplyRejected(f"{first} and {second} have different lengths")


def read_setup(reply: Message, session: SessionId) -> SetupReply:
    """The setup reply of node ``reply.metadata.src_node_id``.

    Raises:
        ReplyRejected: see the module docstring; also a key binding other than ``roster``/``none``.
    """
    configs = _configs(reply, 2 * MAX_PUBLIC_KEY_BYTES + MAX_IDENTITY_BYTES + MAX_SIGNATURE_BYTES + 64)
    keys = [_value(configs, key, bytes, MAX_PUBLIC_KEY_BYTES) for key in (Key.PUBLIC_KEY_1, Key.PUBLIC_KEY_2)]
    for key, value in zip((Key.PUBLIC_KEY_1, Key.PUBLIC_KEY_2), keys):
        try:
            load_agreement_key(value)
        except ValueError:
            raise ReplyRejected(f"{key} is not a PEM P-384 public key") from None
    try:
        identity = normalise_identity(_value(configs, IDENTITY, bytes, MAX_IDENTITY_BYTES))
    except ValueError:
        raise ReplyRejected(f"{IDENTITY} is not an ECDSA OpenSSH public key") from None
    signature = _value(configs, KEY_SIGNATURE, bytes, MAX_SIGNATURE_BYTES)
    if not verify_signature(identity, key_binding_message(session, reply.metadata.src_node_id, *keys), signature):
        raise ReplyRejected(f"{KEY_SIGNATURE} does not verify with the client's {IDENTITY}")
    binding = _value(configs, KEY_BINDING, str, 16)
    if binding not in KEY_BINDINGS:
        raise ReplyRejected(f"{KEY_BINDING} is not one of {KEY_BINDINGS}")
    return SetupReply(keys, identity, signature, binding)


def read_key_shares(reply: Message, destinations: set[int]) -> KeySharesReply:
    """The share-keys reply of a node whose key-sharing neighbours (itself excluded) are ``destinations``.

    Raises:
        ReplyRejected: see the module docstring; also destinations or share holders other
            than the request implies, or digests that are not SHA-256.
    """
    holders = destinations | {reply.metadata.src_node_id}
    configs = _configs(reply, len(holders) * (MAX_CIPHERTEXT_BYTES + 2 * DIGEST_BYTES + 16) + DIGEST_BYTES)
    sent_to = _node_ids(configs, Key.DESTINATION_LIST, destinations)
    ciphertexts = _list(configs, Key.CIPHERTEXT_LIST, bytes, MAX_CIPHERTEXT_BYTES)
    _same_length(Key.DESTINATION_LIST, sent_to, Key.CIPHERTEXT_LIST, ciphertexts)
    holder_ids = _node_ids(configs, SHARE_HOLDERS, holders)
    digests = _list(configs, SHARE_DIGESTS, bytes)
    _same_length(SHARE_HOLDERS, holder_ids, SHARE_DIGESTS, digests)
    if any(len(digest) != 2 * DIGEST_BYTES for digest in digests):
        raise ReplyRejected(f"{SHARE_DIGESTS} are not pairs of SHA-256 digests")
    seed = _value(configs, SEED_DIGEST, bytes)
    if len(seed) != DIGEST_BYTES:
        raise ReplyRejected(f"{SEED_DIGEST} is not a SHA-256 digest")
    return KeySharesReply(
        dict(zip(sent_to, ciphertexts)),
        {holder: (digest[:DIGEST_BYTES], digest[DIGEST_BYTES:]) for holder, digest in zip(holder_ids, digests)},
        seed,
    )


def read_masked_vector(reply: Message, length: int) -> np.ndarray:
    """The masked vector of a node, which must have ``length`` uint32 words (from the global model's shapes).

    Raises:
        ReplyRejected: see the module docstring; also bytes that are not one ``.npy`` uint32 vector.
    """
    configs = _configs(reply, 4 * length + 1024)
    vectors = _list(configs, Key.MASKED_PARAMETERS, bytes, 4 * length + 1024)
    if len(vectors) != 1:
        raise ReplyRejected(f"{Key.MASKED_PARAMETERS} holds {len(vectors)} vectors, expected 1")
    try:
        vector = bytes_to_ndarray(vectors[0])
    except Exception:  # numpy raises ValueError, EOFError, OSError, ... on malformed bytes
        raise ReplyRejected(f"{Key.MASKED_PARAMETERS} is not an .npy array") from None
    if vector.dtype != np.uint32 or vector.shape != (length,):
        raise ReplyRejected(f"masked vector is not {length} uint32 words (the global model's length)")
    return vector


def read_survivors_signature(reply: Message, identity: bytes, message: bytes) -> bytes:
    """A node's signature of the survivor set (``message``), checked with its identity key from setup.

    Raises:
        ReplyRejected: see the module docstring.
    """
    configs = _configs(reply, MAX_SIGNATURE_BYTES)
    signature = _value(configs, SURVIVORS_SIGNATURE, bytes, MAX_SIGNATURE_BYTES)
    if not verify_signature(identity, message, signature):
        raise ReplyRejected(f"{SURVIVORS_SIGNATURE} does not verify with the client's identity key")
    return signature


def read_unmask(reply: Message, owners: set[int]) -> dict[int, bytes]:
    """The shares a node reveals: exactly one per owner it was asked about.

    Returns:
        owner node id → the revealed share (checked against its digest by the unmasking).

    Raises:
        ReplyRejected: see the module docstring.
    """
    configs = _configs(reply, len(owners) * (MAX_SHARE_BYTES + 16))
    nodes = _node_ids(configs, Key.NODE_ID_LIST, owners)
    shares = _list(configs, Key.SHARE_LIST, bytes, MAX_SHARE_BYTES)
    _same_length(Key.NODE_ID_LIST, nodes, Key.SHARE_LIST, shares)
    return dict(zip(nodes, shares))
