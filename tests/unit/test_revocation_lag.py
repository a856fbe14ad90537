"""The revocation reader's lag gauge: seconds since it last reached the topic's end offsets
(since its start while it never has), the same figure its stale alarm compares with the
bound; registered while the reader runs. (Against a real broker:
tests/integration/test_tokens.py.)"""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
from kafka.structs import TopicPartition

from services.common import metric_catalogue as catalogue
from services.common import revocations
from services.common.config import KafkaSettings
from services.common.metric_catalogue import MetricSpec
from services.common.metrics import ReadingSource, Registration, observe
from services.common.revocations import RevocationReader
from services.common.tokens import RevokedTokens

TOPIC = "idc.token.revocations"
PARTITIONS = [TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)]


class Consumer:
    """The two calls the catch-up check makes, on fixed positions and end offsets."""

    def __init__(self, positions: dict[TopicPartition, int]) -> None:
        self.positions = positions
        self.ends = {PARTITIONS[0]: 4, PARTITIONS[1]: 2}

    def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.ends[tp] for tp in partitions}

    def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    now = SimpleNamespace(t=1000.0)
    monkeypatch.setattr(revocations, "time", SimpleNamespace(monotonic=lambda: now.t))
    return now


def lag(reader: RevocationReader) -> float:
    [reading] = reader._lag()
    return reading.value


def test_the_lag_counts_from_the_start_then_from_the_last_catch_up(
        clock: SimpleNamespace) -> None:
    reader = RevocationReader(RevokedTokens(), KafkaSettings(), stale_s=30, topic=TOPIC)
    clock.t += 12
    assert lag(reader) == 12.0 and reader._stale() == []

    behind = Consumer({PARTITIONS[0]: 4, PARTITIONS[1]: 1})
    reader._check_caught_up(behind, set(PARTITIONS))
    clock.t += 25
    assert lag(reader) == 37.0, "one partition short of its end is not caught up"
    assert "never caught up" in reader._stale()[0]

    caught_up = Consumer({PARTITIONS[0]: 4, PARTITIONS[1]: 2})
    reader._check_caught_up(caught_up, set(PARTITIONS))
    assert lag(reader) == 0.0 and reader._stale() == []
    clock.t += 31
    assert lag(reader) == 31.0
    assert "not caught up" in reader._stale()[0] and "for 31 s" in reader._stale()[0]


def test_the_gauge_is_reported_while_the_reader_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    registered: list[tuple[MetricSpec, Registration]] = []

    def recording_observe(spec: MetricSpec, source: ReadingSource) -> Registration:
        registration = observe(spec, source)
        registered.append((spec, registration))
        return registration

    monkeypatch.setattr(revocations, "observe", recording_observe)
    # A reader whose broker never answers: run() registers, then keeps retrying.
    monkeypatch.setattr(RevocationReader, "_read", lambda self, stop: stop.wait(5))
    reader = RevocationReader(RevokedTokens(), KafkaSettings(), stale_s=30, topic=TOPIC)
    stop = threading.Event()
    thread = threading.Thread(target=reader.run, args=(stop,))
    thread.start()
    try:
        for _ in range(500):
            if registered:
                break
            stop.wait(0.01)
        assert [spec for spec, _ in registered] == [catalogue.TOKEN_REVOCATIONS_LAG]
        assert catalogue.TOKEN_REVOCATIONS_LAG.prometheus_name == \
            "idc_token_revocations_lag_seconds"
    finally:
        stop.set()
        thread.join(10)
        reader.close()
    [(_, registration)] = registered
    assert registration.source_id not in registration.gauge._sources, "close() stops reporting"
