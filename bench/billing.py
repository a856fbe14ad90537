"""Workload 4: month-end billing. Circuits active all month with a full month of 5-minute
samples are rated and invoiced by RunBillingCycle on the billing service (PostgreSQL); the
floor is numpy's nearest-rank 95th percentile over the same samples held in memory.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg
from numpy.typing import NDArray

from bench.harness import Results, Row, at_most, judged, memory_row
from bench.ingest import stamp
from bench.stack import KEYS, postgres_database, running_service
from idc.billing.v1 import billing_service_pb2, billing_service_pb2_grpc
from idc.events.v1 import circuit_pb2, common_pb2
from idc.type.v1 import money_pb2, year_month_pb2
from services.billing.domain.ends import Side
from services.billing.ingest import ContractIngest
from services.billing.peaks import record_samples
from services.common import db
from services.common.auth import Principal, Role
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


def load(url: str, bytes_in: NDArray[np.int64], bytes_out: NDArray[np.int64],
         far_end: tuple[NDArray[np.int64], NDArray[np.int64]] | None = None) -> None:
    """Contracts through the consumer's own handler; samples by binary COPY (the rows the
    usage consumer would have stored) with the usage peaks recorded for them by the
    consumer's own ``record_samples``, a circuit's month at a time. ``far_end``: the
    Chongqing end's samples too (stored, never billed: the tenants are sg-telco's)."""
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
                tenant_id=_tenant(index), bandwidth_mbps=100,
                price=price, effective_time=stamp(WINDOW_START - timedelta(days=30)),
                occurred_at=stamp(WINDOW_START - timedelta(days=30)),
            )
            contracts(session, event, Envelope(
                event_id=event.event_id, event_type=event.DESCRIPTOR.full_name,
                schema_version="1", topic="bench", partition=0, offset=index, key=None,
                timestamp_ms=None))
    starts = [WINDOW_START + timedelta(minutes=5 * i) for i in range(INTERVALS)]
    with psycopg.connect(url) as connection:
        # The interval index is built once after the load (the same index, much faster).
        connection.execute(f"ALTER TABLE billing_usage_samples DROP CONSTRAINT {_UNIQUE}")
        with connection.cursor() as cursor, cursor.copy(
            f"COPY billing_usage_samples ({', '.join(_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.write(_COPY_HEADER)
            for index in range(circuits):
                copy.write(_copy_rows(index, bytes_in[index], bytes_out[index]))
                if far_end is not None:
                    copy.write(_copy_rows(index, far_end[0][index], far_end[1][index],
                                          Side.CHONGQING))
            copy.write(b"\xff\xff")
        connection.execute(
            f"ALTER TABLE billing_usage_samples ADD CONSTRAINT {_UNIQUE} "
            "UNIQUE (circuit_id, side, interval_start)"
        )
        connection.commit()
        connection.execute("ANALYZE billing_usage_samples")
        connection.commit()
    for first in range(0, circuits, 50):
        with db.transaction(factory) as session:
            for index in range(first, min(first + 50, circuits)):
                circuit, tenant = _circuit(index), _tenant(index)
                ins, outs = bytes_in[index].tolist(), bytes_out[index].tolist()
                record_samples(session, [
                    {"circuit_id": circuit, "tenant_id": tenant, "side": int(Side.SINGAPORE),
                     "interval_start": starts[i],
                     "interval_seconds": 300, "bytes_in": ins[i], "bytes_out": outs[i],
                     "valid": True, "received_at": RECEIVED}
                    for i in range(INTERVALS)
                ])


_UNIQUE = "uq_billing_usage_side_interval"
_COLUMNS = ("circuit_id", "side", "interval_start", "interval_seconds", "bytes_in", "bytes_out",
            "valid", "invalid_reason", "tenant_id", "router_name", "interface_name",
            "event_id", "received_at")
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def _micros(moment: datetime) -> int:
    return (moment - _PG_EPOCH) // timedelta(microseconds=1)


# Each end's router, interface and the mark between circuit id and interval in event ids.
_END_TEXTS = {Side.SINGAPORE: (b"sg-edge-1", b"xe-0/0/1.100", b"-"),
              Side.CHONGQING: (b"cq-edge-1", b"GigabitEthernet0/0/1.100", b"~")}


def _copy_rows(index: int, ins: NDArray[np.int64], outs: NDArray[np.int64],
               side: Side = Side.SINGAPORE) -> bytes:
    """One end of one circuit's month as PostgreSQL binary COPY tuples, built by numpy:
    every field has a fixed width here (event ids are the circuit id and a 5-digit
    interval)."""
    circuit, tenant = _circuit(index).encode(), _tenant(index).encode()
    router, interface, mark = _END_TEXTS[side]
    texts = {"router": router, "interface": interface}
    fields: list[tuple[str, str]] = [("count", ">i2")]
    for name, kind in (
        ("circuit", f"S{len(circuit)}"), ("side", ">i4"), ("start", ">i8"), ("seconds", ">i4"),
        ("in", ">i8"), ("out", ">i8"), ("valid", "u1"), ("reason", "S0"),
        ("tenant", f"S{len(tenant)}"), ("router", f"S{len(texts['router'])}"),
        ("interface", f"S{len(texts['interface'])}"), ("event", f"S{len(circuit) + 6}"),
        ("received", ">i8"),
    ):
        fields += [(f"{name}_length", ">i4"), (name, kind)]
    rows = np.zeros(INTERVALS, dtype=np.dtype(fields))
    rows["count"] = len(_COLUMNS)
    for name, _ in fields[2::2]:
        rows[f"{name}_length"] = rows.dtype[name].itemsize
    rows["circuit"], rows["tenant"] = circuit, tenant
    rows["router"], rows["interface"] = texts["router"], texts["interface"]
    rows["start"] = _micros(WINDOW_START) + np.arange(INTERVALS, dtype=np.int64) * 300_000_000
    rows["seconds"], rows["valid"], rows["side"] = 300, 1, int(side)
    rows["in"], rows["out"] = ins, outs
    rows["event"] = np.char.add(circuit + mark, _EVENT_SUFFIXES)
    rows["received"] = _micros(RECEIVED)
    return rows.tobytes()


_EVENT_SUFFIXES = np.array([f"{i:05d}".encode() for i in range(INTERVALS)])


def _tenant(index: int) -> str:
    return f"bench-{index // CIRCUITS_PER_TENANT:04d}"


def _circuit(index: int) -> str:
    return f"CKT-BILL-{index:05d}"


def run(results: Results, workdir: Path, bootstrap: str, circuits: int,
        both_ends: bool = False) -> None:
    """``both_ends``: the Chongqing end's month is stored too (the channel-scale row): the
    same traffic seen from the other side (its in is Singapore's out), so the ends
    reconcile; the floor stays numpy over the billed end's arrays."""
    bytes_in, bytes_out = usage_arrays(circuits)
    far_end = (bytes_out, bytes_in) if both_ends else None
    floor = numpy_p95_seconds(bytes_in, bytes_out)
    label = f"billing {circuits} circuits" + (", both ends" if both_ends else "")
    with postgres_database("billing") as url:
        env = {"IDC_KAFKA_BOOTSTRAP": bootstrap, "IDC_BILLING_DATABASE_URL": url}
        with running_service("billing", workdir, env, label="billing-cycle") as service:
            started = time.perf_counter()
            load(url, bytes_in, bytes_out, far_end)
            loaded = time.perf_counter() - started
            del bytes_in, bytes_out, far_end
            token = KEYS.mint(Principal("bench@billing", Role.BILLING_ADMIN))
            with service.tls.channel(service.address) as channel:
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
            if both_ends:
                results.add(Row(label, "samples loaded (binary COPY and peaks)", "s", loaded))
            results.add(judged(Row(label, "month-end run", "s", elapsed, floor),
                               *((at_most(2.0), "<= 2x numpy p95") if both_ends
                                 else (at_most(20.0), "<= 20x numpy p95"))))
            results.add(memory_row(label, service))
