"""Federation credentials: TLS that real clients accept, keys Flower reads, files that stay private."""

from __future__ import annotations

import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_ssh_private_key

from segguided_tools.cli.main import main as cli_main
from segguided_tools.credentials import (
    CA_CERT,
    CA_KEY,
    SERVER_CERT,
    SERVER_KEY,
    CredentialError,
    certificate_hosts,
    supernode_key_paths,
    write_credentials,
)

HOSTS = ["127.0.0.1", "localhost", "superlink.example.org"]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _handshake(credentials: Path, server_hostname: str, ca_file: Path) -> str:
    """Serve one TLS connection with the SuperLink certificate; return the client's view of it."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(credentials / SERVER_CERT, credentials / SERVER_KEY)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        connection, _ = listener.accept()
        try:
            with server_context.wrap_socket(connection, server_side=True) as tls:
                tls.sendall(b"ok")
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        client_context = ssl.create_default_context(cafile=str(ca_file))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with client_context.wrap_socket(raw, server_hostname=server_hostname) as tls:
                return tls.recv(2).decode()
    finally:
        thread.join(timeout=10)
        listener.close()


@pytest.fixture
def credentials(tmp_path) -> Path:
    write_credentials(tmp_path / "creds", HOSTS, ["site-1", "site-2"])
    return tmp_path / "creds"


@pytest.mark.parametrize("hostname", HOSTS)
def test_server_certificate_passes_strict_verification_for_every_host(credentials, hostname):
    assert _handshake(credentials, hostname, credentials / CA_CERT) == "ok"


def test_server_certificate_is_refused_for_another_host(credentials):
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch|match"):
        _handshake(credentials, "evil.example.org", credentials / CA_CERT)


def test_server_certificate_is_refused_without_the_federation_ca(credentials, tmp_path):
    other = write_credentials(tmp_path / "other", ["127.0.0.1"])
    assert other
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(credentials, "127.0.0.1", tmp_path / "other" / CA_CERT)


def test_supernode_keys_load_with_flowers_own_readers(credentials):
    from flwr.cli.supernode.register import try_load_public_key
    from flwr.supercore.primitives.asymmetric import public_key_to_bytes

    private_path, public_path = supernode_key_paths(credentials, "site-1")
    private = load_ssh_private_key(private_path.read_bytes(), None)  # what flower-supernode does
    assert private.curve.name == "secp384r1"
    assert try_load_public_key(public_path) == public_key_to_bytes(private.public_key())
    assert public_path.read_text().split()[-1] == "site-1"


def test_private_keys_are_owner_only_and_public_files_readable(credentials):
    for hospital in ("site-1", "site-2"):
        private, public = supernode_key_paths(credentials, hospital)
        assert _mode(private) == 0o600 and _mode(public) == 0o644
    assert _mode(credentials / CA_KEY) == 0o600 and _mode(credentials / SERVER_KEY) == 0o600
    assert _mode(credentials / CA_CERT) == 0o644 and _mode(credentials / SERVER_CERT) == 0o644


def test_rerun_keeps_existing_files_and_only_adds_the_new_hospital(credentials):
    before = {p: p.read_bytes() for p in credentials.rglob("*") if p.is_file()}
    actions = write_credentials(credentials, HOSTS, ["site-1", "site-2", "site-3"])
    assert {a.path for a in actions if a.action == "created"} == set(supernode_key_paths(credentials, "site-3"))
    assert all(path.read_bytes() == data for path, data in before.items())


def test_force_replaces_everything(credentials):
    old_ca = (credentials / CA_CERT).read_bytes()
    old_key = supernode_key_paths(credentials, "site-1")[0].read_bytes()
    actions = write_credentials(credentials, ["10.0.0.5"], ["site-1"], force=True)
    assert {a.action for a in actions} == {"replaced"}
    assert (credentials / CA_CERT).read_bytes() != old_ca
    assert supernode_key_paths(credentials, "site-1")[0].read_bytes() != old_key
    certificate = x509.load_pem_x509_certificate((credentials / SERVER_CERT).read_bytes())
    assert certificate_hosts(certificate) == {"10.0.0.5"}
    assert _mode(supernode_key_paths(credentials, "site-1")[0]) == 0o600


def test_changed_hosts_are_refused_without_force_and_nothing_is_written(credentials):
    before = {p: p.read_bytes() for p in credentials.rglob("*") if p.is_file()}
    with pytest.raises(CredentialError, match=r"server\.pem.*--force"):
        write_credentials(credentials, ["superlink.other.org"], ["site-9"])
    assert {p: p.read_bytes() for p in credentials.rglob("*") if p.is_file()} == before


def test_half_a_key_pair_is_refused_by_name(credentials):
    supernode_key_paths(credentials, "site-2")[1].unlink()
    with pytest.raises(CredentialError, match=r"site-2\.key exists but .*site-2\.pub"):
        write_credentials(credentials, HOSTS, ["site-2"])


@pytest.mark.parametrize("host", ["bad host", "-leading.example.org", "a" * 64 + ".org"])
def test_invalid_host_is_named(tmp_path, host):
    with pytest.raises(CredentialError, match="neither an IP address nor a valid DNS name"):
        write_credentials(tmp_path, [host])
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["../escape", "site 1", ""])
def test_invalid_hospital_name_is_named(tmp_path, name):
    with pytest.raises(CredentialError, match="hospital name"):
        write_credentials(tmp_path, ["127.0.0.1"], [name])


def test_ipv6_host_becomes_an_ip_san(tmp_path):
    write_credentials(tmp_path, ["::1", "localhost"])
    certificate = x509.load_pem_x509_certificate((tmp_path / SERVER_CERT).read_bytes())
    assert certificate_hosts(certificate) == {"::1", "localhost"}


def test_command_reports_files_and_refuses_with_one_line(tmp_path, capsys):
    out = tmp_path / "creds"
    assert cli_main(["certs", str(out), "--host", "127.0.0.1", "--hospital", "site-1"]) == 0
    printed = capsys.readouterr().out
    assert "created" in printed and "site-1.key (private, 0600)" in printed
    assert cli_main(["certs", str(out), "--host", "other.example.org"]) == 2
    assert "segguided certs: error:" in capsys.readouterr().err
