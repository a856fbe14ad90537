"""Workload 4: month-end billing. Circuits active all month with a full month of 5-minute
samples are rated and invoiced by RunBillingCycle on the billing service (PostgreSQL); the
floor is numpy's nearest-rank 95th percentile over the same samples held in memory.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import numpy as np
import psycopg
from numpy.typing import NDArray

from bench.harness import Results, Row, at_most, judged, memory_row
from bench.ingest import stamp
from bench.stack import PEPPER, postgres_database, running_service
from idc.billing.v1 import billing_service_pb2, billing_service_pb2_grpc
from idc.events.v1 import circuit_pb2, common_pb2
from idc.type.v1 import money_pb2, year_month_pb2
from services.billing.ingest import ContractIngest
from services.common import db
from services.common.auth import Principal, Role, SqlTokenStore
from services.common.events.envelope import Envelope
from services.common.grpc_server import call_metadata

# January 2026 in Singapore time (the default entity's), 31 days of 5-minute intervals.
MONTH = (2026, 1)
WINDOW_START = datetime(2025, 12, 31, 16, tzinfo=UTC)
INTERVALS = 31 * 288
CIRCUITS_PER_TENANT = 20
RECEIVED = datetime(2026, 2, 1, 1, tzinfo=UTC)


def usage_arrays(circuits: int, seed: int = 9) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Bytes in and out per circuit (rows) and interval (columns): around 80 Mbps with
    bursts, so the 95th percentile of some circuits is above their 100 Mbps CIR."""
    rng = np.random.default_rng(seed)
    shape = (circuits, INTERVALS)
    base = rng.gamma(4.0, 20e6 / 8 * 300 / 4, size=shape)
    bursts = rng.random(shape) < 0.08
    bytes_in = (base * np.where(bursts, 2.5, 1.0)).astype(np.int64)
    bytes_out = (rng.gamma(4.0, 10e6 / 8 * 300 / 4, size=shape)).astype(np.int64)
    return bytes_in, bytes_out


def numpy_p95_seconds(bytes_in: NDArray[np.int64], bytes_out: NDArray[np.int64]) -> float:
    """Nearest-rank p95 of every circuit, both directions, billable Mbps: timed."""
    started = time.perf_counter()
    count = bytes_in.shape[1]
    index = count - 5 * count // 100 - 1
    rates = [np.partition(b * 8 / 300, index, axis=1)[:, index] for b in (bytes_in, bytes_out)]
    billable = np.ceil(np.maximum(*rates) / 1e6)
    assert billable.shape == (bytes_in.shape[0],)
    return time.perf_counter() - started


def load(url: str, bytes_in: NDArray[np.int64], bytes_out: NDArray[np.int64]) -> None:
    """Contracts through the consumer's own handler; samples by COPY (the rows the usage
    consumer would have stored)."""
    def money(amount: str) -> money_pb2.Money:
        return money_pb2.Money(currency_code="SGD", amount=amount)

    price = common_pb2.PriceTerms(currency_code="SGD", mrc=money("2565.00"),
                                  nrc=money("2000.00"), burst_price_per_mbps=money("18.90"),
                                  term_months=12, price_book_version="bench")
    factory = db.make_session_factory(db.make_engine(url))
    contracts = ContractIngest(lambda: RECEIVED - timedelta(days=40))
    circuits = bytes_in.shape[0]
    with db.transaction(factory) as session:
        for index in range(circuits):
            event = circuit_pb2.CircuitActivated(
                event_id=str(uuid.uuid4()), circuit_id=_circuit(index),
                tenant_id=f"bench-{index // CIRCUITS_PER_TENANT:04d}", bandwidth_mbps=100,
                price=price, effective_time=stamp(WINDOW_START - timedelta(days=30)),
                occurred_at=stamp(WINDOW_START - timedelta(days=30)),
            )
            contracts(session, event, Envelope(
                event_id=event.event_id, event_type=event.DESCRIPTOR.full_name,
                schema_version="1", topic="bench", partition=0, offset=index, key=None,
                timestamp_ms=None))
    starts = [(WINDOW_START + timedelta(minutes=5 * i)).isoformat() for i in range(INTERVALS)]
    columns = ("circuit_id, interval_start, interval_seconds, bytes_in, bytes_out, valid, "
               "invalid_reason, tenant_id, router_name, interface_name, event_id, received_at")
    with psycopg.connect(url) as connection, connection.cursor() as cursor:
        with cursor.copy(f"COPY billing_usage_samples ({columns}) FROM STDIN") as copy:
            for index in range(circuits):
                circuit, tenant = _circuit(index), f"bench-{index // CIRCUITS_PER_TENANT:04d}"
                prefix = f"{circuit}\t"
                suffix = f"\tt\t\t{tenant}\tsg-edge-1\txe-0/0/1.100\t"
                ins, outs = bytes_in[index].tolist(), bytes_out[index].tolist()
                copy.write("".join(
                    f"{prefix}{starts[i]}\t300\t{ins[i]}\t{outs[i]}{suffix}"
                    f"{circuit}-{i}\t{RECEIVED.isoformat()}\n"
                    for i in range(INTERVALS)
                ))
        connection.commit()
        cursor.execute("ANALYZE billing_usage_samples")
        connection.commit()


def _circuit(index: int) -> str:
    return f"CKT-BILL-{index:05d}"


def run(results: Results, workdir: Path, bootstrap: str, circuits: int) -> None:
    bytes_in, bytes_out = usage_arrays(circuits)
    floor = numpy_p95_seconds(bytes_in, bytes_out)
    with postgres_database("billing") as url:
        env = {"IDC_KAFKA_BOOTSTRAP": bootstrap, "IDC_BILLING_DATABASE_URL": url}
        with running_service("billing", workdir, env, label="billing-cycle") as service:
            load(url, bytes_in, bytes_out)
            del bytes_in, bytes_out
            tokens = SqlTokenStore(db.make_session_factory(db.make_engine(url)), PEPPER)
            token = tokens.issue(Principal("bench@billing", Role.BILLING_ADMIN))
            with grpc.insecure_channel(service.address) as channel:
                stub = billing_service_pb2_grpc.BillingServiceStub(channel)
                request = billing_service_pb2.RunBillingCycleRequest(
                    month=year_month_pb2.YearMonth(year=MONTH[0], month=MONTH[1]))
                started = time.perf_counter()
                replies = list(stub.RunBillingCycle(
                    request, metadata=tuple(call_metadata(token)), timeout=3600))
                elapsed = time.perf_counter() - started
            summary = replies[-1].summary
            if summary.circuits_billed != circuits:
                raise RuntimeError(f"billing run billed {summary.circuits_billed} of {circuits}")
            results.add(judged(
                Row(f"billing {circuits} circuits", "month-end run", "s", elapsed, floor),
                at_most(20.0), "<= 20x numpy p95",
            ))
            results.add(memory_row(f"billing {circuits} circuits", service))
