"""The console's own computations: capacity history and chart, payload diff, circuit search
and per-router sync status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.console.domain import (
    CircuitSummary,
    CompletedOrder,
    DeviceSync,
    DiffKind,
    OrderKind,
    Point,
    PortUse,
    SyncLabel,
    capacity_chart,
    committed_history,
    search,
    sync_label,
    text_diff,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def test_history_steps_through_new_change_and_disconnect_ending_at_today() -> None:
    orders = [
        CompletedOrder(OrderKind.CHANGE, T0 + timedelta(hours=2), 300, 100),
        CompletedOrder(OrderKind.NEW, T0, 100),
        CompletedOrder(OrderKind.NEW, T0 + timedelta(hours=1), 50),
        CompletedOrder(OrderKind.DISCONNECT, T0 + timedelta(hours=3), 50),
    ]
    now = T0 + timedelta(hours=4)
    assert committed_history(orders, now, 300) == [
        Point(T0, 0), Point(T0, 100), Point(T0 + timedelta(hours=1), 150),
        Point(T0 + timedelta(hours=2), 350), Point(T0 + timedelta(hours=3), 300),
        Point(now, 300),
    ]


def test_history_is_anchored_on_todays_figure_when_older_orders_were_not_read() -> None:
    history = committed_history([CompletedOrder(OrderKind.NEW, T0, 100)], T0 + timedelta(1),
                                1_100)
    assert [p.committed_mbps for p in history] == [1_000, 1_100, 1_100]


def test_history_without_orders_is_a_flat_line_over_the_last_hour() -> None:
    assert committed_history([], T0, 0) == [Point(T0 - timedelta(hours=1), 0), Point(T0, 0)]


def test_chart_puts_capacity_at_the_top_and_steps_in_time_order() -> None:
    points = [Point(T0, 0), Point(T0 + timedelta(hours=1), 130_000),
              Point(T0 + timedelta(hours=2), 130_000)]
    chart = capacity_chart(points, 260_000, width=420, height=232)
    assert chart.capacity_y == chart.top
    # plot is 70..404 wide and 16..200 high: half the capacity is at y=108
    assert chart.line_path == "M70.0,200.0H237.0V108.0H404.0V108.0"
    assert chart.area_path.endswith("V200H70.0Z")
    assert [t.label for t in chart.y_ticks] == ["0 Gbps", "65 Gbps", "130 Gbps", "195 Gbps",
                                                "260 Gbps"]
    assert chart.x_ticks[0].label == "00:00" and chart.x_ticks[-1].label == "02:00"


def test_chart_of_an_oversubscribed_history_still_fits() -> None:
    chart = capacity_chart([Point(T0, 300), Point(T0 + timedelta(1), 300)], 200)
    assert chart.capacity_y > chart.top


def test_port_use_in_percent_of_speed() -> None:
    use = PortUse("p", 10_000, 2_500, 100)
    assert (use.committed_pct, use.reserved_pct) == (25.0, 1.0)
    assert PortUse("p", 0, 0, 0).committed_pct == 0.0


def test_diff_marks_added_removed_and_kept_lines() -> None:
    lines = text_diff("<a>\n<cir>100</cir>\n</a>", "<a>\n<cir>300</cir>\n</a>")
    assert [(line.kind, line.text) for line in lines] == [
        (DiffKind.HUNK, "@@ -1,3 +1,3 @@"), (DiffKind.SAME, "<a>"),
        (DiffKind.REMOVED, "<cir>100</cir>"), (DiffKind.ADDED, "<cir>300</cir>"),
        (DiffKind.SAME, "</a>"),
    ]
    assert {line.kind for line in text_diff("", "x\ny")[1:]} == {DiffKind.ADDED}
    assert text_diff("same", "same") == []


def _circuit(**fields: object) -> CircuitSummary:
    values: dict[str, object] = dict(
        id="cct-1", tenant_id="acme", state="ACTIVE", a_end="sg-edge-1 xe-0/0/2 vlan 3901",
        z_end="cq-edge-1 XGE0/0/2 vlan 3901", a_router="sg-edge-1", z_router="cq-edge-1",
        bandwidth_mbps=100, customer_reference="PO-7", description="Acme backup link")
    values.update(fields)
    return CircuitSummary(**values)  # type: ignore[arg-type]


def test_search_needs_every_word_anywhere_and_filters_by_state() -> None:
    acme, globex = _circuit(), _circuit(id="cct-2", tenant_id="globex", state="RESERVED",
                                        description="primary")
    assert search([acme, globex], "ACME vlan 3901") == [acme]
    assert search([acme, globex], "") == [acme, globex]
    assert search([acme, globex], "cct", state="RESERVED") == [globex]
    assert search([acme, globex], "acme primary") == []


@pytest.mark.parametrize(("check", "state", "label"), [
    (None, "ACTIVE", SyncLabel.NOT_CHECKED),
    (DeviceSync("sg-edge-1", True), "ACTIVE", SyncLabel.IN_SYNC),
    (DeviceSync("sg-edge-1", False, drifted=frozenset({"cct-1"})), "ACTIVE", SyncLabel.DRIFT),
    (DeviceSync("sg-edge-1", False, missing=frozenset({"cct-1"})), "MODIFYING",
     SyncLabel.MISSING),
    (DeviceSync("sg-edge-1", False, drifted=frozenset({"cct-9"})), "ACTIVE", SyncLabel.IN_SYNC),
    (DeviceSync("sg-edge-1", False, error="timeout"), "ACTIVE", SyncLabel.UNREACHABLE),
    (DeviceSync("sg-edge-1", True), "RESERVED", SyncLabel.NOT_DEPLOYED),
])
def test_sync_label_per_router(check: DeviceSync | None, state: str, label: SyncLabel) -> None:
    checks = {} if check is None else {"sg-edge-1": check}
    assert sync_label(_circuit(state=state), "sg-edge-1", checks) is label
