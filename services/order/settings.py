"""Settings of the order service itself, from ``IDC_ORDER_*`` variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from services.common.config import ConfigError, non_negative_int


def _rest_address(value: str) -> str:
    """``off`` (or empty) serves no REST facade; else host:port with a numeric port."""
    value = value.strip()
    if value in {"", "off"}:
        return ""
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"IDC_ORDER_REST_ADDRESS must be host:port or off, not {value!r}")
    return value


@dataclass(frozen=True)
class OrderSettings:
    # Total channel capacity in Mbps (260 Gbps).
    channel_capacity_mbps: int = 260_000
    # How long an order may wait for both approvals before it expires.
    approval_window_s: int = 72 * 3600
    # How often the background checks run: expired approvals, overdue provisioning.
    expiry_interval_s: int = 5
    # How long an order may stay with provisioning (APPROVED or IN_PROGRESS) without an
    # outcome before operators are alarmed.
    provisioning_alarm_s: int = 900
    # How long a quote can be ordered.
    quote_ttl_s: int = 24 * 3600
    # Consumer group of the circuit-event consumer.
    consumer_group: str = "order-service"
    # Webhooks: the CA bundle endpoints' certificates are checked against (empty: the
    # system's trust store), the POST timeout, how often due deliveries are looked for,
    # and the retry schedule (first delay doubling up to the maximum, given up after).
    webhook_ca_file: Path | None = None
    webhook_timeout_s: int = 10
    webhook_poll_ms: int = 500
    webhook_retry_first_s: int = 5
    webhook_retry_max_s: int = 600
    webhook_give_up_s: int = 24 * 3600
    # host:port of the partner REST facade (services/order/rest); empty: not served (the
    # default: a second order process on the machine must not fight over its port).
    rest_address: str = ""
    # The catalogue file (sites, routers, ports); None: the shipped one
    # (services/order/data/catalogue.toml). The bench's channel-scale rows use one of their own.
    catalogue_file: Path | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OrderSettings:
        env = os.environ if env is None else env
        d = cls()
        settings = cls(
            channel_capacity_mbps=non_negative_int(
                env, "IDC_ORDER_CHANNEL_CAPACITY_MBPS", d.channel_capacity_mbps),
            approval_window_s=non_negative_int(
                env, "IDC_ORDER_APPROVAL_WINDOW_S", d.approval_window_s),
            expiry_interval_s=non_negative_int(
                env, "IDC_ORDER_EXPIRY_INTERVAL_S", d.expiry_interval_s),
            quote_ttl_s=non_negative_int(env, "IDC_ORDER_QUOTE_TTL_S", d.quote_ttl_s),
            provisioning_alarm_s=non_negative_int(
                env, "IDC_ORDER_PROVISIONING_ALARM_S", d.provisioning_alarm_s),
            consumer_group=env.get("IDC_ORDER_CONSUMER_GROUP", "").strip() or d.consumer_group,
            webhook_ca_file=Path(ca) if (ca := env.get("IDC_ORDER_WEBHOOK_CA_FILE", "").strip())
            else None,
            webhook_timeout_s=non_negative_int(
                env, "IDC_ORDER_WEBHOOK_TIMEOUT_S", d.webhook_timeout_s),
            webhook_poll_ms=non_negative_int(env, "IDC_ORDER_WEBHOOK_POLL_MS", d.webhook_poll_ms),
            webhook_retry_first_s=non_negative_int(
                env, "IDC_ORDER_WEBHOOK_RETRY_FIRST_S", d.webhook_retry_first_s),
            webhook_retry_max_s=non_negative_int(
                env, "IDC_ORDER_WEBHOOK_RETRY_MAX_S", d.webhook_retry_max_s),
            webhook_give_up_s=non_negative_int(
                env, "IDC_ORDER_WEBHOOK_GIVE_UP_S", d.webhook_give_up_s),
            rest_address=_rest_address(env.get("IDC_ORDER_REST_ADDRESS", "")),
            catalogue_file=Path(path)
            if (path := env.get("IDC_ORDER_CATALOGUE_FILE", "").strip()) else None,
        )
        for name, value in (
            ("IDC_ORDER_APPROVAL_WINDOW_S", settings.approval_window_s),
            ("IDC_ORDER_EXPIRY_INTERVAL_S", settings.expiry_interval_s),
            ("IDC_ORDER_QUOTE_TTL_S", settings.quote_ttl_s),
            ("IDC_ORDER_PROVISIONING_ALARM_S", settings.provisioning_alarm_s),
            ("IDC_ORDER_WEBHOOK_TIMEOUT_S", settings.webhook_timeout_s),
            ("IDC_ORDER_WEBHOOK_POLL_MS", settings.webhook_poll_ms),
            ("IDC_ORDER_WEBHOOK_RETRY_FIRST_S", settings.webhook_retry_first_s),
        ):
            if value == 0:
                raise ConfigError(f"{name} must be greater than zero")
        return settings
