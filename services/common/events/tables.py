"""The ``outbox`` and ``inbox`` tables every service with events carries in its own schema.

They live on :data:`services.common.db.Base.metadata` (so ``create_all`` builds them for
tests) and every constraint and index is named explicitly, so Alembic migrations produce the
same names whatever naming convention the migration environment uses. In a migration::

    from services.common.events.tables import create_event_tables, drop_event_tables

    def upgrade() -> None:
        create_event_tables(op)

    def downgrade() -> None:
        drop_event_tables(op)
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    PrimaryKeyConstraint,
    String,
    Table,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped
from sqlalchemy.sql.schema import SchemaItem

from services.common.db import Base
from services.common.events.envelope import HEADER_EVENT_ID

OUTBOX = "outbox"
INBOX = "inbox"

# SQLite only auto-increments an INTEGER PRIMARY KEY, PostgreSQL wants a BIGINT identity.
_Id = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(UTC)


def _outbox_schema() -> list[SchemaItem]:
    # A fresh set of objects per call: a Column belongs to exactly one Table.
    return [
        Column("id", _Id, autoincrement=True, nullable=False),
        Column("event_id", String(36), nullable=False),
        Column("topic", String(249), nullable=False),
        Column("key", LargeBinary(), nullable=True),
        Column("event_type", String(255), nullable=False),
        Column("schema_version", String(32), nullable=False),
        Column("payload", LargeBinary(), nullable=False),
        # Extra record headers captured at write time (traceparent, tracestate, baggage).
        Column("headers", JSON(), nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False, default=utcnow),
        Column("sent_at", DateTime(timezone=True), nullable=True),
        PrimaryKeyConstraint("id", name="pk_outbox"),
        UniqueConstraint("event_id", name="uq_outbox_event_id"),
        # The relay only ever scans unsent rows in id order: keep that index small.
        Index(
            "ix_outbox_unsent",
            "id",
            postgresql_where=text("sent_at IS NULL"),
            sqlite_where=text("sent_at IS NULL"),
        ),
    ]


def _inbox_schema() -> list[SchemaItem]:
    return [
        Column("id", _Id, autoincrement=True, nullable=False),
        Column("consumer_group", String(255), nullable=False),
        Column("event_id", String(36), nullable=False),
        Column("event_type", String(255), nullable=False),
        Column("topic", String(249), nullable=False),
        Column("partition", Integer(), nullable=False),
        Column("offset", BigInteger(), nullable=False),
        Column("processed_at", DateTime(timezone=True), nullable=False, default=utcnow),
        PrimaryKeyConstraint("id", name="pk_inbox"),
        UniqueConstraint("consumer_group", "event_id", name="uq_inbox_consumer_group_event_id"),
    ]


outbox_table = Table(OUTBOX, Base.metadata, *_outbox_schema())
inbox_table = Table(INBOX, Base.metadata, *_inbox_schema())


class OutboxRow(Base):
    """One event waiting to be (or already) published by the relay."""

    __table__ = outbox_table

    id: Mapped[int]
    event_id: Mapped[str]
    topic: Mapped[str]
    key: Mapped[bytes | None]
    event_type: Mapped[str]
    schema_version: Mapped[str]
    payload: Mapped[bytes]
    headers: Mapped[dict[str, str]]
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]

    @property
    def published_event_id(self) -> str:
        """The ``event-id`` it is sent with: its own, or for a replayed dead letter the dead
        letter's (``event_id`` stays unique in the outbox; consumers deduplicate on this)."""
        return self.headers.get(HEADER_EVENT_ID, self.event_id)


class InboxRow(Base):
    """One event a consumer group has handled; its presence makes redeliveries no-ops."""

    __table__ = inbox_table

    id: Mapped[int]
    consumer_group: Mapped[str]
    event_id: Mapped[str]
    event_type: Mapped[str]
    topic: Mapped[str]
    partition: Mapped[int]
    offset: Mapped[int]
    processed_at: Mapped[datetime]


def event_tables() -> list[Table]:
    """The tables, for ``Base.metadata.create_all(engine, tables=event_tables())``."""
    return [outbox_table, inbox_table]


class _Operations(Protocol):
    """The part of ``alembic.op`` used here (kept structural so no Alembic import is needed)."""

    def create_table(self, table_name: str, *columns: SchemaItem, **kw: Any) -> Any: ...

    def drop_table(self, table_name: str, **kw: Any) -> None: ...


def create_event_tables(op: _Operations) -> None:
    """Create ``outbox`` and ``inbox`` (with their indexes) from an Alembic migration."""
    op.create_table(OUTBOX, *_outbox_schema())
    op.create_table(INBOX, *_inbox_schema())


def drop_event_tables(op: _Operations) -> None:
    op.drop_table(INBOX)
    op.drop_table(OUTBOX)
