"""Router leases in the agents' shared database (table ``router_leases``, see lease.py).

Every expiry is computed and compared on the database server's clock, so the agents'
clocks need not agree. A claim is one conditional UPDATE (free, expired or already ours);
on PostgreSQL its row lock serialises competing claims, on SQLite the single writer does.
A worker's writes to the queue and batches go through :meth:`SqlRouterLease.fence` in the
same transaction, so a worker that lost the lease cannot record anything any more.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import DateTime, Float, Update, literal, or_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from services.provisioning.domain.lease import LeaseTerms
from services.provisioning.tables import RouterLease


class LeaseLost(Exception):
    """The router's lease is held by another worker (or ran out)."""


class database_clock(FunctionElement[Any]):  # noqa: N801 - used like a SQL function
    """The database server's current time plus an offset in seconds."""

    type = DateTime(timezone=True)
    name = "database_clock"
    inherit_cache = True


@compiles(database_clock, "postgresql")
def _postgres_clock(element: database_clock, compiler: SQLCompiler, **kw: Any) -> str:
    # clock_timestamp(), not now(): the moment of the statement, not of the transaction.
    offset = compiler.process(element.clauses, **kw)
    return f"(clock_timestamp() + make_interval(secs => {offset}))"


@compiles(database_clock, "sqlite")
def _sqlite_clock(element: database_clock, compiler: SQLCompiler, **kw: Any) -> str:
    # The text form SQLAlchemy stores datetimes in on SQLite, so comparisons stay textual.
    offset = compiler.process(element.clauses, **kw)
    return f"strftime('%Y-%m-%d %H:%M:%f000', 'now', printf('%+.3f seconds', {offset}))"


def clock(offset_s: float = 0.0) -> database_clock:
    return database_clock(literal(offset_s, Float()))


def new_holder() -> str:
    """A name for one worker: host and process (for people), unique (for the lease)."""
    return f"{socket.gethostname()[:64]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


@dataclass
class SqlRouterLease:
    session_factory: sessionmaker[Session]
    router_name: str
    holder: str
    terms: LeaseTerms

    def claim(self) -> bool:
        """Take or renew the lease; True when it is ours for the next time-to-live."""
        with self.session_factory() as db, db.begin():
            self._ensure_row(db)
            granted = db.execute(
                self._extend().where(
                    or_(RouterLease.holder == self.holder, RouterLease.expires_at <= clock())
                )
            )
            return bool(granted.rowcount == 1)  # type: ignore[attr-defined]

    def fence(self, db: Session) -> None:
        """In the caller's transaction: renew the lease or raise LeaseLost (rolling back
        whatever the transaction was about to record). Still ours even if it ran out
        meanwhile (a slow step): only a claim by another worker changes the holder."""
        renewed = db.execute(self._extend().where(RouterLease.holder == self.holder))
        if renewed.rowcount != 1:  # type: ignore[attr-defined]
            raise LeaseLost(f"{self.router_name}: the lease is no longer {self.holder}'s")

    def release(self) -> None:
        """Let the lease run out now, so a peer takes over without waiting (clean stop)."""
        with self.session_factory() as db, db.begin():
            db.execute(
                update(RouterLease)
                .where(
                    RouterLease.router_name == self.router_name,
                    RouterLease.holder == self.holder,
                )
                .values(expires_at=clock())
            )

    def _extend(self) -> Update:
        return (
            update(RouterLease)
            .where(RouterLease.router_name == self.router_name)
            .values(holder=self.holder, expires_at=clock(self.terms.ttl_s))
            .execution_options(synchronize_session=False)
        )

    def _ensure_row(self, db: Session) -> None:
        """The router's row, free, unless it exists (a router's first claim creates it)."""
        dialect = db.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        db.execute(
            insert(RouterLease)
            .values(router_name=self.router_name, holder="", expires_at=clock())
            .on_conflict_do_nothing(index_elements=[RouterLease.router_name])
        )
