"""Typed configuration read from ``IDC_*`` environment variables.

Every setting has a default that makes ``make run`` work on one machine. A value that does
not parse stops the process at start-up with the variable's name in the message.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration variable is missing or malformed; the message names it."""


def _read(
    env: Mapping[str, str], name: str, default: T, parse: Callable[[str], T], expected: str
) -> T:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return parse(raw.strip())
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{name}={raw!r} is not valid: expected {expected} ({exc})") from exc


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("must be greater than zero")
    return value


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if value <= 0:
        raise ValueError("must be greater than zero")
    return value


def _bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("use true or false")


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in allowed:
            raise ValueError(f"one of {', '.join(allowed)}")
        return raw

    return parse


def _address(raw: str) -> str:
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError("host:port, port 0 to 65535 (0 picks a free one)")
    return raw


def _nonempty(raw: str) -> str:
    if not raw:
        raise ValueError("must not be empty")
    return raw


# Default bound of IDC_KAFKA_UNASSIGNED_ALARM_S in session timeouts: healthy three-member
# joins on Tansu were measured taking up to six session timeouts before every member had a
# formed generation (services/common/events/assignment.py).
UNASSIGNED_ALARM_SESSIONS = 10


@dataclass(frozen=True)
class KafkaSettings:
    """Broker connection and consumer-group timing.

    The defaults suit a production Kafka cluster; the devstack and tests lower the group
    timings because a group join on Tansu takes about half of ``session_timeout_ms``.

    ``unassigned_alarm_s`` (None: :data:`UNASSIGNED_ALARM_SESSIONS` session timeouts, see
    :attr:`unassigned_bound_s`) is how long a consumer may wait for a group generation that
    gives it partitions before it is reported and recreated (services/common/events/assignment.py).
    """

    bootstrap: str = ""
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    max_poll_interval_ms: int = 300_000
    fetch_max_wait_ms: int = 100
    request_timeout_ms: int = 30_000
    topic_partitions: int = 6
    replication_factor: int = 1
    unassigned_alarm_s: float | None = None

    @property
    def unassigned_bound_s(self) -> float:
        if self.unassigned_alarm_s is not None:
            return self.unassigned_alarm_s
        return UNASSIGNED_ALARM_SESSIONS * self.session_timeout_ms / 1000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> KafkaSettings:
        env = os.environ if env is None else env
        d = cls()
        settings = cls(
            bootstrap=_read(env, "IDC_KAFKA_BOOTSTRAP", d.bootstrap, _address, "host:port"),
            session_timeout_ms=_read(
                env,
                "IDC_KAFKA_SESSION_TIMEOUT_MS",
                d.session_timeout_ms,
                _positive_int,
                "milliseconds",
            ),
            heartbeat_interval_ms=_read(
                env,
                "IDC_KAFKA_HEARTBEAT_INTERVAL_MS",
                d.heartbeat_interval_ms,
                _positive_int,
                "milliseconds",
            ),
            max_poll_interval_ms=_read(
                env,
                "IDC_KAFKA_MAX_POLL_INTERVAL_MS",
                d.max_poll_interval_ms,
                _positive_int,
                "milliseconds",
            ),
            fetch_max_wait_ms=_read(
                env, "IDC_KAFKA_FETCH_MAX_WAIT_MS", d.fetch_max_wait_ms, _positive_int, "ms"
            ),
            request_timeout_ms=_read(
                env, "IDC_KAFKA_REQUEST_TIMEOUT_MS", d.request_timeout_ms, _positive_int, "ms"
            ),
            topic_partitions=_read(
                env, "IDC_KAFKA_TOPIC_PARTITIONS", d.topic_partitions, _positive_int, "a count"
            ),
            replication_factor=_read(
                env, "IDC_KAFKA_REPLICATION_FACTOR", d.replication_factor, _positive_int, "count"
            ),
            unassigned_alarm_s=_read(
                env, "IDC_KAFKA_UNASSIGNED_ALARM_S", d.unassigned_alarm_s, _positive_float,
                "seconds",
            ),
        )
        if settings.heartbeat_interval_ms * 3 > settings.session_timeout_ms:
            raise ConfigError(
                "IDC_KAFKA_HEARTBEAT_INTERVAL_MS must be at most a third of "
                f"IDC_KAFKA_SESSION_TIMEOUT_MS ({settings.heartbeat_interval_ms} * 3 > "
                f"{settings.session_timeout_ms})"
            )
        if (
            settings.unassigned_alarm_s is not None
            and settings.unassigned_alarm_s * 1000 < 2 * settings.session_timeout_ms
        ):
            # Below that, an ordinary join (Apache Kafka evicts a dead member after one
            # session timeout, then rebalances) would count as stuck.
            raise ConfigError(
                "IDC_KAFKA_UNASSIGNED_ALARM_S must be at least twice "
                f"IDC_KAFKA_SESSION_TIMEOUT_MS ({settings.unassigned_alarm_s} s < 2 * "
                f"{settings.session_timeout_ms} ms)"
            )
        return settings


@dataclass(frozen=True)
class ServiceSettings:
    """Settings every service process reads; ``name`` picks the per-service defaults."""

    name: str
    listen: str
    database_url: str
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    log_level: str = "INFO"
    log_format: str = "json"
    default_deadline_s: float = 30.0
    max_message_bytes: int = 4 * 1024 * 1024
    grace_period_s: float = 10.0
    token_pepper: str = "idc-dev-pepper"
    relay_poll_interval_s: float = 0.2
    var_dir: str = "var"

    @classmethod
    def from_env(
        cls, name: str, default_port: int, env: Mapping[str, str] | None = None
    ) -> ServiceSettings:
        env = os.environ if env is None else env
        prefix = f"IDC_{name.upper()}_"
        var_dir = _read(env, "IDC_VAR_DIR", "var", _nonempty, "a directory")
        return cls(
            name=name,
            listen=_read(
                env, prefix + "LISTEN", f"127.0.0.1:{default_port}", _address, "host:port"
            ),
            database_url=_read(
                env,
                prefix + "DATABASE_URL",
                f"sqlite:///{var_dir}/{name}.db",
                _nonempty,
                "an SQLAlchemy URL",
            ),
            kafka=KafkaSettings.from_env(env),
            log_level=_read(
                env,
                "IDC_LOG_LEVEL",
                "INFO",
                _choice("DEBUG", "INFO", "WARNING", "ERROR"),
                "a level",
            ),
            log_format=_read(env, "IDC_LOG_FORMAT", "json", _choice("json", "text"), "a format"),
            default_deadline_s=_read(
                env, "IDC_DEFAULT_DEADLINE_S", 30.0, _positive_float, "seconds"
            ),
            max_message_bytes=_read(
                env, "IDC_MAX_MESSAGE_BYTES", 4 * 1024 * 1024, _positive_int, "bytes"
            ),
            grace_period_s=_read(env, "IDC_GRACE_PERIOD_S", 10.0, _positive_float, "seconds"),
            token_pepper=_read(env, "IDC_TOKEN_PEPPER", "idc-dev-pepper", _nonempty, "a secret"),
            relay_poll_interval_s=_read(
                env, "IDC_RELAY_POLL_INTERVAL_S", 0.2, _positive_float, "seconds"
            ),
            var_dir=var_dir,
        )


def non_negative_int(env: Mapping[str, str], name: str, default: int) -> int:
    """Read one non-negative integer variable; for service-specific settings."""
    return _read(env, name, default, _non_negative_int, "a whole number, zero or more")


def boolean(env: Mapping[str, str], name: str, default: bool) -> bool:
    return _read(env, name, default, _bool, "true or false")


def positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    return _read(env, name, default, _positive_int, "a whole number greater than zero")


def positive_float(env: Mapping[str, str], name: str, default: float) -> float:
    return _read(env, name, default, _positive_float, "a number greater than zero")
