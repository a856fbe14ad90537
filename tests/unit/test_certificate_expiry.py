"""Gauge idc.tls.certificate.not_after reads the configured certificate files, at each
scrape, so a renewed file shows at once."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.common.certificate_expiry import (
    CertificateRole,
    configured_certificates,
    not_after,
    read,
)
from services.common.config import KafkaSecurity
from services.common.metrics import Reading
from services.common.tls import ClientTls, ServerTls

JAN = datetime.datetime(2027, 1, 15, 12, 0, tzinfo=datetime.UTC)
APR = datetime.datetime(2027, 4, 15, 12, 0, tzinfo=datetime.UTC)


def certificate(common_name: str, expires: datetime.datetime) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(expires - datetime.timedelta(days=90))
        .not_valid_after(expires)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_the_value_is_the_certificates_not_after_in_unix_seconds() -> None:
    assert not_after(certificate("idc-order", JAN)) == JAN.timestamp() == 1800014400.0


def test_a_chain_reports_its_earliest_not_after() -> None:
    assert not_after(certificate("leaf", APR) + certificate("intermediate", JAN)) == (
        JAN.timestamp()
    )


def test_a_file_without_a_certificate_is_an_error() -> None:
    # The gauge logs it and reports the other files (services/common/metrics.py).
    with pytest.raises(ValueError):
        not_after(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")


def test_the_reading_follows_a_renewed_file(tmp_path: Path) -> None:
    served = tmp_path / "server.pem"
    served.write_bytes(certificate("idc-order", JAN))
    assert read(CertificateRole.GRPC_SERVER, served) == [
        Reading(JAN.timestamp(), {"certificate": "grpc-server"})
    ]
    renewed = tmp_path / "renewed.pem"
    renewed.write_bytes(certificate("idc-order", APR))
    renewed.replace(served)  # how a mounted secret's files change: a rename
    assert read(CertificateRole.GRPC_SERVER, served) == [
        Reading(APR.timestamp(), {"certificate": "grpc-server"})
    ]


def _files(tmp_path: Path, *names: str) -> dict[str, str]:
    paths = {}
    for name in names:
        path = tmp_path / f"{name}.pem"
        path.write_bytes(certificate(name, JAN))
        paths[name] = str(path)
    return paths


def test_every_configured_file_is_reported_under_its_role(tmp_path: Path) -> None:
    f = _files(tmp_path, "server", "server-key", "ca", "client", "client-key",
               "kafka-ca", "kafka-client", "kafka-key")
    server = ServerTls.from_env("test", {
        "IDC_TLS_CERT_FILE": f["server"], "IDC_TLS_KEY_FILE": f["server-key"],
        "IDC_TLS_CA_FILE": f["ca"],
    })
    client = ClientTls.from_env({
        "IDC_TLS_CA_FILE": f["ca"], "IDC_TLS_CLIENT_CERT_FILE": f["client"],
        "IDC_TLS_CLIENT_KEY_FILE": f["client-key"],
    })
    kafka = KafkaSecurity.from_env({
        "IDC_KAFKA_SECURITY_PROTOCOL": "SSL", "IDC_KAFKA_SSL_CA_FILE": f["kafka-ca"],
        "IDC_KAFKA_SSL_CERT_FILE": f["kafka-client"], "IDC_KAFKA_SSL_KEY_FILE": f["kafka-key"],
    })
    assert configured_certificates(client, server, kafka) == {
        CertificateRole.GRPC_SERVER: Path(f["server"]),
        CertificateRole.GRPC_CA: Path(f["ca"]),
        CertificateRole.GRPC_CLIENT: Path(f["client"]),
        CertificateRole.KAFKA_CLIENT: Path(f["kafka-client"]),
        CertificateRole.KAFKA_CA: Path(f["kafka-ca"]),
    }


def test_a_client_only_ca_is_reported_and_plaintext_reports_nothing(tmp_path: Path) -> None:
    f = _files(tmp_path, "ca")
    client = ClientTls.from_env({"IDC_TLS_CA_FILE": f["ca"]})
    # The console: it dials the services and serves no gRPC.
    assert configured_certificates(client) == {CertificateRole.GRPC_CA: Path(f["ca"])}
    assert configured_certificates(
        ClientTls.plaintext(), ServerTls(enabled=False), KafkaSecurity()
    ) == {}
