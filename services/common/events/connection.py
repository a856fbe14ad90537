"""The one place a Kafka client's connection settings are made: every producer, consumer
and admin client of the services and the devstack starts from :func:`connection_config`,
so none of them can reach the brokers without the cluster's TLS and SASL settings."""

from __future__ import annotations

from typing import Any

from services.common.config import KafkaSettings


def connection_config(settings: KafkaSettings, **overrides: Any) -> dict[str, Any]:
    """``bootstrap_servers`` and the security settings, then ``overrides``."""
    config: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap,
        **settings.security.client_config(),
    }
    config.update(overrides)
    return config
