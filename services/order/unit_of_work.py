"""The order service's unit of work: the transactions the use cases run in.

A use case takes a :class:`UnitOfWork` and opens one transaction per call through it;
watchers of orders (WatchOrder, services/order/notifier.py) are told once it has
committed, never for a rolled-back one. The service runs :class:`SqlUnitOfWork` on its
database; the unit tests run the same class on a SQLite file (tests/unit/order/fakes.py),
since the queries (services/order/store.py) are SQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from services.common import db
from services.order.notifier import ChangeNotifier


class UnitOfWork(Protocol):
    notifier: ChangeNotifier

    def write(self) -> AbstractContextManager[Session]:
        """One transaction: committed when the block succeeds, rolled back when it raises;
        watchers are told after the commit."""

    def rehearse(self) -> AbstractContextManager[Session]:
        """One transaction that is always rolled back: a validate-only call runs the real
        call's statements (locks, checks, rows) in it and keeps nothing, tells nobody."""

    def read(self) -> AbstractContextManager[Session]:
        """A session for reads of several statements."""

    def read_one_statement(self) -> AbstractContextManager[Session]:
        """A session for a read of a single statement (no transaction on PostgreSQL)."""

    def notify_on_commit(self, session: Session) -> None:
        """Tell watchers once ``session`` commits: for a transaction somebody else opened
        (the event consumer's, around one event)."""


class SqlUnitOfWork:
    def __init__(self, factory: sessionmaker[Session], notifier: ChangeNotifier) -> None:
        self.factory = factory
        self.notifier = notifier
        self._single_statement_factory = db.single_statement_factory(factory)

    @contextmanager
    def write(self) -> Iterator[Session]:
        with self.factory() as session, session.begin():
            self.notify_on_commit(session)
            yield session

    @contextmanager
    def rehearse(self) -> Iterator[Session]:
        with self.factory() as session:
            session.begin()
            try:
                yield session
            finally:
                session.rollback()

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self.factory() as session:
            yield session

    @contextmanager
    def read_one_statement(self) -> Iterator[Session]:
        with self._single_statement_factory() as session:
            yield session

    def notify_on_commit(self, session: Session) -> None:
        event.listen(session, "after_commit", lambda _s: self.notifier.notify(), once=True)
