"""Group commit for admissions: concurrent CreateOrder calls share one transaction.

Admissions are serialised by the channel lock (one row locked FOR UPDATE), so on their own
they run one transaction at a time, each paying its round trips and its commit under the
lock. Here a caller queues its prepared order; the first caller that finds no batch running
becomes the leader, takes what is queued (up to ``max_batch``) and admits it in one
transaction, one order after the other, each seeing what the previous ones took. The others
wait for their outcome; when the leader is done one of them leads the next batch. Every
order still gets its own decision (admitted, refused for capacity, replayed), exactly as if
it had run alone after the previous one.

The batch's transaction is bounded by the latest deadline of its callers (unbounded if one
has none): one caller's deadline passing does not refuse the commit of the others' orders.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from services.common import deadlines

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_MAX_BATCH = 64


@dataclass
class Pending(Generic[T, R]):
    """One queued item and, once its batch ran, its result or error."""

    item: T
    # The caller's deadline (services/common/deadlines.py), None if it has none.
    deadline: float | None = None
    result: R | None = None
    error: BaseException | None = None
    # Set when the item is settled or when its caller is to lead the next batch.
    wake: threading.Event = field(default_factory=threading.Event)
    done: bool = False
    lead: bool = False

    def outcome(self) -> R:
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


@dataclass
class GroupCommit(Generic[T, R]):
    """``run_batch`` gets the pending items of one batch and must settle every one of them
    (``result`` or ``error``); an exception it raises settles the unsettled ones with it.

    Only the callers concerned are woken: those of the batch just run, and the first one
    still queued, which leads the next batch.
    """

    run_batch: Callable[[Sequence[Pending[T, R]]], None]
    max_batch: int = DEFAULT_MAX_BATCH
    _queue: list[Pending[T, R]] = field(default_factory=list)
    _busy: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def submit(self, item: T) -> R:
        pending: Pending[T, R] = Pending(item, deadlines.current())
        with self._lock:
            self._queue.append(pending)
            pending.lead = not self._busy
            self._busy = True
        if not pending.lead:
            pending.wake.wait()
        if pending.done:
            return pending.outcome()
        with self._lock:
            batch = self._queue[:self.max_batch]
            del self._queue[:self.max_batch]
        try:
            with deadlines.until(_latest(batch)):
                self.run_batch(batch)
        except BaseException as error:
            for unsettled in batch:
                if unsettled.result is None and unsettled.error is None:
                    unsettled.error = error
        finally:
            with self._lock:
                successor = self._queue[0] if self._queue else None
                if successor is None:
                    self._busy = False
                else:
                    successor.lead = True
            for settled in batch:
                settled.done = True
                settled.wake.set()
            if successor is not None:
                successor.wake.set()
        return pending.outcome()


def _latest(batch: Sequence[Pending[T, R]]) -> float | None:
    if any(pending.deadline is None for pending in batch):
        return None
    return max(pending.deadline for pending in batch if pending.deadline is not None)
