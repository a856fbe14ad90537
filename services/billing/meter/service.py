"""The meter's moving parts around the counter arithmetic of ``domain``:

* :class:`CircuitEventHandler` keeps the set of metered circuit ends from the circuit
  lifecycle events (activated or modified: meter both ends, each on its own router;
  disconnected: stop);
* :class:`Meter` runs one poll round: reads every metered circuit's counters router by
  router, turns each reading into samples (``domain.advance``) and, in ONE transaction per
  router, stages the UsageSample events in the outbox and stores the new baselines;
* :class:`MeterWorker` polls at every interval boundary.

A router that cannot be read is skipped for that round: its circuits get a gap; the next
successful reading publishes the counter delta across it as one gap volume, not samples.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.orm import Session, sessionmaker

from idc.events.v1 import circuit_pb2, common_pb2, usage_pb2
from services.billing.meter.domain import IntervalUsage, advance, slot_start, subinterface_name
from services.billing.meter.source import CounterSource, CounterSourceError
from services.billing.meter.store import MeteredCircuit, MeterStore
from services.common import metric_catalogue as catalogue
from services.common.db import transaction
from services.common.events import outbox
from services.common.events.catalog import circuit_topic_registry
from services.common.events.envelope import Envelope
from services.common.events.topics import USAGE_SAMPLES
from services.common.grpc_server import Worker
from services.common.metrics import counter

log = logging.getLogger(__name__)
_POLLS = counter(catalogue.METER_POLLS)

#: Every event type on idc.circuit.events; the meter acts on three and ignores the rest.
# Everything on idc.circuit.events decodes; plans and failures are ignored, not dead-lettered.
CIRCUIT_EVENT_REGISTRY = circuit_topic_registry()


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def metered_end(parameters: common_pb2.CircuitParameters, side: int) -> common_pb2.CircuitEndpoint:
    """The endpoint of ``parameters`` on ``side`` (A-end Singapore, Z-end Chongqing)."""
    for endpoint in (parameters.a_end, parameters.z_end):
        if endpoint.side == side:
            return endpoint
    raise ValueError(
        f"circuit {parameters.circuit_id} has no endpoint on side {side} "
        f"(a_end side {parameters.a_end.side}, z_end side {parameters.z_end.side})"
    )


class CircuitEventHandler:
    """``EventConsumer`` handler for idc.circuit.events; runs in the consumer's transaction."""

    def __init__(
        self,
        store: MeterStore,
        sides: Sequence[int],
        clock: Callable[[], datetime] = _utcnow,
        routers: Collection[str] | None = None,
    ) -> None:
        self._store = store
        self._sides = tuple(sides)
        self._clock = clock
        # The routers the meter can read (None: any). A sandbox circuit on another router is
        # not metered: a deployment that runs its sandbox routers without counters (k8s)
        # would otherwise record a gap for it every interval. A real circuit always is.
        self._routers = None if routers is None else frozenset(routers)

    def __call__(self, session: Session, event: Message, envelope: Envelope) -> None:
        if isinstance(event, circuit_pb2.CircuitActivated | circuit_pb2.CircuitModified):
            # Every end is checked first, so a bad event goes to the DLQ whole, not the poller.
            ends = [metered_end(event.circuit, side) for side in self._sides]
            for endpoint in ends:
                subinterface_name(endpoint.interface_name, endpoint.vlan_id)
            for side, endpoint in zip(self._sides, ends, strict=True):
                if (event.circuit.sandbox and self._routers is not None
                        and endpoint.router_name not in self._routers):
                    log.info("not metering sandbox circuit %s: the meter has no access to %s",
                             event.circuit_id, endpoint.router_name)
                    continue
                self._store.put_circuit(
                    session,
                    MeteredCircuit(
                        circuit_id=event.circuit_id,
                        tenant_id=event.tenant_id,
                        side=side,
                        router_name=endpoint.router_name,
                        interface_name=endpoint.interface_name,
                        vlan_id=endpoint.vlan_id,
                    ),
                    self._clock(),
                )
                log.info("metering circuit %s on %s", event.circuit_id, endpoint.router_name)
        elif isinstance(event, circuit_pb2.CircuitDisconnected):
            self._store.remove_circuit(session, event.circuit_id)
            log.info("stopped metering circuit %s", event.circuit_id)


def usage_sample(
    circuit: MeteredCircuit,
    counter_interface: str,
    usage: IntervalUsage,
    interval_s: int,
    read_at: datetime,
    now: datetime,
) -> usage_pb2.UsageSample:
    return usage_pb2.UsageSample(
        event_id=str(uuid.uuid4()),
        occurred_at=_timestamp(now),
        circuit_id=circuit.circuit_id,
        tenant_id=circuit.tenant_id,
        interval_start_time=_timestamp(usage.interval_start),
        interval_seconds=interval_s * usage.intervals,
        bytes_in=usage.bytes_in,
        bytes_out=usage.bytes_out,
        router_name=circuit.router_name,
        side=circuit.side,  # type: ignore[arg-type]
        interface_name=counter_interface,
        read_time=_timestamp(read_at),
        valid=usage.valid,
        invalid_reason=usage.invalid_reason,
        gap_volume=usage.gap_volume,
        intervals_missed=usage.intervals if usage.gap_volume else 0,
    )


class Meter:
    """One poll round over every metered circuit; returns the samples staged."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        source: CounterSource,
        interval_s: int,
        *,
        store: MeterStore | None = None,
        clock: Callable[[], datetime] = _utcnow,
        topic: str = USAGE_SAMPLES,
    ) -> None:
        self._session_factory = session_factory
        self._source = source
        self._interval_s = interval_s
        self._store = store or MeterStore()
        self._clock = clock
        self._topic = topic

    def poll_once(self) -> int:
        with transaction(self._session_factory) as session:
            circuits = self._store.active_circuits(session)
        by_router: dict[str, list[MeteredCircuit]] = defaultdict(list)
        for circuit in circuits:
            by_router[circuit.router_name].append(circuit)
        staged = 0
        for router_name, router_circuits in sorted(by_router.items()):
            staged += self._poll_router(router_name, router_circuits)
        return staged

    def _poll_router(self, router_name: str, circuits: list[MeteredCircuit]) -> int:
        names = {c.circuit_id: subinterface_name(c.interface_name, c.vlan_id) for c in circuits}
        try:
            readings = self._source.read(router_name, sorted(set(names.values())))
        except CounterSourceError as exc:
            log.warning(
                "poll of %s skipped (a gap for %d circuits): %s", router_name, len(circuits), exc
            )
            _POLLS.add(1, {"router": router_name, "result": "unreachable"})
            return 0
        _POLLS.add(1, {"router": router_name, "result": "read"})
        staged = 0
        now = self._clock()
        with transaction(self._session_factory) as session:
            for circuit in circuits:
                counter_interface = names[circuit.circuit_id]
                reading = readings.get(counter_interface)
                if reading is None:
                    log.warning(
                        "%s does not report counters of %s (circuit %s): a gap",
                        router_name,
                        counter_interface,
                        circuit.circuit_id,
                    )
                    continue
                # The circuit may have been disconnected while the router was read.
                current = self._store.get_circuit(session, circuit.circuit_id, circuit.side)
                if current != circuit:
                    continue
                baseline = self._store.baseline(session, circuit.circuit_id, router_name)
                result = advance(baseline, reading, self._interval_s)
                for usage in result.samples:
                    sample = usage_sample(
                        circuit, counter_interface, usage, self._interval_s, reading.read_at, now
                    )
                    outbox.add(
                        session, self._topic, circuit.circuit_id, sample, event_id=sample.event_id
                    )
                    staged += 1
                if result.baseline is not baseline:
                    self._store.put_baseline(
                        session, circuit.circuit_id, router_name, counter_interface, result.baseline
                    )
        return staged


class MeterWorker(Worker):
    """Polls at every interval boundary (never mid-interval: a reading belongs to the slot
    it is taken in, so an off-boundary poll would shift bytes between intervals)."""

    name = "meter"

    def __init__(
        self,
        meter: Meter,
        source: CounterSource,
        interval_s: int,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._meter = meter
        self._source = source
        self._interval_s = interval_s
        self._clock = clock

    def run(self, stop: threading.Event) -> None:
        while True:
            now = self._clock()
            boundary = slot_start(now, self._interval_s).timestamp() + self._interval_s
            # Event.wait may return a little early by the wall clock: wait out the rest.
            while (remaining := boundary - self._clock().timestamp()) > 0:
                if stop.wait(remaining):
                    return
            if stop.is_set():
                return
            try:
                staged = self._meter.poll_once()
            except Exception:
                log.exception("meter poll round failed; the next round retries")
            else:
                log.debug("meter poll round staged %d samples", staged)

    def close(self) -> None:
        self._source.close()
