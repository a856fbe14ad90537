"""``python -m bench.breakdown [--runs N]``: where one circuit's approve-to-active time goes.

Runs ``python -m services.provisioning`` as the provisioning workload does, with its spans
exported to its log (``OTEL_TRACES_EXPORTER=console``), approves N single circuits one after
another, then joins, per circuit, what the stack recorded on the way: the outbox rows
(written, marked sent), the Kafka records' timestamps (the relay's send), the inbox rows
(consumed), the agents' step spans and their NETCONF spans, and the bench's own send and
receive. Prints the median of each hop along the critical path (the later side of each
round trip), in ms, beside the floor (raw ncclient, as the provisioning workload measures
it) and the idle service's CPU. Not part of ``python -m bench``: exporting spans costs time
of its own, so totals run higher than the bench's; the shares are what this is for.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from bench.provisioning import (
    PRODUCT_IF,
    TOPIC_SUFFIX,
    Product,
    Routers,
    circuit,
    measure_floor,
    provisioning_service,
)
from bench.stack import postgres_database
from devstack.kafka import start_broker
from devstack.netconf import start_routers
from devstack.stack import EDGE_ROUTERS
from idc.events.v1 import provisioning_pb2
from services.common.events.envelope import HEADER_EVENT_ID
from services.common.events.topics import (
    CIRCUIT_EVENTS,
    ORDER_EVENTS,
    PROVISIONING_COMMANDS_CQ,
    PROVISIONING_COMMANDS_SG,
    PROVISIONING_REPLIES,
)
from services.provisioning.domain.circuits import Operation

TOPICS = [t + TOPIC_SUFFIX for t in (ORDER_EVENTS, PROVISIONING_COMMANDS_SG,
                                      PROVISIONING_COMMANDS_CQ, PROVISIONING_REPLIES,
                                      CIRCUIT_EVENTS)]
ACTIONS = {provisioning_pb2.PROVISIONING_ACTION_PREPARE: "prepare",
           provisioning_pb2.PROVISIONING_ACTION_CONFIRM: "confirm"}


@dataclass
class Sample:
    circuit_id: str
    event_id: str
    sent: float
    received: float


@dataclass
class Recorded:
    """What the stack recorded, by event id (times in epoch seconds)."""

    written: dict[str, float] = field(default_factory=dict)
    marked_sent: dict[str, float] = field(default_factory=dict)
    published: dict[str, float] = field(default_factory=dict)
    # (event id, consumer group) -> inbox insert
    consumed: dict[tuple[str, str], float] = field(default_factory=dict)
    # circuit id -> [(event id, topic, decoded)] in outbox order
    events: dict[str, list[tuple[str, str, Any]]] = field(default_factory=dict)
    queued: dict[str, float] = field(default_factory=dict)
    spans: list[dict[str, Any]] = field(default_factory=list)


def _epoch(moment: datetime | str) -> float:
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    return moment.timestamp()


def read_database(url: str, recorded: Recorded) -> None:
    with psycopg.connect(url) as db:
        for event_id, topic, key, event_type, payload, created, sent in db.execute(
            "SELECT event_id, topic, key, event_type, payload, created_at, sent_at "
            "FROM outbox ORDER BY id"
        ):
            recorded.written[event_id] = _epoch(created)
            if sent is not None:
                recorded.marked_sent[event_id] = _epoch(sent)
            decoded: Any = None
            if event_type.endswith("ProvisioningCommand"):
                decoded = provisioning_pb2.ProvisioningCommand.FromString(payload)
            elif event_type.endswith("ProvisioningReply"):
                decoded = provisioning_pb2.ProvisioningReply.FromString(payload)
            else:
                decoded = event_type.rsplit(".", 1)[-1]
            recorded.events.setdefault(bytes(key).decode(), []).append((event_id, topic, decoded))
        for event_id, group, processed in db.execute(
            "SELECT event_id, consumer_group, processed_at FROM inbox"
        ):
            recorded.consumed[(event_id, group)] = _epoch(processed)
        for event_id, received in db.execute("SELECT event_id, received_at FROM agent_commands"):
            recorded.queued[event_id] = _epoch(received)


def read_topics(bootstrap: str, recorded: Recorded) -> None:
    """Each record's timestamp (CreateTime: the producer's send) by event id."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, consumer_timeout_ms=2000)
    try:
        partitions = [TopicPartition(t, p) for t in TOPICS
                      for p in consumer.partitions_for_topic(t) or ()]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        for record in consumer:
            headers = dict(record.headers or [])
            event_id = headers.get(HEADER_EVENT_ID, b"").decode()
            if event_id:
                recorded.published[event_id] = record.timestamp / 1000
    finally:
        consumer.close()


def read_spans(log: Path, recorded: Recorded) -> None:
    """The console exporter's JSON spans, among the log's other lines."""
    text = log.read_text(errors="replace")
    decoder = json.JSONDecoder()
    at = text.find("{")
    while at != -1:
        try:
            span, end = decoder.raw_decode(text, at)
        except json.JSONDecodeError:
            at = text.find("{", at + 1)
            continue
        if isinstance(span, dict) and "start_time" in span:
            recorded.spans.append(span)
        at = text.find("{", end)


COORDINATOR = "idc-provisioning-coordinator"


def _publish(out: dict[str, float], label: str, event_id: str, recorded: Recorded,
             written: float) -> float:
    """The outbox's part of a hop: from the row written to the broker's ack; returns the
    send time."""
    published = recorded.published[event_id]
    out[f"{label} relay: commit, wake, claim (written -> send)"] = published - written
    out[f"{label} relay: publish ack, mark (send -> marked)"] = (
        recorded.marked_sent[event_id] - published)
    return published


def _step(out: dict[str, float], label: str, step: dict[str, Any],
          children: dict[str, list[dict[str, Any]]]) -> tuple[float, float]:
    """The agent's step span and its NETCONF operations; returns its start and end."""
    start, end = _epoch(step["start_time"]), _epoch(step["end_time"])
    netconf = 0.0
    for child in children[step["context"]["span_id"]]:
        if not child["name"].startswith("netconf "):
            continue  # the coordinator's consumer span of the reply
        name = f"{label} step: netconf {child['attributes'].get('idc.netconf.operation')}"
        took = _epoch(child["end_time"]) - _epoch(child["start_time"])
        out[name] = out.get(name, 0.0) + took
        netconf += took
    out[f"{label} step: all"] = end - start
    out[f"{label} step: other than NETCONF (DB, rendering)"] = end - start - netconf
    return start, end


def _round(out: dict[str, float], number: int, action: str, sample: Sample,
           recorded: Recorded, children: dict[str, list[dict[str, Any]]], t: float) -> float:
    """One round trip coordinator -> both agents -> coordinator, along the side whose reply
    reached the coordinator last; ``t`` is when the coordinator consumed what started it.
    Returns when it consumed that last reply."""
    events = recorded.events[sample.circuit_id]
    replies = {c.command_event_id: e for e, _, c in events
               if isinstance(c, provisioning_pb2.ProvisioningReply)}
    legs = sorted(
        (recorded.consumed[(replies[e], COORDINATOR)], e, c) for e, _, c in events
        if isinstance(c, provisioning_pb2.ProvisioningCommand) and ACTIONS.get(c.action) == action
    )
    last, event_id, command = legs[-1]
    label = f"{number} {action}"
    written = recorded.written[event_id]
    out[f"{label} coordinator: consumed -> command written"] = written - t
    published = _publish(out, label, event_id, recorded, written)
    consumed = recorded.consumed[(event_id, f"idc-provisioning-agent-{command.target_telco_id}")]
    out[f"{label} agent consumer: send -> inbox"] = consumed - published
    queued = recorded.queued[event_id]
    out[f"{label} agent consumer: inbox -> queued row"] = queued - consumed
    step = min(
        (s for s in recorded.spans
         if s["name"] == f"agent {action} {command.target_router_name}"
         and s["attributes"].get("idc.circuit.id") == sample.circuit_id),
        key=lambda s: str(s["start_time"]),
    )
    start, end = _step(out, label, step, children)
    out[f"{label} agent: queued row -> step starts (commit, wake, reads)"] = start - queued
    reply_written = recorded.written[replies[event_id]]
    out[f"{label} step: reply written -> step ends (commit)"] = end - reply_written
    published = _publish(out, f"{label} reply", replies[event_id], recorded, reply_written)
    out[f"{label} reply coordinator consumer: send -> inbox"] = last - published
    out[f"{label} sides apart (first reply consumed -> last)"] = last - legs[0][0]
    return last


def hops(sample: Sample, recorded: Recorded) -> dict[str, float]:
    """The critical path of one circuit, hop by hop (ms)."""
    out: dict[str, float] = {}
    t = recorded.consumed[(sample.event_id, COORDINATOR)]
    out["1 OrderApproved: bench send -> coordinator inbox"] = t - sample.sent
    children: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for span in recorded.spans:
        if span.get("parent_id"):
            children[span["parent_id"]].append(span)
    t = _round(out, 2, "prepare", sample, recorded, children, t)
    t = _round(out, 3, "confirm", sample, recorded, children, t)
    activated = next(e for e, _, c in recorded.events[sample.circuit_id]
                     if c == "CircuitActivated")
    written = recorded.written[activated]
    out["4 coordinator: consumed -> CircuitActivated written"] = written - t
    published = _publish(out, "4", activated, recorded, written)
    out["4 bench consumer: send -> received"] = sample.received - published
    out["total"] = sample.received - sample.sent
    return {name: value * 1000 for name, value in out.items()}


def measure(product: Product, runs: int) -> Iterator[Sample]:
    vlans = iter(range(100, 4000))
    for _ in range(runs):
        params = circuit(next(vlans), PRODUCT_IF)
        sent = time.time()
        event_id = product.approve(params)
        product.producer.flush()
        if product.wait_outcomes({params.circuit_id}, timeout=120):
            raise RuntimeError(f"{params.circuit_id} failed: see provisioning.log")
        yield Sample(params.circuit_id, event_id, sent, time.time())


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Breakdown:
    hops: list[dict[str, float]]
    floor_ms: list[float]
    idle_cpu: float  # share of one core the idle service uses


def run(runs: int, workdir: Path, idle_s: float = 5.0) -> Breakdown:
    recorded = Recorded()
    with start_broker(workdir / "kafka") as broker, \
            start_routers(list(EDGE_ROUTERS), workdir / "routers") as fleet, \
            postgres_database("breakdown") as url:
        routers = Routers(fleet)
        try:
            floor_ms, _, done = measure_floor(routers, runs, 0)
            routers.apply(Operation.DELETE, done)
        finally:
            routers.close()
        with provisioning_service(workdir, broker.bootstrap, fleet, url,
                                  {"OTEL_TRACES_EXPORTER": "console"}) as service:
            product = Product(broker.bootstrap)
            try:
                samples = list(measure(product, runs + 1))[1:]  # the first opens sessions
                before = cpu_seconds(service.proc.pid)
                time.sleep(idle_s)
                idle_cpu = (cpu_seconds(service.proc.pid) - before) / idle_s
            finally:
                product.close()
        read_database(url, recorded)
        read_topics(broker.bootstrap, recorded)
    read_spans(workdir / "provisioning.log", recorded)
    return Breakdown([hops(sample, recorded) for sample in samples], floor_ms, idle_cpu)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.breakdown", description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="idc-breakdown-") as tmp:
        breakdown = run(args.runs, Path(tmp))
    rows = breakdown.hops
    print(f"floor (raw ncclient) p50 {statistics.median(breakdown.floor_ms):.1f} ms; idle "
          f"service CPU {breakdown.idle_cpu:.0%} of a core")
    names = list(dict.fromkeys(name for row in rows for name in row))  # in path order
    print(f"{'hop (critical path), ms':<58} {'p50':>7} {'min':>7} {'max':>7}")
    for name in names:
        values = [row.get(name, 0.0) for row in rows]
        print(f"{name:<58} {statistics.median(values):7.1f} {min(values):7.1f} "
              f"{max(values):7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
