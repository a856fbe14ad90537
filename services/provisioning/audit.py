"""The provisioning service's audit chain per circuit: its provisioning log entries and
repair decisions (see services/common/audit_chain.py)."""

from __future__ import annotations

from collections.abc import Sequence
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


def _log_ids(circuit_ids: Sequence[str]) -> Select[str, int]:
    return select(LogEntry.circuit_id, LogEntry.id).where(LogEntry.circuit_id.in_(circuit_ids))


def _repair_ids(circuit_ids: Sequence[str]) -> Select[str, int]:
    return (select(RepairPlan.circuit_id, RepairDecisionRow.id)
            .join(RepairPlan, RepairPlan.repair_id == RepairDecisionRow.repair_id)
            .where(RepairPlan.circuit_id.in_(circuit_ids)))


KINDS = (
    ChainedKind("provisioning_log", LogEntry, lambda _s, row: row.circuit_id, _log_ids),
    ChainedKind("repair_decision", RepairDecisionRow, _repair_circuit, _repair_ids),
)


def provisioning_chain() -> AuditChain:
    return AuditChain(AUDIT_CHAIN, AUDIT_CHAIN_HEADS, KINDS)
