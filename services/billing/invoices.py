"""Invoices as the application sees them: drafts from rating, stored invoices, identities.

Invoice ids are derived from (tenant, month) and line ids from (invoice, line key), so a
re-run of a month, or a run completed after a crash, lands on the same ids.
"""

from __future__ import annotations

import enum
import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from services.billing.domain.entities import BillingEntity, Customer
from services.billing.domain.money import format_amount
from services.billing.domain.rating import BillingMonth, Line, Totals

_NAMESPACE = uuid.UUID("5b0c3d0e-7f1e-4d59-9a51-3c2b9e1d7a10")


class InvoiceState(enum.IntEnum):
    # Values follow idc.billing.v1.InvoiceState.
    DRAFT = 1
    FINALIZED = 2


class SaveOutcome(enum.Enum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    SKIPPED_FINALIZED = "skipped_finalized"


def invoice_id_for(tenant_id: str, month: BillingMonth) -> str:
    return "inv-" + str(uuid.uuid5(_NAMESPACE, f"{tenant_id}/{month}"))


def line_id_for(invoice_id: str, line_key: str) -> str:
    return "ln-" + str(uuid.uuid5(_NAMESPACE, f"{invoice_id}/{line_key}"))


@dataclass(frozen=True)
class InvoiceDraft:
    """What a billing run computed for one customer and month."""

    id: str
    customer: Customer
    month: BillingMonth
    currency: str
    lines: list[Line]
    totals: Totals

    @property
    def entity(self) -> BillingEntity:
        return self.customer.entity

    def content_hash(self) -> str:
        """Fingerprint of what the customer would read: equal hashes, unchanged invoice."""
        payload = {
            "currency": self.currency,
            "tax_rate": format_amount(self.entity.tax_rate),
            "totals": [format_amount(v) for v in (
                self.totals.subtotal, self.totals.tax, self.totals.total
            )],
            "lines": [_line_fingerprint(line) for line in self.lines],
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _line_fingerprint(line: Line) -> list[object]:
    burst = line.burst
    evidence: list[object] = []
    if burst is not None:
        evidence = [
            burst.samples_expected, burst.samples_present, burst.samples_discarded,
            burst.billed_sample_mbps, burst.billed_sample_time.isoformat(),
            burst.billed_direction,
        ]
        if burst.intervals_lost:
            evidence.append(burst.intervals_lost)
        if burst.samples_in_boost:
            evidence.append(burst.samples_in_boost)
    fingerprint: list[object] = [
        line.key, int(line.kind), line.description, format_amount(line.amount),
        format_amount(line.unit_price), line.days_covered, evidence,
    ]
    # Appended only when present, so invoices without them keep their fingerprint.
    if line.reconciliation:
        fingerprint.append(line.reconciliation)
    if line.boost is not None:
        b = line.boost
        fingerprint.append([b.boost_id, b.started_hours, b.billed_start.isoformat(),
                            b.billed_end.isoformat()])
    return fingerprint


@dataclass(frozen=True)
class StoredLine:
    id: str
    line: Line
    adjusts_line_id: str


@dataclass(frozen=True)
class StoredInvoice:
    id: str
    number: str
    tenant_id: str
    billing_entity_id: str
    month: BillingMonth
    time_zone: str
    state: InvoiceState
    currency: str
    lines: list[StoredLine]
    subtotal: Decimal
    tax_rate: Decimal
    tax: Decimal
    total: Decimal
    issuer_legal_name: str
    issuer_address: str
    issuer_tax_id: str
    tax_label: str
    customer_legal_name: str
    customer_address: str
    as_of_time: datetime
    billing_run_id: str
    created_at: datetime
    updated_at: datetime
    finalized_at: datetime | None
    # Set on finalisation (None for drafts and invoices finalised before migration 0009).
    due_date: date | None = None

    @property
    def label(self) -> str:
        return self.number or self.id
