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
(circuit_id, seq) is the links' primary key. The circuits a transaction touched are chained
together, in a fixed number of statements (an admission batch of 64 new orders used to pay
a dozen round trips per circuit under the channel lock).

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
    bindparam,
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
    circuit of a new instance, and the (circuit id, entry id) rows of some circuits'
    entries."""

    name: str
    model: type[Any]
    circuit_of: Callable[[Session, Any], str | None]
    ids_of_circuits: Callable[[Sequence[str]], Select[str, int]]
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
        touched = sorted(session.info.pop(TOUCHED, set()))
        if touched:
            self._append(session, touched)

    def _unchained(self, session: Session, circuit_ids: Sequence[str]
                   ) -> dict[str, list[tuple[ChainedKind, Any]]]:
        """Per circuit, its entries in no link yet, in kind then id order."""
        linked = {(row.circuit_id, row.kind, int(row.entry_id)) for row in session.execute(
            select(self._links.c.circuit_id, self._links.c.kind, self._links.c.entry_id)
            .where(self._links.c.circuit_id.in_(circuit_ids)))}
        found: dict[str, list[tuple[ChainedKind, Any]]] = {c: [] for c in circuit_ids}
        for kind in self._kinds:
            wanted = sorted(
                (int(entry_id), circuit_id)
                for circuit_id, entry_id in session.execute(kind.ids_of_circuits(circuit_ids))
                if (circuit_id, kind.name, int(entry_id)) not in linked)
            if not wanted:
                continue
            rows = {row.id: row for row in _rows(session, kind.model, [i for i, _ in wanted])}
            for entry_id, circuit_id in wanted:
                found[circuit_id].append((kind, rows[entry_id]))
        return found

    def _append(self, session: Session, circuit_ids: Sequence[str]) -> None:
        connection = session.connection()
        heads = self._lock_heads(session, circuit_ids)
        # Read after the locks: a writer that held one before has committed its links.
        unchained = self._unchained(session, circuit_ids)
        links: list[dict[str, Any]] = []
        moved: list[dict[str, Any]] = []
        for circuit_id in circuit_ids:
            seq, prev = heads[circuit_id]
            for kind, row in unchained[circuit_id]:
                content = kind.content(row)
                seq, digest = seq + 1, link_hash(content, prev)
                telco = kind.signer_of(row) or ""
                key = self._keys.get(telco)
                links.append({
                    "circuit_id": circuit_id, "seq": seq, "kind": kind.name,
                    "entry_id": str(row.id), "prev_hash": prev, "hash": digest,
                    "signer_telco": telco if key else "",
                    "signature": base64.b64encode(key.sign(content)).decode() if key else ""})
                prev = digest
            if (seq, prev) != heads[circuit_id]:
                moved.append({"head": circuit_id, "new_seq": seq, "new_hash": prev})
        if links:
            connection.execute(insert(self._links), links)
        if moved:
            connection.execute(
                update(self._heads).where(self._heads.c.circuit_id == bindparam("head"))
                .values(seq=bindparam("new_seq"), hash=bindparam("new_hash")), moved)

    def _lock_heads(self, session: Session, circuit_ids: Sequence[str]
                    ) -> dict[str, tuple[int, str]]:
        """Lock the circuits' head rows (created at a circuit's first entry) and read them.
        A missing head is a circuit whose first entries this transaction writes."""
        heads = self._heads

        def locked(ids: Sequence[str]) -> dict[str, tuple[int, str]]:
            query = (select(heads.c.circuit_id, heads.c.seq, heads.c.hash)
                     .where(heads.c.circuit_id.in_(ids)).order_by(heads.c.circuit_id)
                     .with_for_update())
            return {row.circuit_id: (int(row.seq), str(row.hash))
                    for row in session.connection().execute(query)}

        found = locked(circuit_ids)
        missing = [c for c in circuit_ids if c not in found]
        if missing:
            # Another writer may create one first: the insert then waits for its commit and
            # does nothing for it, and its row is locked below (no savepoint needed).
            connection = session.connection()
            dialect = connection.dialect.name
            new_heads = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(heads)
            connection.execute(new_heads.on_conflict_do_nothing(index_elements=["circuit_id"]),
                               [{"circuit_id": c, "seq": 0, "hash": GENESIS} for c in missing])
            found.update(locked(missing))
        return found

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
                      for kind, entry in self._unchained(session, [circuit_id])[circuit_id]]
        return found
