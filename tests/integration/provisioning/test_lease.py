"""Two router workers on one database and one router (two agents of a telco): only the
lease holder acts, and the other takes over when the holder dies or stops, settling the
confirmed commit the holder left open by its persist id.

Workers are driven directly (``run_once``) or run on threads (``run``), on SQLite and on
PostgreSQL, against the real devstack routers.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from devstack.netconf import RouterFleet
from idc.events.v1.common_pb2 import CircuitParameters
from idc.events.v1.provisioning_pb2 import ProvisioningReply
from idc.type.v1 import router_error_pb2
from services.provisioning.agent.jobs import CONFIRM, PREPARE
from services.provisioning.agent.worker import RouterWorker
from services.provisioning.domain.batch import BatchState
from services.provisioning.domain.faults import RouterFailure
from services.provisioning.domain.lease import LeaseTerms, Move
from services.provisioning.inventory import Device
from services.provisioning.lease_store import LeaseLost, SqlRouterLease, clock
from services.provisioning.netconf import NetconfSession
from services.provisioning.rendering import Renderer
from services.provisioning.tables import AgentBatch, AgentCommand, RouterLease
from tests.integration.provisioning.helpers import (
    circuit,
    command,
    database,
    device_of,
    enqueue,
    remove_vlans,
    replies,
    subinterfaces,
    wait_for,
)

pytestmark = pytest.mark.integration

VLANS = itertools.count(3900)
# Short, so a takeover in these tests waits about a second; LONG never runs out in a test.
SHORT = LeaseTerms(ttl_s=1.0)
LONG = LeaseTerms(ttl_s=60.0)
# Long enough not to run out between a stop and the check that it was released.
HANDOVER = LeaseTerms(ttl_s=20.0)


@dataclass
class Pair:
    """Two agents' workers for one router, sharing one database."""

    device: Device
    factory: sessionmaker[Session]
    vlans: list[int]

    def worker(self, terms: LeaseTerms) -> RouterWorker:
        return RouterWorker(
            self.device,
            NetconfSession(self.device),
            self.factory,
            Renderer(),
            "replies",
            lease_terms=terms,
        )

    def vlan(self) -> int:
        value = next(VLANS)
        self.vlans.append(value)
        return value

    def open_batches(self) -> list[AgentBatch]:
        with self.factory() as db:
            open_state = AgentBatch.state == BatchState.OPEN.value
            return list(db.scalars(select(AgentBatch).where(open_state)))

    def queued(self) -> int:
        with self.factory() as db:
            return len(db.scalars(select(AgentCommand).where(AgentCommand.done_at.is_(None))).all())


@pytest.fixture(
    params=[("sg-edge-1", "sqlite"), ("cq-edge-1", "postgres")], ids=["sg-sqlite", "cq-postgres"]
)
def pair(request: pytest.FixtureRequest, routers: RouterFleet) -> Iterator[Pair]:
    router, engine = request.param
    device = device_of(routers[router])
    factory = database(request.getfixturevalue(f"{engine}_database_url"))
    made = Pair(device, factory, [])
    yield made
    cleanup = NetconfSession(device)
    try:
        remove_vlans(cleanup, made.vlans)
    finally:
        cleanup.close()


def drive(worker: RouterWorker, factory: sessionmaker[Session], count: int) -> list:  # type: ignore[type-arg]
    def enough() -> list | None:  # type: ignore[type-arg]
        worker.run_once()
        found = replies(factory)
        return found if len(found) >= count else None

    return wait_for(f"{count} replies", enough)


def takes_over(worker: RouterWorker) -> None:
    """Run the worker until it has acquired the lease and settled what was left open (a
    router still busy with the previous holder's session is tried again)."""

    def took_over() -> bool:
        try:
            worker.run_once()
        except RouterFailure as exc:
            if not exc.fault.retryable:
                raise
        return worker.tenure.next_move(time.monotonic()) is Move.WORK

    wait_for("the worker to take the router over", took_over)


def vlans_on(worker: RouterWorker) -> set[int]:
    return {vlan for _interface, vlan in subinterfaces(worker.session)}


def prepared_by(worker: RouterWorker, pair: Pair, params: CircuitParameters) -> ProvisioningReply:
    enqueue(pair.factory, command(pair.device, PREPARE, params))
    [prepared] = drive(worker, pair.factory, 1)
    assert isinstance(prepared, ProvisioningReply) and prepared.success, prepared.error
    return prepared


def test_the_lease_has_one_holder_and_a_fenced_write_fails_for_any_other(pair: Pair) -> None:
    first = SqlRouterLease(pair.factory, pair.device.name, "first", SHORT)
    second = SqlRouterLease(pair.factory, pair.device.name, "second", SHORT)
    assert first.claim()
    assert not second.claim()
    assert first.claim()  # renewed
    with pair.factory() as db, db.begin():
        first.fence(db)
    with pytest.raises(LeaseLost), pair.factory() as db, db.begin():
        second.fence(db)
    # Not renewed: it runs out on the database's clock and the other may take it...
    wait_for("the lease to run out", second.claim)
    # ...after which the first may record nothing more.
    with pytest.raises(LeaseLost), pair.factory() as db, db.begin():
        first.fence(db)
    second.release()
    assert first.claim()
    # A slow step outlasting the lease may still record while nobody else claimed it.
    wait_for("the lease to run out unclaimed", lambda: ran_out(pair))
    with pair.factory() as db, db.begin():
        first.fence(db)
    assert not second.claim()  # the fence renewed it


def ran_out(pair: Pair) -> bool:
    with pair.factory() as db:
        return bool(db.scalar(select(RouterLease.expires_at <= clock())))


def test_only_the_lease_holder_drives_the_router(pair: Pair) -> None:
    holder, other = pair.worker(LONG), pair.worker(LONG)
    try:
        circuits = [circuit(pair.vlan()) for _ in range(3)]
        assert holder.run_once()  # acquires; nothing to settle or do yet
        enqueue(
            pair.factory,
            *(command(pair.device, PREPARE, c, saga_id=f"s{i}") for i, c in enumerate(circuits)),
        )
        # The other worker sees the queue and does nothing with it, however often it runs.
        for _ in range(5):
            assert not other.run_once()
        assert pair.queued() == 3
        prepared = drive(holder, pair.factory, 3)
        assert all(r.success for r in prepared), [r.error for r in prepared]
        persist_id = prepared[0].persist_id
        assert {r.persist_id for r in prepared} == {persist_id}
        enqueue(
            pair.factory,
            *(
                command(pair.device, CONFIRM, c, saga_id=f"s{i}", persist_id=persist_id)
                for i, c in enumerate(circuits)
            ),
        )
        assert not other.run_once()
        confirmed = drive(holder, pair.factory, 6)[3:]
        assert all(r.success for r in confirmed), [r.error for r in confirmed]
        assert len(replies(pair.factory)) == 6  # each command answered once
        assert set(pair.vlans) <= vlans_on(holder)
    finally:
        holder.close()
        other.close()


def test_a_survivor_cancels_the_open_batch_of_a_holder_that_died(pair: Pair) -> None:
    dead, survivor = pair.worker(SHORT), pair.worker(SHORT)
    params = circuit(pair.vlan())
    try:
        prepared = prepared_by(dead, pair, params)
        assert params.a_end.vlan_id in vlans_on(survivor)
        # The holder dies with its confirmed commit pending and the candidate locked: its
        # connection drops and its lease is never renewed again.
        dead.session._drop()
        # When the lease runs out the survivor takes over and cancels the commit by its
        # persist id: no CONFIRM was queued, the saga had not decided.
        takes_over(survivor)
        assert not pair.open_batches()
        assert params.a_end.vlan_id not in vlans_on(survivor)
        # The late CONFIRM learns that the router reverted; the router takes new work.
        enqueue(pair.factory, command(pair.device, CONFIRM, params, persist_id=prepared.persist_id))
        late = drive(survivor, pair.factory, 2)[1]
        assert not late.success
        assert late.error.kind == router_error_pb2.ROUTER_ERROR_KIND_TIMEOUT
        again = circuit(pair.vlan())
        enqueue(pair.factory, command(pair.device, PREPARE, again, saga_id="saga-2"))
        [*_, renewed] = drive(survivor, pair.factory, 3)
        assert renewed.success, renewed.error
        enqueue(
            pair.factory,
            command(pair.device, CONFIRM, again, saga_id="saga-2", persist_id=renewed.persist_id),
        )
        assert drive(survivor, pair.factory, 4)[3].success
    finally:
        dead.close()
        survivor.close()


def test_a_survivor_confirms_an_open_batch_the_saga_decided_to_confirm(pair: Pair) -> None:
    dead, survivor = pair.worker(SHORT), pair.worker(SHORT)
    params = circuit(pair.vlan())
    try:
        prepared = prepared_by(dead, pair, params)
        # The CONFIRM is queued but the holder dies before handling it.
        enqueue(pair.factory, command(pair.device, CONFIRM, params, persist_id=prepared.persist_id))
        dead.session._drop()
        takes_over(survivor)
        assert not pair.open_batches()
        confirmed = drive(survivor, pair.factory, 2)[1]
        assert confirmed.success, confirmed.error
        assert confirmed.persist_id == prepared.persist_id
        assert params.a_end.vlan_id in vlans_on(survivor)
    finally:
        dead.close()
        survivor.close()


def test_a_commit_the_holder_confirmed_but_never_recorded_is_read_from_running(
    pair: Pair,
) -> None:
    dead, survivor = pair.worker(SHORT), pair.worker(SHORT)
    params = circuit(pair.vlan())
    try:
        prepared = prepared_by(dead, pair, params)
        enqueue(pair.factory, command(pair.device, CONFIRM, params, persist_id=prepared.persist_id))
        # The holder's confirming commit reaches the router; it dies before recording it.
        dead.session.confirm(prepared.persist_id)
        dead.session._drop()
        # The survivor's own confirm finds nothing pending: running holds the circuit, so
        # the batch is recorded as committed and the CONFIRM answered as done.
        takes_over(survivor)
        confirmed = drive(survivor, pair.factory, 2)[1]
        assert confirmed.success, confirmed.error
        assert params.a_end.vlan_id in vlans_on(survivor)
    finally:
        dead.close()
        survivor.close()


def test_a_holder_that_lost_the_lease_lets_go_of_the_candidate_lock(pair: Pair) -> None:
    slow, taker = pair.worker(SHORT), pair.worker(SHORT)
    params = circuit(pair.vlan())
    try:
        prepared_by(slow, pair, params)  # its session keeps the candidate locked
        wait_for("the lease to run out", taker.lease.claim)
        # The old holder's next turn finds the lease gone: it closes its session instead of
        # acting, which ends its lock.
        assert slow.run_once()
        assert slow.tenure.next_move(time.monotonic()) is Move.WAIT
        takes_over(taker)
        assert not pair.open_batches()
        again = circuit(pair.vlan())
        enqueue(pair.factory, command(pair.device, PREPARE, again, saga_id="saga-2"))
        [*_, renewed] = drive(taker, pair.factory, 2)
        assert renewed.success, renewed.error  # it locked the candidate itself
        enqueue(
            pair.factory,
            command(pair.device, CONFIRM, again, saga_id="saga-2", persist_id=renewed.persist_id),
        )
        assert drive(taker, pair.factory, 3)[2].success
        assert not slow.run_once()
    finally:
        slow.close()
        taker.close()


def test_a_stopped_worker_hands_the_router_over_without_waiting_out_the_lease(
    pair: Pair,
) -> None:
    workers = [pair.worker(HANDOVER), pair.worker(HANDOVER)]
    stops = [threading.Event(), threading.Event()]
    threads = [
        threading.Thread(target=w.run, args=(s,), daemon=True)
        for w, s in zip(workers, stops, strict=True)
    ]
    for thread in threads:
        thread.start()
    try:
        params = circuit(pair.vlan())
        enqueue(pair.factory, command(pair.device, PREPARE, params))
        wait_for("the prepare to be answered", lambda: replies(pair.factory))
        [batch] = pair.open_batches()
        holder = next(i for i, w in enumerate(workers) if w.tenure.holds(time.monotonic()))
        stops[holder].set()
        threads[holder].join(30)
        # The lease was released, not left to run out...
        assert ran_out(pair)
        # ...so the other worker takes over on its next claim and cancels the batch the
        # stopped one left open.
        wait_for("the open batch to be settled", lambda: not pair.open_batches())
        assert workers[1 - holder].tenure.holds(time.monotonic())
        assert params.a_end.vlan_id not in vlans_on(workers[1 - holder])
        assert batch.persist_id
    finally:
        for stop in stops:
            stop.set()
        for thread in threads:
            thread.join(30)
        for worker in workers:
            worker.close()
