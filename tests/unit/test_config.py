from __future__ import annotations

import pytest

from services.common.config import ConfigError, KafkaSettings, ServiceSettings


def test_defaults_make_a_single_machine_run_work() -> None:
    settings = ServiceSettings.from_env("order", 50051, {})
    assert settings.listen == "127.0.0.1:50051"
    assert settings.database_url == "sqlite:///var/order.db"
    assert settings.kafka.session_timeout_ms == 10_000


def test_service_variables_are_read_with_the_service_prefix() -> None:
    settings = ServiceSettings.from_env(
        "billing",
        50053,
        {
            "IDC_BILLING_LISTEN": "0.0.0.0:9000",
            "IDC_BILLING_DATABASE_URL": "postgresql://db/billing",
            "IDC_KAFKA_BOOTSTRAP": "kafka:9092",
            "IDC_KAFKA_SESSION_TIMEOUT_MS": "6000",
            "IDC_KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
        },
    )
    assert settings.listen == "0.0.0.0:9000"
    assert settings.database_url == "postgresql://db/billing"
    assert settings.kafka.bootstrap == "kafka:9092"
    assert settings.kafka.session_timeout_ms == 6000


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("IDC_ORDER_LISTEN", "no-port"),
        ("IDC_KAFKA_BOOTSTRAP", "kafka:notaport"),
        ("IDC_KAFKA_SESSION_TIMEOUT_MS", "-5"),
        ("IDC_DEFAULT_DEADLINE_S", "soon"),
        ("IDC_LOG_LEVEL", "LOUD"),
    ],
)
def test_a_bad_value_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        ServiceSettings.from_env("order", 50051, {variable: value})


def test_heartbeat_must_fit_three_times_in_the_session_timeout() -> None:
    with pytest.raises(ConfigError, match="IDC_KAFKA_HEARTBEAT_INTERVAL_MS"):
        KafkaSettings.from_env(
            {"IDC_KAFKA_SESSION_TIMEOUT_MS": "2000", "IDC_KAFKA_HEARTBEAT_INTERVAL_MS": "1000"}
        )
