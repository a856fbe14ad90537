"""Protobuf timestamps from aware datetimes, the one way the runtime makes them."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import timestamp_pb2


def to_timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def as_utc(moment: datetime) -> datetime:
    """``moment`` with its zone: SQLite hands back naive datetimes (aggregates bypass the
    column types), and everything this project writes is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
