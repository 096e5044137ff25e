"""The coordinator's credentials: TLS that real clients accept, files that stay private, no hospital keys."""

from __future__ import annotations

import os
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509

from segguided_tools.cli.main import main as cli_main
from segguided_tools.credentials import (
    CA_CERT,
    CA_KEY,
    LOOPBACK_HOSTS,
    SERVER_CERT,
    SERVER_KEY,
    SUPEREXEC_SECRET,
    CredentialError,
    certificate_hosts,
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
    write_credentials(tmp_path / "creds", HOSTS)
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


def test_private_files_are_owner_only_whatever_the_umask(tmp_path):
    previous = os.umask(0)
    try:
        write_credentials(tmp_path / "creds", ["127.0.0.1"])
    finally:
        os.umask(previous)
    creds = tmp_path / "creds"
    assert _mode(creds) == 0o700
    assert _mode(creds / CA_KEY) == _mode(creds / SERVER_KEY) == _mode(creds / SUPEREXEC_SECRET) == 0o600
    assert _mode(creds / CA_CERT) == _mode(creds / SERVER_CERT) == 0o644
    assert len((creds / SUPEREXEC_SECRET).read_bytes()) == 32


def test_no_hospital_keys_are_made_and_loopback_is_always_in_the_certificate(credentials):
    assert sorted(p.name for p in credentials.iterdir()) == sorted([CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY, SUPEREXEC_SECRET])
    certificate = x509.load_pem_x509_certificate((credentials / SERVER_CERT).read_bytes())
    assert certificate_hosts(certificate) == set(HOSTS) | set(LOOPBACK_HOSTS)


def test_rerun_keeps_every_file_and_reports_them_kept(credentials):
    before = {p: p.read_bytes() for p in credentials.rglob("*") if p.is_file()}
    actions = write_credentials(credentials, HOSTS)
    assert {a.action for a in actions} == {"kept"}
    assert all(path.read_bytes() == data for path, data in before.items())


@pytest.mark.parametrize("name", [CA_KEY, SERVER_KEY, SUPEREXEC_SECRET])
def test_an_existing_private_file_others_can_read_is_refused_not_reported_private(credentials, name):
    os.chmod(credentials / name, 0o644)
    before = {p: p.read_bytes() for p in credentials.rglob("*") if p.is_file()}
    with pytest.raises(CredentialError, match=rf"{name} has mode 0644.*chmod 600"):
        write_credentials(credentials, HOSTS)
    assert {p: p.read_bytes() for p in credentials.rglob("*") if p.is_file()} == before
    assert _mode(credentials / name) == 0o644  # left for its owner to decide, never silently "kept"


def test_a_wide_folder_is_narrowed_and_reported(credentials):
    os.chmod(credentials, 0o755)
    actions = write_credentials(credentials, HOSTS)
    folder = next(a for a in actions if a.path == credentials)
    assert folder.action == "repaired" and "was 0755" in folder.note and _mode(credentials) == 0o700


def test_force_replaces_everything(credentials):
    old_ca = (credentials / CA_CERT).read_bytes()
    old_secret = (credentials / SUPEREXEC_SECRET).read_bytes()
    actions = write_credentials(credentials, ["10.0.0.5"], force=True)
    assert {a.action for a in actions if a.path != credentials} == {"replaced"}
    assert (credentials / CA_CERT).read_bytes() != old_ca
    assert (credentials / SUPEREXEC_SECRET).read_bytes() != old_secret
    certificate = x509.load_pem_x509_certificate((credentials / SERVER_CERT).read_bytes())
    assert certificate_hosts(certificate) == {"10.0.0.5", *LOOPBACK_HOSTS}
    assert _mode(credentials / SERVER_KEY) == 0o600


def test_changed_hosts_are_refused_without_force_and_nothing_is_written(credentials):
    before = {p: p.read_bytes() for p in credentials.rglob("*") if p.is_file()}
    with pytest.raises(CredentialError, match=r"server\.pem.*--force"):
        write_credentials(credentials, ["superlink.other.org"])
    assert {p: p.read_bytes() for p in credentials.rglob("*") if p.is_file()} == before


def test_half_a_certificate_pair_is_refused_by_name(credentials):
    (credentials / SERVER_KEY).unlink()
    with pytest.raises(CredentialError, match=r"server\.pem exists but .*server\.key"):
        write_credentials(credentials, HOSTS)


@pytest.mark.parametrize("host", ["bad host", "-leading.example.org", "a" * 64 + ".org"])
def test_invalid_host_is_named(tmp_path, host):
    with pytest.raises(CredentialError, match="neither an IP address nor a valid DNS name"):
        write_credentials(tmp_path, [host])
    assert not any(tmp_path.iterdir())


def test_ipv6_host_becomes_an_ip_san(tmp_path):
    write_credentials(tmp_path, ["::1", "localhost"])
    certificate = x509.load_pem_x509_certificate((tmp_path / SERVER_CERT).read_bytes())
    assert certificate_hosts(certificate) == {"::1", *LOOPBACK_HOSTS}


def test_command_reports_files_and_refuses_with_one_line(tmp_path, capsys):
    out = tmp_path / "creds"
    assert cli_main(["certs", str(out), "--host", "127.0.0.1"]) == 0
    printed = capsys.readouterr().out
    assert "created" in printed and "ca.key (private, 0600)" in printed and "--hospital" not in printed
    assert cli_main(["certs", str(out), "--host", "other.example.org"]) == 2
    assert "segguided certs: error:" in capsys.readouterr().err
