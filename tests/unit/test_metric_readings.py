"""The readings behind the gauges, from real (SQLite) databases, and the after-commit rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from services.billing.app import MIGRATIONS as BILLING_MIGRATIONS
from services.billing.metrics import ingest_lag
from services.billing.tables import CircuitChangeRow, UsageSampleRow
from services.common.db import make_engine, make_session_factory, migrate
from services.common.metrics import after_commit
from services.provisioning.app import MIGRATIONS as PROVISIONING_MIGRATIONS
from services.provisioning.metrics import pending_commits
from services.provisioning.tables import AgentBatch

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def database(tmp_path: Path, name: str, migrations: Path) -> sessionmaker[Session]:
    url = f"sqlite:///{tmp_path / name}"
    migrate(url, migrations)
    return make_session_factory(make_engine(url))


def test_an_action_after_commit_runs_on_commit_only(tmp_path: Path) -> None:
    factory = database(tmp_path, "p.db", PROVISIONING_MIGRATIONS)
    ran: list[str] = []
    with factory() as session:
        session.execute(text("SELECT 1"))
        after_commit(session, lambda: ran.append("rolled back"))
        session.rollback()
        session.execute(text("SELECT 1"))
        session.commit()
    assert ran == [], "an action of a rolled-back transaction never runs"
    with factory() as session, session.begin():
        after_commit(session, lambda: ran.append("committed"))
        savepoint = session.begin_nested()
        savepoint.rollback()
    assert ran == ["committed"], "a savepoint's rollback does not undo the transaction"


def test_pending_commits_per_router_with_the_oldest_age(tmp_path: Path) -> None:
    factory = database(tmp_path, "p.db", PROVISIONING_MIGRATIONS)
    with factory() as session, session.begin():
        for persist_id, state, minutes in (("a", "open", 5), ("b", "settle-confirm", 2),
                                           ("c", "closed", 30)):
            session.add(AgentBatch(
                persist_id=persist_id, router_name="sg-edge-1", state=state,
                expire_at=NOW, members={}, created_at=NOW - timedelta(minutes=minutes),
                updated_at=NOW))
    counts, ages = pending_commits(factory, ["sg-edge-1", "cq-edge-1"], NOW)
    assert {r.attributes["router"]: r.value for r in counts} == {"sg-edge-1": 2, "cq-edge-1": 0}
    assert {r.attributes["router"]: r.value for r in ages} == {"sg-edge-1": 300.0,
                                                               "cq-edge-1": 0.0}


def _change(circuit: str, kind: str, at: datetime, event: str) -> CircuitChangeRow:
    return CircuitChangeRow(
        event_id=event, circuit_id=circuit, tenant_id="acme", kind=kind, effective_time=at,
        occurred_at=at, bandwidth_mbps=100, currency="SGD", mrc="1", nrc="0", burst_price="0",
        term_months=12, price_book_version="v1", received_at=at)


def _sample(circuit: str, start: datetime) -> UsageSampleRow:
    return UsageSampleRow(
        circuit_id=circuit, side=1, interval_start=start, interval_seconds=300, bytes_in=1,
        bytes_out=1, valid=True, invalid_reason="", tenant_id="acme", router_name="sg-edge-1",
        interface_name="xe-0/0/1.100", read_time=start, event_id=f"{circuit}-{start}",
        received_at=start)


def test_ingest_lag_of_billable_circuits_only(tmp_path: Path) -> None:
    factory = database(tmp_path, "b.db", BILLING_MIGRATIONS)
    with factory() as session, session.begin():
        session.add_all([
            _change("sampled", "activated", NOW - timedelta(days=1), "e1"),
            _sample("sampled", NOW - timedelta(minutes=20)),
            _sample("sampled", NOW - timedelta(minutes=15)),
            _change("unsampled", "activated", NOW - timedelta(minutes=7), "e2"),
            _change("gone", "activated", NOW - timedelta(days=2), "e3"),
            _change("gone", "disconnected", NOW - timedelta(days=1), "e4"),
            _sample("gone", NOW - timedelta(days=1, minutes=5)),
        ])
    lag = {(r.attributes["circuit"], r.attributes["router"]): r.value
           for r in ingest_lag(factory, lambda: NOW)}
    # The newest sample of "sampled" ends 10 minutes ago; "unsampled" has none since its
    # activation 7 minutes ago; "gone" is disconnected and not billed any more.
    assert lag == {("sampled", "sg-edge-1"): 600.0, ("unsampled", ""): 420.0}
