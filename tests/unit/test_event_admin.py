"""The event admin use cases (dead letters, replays, republishing) with in-memory fakes."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from rich.console import Console

from idc.ops.v1 import event_admin_service_pb2 as pb
from services.cli import events, main
from services.common.auth import Principal, Role, bind_principal, reset_principal
from services.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from services.common.events.admin import (
    DeadLetter,
    DeadLetterRef,
    EventAdmin,
    RawRecord,
    Replay,
    RepublishRequest,
    SentWindow,
)
from services.common.events.admin_servicer import EventAdminServicer
from services.common.events.replays import HEADER_REPLAY_ID, _outbox_headers
from services.common.events.tables import OutboxRow

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
TOPIC = "idc.order.events"
DLQ = TOPIC + ".dlq"


def dead_record(offset: int, event_id: str = "e-1", *, partition: int = 0,
                required: bool = True) -> RawRecord:
    own = [(b"event-id", event_id), (b"event-type", "idc.events.v1.OrderApproved"),
           (b"schema-version", "1")] if required else []
    headers = [(name.decode(), value.encode()) for name, value in own] + [
        ("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ("dlq-error", b"ValueError: cannot price circuit\ntraceback"),
        ("dlq-error-type", b"ValueError"),
        ("dlq-original-topic", TOPIC.encode()),
        ("dlq-original-partition", b"2"),
        ("dlq-original-offset", b"41"),
        ("dlq-consumer-group", b"provisioning"),
        ("dlq-failed-at", NOW.isoformat().encode()),
    ]
    return RawRecord(partition, offset, b"circuit-1", b"\x0a\x01x", tuple(headers),
                     timestamp_ms=1000 + offset)


@dataclass
class FakeSource:
    records: dict[str, list[RawRecord]] = field(default_factory=dict)
    partition_count: int = 3

    def partitions(self, topic: str) -> set[int]:
        if topic not in self.records:
            raise NotFound(f"the broker has no topic {topic}")
        return set(range(self.partition_count))

    def read_all(self, topic: str) -> list[RawRecord]:
        self.partitions(topic)
        return self.records[topic]

    def read_one(self, topic: str, partition: int, offset: int) -> RawRecord | None:
        self.partitions(topic)
        return next((r for r in self.records[topic]
                     if r.partition == partition and r.offset == offset), None)


@dataclass
class FakeStore:
    replays: list[Replay] = field(default_factory=list)
    outbox: list[DeadLetter] = field(default_factory=list)
    sent: dict[str, datetime | None] = field(default_factory=dict)
    windows: list[SentWindow] = field(default_factory=list)

    def replays_of(self, refs: Sequence[DeadLetterRef]) -> dict[DeadLetterRef, list[Replay]]:
        found: dict[DeadLetterRef, list[Replay]] = {}
        for replay in self.replays:
            if replay.ref in refs:
                found.setdefault(replay.ref, []).append(replay)
        return found

    def replay(self, dead: DeadLetter, actor: str, now: datetime) -> Replay:
        if any(r.ref == dead.ref and r.event_id == dead.event_id for r in self.replays):
            raise AlreadyExists(f"dead letter {dead.ref} was replayed already")
        replay = Replay(f"replay-{len(self.replays)}", dead.event_id, actor, now, dead.ref)
        self.replays.append(replay)
        self.outbox.append(dead)
        return replay

    def republish_window(self, window: SentWindow) -> list[str]:
        self.windows.append(window)
        return [eid for eid, at in self.sent.items()
                if at is not None and window.since <= at < window.until]

    def republish_event(self, event_id: str) -> list[str]:
        if event_id not in self.sent:
            raise NotFound(f"no outbox row with event id {event_id}")
        return [event_id]


@pytest.fixture
def source() -> FakeSource:
    return FakeSource({DLQ: [dead_record(0, "e-0"), dead_record(1, "e-1"),
                             dead_record(2, "e-2", partition=1)], TOPIC: []})


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def admin(source: FakeSource, store: FakeStore) -> EventAdmin:
    return EventAdmin(source, store, clock=lambda: NOW)


def test_a_dead_letter_carries_what_the_consumer_said_about_it(admin: EventAdmin) -> None:
    page = admin.list_dead_letters(DLQ)  # the .dlq name is accepted too
    assert [d.ref for d in page.dead_letters] == [
        DeadLetterRef(TOPIC, 0, 0), DeadLetterRef(TOPIC, 0, 1), DeadLetterRef(TOPIC, 1, 2)]
    first = page.dead_letters[0]
    assert (first.original_topic, first.original_partition, first.original_offset) == (
        TOPIC, 2, 41)
    assert first.error_type == "ValueError"
    assert first.error.startswith("ValueError: cannot price circuit")
    assert first.consumer_group == "provisioning"
    assert first.failed_at == NOW
    assert first.event_id == "e-0"
    assert [name for name, _ in first.headers] == [
        "event-id", "event-type", "schema-version", "traceparent"]
    assert page.next_page_token == ""


def test_pages_follow_each_other(admin: EventAdmin) -> None:
    first = admin.list_dead_letters(TOPIC, page_size=2)
    assert [d.event_id for d in first.dead_letters] == ["e-0", "e-1"]
    second = admin.list_dead_letters(TOPIC, page_size=2, page_token=first.next_page_token)
    assert [d.event_id for d in second.dead_letters] == ["e-2"]
    assert second.next_page_token == ""
    with pytest.raises(InvalidArgument, match="page_token"):
        admin.list_dead_letters(TOPIC, page_token="abc")
    with pytest.raises(InvalidArgument, match="page_size"):
        admin.list_dead_letters(TOPIC, page_size=5000)


def test_bad_places_are_refused_by_name(admin: EventAdmin) -> None:
    with pytest.raises(NotFound, match=r"no topic idc\.nope\.dlq"):
        admin.list_dead_letters("idc.nope")
    with pytest.raises(NotFound, match="no partition 7"):
        admin.get_dead_letter(DeadLetterRef(TOPIC, 7, 0))
    with pytest.raises(NotFound, match=r"no dead letter at idc\.order\.events\.dlq 0:99"):
        admin.get_dead_letter(DeadLetterRef(TOPIC, 0, 99))
    with pytest.raises(InvalidArgument, match="offset"):
        admin.get_dead_letter(DeadLetterRef(TOPIC, 0, -1))
    with pytest.raises(InvalidArgument, match="topic"):
        admin.list_dead_letters(" ")


def test_a_replay_keeps_the_event_id_and_is_recorded_once(
    admin: EventAdmin, store: FakeStore
) -> None:
    ref = DeadLetterRef(TOPIC, 0, 1)
    replay = admin.replay(ref, "root@ops")
    assert (replay.event_id, replay.actor, replay.replayed_at, replay.ref) == (
        "e-1", "root@ops", NOW, ref)
    assert [d.original_topic for d in store.outbox] == [TOPIC]
    assert admin.get_dead_letter(ref).replays == (replay,)
    with pytest.raises(AlreadyExists):
        admin.replay(ref, "root@ops")
    assert len(store.outbox) == 1


def test_a_dead_letter_without_event_headers_is_not_replayed(
    source: FakeSource, store: FakeStore, admin: EventAdmin
) -> None:
    source.records[DLQ].append(dead_record(3, required=False))
    with pytest.raises(FailedPrecondition, match="no event-id, event-type, schema-version"):
        admin.replay(DeadLetterRef(TOPIC, 0, 3), "root@ops")
    assert store.outbox == []


def test_a_dead_letter_whose_topic_is_gone_is_not_replayed(
    source: FakeSource, store: FakeStore, admin: EventAdmin
) -> None:
    del source.records[TOPIC]
    with pytest.raises(FailedPrecondition, match="broker does not have"):
        admin.replay(DeadLetterRef(TOPIC, 0, 0), "root@ops")
    assert store.outbox == []


def test_republish_needs_one_clear_choice(admin: EventAdmin, store: FakeStore) -> None:
    with pytest.raises(InvalidArgument, match=r"--since .* or --event-id"):
        admin.republish(RepublishRequest(), "root@ops")
    with pytest.raises(InvalidArgument, match="not both"):
        admin.republish(RepublishRequest(since=NOW, event_id="e-1"), "root@ops")
    with pytest.raises(InvalidArgument, match="is not before --until"):
        admin.republish(RepublishRequest(since=NOW, until=NOW - timedelta(hours=1)), "r")
    with pytest.raises(InvalidArgument, match="is not before --until"):
        admin.republish(RepublishRequest(since=NOW + timedelta(minutes=1)), "r")
    assert store.windows == []


def test_republish_a_window_until_now_or_one_event(
    admin: EventAdmin, store: FakeStore
) -> None:
    store.sent = {"old": NOW - timedelta(days=2), "lost": NOW - timedelta(minutes=5),
                  "unsent": None}
    done = admin.republish(RepublishRequest(since=NOW - timedelta(hours=1)), "root@ops")
    assert (done.count, done.event_ids) == (1, ["lost"])
    assert store.windows == [SentWindow(NOW - timedelta(hours=1), NOW)]
    assert admin.republish(RepublishRequest(event_id=" old "), "r").event_ids == ["old"]
    with pytest.raises(NotFound):
        admin.republish(RepublishRequest(event_id="missing"), "r")


@pytest.mark.parametrize("principal", [
    Principal("sam@sg-telco", Role.OPS, telco="sg"),
    Principal("bea@billing", Role.BILLING_ADMIN),
    Principal("alice@acme", Role.CUSTOMER, tenant="acme"),
])
def test_only_admins_use_the_api(admin: EventAdmin, store: FakeStore,
                                 principal: Principal) -> None:
    servicer = EventAdminServicer(admin)
    token = bind_principal(principal)
    try:
        with pytest.raises(PermissionDenied, match="admin"):
            servicer.ReplayDeadLetter(
                pb.ReplayDeadLetterRequest(topic=TOPIC, partition=0, offset=0), None)  # type: ignore[arg-type]
        with pytest.raises(PermissionDenied):
            servicer.ListDeadLetters(pb.ListDeadLettersRequest(topic=TOPIC), None)  # type: ignore[arg-type]
    finally:
        reset_principal(token)
    assert store.outbox == []


def test_the_admin_is_the_actor_of_a_replay(admin: EventAdmin) -> None:
    servicer = EventAdminServicer(admin)
    token = bind_principal(Principal("root@ops", Role.ADMIN))
    try:
        reply = servicer.ReplayDeadLetter(
            pb.ReplayDeadLetterRequest(topic=TOPIC, partition=1, offset=2), None)  # type: ignore[arg-type]
    finally:
        reset_principal(token)
    assert (reply.replay.actor, reply.replay.event_id, reply.replay.dead_letter_offset) == (
        "root@ops", "e-2", 2)


def test_the_replayed_record_carries_the_dead_letters_event_id() -> None:
    dead = DeadLetter.from_record(TOPIC, dead_record(0, "e-orig"))
    headers = _outbox_headers(dead, "replay-1")
    row = OutboxRow(event_id="replay-1", headers=headers)
    assert row.published_event_id == "e-orig"
    assert headers[HEADER_REPLAY_ID] == "replay-1"
    assert headers["traceparent"].startswith("00-0af7")
    assert not any(name.startswith("dlq-") for name in headers)
    assert OutboxRow(event_id="plain", headers={}).published_event_id == "plain"


def run_cli(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    code, _ = main.run(list(argv), console=Console(file=io.StringIO()),
                       error_console=Console(file=err, width=200))
    return code, err.getvalue()


@pytest.mark.parametrize(("argv", "message"), [
    (["ops", "dlq", "list", "idc.nope.events"], "unknown topic 'idc.nope.events'"),
    (["ops", "outbox", "republish", "--service", "order"], "give --since"),
    (["ops", "outbox", "republish", "--service", "order", "--since", "2h",
      "--event-id", "e-1"], "not both"),
    (["ops", "outbox", "republish", "--service", "order", "--since",
      "2026-12-02T10:00", "--until", "2026-12-02T09:00"], "is not before --until"),
])
def test_idcctl_names_bad_input_before_calling(argv: list[str], message: str) -> None:
    # Nothing listens on the addresses: a call would fail with exit code 7, not 2.
    code, err = run_cli(*argv, "--order-address", "127.0.0.1:9", "--deadline", "1")
    assert code == 2
    assert message in err


@pytest.mark.parametrize(("topic", "owner"), [
    ("idc.order.events", "order"),
    ("idc.usage.samples.dlq", "meter"),
    ("idc.provisioning.commands.sg-blue", "provisioning"),
    ("idc.circuit.events", "provisioning"),
])
def test_a_dead_letter_command_goes_to_the_topics_producer(topic: str, owner: str) -> None:
    args = main.build_parser().parse_args(["ops", "dlq", "list", topic])
    assert events.service_for(args) == owner
    args = main.build_parser().parse_args(["ops", "dlq", "list", topic, "--service", "billing"])
    assert events.service_for(args) == "billing"


def test_idcctl_refuses_a_malformed_place() -> None:
    with pytest.raises(SystemExit) as exited:
        main.build_parser().parse_args(["ops", "dlq", "show", TOPIC, "2-15"])
    assert exited.value.code == 2
