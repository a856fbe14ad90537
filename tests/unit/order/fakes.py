"""A unit of work for the unit tests: the service's own (services/order/unit_of_work.py) on
a migrated SQLite file, counting the commits watchers were told of; and provisioning's side
of an order as the unit tests play it (a plan with both routers' payload hashes)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from idc.events.v1 import provisioning_pb2
from idc.type.v1 import router_payload_pb2, side_pb2
from services.common import db
from services.order.app import MIGRATIONS
from services.order.notifier import ChangeNotifier
from services.order.unit_of_work import SqlUnitOfWork

if TYPE_CHECKING:
    from services.order.orders import OrderApp


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


def record_plan(app: OrderApp, order_id: str, circuit_id: str,
                hashes: tuple[str, str] = ("a1", "z1"), **fields: Any) -> None:
    """Provisioning's plan for an order: the Singapore and Chongqing payloads' hashes."""
    with app.uow.write() as session:
        app.outcomes.record_plan(session, provisioning_pb2.ProvisioningPlanned(
            order_id=order_id, circuit_id=circuit_id, payloads=[
                router_payload_pb2.RouterPayload(side=side, sha256=sha) for side, sha in zip(
                    (side_pb2.SIDE_SINGAPORE, side_pb2.SIDE_CHONGQING), hashes, strict=True)],
            **fields))
