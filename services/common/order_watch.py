"""The client side of WatchOrder: reopen the stream when the server ends it before the
order is final (its stream lifetime passed, services/common/streams.py), passing on only
what the watcher has not seen yet.

A reopened stream starts with the order's current state; the audit entries added while no
stream was open become change messages, so a watcher sees every change once, in order.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator

from idc.order.v1 import order_pb2
from idc.order.v1.order_service_pb2 import WatchOrderResponse

# The states after which the server ends the stream for good (lifecycle.py's terminal ones).
FINAL_STATES = frozenset({
    order_pb2.ORDER_STATE_COMPLETED, order_pb2.ORDER_STATE_REJECTED,
    order_pb2.ORDER_STATE_FAILED, order_pb2.ORDER_STATE_CANCELLED,
})


class WatchProgress:
    """What one watcher has seen so far, across the streams it opened."""

    def __init__(self) -> None:
        self.last: order_pb2.Order | None = None
        self.streams = 0
        self._entries = 0

    @property
    def final(self) -> bool:
        return self.last is not None and self.last.state in FINAL_STATES

    def fresh(self, message: WatchOrderResponse, first_of_stream: bool
              ) -> list[WatchOrderResponse]:
        """The messages to pass on for one received message."""
        order = message.order
        if self.last is None or not first_of_stream:
            fresh = [message]
        else:
            missed = order.audit_trail[self._entries:]
            fresh = [WatchOrderResponse(order=order, change=entry) for entry in missed]
            if not fresh and order != self.last:
                fresh = [message]
        self.last = order
        self._entries = len(order.audit_trail)
        return fresh


def watch_order(open_stream: Callable[[], Iterable[WatchOrderResponse]],
                progress: WatchProgress | None = None) -> Iterator[WatchOrderResponse]:
    """Every change of the order until it is final, over as many streams as that takes."""
    progress = progress or WatchProgress()
    while True:
        progress.streams += 1
        received = 0
        for message in open_stream():
            yield from progress.fresh(message, first_of_stream=received == 0)
            received += 1
        # An empty stream is not the lifetime's doing (it always sends the state first).
        if progress.final or received == 0:
            return


async def watch_order_async(open_stream: Callable[[], AsyncIterable[WatchOrderResponse]],
                            progress: WatchProgress | None = None
                            ) -> AsyncIterator[WatchOrderResponse]:
    """``watch_order`` for asyncio clients (the console)."""
    progress = progress or WatchProgress()
    while True:
        progress.streams += 1
        received = 0
        async for message in open_stream():
            for fresh in progress.fresh(message, first_of_stream=received == 0):
                yield fresh
            received += 1
        if progress.final or received == 0:
            return
