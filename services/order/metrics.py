"""The order service's metrics: orders by state, the oldest waiting order, headroom.

Gauges are read from the database at each scrape (services/common/metrics.py); the
counters and the time-in-state histogram are recorded by :class:`OrderMetrics` after the
transaction that placed or moved the order has committed, so a rolled-back call counts
nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from services.common import metric_catalogue as catalogue
from services.common.metrics import (
    Reading,
    Registration,
    after_commit,
    counter,
    histogram,
    observe,
)
from services.common.timestamps import as_utc
from services.order.domain.lifecycle import OrderState, OrderType
from services.order.store import CapacityFigures
from services.order.tables import OrderRow

# The one channel this product sells (its label on the headroom gauge).
CHANNEL = "sg-cq"

# The states an order waits in, with the column that says since when.
WAITING_SINCE = {
    OrderState.PENDING_APPROVAL: OrderRow.created_at,
    OrderState.APPROVED: OrderRow.approved_at,
    OrderState.IN_PROGRESS: OrderRow.approved_at,
}

_PLACED = counter(catalogue.ORDERS_PLACED)
_STATE_DURATION = histogram(catalogue.ORDER_STATE_DURATION)
_SCHEDULE_MISSED = counter(catalogue.ORDERS_SCHEDULE_MISSED)


class OrderMetrics:
    """What the use cases record; the clock is theirs."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._clock = clock

    def placed(self, session: Session, order_type: OrderType, count: int = 1) -> None:
        if count:
            after_commit(session, lambda: _PLACED.add(count, {"type": order_type.value}))

    def schedule_missed(self, session: Session, reason: str) -> None:
        """A scheduled order that needs a person: it could not start, or its revert went
        back to approval."""
        after_commit(session, lambda: _SCHEDULE_MISSED.add(1, {"reason": reason}))

    def left(self, session: Session, order: OrderRow, state: OrderState) -> None:
        """``order`` leaves ``state``: record the time it waited there, if it is a wait."""
        column = WAITING_SINCE.get(state)
        since = None if column is None else getattr(order, column.key)
        if since is None:
            return
        waited = (self._clock() - since).total_seconds()
        after_commit(session, lambda: _STATE_DURATION.record(waited, {"state": state.value}))


def _orders_by_state(factory: sessionmaker[Session]) -> list[Reading]:
    with factory() as session:
        counts = dict(
            session.execute(select(OrderRow.state, func.count()).group_by(OrderRow.state)).all()
        )
    return [Reading(int(counts.get(state.value, 0)), {"state": state.value})
            for state in OrderState]


def _oldest_waiting(factory: sessionmaker[Session], now: Callable[[], datetime]
                    ) -> list[Reading]:
    readings = []
    with factory() as session:
        for state, column in WAITING_SINCE.items():
            oldest = session.scalar(select(func.min(column)).where(OrderRow.state == state.value))
            age = 0.0 if oldest is None else max((now() - as_utc(oldest)).total_seconds(), 0.0)
            readings.append(Reading(age, {"state": state.value}))
        # A scheduled order waits by design until its start: its age counts from there.
        start = session.scalar(select(func.min(OrderRow.start_at))
                               .where(OrderRow.state == OrderState.SCHEDULED.value))
        late = 0.0 if start is None else max((now() - as_utc(start)).total_seconds(), 0.0)
        readings.append(Reading(late, {"state": OrderState.SCHEDULED.value}))
    return readings



def register_gauges(
    factory: sessionmaker[Session],
    now: Callable[[], datetime],
    capacity: Callable[[], CapacityFigures],
) -> list[Registration]:
    def channel() -> list[Reading]:
        return [Reading(capacity().channel.free_mbps, {"channel": CHANNEL})]

    def ports() -> list[Reading]:
        return [Reading(h.free_mbps, {"port": port}) for port, h in capacity().ports.items()]

    return [
        observe(catalogue.ORDERS, lambda: _orders_by_state(factory)),
        observe(catalogue.ORDER_OLDEST_AGE, lambda: _oldest_waiting(factory, now)),
        observe(catalogue.CHANNEL_HEADROOM, channel),
        observe(catalogue.PORT_HEADROOM, ports),
    ]
