"""Closed-loop load: N client threads each send the next request as soon as theirs returns."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc

from bench.harness import nearest_rank


@dataclass(frozen=True)
class LoadFigures:
    calls: int
    seconds: float
    latencies_ms: list[float]

    @property
    def throughput(self) -> float:
        return self.calls / self.seconds

    @property
    def p50_ms(self) -> float:
        return nearest_rank(self.latencies_ms, 50)

    @property
    def p99_ms(self) -> float:
        return nearest_rank(self.latencies_ms, 99)


def run_closed_loop(call: Callable[[int], None], total: int, concurrency: int) -> LoadFigures:
    """Make calls 0..total-1 from ``concurrency`` threads; time each and the whole."""
    next_index = iter(range(total))
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[BaseException] = []

    def worker() -> None:
        mine: list[float] = []
        while True:
            with lock:
                index = next(next_index, None)
            if index is None or errors:
                break
            started = time.perf_counter()
            try:
                call(index)
            except BaseException as error:
                errors.append(error)
                break
            mine.append((time.perf_counter() - started) * 1000)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return LoadFigures(len(latencies), elapsed, latencies)


Metadata = tuple[tuple[str, str | bytes], ...]


def _identity(data: bytes) -> bytes:
    return data


def raw_method(channel: grpc.Channel, path: str) -> grpc.UnaryUnaryMultiCallable[bytes, bytes]:
    """A method taking and answering bytes: the client costs the same against the product
    and against the floor."""
    return channel.unary_unary(path, _identity, _identity)


def raw_caller(
    channel: grpc.Channel, path: str, requests: Sequence[bytes], metadata: Metadata
) -> Callable[[int], None]:
    """Send pre-serialised requests in turn."""
    method = raw_method(channel, path)

    def call(index: int) -> None:
        method(requests[index % len(requests)], metadata=metadata, timeout=60)

    return call
