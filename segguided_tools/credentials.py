"""The federation's credentials: its CA, the SuperLink's TLS certificate and the SuperNodes' keys.

One folder holds everything the coordinator creates::

    ca.crt, ca.key               the federation's certificate authority
    server.pem, server.key       the SuperLink's TLS certificate (SANs: its host names and IPs)
    supernodes/NAME.key, .pub    one SuperNode authentication key pair per hospital

The SuperLink serves TLS with ``server.pem``/``server.key`` and checks SuperNodes against
the public keys registered with ``flwr supernode register supernodes/NAME.pub``; each
hospital receives ``ca.crt`` (to verify the SuperLink) and its own ``supernodes/NAME.key``.
SuperNode keys are ECDSA P-384 in OpenSSH format, the format ``flower-supernode
--auth-supernode-private-key`` and ``flwr supernode register`` read.

Private keys are created with owner-only permissions (0600). An existing file is never
replaced unless ``force`` is set; it is kept, and reported as kept.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from segguided_model.atomic_write import write_bytes_atomically

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SERVER_CERT = "server.pem"
SERVER_KEY = "server.key"
SUPERNODE_DIR = "supernodes"

PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644
CURVE = ec.SECP384R1()

_HOSPITAL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_DNS_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


class CredentialError(ValueError):
    """A host name, hospital name or existing credential file is unusable; the message names it."""


@dataclass(frozen=True)
class FileAction:
    """What happened to one credential file: ``created``, ``replaced`` or ``kept``."""

    path: Path
    action: str
    private: bool


def supernode_key_paths(out_dir: Path, hospital: str) -> tuple[Path, Path]:
    """``(private key, public key)`` of one hospital's SuperNode under ``out_dir``."""
    folder = Path(out_dir) / SUPERNODE_DIR
    return folder / f"{hospital}.key", folder / f"{hospital}.pub"


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
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
            continue
        except ValueError:
            pass
        labels = host.rstrip(".").split(".")
        if not all(_DNS_LABEL.match(label) for label in labels) or len(host) > 253:
            raise CredentialError(f"host {host!r} is neither an IP address nor a valid DNS name")
        names.append(x509.DNSName(host.rstrip(".").lower()))
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


def create_supernode_key_pair(comment: str = "") -> tuple[bytes, bytes]:
    """An ECDSA P-384 key pair in OpenSSH format: ``(private key, public key line)``."""
    key = ec.generate_private_key(CURVE)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    if comment:
        public += b" " + comment.encode("ascii")
    return private, public + b"\n"


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem_certificate(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _write(path: Path, data: bytes, private: bool, existed: bool) -> FileAction:
    # mkstemp creates the temporary file 0600, so a private key is never readable by others.
    write_bytes_atomically(path, data)
    os.chmod(path, PRIVATE_MODE if private else PUBLIC_MODE)
    return FileAction(path, "replaced" if existed else "created", private)


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


def write_credentials(
    out_dir: Path,
    hosts: Sequence[str],
    hospitals: Sequence[str] = (),
    *,
    days: int = 825,
    force: bool = False,
) -> list[FileAction]:
    """Create whatever of the federation's credentials is missing in ``out_dir``.

    Args:
        out_dir: the credentials folder (created if needed).
        hosts: SANs of the SuperLink certificate.
        hospitals: one SuperNode key pair per name (letters, digits, ``.``, ``_``, ``-``).
        days: validity of the server certificate (the CA gets ten years).
        force: replace existing files instead of keeping them.

    Returns:
        One ``FileAction`` per file, in the order they were handled.

    Raises:
        CredentialError: a bad host or hospital name; a CA pair that does not match; an
            existing server certificate whose hosts differ from ``hosts`` (without ``force``).
    """
    out_dir = Path(out_dir)
    names = subject_alternative_names(hosts)  # validate before writing anything
    for hospital in hospitals:
        if not _HOSPITAL_NAME.match(hospital):
            raise CredentialError(
                f"hospital name {hospital!r}: expected letters, digits, '.', '_' or '-' (at most 63 characters)"
            )
    if days < 1:
        raise CredentialError(f"expected a validity of at least 1 day, got {days}")
    ca_paths = (out_dir / CA_KEY, out_dir / CA_CERT)
    server_key_path, server_cert_path = out_dir / SERVER_KEY, out_dir / SERVER_CERT
    # Check every pair before writing anything, so a refusal leaves the folder as it was.
    ca_complete = _existing_pair(*ca_paths, force)
    server_exists = _existing_pair(server_key_path, server_cert_path, force)
    for hospital in hospitals:
        _existing_pair(*supernode_key_paths(out_dir, hospital), force)
    if server_exists and not ca_complete and not force:
        raise CredentialError(
            f"{server_cert_path} exists but its CA ({ca_paths[1]}) does not; use --force to recreate both"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    actions: list[FileAction] = []

    ca_exists = [path.exists() for path in ca_paths]
    if ca_complete and not force:
        ca_key, ca_certificate = _load_ca(out_dir)
        actions += [FileAction(ca_paths[0], "kept", True), FileAction(ca_paths[1], "kept", False)]
    else:
        ca_key, ca_certificate = create_certificate_authority()
        actions.append(_write(ca_paths[0], _pem_key(ca_key), True, ca_exists[0]))
        actions.append(_write(ca_paths[1], _pem_certificate(ca_certificate), False, ca_exists[1]))

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
        actions += [FileAction(server_key_path, "kept", True), FileAction(server_cert_path, "kept", False)]
    else:
        server_key, server_certificate = create_server_certificate(ca_key, ca_certificate, hosts, days)
        actions.append(_write(server_key_path, _pem_key(server_key), True, server_key_path.exists()))
        actions.append(
            _write(server_cert_path, _pem_certificate(server_certificate), False, server_cert_path.exists())
        )

    for hospital in hospitals:
        private_path, public_path = supernode_key_paths(out_dir, hospital)
        if not force and private_path.exists():
            actions += [FileAction(private_path, "kept", True), FileAction(public_path, "kept", False)]
            continue
        private, public = create_supernode_key_pair(comment=hospital)
        actions.append(_write(private_path, private, True, private_path.exists()))
        actions.append(_write(public_path, public, False, public_path.exists()))
    return actions
