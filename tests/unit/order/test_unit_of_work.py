"""The unit of work: watchers hear of a commit, never of a rollback."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from services.order.tables import QuoteRow
from tests.unit.order.fakes import SqliteUnitOfWork

T0 = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)


@pytest.fixture
def uow(tmp_path: Path) -> Iterator[SqliteUnitOfWork]:
    unit = SqliteUnitOfWork(tmp_path)
    yield unit
    unit.close()


def quotes(uow: SqliteUnitOfWork) -> int:
    with uow.read_one_statement() as session:
        return int(session.scalar(select(func.count()).select_from(QuoteRow)) or 0)


def test_a_write_commits_and_then_tells_the_watchers(uow: SqliteUnitOfWork) -> None:
    with uow.write() as session:
        session.execute(select(1))
        assert uow.counting.notified == 0, "not before the commit"
    assert uow.counting.notified == 1


def test_a_failed_write_is_rolled_back_and_tells_nobody(uow: SqliteUnitOfWork) -> None:
    with pytest.raises(RuntimeError), uow.write() as session:
        session.add(QuoteRow(
            id="qte-1", tenant_id="acme", spec=b"", currency="SGD", mrc="1", nrc="0",
            burst_price="0", term_months=12, price_book_version="v", termination_share="0",
            created_at=T0, expire_at=T0))
        session.flush()
        raise RuntimeError("the use case failed")
    assert uow.counting.notified == 0
    assert quotes(uow) == 0


def test_a_transaction_opened_elsewhere_tells_the_watchers_when_it_commits(
    uow: SqliteUnitOfWork,
) -> None:
    with uow.factory() as session, session.begin():
        uow.notify_on_commit(session)
        uow.notify_on_commit(session)  # once per registration, each told once
    assert uow.counting.notified == 2
    with uow.read() as session:
        uow.notify_on_commit(session)
        session.rollback()
    assert uow.counting.notified == 2
