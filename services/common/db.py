"""Database access shared by every service: engines, sessions, transactions, migrations.

SQLite (a file under var/) is the embedded default; PostgreSQL is selected by URL. Each
service owns its schema and its Alembic migrations under ``services/<name>/migrations``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import (
    DateTime,
    Dialect,
    Engine,
    MetaData,
    TypeDecorator,
    create_engine,
    event,
    text,
)
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from services.common import deadlines

# Stable constraint names make Alembic migrations identical on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_metadata() -> MetaData:
    return MetaData(naming_convention=NAMING_CONVENTION)


# A pooled connection idle longer than this is pinged before use (see make_engine).
IDLE_PING_AFTER_S = 5.0
# Execution option of sessions that only read, in one statement (single_statement_factory).
READ_ONE_STATEMENT = "idc_read_one_statement"
# The gRPC server's thread pool (services/common/grpc_server.py sizes it from this).
GRPC_THREADS = 32


class Base(DeclarativeBase):
    """Declarative base for tables shared by every service (outbox, inbox)."""

    metadata = new_metadata()


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out on every engine.

    Naive datetimes are refused. SQLite compares the stored text, so there every value is
    kept in one naive UTC form.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        moment = value.astimezone(UTC)
        return moment.replace(tzinfo=None) if dialect.name == "sqlite" else moment

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment: datetime = value
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def normalise_url(url: str) -> str:
    """Make ``postgresql://`` use psycopg 3, the only PostgreSQL driver installed."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.removeprefix("postgres://")
    return url


def make_engine(url: str, *, echo: bool = False) -> Engine:
    url = normalise_url(url)
    if is_sqlite(url):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, echo=echo, connect_args={"timeout": 30})
        _configure_sqlite(engine)
        deadlines.install(engine)
        return engine
    # As many pooled connections as the gRPC server has threads (grpc_server.py): a pool
    # smaller than the concurrency closes and reopens its overflow connections on every
    # call, a new PostgreSQL backend each time.
    engine = create_engine(url, echo=echo, pool_size=GRPC_THREADS, max_overflow=8)
    _ping_idle_connections(engine)
    deadlines.install(engine)
    return engine


def _ping_idle_connections(engine: Engine) -> None:
    """Check a pooled connection before use only when it sat idle for a while.

    A connection used in the last ``IDLE_PING_AFTER_S`` seconds is taken as alive (a ping on
    every checkout costs a round trip per call); should the server have restarted in that
    window, the failing call invalidates the whole pool and the next ones reconnect.
    """

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < IDLE_PING_AFTER_S:
            return
        try:
            cursor = dbapi_connection.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
            dbapi_connection.rollback()
        except Exception as error:
            # The pool discards this connection and checks out another.
            raise DisconnectionError(f"pooled connection is gone: {error}") from error


def _configure_sqlite(engine: Engine) -> None:
    # pysqlite's own transaction handling defers BEGIN until the first write, which lets two
    # writers read the same state; BEGIN IMMEDIATE takes the write lock up front instead.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A read made of one statement needs no write lock: in WAL mode a plain (deferred)
        # BEGIN reads a snapshot without waiting for writers or holding them up.
        if connection.get_execution_options().get(READ_ONE_STATEMENT):
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


def single_statement_factory(factory: sessionmaker[Session]) -> sessionmaker[Session]:
    """Sessions for reads made of one statement (a single statement sees one snapshot
    anyway): on PostgreSQL without a transaction (autocommit), which saves the BEGIN and
    ROLLBACK round trips; on SQLite in a deferred transaction, without the write lock."""
    engine = factory.kw["bind"]
    options: dict[str, Any] = (
        {READ_ONE_STATEMENT: True} if is_sqlite(engine.url.drivername)
        else {"isolation_level": "AUTOCOMMIT"})
    return sessionmaker(bind=engine.execution_options(**options), expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit when the block succeeds, roll back when it raises."""
    with factory() as session, session.begin():
        yield session


def ping(engine: Engine) -> bool:
    """True when the database answers; used by the health status."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception:
        return False
    return True


def migrate(url: str, migrations_dir: Path, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision`` with the service's Alembic scripts."""
    config = AlembicConfig()
    config.set_main_option("script_location", str(migrations_dir))
    config.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    command.upgrade(config, revision)
