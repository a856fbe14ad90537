"""In-process change notification for WatchOrder.

Writers call ``notify()`` after their commit; watchers wait on it (with a timeout, so
changes committed by another process are still seen by polling) and then read their order
in a short-lived session. No watcher holds a database connection while it waits.
"""

from __future__ import annotations

import threading


class ChangeNotifier:
    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._generation = 0

    @property
    def generation(self) -> int:
        with self._condition:
            return self._generation

    def notify(self) -> None:
        with self._condition:
            self._generation += 1
            self._condition.notify_all()

    def wait(self, seen_generation: int, timeout_s: float) -> None:
        """Return once something changed after ``seen_generation``, or after the timeout."""
        with self._condition:
            self._condition.wait_for(lambda: self._generation != seen_generation, timeout_s)
