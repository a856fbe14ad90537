"""Instruments made from the metric catalogue, and the process's Prometheus endpoint.

Counters and histograms are recorded where the work happens. Gauges are read when
Prometheus scrapes: a service registers a *reading* (a function returning the current
values) with :func:`observe`; several readings of one gauge (two consumers in one process)
are reported together. ``IDC_METRICS_LISTEN`` (host:port) turns the endpoint on; unset, the
instruments record into a provider nobody reads, at no cost worth measuring.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Counter, Histogram, Observation
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

from services.common.metric_catalogue import MetricKind, MetricSpec

log = logging.getLogger(__name__)

_METER = "idc"
# Seconds, from a fast RPC to a slow saga step or billing run.
DURATION_BUCKETS_S = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
)

Attributes = Mapping[str, str | int]


@dataclass(frozen=True)
class Reading:
    value: float
    attributes: Attributes


ReadingSource = Callable[[], Iterable[Reading]]


def histogram_views() -> list[View]:
    """Every histogram in seconds with :data:`DURATION_BUCKETS_S`."""
    return [
        View(
            instrument_type=Histogram,
            aggregation=ExplicitBucketHistogramAggregation(DURATION_BUCKETS_S),
        )
    ]


def _meter() -> metrics.Meter:
    return metrics.get_meter(_METER)


def _check(spec: MetricSpec, kind: MetricKind) -> None:
    if spec.kind is not kind:
        raise TypeError(f"{spec.name} is a {spec.kind.value}, not a {kind.value}")


def counter(spec: MetricSpec) -> Counter:
    _check(spec, MetricKind.COUNTER)
    return _meter().create_counter(spec.name, unit=spec.unit, description=spec.description)


def histogram(spec: MetricSpec) -> Histogram:
    _check(spec, MetricKind.HISTOGRAM)
    return _meter().create_histogram(spec.name, unit=spec.unit, description=spec.description)


class _Gauge:
    """One observable gauge with the readings registered for it."""

    def __init__(self, spec: MetricSpec) -> None:
        self._sources: dict[int, ReadingSource] = {}
        self._lock = threading.Lock()
        self._next_id = 0
        self._spec = spec
        _meter().create_observable_gauge(
            spec.name, callbacks=[self._observe], unit=spec.unit, description=spec.description
        )

    def add(self, source: ReadingSource) -> int:
        with self._lock:
            self._next_id += 1
            self._sources[self._next_id] = source
            return self._next_id

    def remove(self, source_id: int) -> None:
        with self._lock:
            self._sources.pop(source_id, None)

    def _observe(self, _options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            sources = list(self._sources.values())
        observations: list[Observation] = []
        for source in sources:
            try:
                observations.extend(Observation(r.value, dict(r.attributes)) for r in source())
            except Exception as error:
                # One failing reading (a database down) must not hide the other metrics.
                log.warning("cannot read metric %s: %s", self._spec.name, error)
        return observations


_gauges: dict[str, _Gauge] = {}
_gauges_lock = threading.Lock()


@dataclass(frozen=True)
class Registration:
    """Returned by :func:`observe`; ``cancel`` stops reporting the reading."""

    gauge: _Gauge
    source_id: int

    def cancel(self) -> None:
        self.gauge.remove(self.source_id)


def observe(spec: MetricSpec, source: ReadingSource) -> Registration:
    """Report ``source``'s readings as gauge ``spec`` at every scrape."""
    _check(spec, MetricKind.GAUGE)
    with _gauges_lock:
        gauge = _gauges.get(spec.name)
        if gauge is None:
            gauge = _gauges[spec.name] = _Gauge(spec)
    return Registration(gauge, gauge.add(source))


def one(value: float, **attributes: Any) -> list[Reading]:
    """A reading list of one value (the usual shape of a gauge without attributes)."""
    return [Reading(value, attributes)]


def after_commit(session: Session, action: Callable[[], None]) -> None:
    """Run ``action`` once ``session``'s transaction has committed (never on a rollback), so
    a handler rolled back and run again is counted once."""
    settled = False

    def committed(_session: Session) -> None:
        nonlocal settled
        if not settled:
            settled = True
            action()

    def rolled_back(_session: Session, previous: SessionTransaction) -> None:
        nonlocal settled
        # A savepoint rolled back inside the transaction does not undo the action.
        if not previous.nested:
            settled = True

    event.listen(session, "after_commit", committed, once=True)
    # Not ``once``: a savepoint's rollback must not use it up. Sessions here live for one
    # transaction, so the settled listener goes with its session.
    event.listen(session, "after_soft_rollback", rolled_back)
