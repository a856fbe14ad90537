"""Validate-only and price previews through idcctl on the running stack: a rehearsed order
or change stores nothing, and a preview prices a change and a disconnect before the term's
end (the 0.50 termination share of services/order/data/price_book.toml)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from tests.integration.cli.conftest import Idcctl, Outcome, active_circuit

pytestmark = pytest.mark.integration

SPEC = ["--a-end", "sg-edge-1:xe-0/0/1", "--z-end", "cq-edge-1:XGE0/0/1", "--bandwidth", "100"]


def _json(out: Outcome) -> Any:
    assert out.code == 0, out.stderr
    return json.loads(out.stdout)


def _orders(idcctl: Idcctl, *argv: str) -> list[dict[str, Any]]:
    return list(_json(idcctl("customer", "orders", *argv, "-o", "json")).get("orders", []))


def test_validate_only_answers_the_order_and_stores_nothing(idcctl: Idcctl) -> None:
    before = _orders(idcctl)
    shown = idcctl("customer", "order", *SPEC, "--request-id", "cli-rehearse-1",
                   "--validate-only")
    assert shown.code == 0, shown.stderr
    assert "validate only" in shown.stdout and "100 Mbps" in shown.stdout
    rehearsed = _json(idcctl("customer", "order", *SPEC, "--request-id", "cli-rehearse-1",
                             "--validate-only", "-o", "json"))["order"]
    assert rehearsed.get("id", "") == "" and rehearsed["price"]["mrc"]["amount"]
    assert _orders(idcctl) == before, "a rehearsal stored an order"
    # The request id was not used up: the real order takes it.
    placed = _json(idcctl("customer", "order", *SPEC, "--request-id", "cli-rehearse-1",
                          "-o", "json"))["order"]
    assert placed["id"] and placed["price"] == rehearsed["price"]
    assert _json(idcctl("customer", "cancel", placed["id"], "-o", "json"))["order"]["state"] \
        == "ORDER_STATE_CANCELLED"


def test_preview_prices_a_change_and_an_early_disconnect(idcctl: Idcctl) -> None:
    circuit_id = active_circuit(idcctl, SPEC)
    orders = _orders(idcctl, "--circuit", circuit_id)
    rehearsed = _json(idcctl("customer", "modify", circuit_id, "--bandwidth", "200",
                             "--validate-only", "-o", "json"))["order"]
    assert rehearsed["spec"]["bandwidthMbps"] == "200" and rehearsed.get("id", "") == ""
    assert _orders(idcctl, "--circuit", circuit_id) == orders

    change = _json(idcctl("customer", "preview", circuit_id, "--bandwidth", "200",
                          "-o", "json"))["preview"]
    assert Decimal(change["newPrice"]["mrc"]["amount"]) > Decimal(
        change["currentPrice"]["mrc"]["amount"])
    month = change["proration"]
    # Proto JSON leaves zeros out: activated today, no day before the change is at the old MRC.
    assert month.get("currentDays", 0) + month["newDays"] <= month["daysInMonth"]

    def amount(money: dict[str, Any] | None) -> Decimal:
        return Decimal((money or {}).get("amount") or "0")

    assert amount(month["total"]) == amount(month.get("currentAmount")) + amount(
        month.get("newAmount"))
    assert amount(change.get("terminationFee")) == 0

    leaving = _json(idcctl("customer", "preview", circuit_id, "--disconnect",
                           "-o", "json"))["preview"]
    months = leaving["remainingTermMonths"]
    mrc = Decimal(leaving["currentPrice"]["mrc"]["amount"])
    assert months >= 11, "just activated on a 12-month term"
    assert Decimal(leaving["terminationFee"]["amount"]) == months * mrc * Decimal("0.50")
    table = idcctl("customer", "preview", circuit_id, "--disconnect")
    assert table.code == 0 and "termination fee" in table.stdout
    mixed = idcctl("customer", "preview", circuit_id, "--disconnect", "--burst", "10")
    assert mixed.code == 3 and "--burst" in mixed.stderr
    refused = idcctl("customer", "preview", "CKT-NOPE", "--disconnect")
    assert refused.code == 4 and "NOT_FOUND" in refused.stderr
