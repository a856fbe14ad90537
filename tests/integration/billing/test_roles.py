"""IDC_BILLING_ROLE: an ``api`` process and an ``ingest`` process started together on one
PostgreSQL database (their migrations one after the other) make one billing service: the
API is served by the first only, usage samples are stored by the second. A role that is not
one of the three stops the process at start, naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from kafka import KafkaProducer
from sqlalchemy import select

from devstack.process import free_port
from devstack.services import REPO_ROOT, ServiceProcess, health_status, start_service, wait_serving
from idc.billing.v1 import billing_service_pb2
from services.billing.tables import UsageSampleRow
from services.common import db
from services.common.events import encode_event
from services.common.events.topics import USAGE_SAMPLES
from services.common.tokens import HarnessKeys
from tests.integration.billing.support import sample

pytestmark = pytest.mark.integration

BILLING_API = billing_service_pb2.DESCRIPTOR.services_by_name["BillingService"].full_name
KEYS = HarnessKeys.generate()
SERVING = health_pb2.HealthCheckResponse.SERVING


def _start(role: str, tmp_path: Path, bootstrap: str, url: str) -> ServiceProcess:
    env = {
        "IDC_KAFKA_BOOTSTRAP": bootstrap, "IDC_BILLING_DATABASE_URL": url,
        "IDC_VAR_DIR": str(tmp_path), "IDC_GRACE_PERIOD_S": "3",
        "IDC_KAFKA_FETCH_MAX_WAIT_MS": "50", "IDC_BILLING_ROLE": role, **KEYS.env(),
    }
    return start_service("billing", f"127.0.0.1:{free_port()}", env, tmp_path / f"{role}.log")


def test_api_and_ingest_processes_share_one_database(
    tmp_path: Path, kafka_bootstrap: str, postgres_database_url: str
) -> None:
    # Both at once: the second migration waits for the first and finds the schema at head.
    api = _start("api", tmp_path, kafka_bootstrap, postgres_database_url)
    ingest = _start("ingest", tmp_path, kafka_bootstrap, postgres_database_url)
    try:
        wait_serving(api)
        wait_serving(ingest)
        assert health_status(api.address, BILLING_API) == SERVING
        with pytest.raises(grpc.RpcError) as unknown:
            health_status(ingest.address, BILLING_API)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        assert health_status(ingest.address) == SERVING

        circuit = f"CKT-ROLE-{uuid.uuid4().hex[:8]}"
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        try:
            for minute in (0, 5, 10):
                start = datetime(2026, 11, 1, 0, minute, tzinfo=UTC)
                encoded = encode_event(sample(circuit, "acme-sg", start, 1000, 2000), circuit)
                producer.send(USAGE_SAMPLES, key=encoded.key, value=encoded.payload,
                              headers=encoded.headers)
            producer.flush()
        finally:
            producer.close()

        factory = db.make_session_factory(db.make_engine(postgres_database_url))
        deadline = time.monotonic() + 60
        stored: list[datetime] = []
        while len(stored) < 3 and time.monotonic() < deadline:
            with factory() as session:
                stored = list(session.scalars(
                    select(UsageSampleRow.interval_start)
                    .where(UsageSampleRow.circuit_id == circuit)
                ))
            time.sleep(0.1)
        assert len(stored) == 3, ingest.log_path.read_text()[-3000:]
    finally:
        assert ingest.terminate() == 0, ingest.log_path.read_text()[-3000:]
        assert api.terminate() == 0, api.log_path.read_text()[-3000:]


def test_an_unknown_role_stops_the_process_naming_the_variable(tmp_path: Path) -> None:
    env = {**os.environ, "IDC_KAFKA_BOOTSTRAP": "127.0.0.1:9", "IDC_VAR_DIR": str(tmp_path),
           "IDC_BILLING_ROLE": "everything"}
    done = subprocess.run(
        [sys.executable, "-m", "services.billing"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "IDC_BILLING_ROLE='everything'" in done.stderr
    assert not list(tmp_path.rglob("*.db")), "nothing is migrated"
