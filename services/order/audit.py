"""The order service's audit chain per circuit: its audit entries and approval decisions
(see services/common/audit_chain.py); approval decisions signed by their telco's key."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from services.common.audit_chain import AuditChain, ChainedKind
from services.order.tables import (
    AUDIT_CHAIN,
    AUDIT_CHAIN_HEADS,
    ApprovalDecisionRow,
    AuditRow,
    OrderRow,
)


def _circuit_of_order(session: Session, row: Any) -> str | None:
    order = session.get(OrderRow, row.order_id)
    return order.circuit_id if order is not None else None


def _ids(model: Any) -> Any:
    def of_circuits(circuit_ids: Sequence[str]) -> Select[str, int]:
        return (select(OrderRow.circuit_id, model.id)
                .join(OrderRow, OrderRow.id == model.order_id)
                .where(OrderRow.circuit_id.in_(circuit_ids)))
    return of_circuits


KINDS = (
    ChainedKind("order_audit", AuditRow, _circuit_of_order, _ids(AuditRow)),
    ChainedKind("approval", ApprovalDecisionRow, _circuit_of_order, _ids(ApprovalDecisionRow),
                signer_of=lambda row: row.telco_id),
)


def order_chain(signing_keys: Mapping[str, Ed25519PrivateKey]) -> AuditChain:
    return AuditChain(AUDIT_CHAIN, AUDIT_CHAIN_HEADS, KINDS, signing_keys)
