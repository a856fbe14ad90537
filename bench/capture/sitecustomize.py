"""Loaded by a service started with this directory on PYTHONPATH (bench/sql_capture.py):
appends every statement its SQLAlchemy engines send, and each commit and rollback, as
JSON lines to ``IDC_BENCH_SQL_CAPTURE`` with the sending thread's name."""

import json
import os
import threading
from datetime import datetime
from typing import Any

_OUT = os.environ.get("IDC_BENCH_SQL_CAPTURE")


def _plain(value: Any) -> Any:
    """Parameters as JSON, tagged where JSON has no type of its own."""
    if isinstance(value, dict) or type(value).__name__ == "immutabledict":
        return {"$map": {k: _plain(v) for k, v in value.items()}}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    name = type(value).__name__
    if name == "Json":
        return {"$json": value.obj}
    if name == "Binary":  # psycopg's wrapper of bytes
        value = value.obj
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": bytes(value).hex()}
    return value


if _OUT:
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    _lock = threading.Lock()
    _file = open(_OUT, "a")  # noqa: SIM115 - open for the life of the process

    def _write(entry: dict[str, Any]) -> None:
        entry["thread"] = threading.current_thread().name
        with _lock:
            _file.write(json.dumps(entry) + "\n")
            _file.flush()

    @event.listens_for(Engine, "before_cursor_execute")
    def _statement(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
                   executemany: bool) -> None:
        autocommit = conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT"
        _write({"sql": statement, "params": _plain(parameters), "many": executemany,
                "autocommit": autocommit})

    @event.listens_for(Engine, "commit")
    def _commit(conn: Any) -> None:
        _write({"op": "commit"})

    @event.listens_for(Engine, "rollback")
    def _rollback(conn: Any) -> None:
        _write({"op": "rollback"})
