"""A hospital's own SuperNode credentials, made on the hospital's machine: its key pair and SuperExec secret.

``segguided supernode-key KEY_DIR --hospital NAME`` writes, in a ``0700`` folder::

    supernode.key      the SuperNode's private authentication key (ECDSA P-384, OpenSSH, 0600);
                       it never leaves this folder: flower-supernode reads it in place
    supernode.pub      its public key, the one file the hospital sends the coordinator
    superexec.secret   the shared secret of the SuperNode and its ClientApp launcher (0600)

and prints the public key with its fingerprint (``SHA256:...``, as ``ssh-keygen -l`` shows
it), so that the coordinator can confirm over a second channel (a phone call) that the key
it registers with ``flwr supernode register supernode.pub`` is the hospital's.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from segguided_tools.credentials import CURVE, SUPEREXEC_SECRET, write_superexec_secret
from segguided_tools.private_files import (
    FileAction,
    PrivateFileError,
    check_private_file,
    ensure_private_folder,
    file_mode,
    write_file,
)

PRIVATE_KEY = "supernode.key"
PUBLIC_KEY = "supernode.pub"

HOSPITAL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class SupernodeKeyError(ValueError):
    """A hospital name, key folder or existing key file is unusable; the message names it."""


def create_supernode_key_pair(comment: str = "") -> tuple[bytes, bytes]:
    """An ECDSA P-384 key pair in OpenSSH format: ``(private key, public key line)``.

    The format ``flower-supernode --auth-supernode-private-key`` and ``flwr supernode
    register`` read; ``comment`` (the hospital's name) ends the public key line.
    """
    key = ec.generate_private_key(CURVE)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    if comment:
        public += b" " + comment.encode("ascii")
    return private, public + b"\n"


def fingerprint(public_key_line: str) -> str:
    """``SHA256:<base64>`` of an OpenSSH public key, as ``ssh-keygen -l`` prints it.

    Raises:
        SupernodeKeyError: the line is not ``<type> <base64 blob> [comment]``.
    """
    fields = public_key_line.split()
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except (IndexError, ValueError):
        raise SupernodeKeyError(f"expected an OpenSSH public key line '<type> <base64> [comment]', got {public_key_line[:60]!r}") from None
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")


def public_key_fingerprint(path: Path) -> str:
    """The fingerprint of the OpenSSH public key file ``path``.

    Raises:
        SupernodeKeyError: the file cannot be read or holds no OpenSSH public key.
    """
    try:
        text = Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as error:
        raise SupernodeKeyError(f"cannot read the public key {path}: {error}") from None
    try:
        serialization.load_ssh_public_key(text.encode("ascii"))
    except (ValueError, UnicodeEncodeError, UnsupportedAlgorithm):
        raise SupernodeKeyError(f"{path} is not an OpenSSH public key") from None
    return fingerprint(text)


def write_supernode_keys(key_dir: Path, hospital: str, *, force: bool = False) -> list[FileAction]:
    """Create this hospital's SuperNode key pair and SuperExec secret in ``key_dir``, if missing.

    Args:
        key_dir: the hospital's key folder (created ``0700``; an existing wider one is narrowed).
        hospital: the hospital's name, written as the public key's comment.
        force: replace an existing key pair and secret (the coordinator must register the new key).

    Returns:
        One ``FileAction`` per file (and the folder).

    Raises:
        SupernodeKeyError: a bad hospital name; half a key pair; an existing private key or
            secret that others may read (without ``force``). Checked before anything is written.
    """
    if not HOSPITAL_NAME.match(hospital):
        raise SupernodeKeyError(
            f"hospital name {hospital!r}: expected letters, digits, '.', '_' or '-' (at most 63 characters)"
        )
    key_dir = Path(key_dir)
    private_path, public_path, secret_path = key_dir / PRIVATE_KEY, key_dir / PUBLIC_KEY, key_dir / SUPEREXEC_SECRET
    pair = (private_path.exists(), public_path.exists())
    if pair[0] != pair[1] and not force:
        present, missing = (private_path, public_path) if pair[0] else (public_path, private_path)
        raise SupernodeKeyError(f"{present} exists but {missing} does not; use --force to make a new key pair")
    keep_pair, keep_secret = all(pair) and not force, secret_path.exists() and not force
    try:
        kept = {action.path: action for action in
                [check_private_file(p) for p, keep in ((private_path, keep_pair), (secret_path, keep_secret)) if keep]}
        actions = [ensure_private_folder(key_dir)]
    except PrivateFileError as error:
        raise SupernodeKeyError(str(error)) from None
    if keep_pair:
        actions += [kept[private_path], FileAction(public_path, "kept", file_mode(public_path), private=False)]
    else:
        private, public = create_supernode_key_pair(comment=hospital)
        actions += [write_file(private_path, private, private=True), write_file(public_path, public, private=False)]
    actions.append(kept[secret_path] if keep_secret else write_superexec_secret(secret_path))
    return actions
