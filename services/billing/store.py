"""SQL repository of the billing service (SQLite and PostgreSQL).

Each method is one transaction. Invoice writes lock the invoice row first, so a billing
run and a finalisation never interleave on one invoice.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from services.billing.domain.boosts import BoostChange
from services.billing.domain.contracts import ChangeKind, ContractChange, PriceTerms
from services.billing.domain.money import format_amount
from services.billing.domain.rating import (
    BillingMonth,
    BoostEvidence,
    BurstEvidence,
    Line,
    LineKind,
)
from services.billing.invoices import (
    InvoiceDraft,
    InvoiceState,
    SaveOutcome,
    StoredInvoice,
    StoredLine,
    line_id_for,
)
from services.billing.tables import (
    BillingRunRow,
    BoostChangeRow,
    CircuitChangeRow,
    InvoiceLineRow,
    InvoiceNumberRow,
    InvoiceRow,
)
from services.billing.usage_reads import UsageReads
from services.common.db import transaction
from services.common.errors import FailedPrecondition, NotFound
from services.common.paging import PageRequest, after, page_of

_Row = TypeVar("_Row", CircuitChangeRow, BoostChangeRow)
_T = TypeVar("_T")

# ListInvoices: newest month first, then by tenant and id (descending or not, by column).
INVOICE_ORDER = (True, True, False, False)


@dataclass(frozen=True)
class InvoiceFilter:
    tenant_id: str | None = None
    billing_entity_id: str | None = None
    month: BillingMonth | None = None
    state: InvoiceState | None = None


class SqlBillingStore(UsageReads):
    """Contracts, invoices and runs; the usage reads are :class:`UsageReads`."""

    @property
    def session_factory(self) -> sessionmaker[Session]:
        return self._factory

    # -- contracts ----------------------------------------------------------------------

    def changes(self, as_of: datetime) -> dict[str, list[ContractChange]]:
        """Every circuit's changes received up to ``as_of``."""
        return self._received(CircuitChangeRow, as_of, _change)

    def boosts(self, as_of: datetime) -> dict[str, list[BoostChange]]:
        """Every circuit's boost raises and reverts received up to ``as_of``."""
        return self._received(BoostChangeRow, as_of, _boost_change)

    def _received(
        self, model: type[_Row], as_of: datetime, convert: Callable[[_Row], _T]
    ) -> dict[str, list[_T]]:
        with self._factory() as session:
            rows = session.scalars(select(model).where(model.received_at <= as_of)).all()
        by_circuit: dict[str, list[_T]] = defaultdict(list)
        for row in rows:
            by_circuit[row.circuit_id].append(convert(row))
        return dict(by_circuit)

    def purchase_orders(
        self, circuit_ids: Collection[str], before: datetime, as_of: datetime
    ) -> dict[str, str]:
        """Each circuit's purchase-order number as of its latest change effective before
        ``before`` and received up to ``as_of`` (an invoice's month end and usage cut-off,
        so a re-export prints the same); circuits without one are left out."""
        with self._factory() as session:
            rows = session.execute(
                select(CircuitChangeRow.circuit_id, CircuitChangeRow.purchase_order)
                .where(
                    CircuitChangeRow.circuit_id.in_(sorted(set(circuit_ids))),
                    CircuitChangeRow.effective_time < before,
                    CircuitChangeRow.received_at <= as_of,
                )
                .order_by(CircuitChangeRow.effective_time, CircuitChangeRow.id)
            ).all()
        latest = {circuit: purchase_order for circuit, purchase_order in rows}
        return {circuit: po for circuit, po in latest.items() if po}

    def tenants_with_changes(self, tenant_ids: Sequence[str], as_of: datetime) -> set[str]:
        """Those of ``tenant_ids`` with a circuit change received up to ``as_of``."""
        with self._factory() as session:
            return set(session.scalars(
                select(CircuitChangeRow.tenant_id).distinct().where(
                    CircuitChangeRow.tenant_id.in_(list(tenant_ids)),
                    CircuitChangeRow.received_at <= as_of,
                )
            ))

    # -- invoices -----------------------------------------------------------------------

    def invoice(self, invoice_id: str) -> StoredInvoice | None:
        with self._factory() as session:
            row = session.get(InvoiceRow, invoice_id)
            return None if row is None else _stored(session, row)

    def finalized_before(self, tenant_id: str, month: BillingMonth) -> list[StoredInvoice]:
        with self._factory() as session:
            rows = session.scalars(
                select(InvoiceRow)
                .where(
                    InvoiceRow.tenant_id == tenant_id,
                    InvoiceRow.state == InvoiceState.FINALIZED.name,
                    (InvoiceRow.year * 12 + InvoiceRow.month) < month.year * 12 + month.month,
                )
                .order_by(InvoiceRow.year, InvoiceRow.month)
            ).all()
            return [_stored(session, row) for row in rows]

    def tenants_with_finalized_before(self, month: BillingMonth) -> set[str]:
        with self._factory() as session:
            return set(session.scalars(
                select(InvoiceRow.tenant_id).distinct().where(
                    InvoiceRow.state == InvoiceState.FINALIZED.name,
                    (InvoiceRow.year * 12 + InvoiceRow.month) < month.year * 12 + month.month,
                )
            ))

    def billed_so_far(
        self, invoice: StoredInvoice, excluding_invoice_id: str
    ) -> dict[str, Decimal]:
        """Per line key of ``invoice``: its amount plus adjustments on other invoices."""
        billed: dict[str, Decimal] = defaultdict(Decimal)
        for stored in invoice.lines:
            billed[stored.line.key] += stored.line.amount
        with self._factory() as session:
            rows = session.execute(
                select(InvoiceLineRow.adjusts_line_key, InvoiceLineRow.amount).where(
                    InvoiceLineRow.adjusts_invoice_id == invoice.id,
                    InvoiceLineRow.invoice_id != excluding_invoice_id,
                )
            ).all()
        for key, amount in rows:
            billed[key] += Decimal(amount)
        return dict(billed)

    def list_invoices(
        self, where: InvoiceFilter, page: PageRequest
    ) -> tuple[list[StoredInvoice], str]:
        """One page of invoices, newest month first, and the next page's token."""
        key = (InvoiceRow.year, InvoiceRow.month, InvoiceRow.tenant_id, InvoiceRow.id)
        query = select(InvoiceRow)
        if page.after is not None:
            query = query.where(after(key, page.after, descending=INVOICE_ORDER))
        if where.tenant_id:
            query = query.where(InvoiceRow.tenant_id == where.tenant_id)
        if where.billing_entity_id:
            query = query.where(InvoiceRow.billing_entity_id == where.billing_entity_id)
        if where.month is not None:
            query = query.where(
                InvoiceRow.year == where.month.year, InvoiceRow.month == where.month.month
            )
        if where.state is not None:
            query = query.where(InvoiceRow.state == where.state.name)
        query = query.order_by(
            *(column.desc() if down else column for column, down in zip(
                key, INVOICE_ORDER, strict=True))
        ).limit(page.limit + 1)
        with self._factory() as session:
            rows, next_page_token = page_of(
                session.scalars(query).all(), page,
                lambda row: (row.year, row.month, row.tenant_id, row.id))
            return [_stored(session, row) for row in rows], next_page_token

    def save(
        self, draft: InvoiceDraft, run_id: str, as_of: datetime, now: datetime
    ) -> SaveOutcome:
        """Create or recompute the draft in place, in one transaction; finalised: untouched."""
        fingerprint = draft.content_hash()
        with transaction(self._factory) as session:
            row = session.scalars(
                select(InvoiceRow).where(InvoiceRow.id == draft.id).with_for_update()
            ).first()
            if row is not None and row.state == InvoiceState.FINALIZED.name:
                return SaveOutcome.SKIPPED_FINALIZED
            if row is not None and row.content_hash == fingerprint:
                row.as_of_time, row.billing_run_id, row.updated_at = as_of, run_id, now
                return SaveOutcome.UNCHANGED
            outcome = SaveOutcome.UPDATED
            if row is None:
                outcome = SaveOutcome.CREATED
                row = InvoiceRow(id=draft.id, created_at=now, state=InvoiceState.DRAFT.name)
                session.add(row)
            else:
                session.execute(delete(InvoiceLineRow).where(InvoiceLineRow.invoice_id == row.id))
            _fill_header(row, draft, fingerprint, run_id, as_of, now)
            session.flush()
            session.add_all(_line_rows(draft))
            return outcome

    def finalize(
        self, invoice_id: str, now: datetime, prefix: str, payment_terms_days: int
    ) -> StoredInvoice:
        """Number the draft in its entity's sequence, issue it ``now`` and fix its due date
        (the issue date in the invoice's time zone plus the terms)."""
        with transaction(self._factory) as session:
            row = session.scalars(
                select(InvoiceRow).where(InvoiceRow.id == invoice_id).with_for_update()
            ).first()
            if row is None:
                raise NotFound(f"invoice {invoice_id} does not exist")
            if row.state == InvoiceState.FINALIZED.name:
                return _stored(session, row)
            if row.state != InvoiceState.DRAFT.name:
                raise FailedPrecondition(f"invoice {invoice_id} is {row.state}, not DRAFT")
            counter = session.scalars(
                select(InvoiceNumberRow)
                .where(InvoiceNumberRow.billing_entity_id == row.billing_entity_id)
                .with_for_update()
            ).first()
            if counter is None:
                counter = InvoiceNumberRow(billing_entity_id=row.billing_entity_id, last_number=0)
                session.add(counter)
            counter.last_number += 1
            row.number = f"{prefix}-{row.year:04d}-{row.month:02d}-{counter.last_number:06d}"
            row.state = InvoiceState.FINALIZED.name
            row.finalized_at = now
            issued = now.astimezone(ZoneInfo(row.time_zone)).date()
            row.due_date = issued + timedelta(days=payment_terms_days)
            session.flush()
            return _stored(session, row)

    # -- runs ---------------------------------------------------------------------------

    def start_run(
        self, run_id: str, month: BillingMonth, entity_id: str, as_of: datetime, now: datetime
    ) -> None:
        with transaction(self._factory) as session:
            session.add(
                BillingRunRow(
                    id=run_id, year=month.year, month=month.month, billing_entity_id=entity_id,
                    as_of_time=as_of, started_at=now, finished_at=None, summary="{}",
                )
            )

    def finish_run(self, run_id: str, summary: dict[str, object], now: datetime) -> None:
        with transaction(self._factory) as session:
            row = session.get(BillingRunRow, run_id)
            if row is None:
                raise NotFound(f"billing run {run_id} does not exist")
            row.finished_at = now
            row.summary = json.dumps(summary, sort_keys=True)


def _change(row: CircuitChangeRow) -> ContractChange:
    return ContractChange(
        circuit_id=row.circuit_id,
        tenant_id=row.tenant_id,
        kind=ChangeKind(row.kind),
        effective_time=row.effective_time,
        bandwidth_mbps=row.bandwidth_mbps,
        price=PriceTerms(
            currency=row.currency,
            mrc=Decimal(row.mrc),
            nrc=Decimal(row.nrc),
            burst_price_per_mbps=Decimal(row.burst_price),
            term_months=row.term_months,
            price_book_version=row.price_book_version,
            termination_share=Decimal(row.termination_share),
        ),
        event_id=row.event_id,
    )


def _boost_change(row: BoostChangeRow) -> BoostChange:
    return BoostChange(
        circuit_id=row.circuit_id, boost_id=row.boost_id, revert=row.revert,
        effective_time=row.effective_time, base_mbps=row.base_mbps,
        boosted_mbps=row.boosted_mbps, start_time=row.start_time, end_time=row.end_time,
        currency=row.currency, price_per_mbps_hour=Decimal(row.price_per_mbps_hour),
        event_id=row.event_id,
    )


def _fill_header(
    row: InvoiceRow, draft: InvoiceDraft, fingerprint: str, run_id: str,
    as_of: datetime, now: datetime,
) -> None:
    entity, customer = draft.entity, draft.customer
    row.tenant_id = customer.tenant_id
    row.billing_entity_id = entity.id
    row.year, row.month = draft.month.year, draft.month.month
    row.time_zone = str(customer.time_zone)
    row.currency = draft.currency
    row.subtotal = format_amount(draft.totals.subtotal)
    row.tax_rate = format_amount(entity.tax_rate)
    row.tax = format_amount(draft.totals.tax)
    row.total = format_amount(draft.totals.total)
    row.content_hash = fingerprint
    row.issuer_legal_name = entity.legal_name
    row.issuer_address = entity.address
    row.issuer_tax_id = entity.tax_id
    row.tax_label = entity.tax_label
    row.customer_legal_name = customer.legal_name
    row.customer_address = customer.address
    row.as_of_time = as_of
    row.billing_run_id = run_id
    row.updated_at = now


def _line_rows(draft: InvoiceDraft) -> Iterable[InvoiceLineRow]:
    for position, line in enumerate(draft.lines):
        burst = line.burst
        yield InvoiceLineRow(
            id=line_id_for(draft.id, line.key),
            invoice_id=draft.id,
            position=position,
            line_key=line.key,
            kind=int(line.kind),
            circuit_id=line.circuit_id,
            description=line.description[:500],
            segment_start=line.segment_start,
            segment_end=line.segment_end,
            days_covered=line.days_covered,
            days_in_month=line.days_in_month,
            factor=format_amount(line.factor),
            unit_price=format_amount(line.unit_price),
            bandwidth_mbps=line.bandwidth_mbps,
            amount=format_amount(line.amount),
            samples_expected=None if burst is None else burst.samples_expected,
            samples_present=None if burst is None else burst.samples_present,
            samples_discarded=None if burst is None else burst.samples_discarded,
            billed_sample_mbps=None if burst is None else burst.billed_sample_mbps,
            billed_sample_time=None if burst is None else burst.billed_sample_time,
            billed_direction=None if burst is None else burst.billed_direction,
            billed_sample_bps=None if burst is None else _fraction_text(burst.billed_sample_bps),
            cir_mbps=None if burst is None else burst.cir_mbps,
            overage_mbps=None if burst is None else burst.overage_mbps,
            intervals_lost=None if burst is None else burst.intervals_lost,
            samples_in_boost=None if burst is None else burst.samples_in_boost,
            **_boost_columns(line.boost),
            reconciliation=line.reconciliation,
            adjusts_invoice_id=line.adjusts_invoice_id,
            adjusts_line_key=line.adjusts_line_key,
            adjusts_line_id=(
                line_id_for(line.adjusts_invoice_id, line.adjusts_line_key)
                if line.adjusts_invoice_id else ""
            ),
        )


def _boost_columns(boost: BoostEvidence | None) -> dict[str, object]:
    if boost is None:
        return {}
    return {
        "boost_id": boost.boost_id, "boost_base_mbps": boost.base_mbps,
        "boost_boosted_mbps": boost.boosted_mbps, "boost_booked_start": boost.booked_start,
        "boost_booked_end": boost.booked_end, "boost_billed_start": boost.billed_start,
        "boost_billed_end": boost.billed_end, "boost_started_hours": boost.started_hours,
    }


def _boost(row: InvoiceLineRow) -> BoostEvidence | None:
    if row.boost_id is None:
        return None
    start = row.boost_billed_start or row.segment_start
    return BoostEvidence(
        boost_id=row.boost_id,
        base_mbps=row.boost_base_mbps or 0,
        boosted_mbps=row.boost_boosted_mbps or 0,
        booked_start=row.boost_booked_start or start,
        booked_end=row.boost_booked_end or start,
        billed_start=start,
        billed_end=row.boost_billed_end or start,
        started_hours=row.boost_started_hours or 0,
    )


def _fraction_text(value: Fraction) -> str:
    return f"{value.numerator}/{value.denominator}" if value.denominator != 1 else str(value)


def _stored(session: Session, row: InvoiceRow) -> StoredInvoice:
    lines = session.scalars(
        select(InvoiceLineRow)
        .where(InvoiceLineRow.invoice_id == row.id)
        .order_by(InvoiceLineRow.position)
    ).all()
    return StoredInvoice(
        id=row.id,
        number=row.number or "",
        tenant_id=row.tenant_id,
        billing_entity_id=row.billing_entity_id,
        month=BillingMonth(row.year, row.month),
        time_zone=row.time_zone,
        state=InvoiceState[row.state],
        currency=row.currency,
        lines=[StoredLine(r.id, _line(r), r.adjusts_line_id) for r in lines],
        subtotal=Decimal(row.subtotal),
        tax_rate=Decimal(row.tax_rate),
        tax=Decimal(row.tax),
        total=Decimal(row.total),
        issuer_legal_name=row.issuer_legal_name,
        issuer_address=row.issuer_address,
        issuer_tax_id=row.issuer_tax_id,
        tax_label=row.tax_label,
        customer_legal_name=row.customer_legal_name,
        customer_address=row.customer_address,
        as_of_time=row.as_of_time,
        billing_run_id=row.billing_run_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
        finalized_at=row.finalized_at,
        due_date=row.due_date,
    )


def _line(row: InvoiceLineRow) -> Line:
    burst = None
    if row.samples_present is not None:
        burst = BurstEvidence(
            samples_expected=row.samples_expected or 0,
            samples_present=row.samples_present,
            samples_discarded=row.samples_discarded or 0,
            billed_sample_mbps=row.billed_sample_mbps or 0,
            billed_sample_time=row.billed_sample_time or row.segment_start,
            billed_direction=row.billed_direction or "",
            billed_sample_bps=Fraction(row.billed_sample_bps or "0"),
            cir_mbps=row.cir_mbps or 0,
            overage_mbps=row.overage_mbps or 0,
            intervals_lost=row.intervals_lost or 0,
            samples_in_boost=row.samples_in_boost or 0,
        )
    return Line(
        key=row.line_key,
        kind=LineKind(row.kind),
        circuit_id=row.circuit_id,
        description=row.description,
        segment_start=row.segment_start,
        segment_end=row.segment_end,
        days_covered=row.days_covered,
        days_in_month=row.days_in_month,
        factor=Decimal(row.factor),
        unit_price=Decimal(row.unit_price),
        bandwidth_mbps=row.bandwidth_mbps,
        amount=Decimal(row.amount),
        burst=burst,
        boost=_boost(row),
        adjusts_invoice_id=row.adjusts_invoice_id,
        adjusts_line_key=row.adjusts_line_key,
        reconciliation=row.reconciliation,
    )
