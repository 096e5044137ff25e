"""A hospital's own SuperNode keys: made on its machine, read by Flower, private, never reported falsely."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import load_ssh_private_key

from segguided_tools.cli.main import main as cli_main
from segguided_tools.credentials import SUPEREXEC_SECRET
from segguided_tools.supernode_keys import (
    PRIVATE_KEY,
    PUBLIC_KEY,
    SupernodeKeyError,
    fingerprint,
    public_key_fingerprint,
    write_supernode_keys,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def keys(tmp_path) -> Path:
    write_supernode_keys(tmp_path / "keys", "hospital-a")
    return tmp_path / "keys"


def test_keys_load_with_flowers_own_readers(keys):
    from flwr.cli.supernode.register import try_load_public_key
    from flwr.supercore.primitives.asymmetric import public_key_to_bytes

    private = load_ssh_private_key((keys / PRIVATE_KEY).read_bytes(), None)  # what flower-supernode does
    assert private.curve.name == "secp384r1"
    assert try_load_public_key(keys / PUBLIC_KEY) == public_key_to_bytes(private.public_key())
    assert (keys / PUBLIC_KEY).read_text().split()[-1] == "hospital-a"


def test_folder_and_secrets_are_owner_only_whatever_the_umask(tmp_path):
    previous = os.umask(0)
    try:
        write_supernode_keys(tmp_path / "keys", "hospital-a")
    finally:
        os.umask(previous)
    keys = tmp_path / "keys"
    assert _mode(keys) == 0o700
    assert _mode(keys / PRIVATE_KEY) == _mode(keys / SUPEREXEC_SECRET) == 0o600 and _mode(keys / PUBLIC_KEY) == 0o644


def test_fingerprint_is_what_ssh_keygen_prints():
    line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBMn3W4C3V7Lo6Fab8eWi+3hULkLeKLL2pcyyxkjgg8p comment"
    assert fingerprint(line) == "SHA256:aFYMdVTDDWKM80Dzbn6cscDmh3niK7lhrQV1iiGL4pQ"  # ssh-keygen -lf
    with pytest.raises(SupernodeKeyError, match="OpenSSH public key line"):
        fingerprint("not a key")


def test_rerun_keeps_the_pair_and_says_so(keys):
    before = {p.name: p.read_bytes() for p in keys.iterdir()}
    actions = write_supernode_keys(keys, "hospital-a")
    assert {a.action for a in actions} == {"kept"}
    assert {p.name: p.read_bytes() for p in keys.iterdir()} == before


@pytest.mark.parametrize("name", [PRIVATE_KEY, SUPEREXEC_SECRET])
def test_an_existing_key_others_can_read_is_refused(keys, name):
    os.chmod(keys / name, 0o644)
    with pytest.raises(SupernodeKeyError, match=rf"{name} has mode 0644: others .*chmod 600"):
        write_supernode_keys(keys, "hospital-a")
    assert _mode(keys / name) == 0o644


def test_a_wide_key_folder_is_narrowed(keys):
    os.chmod(keys, 0o777)
    folder = write_supernode_keys(keys, "hospital-a")[0]
    assert (folder.action, folder.note, _mode(keys)) == ("repaired", "was 0777", 0o700)


def test_force_makes_a_new_pair(keys):
    old = (keys / PUBLIC_KEY).read_bytes()
    os.chmod(keys / PRIVATE_KEY, 0o644)  # an exposed key is replaced, not kept
    actions = write_supernode_keys(keys, "hospital-a", force=True)
    assert {a.action for a in actions if a.path != keys} == {"replaced"}
    assert (keys / PUBLIC_KEY).read_bytes() != old and _mode(keys / PRIVATE_KEY) == 0o600


def test_half_a_pair_and_bad_names_are_refused(keys, tmp_path):
    (keys / PUBLIC_KEY).unlink()
    with pytest.raises(SupernodeKeyError, match=r"supernode\.key exists but .*supernode\.pub"):
        write_supernode_keys(keys, "hospital-a")
    with pytest.raises(SupernodeKeyError, match="hospital name"):
        write_supernode_keys(tmp_path / "other", "../escape")
    assert not (tmp_path / "other").exists()


def test_command_prints_the_public_key_and_its_fingerprint_never_the_private_key(tmp_path, capsys):
    keys = tmp_path / "keys"
    assert cli_main(["supernode-key", str(keys), "--hospital", "hospital-b"]) == 0
    printed = capsys.readouterr().out
    public = (keys / PUBLIC_KEY).read_text().strip()
    assert public in printed and public_key_fingerprint(keys / PUBLIC_KEY) in printed
    assert "PRIVATE KEY" not in printed and (keys / PRIVATE_KEY).read_text().splitlines()[1] not in printed
    assert cli_main(["supernode-key", "--fingerprint", str(keys / PUBLIC_KEY)]) == 0
    assert capsys.readouterr().out.startswith(public_key_fingerprint(keys / PUBLIC_KEY))
    assert cli_main(["supernode-key", "--fingerprint", str(keys / PRIVATE_KEY)]) == 2
    assert "is not an OpenSSH public key" in capsys.readouterr().err
