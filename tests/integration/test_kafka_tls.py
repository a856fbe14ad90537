"""Kafka clients over TLS with a client certificate, through a TLS-terminating proxy.

The devstack's broker (Tansu) speaks only PLAINTEXT, so the test puts a TLS proxy made here
(Python ``ssl``, certificates from ``cryptography``, client certificates required) in front
of a Tansu of its own that *advertises the proxy's address*: Kafka clients reconnect to
the advertised address from the metadata, so every connection, not just the bootstrap one,
goes through TLS. The services' own configuration functions (producer_config,
consumer_config, ensure_topics) make a produce and consume round trip through it.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError

from devstack.certs import LocalCa
from devstack.kafka import start_tansu
from devstack.process import free_port
from services.common.config import KafkaSettings
from services.common.events.connection import connection_config
from services.common.events.consumer import consumer_config
from services.common.events.relay import producer_config
from services.common.events.topics import ensure_topics


@dataclass
class TlsProxy:
    """Accepts TLS on ``port`` (client certificate required) and forwards the plaintext to
    ``upstream``; counts the handshakes that succeeded and those refused."""

    context: ssl.SSLContext
    upstream: int
    port: int = field(default_factory=free_port)
    handshakes: int = 0
    refused: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.2)
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(10)
        try:
            client = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            self.refused += 1
            raw.close()
            return
        self.handshakes += 1
        client.settimeout(None)
        upstream = socket.create_connection(("127.0.0.1", self.upstream))
        threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()
        _pump(client, upstream)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()


@dataclass
class Pki:
    ca: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path
    rogue_key: Path


@pytest.fixture(scope="module")
def pki_and_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pki, TlsProxy]]:
    where = tmp_path_factory.mktemp("kafka-tls")
    ca, rogue = LocalCa.create("kafka-ca"), LocalCa.create("rogue-ca")
    (where / "ca.pem").write_bytes(ca.cert_pem)
    server_cert, server_key = ca.issue("kafka", sans=("127.0.0.1",)).write(where, "broker")
    client_cert, client_key = ca.issue("idc-order", client=True).write(where, "client")
    rogue_cert, rogue_key = rogue.issue("idc-order", client=True).write(where, "rogue")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(where / "ca.pem"))
    context.load_cert_chain(server_cert, server_key)
    context.verify_mode = ssl.CERT_REQUIRED
    broker_port = free_port()
    proxy = TlsProxy(context, upstream=broker_port)
    proxy.start()
    pki = Pki(where / "ca.pem", client_cert, client_key, rogue_cert, rogue_key)
    security = settings_for(f"127.0.0.1:{proxy.port}", pki).security
    try:
        with start_tansu(where, port=broker_port, advertised=f"127.0.0.1:{proxy.port}",
                         security=security):
            yield pki, proxy
    finally:
        proxy.stop()


def settings_for(bootstrap: str, pki: Pki, *, rogue: bool = False) -> KafkaSettings:
    cert, key = (pki.rogue_cert, pki.rogue_key) if rogue else (pki.client_cert, pki.client_key)
    return KafkaSettings.from_env({
        "IDC_KAFKA_BOOTSTRAP": bootstrap,
        "IDC_KAFKA_SECURITY_PROTOCOL": "SSL",
        "IDC_KAFKA_SSL_CA_FILE": str(pki.ca),
        "IDC_KAFKA_SSL_CERT_FILE": str(cert),
        "IDC_KAFKA_SSL_KEY_FILE": str(key),
        "IDC_KAFKA_SESSION_TIMEOUT_MS": "2000",
        "IDC_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
        "IDC_KAFKA_FETCH_MAX_WAIT_MS": "10",
    })


def test_produce_and_consume_over_tls_with_a_client_certificate(
    pki_and_proxy: tuple[Pki, TlsProxy],
) -> None:
    pki, proxy = pki_and_proxy
    settings = settings_for(f"127.0.0.1:{proxy.port}", pki)
    topic = f"tls-{uuid.uuid4().hex[:8]}"
    assert ensure_topics(settings.bootstrap, [topic], 1, 1, security=settings.security) == [
        topic
    ]
    before = proxy.handshakes
    producer = KafkaProducer(**producer_config(settings))
    try:
        producer.send(topic, key=b"c-1", value=b"over tls").get(timeout=30)
    finally:
        producer.close()
    consumer = KafkaConsumer(topic, **consumer_config(settings, f"g-{topic}"))
    try:
        values: list[bytes] = []
        deadline = time.monotonic() + 60
        while not values and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                values += [record.value for record in records]
    finally:
        consumer.close()
    assert values == [b"over tls"]
    # Bootstrap and the reconnections to the advertised broker all went through TLS.
    assert proxy.handshakes - before >= 2


def test_the_broker_refuses_plaintext_and_a_certificate_of_another_ca(
    pki_and_proxy: tuple[Pki, TlsProxy],
) -> None:
    pki, proxy = pki_and_proxy
    bootstrap = f"127.0.0.1:{proxy.port}"
    plaintext = KafkaSettings(bootstrap=bootstrap)
    rogue = settings_for(bootstrap, pki, rogue=True)
    for settings in (plaintext, rogue):
        refused_before = proxy.refused
        with pytest.raises(KafkaError):
            KafkaAdminClient(**connection_config(
                settings, bootstrap_timeout_ms=3000, request_timeout_ms=3000
            ))
        assert proxy.refused > refused_before
