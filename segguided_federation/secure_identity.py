"""Hospital identities for secure aggregation: identity keys, the roster, and what they sign.

A hospital signs its per-round SecAgg+ public keys (``key_binding_message``) and the
survivor set it confirms (``survivors_message``) with its identity key: its SuperNode
authentication key (ECDSA P-384, OpenSSH format, as ``segguided certs`` writes it) or
another elliptic-curve key its site config names. Its neighbours check the signature and
that the public key is on the roster their operator installed: a text file of OpenSSH
public keys, one per line (``cat supernodes/*.pub``), ``#`` comments allowed.

Signatures are ECDSA with SHA-384 from the ``cryptography`` package. Without an identity
key (simulation), a hospital signs with a key it makes for the session: the signatures
then hold the protocol together but bind nothing to a registered hospital.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from segguided_federation.secure_protocol import (
    KEY_PARSE_ERRORS,
    MAX_IDENTITY_BYTES,
    SessionId,
    encode_fields,
)

SIGNATURE_ALGORITHM = ec.ECDSA(hashes.SHA384())


class IdentityError(ValueError):
    """An identity key or roster cannot be used; the message names the file."""


def _openssh_public_bytes(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)


@dataclass(frozen=True)
class IdentityKey:
    """A hospital's signing key.

    Attributes:
        private_key: the elliptic-curve private key.
        public_bytes: its public key as one OpenSSH line without comment, as it travels and
            as the roster lists it.
    """

    private_key: ec.EllipticCurvePrivateKey
    public_bytes: bytes

    @classmethod
    def from_private_key(cls, key: ec.EllipticCurvePrivateKey) -> "IdentityKey":
        return cls(key, _openssh_public_bytes(key.public_key()))

    @classmethod
    def load(cls, path: Path | str) -> "IdentityKey":
        """Read an unencrypted OpenSSH or PEM (PKCS#8/SEC1) elliptic-curve private key.

        Raises:
            IdentityError: the file cannot be read, is not such a key, or is encrypted.
        """
        path = Path(path).expanduser()
        try:
            data = path.read_bytes()
        except OSError as error:
            raise IdentityError(f"identity key {path}: cannot read it ({error.strerror})") from None
        try:
            if b"OPENSSH PRIVATE KEY" in data:
                key = serialization.load_ssh_private_key(data, password=None)
            else:
                key = serialization.load_pem_private_key(data, password=None)
        except KEY_PARSE_ERRORS as error:
            raise IdentityError(f"identity key {path}: not an unencrypted OpenSSH or PEM private key ({error})") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise IdentityError(f"identity key {path}: expected an elliptic-curve (ECDSA) key, got {type(key).__name__}")
        return cls.from_private_key(key)

    @classmethod
    def ephemeral(cls) -> "IdentityKey":
        """A P-384 key made for one session, bound to no registered hospital."""
        return cls.from_private_key(ec.generate_private_key(ec.SECP384R1()))

    def private_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM (to keep a session key in the node's state)."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @classmethod
    def from_private_pem(cls, data: bytes) -> "IdentityKey":
        """The session key kept in the node's state (``private_pem``)."""
        key = serialization.load_pem_private_key(data, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise IdentityError("session key: expected an elliptic-curve private key")
        return cls.from_private_key(key)

    def sign(self, message: bytes) -> bytes:
        """DER-encoded ECDSA/SHA-384 signature of ``message``."""
        return self.private_key.sign(message, SIGNATURE_ALGORITHM)


def verify_signature(identity: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is the identity key's signature of ``message``.

    Args:
        identity: an OpenSSH public-key line (``ecdsa-sha2-nistp384 AAAA...``).
        message: what was signed.
        signature: DER-encoded ECDSA signature.

    Returns:
        False for a malformed identity or signature as for a wrong one.
    """
    try:
        key = serialization.load_ssh_public_key(identity)
    except KEY_PARSE_ERRORS:
        return False
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return False
    try:
        key.verify(signature, message, SIGNATURE_ALGORITHM)
    except (InvalidSignature, ValueError):
        return False
    return True


def normalise_identity(line: bytes) -> bytes:
    """An OpenSSH public-key line without its comment, re-encoded: the form identities are compared in.

    Raises:
        ValueError: not an elliptic-curve OpenSSH public key.
    """
    if not isinstance(line, bytes) or len(line) > MAX_IDENTITY_BYTES:
        raise ValueError(f"an identity key is an OpenSSH line of at most {MAX_IDENTITY_BYTES} bytes")
    try:
        key = serialization.load_ssh_public_key(b" ".join(line.split()[:2]))
    except KEY_PARSE_ERRORS as error:
        raise ValueError(f"not an OpenSSH public key ({type(error).__name__})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("expected an ECDSA public key")
    return _openssh_public_bytes(key)


@dataclass(frozen=True)
class Roster:
    """The federation's registered identity keys, as a hospital's operator installed them.

    Attributes:
        names: normalised OpenSSH public key → the comment of its line (the hospital's name,
            or ``line N`` without comment); for the hospital's own log.
    """

    names: dict[bytes, str]

    @classmethod
    def parse(cls, lines: Iterable[str], source: str) -> "Roster":
        """Read OpenSSH public-key lines; blank lines and ``#`` comments are skipped.

        Raises:
            IdentityError: a line is not an elliptic-curve OpenSSH public key, or no key is listed.
        """
        names: dict[bytes, str] = {}
        for number, line in enumerate(lines, start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                identity = normalise_identity(line.encode())
            except (ValueError, UnicodeEncodeError):
                raise IdentityError(f"roster {source} line {number}: not an ECDSA OpenSSH public key") from None
            parts = line.split(maxsplit=2)
            names[identity] = parts[2] if len(parts) > 2 else f"line {number}"
        if not names:
            raise IdentityError(f"roster {source}: lists no public key")
        return cls(names)

    @classmethod
    def load(cls, path: Path | str) -> "Roster":
        """Read a roster file.

        Raises:
            IdentityError: the file cannot be read or has a bad line.
        """
        path = Path(path).expanduser()
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as error:
            raise IdentityError(f"roster {path}: cannot read it ({error})") from None
        return cls.parse(text.splitlines(), str(path))

    def __contains__(self, identity: bytes) -> bool:
        try:
            return normalise_identity(identity) in self.names
        except ValueError:
            return False


def key_binding_message(session: SessionId, node_id: int, pk1: bytes, pk2: bytes) -> bytes:
    """What a hospital signs at setup: its two SecAgg+ public keys for this run, round and node id."""
    return encode_fields(b"segguided-fl/secure-aggregation/keys/v1", session.run_id, session.round, node_id, pk1, pk2)


def survivors_message(session: SessionId, survivors: Iterable[int]) -> bytes:
    """What a hospital signs in the consistency check: the sorted survivor set of this run and round."""
    ordered = sorted(set(survivors))
    return encode_fields(
        b"segguided-fl/secure-aggregation/survivors/v1", session.run_id, session.round, len(ordered), *ordered
    )
