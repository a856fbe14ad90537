"""The devstack and databases a bench run uses, and starting services as processes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

from devstack.process import free_port
from devstack.services import ServiceProcess, start_service, wait_serving
from services.common.auth import Role
from services.common.tokens import HarnessKeys
from tools.prereqs import postgres_answers, postgres_url

# The bench signs its tokens with this development key; its services verify them.
KEYS = HarnessKeys.generate()
# Short group timings (a group join on Tansu takes about half the session timeout) and a
# short fetch wait, as the integration tests use: latency is what is measured here.
FAST_KAFKA = {
    "IDC_KAFKA_SESSION_TIMEOUT_MS": "2000",
    "IDC_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
    "IDC_KAFKA_FETCH_MAX_WAIT_MS": "10",
    "IDC_KAFKA_TOPIC_PARTITIONS": "3",
    "IDC_RELAY_POLL_INTERVAL_S": "0.05",
    "IDC_GRACE_PERIOD_S": "3",
    "IDC_LOG_FORMAT": "text",
    "IDC_LOG_LEVEL": "WARNING",
}

# The bench measures what a service can serve, not what one caller may ask for.
NO_RATE_LIMITS = {
    f"IDC_RATE_{role.value.upper()}_{what}": "1000000"
    for role in Role for what in ("PER_S", "BURST")
}


@contextmanager
def postgres_database(label: str) -> Iterator[str]:
    """A fresh PostgreSQL database on the test cluster, dropped afterwards."""
    admin_url = postgres_url()
    if not postgres_answers(admin_url):
        raise RuntimeError(f"PostgreSQL does not answer at {admin_url} (IDC_TEST_DATABASE_URL)")
    name = f"idc_bench_{label}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    base, _, _ = admin_url.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextmanager
def running_service(
    name: str, workdir: Path, env: dict[str, str], label: str = ""
) -> Iterator[ServiceProcess]:
    """``python -m services.<name>`` with the bench's settings, serving, stopped afterwards."""
    with running_services(name, workdir, env, [label or name]) as (service,):
        yield service


@contextmanager
def running_services(
    name: str, workdir: Path, env: dict[str, str], labels: list[str]
) -> Iterator[list[ServiceProcess]]:
    """One process of ``services.<name>`` per label, all started before any is waited for
    (members of one consumer group then join together), serving, stopped afterwards."""
    services: list[ServiceProcess] = []
    try:
        for label in labels:
            # Plaintext, explicitly: the floors the services are measured against are
            # plaintext.
            services.append(start_service(
                name, f"127.0.0.1:{free_port()}",
                {**FAST_KAFKA, **NO_RATE_LIMITS, **KEYS.env(), "IDC_TLS": "off",
                 "IDC_VAR_DIR": str(workdir), **env},
                workdir / f"{label}.log",
            ))
        for service in services:
            wait_serving(service)
        yield services
    finally:
        for service in services:
            service.terminate()
