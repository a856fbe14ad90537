"""Kafka security settings: parsed once, handed to every client by connection_config."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.config import ConfigError, KafkaSettings
from services.common.events.connection import connection_config
from services.common.events.consumer import consumer_config
from services.common.events.relay import producer_config


def test_plaintext_by_default() -> None:
    settings = KafkaSettings.from_env({"IDC_KAFKA_BOOTSTRAP": "kafka:9092"})
    assert connection_config(settings) == {
        "bootstrap_servers": "kafka:9092", "security_protocol": "PLAINTEXT",
    }


def test_ssl_with_a_client_certificate_reaches_producers_and_consumers(tmp_path: Path) -> None:
    for name in ("ca", "cert", "key"):
        (tmp_path / f"{name}.pem").write_text("pem")
    settings = KafkaSettings.from_env({
        "IDC_KAFKA_BOOTSTRAP": "kafka:9093", "IDC_KAFKA_SECURITY_PROTOCOL": "SSL",
        "IDC_KAFKA_SSL_CA_FILE": str(tmp_path / "ca.pem"),
        "IDC_KAFKA_SSL_CERT_FILE": str(tmp_path / "cert.pem"),
        "IDC_KAFKA_SSL_KEY_FILE": str(tmp_path / "key.pem"),
    })
    for config in (producer_config(settings), consumer_config(settings, "g")):
        assert config["security_protocol"] == "SSL"
        assert config["ssl_cafile"] == str(tmp_path / "ca.pem")
        assert config["ssl_certfile"] == str(tmp_path / "cert.pem")
        assert config["ssl_keyfile"] == str(tmp_path / "key.pem")


def test_sasl_ssl_needs_its_user() -> None:
    env = {"IDC_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "IDC_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512"}
    with pytest.raises(ConfigError, match="SASL_SSL needs"):
        KafkaSettings.from_env(env)
    settings = KafkaSettings.from_env(
        {**env, "IDC_KAFKA_SASL_USERNAME": "idc-order", "IDC_KAFKA_SASL_PASSWORD": "s3cret"}
    )
    assert settings.security.client_config() == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "idc-order", "sasl_plain_password": "s3cret",
    }


def test_contradictions_and_bad_values_are_refused(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("pem")
    cases = [
        ({"IDC_KAFKA_SECURITY_PROTOCOL": "TLS"}, "IDC_KAFKA_SECURITY_PROTOCOL='TLS'"),
        ({"IDC_KAFKA_SSL_CA_FILE": str(tmp_path / "ca.pem")}, "PROTOCOL is PLAINTEXT"),
        ({"IDC_KAFKA_SECURITY_PROTOCOL": "SSL",
          "IDC_KAFKA_SSL_CA_FILE": str(tmp_path / "missing.pem")}, "no such readable file"),
        ({"IDC_KAFKA_SECURITY_PROTOCOL": "SSL",
          "IDC_KAFKA_SSL_CERT_FILE": str(tmp_path / "ca.pem")}, "go together"),
        ({"IDC_KAFKA_SASL_USERNAME": "u"}, "is not SASL_SSL"),
    ]
    for env, message in cases:
        with pytest.raises(ConfigError, match=message):
            KafkaSettings.from_env(env)
