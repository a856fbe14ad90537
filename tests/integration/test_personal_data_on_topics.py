"""What crosses the border: after the whole story of ``make demo`` (order, both approvals,
ACTIVE, traffic, a bandwidth change, the month's billing run, the disconnect) on a fresh
stack, every record of every topic on the broker, dead-letter topics included, is read
from the beginning and its key, value and headers are searched, as raw bytes and as text,
for the contact, the customer's free text, the principals' names, the bearer tokens and the
contact key set. None is there, and every topic the story writes holds the records it must
(so an empty read cannot pass). The routers' running configuration, read back through
GetCircuitConfig during the story, holds no customer text either."""

from __future__ import annotations

import base64
import io
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kafka import KafkaConsumer
from kafka.structs import TopicPartition
from rich.console import Console

from devstack.demo import (
    CONTACT,
    DESCRIPTION,
    REFERENCE,
    Demo,
    bill_the_month,
    disconnect,
    move_traffic,
    order_and_activate,
    upgrade,
)
from devstack.run import RunningStack, StackOptions, start_everything
from idc.events.v1 import order_pb2 as order_events
from services.common.events.topics import (
    ALL_TOPICS,
    CIRCUIT_EVENTS,
    ORDER_EVENTS,
    PROVISIONING_COMMANDS_CQ,
    PROVISIONING_COMMANDS_SG,
    PROVISIONING_REPLIES,
    USAGE_SAMPLES,
)
from services.order.contacts import ContactKeySet

pytestmark = pytest.mark.integration

KEYS = ContactKeySet.generate("scan-1")
# The customer's reasons for the change and the disconnect (devstack/demo.py).
REASONS = ("more replication traffic", "project finished")
# What each topic must hold after the story, by event type, at least.
EXPECTED: dict[str, dict[str, int]] = {
    ORDER_EVENTS: {"OrderCreated": 3, "OrderApproved": 3, "OrderCompleted": 3},
    CIRCUIT_EVENTS: {"ProvisioningPlanned": 3, "CircuitActivated": 1, "CircuitModified": 1,
                     "CircuitDisconnected": 1},
    PROVISIONING_COMMANDS_SG: {"ProvisioningCommand": 6},
    PROVISIONING_COMMANDS_CQ: {"ProvisioningCommand": 6},
    PROVISIONING_REPLIES: {"ProvisioningReply": 6},
    USAGE_SAMPLES: {"UsageSample": 2},
}


@dataclass(frozen=True)
class Record:
    topic: str
    where: str
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...]

    @property
    def event_type(self) -> str:
        return dict(self.headers).get("event-type", b"").decode().rsplit(".", 1)[-1]

    def parts(self) -> Iterator[tuple[str, bytes]]:
        yield "key", self.key
        yield "value", self.value
        for name, value in self.headers:
            yield f"header {name}", name.encode() + b"=" + value


@dataclass
class Story:
    stack: RunningStack
    directory: Path
    circuit_id: str
    router_configs: dict[str, str]
    topics: list[str]
    records: list[Record]


def read_every_topic(bootstrap: str) -> tuple[list[str], list[Record]]:
    """Every topic the broker lists and every record on it, from the beginning."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             auto_offset_reset="earliest", consumer_timeout_ms=3000)
    try:
        topics = sorted(consumer.topics())
        partitions = [TopicPartition(topic, p) for topic in topics
                      for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records = [Record(r.topic, f"{r.topic} {r.partition}:{r.offset}", r.key or b"",
                          r.value or b"", tuple((n, v or b"") for n, v in r.headers))
                   for r in consumer]
        return topics, records
    finally:
        consumer.close()


def shortfalls(records: list[Record]) -> list[str]:
    counts = Counter((r.topic, r.event_type) for r in records)
    return [f"{topic}: {counts[topic, kind]} {kind}, expected at least {least}"
            for topic, kinds in EXPECTED.items() for kind, least in kinds.items()
            if counts[topic, kind] < least]


def router_config(demo: Demo, circuit_id: str) -> str:
    reply = demo.quietly("ops-sg", "ops", "config", circuit_id)
    return "\n".join(f"{c.device_name}: {c.running_config}" for c in reply.configs)


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    directory = tmp_path_factory.mktemp("story")
    options = StackOptions(var_dir=directory, fixed_ports=False, fast=True, meter_interval_s=2,
                           env={"IDC_ORDER_CONTACT_KEYS": KEYS.to_json()})
    with start_everything(options) as stack:
        demo = Demo(stack, Console(file=io.StringIO(), width=120), directory)
        circuit_id, since = order_and_activate(demo)
        configs = {"active": router_config(demo, circuit_id)}
        move_traffic(demo, circuit_id, since)
        upgrade(demo, circuit_id)
        configs["modified"] = router_config(demo, circuit_id)
        bill_the_month(demo)
        disconnect(demo, circuit_id)
        # The last outbox rows reach the broker a moment after the story's last step.
        deadline = time.monotonic() + 60
        while True:
            topics, records = read_every_topic(stack.devstack.broker.bootstrap)
            if not shortfalls(records) or time.monotonic() > deadline:
                break
        yield Story(stack, directory, circuit_id, configs, topics, records)


def test_the_scan_reads_every_topic_the_story_writes(story: Story) -> None:
    assert set(ALL_TOPICS) <= set(story.topics), "a topic (or its dead letters) is missing"
    assert shortfalls(story.records) == []
    mine = [r for r in story.records if r.key == story.circuit_id.encode()]
    assert {r.topic for r in mine} >= set(EXPECTED), "the story's circuit is not on a topic"


def needles(story: Story) -> dict[str, bytes]:
    """Each thing that must not cross the border, by what it is."""
    _, name, email, phone = CONTACT.split(",")
    found: dict[str, bytes] = {
        "contact name": name.encode(), "contact e-mail": email.encode(),
        "contact phone": phone.encode(), "description": DESCRIPTION.encode(),
        "customer reference": REFERENCE.encode(),
        **{f"reason {i}": reason.encode() for i, reason in enumerate(REASONS)},
    }
    for name_, token in story.stack.tokens.items():
        found[f"subject of {name_}"] = token.subject.encode()
        found[f"token of {name_}"] = token.token.encode()
    for key_id, key in KEYS.keys.items():
        found[f"contact key {key_id}"] = key
        found[f"contact key {key_id} (base64)"] = base64.b64encode(key)
        found[f"contact key {key_id} (base64url)"] = base64.urlsafe_b64encode(key).rstrip(b"=")
        found[f"contact key {key_id} (hex)"] = key.hex().encode()
    key_files = [p for p in (story.directory / "devstack").rglob("*ed25519*")
                 if not p.name.endswith(".pub")]
    assert key_files, "the devstack's SSH keys moved; the check would check nothing"
    for path in key_files:
        for number, line in enumerate(path.read_text().splitlines()[1:-1]):
            found[f"{path.name} line {number}"] = line.encode()
    return found


def _as_text(needle: bytes) -> str | None:
    """The needle as text to look for case-insensitively; None for binary (raw key) ones."""
    try:
        return needle.decode("utf-8").casefold()
    except UnicodeDecodeError:
        return None


def found(records: list[Record], wanted: dict[str, bytes]) -> list[str]:
    """Where each of ``wanted`` occurs in a key, value or header, as bytes or as text."""
    searched = [(what, needle, _as_text(needle)) for what, needle in wanted.items()]
    places = []
    for record in records:
        for part, raw in record.parts():
            text = raw.decode("utf-8", errors="replace").casefold()
            for what, needle, as_text in searched:
                if needle in raw or (as_text is not None and as_text in text):
                    places.append(f"{what} in the {part} of {record.where} ({record.event_type})")
    return places


def test_no_personal_data_token_or_key_on_any_topic(story: Story) -> None:
    # The search finds what is there: the ids the events do carry, in any case.
    tenant = story.stack.tokens["customer"].tenant or ""
    assert found(story.records, {"description by ids": f"idc {tenant}".upper().encode()})
    assert found(story.records, {"circuit id": story.circuit_id.encode()})
    assert found(story.records, needles(story)) == []


def test_events_name_principals_by_opaque_ids(story: Story) -> None:
    subjects = {t.subject for t in story.stack.tokens.values()}
    approvals = [r for r in story.records if r.topic == ORDER_EVENTS
                 and r.event_type == "OrderApproved" and r.key == story.circuit_id.encode()]
    assert len(approvals) >= 3
    approvers = {a.approver for r in approvals
                 for a in order_events.OrderApproved.FromString(r.value).approvals}
    assert len(approvers) == 2 and not approvers & subjects
    assert all(approver and "@" not in approver for approver in approvers)


def test_the_routers_carry_ids_only(story: Story) -> None:
    for when, config in story.router_configs.items():
        assert "sg-edge-1" in config and "cq-edge-1" in config, when
        assert f"{story.circuit_id} IDC " in config, when
        for text in (DESCRIPTION, REFERENCE, *REASONS, *CONTACT.split(",")[1:]):
            assert text not in config, f"{text!r} on a router ({when})"
