"""The billing service's tables (SQLAlchemy); migration 0002 creates the same shapes.

Money and rates are stored as decimal strings (exact on every engine); instants as UTC.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.common.db import UtcDateTime, new_metadata

# SQLite only auto-increments an INTEGER PRIMARY KEY, PostgreSQL wants a BIGINT.
AutoId = BigInteger().with_variant(Integer(), "sqlite")
MONEY_LENGTH = 40


class BillingBase(DeclarativeBase):
    metadata = new_metadata()


class UsageSampleRow(BillingBase):
    """One circuit's usage at one end (side) in one interval: the first report wins."""

    __tablename__ = "billing_usage_samples"
    __table_args__ = (
        UniqueConstraint(
            "circuit_id", "side", "interval_start", name="uq_billing_usage_side_interval"
        ),
    )

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    circuit_id: Mapped[str] = mapped_column(String(64))
    # idc.type.v1.Side of the router read (1 Singapore, 2 Chongqing).
    side: Mapped[int] = mapped_column(Integer)
    interval_start: Mapped[datetime] = mapped_column(UtcDateTime())
    interval_seconds: Mapped[int] = mapped_column(Integer)
    bytes_in: Mapped[int] = mapped_column(BigInteger)
    bytes_out: Mapped[int] = mapped_column(BigInteger)
    valid: Mapped[bool] = mapped_column(Boolean)
    invalid_reason: Mapped[str] = mapped_column(String(64))
    tenant_id: Mapped[str] = mapped_column(String(64))
    router_name: Mapped[str] = mapped_column(String(128))
    interface_name: Mapped[str] = mapped_column(String(128))
    read_time: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    event_id: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(UtcDateTime())


class GapVolumeRow(BillingBase):
    """The counter delta across a meter gap at one end: the octets of ``intervals`` missed
    intervals from ``interval_start``. Volume totals and reconciliation only: never a
    5-minute sample, never in a percentile. The first report of a gap wins."""

    __tablename__ = "billing_usage_gaps"
    __table_args__ = (
        UniqueConstraint(
            "circuit_id", "side", "interval_start", name="uq_billing_usage_gaps_start"
        ),
    )

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    circuit_id: Mapped[str] = mapped_column(String(64))
    side: Mapped[int] = mapped_column(Integer)
    interval_start: Mapped[datetime] = mapped_column(UtcDateTime())
    interval_seconds: Mapped[int] = mapped_column(Integer)
    intervals: Mapped[int] = mapped_column(Integer)
    bytes_in: Mapped[int] = mapped_column(BigInteger)
    bytes_out: Mapped[int] = mapped_column(BigInteger)
    valid: Mapped[bool] = mapped_column(Boolean)
    invalid_reason: Mapped[str] = mapped_column(String(64))
    tenant_id: Mapped[str] = mapped_column(String(64))
    router_name: Mapped[str] = mapped_column(String(128))
    event_id: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(UtcDateTime())


class UsagePeakRow(BillingBase):
    """What one circuit's billing month needs for its 95th percentile (domain/peaks.py),
    kept as samples are stored; the samples themselves stay in billing_usage_samples."""

    __tablename__ = "billing_usage_peaks"

    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    month: Mapped[int] = mapped_column(Integer, primary_key=True)
    circuit_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # The billing time zone the month was cut in (the customer's when the sample arrived).
    time_zone: Mapped[str] = mapped_column(String(64), primary_key=True)
    capacity: Mapped[int] = mapped_column(Integer)
    samples: Mapped[int] = mapped_column(Integer)
    first_start: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    last_start: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    last_received: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    top_in: Mapped[bytes] = mapped_column(LargeBinary)
    top_out: Mapped[bytes] = mapped_column(LargeBinary)
    # The billed sample of each direction (one packed entry), so a run reads no top list;
    # empty while there are no samples or more than the state keeps.
    p95_in: Mapped[bytes] = mapped_column(LargeBinary)
    p95_out: Mapped[bytes] = mapped_column(LargeBinary)


class UsageConflictRow(BillingBase):
    """A second, different report of an interval already stored: kept aside, never billed."""

    __tablename__ = "billing_usage_conflicts"

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    circuit_id: Mapped[str] = mapped_column(String(64), index=True)
    interval_start: Mapped[datetime] = mapped_column(UtcDateTime())
    interval_seconds: Mapped[int] = mapped_column(Integer)
    bytes_in: Mapped[int] = mapped_column(BigInteger)
    bytes_out: Mapped[int] = mapped_column(BigInteger)
    valid: Mapped[bool] = mapped_column(Boolean)
    invalid_reason: Mapped[str] = mapped_column(String(64))
    router_name: Mapped[str] = mapped_column(String(128))
    event_id: Mapped[str] = mapped_column(String(64))
    kept_event_id: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(UtcDateTime())


class CircuitChangeRow(BillingBase):
    """One lifecycle change of a circuit (activation, bandwidth change, disconnect)."""

    __tablename__ = "billing_circuit_changes"
    __table_args__ = (Index("ix_billing_circuit_changes_circuit", "circuit_id"),)

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    circuit_id: Mapped[str] = mapped_column(String(64))
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    effective_time: Mapped[datetime] = mapped_column(UtcDateTime())
    occurred_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    bandwidth_mbps: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    mrc: Mapped[str] = mapped_column(String(MONEY_LENGTH))
    nrc: Mapped[str] = mapped_column(String(MONEY_LENGTH))
    burst_price: Mapped[str] = mapped_column(String(MONEY_LENGTH))
    term_months: Mapped[int] = mapped_column(Integer)
    price_book_version: Mapped[str] = mapped_column(String(64))
    termination_share: Mapped[str] = mapped_column(String(MONEY_LENGTH), server_default="0")
    received_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # The customer's purchase-order number, printed on invoices (migration 0009).
    purchase_order: Mapped[str] = mapped_column(String(35), default="", server_default="")


class BoostChangeRow(BillingBase):
    """The raise or the revert of a boost (a CircuitModified with a Boost, domain/boosts.py):
    kept apart from the circuit's changes, whose MRC segments a boost leaves alone."""

    __tablename__ = "billing_boost_changes"
    __table_args__ = (
        UniqueConstraint("boost_id", "revert", name="uq_billing_boost_changes_boost"),
    )

    id: Mapped[int] = mapped_column(AutoId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    circuit_id: Mapped[str] = mapped_column(String(64), index=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    boost_id: Mapped[str] = mapped_column(String(64))
    revert: Mapped[bool] = mapped_column(Boolean)
    effective_time: Mapped[datetime] = mapped_column(UtcDateTime())
    occurred_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    base_mbps: Mapped[int] = mapped_column(BigInteger)
    boosted_mbps: Mapped[int] = mapped_column(BigInteger)
    start_time: Mapped[datetime] = mapped_column(UtcDateTime())
    end_time: Mapped[datetime] = mapped_column(UtcDateTime())
    currency: Mapped[str] = mapped_column(String(3))
    # Per Mbps per started hour; "0" on a revert (the raise's price is billed).
    price_per_mbps_hour: Mapped[str] = mapped_column(String(MONEY_LENGTH))
    received_at: Mapped[datetime] = mapped_column(UtcDateTime())


class InvoiceRow(BillingBase):
    __tablename__ = "billing_invoices"
    __table_args__ = (
        UniqueConstraint("tenant_id", "year", "month", name="uq_billing_invoices_tenant_month"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    number: Mapped[str | None] = mapped_column(String(40), unique=True, nullable=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    billing_entity_id: Mapped[str] = mapped_column(String(64), index=True)
    year: Mapped[int] = mapped_column(Integer)
    month: Mapped[int] = mapped_column(Integer)
    time_zone: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    currency: Mapped[str] = mapped_column(String(3))
    subtotal: Mapped[str] = mapped_column(String(MONEY_LENGTH))
    tax_rate: Mapped[str] = mapped_column(String(MONEY_LENGTH))
    tax: Mapped[str] = mapped_column(String(MONEY_LENGTH))
    total: Mapped[str] = mapped_column(String(MONEY_LENGTH))
    content_hash: Mapped[str] = mapped_column(String(64))
    issuer_legal_name: Mapped[str] = mapped_column(String(200))
    issuer_address: Mapped[str] = mapped_column(String(300))
    issuer_tax_id: Mapped[str] = mapped_column(String(100))
    tax_label: Mapped[str] = mapped_column(String(32))
    customer_legal_name: Mapped[str] = mapped_column(String(200))
    customer_address: Mapped[str] = mapped_column(String(300))
    as_of_time: Mapped[datetime] = mapped_column(UtcDateTime())
    billing_run_id: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    finalized_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    # Fixed on finalisation from the entity's payment terms, so a later change of terms
    # never moves an issued invoice's due date (migration 0009).
    due_date: Mapped[date | None] = mapped_column(Date(), nullable=True)


class InvoiceLineRow(BillingBase):
    __tablename__ = "billing_invoice_lines"
    __table_args__ = (
        UniqueConstraint("invoice_id", "line_key", name="uq_billing_invoice_lines_key"),
        Index("ix_billing_invoice_lines_adjusts", "adjusts_invoice_id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    invoice_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("billing_invoices.id", ondelete="CASCADE")
    )
    position: Mapped[int] = mapped_column(Integer)
    line_key: Mapped[str] = mapped_column(String(255))
    kind: Mapped[int] = mapped_column(Integer)
    circuit_id: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(500))
    segment_start: Mapped[datetime] = mapped_column(UtcDateTime())
    segment_end: Mapped[datetime] = mapped_column(UtcDateTime())
    days_covered: Mapped[int] = mapped_column(Integer)
    days_in_month: Mapped[int] = mapped_column(Integer)
    factor: Mapped[str] = mapped_column(String(64))
    unit_price: Mapped[str] = mapped_column(String(MONEY_LENGTH))
    bandwidth_mbps: Mapped[int] = mapped_column(BigInteger)
    amount: Mapped[str] = mapped_column(String(MONEY_LENGTH))
    samples_expected: Mapped[int | None] = mapped_column(Integer, nullable=True)
    samples_present: Mapped[int | None] = mapped_column(Integer, nullable=True)
    samples_discarded: Mapped[int | None] = mapped_column(Integer, nullable=True)
    billed_sample_mbps: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    billed_sample_time: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    billed_direction: Mapped[str | None] = mapped_column(String(3), nullable=True)
    billed_sample_bps: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cir_mbps: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    overage_mbps: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    intervals_lost: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Burst lines: samples lowered by a boost in force (migration 0011).
    samples_in_boost: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # BOOST lines (and their adjustments): the boost billed (migration 0011).
    boost_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    boost_base_mbps: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    boost_boosted_mbps: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    boost_booked_start: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    boost_booked_end: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    boost_billed_start: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    boost_billed_end: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    boost_started_hours: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The two ends' reconciliation when it is outside tolerance (JSON), else empty.
    reconciliation: Mapped[str] = mapped_column(Text, default="")
    adjusts_invoice_id: Mapped[str] = mapped_column(String(40))
    adjusts_line_key: Mapped[str] = mapped_column(String(255))
    adjusts_line_id: Mapped[str] = mapped_column(String(40))


class BillingRunRow(BillingBase):
    """One RunBillingCycle call; finished_at stays empty if it died halfway."""

    __tablename__ = "billing_runs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    year: Mapped[int] = mapped_column(Integer)
    month: Mapped[int] = mapped_column(Integer)
    billing_entity_id: Mapped[str] = mapped_column(String(64))
    as_of_time: Mapped[datetime] = mapped_column(UtcDateTime())
    started_at: Mapped[datetime] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    summary: Mapped[str] = mapped_column(Text)


class InvoiceNumberRow(BillingBase):
    """The last invoice number issued per billing entity (numbers are gapless)."""

    __tablename__ = "billing_invoice_numbers"

    billing_entity_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_number: Mapped[int] = mapped_column(Integer)


class CreditNoteRow(BillingBase):
    """A credit note of one finalised invoice (services/billing/credit_notes.py)."""

    __tablename__ = "billing_credit_notes"
    __table_args__ = (
        UniqueConstraint("invoice_id", "request_id", name="uq_billing_credit_notes_request"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    number: Mapped[str] = mapped_column(String(40), unique=True)
    invoice_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("billing_invoices.id"), index=True
    )
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    billing_entity_id: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(500))
    currency: Mapped[str] = mapped_column(String(3))
    subtotal: Mapped[str] = mapped_column(String(MONEY_LENGTH))
    tax_rate: Mapped[str] = mapped_column(String(MONEY_LENGTH))
    tax: Mapped[str] = mapped_column(String(MONEY_LENGTH))
    total: Mapped[str] = mapped_column(String(MONEY_LENGTH))
    issued_at: Mapped[datetime] = mapped_column(UtcDateTime())
    issued_by: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Fingerprint of the request, so a retry with another content is refused.
    request_hash: Mapped[str] = mapped_column(String(64))


class CreditNoteLineRow(BillingBase):
    __tablename__ = "billing_credit_note_lines"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    credit_note_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("billing_credit_notes.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)
    # Empty for an amount credit.
    invoice_line_id: Mapped[str] = mapped_column(String(40))
    circuit_id: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(600))
    amount: Mapped[str] = mapped_column(String(MONEY_LENGTH))


class CreditNoteNumberRow(BillingBase):
    """The last credit note number issued per billing entity (gapless, like invoices)."""

    __tablename__ = "billing_credit_note_numbers"

    billing_entity_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_number: Mapped[int] = mapped_column(Integer)
class BillingJobRow(BillingBase):
    """A run or a close the service carries out whoever waits for it (domain/jobs.py).

    The table is the queue: a process claims a QUEUED job by moving it to RUNNING, then
    keeps ``heartbeat_at`` fresh; request, progress and result are JSON."""

    __tablename__ = "billing_jobs"
    __table_args__ = (Index("ix_billing_jobs_state", "state"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    request: Mapped[str] = mapped_column(Text)
    progress: Mapped[str] = mapped_column(Text)
    result: Mapped[str] = mapped_column(Text)
    error: Mapped[str] = mapped_column(Text)
    # The gRPC status name of a failure (e.g. NOT_FOUND), so a follower re-raises it.
    error_code: Mapped[str] = mapped_column(String(32))
    created_by: Mapped[str] = mapped_column(String(200))
    owner: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    heartbeat_at: Mapped[datetime] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class CloseFinalizationRow(BillingBase):
    """A close finalised: which job, the warnings that stood, and who overrode them why.

    Written before the invoices are finalised, so the decision is on record even if the
    process dies halfway (finalising again completes it)."""

    __tablename__ = "billing_close_finalizations"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(40), index=True)
    months: Mapped[str] = mapped_column(Text)
    warnings: Mapped[str] = mapped_column(Text)
    override_reason: Mapped[str] = mapped_column(Text)
    overridden_by: Mapped[str] = mapped_column(String(200))
    finalized_by: Mapped[str] = mapped_column(String(200))
    invoice_ids: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
