"""Identity keys, the roster and the signed messages of secure aggregation."""

from __future__ import annotations

import pytest

from segguided_federation.secure_identity import (
    IdentityError,
    IdentityKey,
    Roster,
    key_binding_message,
    survivors_message,
    verify_signature,
)
from segguided_federation.secure_protocol import SessionId
from segguided_tools.credentials import create_supernode_key_pair

SESSION = SessionId(run_id=7, round=3)


@pytest.fixture()
def supernode_key(tmp_path):
    """A SuperNode key pair as `segguided certs` writes it (OpenSSH ECDSA P-384)."""
    private, public = create_supernode_key_pair(comment="hospital-a")
    (tmp_path / "hospital-a.key").write_bytes(private)
    (tmp_path / "hospital-a.pub").write_bytes(public)
    return tmp_path / "hospital-a.key", public


def test_a_supernode_key_signs_what_its_roster_line_verifies(supernode_key):
    path, public = supernode_key
    identity = IdentityKey.load(path)
    roster = Roster.parse(["# registered", public.decode()], "test")
    message = key_binding_message(SESSION, 5, b"pk1", b"pk2")

    assert identity.public_bytes in roster and roster.names[identity.public_bytes] == "hospital-a"
    assert verify_signature(identity.public_bytes, message, identity.sign(message))


@pytest.mark.parametrize(
    "other",
    [
        key_binding_message(SESSION, 6, b"pk1", b"pk2"),  # another node id
        key_binding_message(SessionId(7, 4), 5, b"pk1", b"pk2"),  # another round
        key_binding_message(SessionId(8, 3), 5, b"pk1", b"pk2"),  # another run
        key_binding_message(SESSION, 5, b"pk1", b"pk3"),  # another key
    ],
)
def test_a_signature_binds_run_round_node_and_keys(other):
    identity = IdentityKey.ephemeral()
    signature = identity.sign(key_binding_message(SESSION, 5, b"pk1", b"pk2"))
    assert not verify_signature(identity.public_bytes, other, signature)


def test_survivor_sets_are_signed_as_sets():
    identity = IdentityKey.ephemeral()
    signature = identity.sign(survivors_message(SESSION, [3, 1, 2]))
    assert verify_signature(identity.public_bytes, survivors_message(SESSION, [1, 2, 3]), signature)
    assert not verify_signature(identity.public_bytes, survivors_message(SESSION, [1, 2]), signature)


def test_malformed_identities_and_signatures_do_not_verify():
    identity = IdentityKey.ephemeral()
    message = survivors_message(SESSION, [1])
    assert not verify_signature(b"ssh-ed25519 garbage", message, identity.sign(message))
    assert not verify_signature(identity.public_bytes, message, b"not DER")


def test_a_key_off_the_roster_is_not_in_it(supernode_key):
    _, public = supernode_key
    assert IdentityKey.ephemeral().public_bytes not in Roster.parse([public.decode()], "test")
    assert b"garbage" not in Roster.parse([public.decode()], "test")


@pytest.mark.parametrize("lines, match", [(["ssh-rsa AAAA nope"], "line 1"), (["# only a comment"], "no public key")])
def test_a_bad_roster_is_named(lines, match):
    with pytest.raises(IdentityError, match=match):
        Roster.parse(lines, "roster.pub")


def test_unusable_identity_key_files_are_named(tmp_path):
    with pytest.raises(IdentityError, match="cannot read"):
        IdentityKey.load(tmp_path / "absent.key")
    (tmp_path / "bad.key").write_text("not a key")
    with pytest.raises(IdentityError, match="bad.key"):
        IdentityKey.load(tmp_path / "bad.key")
