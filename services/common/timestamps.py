"""Protobuf timestamps from aware datetimes, the one way the runtime makes them."""

from __future__ import annotations

from datetime import datetime

from google.protobuf import timestamp_pb2


def to_timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp
