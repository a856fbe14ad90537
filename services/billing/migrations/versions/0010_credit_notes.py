"""Credit notes (with their lines and per-entity numbers) and the price terms' share owed
on an early termination.

Revision ID: billing_0010
Revises: billing_0009
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

from services.billing.tables import MONEY_LENGTH, UtcDateTime

revision = "billing_0010"
down_revision = "billing_0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("billing_circuit_changes") as batch:
        batch.add_column(
            sa.Column(
                "termination_share", sa.String(length=MONEY_LENGTH), server_default="0",
                nullable=False,
            )
        )
    op.create_table(
        "billing_credit_notes",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("number", sa.String(length=40), nullable=False),
        sa.Column("invoice_id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("billing_entity_id", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("subtotal", sa.String(length=MONEY_LENGTH), nullable=False),
        sa.Column("tax_rate", sa.String(length=MONEY_LENGTH), nullable=False),
        sa.Column("tax", sa.String(length=MONEY_LENGTH), nullable=False),
        sa.Column("total", sa.String(length=MONEY_LENGTH), nullable=False),
        sa.Column("issued_at", UtcDateTime(), nullable=False),
        sa.Column("issued_by", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["billing_invoices.id"],
            name=op.f("fk_billing_credit_notes_invoice_id_billing_invoices"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_credit_notes")),
        sa.UniqueConstraint("number", name=op.f("uq_billing_credit_notes_number")),
        sa.UniqueConstraint(
            "invoice_id", "request_id", name=op.f("uq_billing_credit_notes_request")
        ),
    )
    op.create_index(
        op.f("ix_billing_credit_notes_invoice_id"), "billing_credit_notes", ["invoice_id"]
    )
    op.create_index(
        op.f("ix_billing_credit_notes_tenant_id"), "billing_credit_notes", ["tenant_id"]
    )
    op.create_table(
        "billing_credit_note_lines",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("credit_note_id", sa.String(length=40), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("invoice_line_id", sa.String(length=40), nullable=False),
        sa.Column("circuit_id", sa.String(length=64), nullable=False),
        sa.Column("description", sa.String(length=600), nullable=False),
        sa.Column("amount", sa.String(length=MONEY_LENGTH), nullable=False),
        sa.ForeignKeyConstraint(
            ["credit_note_id"], ["billing_credit_notes.id"], ondelete="CASCADE",
            name=op.f("fk_billing_credit_note_lines_credit_note_id_billing_credit_notes"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_credit_note_lines")),
    )
    op.create_index(
        op.f("ix_billing_credit_note_lines_credit_note_id"), "billing_credit_note_lines",
        ["credit_note_id"],
    )
    op.create_table(
        "billing_credit_note_numbers",
        sa.Column("billing_entity_id", sa.String(length=64), nullable=False),
        sa.Column("last_number", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("billing_entity_id", name=op.f("pk_billing_credit_note_numbers")),
    )


def downgrade() -> None:
    op.drop_table("billing_credit_note_numbers")
    op.drop_table("billing_credit_note_lines")
    op.drop_table("billing_credit_notes")
    with op.batch_alter_table("billing_circuit_changes") as batch:
        batch.drop_column("termination_share")
