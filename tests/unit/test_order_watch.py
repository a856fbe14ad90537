"""WatchOrder's client side: streams ended by their lifetime are reopened, without repeats."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from typing import TypeAlias

from idc.order.v1 import order_pb2
from idc.order.v1.order_service_pb2 import WatchOrderResponse
from services.common.order_watch import WatchProgress, watch_order, watch_order_async

S = order_pb2
State: TypeAlias = order_pb2.OrderState.ValueType


def _order(*states: State) -> order_pb2.Order:
    trail = [S.AuditEntry(from_state=a, to_state=b, reason=f"{a}->{b}")
             for a, b in itertools.pairwise(states)]
    return S.Order(id="o-1", state=states[-1], audit_trail=trail)


def _snapshot(*states: State) -> WatchOrderResponse:
    return WatchOrderResponse(order=_order(*states))


def _change(*states: State) -> WatchOrderResponse:
    order = _order(*states)
    return WatchOrderResponse(order=order, change=order.audit_trail[-1])


A, P, AP, IP, C = (S.ORDER_STATE_ACKNOWLEDGED, S.ORDER_STATE_PENDING_APPROVAL,
                   S.ORDER_STATE_APPROVED, S.ORDER_STATE_IN_PROGRESS, S.ORDER_STATE_COMPLETED)
# Three streams, as the server sends them: each ends at its lifetime until the last, which
# ends when the order completes. Changes happened while no stream was open, and the second
# reopening finds nothing new.
STREAMS = [
    [_snapshot(A), _change(A, P)],
    [_snapshot(A, P, AP), ],
    [_snapshot(A, P, AP), _change(A, P, AP, IP), _change(A, P, AP, IP, C)],
]
# What the watcher sees: the first state, then every change once.
EXPECTED = [(A, None), (P, (A, P)), (AP, (P, AP)), (IP, (AP, IP)), (C, (IP, C))]


def _seen(messages: list[WatchOrderResponse]) -> list[tuple[int, tuple[int, int] | None]]:
    return [(m.order.state,
             (m.change.from_state, m.change.to_state) if m.HasField("change") else None)
            for m in messages]


def test_the_watcher_reopens_until_the_order_is_final_and_sees_each_change_once() -> None:
    opened = iter(STREAMS)
    progress = WatchProgress()

    def open_stream() -> Iterator[WatchOrderResponse]:
        return iter(next(opened))

    assert _seen(list(watch_order(open_stream, progress))) == EXPECTED
    assert progress.streams == 3
    assert progress.final


def test_the_async_watcher_does_the_same() -> None:
    opened = iter(STREAMS)

    async def stream() -> AsyncIterator[WatchOrderResponse]:
        for message in next(opened):
            yield message

    async def collect() -> list[WatchOrderResponse]:
        return [m async for m in watch_order_async(stream)]

    assert _seen(asyncio.run(collect())) == EXPECTED


def test_a_final_order_is_not_watched_again() -> None:
    opened: list[int] = []

    def open_stream() -> Iterator[WatchOrderResponse]:
        opened.append(1)
        return iter([_snapshot(A, S.ORDER_STATE_CANCELLED)])

    assert len(list(watch_order(open_stream))) == 1
    assert opened == [1]
