"""The sandbox on the running stack (README "Sandbox"): a sandbox tenant orders through
gRPC, both telcos' ops approve, the circuit goes ACTIVE on the simulated sandbox routers
and on no production router; the real channel's capacity does not move, and the month's
billing run invoices nothing to the sandbox tenant and says it left the circuit out."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from devstack.run import RunningStack
from services.billing.domain.rating import BillingMonth
from services.billing.invoices import invoice_id_for
from tests.integration.cli.conftest import Idcctl, Outcome, active_circuit

pytestmark = pytest.mark.integration

SANDBOX_SPEC = ["--a-end", "sg-sandbox-edge:xe-0/0/1", "--z-end", "cq-sandbox-edge:XGE0/0/1",
                "--bandwidth", "200"]


def _json(out: Outcome) -> Any:
    assert out.code == 0, out.stderr
    return json.loads(out.stdout)


def _running(stack: RunningStack, router: str) -> str:
    with stack.devstack.routers[router].connect() as manager:
        return str(manager.get_config(source="running").data_xml)


def test_a_sandbox_circuit_runs_on_the_sandbox_routers_and_is_never_invoiced(
        stack: RunningStack, idcctl: Idcctl) -> None:
    def capacity(token: str) -> dict[str, Any]:
        return dict(_json(idcctl("ops", "capacity", "-o", "json", token=token))["capacity"])

    def as_sandbox(*argv: str, token: str = "sandbox", **options: Any) -> Outcome:
        return idcctl(*argv, token=token, **options)

    channel_before = capacity("customer")
    sites = _json(as_sandbox("customer", "sites", "-o", "json"))["sites"]
    assert {(site["id"], site.get("sandbox")) for site in sites} == {
        ("sg-sandbox", True), ("cq-sandbox", True)}
    refused = as_sandbox("customer", "order", "--a-end", "sg-edge-1:xe-0/0/1", "--z-end",
                         "cq-sandbox-edge:XGE0/0/1", "--bandwidth", "200")
    assert refused.code != 0 and "a_end_port_id" in refused.stderr
    assert "not a sandbox port" in refused.stderr

    circuit_id = active_circuit(as_sandbox, SANDBOX_SPEC)
    circuit = _json(as_sandbox("customer", "circuits", circuit_id, "-o", "json"))["circuit"]
    assert circuit["state"] == "CIRCUIT_STATE_ACTIVE" and circuit["sandbox"] is True
    for router in ("sg-sandbox-edge", "cq-sandbox-edge"):
        assert circuit_id in _running(stack, router), f"{router} lacks the circuit"
    for router in ("sg-edge-1", "cq-edge-1"):
        assert circuit_id not in _running(stack, router), f"{router} carries it"

    channel_after = capacity("customer")
    assert {k: v for k, v in channel_after.items() if k.startswith("channel")} == {
        k: v for k, v in channel_before.items() if k.startswith("channel")}
    pool = capacity("sandbox")
    assert pool["sandbox"] is True and int(pool["channelCapacityMbps"]) == 20_000
    assert int(pool["channelCommittedMbps"]) >= 200
    assert all(port["portId"].split(":")[0].endswith("sandbox-edge") for port in pool["ports"])

    # Metered like any circuit (the devstack's counter agent stands in for the sandbox
    # routers too), so an integrator can try GetUsage.
    deadline = time.monotonic() + 60
    while not (usage := _json(as_sandbox("customer", "usage", circuit_id, "--samples",
                                         "-o", "json"))).get("samples"):
        assert time.monotonic() < deadline, f"no usage sample of {circuit_id}: {usage}"
        time.sleep(0.5)

    today = datetime.now(UTC)
    month = f"{today.year}-{today.month:02d}"
    deadline = time.monotonic() + 60
    while True:  # billing takes the activation from the circuit events when it gets there
        rehearsed = _json(idcctl("billing", "run", "--month", month, "--dry-run", "-o", "json",
                                 token="billing"))
        if rehearsed.get("sandboxCircuitsLeftOut") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert rehearsed.get("sandboxCircuitsLeftOut", 0) >= 1
    summary = _json(idcctl("billing", "run", "--month", month, "-o", "json", token="billing"))
    assert summary.get("sandboxCircuitsLeftOut", 0) >= 1
    sandbox_invoice = invoice_id_for("sandbox-demo", BillingMonth(today.year, today.month))
    assert sandbox_invoice not in summary.get("invoiceIds", [])
    assert not any("sandbox-demo" in w for w in summary.get("warnings", []))
    assert _json(as_sandbox("customer", "invoices", "-o", "json")).get("invoices", []) == []
