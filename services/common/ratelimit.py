"""Token buckets: how many calls a caller may make, with bursts, in bounded memory.

Plain Python with an injected clock, so the arithmetic is tested without waiting.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]


@dataclass(frozen=True)
class Rate:
    """``per_s`` tokens are added each second up to ``burst``; a call takes one."""

    per_s: float
    burst: int


class TokenBucket:
    def __init__(self, rate: Rate, now: float) -> None:
        self.rate = rate
        self._tokens = float(rate.burst)
        self._updated = now

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(float(self.rate.burst), self._tokens + elapsed * self.rate.per_s)
        self._updated = now

    def wait_s(self, now: float) -> float:
        """Seconds until a token is available (0 when one is)."""
        self._refill(now)
        if self._tokens >= 1.0:
            return 0.0
        return (1.0 - self._tokens) / self.rate.per_s

    def take(self, now: float) -> float:
        """Take a token and return 0, or return the seconds until one is available."""
        wait = self.wait_s(now)
        if wait == 0.0:
            self._tokens -= 1.0
        return wait

    def full(self, now: float) -> bool:
        """Full again: forgetting this bucket changes nothing for its caller."""
        self._refill(now)
        return self._tokens >= self.rate.burst


class RateLimiter:
    """One bucket per key (a principal, a peer address), at most ``max_keys`` of them.

    Buckets idle long enough to be full again are dropped (a new bucket starts full, so
    nothing changes for the caller); past ``max_keys`` the least recently used go first.
    """

    def __init__(self, max_keys: int = 10_000, clock: Clock = time.monotonic) -> None:
        self._max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, rate: Rate) -> float:
        """Take one token from ``key``'s bucket: 0, or the seconds to wait before retrying."""
        with self._lock:
            return self._bucket(key, rate).take(self._clock())

    def wait_s(self, key: str, rate: Rate) -> float:
        """What ``take`` would answer, without taking (nor keeping a bucket for the key)."""
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None or bucket.rate != rate:
                return 0.0  # a new bucket is full
            return bucket.wait_s(self._clock())

    def _bucket(self, key: str, rate: Rate) -> TokenBucket:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None or bucket.rate != rate:
            bucket = TokenBucket(rate, now)
            self._buckets[key] = bucket
        self._buckets.move_to_end(key)
        self._evict(now)
        return bucket

    def _evict(self, now: float) -> None:
        # The front holds the least recently used buckets: drop those full again (one or
        # two per call keeps the cost constant), then any beyond the bound.
        for _ in range(2):
            oldest_key, oldest = next(iter(self._buckets.items()))
            if len(self._buckets) == 1 or not oldest.full(now):
                break
            del self._buckets[oldest_key]
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
