"""The tamper-evident audit: a hash chain per circuit over a service's audit entries.

Each service chains its own entries in its own database (order: audit entries and approval
decisions; provisioning: log entries and repair decisions), so a chain is per circuit per
service; ``idcctl audit verify`` checks both. A link (``audit_chain``) names one entry
(kind and id) and stores ``prev_hash`` (the previous link's hash, GENESIS for the first)
and ``hash = sha256(canonical(entry) + prev_hash)``, hex.

Canonical encoding of an entry: the JSON object of every column of its row plus ``kind``,
keys sorted, separators ``,`` and ``:``, UTF-8 (non-ASCII kept), times as ISO 8601 in UTC
with microseconds and ``Z``, bytes as base64, NULL as null.

Entries are chained when their transaction commits (before_commit): every entry of a
touched circuit that is in no link yet is appended, in kind then id order. Two writers on
one circuit do not fork its chain: the circuit's head row (``audit_chain_heads``) is
locked (SELECT ... FOR UPDATE; SQLite writers are serialised by BEGIN IMMEDIATE) and
(circuit_id, seq) is the links' primary key.

Approval decisions are signed besides: the link holds the Ed25519 signature of the
canonical content by the key of the telco the decision is for (see audit_keys.py).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import (
    BigInteger,
    Column,
    MetaData,
    PrimaryKeyConstraint,
    Select,
    String,
    Table,
    Text,
    insert,
    select,
    update,
)
from sqlalchemy import event as sa_event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.util import identity_key

GENESIS = "0" * 64
LINKS, HEADS = "audit_chain", "audit_chain_heads"
TOUCHED = "audit_chain_touched"


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, bytes | memoryview):
        return base64.b64encode(bytes(value)).decode()
    return value


def canonical(fields: Mapping[str, Any]) -> bytes:
    """The canonical encoding of an entry's fields (see the module docstring)."""
    return json.dumps(
        {key: _plain(value) for key, value in fields.items()},
        sort_keys=True, separators=(",", ":"), ensure_ascii=False,
    ).encode()


def link_hash(content: bytes, prev_hash: str) -> str:
    return hashlib.sha256(content + prev_hash.encode()).hexdigest()


def _link_columns() -> list[Any]:
    return [
        Column("circuit_id", String(64), primary_key=True),
        Column("seq", BigInteger, primary_key=True, autoincrement=False),
        Column("kind", String(24), nullable=False),
        Column("entry_id", String(64), nullable=False),
        Column("prev_hash", String(64), nullable=False),
        Column("hash", String(64), nullable=False),
        Column("signer_telco", String(16), nullable=False),
        Column("signature", Text, nullable=False),
    ]


def _head_columns() -> list[Any]:
    return [
        Column("circuit_id", String(64), primary_key=True),
        Column("seq", BigInteger, nullable=False),
        Column("hash", String(64), nullable=False),
    ]


def chain_tables(metadata: MetaData) -> tuple[Table, Table]:
    """The links and the per-circuit heads, in ``metadata``."""
    return (Table(LINKS, metadata, *_link_columns()),
            Table(HEADS, metadata, *_head_columns()))


def _rows(session: Session, model: type[Any], ids: Sequence[int]) -> list[Any]:
    """The entries of ``model`` with ``ids``, in that order: those the session holds already
    without a statement, the others in one."""
    held = {i: session.identity_map.get(identity_key(model, i)) for i in ids}
    wanted = [i for i, row in held.items() if row is None]
    if wanted:
        held.update((row.id, row) for row in session.scalars(
            select(model).where(model.id.in_(wanted))))
    return [held[i] for i in ids if held.get(i) is not None]


def create_chain_tables(op: Any) -> None:
    """Create the chain's tables from an Alembic migration (each service's audit_chain)."""
    op.create_table(LINKS, *_link_columns(), PrimaryKeyConstraint(
        "circuit_id", "seq", name=f"pk_{LINKS}"))
    op.create_table(HEADS, *_head_columns(), PrimaryKeyConstraint(
        "circuit_id", name=f"pk_{HEADS}"))


def drop_chain_tables(op: Any) -> None:
    op.drop_table(HEADS)
    op.drop_table(LINKS)


@dataclass(frozen=True)
class ChainedKind:
    """One kind of chained entry: its mapped class (an integer ``id`` primary key), the
    circuit of a new instance, and the ids of a circuit's entries."""

    name: str
    model: type[Any]
    circuit_of: Callable[[Session, Any], str | None]
    ids_of_circuit: Callable[[str], Select[Any]]
    # The telco whose key signs an entry (None: unsigned).
    signer_of: Callable[[Any], str | None] = lambda _row: None

    def content(self, row: Any) -> bytes:
        columns = self.model.__table__.columns
        return canonical({"kind": self.name, **{c.key: getattr(row, c.key) for c in columns}})


@dataclass(frozen=True)
class Link:
    sequence: int
    kind: str
    entry_id: str
    content: bytes | None  # None: the entry is gone
    prev_hash: str
    hash: str
    signer_telco: str
    signature: str


class AuditChain:
    def __init__(self, links: Table, heads: Table, kinds: Sequence[ChainedKind],
                 signing_keys: Mapping[str, Ed25519PrivateKey] | None = None) -> None:
        self._links, self._heads = links, heads
        self._kinds = list(kinds)
        self._by_name = {kind.name: kind for kind in kinds}
        self._keys = dict(signing_keys or {})

    def install(self, factory: sessionmaker[Session]) -> None:
        """Chain every entry committed through ``factory``'s sessions."""
        sa_event.listen(factory, "after_flush", self._note)
        sa_event.listen(factory, "before_commit", self._chain)

    @staticmethod
    def touch(session: Session, circuit_ids: Sequence[str]) -> None:
        """Chain the circuits' entries at commit (for entries written by plain INSERTs)."""
        session.info.setdefault(TOUCHED, set()).update(circuit_ids)

    def _note(self, session: Session, _context: Any) -> None:
        touched = session.info.setdefault(TOUCHED, set())
        for row in session.new:
            for kind in self._kinds:
                if isinstance(row, kind.model):
                    circuit = kind.circuit_of(session, row)
                    if circuit:
                        touched.add(circuit)

    def _chain(self, session: Session) -> None:
        session.flush()
        touched = session.info.pop(TOUCHED, set())
        for circuit_id in sorted(touched):
            self._append(session, circuit_id)

    def _unchained(self, session: Session, circuit_id: str) -> list[tuple[ChainedKind, Any]]:
        found = []
        for kind in self._kinds:
            chained = select(self._links.c.entry_id).where(
                self._links.c.circuit_id == circuit_id, self._links.c.kind == kind.name)
            ids = [int(i) for i in session.scalars(kind.ids_of_circuit(circuit_id))]
            linked = {int(i) for i in session.scalars(chained)}
            found += [(kind, row) for row in _rows(session, kind.model,
                                                   sorted(set(ids) - linked))]
        return found

    def _append(self, session: Session, circuit_id: str) -> None:
        connection = session.connection()
        seq, prev = self._lock_head(session, circuit_id)
        # Read after the lock: a writer that held it before has committed its links.
        unchained = self._unchained(session, circuit_id)
        for kind, row in unchained:
            content = kind.content(row)
            seq, digest = seq + 1, link_hash(content, prev)
            telco = kind.signer_of(row) or ""
            key = self._keys.get(telco)
            signature = base64.b64encode(key.sign(content)).decode() if key else ""
            connection.execute(insert(self._links).values(
                circuit_id=circuit_id, seq=seq, kind=kind.name, entry_id=str(row.id),
                prev_hash=prev, hash=digest, signer_telco=telco if key else "",
                signature=signature))
            prev = digest
        connection.execute(update(self._heads).where(self._heads.c.circuit_id == circuit_id)
                           .values(seq=seq, hash=prev))

    def _lock_head(self, session: Session, circuit_id: str) -> tuple[int, str]:
        """Lock the circuit's head row (created at the first entry) and read it."""
        heads = self._heads
        query = (select(heads.c.seq, heads.c.hash).where(heads.c.circuit_id == circuit_id)
                 .with_for_update())
        connection = session.connection()
        head = connection.execute(query).first()
        if head is None:
            # Another writer may create it first: the insert then waits for its commit and
            # does nothing, and its row is locked below (no savepoint needed around it).
            dialect = connection.dialect.name
            new_head = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(heads)
            connection.execute(new_head.values(circuit_id=circuit_id, seq=0, hash=GENESIS)
                               .on_conflict_do_nothing(index_elements=["circuit_id"]))
            head = connection.execute(query).one()
        return int(head.seq), str(head.hash)

    def head(self, session: Session, circuit_id: str) -> tuple[int, str]:
        """The circuit's recorded head: last sequence and hash (0 and GENESIS if none)."""
        row = session.execute(select(self._heads.c.seq, self._heads.c.hash)
                              .where(self._heads.c.circuit_id == circuit_id)).first()
        return (int(row.seq), str(row.hash)) if row is not None else (0, GENESIS)

    def links(self, session: Session, circuit_id: str, after_sequence: int, limit: int
              ) -> list[Link]:
        """The circuit's links by sequence, from the one after ``after_sequence``, with each
        entry's content as stored now; past the last link, the circuit's entries that are
        in no link (sequence 0)."""
        rows = session.execute(
            select(self._links).where(self._links.c.circuit_id == circuit_id,
                                      self._links.c.seq > after_sequence)
            .order_by(self._links.c.seq).limit(limit)).all()
        found = []
        for row in rows:
            kind = self._by_name.get(row.kind)
            entry = session.get(kind.model, int(row.entry_id)) if kind else None
            found.append(Link(int(row.seq), row.kind, row.entry_id,
                              kind.content(entry) if kind and entry is not None else None,
                              row.prev_hash, row.hash, row.signer_telco, row.signature))
        if len(rows) < limit:
            found += [Link(0, kind.name, str(entry.id), kind.content(entry), "", "", "", "")
                      for kind, entry in self._unchained(session, circuit_id)]
        return found
