"""The coordinator's credentials: the federation's CA, the SuperLink's TLS certificate and its SuperExec secret.

One folder on the coordinator holds them (``segguided certs OUT_DIR --host ...``)::

    ca.crt, ca.key               the federation's certificate authority (keep ca.key offline)
    server.pem, server.key       the SuperLink's TLS certificate, valid for every --host and for
                                 localhost/127.0.0.1 (the loopback side the proxy and the flwr CLI use)
    superexec.secret             the shared secret of the SuperLink and its ServerApp launcher

The SuperLink serves TLS with ``server.pem``/``server.key`` on the coordinator's loopback
interface; the Fleet proxy serves the same certificate on the public port. Hospitals get
``ca.crt`` only: each makes its own SuperNode key pair on its own machine
(``segguided_tools.supernode_keys``) and sends the public key, which the coordinator
registers with ``flwr supernode register``. Adding a hospital therefore never touches
``ca.key``; only a new server certificate does.

The folder is ``0700``, private keys and the secret ``0600`` (``segguided_tools.private_files``).
An existing file is kept unless ``force`` is set; an existing private file that others may
read is refused, never reported as private.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import secrets
from pathlib import Path
from typing import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from segguided_tools.private_files import (
    FileAction,
    PrivateFileError,
    check_private_file,
    ensure_private_folder,
    file_mode,
    write_file,
)

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SERVER_CERT = "server.pem"
SERVER_KEY = "server.key"
SUPEREXEC_SECRET = "superexec.secret"

LOOPBACK_HOSTS = ("localhost", "127.0.0.1")
"""Names the SuperLink certificate is always valid for: its loopback port, where the Fleet
proxy, the ServerApp launcher and the coordinator's ``flwr`` CLI reach it."""

CURVE = ec.SECP384R1()
SECRET_BYTES = 32

_DNS_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


class CredentialError(ValueError):
    """A host name or an existing credential file is unusable; the message names it."""


def subject_alternative_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    """SAN entries for host names and IP addresses (IPv4 or IPv6).

    Raises:
        CredentialError: an entry is neither an IP address nor a valid DNS name.
    """
    if not hosts:
        raise CredentialError("expected at least one host name or IP address for the SuperLink certificate")
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            name: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            labels = host.rstrip(".").split(".")
            if not all(_DNS_LABEL.match(label) for label in labels) or len(host) > 253:
                raise CredentialError(f"host {host!r} is neither an IP address nor a valid DNS name") from None
            name = x509.DNSName(host.rstrip(".").lower())
        if name not in names:  # a host given twice (or also a loopback name) is listed once
            names.append(name)
    return names


def certificate_hosts(certificate: x509.Certificate) -> set[str]:
    """The DNS names and IP addresses a certificate is valid for."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(name) for name in san.get_values_for_type(x509.DNSName)} | {
        str(address) for address in san.get_values_for_type(x509.IPAddress)
    }


def create_certificate_authority(
    common_name: str = "segguided-fl federation CA", days: int = 3650
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed CA that may sign server certificates only (path length 0)."""
    key = ec.generate_private_key(CURVE)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.timezone.utc)
    identifier = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(identifier, critical=False)
        .sign(key, hashes.SHA384())
    )
    return key, certificate


def create_server_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_certificate: x509.Certificate,
    hosts: Sequence[str],
    days: int = 825,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """The SuperLink's TLS certificate, signed by the CA, valid for every entry of ``hosts``.

    Args:
        ca_key: the CA's private key.
        ca_certificate: the CA's certificate.
        hosts: DNS names and IP addresses SuperNodes and the ``flwr`` CLI use to reach the SuperLink.
        days: validity.
    """
    names = subject_alternative_names(hosts)
    key = ec.generate_private_key(CURVE)
    now = dt.datetime.now(dt.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=days), ca_certificate.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=True, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA384())
    )
    return key, certificate


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem_certificate(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _existing_pair(first: Path, second: Path, force: bool) -> bool:
    """Whether a key/certificate pair exists; half a pair is an error unless it is to be replaced."""
    exists = (first.exists(), second.exists())
    if force or exists[0] == exists[1]:
        return all(exists)
    present, missing = (first, second) if exists[0] else (second, first)
    raise CredentialError(f"{present} exists but {missing} does not; use --force to recreate both")


def _load_ca(out_dir: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key_path, cert_path = out_dir / CA_KEY, out_dir / CA_CERT
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError, TypeError) as error:
        raise CredentialError(f"cannot read the existing CA {cert_path} / {key_path}: {error}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != certificate.public_key():
        raise CredentialError(f"{key_path} is not the private key of {cert_path}; use --force to recreate both")
    return key, certificate


def _check_kept_secrets(paths: Sequence[Path]) -> list[FileAction]:
    try:
        return [check_private_file(path) for path in paths]
    except PrivateFileError as error:
        raise CredentialError(str(error)) from None


def write_credentials(
    out_dir: Path,
    hosts: Sequence[str],
    *,
    days: int = 825,
    force: bool = False,
) -> list[FileAction]:
    """Create whatever of the coordinator's credentials is missing in ``out_dir``.

    Args:
        out_dir: the credentials folder (created ``0700``; an existing wider one is narrowed).
        hosts: names and addresses hospitals reach the Fleet proxy at; the certificate is
            also valid for ``LOOPBACK_HOSTS``.
        days: validity of the server certificate (the CA gets ten years).
        force: replace existing files instead of keeping them.

    Returns:
        One ``FileAction`` per file (and the folder), in the order they were handled.

    Raises:
        CredentialError: a bad host name; a CA pair that does not match; an existing server
            certificate whose hosts differ from ``hosts`` (without ``force``); an existing
            private key or secret that others may read (without ``force``). Every check runs
            before anything is written, so a refusal leaves the folder as it was.
    """
    out_dir = Path(out_dir)
    subject_alternative_names(hosts)  # at least one host, each valid: checked before writing anything
    names = subject_alternative_names([*hosts, *LOOPBACK_HOSTS])
    if days < 1:
        raise CredentialError(f"expected a validity of at least 1 day, got {days}")
    ca_paths = (out_dir / CA_KEY, out_dir / CA_CERT)
    server_key_path, server_cert_path = out_dir / SERVER_KEY, out_dir / SERVER_CERT
    secret_path = out_dir / SUPEREXEC_SECRET
    ca_complete = _existing_pair(*ca_paths, force)
    server_exists = _existing_pair(server_key_path, server_cert_path, force)
    if server_exists and not ca_complete and not force:
        raise CredentialError(
            f"{server_cert_path} exists but its CA ({ca_paths[1]}) does not; use --force to recreate both"
        )
    kept_secrets = [] if force else [
        path for path, kept in ((ca_paths[0], ca_complete), (server_key_path, server_exists),
                                (secret_path, secret_path.exists())) if kept
    ]
    kept = {action.path: action for action in _check_kept_secrets(kept_secrets)}
    try:
        actions = [ensure_private_folder(out_dir)]
    except PrivateFileError as error:
        raise CredentialError(str(error)) from None

    if ca_complete and not force:
        ca_key, ca_certificate = _load_ca(out_dir)
        actions += [kept[ca_paths[0]], FileAction(ca_paths[1], "kept", file_mode(ca_paths[1]), private=False)]
    else:
        ca_key, ca_certificate = create_certificate_authority()
        actions.append(write_file(ca_paths[0], _pem_key(ca_key), private=True))
        actions.append(write_file(ca_paths[1], _pem_certificate(ca_certificate), private=False))

    if server_exists and not force:
        try:
            existing = x509.load_pem_x509_certificate(server_cert_path.read_bytes())
        except (OSError, ValueError) as error:
            raise CredentialError(f"cannot read {server_cert_path}: {error}; use --force to recreate it") from None
        wanted = {str(getattr(name, "value", name)) for name in names}
        if certificate_hosts(existing) != wanted:
            raise CredentialError(
                f"{server_cert_path} is valid for {sorted(certificate_hosts(existing))}, not the requested "
                f"{sorted(wanted)}; use --force to replace it"
            )
        actions += [kept[server_key_path], FileAction(server_cert_path, "kept", file_mode(server_cert_path), False)]
    else:
        server_key, server_certificate = create_server_certificate(ca_key, ca_certificate, [*hosts, *LOOPBACK_HOSTS], days)
        actions.append(write_file(server_key_path, _pem_key(server_key), private=True))
        actions.append(write_file(server_cert_path, _pem_certificate(server_certificate), private=False))

    if secret_path in kept:
        actions.append(kept[secret_path])
    else:
        actions.append(write_superexec_secret(secret_path))
    return actions


def write_superexec_secret(path: Path) -> FileAction:
    """A fresh random SuperExec secret (32 bytes, ``0600``): ``--superexec-auth-secret-file`` of a
    SuperLink or SuperNode and of the process that launches its apps."""
    return write_file(path, secrets.token_bytes(SECRET_BYTES), private=True)
