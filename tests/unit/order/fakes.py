"""A unit of work for the unit tests: the service's own (services/order/unit_of_work.py) on
a migrated SQLite file, counting the commits watchers were told of."""

from __future__ import annotations

from pathlib import Path

from services.common import db
from services.order.app import MIGRATIONS
from services.order.notifier import ChangeNotifier
from services.order.unit_of_work import SqlUnitOfWork


class CountingNotifier(ChangeNotifier):
    def __init__(self) -> None:
        super().__init__()
        self.notified = 0

    def notify(self) -> None:
        self.notified += 1
        super().notify()


class SqliteUnitOfWork(SqlUnitOfWork):
    def __init__(self, directory: Path) -> None:
        url = f"sqlite:///{directory / 'order.db'}"
        db.migrate(url, MIGRATIONS)
        self.engine = db.make_engine(url)
        self.counting = CountingNotifier()
        super().__init__(db.make_session_factory(self.engine), self.counting)

    def close(self) -> None:
        self.engine.dispose()
