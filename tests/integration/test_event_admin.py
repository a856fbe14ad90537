"""idcctl ops dlq / ops outbox against a service (the meter's wiring: build_app, its
migrations) on the real broker, with a real consumer group and its inbox.

1. A poisoned event dead-lettered by a consumer, the handler fixed, replayed with idcctl
   through the service's outbox: handled exactly once, by the group that refused it; a group
   that handled it before skips the replay (same event id).
2. The broker restarted empty (a second, fresh broker), the service's outbox republished
   with idcctl: the consumer group ends in the same state, nothing handled twice.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import io
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from google.protobuf.message import Message
from rich.console import Console
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select
from sqlalchemy.orm import Session

from devstack.kafka import BOOTSTRAP_ENV, start_broker
from idc.events.v1.order_pb2 import OrderApproved
from services.cli import main
from services.common import db
from services.common.auth import Principal, Role
from services.common.config import KafkaSettings, ServiceSettings
from services.common.events import EventConsumer, EventRegistry, outbox
from services.common.events.envelope import Envelope
from services.common.events.replays import replays_table
from services.common.events.tables import OutboxRow
from services.common.events.topics import dead_letter_topic, ensure_topics
from services.common.grpc_server import GrpcApp
from services.common.runtime import ServiceRuntime, build_app
from services.common.service_table import METER
from services.common.telemetry import configure_telemetry
from services.common.tokens import HarnessKeys
from tests.integration.test_event_bus import consume

pytestmark = pytest.mark.integration

WAIT_S = 20.0
KEYS = HarnessKeys.generate()
REGISTRY = EventRegistry([OrderApproved])

effects_metadata = MetaData()
effects = Table(
    "admin_test_effects", effects_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("consumer_group", String(200), nullable=False),
    Column("event_id", String(36), nullable=False),
    Column("text", String(200), nullable=False),
)


@dataclass
class Handler:
    """Writes one effect per call; refuses the texts in ``refuse`` (a poison message)."""

    group: str
    refuse: set[str] = field(default_factory=set)

    def __call__(self, session: Session, event: Message, envelope: Envelope) -> None:
        assert isinstance(event, OrderApproved)
        if event.order_id in self.refuse:
            raise ValueError(f"cannot handle order {event.order_id}")
        session.execute(insert(effects).values(
            consumer_group=self.group, event_id=envelope.event_id, text=event.order_id))


@dataclass
class Service:
    app: GrpcApp
    address: str
    url: str
    factory: Any
    admin_token: str
    ops_token: str


@contextlib.contextmanager
def running_service(url: str, kafka: KafkaSettings) -> Iterator[Service]:
    settings = dataclasses.replace(
        ServiceSettings.from_env(METER.name, 0, {}), listen="127.0.0.1:0", database_url=url,
        kafka=kafka, relay_poll_interval_s=0.05,
        grace_period_s=1.0)
    db.migrate(url, METER.migrations_dir)
    engine = db.make_engine(url)
    effects_metadata.create_all(engine)
    factory = db.make_session_factory(engine)
    runtime = ServiceRuntime(settings, engine, factory, KEYS.settings(),
                             configure_telemetry(METER.name, {}))
    app = build_app(runtime, lambda server: [])
    port = app.start()
    try:
        yield Service(app, f"127.0.0.1:{port}", url, factory,
                      KEYS.mint(Principal("root@ops", Role.ADMIN)),
                      KEYS.mint(Principal("sam@sg-telco", Role.OPS, telco="sg")))
    finally:
        app.stop()


def idcctl(service: Service, *argv: str, token: str | None = None,
           as_json: bool = True) -> tuple[int, Any, str]:
    """Run idcctl against ``service`` (as the meter); the output parsed, or as text."""
    out, err = io.StringIO(), io.StringIO()
    variables = {"IDC_METER_ADDRESS": service.address, "IDC_TOKEN": token or service.admin_token}
    with mock.patch.dict(os.environ, variables):
        code, _ = main.run([*argv, "--service", "meter", "--output",
                            "json" if as_json else "table"],
                           console=Console(file=out, width=250), error_console=Console(file=err))
    text = out.getvalue()
    if not as_json:
        return code, text, err.getvalue()
    return code, json.loads(text) if text.strip() else None, err.getvalue()


def effect_texts(service: Service, group: str) -> list[str]:
    with service.factory() as session:
        return sorted(session.scalars(
            select(effects.c.text).where(effects.c.consumer_group == group)))


def count_rows(service: Service, table: Any) -> int:
    with service.factory() as session:
        return int(session.scalar(select(func.count()).select_from(table)) or 0)


def write(service: Service, topic: str, texts: list[str]) -> list[str]:
    with db.transaction(service.factory) as session:
        return [outbox.add(session, topic, "circuit-1", OrderApproved(order_id=t)).event_id
                for t in texts]


def wait_all_sent(service: Service) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        with service.factory() as session:
            if not session.scalar(select(func.count()).where(OutboxRow.sent_at.is_(None))):
                return
        time.sleep(0.05)
    pytest.fail("the relay left outbox rows unsent")


def new_consumer(service: Service, kafka: KafkaSettings, topic: str,
                 handler: Handler) -> EventConsumer:
    return EventConsumer([topic], handler.group, handler, service.factory, kafka,
                         registry=REGISTRY)


def test_a_fixed_poison_event_replayed_is_handled_exactly_once(
    database_url: str, kafka_settings: KafkaSettings, topic: str
) -> None:
    with running_service(database_url, kafka_settings) as service:
        refusing = Handler("refusing", refuse={"poison"})
        other = Handler("other")
        poison_id, good_id = write(service, topic, ["poison", "good"])
        with new_consumer(service, kafka_settings, topic, refusing) as consumer, \
                new_consumer(service, kafka_settings, topic, other) as bystander:
            consume(consumer, 2)
            consume(bystander, 2)
            assert effect_texts(service, "refusing") == ["good"]

            code, listed, err = idcctl(service, "ops", "dlq", "list", topic)
            assert code == 0, err
            [dead] = listed["deadLetters"]
            assert dead["eventId"] == poison_id
            assert dead["errorType"] == "ValueError"
            assert "cannot handle order poison" in dead["error"]
            assert dead["originalTopic"] == topic
            assert dead["consumerGroup"] == "refusing"
            assert {h["name"] for h in dead["headers"]} >= {"event-id", "event-type"}
            place = f"{dead.get('partition', 0)}:{dead.get('offset', 0)}"
            code, table, err = idcctl(service, "ops", "dlq", "list", topic, as_json=False)
            assert code == 0 and place in table and "cannot handle" in table, err
            code, text, err = idcctl(service, "ops", "dlq", "show", topic, place, as_json=False)
            assert code == 0 and 'order_id: "poison"' in text and "event-type=" in text, err

            code, shown, err = idcctl(service, "ops", "dlq", "show", topic, place)
            assert code == 0, err
            assert OrderApproved.FromString(
                base64.b64decode(shown["value"])).order_id == "poison"

            # Not for ops of one telco: refused, and nothing is written.
            code, _, err = idcctl(service, "ops", "dlq", "replay", topic, place,
                                  token=service.ops_token)
            assert code == 5 and "admin" in err
            assert count_rows(service, replays_table) == 0

            refusing.refuse.clear()  # the fix is deployed
            code, replayed, err = idcctl(service, "ops", "dlq", "replay", topic, place)
            assert code == 0, err
            assert replayed["eventId"] == poison_id
            assert replayed["actor"] == "root@ops"
            consume(consumer, 1)
            consume(bystander, 1)  # the same event id: its inbox skips it
            assert effect_texts(service, "refusing") == ["good", "poison"]
            assert effect_texts(service, "other") == ["good", "poison"]

            code, _, err = idcctl(service, "ops", "dlq", "replay", topic, place)
            assert code == 6 and "replayed already" in err
            code, _, err = idcctl(service, "ops", "dlq", "show", topic, "0:999")
            assert code == 4 and "no dead letter" in err
            code, _, err = idcctl(service, "ops", "dlq", "list", "test.no-such-topic")
            assert code == 4 and "no topic test.no-such-topic.dlq" in err

        with service.factory() as session:
            rows = session.execute(select(replays_table)).all()
        assert [(r.event_id, r.actor, r.topic) for r in rows] == [
            (poison_id, "root@ops", topic)]
        assert rows[0].replay_id != poison_id
        code, listed, _ = idcctl(service, "ops", "dlq", "list", topic)
        assert listed["deadLetters"][0]["replays"][0]["replayId"] == rows[0].replay_id
        assert good_id not in {r.event_id for r in rows}


@pytest.fixture
def fresh_broker(tmp_path: Path) -> Iterator[str]:
    if os.environ.get(BOOTSTRAP_ENV, "").strip():
        pytest.skip("needs a broker of its own to lose everything (IDC_KAFKA_BOOTSTRAP set)")
    with start_broker(tmp_path / "fresh-broker") as broker:
        yield broker.bootstrap


def test_republished_outbox_after_an_empty_broker_leaves_nothing_done_twice(
    database_url: str, kafka_settings: KafkaSettings, topic: str, fresh_broker: str
) -> None:
    group = f"republish-{uuid.uuid4().hex[:8]}"
    since = datetime.now(UTC) - timedelta(seconds=1)
    url = database_url
    with running_service(url, kafka_settings) as service:
        with new_consumer(service, kafka_settings, topic, Handler(group)) as consumer:
            write(service, topic, ["a", "b", "c"])
            consume(consumer, 3)
        # Sent and acknowledged, then lost with the broker before the group read them.
        lost = write(service, topic, ["d", "e"])
        wait_all_sent(service)
    assert effect_texts(service, group) == ["a", "b", "c"]

    empty = dataclasses.replace(kafka_settings, bootstrap=fresh_broker)
    ensure_topics(fresh_broker, [topic, dead_letter_topic(topic)], 3, 1)
    with running_service(url, empty) as service:
        code, _, err = idcctl(service, "ops", "outbox", "republish", "--since", "1h",
                              "--until", "2h")
        assert code == 2 and "is not before --until" in err
        code, _, err = idcctl(service, "ops", "outbox", "republish", "--event-id", "nope")
        assert code == 4 and "no outbox row" in err

        code, done, err = idcctl(service, "ops", "outbox", "republish",
                                 "--since", since.isoformat())
        assert code == 0, err
        assert done["republishedCount"] == 5
        with new_consumer(service, empty, topic, Handler(group)) as consumer:
            consume(consumer, 5)
            assert effect_texts(service, group) == ["a", "b", "c", "d", "e"]
            code, done, err = idcctl(service, "ops", "outbox", "republish",
                                     "--event-id", lost[0])
            assert code == 0 and done["eventIds"] == [lost[0]], err
            consume(consumer, 1)
        assert effect_texts(service, group) == ["a", "b", "c", "d", "e"]
