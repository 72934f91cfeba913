"""The lab's certificate authority: the hub's server certificate and one client certificate per Pi.

Kafka itself does the rest (infra/kafka_broker.py): its TLS listener accepts only certificates this CA
signed, takes each certificate's CN as the principal, and holds that principal to its ACLs. The CA is
neurolake's own (``neurolake tls init``), kept under ``paths.home/tls``; one certificate per Pi
(``neurolake tls issue DEVICE``). Keys are written mode 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import NeurolakeError
from core.settings import Settings

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey


class TlsError(NeurolakeError):
    """A missing CA or certificate."""


@dataclass(frozen=True)
class Credentials:
    certificate: Path
    key: Path
    ca: Path


def tls_dir(settings: Settings) -> Path:
    return settings.paths.home / "tls"


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _new_key() -> EllipticCurvePrivateKey:
    # Imported here: the Pi runs `tls tunnel` from this module without the lake's cryptography.
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: EllipticCurvePrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def init_ca(directory: Path, name: str = "neurolake lab CA", days: int = 3650) -> Path:
    """Make the CA (once; an existing one is kept). Returns the CA certificate's path."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    cert_path = directory / "ca.pem"
    if cert_path.exists():
        return cert_path
    key = _new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    _write_private(directory / "ca.key", _key_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path


def issue(directory: Path, name: str, server: bool, hosts: tuple[str, ...] = (), days: int = 825) -> Credentials:
    """A certificate and key signed by the CA: a server's (with ``hosts`` as names) or a client's."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_path, ca_key_path = directory / "ca.pem", directory / "ca.key"
    if not ca_path.exists() or not ca_key_path.exists():
        raise TlsError(f"no CA in {directory}; run `neurolake tls init` on the hub first")
    if name in revoked_names(directory):
        # The broker knows a Pi by its certificate's CN: ACLs for a new certificate of this name would
        # admit the revoked one again (it still chains to the CA; Kafka checks no revocation list).
        raise TlsError(
            f"{name}'s certificate was revoked (kept in {directory / REVOKED}); a new one under the same name "
            f"would let the revoked certificate in again, so issue it under a new name (e.g. {name}-2)"
        )
    ca = x509.load_pem_x509_certificate(ca_path.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    key = _new_key()
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
    )
    if hosts:
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise NeurolakeError(f"{ca_key_path} is not the EC key `neurolake tls init` writes; run it again")
    cert = builder.sign(ca_key, hashes.SHA256())
    certificate, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    _write_private(key_path, _key_pem(key))
    certificate.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Credentials(certificate, key_path, ca_path)


REVOKED = "revoked"


def issued_names(directory: Path) -> list[str]:
    """The Pis the lab CA issued a client certificate to (``neurolake tls issue``), not revoked."""
    if not directory.is_dir():
        return []
    return sorted(p.stem for p in directory.glob("*.pem") if p.stem not in ("ca", "hub"))


def revoked_names(directory: Path) -> list[str]:
    """Names whose certificate ``neurolake tls revoke`` took back."""
    folder = directory / REVOKED
    return sorted(p.stem for p in folder.glob("*.pem")) if folder.is_dir() else []


def revoke(directory: Path, name: str) -> Path:
    """Move a client's certificate and key out of the issued ones (into ``revoked/``, kept as a record):
    the next ``neurolake up`` grants it nothing and takes back any ACL it still has."""
    if name in ("ca", "hub"):
        raise TlsError(f"{name!r} is the hub's own; revoke a Pi's certificate (`neurolake tls issue` made them)")
    certificate = directory / f"{name}.pem"
    if not certificate.exists():
        issued = issued_names(directory)
        already = " (already revoked)" if name in revoked_names(directory) else ""
        raise TlsError(f"no certificate issued to {name!r}{already}; issued: {', '.join(issued) or 'none'}")
    folder = directory / REVOKED
    folder.mkdir(mode=0o700, exist_ok=True)
    for path in (certificate, directory / f"{name}.key"):
        if path.exists():
            path.replace(folder / path.name)
    return folder / certificate.name


def server_credentials(settings: Settings) -> Credentials:
    directory = tls_dir(settings)
    credentials = Credentials(directory / "hub.pem", directory / "hub.key", directory / "ca.pem")
    if not all(p.exists() for p in (credentials.certificate, credentials.key, credentials.ca)):
        raise TlsError(
            f"broker.tls_port is set but {directory} has no hub certificate; run "
            "`neurolake tls init --host HUB_NAME` (the name the Pis use for the hub)"
        )
    return credentials
