"""``idcctl ops sync``: every page of ListSyncStatus read, one row per circuit end with its
status, since and last seen in sync; the customer's circuits show their health."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.console import Console

from idc.order.v1 import circuit_pb2
from idc.provisioning.v1 import provisioning_service_pb2 as prov_pb
from services.cli import commands, render
from services.cli.main import build_parser

SINCE = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


class FakeProvisioning:
    def __init__(self) -> None:
        self.requests: list[prov_pb.ListSyncStatusRequest] = []

    def ListSyncStatus(self, request: prov_pb.ListSyncStatusRequest,  # noqa: N802
                       **_: Any) -> prov_pb.ListSyncStatusResponse:
        self.requests.append(request)
        status = prov_pb.CircuitSyncStatus(
            circuit_id=f"cct-{len(self.requests)}", device_name="cq-edge-1",
            state=prov_pb.SYNC_STATE_DRIFTED, detail="absent from the router")
        status.since.FromDatetime(SINCE)
        return prov_pb.ListSyncStatusResponse(
            statuses=[status], interval_seconds=60,
            next_page_token="1" if len(self.requests) == 1 else "")


class FakeApi:
    def __init__(self) -> None:
        self.provisioning = FakeProvisioning()

    def call(self, service: str, method: Any, request: Any) -> Any:
        assert service == "provisioning"
        return method(request)


def shown(result: render.Result) -> str:
    console = Console(width=200, record=True)
    result.render(console)
    return console.export_text()


def test_ops_sync_lists_every_page_of_the_watch() -> None:
    api = FakeApi()
    args = build_parser().parse_args(["ops", "sync", "--not-in-sync"])
    assert args.handler is commands.sync_status
    ctx = commands.Context(api, Console(), False)  # type: ignore[arg-type]
    result = commands.sync_status(ctx, args)
    assert [r.page_token for r in api.provisioning.requests] == ["", "1"]
    assert all(r.not_in_sync_only for r in api.provisioning.requests)
    text = shown(result)
    assert "drift watch every 60 s" in text
    assert "cct-1" in text and "cct-2" in text and "DRIFTED" in text
    assert "2026-12-02 12:00:00Z" in text and "absent from the router" in text


def test_a_circuits_health_reads_in_words() -> None:
    circuit = circuit_pb2.Circuit(health=circuit_pb2.CIRCUIT_HEALTH_OUT_OF_SERVICE)
    circuit.health_since.FromDatetime(SINCE)
    assert render.health(circuit) == "out of service since 2026-12-02 12:00:00Z"
    assert render.health(circuit_pb2.Circuit()) == ""
