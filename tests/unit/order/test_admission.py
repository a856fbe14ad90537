"""Group commit of admissions: every queued item gets its own outcome."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from idc.order.v1 import circuit_pb2, order_pb2, order_service_pb2
from services.common import deadlines
from services.common.auth import Principal, Role
from services.order import store
from services.order.admission import GroupCommit, Pending
from services.order.contacts import ContactCipher, ContactKeySet
from services.order.disclosure import ContactVault, billing_telcos
from services.order.domain.catalogue import load_catalogue
from services.order.domain.pricing import load_price_book
from services.order.orders import OrderApp
from services.order.placing import Placement
from services.order.settings import OrderSettings
from services.order.tables import OrderRow
from tests.unit.order.fakes import SqliteUnitOfWork


def test_every_caller_gets_its_own_result_or_error_from_shared_batches() -> None:
    batches: list[int] = []
    release = threading.Event()

    def run_batch(batch: Sequence[Pending[int, str]]) -> None:
        release.wait()  # the first batch holds the others in the queue
        batches.append(len(batch))
        for pending in batch:
            if pending.item % 5 == 0:
                pending.error = ValueError(f"refused {pending.item}")
            else:
                pending.result = f"done {pending.item}"

    group: GroupCommit[int, str] = GroupCommit(run_batch, max_batch=8)

    def submit(item: int) -> str:
        try:
            return group.submit(item)
        except ValueError as error:
            return str(error)

    with ThreadPoolExecutor(20) as pool:
        futures = [pool.submit(submit, item) for item in range(20)]
        release.set()
        results = [future.result() for future in futures]

    assert results == [f"refused {i}" if i % 5 == 0 else f"done {i}" for i in range(20)]
    assert sum(batches) == 20 and max(batches) <= 8


def test_a_failing_batch_settles_its_unsettled_items_with_the_error() -> None:
    def run_batch(batch: Sequence[Pending[int, str]]) -> None:
        if batch[0].item == 1:
            batch[0].result = "kept"
        raise RuntimeError("database gone")

    group: GroupCommit[int, str] = GroupCommit(run_batch)
    assert group.submit(1) == "kept", "a result set before the failure stands"
    with pytest.raises(RuntimeError, match="database gone"):
        group.submit(2)
    assert group.submit(1) == "kept", "the group is not left busy after a failure"


def test_orders_of_a_failed_batch_are_decided_again_one_by_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch whose transaction fails is rolled back and each order is admitted alone:
    an order refused in the batch only because an order that then failed took the
    bandwidth is admitted on its own."""
    app = OrderApp(SqliteUnitOfWork(tmp_path), load_catalogue(),
                   load_price_book(), OrderSettings(channel_capacity_mbps=150),
                   contacts=ContactVault(ContactCipher(ContactKeySet.generate()),
                                         billing_telcos(load_catalogue())))
    placements: list[Placement] = []
    monkeypatch.setattr(app.placing, "admissions", SimpleNamespace(submit=placements.append))
    alice = Principal("alice@acme", Role.CUSTOMER, tenant="acme")
    for reference in ("doomed", "second"):
        app.placing.create_order(alice, order_service_pb2.CreateOrderRequest(
            request_id=reference, spec=circuit_pb2.CircuitSpec(
                a_end_port_id="sg-edge-1:xe-0/0/1", z_end_port_id="cq-edge-1:XGE0/0/1",
                bandwidth_mbps=100, term_months=12, currency_code="SGD",
                customer_reference=reference)))

    insert_rows = store.insert_rows

    def failing_for_doomed(session: Any, rows: Any) -> None:
        if any(row["request_id"] == "doomed" for row in rows[OrderRow]):
            raise RuntimeError("insert failed")
        insert_rows(session, rows)

    monkeypatch.setattr(store, "insert_rows", failing_for_doomed)
    doomed, second = (Pending[Placement, order_pb2.Order](p) for p in placements)
    app.placing.admit([doomed, second])

    assert isinstance(doomed.error, RuntimeError)
    assert second.error is None and second.result is not None
    assert second.result.request_id == "second"
    with app.uow.read() as session:
        assert [row.request_id for row in session.query(OrderRow)] == ["second"]


def test_a_batch_runs_until_the_latest_deadline_of_its_callers() -> None:
    """One caller's deadline passing does not refuse the commit of the others' orders."""
    seen: list[tuple[int, float | None]] = []
    started, release = threading.Event(), threading.Event()

    def run_batch(batch: Sequence[Pending[int, str]]) -> None:
        if batch[0].item == 0:  # the first batch holds the others in the queue
            started.set()
            release.wait()
        seen.append((len(batch), deadlines.current()))
        for pending in batch:
            pending.result = "done"

    group: GroupCommit[int, str] = GroupCommit(run_batch)

    def submit(item: int, timeout_s: float | None) -> tuple[str, float | None]:
        if timeout_s is None:
            return group.submit(item), None
        with deadlines.bound(timeout_s):
            return group.submit(item), deadlines.current()

    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(submit, 0, 100.0)
        assert started.wait(10)
        short, long = pool.submit(submit, 1, 1.0), pool.submit(submit, 2, 200.0)
        while len(group._queue) < 2:
            threading.Event().wait(0.005)
        release.set()
        long_deadline = long.result()[1]
        assert short.result()[0] == first.result()[0] == "done"
    assert seen[1] == (2, long_deadline)
    # A caller without a deadline runs its batch unbounded.
    assert submit(3, None) == ("done", None)
    assert seen[-1] == (1, None)
