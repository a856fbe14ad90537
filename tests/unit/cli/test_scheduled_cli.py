"""idcctl for scheduled changes and boosts: ``customer modify --start --end`` sends the
window, ``ops approve --revert-sha256`` the revert's hash, ``ops capacity --until`` asks for
the timeline; an order shows its start, end, revert and boost price."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from rich.console import Console

from idc.ops.v1 import approval_service_pb2 as ops_pb
from idc.order.v1 import capacity_pb2, order_pb2, order_service_pb2, price_pb2
from idc.provisioning.v1 import provisioning_service_pb2 as prov_pb
from idc.type.v1 import money_pb2, router_payload_pb2
from services.cli import commands, render
from services.cli.main import build_parser

START = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)


class Recorder:
    """Every request a stub method got; answers with an empty response of its kind."""

    def __init__(self, responses: dict[str, Any]) -> None:
        self.requests: dict[str, Any] = {}
        self._responses = responses

    def __getattr__(self, name: str) -> Any:
        def call(request: Any, **_: Any) -> Any:
            self.requests[name] = request
            return self._responses[name]
        return call


class FakeApi:
    def __init__(self, responses: dict[str, Any]) -> None:
        self.orders = self.approvals = self.provisioning = Recorder(responses)

    def call(self, service: str, method: Any, request: Any) -> Any:
        assert service in {"order", "provisioning"}
        return method(request)


def run(argv: list[str], responses: dict[str, Any]) -> tuple[Recorder, str]:
    args = build_parser().parse_args(argv)
    api = FakeApi(responses)
    result = args.handler(commands.Context(api, Console(), False), args)  # type: ignore[arg-type]
    console = Console(width=200, record=True)
    result.render(console)
    return api.orders, console.export_text()


def boost_order() -> order_pb2.Order:
    order = order_pb2.Order(
        id="ord-b", state=order_pb2.ORDER_STATE_SCHEDULED, revert_order_id="ord-r",
        price=price_pb2.Price(
            boost_price_per_mbps_hour=money_pb2.Money(currency_code="SGD", amount="0.04"),
            boost_estimated_charge=money_pb2.Money(currency_code="SGD", amount="32.00")),
        approvals=[order_pb2.Approval(payload_sha256="a" * 64, revert_payload_sha256="b" * 64)])
    order.start_time.FromDatetime(START)
    order.end_time.FromDatetime(START.replace(hour=11))
    return order


def test_a_boost_is_booked_with_its_window_and_shows_its_revert_and_price() -> None:
    sent, text = run(
        ["customer", "modify", "cct-1", "--bandwidth", "500", "--start", "2026-12-05T09:00",
         "--end", "2026-12-05T11:00+00:00"],
        {"ModifyBandwidth": order_service_pb2.ModifyBandwidthResponse(order=boost_order())})
    request = sent.requests["ModifyBandwidth"]
    assert (request.start_time.ToDatetime(tzinfo=UTC), request.end_time.ToDatetime(tzinfo=UTC)) \
        == (START, START.replace(hour=11))
    for words in ("starts", "2026-12-05 09:00:00Z", "reverts", "2026-12-05 11:00:00Z",
                  "ord-r", "SGD 0.04 per Mbps-hour", "SGD 32.00", "b" * 16):
        assert words in text


def test_a_lasting_change_sends_no_window_and_a_bad_time_is_refused() -> None:
    sent, _ = run(["customer", "modify", "cct-1", "--bandwidth", "200"],
                  {"ModifyBandwidth": order_service_pb2.ModifyBandwidthResponse()})
    request = sent.requests["ModifyBandwidth"]
    assert not request.HasField("start_time") and not request.HasField("end_time")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["customer", "modify", "c", "--bandwidth", "1",
                                   "--start", "tomorrow"])


def test_ops_approve_a_boost_with_its_revert_and_read_the_timeline() -> None:
    sent, _ = run(["ops", "approve", "ord-b", "--sha256", "a1", "--revert-sha256", "r1"],
                  {"Approve": ops_pb.ApproveResponse(order=boost_order())})
    assert (sent.requests["Approve"].payload_sha256,
            sent.requests["Approve"].revert_payload_sha256) == ("a1", "r1")
    interval = capacity_pb2.CapacityInterval(
        channel_free_mbps=250_000, ports=[capacity_pb2.PortFree(port_id="p", free_mbps=500)])
    interval.start_time.FromDatetime(START)
    interval.end_time.FromDatetime(START.replace(hour=11))
    sent, text = run(["ops", "capacity", "--until", "2026-12-06T00:00"],
                     {"GetCapacity": order_service_pb2.GetCapacityResponse(timeline=[interval])})
    assert sent.requests["GetCapacity"].end_time.ToDatetime(tzinfo=UTC) \
        == datetime(2026, 12, 6, tzinfo=UTC)
    assert "Free over time" in text and "250000" in text and "500" in text
    assert render.capacity_timeline([]).row_count == 0
    sent, text = run(["ops", "capacity"], {"GetCapacity": order_service_pb2.GetCapacityResponse()})
    assert not sent.requests["GetCapacity"].HasField("end_time")
    assert "Free over time" not in text


def test_ops_see_a_boost_with_its_revert_pending_and_shown() -> None:
    payload = router_payload_pb2.RouterPayload(router_name="sg-edge-1", sha256="c" * 64,
                                               content="<config/>")
    _, text = run(["ops", "show", "ord-b"], {
        "GetOrder": order_service_pb2.GetOrderResponse(order=boost_order()),
        "DryRun": prov_pb.DryRunResponse(payloads=[payload])})
    assert "sg-edge-1 revert ord-r" in text and text.count("c" * 64) == 2
    _, text = run(["ops", "pending"], {"ListPendingApprovals": ops_pb.ListPendingApprovalsResponse(
        pending_approvals=[ops_pb.PendingApproval(order=boost_order(), payload=payload),
                           ops_pb.PendingApproval(order=order_pb2.Order(
                               id="ord-r", boost_order_id="ord-b"), payload=payload)])})
    assert "revert ord-r (--revert-sha256)" in text and "revert of ord-b" in text
