"""The webhook settings of the order service, from IDC_ORDER_WEBHOOK_* variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.config import ConfigError
from services.order.settings import OrderSettings
from services.order.webhooks.wiring import retry_policy


def test_defaults_trust_the_system_store_and_retry_for_a_day() -> None:
    settings = OrderSettings.from_env({})
    assert settings.webhook_ca_file is None
    assert retry_policy(settings).give_up_after_s == 86_400


def test_the_variables_set_the_ca_and_the_schedule() -> None:
    settings = OrderSettings.from_env({
        "IDC_ORDER_WEBHOOK_CA_FILE": "/etc/idc/hooks-ca.pem",
        "IDC_ORDER_WEBHOOK_RETRY_FIRST_S": "1", "IDC_ORDER_WEBHOOK_RETRY_MAX_S": "8",
        "IDC_ORDER_WEBHOOK_GIVE_UP_S": "60", "IDC_ORDER_WEBHOOK_POLL_MS": "50"})
    assert settings.webhook_ca_file == Path("/etc/idc/hooks-ca.pem")
    policy = retry_policy(settings)
    assert (policy.first_s, policy.max_s, policy.give_up_after_s) == (1, 8, 60)
    assert settings.webhook_poll_ms == 50


def test_a_zero_timeout_stops_the_start() -> None:
    with pytest.raises(ConfigError, match="IDC_ORDER_WEBHOOK_TIMEOUT_S"):
        OrderSettings.from_env({"IDC_ORDER_WEBHOOK_TIMEOUT_S": "0"})
