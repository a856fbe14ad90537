"""A local certificate authority for ``make run`` and the tests (``cryptography``).

``LocalCa.create("idc-devstack")`` makes a CA; ``ca.issue(...)`` a leaf certificate signed by
it, for a server (SANs) or a client (its common name is the subject the services map to a
tenant). ``ensure_devstack_tls(var_dir)`` keeps one CA and one server certificate under
``var/tls`` and renews the server certificate when it is close to expiring.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LEAF_DAYS = 30
CA_DAYS = 3650
# A server certificate with less than this left is issued again at the next start.
RENEW_BEFORE = datetime.timedelta(days=7)


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, PEM-encoded."""

    cert_pem: bytes
    key_pem: bytes

    def write(self, directory: Path, name: str) -> tuple[Path, Path]:
        """Write ``<name>.pem`` and ``<name>-key.pem`` (key readable by the owner only)."""
        directory.mkdir(parents=True, exist_ok=True)
        cert, key = directory / f"{name}.pem", directory / f"{name}-key.pem"
        cert.write_bytes(self.cert_pem)
        key.touch(mode=0o600)
        key.write_bytes(self.key_pem)
        return cert, key


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


@dataclass(frozen=True)
class LocalCa:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @classmethod
    def create(cls, common_name: str, days: int = CA_DAYS) -> LocalCa:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(common_name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, cert_pem: bytes, key_pem: bytes) -> LocalCa:
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the local CA's key is not an EC key")
        return cls(x509.load_pem_x509_certificate(cert_pem), key)

    def issue(
        self, common_name: str, *, sans: tuple[str, ...] = (), client: bool = False,
        days: int = LEAF_DAYS,
    ) -> Issued:
        """A leaf certificate: for a server with ``sans`` (IP or DNS names), or a client."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([_san(name) for name in sans]), critical=False
            )
        cert = builder.sign(self.key, hashes.SHA256())
        return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


@dataclass(frozen=True)
class DevstackTls:
    """Files of ``make run``'s TLS: the CA every client trusts and the services' certificate."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_env(self) -> dict[str, str]:
        return {
            "IDC_TLS": "on",
            "IDC_TLS_CERT_FILE": str(self.cert_file),
            "IDC_TLS_KEY_FILE": str(self.key_file),
            "IDC_TLS_CA_FILE": str(self.ca_file),
        }

    def client_env(self) -> dict[str, str]:
        return {"IDC_TLS": "on", "IDC_TLS_CA_FILE": str(self.ca_file)}


def ensure_devstack_tls(var_dir: Path) -> DevstackTls:
    """The CA and server certificate under ``var_dir/tls``, made on first use.

    The CA is kept across starts (a client given its file keeps working); the server
    certificate (SANs 127.0.0.1 and localhost, every service shares it) is issued again
    when it is missing or expires within :data:`RENEW_BEFORE`.
    """
    directory = var_dir / "tls"
    ca_cert, ca_key = directory / "ca.pem", directory / "ca-key.pem"
    if ca_cert.exists() and ca_key.exists():
        ca = LocalCa.load(ca_cert.read_bytes(), ca_key.read_bytes())
    else:
        ca = LocalCa.create("idc-devstack-ca")
        Issued(ca.cert_pem, _key_pem(ca.key)).write(directory, "ca")
    cert, key = directory / "server.pem", directory / "server-key.pem"
    if not _fresh(cert, ca):
        cert, key = ca.issue("idc-devstack", sans=("127.0.0.1", "localhost")).write(
            directory, "server"
        )
    return DevstackTls(ca_file=ca_cert, cert_file=cert, key_file=key)


def _fresh(cert_path: Path, ca: LocalCa) -> bool:
    if not cert_path.exists() or not cert_path.with_name("server-key.pem").exists():
        return False
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    left = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    return cert.issuer == ca.cert.subject and left > RENEW_BEFORE
