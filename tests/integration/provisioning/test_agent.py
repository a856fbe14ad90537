"""The router agent against the real devstack routers: prepare, confirm, rollback, batches,
refusals, expiry, host keys and hostile descriptions.

The worker is driven directly (commands queued in its table, ``run_once``), on SQLite and
on PostgreSQL; the Kafka path is covered by test_saga.py.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from devstack.netconf import RouterFleet
from idc.type.v1 import router_error_pb2
from services.provisioning.agent.jobs import CONFIRM, PREPARE, ROLLBACK
from services.provisioning.agent.worker import RouterWorker
from services.provisioning.domain.circuits import circuit_end
from services.provisioning.netconf import NetconfSession
from services.provisioning.rendering import Renderer
from services.provisioning.tables import LogEntry
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

VLANS = itertools.count(2000)


# Each router on one of the two databases: the agent's storage is the same code for both
# routers, so every test still runs on each router and on each engine.
@pytest.fixture(
    params=[("sg-edge-1", "sqlite"), ("cq-edge-1", "postgres")], ids=["sg-sqlite", "cq-postgres"]
)
def worker(request: pytest.FixtureRequest, routers: RouterFleet) -> Iterator[RouterWorker]:
    router, engine = request.param
    device = device_of(routers[router])
    factory = database(
        request.getfixturevalue(f"{engine.replace('postgresql', 'postgres')}_database_url")
    )
    session = NetconfSession(device)
    w = RouterWorker(device, session, factory, Renderer(), "replies")
    used: list[int] = []
    w.used_vlans = used  # type: ignore[attr-defined]
    yield w
    remove_vlans(session, used)
    session.close()


def vlan(worker: RouterWorker) -> int:
    value = next(VLANS)
    worker.used_vlans.append(value)  # type: ignore[attr-defined]
    return value


def drive(worker: RouterWorker, count: int) -> list:  # type: ignore[type-arg]
    factory: sessionmaker[Session] = worker.session_factory

    def enough() -> list | None:  # type: ignore[type-arg]
        worker.run_once()
        found = replies(factory)
        return found if len(found) >= count else None

    return wait_for(f"{count} replies", enough)


def key(worker: RouterWorker, v: int) -> tuple[str, int]:
    return ("xe-0/0/1" if worker.device.telco == "sg" else "GigabitEthernet0/0/1", v)


def test_prepare_then_confirm_configures_the_circuit(worker: RouterWorker) -> None:
    params = circuit(vlan(worker))
    before = subinterfaces(worker.session)
    enqueue(worker.session_factory, command(worker.device, PREPARE, params))
    [prepared] = drive(worker, 1)
    assert prepared.success, prepared.error
    assert prepared.persist_id and prepared.payload_sha256
    enqueue(
        worker.session_factory,
        command(worker.device, CONFIRM, params, persist_id=prepared.persist_id),
    )
    confirmed = drive(worker, 2)[1]
    assert confirmed.success, confirmed.error
    after = subinterfaces(worker.session)
    assert set(after) - set(before) == {key(worker, params.a_end.vlan_id)}
    with worker.session_factory() as db:
        steps = [(e.step, e.outcome, e.persist_id) for e in db.scalars(select(LogEntry))]
    assert steps == [(1, 2, prepared.persist_id), (2, 2, prepared.persist_id)]


def test_prepare_then_rollback_leaves_running_unchanged(worker: RouterWorker) -> None:
    params = circuit(vlan(worker))
    before = worker.session.running()
    enqueue(worker.session_factory, command(worker.device, PREPARE, params))
    [prepared] = drive(worker, 1)
    assert key(worker, params.a_end.vlan_id) in subinterfaces(worker.session)  # tentative
    enqueue(
        worker.session_factory,
        command(worker.device, ROLLBACK, params, persist_id=prepared.persist_id),
    )
    rolled_back = drive(worker, 2)[1]
    assert rolled_back.success, rolled_back.error
    assert worker.session.running() == before


def test_vlan_in_use_is_refused_with_the_routers_message(worker: RouterWorker) -> None:
    v = vlan(worker)
    first, second = circuit(v), circuit(v)
    enqueue(worker.session_factory, command(worker.device, PREPARE, first))
    [prepared] = drive(worker, 1)
    enqueue(
        worker.session_factory,
        command(worker.device, CONFIRM, first, persist_id=prepared.persist_id),
    )
    drive(worker, 2)
    before = worker.session.running()
    enqueue(worker.session_factory, command(worker.device, PREPARE, second, saga_id="saga-2"))
    refused = drive(worker, 3)[2]
    assert not refused.success
    assert refused.error.kind == router_error_pb2.ROUTER_ERROR_KIND_RPC_ERROR
    assert refused.error.error_tag == "data-exists"
    assert refused.error.message
    assert worker.session.running() == before


def test_queued_prepares_share_one_commit_and_stay_independent(worker: RouterWorker) -> None:
    circuits = [circuit(vlan(worker)) for _ in range(3)]
    before = set(subinterfaces(worker.session))
    enqueue(
        worker.session_factory,
        *(command(worker.device, PREPARE, c, saga_id=f"s{i}") for i, c in enumerate(circuits)),
    )
    prepared = drive(worker, 3)
    assert all(r.success for r in prepared)
    assert len({r.persist_id for r in prepared}) == 1
    persist = prepared[0].persist_id
    enqueue(
        worker.session_factory,
        command(worker.device, ROLLBACK, circuits[1], saga_id="s1", persist_id=persist),
    )
    enqueue(
        worker.session_factory,
        command(worker.device, CONFIRM, circuits[0], saga_id="s0", persist_id=persist),
        command(worker.device, CONFIRM, circuits[2], saga_id="s2", persist_id=persist),
    )
    outcome = {(r.circuit_id, r.action): r.success for r in drive(worker, 6)[3:]}
    assert outcome == {
        (circuits[0].circuit_id, CONFIRM): True,
        (circuits[1].circuit_id, ROLLBACK): True,
        (circuits[2].circuit_id, CONFIRM): True,
    }
    added = set(subinterfaces(worker.session)) - before
    assert added == {key(worker, circuits[0].a_end.vlan_id), key(worker, circuits[2].a_end.vlan_id)}


def test_a_prepare_joins_the_open_batch(worker: RouterWorker) -> None:
    """PREPAREs arriving while a batch is open join it (a follow-up confirmed commit), so
    they never wait for another router's decisions; a member rolled back in the candidate
    stays rolled back, and one confirming commit keeps the rest."""
    first, second, third = (circuit(vlan(worker)) for _ in range(3))
    before = set(subinterfaces(worker.session))
    enqueue(worker.session_factory, command(worker.device, PREPARE, first, saga_id="s1"))
    [prepared] = drive(worker, 1)
    persist = prepared.persist_id
    enqueue(worker.session_factory, command(worker.device, PREPARE, second, saga_id="s2"))
    joined = drive(worker, 2)[1]
    assert joined.success, joined.error
    assert joined.persist_id == persist
    enqueue(
        worker.session_factory,
        command(worker.device, ROLLBACK, first, saga_id="s1", persist_id=persist),
        command(worker.device, PREPARE, third, saga_id="s3"),
    )
    [also_joined] = drive(worker, 3)[2:]
    assert also_joined.success, also_joined.error
    assert also_joined.persist_id == persist
    enqueue(
        worker.session_factory,
        command(worker.device, CONFIRM, second, saga_id="s2", persist_id=persist),
        command(worker.device, CONFIRM, third, saga_id="s3", persist_id=persist),
    )
    outcome = {(r.circuit_id, r.action): r.success for r in drive(worker, 6)[3:]}
    assert outcome == {
        (first.circuit_id, ROLLBACK): True,
        (second.circuit_id, CONFIRM): True,
        (third.circuit_id, CONFIRM): True,
    }
    added = set(subinterfaces(worker.session)) - before
    assert added == {key(worker, second.a_end.vlan_id), key(worker, third.a_end.vlan_id)}


def test_rolling_back_a_grown_batch_reverts_every_member(worker: RouterWorker) -> None:
    first, second = circuit(vlan(worker)), circuit(vlan(worker))
    before = worker.session.running()
    enqueue(worker.session_factory, command(worker.device, PREPARE, first, saga_id="s1"))
    persist = drive(worker, 1)[0].persist_id
    enqueue(worker.session_factory, command(worker.device, PREPARE, second, saga_id="s2"))
    assert drive(worker, 2)[1].persist_id == persist
    enqueue(
        worker.session_factory,
        command(worker.device, ROLLBACK, first, saga_id="s1", persist_id=persist),
        command(worker.device, ROLLBACK, second, saga_id="s2", persist_id=persist),
    )
    assert all(r.success for r in drive(worker, 4)[2:])
    assert worker.session.running() == before


def test_a_prepare_rolled_back_while_queued_leaves_the_router_untouched(
    worker: RouterWorker,
) -> None:
    params = circuit(vlan(worker))
    before = worker.session.running()
    enqueue(
        worker.session_factory,
        command(worker.device, PREPARE, params),
        command(worker.device, ROLLBACK, params),
    )
    prepare, rollback = sorted(drive(worker, 2), key=lambda r: r.action)
    assert not prepare.success
    assert prepare.error.kind == router_error_pb2.ROUTER_ERROR_KIND_TIMEOUT
    assert rollback.success, rollback.error
    assert worker.session.running() == before


def test_payload_not_matching_the_approval_is_refused_untouched(worker: RouterWorker) -> None:
    params = circuit(vlan(worker))
    before = worker.session.running()
    enqueue(worker.session_factory, command(worker.device, PREPARE, params, approved="0" * 64))
    [refused] = drive(worker, 1)
    assert not refused.success
    assert refused.error.kind == router_error_pb2.ROUTER_ERROR_KIND_PAYLOAD_MISMATCH
    assert worker.session.running() == before


def test_unresolved_batch_is_cancelled_at_its_timeout(worker: RouterWorker) -> None:
    params = circuit(vlan(worker))
    before = worker.session.running()
    enqueue(worker.session_factory, command(worker.device, PREPARE, params, confirm_timeout_s=2))
    [prepared] = drive(worker, 1)
    wait_for("the batch to be cancelled", lambda: worker.run_once() or None)
    assert worker.session.running() == before
    enqueue(
        worker.session_factory,
        command(worker.device, CONFIRM, params, persist_id=prepared.persist_id),
    )
    late = drive(worker, 2)[1]
    assert not late.success
    assert late.error.kind == router_error_pb2.ROUTER_ERROR_KIND_TIMEOUT


@pytest.mark.parametrize(
    "description",
    ["</description><config>", "]]>]]>", "<x xmlns='urn:evil'/>&amp;"],
)
def test_hostile_description_is_stored_as_text(worker: RouterWorker, description: str) -> None:
    params = circuit(vlan(worker), description=description)
    before = subinterfaces(worker.session)
    enqueue(worker.session_factory, command(worker.device, PREPARE, params))
    [prepared] = drive(worker, 1)
    enqueue(
        worker.session_factory,
        command(worker.device, CONFIRM, params, persist_id=prepared.persist_id),
    )
    assert drive(worker, 2)[1].success
    after = subinterfaces(worker.session)
    assert {k: v for k, v in after.items() if k in before} == before
    [added] = set(after) - set(before)
    descriptions = [v for p, v in after[added].items() if p.endswith("description")]
    assert descriptions == [f"{params.circuit_id} {description}"]


def test_unknown_host_key_is_refused(worker: RouterWorker, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    device = dataclasses.replace(worker.device, known_hosts_path=empty)
    stranger = RouterWorker(device, NetconfSession(device), worker.session_factory, Renderer(), "r")
    params = circuit(vlan(worker))
    enqueue(worker.session_factory, command(device, PREPARE, params))
    [refused] = drive(stranger, 1)
    assert not refused.success
    assert "host key" in refused.error.message


def test_modify_changes_only_the_rate(worker: RouterWorker) -> None:
    params = circuit(vlan(worker), mbps=100)
    enqueue(worker.session_factory, command(worker.device, PREPARE, params))
    [prepared] = drive(worker, 1)
    enqueue(
        worker.session_factory,
        command(worker.device, CONFIRM, params, persist_id=prepared.persist_id),
    )
    drive(worker, 2)
    bigger = circuit(params.a_end.vlan_id, mbps=300, circuit_id=params.circuit_id)
    enqueue(
        worker.session_factory,
        command(worker.device, PREPARE, bigger, operation=2, saga_id="saga-m", previous=params),
    )
    modify = drive(worker, 3)[2]
    assert modify.success, modify.error
    enqueue(
        worker.session_factory,
        command(
            worker.device,
            CONFIRM,
            bigger,
            operation=2,
            saga_id="saga-m",
            persist_id=modify.persist_id,
        ),
    )
    assert drive(worker, 4)[3].success
    end = circuit_end(bigger, worker.device.side)
    leaves = subinterfaces(worker.session)[key(worker, end.vlan)]
    rates = {v for p, v in leaves.items() if p.endswith(("/cir", "/cir-kbps"))}
    assert rates == {str(end.cir_bps if worker.device.telco == "sg" else end.cir_kbps)}


def count_edits(worker: RouterWorker, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The payloads of every edit-config the worker sends from now on."""
    sent: list[str] = []
    edit = worker.session.edit_candidate

    def recording(config: str) -> None:
        sent.append(config)
        edit(config)

    monkeypatch.setattr(worker.session, "edit_candidate", recording)
    return sent


def test_a_batch_goes_out_as_one_edit(
    worker: RouterWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A router with thousands of circuits is slow over every edit-config: a batch, and
    the circuits joining it, are each one edit."""
    circuits = [circuit(vlan(worker)) for _ in range(5)]
    before = set(subinterfaces(worker.session))
    edits = count_edits(worker, monkeypatch)
    enqueue(
        worker.session_factory,
        *(command(worker.device, PREPARE, c, saga_id=f"s{i}") for i, c in enumerate(circuits[:3])),
    )
    prepared = drive(worker, 3)
    assert all(r.success for r in prepared), [r.error for r in prepared]
    assert len(edits) == 1
    persist = prepared[0].persist_id
    enqueue(
        worker.session_factory,
        *(command(worker.device, PREPARE, c, saga_id=f"j{i}") for i, c in enumerate(circuits[3:])),
    )
    joined = drive(worker, 5)[3:]
    assert all(r.success and r.persist_id == persist for r in joined), [r.error for r in joined]
    assert len(edits) == 2
    enqueue(
        worker.session_factory,
        command(worker.device, CONFIRM, circuits[0], saga_id="s0", persist_id=persist),
    )
    assert drive(worker, 6)[5].success
    added = set(subinterfaces(worker.session)) - before
    assert added == {key(worker, c.a_end.vlan_id) for c in circuits}


def test_one_refused_circuit_in_a_batch_is_refused_alone(
    worker: RouterWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = vlan(worker)
    existing = circuit(taken)
    enqueue(worker.session_factory, command(worker.device, PREPARE, existing, saga_id="old"))
    [prepared] = drive(worker, 1)
    enqueue(
        worker.session_factory,
        command(worker.device, CONFIRM, existing, saga_id="old", persist_id=prepared.persist_id),
    )
    drive(worker, 2)
    before = set(subinterfaces(worker.session))
    good = [circuit(vlan(worker)) for _ in range(4)]
    clash = circuit(taken)
    edits = count_edits(worker, monkeypatch)
    enqueue(
        worker.session_factory,
        *(command(worker.device, PREPARE, c, saga_id=f"g{i}") for i, c in enumerate(good[:2])),
        command(worker.device, PREPARE, clash, saga_id="clash"),
        *(command(worker.device, PREPARE, c, saga_id=f"h{i}") for i, c in enumerate(good[2:])),
    )
    outcome = {r.circuit_id: r for r in drive(worker, 7)[2:]}
    refused = outcome[clash.circuit_id]
    assert not refused.success
    assert refused.error.kind == router_error_pb2.ROUTER_ERROR_KIND_RPC_ERROR
    assert refused.error.error_tag == "data-exists"
    assert refused.error.message
    assert all(outcome[c.circuit_id].success for c in good)
    assert len(edits) > 1  # the merged edit was refused, then its halves
    persist = outcome[good[0].circuit_id].persist_id
    enqueue(
        worker.session_factory,
        command(worker.device, CONFIRM, good[0], saga_id="g0", persist_id=persist),
    )
    assert drive(worker, 8)[7].success
    added = set(subinterfaces(worker.session)) - before
    assert added == {key(worker, c.a_end.vlan_id) for c in good}
