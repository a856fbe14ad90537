"""Reconciliation and gap volumes as idc.billing.v1 messages."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from idc.billing.v1 import usage_pb2
from idc.type.v1 import side_pb2, year_month_pb2
from services.billing.domain.reconciliation import (
    EndUsage,
    GapVolume,
    Reconciliation,
    percent_text,
)


def _side(value: int) -> side_pb2.Side.ValueType:
    return side_pb2.Side.ValueType(value)


def gap_proto(gap: GapVolume) -> usage_pb2.GapVolume:
    start = Timestamp()
    start.FromDatetime(gap.interval_start)
    return usage_pb2.GapVolume(
        interval_start_time=start, interval_seconds=gap.interval_seconds,
        intervals_missed=gap.intervals, bytes_in=gap.bytes_in, bytes_out=gap.bytes_out,
        valid=gap.valid,
    )


def end_proto(end: EndUsage) -> usage_pb2.EndUsage:
    return usage_pb2.EndUsage(
        side=_side(end.side), bytes_in=end.bytes_in, bytes_out=end.bytes_out,
        samples_present=end.samples, intervals_lost_to_gaps=end.intervals_lost,
        p95_mbps=end.p95_mbps or 0, p95_known=end.p95_mbps is not None,
    )


def reconciliation_proto(r: Reconciliation) -> usage_pb2.CircuitReconciliation:
    return usage_pb2.CircuitReconciliation(
        circuit_id=r.circuit_id, tenant_id=r.tenant_id,
        month=year_month_pb2.YearMonth(year=r.month.year, month=r.month.month),
        billed_end=end_proto(r.billed), other_end=end_proto(r.other),
        volume_difference_bytes=r.volume_difference_bytes,
        volume_difference_percent=percent_text(r.volume_difference_percent),
        p95_difference_mbps=r.p95_difference_mbps,
        p95_difference_percent=percent_text(r.p95_difference_percent),
        tolerance_percent=str(r.tolerance_percent), within_tolerance=r.within_tolerance,
        description=r.describe(),
    )
