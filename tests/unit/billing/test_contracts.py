"""Lifecycle changes -> dated segments, whatever order the events arrived in."""

from datetime import UTC, datetime
from decimal import Decimal

from idc.events.v1 import circuit_pb2, common_pb2
from services.billing.domain.contracts import (
    ChangeKind,
    ContractChange,
    PriceTerms,
    build_segments,
)
from services.billing.ingest import ContractIngest

PRICE = PriceTerms("SGD", Decimal("100"), Decimal("10"), Decimal("1"), 12)


def at(day: int) -> datetime:
    return datetime(2025, 3, day, tzinfo=UTC)


def change(kind: ChangeKind, day: int, mbps: int) -> ContractChange:
    return ContractChange("c", "t", kind, at(day), mbps, PRICE, f"e{day}")


def test_activation_changes_and_disconnect_split_segments() -> None:
    segments = build_segments(
        [
            change(ChangeKind.DISCONNECTED, 25, 300),
            change(ChangeKind.MODIFIED, 20, 300),
            change(ChangeKind.ACTIVATED, 5, 100),
            change(ChangeKind.MODIFIED, 10, 200),
        ]
    )
    assert [(s.start, s.end, s.bandwidth_mbps, s.activation) for s in segments] == [
        (at(5), at(10), 100, True),
        (at(10), at(20), 200, False),
        (at(20), at(25), 300, False),
    ]


def test_open_segment_has_no_end() -> None:
    (segment,) = build_segments([change(ChangeKind.ACTIVATED, 5, 100)])
    assert segment.end is None
    assert segment.overlaps(at(30), datetime(2025, 4, 30, tzinfo=UTC))


def test_disconnect_without_activation_opens_nothing() -> None:
    assert build_segments([change(ChangeKind.DISCONNECTED, 5, 100)]) == []


def test_a_redeploy_with_the_same_terms_does_not_split_the_month() -> None:
    segments = build_segments(
        [
            change(ChangeKind.ACTIVATED, 5, 100),
            change(ChangeKind.MODIFIED, 12, 100),
            change(ChangeKind.MODIFIED, 20, 300),
        ]
    )
    assert [(s.start, s.end, s.bandwidth_mbps, s.activation) for s in segments] == [
        (at(5), at(20), 100, True),
        (at(20), None, 300, False),
    ]


def test_a_new_price_at_the_same_bandwidth_is_a_new_segment() -> None:
    repriced = PriceTerms("SGD", Decimal("90"), Decimal("10"), Decimal("1"), 24)
    segments = build_segments(
        [
            change(ChangeKind.ACTIVATED, 5, 100),
            ContractChange("c", "t", ChangeKind.MODIFIED, at(12), 100, repriced, "e12"),
        ]
    )
    assert [(s.start, s.price.mrc) for s in segments] == [
        (at(5), Decimal("100")),
        (at(12), Decimal("90")),
    ]


def test_a_sandbox_circuits_change_is_kept_flagged() -> None:
    event = circuit_pb2.CircuitActivated(
        event_id="e-1", circuit_id="c-1", tenant_id="sandbox-demo", bandwidth_mbps=100,
        circuit=common_pb2.CircuitParameters(circuit_id="c-1", sandbox=True))
    event.effective_time.FromDatetime(datetime(2025, 3, 1, tzinfo=UTC))
    event.price.currency_code = "SGD"
    row = ContractIngest().row_for(ChangeKind.ACTIVATED, event, "e-1")
    assert row.sandbox is True
