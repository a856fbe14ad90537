"""The operations console in real headless Chromium against the running stack: sign in,
approve from each telco and watch the order turn ACTIVE live, reject with a reason, trigger
drift on a router and clear it with Redeploy, the capacity chart, and hostile input."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import expect

from idc.order.v1 import order_pb2
from tests.integration.console.conftest import (
    HOSTILE_DESCRIPTION,
    HOSTILE_REFERENCE,
    PEOPLE,
    SG_IF,
    ConsoleStack,
    Person,
    assert_not_blank,
)
from tests.integration.provisioning.helpers import subinterfaces

pytestmark = pytest.mark.integration

SignIn = Callable[[str], Person]
LIVE_TIMEOUT_MS = 90_000


def test_approve_from_each_telco_and_watch_the_order_become_active_live(
        stack: ConsoleStack, sign_in: SignIn) -> None:
    order = stack.create_order(bandwidth=200)
    sg_hash = stack.planned_hash("olga", order.id)

    olga = sign_in("olga")
    olga.goto("/approvals")
    card = olga.page.locator(f"section.approval[data-order='{order.id}']")
    expect(card.locator(".description")).to_have_text(HOSTILE_DESCRIPTION)
    expect(card.locator(".reference")).to_have_text(HOSTILE_REFERENCE)
    assert card.locator(".reference b, .reference script").count() == 0
    expect(card.locator("input[name=payload_sha256]")).to_have_value(sg_hash)
    # A new circuit: every leaf of it is absent from the router before the approval.
    expect(card.locator(".baseline")).to_contain_text("From the dry run")
    cir = card.locator("table.leaves tr", has_text="/rate-limit/ingress/config/cir")
    expect(cir.locator("td.removed")).to_have_text("(absent)")
    expect(cir.locator("td.added")).to_have_text("200000000")
    expect(card).to_contain_text("200 Mbps")
    expect(card).to_contain_text("sg-edge-1:xe-0/0/2")
    assert_not_blank(olga.page.screenshot(full_page=True), stack.work / "approvals.png")
    card.locator("form.approve button").click()
    expect(olga.page).to_have_url(re.compile(f"/orders/{order.id}$"))
    # The approver as the opaque principal id the order service keeps, never the name.
    expect(olga.page.locator("#approvals")).to_contain_text(
        f"Singapore: APPROVED by {PEOPLE['olga'].ref}")
    expect(olga.page.locator("#approvals")).not_to_contain_text("olga@sg")
    # Marks this page: a reload would lose it, so seeing it at the end proves none happened.
    olga.page.evaluate("window.consoleTestMarker = 'still the same page'")

    chen = sign_in("chen")
    chen.goto("/approvals")
    chen.page.locator(f"section.approval[data-order='{order.id}'] form.approve button").click()
    expect(chen.page).to_have_url(re.compile(f"/orders/{order.id}$"))

    expect(olga.page.locator("#order-state")).to_have_text("COMPLETED",
                                                          timeout=LIVE_TIMEOUT_MS)
    expect(olga.page.locator("#circuit-state")).to_have_text("ACTIVE")
    expect(olga.page.locator("#audit")).to_contain_text("circuit activated on both routers")
    assert olga.page.evaluate("window.consoleTestMarker") == "still the same page"
    assert_not_blank(olga.page.screenshot(full_page=True), stack.work / "order.png")
    vlan = order.spec.a_end_vlan_id
    with stack.router("sg-edge-1") as sg:
        assert (SG_IF, vlan) in subinterfaces(sg)


def test_reject_with_a_reason(stack: ConsoleStack, sign_in: SignIn) -> None:
    order = stack.create_order(bandwidth=50, description="to be \"rejected\"")
    stack.planned_hash("chen", order.id)
    chen = sign_in("chen")
    chen.goto("/approvals")
    card = chen.page.locator(f"section.approval[data-order='{order.id}']")
    card.locator("input[name=reason]").fill("Port \"XGE0/0/2\" is in maintenance until May")
    card.locator("form.reject button").click()
    expect(chen.page).to_have_url(re.compile(f"/orders/{order.id}$"))
    expect(chen.page.locator("#order-state")).to_have_text("REJECTED")
    expect(chen.page.locator("#audit")).to_contain_text("maintenance until May")
    rejected = stack.order(order.id)
    assert rejected.state == order_pb2.ORDER_STATE_REJECTED
    assert "maintenance until May" in rejected.audit_trail[-1].reason


def test_customer_token_cannot_sign_in_as_ops(stack: ConsoleStack, sign_in: SignIn) -> None:
    alice = sign_in("alice")
    expect(alice.page).to_have_url(re.compile("/signin$"))
    expect(alice.page.locator(".flash.error")).to_contain_text("not an operations token")
    alice.goto("/approvals")
    expect(alice.page).to_have_url(re.compile("/signin$"))


def test_forged_csrf_token_and_four_eyes_are_refused(stack: ConsoleStack,
                                                     sign_in: SignIn) -> None:
    order = stack.create_order(bandwidth=20)
    stack.planned_hash("olga", order.id)
    olga = sign_in("olga")
    olga.goto("/approvals")
    card = olga.page.locator(f"section.approval[data-order='{order.id}']")
    card.locator("form.approve input[name=csrf]").evaluate("field => field.value = 'forged'")
    card.locator("form.approve button").click()
    expect(olga.page.locator("#problem")).to_contain_text("CSRF check failed")

    alice_ops = sign_in("alice_ops")
    alice_ops.goto("/approvals")
    alice_ops.page.locator(
        f"section.approval[data-order='{order.id}'] form.approve button").click()
    expect(alice_ops.page.locator(".flash.error")).to_contain_text("Approval refused")
    sg = [a for a in stack.order(order.id).approvals if a.telco_id == "sg"]
    assert sg[0].state == order_pb2.APPROVAL_STATE_PENDING


def test_drift_shows_per_router_and_redeploy_clears_it(stack: ConsoleStack,
                                                       sign_in: SignIn) -> None:
    order = stack.create_order(bandwidth=100)
    stack.approve("olga", order.id)
    stack.approve("chen", order.id)
    stack.wait_order(order.id, order_pb2.ORDER_STATE_COMPLETED)
    circuit, vlan = order.circuit_id, order.spec.a_end_vlan_id
    with stack.router("sg-edge-1") as sg:
        sg.lock_candidate()
        try:
            sg.edit_candidate(
                '<config xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">'
                '<interfaces xmlns="http://openconfig.net/yang/interfaces"><interface>'
                f"<name>{SG_IF}</name><subinterfaces><subinterface><index>{vlan}</index>"
                '<rate-limit xmlns="urn:idc:yang:oc-rate-limit"><ingress><config>'
                "<cir>7000000</cir></config></ingress></rate-limit>"
                "</subinterface></subinterfaces></interface></interfaces></config>")
            sg.commit()
        finally:
            sg.unlock_candidate()

    olga = sign_in("olga")
    olga.goto(f"/circuits?q={circuit}")
    row = olga.page.locator(f"tr[data-circuit='{circuit}']")
    expect(row.locator(".sync-label[data-router='sg-edge-1']")).to_have_text("sg-edge-1: drift")
    expect(row.locator(".sync-label[data-router='cq-edge-1']")).to_have_text(
        "cq-edge-1: in sync")
    assert_not_blank(olga.page.screenshot(full_page=True), stack.work / "circuits.png")
    olga.page.locator("tr[data-device='sg-edge-1'] button").click()
    expect(olga.page.locator(".flash.error")).to_contain_text(
        f"drift on {circuit}")
    expect(olga.page.locator(".flash.error")).to_contain_text("running 7000000")

    row.locator("a").first.click()
    status = olga.page.locator(".sync-status[data-router='sg-edge-1']")
    expect(status).to_have_text("drift")
    olga.page.locator("form[action$='/redeploy'] button").click()
    expect(olga.page.locator(".flash.ok")).to_contain_text("Repair requested")
    expect(status).to_have_text("drift")  # nothing is sent before four eyes approved
    stack.approve_repairs(circuit)
    expect(status).to_have_text("in sync", timeout=LIVE_TIMEOUT_MS)
    expect(olga.page.locator("#log")).to_contain_text("CONFIRM")
    assert_not_blank(olga.page.screenshot(full_page=True), stack.work / "circuit.png")
    with stack.router("sg-edge-1") as sg:
        leaves = subinterfaces(sg)[(SG_IF, vlan)]
    assert {v for k, v in leaves.items() if k.endswith("/cir")} == {"100000000"}


def test_capacity_chart_and_ports(stack: ConsoleStack, sign_in: SignIn) -> None:
    order = stack.create_order(bandwidth=500)
    stack.approve("olga", order.id)
    stack.approve("chen", order.id)
    stack.wait_order(order.id, order_pb2.ORDER_STATE_COMPLETED)
    olga = sign_in("olga")
    olga.goto("/capacity")
    chart = olga.page.locator("#capacity-chart")
    expect(chart).to_be_visible()
    line = chart.locator("path.committed-line").get_attribute("d") or ""
    assert line.count("V") >= 2, "the committed line steps at least once"
    port = olga.page.locator("tr[data-port='sg-edge-1:xe-0/0/2']")
    expect(port).not_to_contain_text("Committed 0 Mbps")
    committed = int(port.locator("td").nth(3).inner_text().split()[0])
    assert committed >= 500
    assert_not_blank(olga.page.screenshot(full_page=True), stack.work / "capacity.png")
