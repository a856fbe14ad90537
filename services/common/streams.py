"""Open server streams: how many each principal and the whole server may hold, and how long
one may last.

Every open stream holds one of the server's handler threads while it waits for changes, so
the streams together are bounded below the thread pool (``StreamSlots``): unary calls keep
threads of their own. A stream handler ends its stream cleanly (OK) once ``ended()`` says its
lifetime is over; the client opens it again (services/common/order_watch.py).
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from services.common.errors import Throttled

TOO_MANY_STREAMS = "TOO_MANY_STREAMS"
SERVER_STREAMS_EXHAUSTED = "SERVER_STREAMS_EXHAUSTED"

_ends_at: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "idc_stream_ends_at", default=None
)


class StreamSlots:
    """Counts open streams per key (a principal) and in all; refuses beyond the bounds."""

    def __init__(self, per_key: int, total: int) -> None:
        self._per_key = per_key
        self._total = total
        self._lock = threading.Lock()
        self._open: Counter[str] = Counter()

    def open_count(self) -> int:
        with self._lock:
            return sum(self._open.values())

    @contextmanager
    def held(self, key: str) -> Iterator[None]:
        """One slot for the block; Throttled at once when none is left."""
        with self._lock:
            if self._open[key] >= self._per_key:
                raise Throttled(
                    f"you already have {self._per_key} streams open, the most allowed; "
                    "close one first", reason=TOO_MANY_STREAMS)
            if sum(self._open.values()) >= self._total:
                raise Throttled(
                    "the server has as many streams open as it serves; retry later",
                    reason=SERVER_STREAMS_EXHAUSTED)
            self._open[key] += 1
        try:
            yield
        finally:
            with self._lock:
                self._open[key] -= 1
                if self._open[key] <= 0:
                    del self._open[key]


@contextmanager
def lifetime(seconds: float) -> Iterator[None]:
    """The current stream ends ``seconds`` from now."""
    token = _ends_at.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _ends_at.reset(token)


def remaining_s() -> float | None:
    """Seconds the current stream may still last; None outside a stream with a lifetime."""
    ends_at = _ends_at.get()
    if ends_at is None:
        return None
    return max(0.0, ends_at - time.monotonic())


def ended() -> bool:
    left = remaining_s()
    return left is not None and left <= 0.0
