"""The composite floor: gRPC plus the order service's own SQL, and nothing else.

``python -m bench.sql_floor PORT BACKEND URL PATH=REPLY_BYTES ...`` serves each order
method PATH on a grpcio server with the services' thread pool; a handler runs the
statements the product sends for that call (bench/order_sql.json, captured by
``python -m bench.sql_capture``) on the same database with the bare driver (psycopg, or
sqlite3 as the service sets it up) on pooled connections, then answers a reply of the
product's size, until SIGTERM. A CreateOrder gets fresh ids for the ids of the
captured call, so its inserts land as the product's do (on the same channel lock); a
GetOrder reads the order its request names.
"""

from __future__ import annotations

import json
import queue
import re
import sqlite3
import sys
import threading
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import psycopg
from psycopg.types.json import Json

from bench.empty_server import MAX_WORKERS, serve_until_terminated
from bench.sql_capture import CAPTURED
from idc.order.v1 import order_service_pb2

SERVICE = "idc.order.v1.OrderService"
# Connections opened before serving: the bench's target concurrency (bench/order.py).
WARM_CONNECTIONS = 16
# Ids a CreateOrder makes up: circuit and order ids, request ids and event ids.
_FRESH = {
    re.compile(r"^cct-[0-9a-f]{32}$"): lambda: f"cct-{uuid.uuid4().hex}",
    re.compile(r"^ord-[0-9a-f]{32}$"): lambda: f"ord-{uuid.uuid4().hex}",
    re.compile(r"^[0-9a-f]{32}$"): lambda: uuid.uuid4().hex,
    re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"):
        lambda: str(uuid.uuid4()),
}
_ORDER_ID = re.compile(r"^ord-[0-9a-f]{32}$")
_INSERT_COLUMNS = re.compile(r"^INSERT INTO \S+ \(([^)]*)\) VALUES")
_VLAN_SUMMARY = "SELECT port_vlans.port_id, count(*)"


def _decoded(value: Any, postgres: bool) -> Any:
    if isinstance(value, list):
        return [_decoded(v, postgres) for v in value]
    if not isinstance(value, dict):
        return value
    if "$map" in value:
        return {k: _decoded(v, postgres) for k, v in value["$map"].items()}
    if "$datetime" in value:
        return datetime.fromisoformat(value["$datetime"])
    if "$bytes" in value:
        return bytes.fromhex(value["$bytes"])
    if "$json" in value:
        return Json(value["$json"]) if postgres else json.dumps(value["$json"])
    raise ValueError(f"unknown tagged value {value!r}")


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, bytes):
        return _strings(value.decode("ascii", "replace"))
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    return []


def _swapped(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return ids.get(value, value)
    if isinstance(value, bytes):
        text = value.decode("ascii", "replace")
        return ids[text].encode() if text in ids else value
    if isinstance(value, dict):
        return {k: _swapped(v, ids) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_swapped(v, ids) for v in value)
    return value


class Op:
    """One captured step: a statement with its parameters, or a commit or rollback."""

    def __init__(self, entry: dict[str, Any], postgres: bool) -> None:
        self.sql: str = entry.get("sql", "")
        self.control: str = entry.get("op", "")
        self.many: bool = entry.get("many", False)
        self.autocommit: bool = entry.get("autocommit", False)
        params = _decoded(entry.get("params"), postgres)
        # SQLite's parameters come as lists (a list of them for many); psycopg's as mappings.
        if not postgres and isinstance(params, list):
            params = [tuple(p) for p in params] if self.many else tuple(params)
        self.params: Any = params
        self.ids = [s for s in _strings(params) if any(p.match(s) for p in _FRESH)]
        # Positional parameters (SQLite) are named by the INSERT's column list.
        columns = _INSERT_COLUMNS.match(self.sql)
        self.columns = [c.strip().strip('"') for c in columns[1].split(",")] if columns else []
        self.vlan_summary = self.sql.startswith(_VLAN_SUMMARY)


def _with_vlans(op: Op, params: Any, vlans: dict[str, int]) -> Any:
    """A create's VLANs as the product picks them: the lowest free one (the one above the
    port's highest, read by the captured summary statement)."""
    if op.many:
        return [_row_with_vlans(op, row, vlans) for row in params]
    return _row_with_vlans(op, params, vlans)


def _row_with_vlans(op: Op, row: Any, vlans: dict[str, int]) -> Any:
    named = dict(row) if isinstance(row, dict) else dict(zip(op.columns, row, strict=False))
    for vlan, port in (("vlan_id", "port_id"), ("a_vlan", "a_port_id"), ("z_vlan", "z_port_id")):
        if vlan in named and named.get(port) in vlans:
            named[vlan] = vlans[named[port]]
    return named if isinstance(row, dict) else tuple(named[c] for c in op.columns)


class Replayer:
    """Runs a call's captured steps on pooled connections: as many as the target
    concurrency opened up front (the product's pool is warm by the time it is measured),
    more up to one per server thread when needed (the product's pool is as large)."""

    def __init__(self, backend: str, url: str) -> None:
        self.postgres = backend == "postgresql"
        self.url = url
        self.pool: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.opened = 0
        self.lock = threading.Lock()
        for _ in range(WARM_CONNECTIONS):
            self.pool.put(self._connect())

    def _connect(self) -> Any:
        with self.lock:
            self.opened += 1
        if self.postgres:
            return psycopg.connect(self.url)
        path = self.url.split(":///", 1)[1]
        lite = sqlite3.connect(path, timeout=30, isolation_level=None,
                               check_same_thread=False)
        for pragma in ("journal_mode=WAL", "foreign_keys=ON", "busy_timeout=30000"):
            lite.execute(f"PRAGMA {pragma}")
        return lite

    def _take(self) -> Any:
        try:
            return self.pool.get_nowait()
        except queue.Empty:
            with self.lock:
                full = self.opened >= MAX_WORKERS
            return self.pool.get() if full else self._connect()

    def run(self, ops: list[Op], ids: dict[str, str]) -> None:
        connection = self._take()
        try:
            self._run(connection, ops, ids)
        finally:
            self.pool.put(connection)

    def _run(self, connection: Any, ops: list[Op], ids: dict[str, str]) -> None:
        vlans: dict[str, int] = {}
        for op in ops:
            if op.control == "commit":
                connection.commit()
                continue
            if op.control == "rollback":
                connection.rollback()
                continue
            # psycopg sets autocommit locally (no round trip), between transactions as the
            # product's reads without one come.
            if self.postgres and connection.autocommit != op.autocommit:
                connection.autocommit = op.autocommit
            params = _swapped(op.params, ids) if ids else op.params
            if vlans and (op.columns or isinstance(params, dict)):
                params = _with_vlans(op, params, vlans)
            cursor = connection.cursor()
            if op.many:
                cursor.executemany(op.sql, params)
            else:
                cursor.execute(op.sql, params or ())
                if cursor.description is not None:
                    rows = cursor.fetchall()
                    if op.vlan_summary:
                        vlans = {row[0]: row[3] + 1 for row in rows}
            cursor.close()


def _identity(data: bytes) -> bytes:
    return data


def _handler(answer: Callable[[bytes, Any], bytes]) -> grpc.RpcMethodHandler[bytes, bytes]:
    return grpc.unary_unary_rpc_method_handler(
        answer, request_deserializer=_identity, response_serializer=_identity)


def handlers(backend: str, url: str, replies: dict[str, int], captured: Path = CAPTURED
             ) -> dict[str, grpc.RpcMethodHandler[bytes, bytes]]:
    postgres = backend == "postgresql"
    calls = json.loads(captured.read_text())[backend]
    replayer = Replayer(backend, url)
    out: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {}
    for path, size in replies.items():
        name = path.rsplit("/", 1)[-1]
        ops = [Op(entry, postgres) for entry in calls[name]]
        reply = b"\x01" * size
        out[name] = _handler(_answer(name, ops, reply, replayer))
    return out


def _answer(name: str, ops: list[Op], reply: bytes, replayer: Replayer
            ) -> Callable[[bytes, Any], bytes]:
    made_up = sorted({i for op in ops for i in op.ids})
    captured_order = next((i for op in ops for i in op.ids if _ORDER_ID.match(i)), None)

    def answer(request: bytes, context: Any) -> bytes:
        ids: dict[str, str] = {}
        if name == "CreateOrder":
            ids = {old: next(f for p, f in _FRESH.items() if p.match(old))() for old in made_up}
        elif name == "GetOrder" and captured_order is not None:
            ids = {captured_order: order_service_pb2.GetOrderRequest.FromString(request).order_id}
        replayer.run(ops, ids)
        return reply

    return answer


def serve(port: int, backend: str, url: str, replies: dict[str, int]) -> None:
    serve_until_terminated(port, {SERVICE: handlers(backend, url, replies)})


def main(argv: list[str]) -> int:
    port, backend, url = int(argv[0]), argv[1], argv[2]
    replies = {path: int(size) for path, size in (arg.rsplit("=", 1) for arg in argv[3:])}
    serve(port, backend, url, replies)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
