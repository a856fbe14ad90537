"""The tamper-evident audit on the running stack: an order run to ACTIVE leaves intact chains
in the order and provisioning services; an entry edited or deleted directly in a database,
and a forged approval signature, are each reported by `idcctl audit verify`."""

from __future__ import annotations

import base64
import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from devstack.run import RunningStack
from tests.integration.cli.conftest import Idcctl, active_circuit

pytestmark = pytest.mark.integration

SPEC = ["--a-end", "sg-edge-1:xe-0/0/3", "--z-end", "cq-edge-1:XGE0/0/3", "--bandwidth", "100"]
TAMPERED = 9


def _json(out: Any) -> Any:
    assert out.code == 0, out.stderr
    return json.loads(out.stdout)


@contextmanager
def _db(stack: RunningStack, service: str) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(stack.var_dir / f"{service}.db", timeout=30)
    try:
        with connection:
            yield connection
    finally:
        connection.close()


def _repaired(idcctl: Idcctl, circuit_id: str) -> dict[str, Any]:
    """A repair requested by ops-sg, approved by ops-cq and ops-sg-2, run to its end."""
    repair = _json(idcctl("ops", "redeploy", circuit_id, "-o", "json", token="ops-sg"))["repair"]
    own = {p["telcoId"]: p["sha256"] for p in repair["payloads"]}
    mine = idcctl("ops", "repair", "approve", repair["repairId"], "--sha256", own["sg"],
                  token="ops-sg")
    assert mine.code == 5, "four eyes: the requester cannot approve"
    for token, telco in (("ops-cq", "cq"), ("ops-sg-2", "sg")):
        done = idcctl("ops", "repair", "approve", repair["repairId"], "--sha256", own[telco],
                      "-o", "json", token=token)
        repair = _json(done)["repair"]
    assert repair["state"] == "REPAIR_STATE_STARTED"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        log = _json(idcctl("ops", "config", circuit_id, "-o", "json", token="ops-sg"))["log"]
        if any(e.get("sagaId") == repair["sagaId"] and e.get("message", "").startswith("saga ")
               for e in log):
            return dict(repair)
        time.sleep(0.3)
    raise AssertionError("the repair's saga did not finish")


def _verify(idcctl: Idcctl, circuit_id: str) -> Any:
    return idcctl("audit", "verify", circuit_id, token="ops-sg")


def test_verify_finds_an_edited_entry_a_deleted_one_and_a_forged_signature(
    stack: RunningStack, idcctl: Idcctl
) -> None:
    circuit_id = active_circuit(idcctl, SPEC)
    repair = _repaired(idcctl, circuit_id)
    intact = _verify(idcctl, circuit_id)
    assert intact.code == 0, intact.stdout + intact.stderr
    assert "chain intact" in intact.stdout
    counts = _json(idcctl("audit", "verify", circuit_id, "-o", "json", token="ops-sg"))
    # Order audit entries and two approvals; two sagas' steps on both routers and the
    # repair's decisions (requested, two approvals, started).
    assert counts["per_service"]["order"] >= 6 and counts["per_service"]["provisioning"] >= 14
    with _db(stack, "provisioning") as db:
        kinds = dict(db.execute("SELECT kind, count(*) FROM audit_chain WHERE circuit_id = ? "
                                "GROUP BY kind", (circuit_id,)).fetchall())
        actors = {a for (a,) in db.execute(
            "SELECT DISTINCT actor FROM provisioning_log WHERE saga_id = ?", (repair["sagaId"],))}
    assert kinds["repair_decision"] == 4
    assert len(actors) == 1 and "," in actors.pop(), "the repair's steps name both approvers"

    # An audit entry edited with SQL is found: its service, sequence and content.
    with _db(stack, "order") as db:
        entry_id, reason = db.execute(
            "SELECT a.id, a.reason FROM order_audit a JOIN orders o ON o.id = a.order_id "
            "WHERE o.circuit_id = ? ORDER BY a.id LIMIT 1", (circuit_id,)).fetchone()
        seq = db.execute(
            "SELECT seq FROM audit_chain WHERE circuit_id = ? AND kind = 'order_audit' "
            "AND entry_id = ?", (circuit_id, str(entry_id))).fetchone()[0]
        db.execute("UPDATE order_audit SET reason = 'nothing happened' WHERE id = ?", (entry_id,))
    edited = _verify(idcctl, circuit_id)
    assert edited.code == TAMPERED, edited.stdout + edited.stderr
    assert f"order: sequence {seq} (order_audit {entry_id})" in edited.stdout
    assert "nothing happened" in edited.stdout
    with _db(stack, "order") as db:
        db.execute("UPDATE order_audit SET reason = ? WHERE id = ?", (reason, entry_id))
    assert _verify(idcctl, circuit_id).code == 0

    # A provisioning log entry deleted with SQL is found.
    with _db(stack, "provisioning") as db:
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT * FROM provisioning_log WHERE circuit_id = ? ORDER BY id "
                         "LIMIT 1", (circuit_id,)).fetchone()
        seq = db.execute("SELECT seq FROM audit_chain WHERE circuit_id = ? AND kind = "
                         "'provisioning_log' AND entry_id = ?",
                         (circuit_id, str(row["id"]))).fetchone()[0]
        db.execute("DELETE FROM provisioning_log WHERE id = ?", (row["id"],))
    deleted = _verify(idcctl, circuit_id)
    assert deleted.code == TAMPERED, deleted.stdout + deleted.stderr
    assert f"provisioning: sequence {seq} (provisioning_log {row['id']})" in deleted.stdout
    assert "gone" in deleted.stdout
    with _db(stack, "provisioning") as db:
        columns = list(row.keys())
        db.execute(f"INSERT INTO provisioning_log ({', '.join(columns)}) VALUES "
                   f"({', '.join('?' for _ in columns)})", tuple(row))
    assert _verify(idcctl, circuit_id).code == 0

    # An approval whose signature was forged (signed by another key) is found.
    with _db(stack, "order") as db:
        seq, entry_id = db.execute(
            "SELECT seq, entry_id FROM audit_chain WHERE circuit_id = ? AND kind = 'approval' "
            "ORDER BY seq LIMIT 1", (circuit_id,)).fetchone()
        forged = base64.b64encode(Ed25519PrivateKey.generate().sign(b"approved")).decode()
        db.execute("UPDATE audit_chain SET signature = ? WHERE circuit_id = ? AND seq = ?",
                   (forged, circuit_id, seq))
    signed = _verify(idcctl, circuit_id)
    assert signed.code == TAMPERED, signed.stdout + signed.stderr
    assert f"order: sequence {seq} (approval {entry_id})" in signed.stdout
    assert "signature does not verify" in signed.stdout


def test_only_staff_read_the_chains(idcctl: Idcctl) -> None:
    denied = idcctl("audit", "verify", "cct-any", token="customer")
    assert denied.code == 5, denied.stdout + denied.stderr
