"""The ``event_replays`` table and the service database side of the event admin tools.

Every service database carries ``event_replays`` next to its outbox: one row per dead letter
replayed through that outbox (who asked, when, which dead letter, the outbox row written). A
migration creates it with :func:`create_replay_table`, like the outbox and inbox.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    UniqueConstraint,
    select,
    tuple_,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.schema import SchemaItem

from services.common.db import Base, UtcDateTime
from services.common.errors import AlreadyExists, FailedPrecondition, NotFound
from services.common.events.admin import DeadLetter, DeadLetterRef, Replay, SentWindow
from services.common.events.envelope import HEADER_EVENT_ID, REQUIRED_HEADERS
from services.common.events.tables import OutboxRow

EVENT_REPLAYS = "event_replays"
# Header on a replayed record naming its outbox row (the replay), beside the original id.
HEADER_REPLAY_ID = "replay-id"

_Id = BigInteger().with_variant(Integer(), "sqlite")


def _replay_schema() -> list[SchemaItem]:
    return [
        Column("id", _Id, autoincrement=True, nullable=False),
        # The outbox row's event id: new per replay.
        Column("replay_id", String(36), nullable=False),
        # The dead letter's event id, which the replayed record carries.
        Column("event_id", String(36), nullable=False),
        Column("topic", String(249), nullable=False),
        Column("dead_letter_partition", Integer(), nullable=False),
        Column("dead_letter_offset", BigInteger(), nullable=False),
        Column("actor", String(128), nullable=False),
        Column("replayed_at", UtcDateTime(), nullable=False),
        PrimaryKeyConstraint("id", name="pk_event_replays"),
        UniqueConstraint("replay_id", name="uq_event_replays_replay_id"),
        # One replay per dead letter (a broker started empty reuses offsets: the event id
        # keeps a new dead letter at an old place replayable).
        UniqueConstraint(
            "topic", "dead_letter_partition", "dead_letter_offset", "event_id",
            name="uq_event_replays_dead_letter",
        ),
    ]


replays_table = Table(EVENT_REPLAYS, Base.metadata, *_replay_schema())


def create_replay_table(op: Any) -> None:
    """Create ``event_replays`` from an Alembic migration."""
    op.create_table(EVENT_REPLAYS, *_replay_schema())


def drop_replay_table(op: Any) -> None:
    op.drop_table(EVENT_REPLAYS)


def _replay_of(row: Any) -> Replay:
    return Replay(
        replay_id=row.replay_id,
        event_id=row.event_id,
        actor=row.actor,
        replayed_at=row.replayed_at,
        ref=DeadLetterRef(row.topic, row.dead_letter_partition, row.dead_letter_offset),
    )


def _outbox_headers(dead: DeadLetter, replay_id: str) -> dict[str, str]:
    """The dead letter's own headers (trace context and the like) for the outbox row, with
    its event id, which the relay sends instead of the row's (OutboxRow.published_event_id)."""
    headers = {
        name: value.decode("utf-8", errors="replace")
        for name, value in dead.headers
        if name not in REQUIRED_HEADERS
    }
    headers[HEADER_EVENT_ID] = dead.event_id
    headers[HEADER_REPLAY_ID] = replay_id
    return headers


class SqlEventStore:
    """Replays and republishing in one service database (its outbox and ``event_replays``)."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._factory = session_factory

    def replays_of(self, refs: Iterable[DeadLetterRef]) -> dict[DeadLetterRef, list[Replay]]:
        wanted = list(dict.fromkeys(refs))
        if not wanted:
            return {}
        t = replays_table.c
        query = (
            select(replays_table)
            .where(
                tuple_(t.topic, t.dead_letter_partition, t.dead_letter_offset).in_(
                    [(ref.topic, ref.partition, ref.offset) for ref in wanted]
                )
            )
            .order_by(t.id)
        )
        found: dict[DeadLetterRef, list[Replay]] = {}
        with self._factory() as session:
            for row in session.execute(query):
                replay = _replay_of(row)
                found.setdefault(replay.ref, []).append(replay)
        return found

    def replay(self, dead: DeadLetter, actor: str, now: datetime) -> Replay:
        """Write ``dead`` to the outbox for its original topic and record the replay, in one
        transaction; AlreadyExists when this dead letter was replayed here before."""
        replay_id = str(uuid.uuid4())
        replay = Replay(replay_id, dead.event_id, actor, now, dead.ref)
        try:
            with self._factory() as session, session.begin():
                session.add(
                    OutboxRow(
                        event_id=replay_id,
                        topic=dead.original_topic,
                        key=dead.key,
                        event_type=dead.event_type,
                        schema_version=dead.schema_version,
                        payload=dead.value,
                        headers=_outbox_headers(dead, replay_id),
                    )
                )
                session.execute(
                    replays_table.insert().values(
                        replay_id=replay_id,
                        event_id=dead.event_id,
                        topic=dead.ref.topic,
                        dead_letter_partition=dead.ref.partition,
                        dead_letter_offset=dead.ref.offset,
                        actor=actor,
                        replayed_at=now,
                    )
                )
        except sa_exc.IntegrityError:
            earlier = [r for r in self.replays_of([dead.ref]).get(dead.ref, [])
                       if r.event_id == dead.event_id]
            by = f" by {earlier[0].actor} at {earlier[0].replayed_at:%Y-%m-%d %H:%M:%SZ}" \
                if earlier else ""
            raise AlreadyExists(
                f"dead letter {dead.ref} (event {dead.event_id}) was replayed already{by}; "
                "consumers deduplicate by event id, so a second replay would change nothing"
            ) from None
        return replay

    def republish_window(self, window: SentWindow) -> list[str]:
        """Mark every row sent in ``window`` unsent; the relay publishes them again."""
        sent_at = OutboxRow.sent_at
        where = (sent_at.is_not(None), sent_at >= window.since, sent_at < window.until)
        with self._factory() as session, session.begin():
            ids = list(session.scalars(select(OutboxRow.event_id).where(*where)
                                       .order_by(OutboxRow.id)))
            self._mark_unsent(session, where)
        return ids

    def republish_event(self, event_id: str) -> list[str]:
        with self._factory() as session, session.begin():
            sent_at = session.execute(
                select(OutboxRow.sent_at).where(OutboxRow.event_id == event_id)
            ).first()
            if sent_at is None:
                raise NotFound(f"no outbox row with event id {event_id} in this service")
            if sent_at[0] is None:
                raise FailedPrecondition(
                    f"event {event_id} is not sent yet: the outbox relay will send it"
                )
            self._mark_unsent(session, (OutboxRow.event_id == event_id,))
        return [event_id]

    @staticmethod
    def _mark_unsent(session: Session, where: Sequence[Any]) -> None:
        session.execute(
            update(OutboxRow)
            .where(*where)
            .values(sent_at=None)
            .execution_options(synchronize_session=False)
        )
