"""The order service's audit chain on real PostgreSQL (its migrations): writers committing
entries to one circuit at the same moment, the first of them racing to create its head,
leave one unbroken chain (no fork, no gap, every prev_hash matching) as
``idcctl audit verify`` checks it, read through the AuditService it calls.
(SQLite: tests/unit/test_audit_chain.py.)"""

from __future__ import annotations

import itertools
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import insert

from idc.ops.v1 import audit_service_pb2 as pb
from services.cli.audit import first_mismatch
from services.common import db
from services.common.audit_chain import GENESIS
from services.common.audit_servicer import AuditServicer
from services.common.auth import Principal, Role, bind_principal, reset_principal
from services.order.app import MIGRATIONS
from services.order.audit import order_chain
from services.order.tables import ApprovalDecisionRow, AuditRow, OrderRow

pytestmark = pytest.mark.integration

KEY = Ed25519PrivateKey.generate()
WRITERS, COMMITS = 6, 8
CIRCUIT, ORDER = "cct-writers", "ord-writers"


def _filler(column: Any) -> Any:
    """A value of the column's type: the order row only has to exist for its circuit."""
    if column.type.python_type is object:  # UtcDateTime, a decorator without one
        return datetime.now(UTC)
    return {str: "x", int: 0, bytes: b""}[column.type.python_type]


def test_writers_on_one_circuit_leave_one_unbroken_chain(postgres_database_url: str) -> None:
    db.migrate(postgres_database_url, MIGRATIONS)
    engine = db.make_engine(postgres_database_url)
    factory = db.make_session_factory(engine)
    chain = order_chain({"sg": KEY})
    chain.install(factory)
    with factory() as session, session.begin():
        values = {c.key: _filler(c) for c in OrderRow.__table__.columns}
        session.execute(insert(OrderRow).values({**values, "id": ORDER, "circuit_id": CIRCUIT}))

    start = threading.Barrier(WRITERS)
    errors: list[BaseException] = []

    def write(writer: int) -> None:
        try:
            for n in range(COMMITS):
                # The first commits of all writers meet on a circuit without a head.
                if n == 0:
                    start.wait(30)
                now = datetime.now(UTC)
                with factory() as session, session.begin():
                    session.add(AuditRow(order_id=ORDER, at=now, actor=f"w{writer}",
                                         reason=f"commit {n}", from_state=None,
                                         to_state="PENDING"))
                    session.add(ApprovalDecisionRow(
                        order_id=ORDER, side="a", telco_id="sg", state="APPROVED",
                        approver=f"w{writer}", payload_sha256="0" * 64, comment=str(n),
                        decided_at=now))
        except BaseException as error:  # reported by the test thread
            errors.append(error)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads), "a writer hangs (deadlock?)"
    assert errors == []

    token = bind_principal(Principal("ops@example.net", Role.OPS, telco="sg"))
    try:
        reply = AuditServicer(chain, factory).ListChainEntries(
            pb.ListChainEntriesRequest(circuit_id=CIRCUIT), None)
    finally:
        reset_principal(token)
    entries = list(reply.entries)
    total = WRITERS * COMMITS * 2
    assert [e.sequence for e in entries] == list(range(1, total + 1))
    assert reply.head_sequence == total and reply.head_hash == entries[-1].hash
    assert len({(e.kind, e.entry_id) for e in entries}) == total
    assert entries[0].prev_hash == GENESIS
    assert all(e.prev_hash == prev.hash for prev, e in itertools.pairwise(entries))
    assert first_mismatch("order", entries, reply.head_sequence, reply.head_hash,
                          {"sg": KEY.public_key()}) is None
    engine.dispose()
