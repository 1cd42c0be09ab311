"""The lab's own certificate authority and the broker's TLS certificate (`fablab tls-ca`,
`fablab tls-cert`), made with the `cryptography` library.

Controllers trust the lab CA (`ca_file` in their config) and so check that the broker
they talk to holds a certificate this CA signed for its host name or address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from server.adapters.mosquitto import write_private

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
BROKER_CERT = "broker.crt"
BROKER_KEY = "broker.key"
CA_DAYS = 10 * 365
BROKER_DAYS = 2 * 365


class TlsFileError(Exception):
    """A certificate or key that cannot be made or read; the message says what to do."""


@dataclass(frozen=True)
class Issued:
    certificate: Path
    key: Path
    not_after: datetime


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _refuse_overwrite(*paths: Path) -> None:
    for path in paths:
        if path.exists():
            raise TlsFileError(f"{path} exists: keep it, or pass --force to replace it")


def make_ca(out_dir: Path, name: str, *, force: bool = False, days: int = CA_DAYS) -> Issued:
    """Create the lab CA: `ca.crt` (give it to every controller) and `ca.key` (0600)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out_dir / CA_CERT, out_dir / CA_KEY
    if not force:
        _refuse_overwrite(cert_path, key_path)
    key = _new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    write_private(key_path, _key_pem(key), mode=0o600)
    write_private(cert_path, _cert_pem(cert), mode=0o644)
    return Issued(cert_path, key_path, cert.not_valid_after_utc)


def make_broker_cert(
    ca_dir: Path,
    out_dir: Path,
    hosts: Sequence[str],
    *,
    force: bool = False,
    days: int = BROKER_DAYS,
) -> Issued:
    """Issue the broker's certificate for `hosts` (names or IP addresses the controllers
    use in their broker_url), signed by the lab CA in `ca_dir`."""
    if not hosts:
        raise TlsFileError("name the broker's host with --host (as controllers reach it)")
    ca_cert, ca_key = _load_ca(ca_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out_dir / BROKER_CERT, out_dir / BROKER_KEY
    if not force:
        _refuse_overwrite(cert_path, key_path)
    key = _new_key()
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(min(now + timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName([_general_name(h) for h in hosts]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    write_private(key_path, _key_pem(key), mode=0o640)  # read by the broker's group
    write_private(cert_path, _cert_pem(cert), mode=0o644)
    return Issued(cert_path, key_path, cert.not_valid_after_utc)


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _load_ca(ca_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate((ca_dir / CA_CERT).read_bytes())
        key = serialization.load_pem_private_key((ca_dir / CA_KEY).read_bytes(), None)
    except FileNotFoundError as exc:
        raise TlsFileError(f"no lab CA in {ca_dir} ({exc.filename} missing): "
                           "run `fablab tls-ca` first") from None
    except (OSError, ValueError) as exc:
        raise TlsFileError(f"cannot read the lab CA in {ca_dir}: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TlsFileError(f"{ca_dir / CA_KEY} is not a key made by `fablab tls-ca`")
    return cert, key
