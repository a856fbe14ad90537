"""Billing schema: usage samples and conflicts, circuit changes, invoices, lines, runs.

Revision ID: billing_0002
Revises: billing_0001
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

from services.billing.tables import AutoId, UtcDateTime
from services.common.events.tables import create_event_tables

revision = "billing_0002"
down_revision = "billing_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if not sa.inspect(op.get_bind()).has_table("outbox"):
        create_event_tables(op)
    op.create_table(
        "billing_circuit_changes",
        sa.Column("id", AutoId, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("circuit_id", sa.String(length=64), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("effective_time", UtcDateTime(), nullable=False),
        sa.Column("occurred_at", UtcDateTime(), nullable=True),
        sa.Column("bandwidth_mbps", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("mrc", sa.String(length=40), nullable=False),
        sa.Column("nrc", sa.String(length=40), nullable=False),
        sa.Column("burst_price", sa.String(length=40), nullable=False),
        sa.Column("term_months", sa.Integer(), nullable=False),
        sa.Column("price_book_version", sa.String(length=64), nullable=False),
        sa.Column("received_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_circuit_changes")),
        sa.UniqueConstraint("event_id", name=op.f("uq_billing_circuit_changes_event_id")),
    )
    with op.batch_alter_table("billing_circuit_changes", schema=None) as batch_op:
        batch_op.create_index("ix_billing_circuit_changes_circuit", ["circuit_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_billing_circuit_changes_tenant_id"), ["tenant_id"], unique=False
        )

    op.create_table(
        "billing_invoice_numbers",
        sa.Column("billing_entity_id", sa.String(length=64), nullable=False),
        sa.Column("last_number", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("billing_entity_id", name=op.f("pk_billing_invoice_numbers")),
    )
    op.create_table(
        "billing_invoices",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("number", sa.String(length=40), nullable=True),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("billing_entity_id", sa.String(length=64), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("month", sa.Integer(), nullable=False),
        sa.Column("time_zone", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("subtotal", sa.String(length=40), nullable=False),
        sa.Column("tax_rate", sa.String(length=40), nullable=False),
        sa.Column("tax", sa.String(length=40), nullable=False),
        sa.Column("total", sa.String(length=40), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("issuer_legal_name", sa.String(length=200), nullable=False),
        sa.Column("issuer_address", sa.String(length=300), nullable=False),
        sa.Column("issuer_tax_id", sa.String(length=100), nullable=False),
        sa.Column("tax_label", sa.String(length=32), nullable=False),
        sa.Column("customer_legal_name", sa.String(length=200), nullable=False),
        sa.Column("customer_address", sa.String(length=300), nullable=False),
        sa.Column("as_of_time", UtcDateTime(), nullable=False),
        sa.Column("billing_run_id", sa.String(length=40), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("finalized_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_invoices")),
        sa.UniqueConstraint("number", name=op.f("uq_billing_invoices_number")),
        sa.UniqueConstraint("tenant_id", "year", "month", name="uq_billing_invoices_tenant_month"),
    )
    with op.batch_alter_table("billing_invoices", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_billing_invoices_billing_entity_id"), ["billing_entity_id"], unique=False
        )

    op.create_table(
        "billing_runs",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("month", sa.Integer(), nullable=False),
        sa.Column("billing_entity_id", sa.String(length=64), nullable=False),
        sa.Column("as_of_time", UtcDateTime(), nullable=False),
        sa.Column("started_at", UtcDateTime(), nullable=False),
        sa.Column("finished_at", UtcDateTime(), nullable=True),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_runs")),
    )
    op.create_table(
        "billing_usage_conflicts",
        sa.Column("id", AutoId, autoincrement=True, nullable=False),
        sa.Column("circuit_id", sa.String(length=64), nullable=False),
        sa.Column("interval_start", UtcDateTime(), nullable=False),
        sa.Column("interval_seconds", sa.Integer(), nullable=False),
        sa.Column("bytes_in", sa.BigInteger(), nullable=False),
        sa.Column("bytes_out", sa.BigInteger(), nullable=False),
        sa.Column("valid", sa.Boolean(), nullable=False),
        sa.Column("invalid_reason", sa.String(length=64), nullable=False),
        sa.Column("router_name", sa.String(length=128), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("kept_event_id", sa.String(length=64), nullable=False),
        sa.Column("received_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_usage_conflicts")),
    )
    with op.batch_alter_table("billing_usage_conflicts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_billing_usage_conflicts_circuit_id"), ["circuit_id"], unique=False
        )

    op.create_table(
        "billing_usage_samples",
        sa.Column("id", AutoId, autoincrement=True, nullable=False),
        sa.Column("circuit_id", sa.String(length=64), nullable=False),
        sa.Column("interval_start", UtcDateTime(), nullable=False),
        sa.Column("interval_seconds", sa.Integer(), nullable=False),
        sa.Column("bytes_in", sa.BigInteger(), nullable=False),
        sa.Column("bytes_out", sa.BigInteger(), nullable=False),
        sa.Column("valid", sa.Boolean(), nullable=False),
        sa.Column("invalid_reason", sa.String(length=64), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("router_name", sa.String(length=128), nullable=False),
        sa.Column("interface_name", sa.String(length=128), nullable=False),
        sa.Column("read_time", UtcDateTime(), nullable=True),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("received_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_usage_samples")),
        sa.UniqueConstraint("circuit_id", "interval_start", name="uq_billing_usage_interval"),
    )
    op.create_table(
        "billing_invoice_lines",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("invoice_id", sa.String(length=40), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("line_key", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.Integer(), nullable=False),
        sa.Column("circuit_id", sa.String(length=64), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=False),
        sa.Column("segment_start", UtcDateTime(), nullable=False),
        sa.Column("segment_end", UtcDateTime(), nullable=False),
        sa.Column("days_covered", sa.Integer(), nullable=False),
        sa.Column("days_in_month", sa.Integer(), nullable=False),
        sa.Column("factor", sa.String(length=64), nullable=False),
        sa.Column("unit_price", sa.String(length=40), nullable=False),
        sa.Column("bandwidth_mbps", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.String(length=40), nullable=False),
        sa.Column("samples_expected", sa.Integer(), nullable=True),
        sa.Column("samples_present", sa.Integer(), nullable=True),
        sa.Column("samples_discarded", sa.Integer(), nullable=True),
        sa.Column("billed_sample_mbps", sa.BigInteger(), nullable=True),
        sa.Column("billed_sample_time", UtcDateTime(), nullable=True),
        sa.Column("billed_direction", sa.String(length=3), nullable=True),
        sa.Column("billed_sample_bps", sa.String(length=64), nullable=True),
        sa.Column("cir_mbps", sa.BigInteger(), nullable=True),
        sa.Column("overage_mbps", sa.BigInteger(), nullable=True),
        sa.Column("adjusts_invoice_id", sa.String(length=40), nullable=False),
        sa.Column("adjusts_line_key", sa.String(length=255), nullable=False),
        sa.Column("adjusts_line_id", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["billing_invoices.id"],
            name=op.f("fk_billing_invoice_lines_invoice_id_billing_invoices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_invoice_lines")),
        sa.UniqueConstraint("invoice_id", "line_key", name="uq_billing_invoice_lines_key"),
    )
    with op.batch_alter_table("billing_invoice_lines", schema=None) as batch_op:
        batch_op.create_index(
            "ix_billing_invoice_lines_adjusts", ["adjusts_invoice_id"], unique=False
        )


def downgrade() -> None:
    for table in (
        "billing_invoice_lines",
        "billing_usage_samples",
        "billing_usage_conflicts",
        "billing_runs",
        "billing_invoices",
        "billing_invoice_numbers",
        "billing_circuit_changes",
    ):
        op.drop_table(table)
