"""Gauge ``idc.tls.certificate.not_after``: when each certificate the process uses expires.

The files are read at every scrape, so the gauge shows what a handshake uses now: the
server's key pair and client CA are read again when their files change
(services/common/tls.py), kafka-python reads its files at each new connection, a gRPC
client when it makes its channel. The console serves no gRPC: it reports only what it
dials with. A renewal that never happened (cert-manager or Strimzi stuck) shows as a
not-after coming closer; alert IdcCertificateExpiringSoon
(k8s/components/observability/alerts.yaml) watches it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from functools import partial
from pathlib import Path

from cryptography import x509

from services.common import metric_catalogue as catalogue
from services.common.config import KafkaSecurity
from services.common.metrics import Reading, Registration, observe, one
from services.common.tls import ClientTls, ServerTls


class CertificateRole(enum.StrEnum):
    """The ``certificate`` label: which configured file the value is of."""

    GRPC_SERVER = "grpc-server"  # IDC_TLS_CERT_FILE, served on the main and partner ports
    GRPC_CA = "grpc-ca"  # IDC_TLS_CA_FILE: partners' certificates and dialled servers
    GRPC_CLIENT = "grpc-client"  # IDC_TLS_CLIENT_CERT_FILE, presented when dialling
    KAFKA_CLIENT = "kafka-client"  # IDC_KAFKA_SSL_CERT_FILE
    KAFKA_CA = "kafka-ca"  # IDC_KAFKA_SSL_CA_FILE


def not_after(pem: bytes) -> float:
    """The earliest not-after (Unix seconds) of the PEM certificates in ``pem``: a chain is
    no longer usable once any of its certificates has expired."""
    certificates = x509.load_pem_x509_certificates(pem)
    return min(c.not_valid_after_utc.timestamp() for c in certificates)


def configured_certificates(
    client: ClientTls, server: ServerTls | None = None, kafka: KafkaSecurity | None = None
) -> dict[CertificateRole, Path]:
    """The certificate files these settings name (settings with TLS off name none); a
    process without a gRPC server (the console) or without Kafka passes None."""
    server, kafka = server or ServerTls(), kafka or KafkaSecurity()
    files = {
        CertificateRole.GRPC_SERVER: server.cert_file,
        CertificateRole.GRPC_CA: server.ca_file or client.ca_file,
        CertificateRole.GRPC_CLIENT: client.cert_file,
        CertificateRole.KAFKA_CLIENT: kafka.cert_file,
        CertificateRole.KAFKA_CA: kafka.ca_file,
    }
    return {role: Path(path) for role, path in files.items() if path is not None}


def read(role: CertificateRole, path: Path) -> list[Reading]:
    return one(not_after(path.read_bytes()), certificate=role.value)


def register(files: Mapping[CertificateRole, Path]) -> list[Registration]:
    """Report each file's not-after at every scrape; one reading per file, so a file
    unreadable mid-rotation (logged by the gauge) does not hide the others."""
    return [
        observe(catalogue.TLS_CERTIFICATE_NOT_AFTER, partial(read, role, path))
        for role, path in files.items()
    ]
