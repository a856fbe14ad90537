"""The provisioning service's audit chain per circuit: its provisioning log entries and
repair decisions (see services/common/audit_chain.py)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from services.common.audit_chain import AuditChain, ChainedKind
from services.provisioning.tables import (
    AUDIT_CHAIN,
    AUDIT_CHAIN_HEADS,
    LogEntry,
    RepairDecisionRow,
    RepairPlan,
)


def _repair_circuit(session: Session, row: Any) -> str | None:
    plan = session.get(RepairPlan, row.repair_id)
    return plan.circuit_id if plan is not None else None


def _repair_ids(circuit_id: str) -> Select[Any]:
    return (select(RepairDecisionRow.id)
            .join(RepairPlan, RepairPlan.repair_id == RepairDecisionRow.repair_id)
            .where(RepairPlan.circuit_id == circuit_id))


KINDS = (
    ChainedKind("provisioning_log", LogEntry, lambda _s, row: row.circuit_id,
                lambda circuit_id: select(LogEntry.id).where(LogEntry.circuit_id == circuit_id)),
    ChainedKind("repair_decision", RepairDecisionRow, _repair_circuit, _repair_ids),
)


def provisioning_chain() -> AuditChain:
    return AuditChain(AUDIT_CHAIN, AUDIT_CHAIN_HEADS, KINDS)
