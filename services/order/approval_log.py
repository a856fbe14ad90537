"""Approval decisions as an append-only history: every approval, rejection, supersession,
expiry or reopening is a new ``approval_decisions`` row; nothing is overwritten. The
``approvals`` row of a side is the current decision (the newest entry), kept beside it so
the order's readers stay one join, and written only here, together with its entry."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.common.paging import PageRequest, after, page_of
from services.order.domain.lifecycle import ApprovalState
from services.order.tables import ApprovalDecisionRow, ApprovalRow


def decide(session: Session, row: ApprovalRow, state: ApprovalState, at: datetime, *,
           approver: str | None = None, payload_sha256: str | None = None,
           comment: str | None = None) -> ApprovalDecisionRow:
    """Record ``state`` for ``row``'s side: fields not given keep the current decision's
    (a supersession keeps who approved which hash)."""
    row.state = state.value
    if approver is not None:
        row.approver = approver
    if payload_sha256 is not None:
        row.payload_sha256 = payload_sha256
    if comment is not None:
        row.comment = comment
    row.decided_at = at
    entry = ApprovalDecisionRow(
        order_id=row.order_id, side=row.side, telco_id=row.telco_id, state=row.state,
        approver=row.approver, payload_sha256=row.payload_sha256, comment=row.comment,
        decided_at=at)
    session.add(entry)
    return entry


def history(session: Session, order_id: str, page: PageRequest
            ) -> tuple[list[ApprovalDecisionRow], str]:
    """One page of the order's decisions, oldest first, and the next page's token."""
    query = (select(ApprovalDecisionRow).where(ApprovalDecisionRow.order_id == order_id)
             .order_by(ApprovalDecisionRow.id).limit(page.limit + 1))
    if page.after is not None:
        query = query.where(after((ApprovalDecisionRow.id,), page.after, descending=False))
    return page_of(session.scalars(query).all(), page, lambda row: (row.id,))
