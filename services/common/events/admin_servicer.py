# ruff: noqa: N802 - method names are the gRPC contract's
"""``idc.ops.v1.EventAdminService``: the event admin use cases over gRPC, in every service.

Admin principals only: the topics carry both telcos' events, so an ops principal (of one
telco) is refused, as are customers and billing admins.
"""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.orm import Session, sessionmaker

from idc.ops.v1 import event_admin_service_pb2 as pb
from idc.ops.v1 import event_admin_service_pb2_grpc as pb_grpc
from services.common.auth import Role, require_role
from services.common.config import KafkaSettings
from services.common.events.admin import (
    DeadLetter,
    DeadLetterRef,
    EventAdmin,
    Replay,
    RepublishRequest,
)
from services.common.events.dead_letters import KafkaDeadLetterSource
from services.common.events.replays import SqlEventStore
from services.common.servicers import register


def _timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value.astimezone(UTC))
    return ts


def _time(ts: Timestamp, present: bool) -> datetime | None:
    return ts.ToDatetime(UTC) if present else None


def replay_message(replay: Replay) -> pb.DeadLetterReplay:
    return pb.DeadLetterReplay(
        replay_id=replay.replay_id,
        event_id=replay.event_id,
        actor=replay.actor,
        replay_time=_timestamp(replay.replayed_at),
        topic=replay.ref.topic,
        dead_letter_partition=replay.ref.partition,
        dead_letter_offset=replay.ref.offset,
    )


def dead_letter_message(dead: DeadLetter, *, with_value: bool) -> pb.DeadLetter:
    return pb.DeadLetter(
        topic=dead.ref.topic,
        partition=dead.ref.partition,
        offset=dead.ref.offset,
        original_topic=dead.original_topic,
        original_partition=dead.original_partition,
        original_offset=dead.original_offset,
        consumer_group=dead.consumer_group,
        error_type=dead.error_type,
        error=dead.error,
        fail_time=_timestamp(dead.failed_at),
        event_id=dead.event_id,
        event_type=dead.event_type,
        key=dead.key or b"",
        value=dead.value if with_value else b"",
        value_size=len(dead.value),
        headers=[pb.RecordHeader(name=n, value=v) for n, v in dead.headers],
        replays=[replay_message(r) for r in dead.replays],
    )


class EventAdminServicer(pb_grpc.EventAdminServiceServicer):
    def __init__(self, admin: EventAdmin) -> None:
        self._admin = admin

    def ListDeadLetters(
        self, request: pb.ListDeadLettersRequest, context: grpc.ServicerContext
    ) -> pb.ListDeadLettersResponse:
        require_role(Role.ADMIN)
        page = self._admin.list_dead_letters(
            request.topic, request.page_size, request.page_token
        )
        return pb.ListDeadLettersResponse(
            dead_letters=[dead_letter_message(d, with_value=False) for d in page.dead_letters],
            next_page_token=page.next_page_token,
        )

    def GetDeadLetter(
        self, request: pb.GetDeadLetterRequest, context: grpc.ServicerContext
    ) -> pb.GetDeadLetterResponse:
        require_role(Role.ADMIN)
        dead = self._admin.get_dead_letter(
            DeadLetterRef(request.topic, request.partition, request.offset)
        )
        return pb.GetDeadLetterResponse(dead_letter=dead_letter_message(dead, with_value=True))

    def ReplayDeadLetter(
        self, request: pb.ReplayDeadLetterRequest, context: grpc.ServicerContext
    ) -> pb.ReplayDeadLetterResponse:
        actor = require_role(Role.ADMIN)
        replay = self._admin.replay(
            DeadLetterRef(request.topic, request.partition, request.offset), actor.subject
        )
        return pb.ReplayDeadLetterResponse(replay=replay_message(replay))

    def RepublishOutbox(
        self, request: pb.RepublishOutboxRequest, context: grpc.ServicerContext
    ) -> pb.RepublishOutboxResponse:
        actor = require_role(Role.ADMIN)
        done = self._admin.republish(
            RepublishRequest(
                since=_time(request.since, request.HasField("since")),
                until=_time(request.until, request.HasField("until")),
                event_id=request.event_id,
            ),
            actor.subject,
        )
        return pb.RepublishOutboxResponse(
            republished_count=done.count, event_ids=done.event_ids
        )


def register_event_admin(
    server: grpc.Server, session_factory: sessionmaker[Session], kafka: KafkaSettings
) -> str:
    """Serve EventAdminService on ``server`` for this service's database and broker."""
    admin = EventAdmin(KafkaDeadLetterSource(kafka), SqlEventStore(session_factory))
    return register(
        server, pb.DESCRIPTOR, "EventAdminService",
        pb_grpc.add_EventAdminServiceServicer_to_server, EventAdminServicer(admin),
    )
