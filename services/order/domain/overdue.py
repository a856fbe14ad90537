"""Orders whose provisioning takes longer than it should: what operators are told (no I/O).

An order handed to provisioning (APPROVED or IN_PROGRESS) ends COMPLETED, FAILED or back in
approval within minutes; one still without an outcome past the configured bound waits on
something no one else will report (a consumer without partitions, a saga stuck on a
router). Each such order is named with how long it has waited since approval and the last
step provisioning reported for it. A SCHEDULED order still waiting past the bound after
its start is named too: its start did not happen (its boost is still with provisioning,
or the scheduled start is not running); so is a boost's revert that went back to approval
and is still waiting past the bound after its start (the circuit stays boosted).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.order.domain.lifecycle import OrderState


@dataclass(frozen=True)
class AwaitingOutcome:
    """An order with provisioning, as the overdue check reads it."""

    order_id: str
    state: OrderState
    # When it was handed to provisioning; for a SCHEDULED order, when it was due to start.
    approved_at: datetime
    step: str | None
    step_at: datetime | None


def waited_words(waited: timedelta) -> str:
    """Coarse on purpose: an alarm's text changes (and is logged again) only when this
    does, about once a minute past the first two."""
    seconds = int(waited.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def overdue_since(now: datetime, bound_s: int) -> datetime:
    """Orders approved before this moment and still with provisioning are overdue."""
    return now - timedelta(seconds=bound_s)


def describe_overdue(order: AwaitingOutcome, now: datetime) -> str:
    if order.state is OrderState.SCHEDULED:
        return (f"order {order.order_id} was due to start {waited_words(now - order.approved_at)}"
                " ago and is still SCHEDULED (its boost is not in force yet, or scheduled "
                "starts are not running)")
    if order.state is OrderState.PENDING_APPROVAL:
        return (f"revert {order.order_id} was due {waited_words(now - order.approved_at)} ago "
                "and awaits both telcos' approval again (its router payload changed); its "
                "circuit stays boosted")
    step = (f"last step {order.step!r} since {order.step_at.isoformat(timespec='seconds')}"
            if order.step and order.step_at else "no provisioning step reported yet")
    return (f"order {order.order_id} has waited {waited_words(now - order.approved_at)} "
            f"since approval without an outcome ({order.state}, {step})")


def overdue_report(orders: Sequence[AwaitingOutcome], now: datetime, bound_s: int,
                   more: bool) -> list[str]:
    """The alarm's texts, oldest approval first; ``more`` when further overdue orders were
    not read."""
    since = overdue_since(now, bound_s)
    texts = [describe_overdue(order, now)
             for order in sorted(orders, key=lambda o: o.approved_at)
             if order.approved_at <= since
             and order.state in (OrderState.APPROVED, OrderState.IN_PROGRESS,
                                 OrderState.SCHEDULED, OrderState.PENDING_APPROVAL)]
    if more:
        texts.append(f"more orders have waited longer than {bound_s} s than are listed here")
    return texts
