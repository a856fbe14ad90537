"""idcctl against a running stack: help, JSON for scripts, errors and exit codes, and
each role's commands (the full happy path is the demo, tests/integration/test_trace.py)."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
from typing import Any

import pytest

from devstack.process import free_port
from devstack.run import RunningStack
from services.cli.main import build_parser
from tests.integration.cli.conftest import Idcctl

pytestmark = pytest.mark.integration

SPEC = ["--a-end", "sg-edge-1:xe-0/0/2", "--z-end", "cq-edge-1:XGE0/0/2", "--bandwidth", "100"]


def _leaves(parser: argparse.ArgumentParser, path: list[str]) -> list[list[str]]:
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subparsers:
        return [path]
    return [
        leaf for name, child in subparsers[0].choices.items()
        for leaf in _leaves(child, [*path, name])
    ]


def test_every_subcommand_has_help_that_reads_well() -> None:
    leaves = _leaves(build_parser(), [])
    # 37 + ops repair list|approve|reject, ops history, audit verify, billing close|job|
    # completeness|reconcile, billing credit-note issue|list|show|export
    assert len(leaves) == 51
    for path in leaves:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exited:
            build_parser().parse_args([*path, "--help"])
        assert exited.value.code == 0
        text = out.getvalue()
        assert text.startswith(f"usage: idcctl {' '.join(path)}"), text
        assert "--output" in text and "--token" in text, f"{path}: no connection options"
        description = text.split("\n\n")[1]
        assert len(description) > 15, f"{path}: no description"


def test_top_level_help_lists_roles_environment_and_exit_codes(idcctl: Idcctl) -> None:
    out = idcctl("--help", installed=True)
    assert out.code == 0
    for text in ("customer", "ops", "billing", "admin", "IDC_TOKEN", "IDC_ORDER_ADDRESS",
                 "exit codes", "8  watch"):
        assert text in out.stdout


def _json(out: Any) -> Any:
    assert out.code == 0, out.stderr
    return json.loads(out.stdout)


def test_reads_give_json_for_scripts(idcctl: Idcctl) -> None:
    sites = _json(idcctl("customer", "sites", "--output", "json", installed=True))
    ports = {p["id"] for s in sites["sites"] for p in s["ports"]}
    assert "sg-edge-1:xe-0/0/2" in ports
    devices = _json(idcctl("ops", "devices", "-o", "json", token="ops-sg"))
    # The production routers and the simulated sandbox ones (README "Sandbox").
    assert {d["name"] for d in devices["devices"]} == {
        "sg-edge-1", "cq-edge-1", "sg-sandbox-edge", "cq-sandbox-edge"}
    assert all(d["reachable"] for d in devices["devices"])
    assert {d["name"] for d in devices["devices"] if d.get("sandbox")} == {
        "sg-sandbox-edge", "cq-sandbox-edge"}
    sync = _json(idcctl("ops", "check-sync", "-o", "json", token="ops-cq"))
    assert len(sync["devices"]) == 4
    capacity = _json(idcctl("ops", "capacity", "-o", "json", token="ops-sg"))
    assert capacity["capacity"]["channelCapacityMbps"] == "260000"
    quote = _json(idcctl("customer", "quote", *SPEC, "-o", "json"))
    assert quote["quote"]["feasible"] is True
    assert quote["quote"]["price"]["mrc"]["amount"]
    assert _json(idcctl("billing", "invoices", "-o", "json", token="billing")) == {}


def test_a_refused_field_prints_the_violations_and_exits_3(idcctl: Idcctl) -> None:
    out = idcctl("customer", "quote", "--a-end", "sg-edge-1:xe-9/9/9", "--z-end",
                 "cq-edge-1:XGE0/0/2", "--bandwidth", "3", installed=True)
    assert out.code == 3
    assert "Traceback" not in out.stderr
    assert out.stderr.startswith("error: INVALID_ARGUMENT: ")
    assert "  spec.a_end_port_id: port 'sg-edge-1:xe-9/9/9' does not exist" in out.stderr
    assert "  spec.bandwidth_mbps: 3 Mbps is not offered" in out.stderr
    as_json = idcctl("customer", "quote", "--a-end", "nowhere", "--z-end", "cq-edge-1:XGE0/0/2",
                     "--bandwidth", "100", "-o", "json")
    assert as_json.code == 3 and as_json.stdout == ""
    error = json.loads(as_json.stderr)["error"]
    assert error["code"] == "INVALID_ARGUMENT"
    assert [v["field"] for v in error["field_violations"]] == ["spec.a_end_port_id"]


def test_exit_codes_for_auth_not_found_and_unreachable(idcctl: Idcctl) -> None:
    denied = idcctl("ops", "pending", token="customer")
    assert denied.code == 5 and "PERMISSION_DENIED" in denied.stderr
    unknown = idcctl("customer", "sites", env={"IDC_TOKEN": "idc_not-a-token"})
    assert unknown.code == 5 and "UNAUTHENTICATED" in unknown.stderr
    missing = idcctl("customer", "orders", "ord-does-not-exist")
    assert missing.code == 4 and "NOT_FOUND" in missing.stderr
    closed = f"127.0.0.1:{free_port()}"
    unreachable = idcctl("customer", "sites", "--order-address", closed, "--deadline", "3")
    assert unreachable.code == 7 and closed in unreachable.stderr
    usage = idcctl("billing", "run", "--month", "May 2026", token="billing")
    assert usage.code == 2 and "is not a month like 2026-05" in usage.stderr


def test_rejected_order_watch_exits_8_and_the_customer_sees_why(idcctl: Idcctl) -> None:
    order = _json(idcctl("customer", "order", *SPEC, "-o", "json"))["order"]
    listed = _json(idcctl("customer", "orders", "--state", "PENDING_APPROVAL", "-o", "json"))
    assert order["id"] in {o["id"] for o in listed["orders"]}
    wrong = idcctl("ops", "approve", order["id"], "--sha256", "0" * 64, token="ops-sg")
    assert wrong.code in (4, 6), wrong.stderr  # no plan yet, or the hash does not match
    rejected = idcctl("ops", "reject", order["id"], "--reason", "port under maintenance",
                      token="ops-cq")
    assert rejected.code == 0, rejected.stderr
    watched = idcctl("customer", "watch", order["id"])
    assert watched.code == 8
    assert "REJECTED" in watched.stdout and "port under maintenance" in watched.stdout
    again = idcctl("ops", "reject", order["id"], "--reason", "twice", token="ops-cq")
    assert again.code == 6 and "FAILED_PRECONDITION" in again.stderr
    cancelled = idcctl("customer", "cancel", order["id"])
    assert cancelled.code == 6


def test_cancel_an_order_and_list_circuits(idcctl: Idcctl) -> None:
    order = _json(idcctl("customer", "order", *SPEC, "--request-id", "cli-cancel-1",
                         "-o", "json"))["order"]
    same = _json(idcctl("customer", "order", *SPEC, "--request-id", "cli-cancel-1",
                        "-o", "json"))["order"]
    assert same["id"] == order["id"], "the request id makes ordering idempotent"
    assert _json(idcctl("customer", "cancel", order["id"], "--reason", "changed plans",
                        "-o", "json"))["order"]["state"] == "ORDER_STATE_CANCELLED"
    circuit = _json(idcctl("customer", "circuits", order["circuitId"], "-o", "json"))
    assert circuit["circuit"]["id"] == order["circuitId"]
    table = idcctl("customer", "circuits")
    assert table.code == 0 and order["circuitId"][:20] in table.stdout.replace("\n", "")


def _refused(idcctl: Idcctl, env: dict[str, str], timeout_s: float = 15.0) -> bool:
    """True once the token in ``env`` is refused (exit 5) by order and billing; the stated
    bound is about 2 s, the wait allows for a loaded machine."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(idcctl(*argv, env=env).code == 5
               for argv in (("customer", "orders"), ("customer", "invoices"))):
            return True
        time.sleep(0.1)
    return False


def test_admin_tokens_through_the_issuer_api(idcctl: Idcctl) -> None:
    issued = _json(idcctl("admin", "tokens", "issue", "--role", "customer", "--tenant",
                          "acme-us", "--subject", "bob@acme-us", "--ttl", "2d", "-o", "json",
                          token="admin"))
    token, token_id = issued["token"], issued["info"]["tokenId"]
    as_bob = {"IDC_TOKEN": token}
    assert idcctl("customer", "orders", env=as_bob).code == 0
    assert idcctl("customer", "invoices", env=as_bob).code == 0
    assert idcctl("ops", "devices", env=as_bob).code == 5  # a valid token, but not ops
    listed = _json(idcctl("admin", "tokens", "list", "-o", "json", token="admin"))
    assert token_id in {t["tokenId"] for t in listed["tokens"]}
    assert token not in json.dumps(listed)
    # Only admins reach the issuer.
    assert idcctl("admin", "tokens", "list", token="ops-sg").code == 5

    rotated = _json(idcctl("admin", "tokens", "rotate", token_id, "-o", "json", token="admin"))
    assert rotated["info"]["principalId"] == issued["info"]["principalId"]
    assert _refused(idcctl, as_bob)
    as_new_bob = {"IDC_TOKEN": rotated["token"]}
    assert idcctl("customer", "orders", env=as_new_bob).code == 0
    revoked = idcctl("admin", "tokens", "revoke", rotated["info"]["tokenId"], token="admin")
    assert revoked.code == 0 and "revoked" in revoked.stdout
    assert _refused(idcctl, as_new_bob)
    assert idcctl("admin", "tokens", "revoke", "no-such-token", token="admin").code == 4
    bad = idcctl("admin", "tokens", "issue", "--role", "ops", "--subject", "x", token="admin")
    assert bad.code == 3 and "telco" in bad.stderr
    too_long = idcctl("admin", "tokens", "issue", "--role", "admin", "--subject", "x",
                      "--ttl", "365d", token="admin")
    assert too_long.code == 3 and "ttl" in too_long.stderr


def test_bootstrap_signs_a_short_lived_admin_token_offline(
    idcctl: Idcctl, stack: RunningStack
) -> None:
    key = str(stack.var_dir / "token-signing-key.json")
    assert idcctl("admin", "tokens", "bootstrap", "--signing-key", key, "--ttl", "2h").code == 2
    boot = _json(idcctl("admin", "tokens", "bootstrap", "--signing-key", key, "-o", "json"))
    assert boot["ttl_s"] == 3600
    issued = idcctl("admin", "tokens", "issue", "--role", "billing_admin", "--subject",
                    "new@billing", env={"IDC_TOKEN": boot["token"]})
    assert issued.code == 0 and issued.stdout.startswith("idc_")


def test_ops_show_redeploy_and_billing_dry_run(idcctl: Idcctl) -> None:
    redeploy = idcctl("ops", "redeploy", "cct-unknown", "--dry-run", token="ops-sg")
    assert redeploy.code == 4, redeploy.stderr
    show = idcctl("ops", "show", "ord-unknown", token="ops-sg")
    assert show.code == 4
    run = idcctl("billing", "run", "--dry-run", "-o", "json", token="billing")
    summary = _json(run)
    assert summary["dryRun"] is True
    finalize = idcctl("billing", "finalize", "inv-unknown", token="billing")
    assert finalize.code == 4
    export = idcctl("customer", "invoice", "export", "inv-unknown", "--format", "csv")
    assert export.code == 4


def test_billing_reconcile_reports_both_ends_of_a_month(idcctl: Idcctl) -> None:
    report = _json(idcctl("billing", "reconcile", "--month", "2026-01", "-o", "json",
                          token="billing"))
    assert report.get("tolerancePercent") == "1"
    table = idcctl("billing", "reconcile", "--month", "2026-01", "--differences",
                   token="billing")
    assert table.code == 0 and "Reconciliation 2026-01" in table.stdout, table.stderr
    refused = idcctl("billing", "reconcile", "--month", "2026-01")  # a customer's token
    assert refused.code == 5
    assert idcctl("billing", "reconcile", token="billing").code == 2  # --month is required
