"""Order service schema: quotes, circuits, orders, approvals, router payload plans, audit
trail, VLANs held per port, and the channel lock row.

Revision ID: order_0002
Revises: order_0001
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

from services.order.tables import AutoId, UtcDateTime

revision = "order_0002"
down_revision = "order_0001"
branch_labels = None
depends_on = None

MONEY = sa.String(32)


def upgrade() -> None:
    lock = op.create_table("channel_lock", sa.Column("name", sa.String(16), primary_key=True))
    op.bulk_insert(lock, [{"name": "channel"}])
    op.create_table(
        "quotes",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("spec", sa.LargeBinary(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("mrc", MONEY, nullable=False),
        sa.Column("nrc", MONEY, nullable=False),
        sa.Column("burst_price", MONEY, nullable=False),
        sa.Column("term_months", sa.Integer(), nullable=False),
        sa.Column("price_book_version", sa.String(32), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("expire_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "circuits",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False, index=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("a_port_id", sa.String(128), nullable=False),
        sa.Column("z_port_id", sa.String(128), nullable=False),
        sa.Column("a_vlan", sa.Integer(), nullable=False),
        sa.Column("z_vlan", sa.Integer(), nullable=False),
        sa.Column("bandwidth_mbps", sa.BigInteger(), nullable=False),
        sa.Column("burst_mbps", sa.BigInteger(), nullable=False),
        sa.Column("term_months", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("mrc", MONEY, nullable=False),
        sa.Column("nrc", MONEY, nullable=False),
        sa.Column("burst_price", MONEY, nullable=False),
        sa.Column("price_book_version", sa.String(32), nullable=False),
        sa.Column("customer_reference", sa.String(256), nullable=False),
        sa.Column("description", sa.String(256), nullable=False),
        sa.Column("created_by_order_id", sa.String(40), nullable=False),
        sa.Column("pending_order_id", sa.String(40)),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("activated_at", UtcDateTime()),
        sa.Column("disconnected_at", UtcDateTime()),
    )
    op.create_table(
        "orders",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("circuit_id", sa.String(40), nullable=False, index=True),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("quote_id", sa.String(40)),
        sa.Column("requested_by", sa.String(128), nullable=False),
        sa.Column("a_port_id", sa.String(128), nullable=False),
        sa.Column("z_port_id", sa.String(128), nullable=False),
        sa.Column("a_vlan", sa.Integer(), nullable=False),
        sa.Column("z_vlan", sa.Integer(), nullable=False),
        sa.Column("bandwidth_mbps", sa.BigInteger(), nullable=False),
        sa.Column("burst_mbps", sa.BigInteger(), nullable=False),
        sa.Column("previous_bandwidth_mbps", sa.BigInteger(), nullable=False),
        sa.Column("term_months", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("mrc", MONEY, nullable=False),
        sa.Column("nrc", MONEY, nullable=False),
        sa.Column("burst_price", MONEY, nullable=False),
        sa.Column("price_book_version", sa.String(32), nullable=False),
        sa.Column("customer_reference", sa.String(256), nullable=False),
        sa.Column("description", sa.String(256), nullable=False),
        sa.Column("reserved_mbps", sa.BigInteger(), nullable=False),
        sa.Column("contacts", sa.JSON(), nullable=False),
        sa.Column("failure", sa.LargeBinary()),
        sa.Column("plan_error", sa.Text()),
        sa.Column("approval_expire_at", UtcDateTime(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("completed_at", UtcDateTime()),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.UniqueConstraint("tenant_id", "request_id", name="uq_orders_tenant_request"),
        sa.Index("ix_orders_state", "state"),
    )
    op.create_table(
        "approvals",
        sa.Column("order_id", sa.String(40), primary_key=True),
        sa.Column("side", sa.String(16), primary_key=True),
        sa.Column("telco_id", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("approver", sa.String(128), nullable=False),
        sa.Column("payload_sha256", sa.String(64), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("decided_at", UtcDateTime()),
    )
    op.create_table(
        "plans",
        sa.Column("order_id", sa.String(40), primary_key=True),
        sa.Column("side", sa.String(16), primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("received_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "order_audit",
        sa.Column("id", AutoId, primary_key=True, autoincrement=True),
        sa.Column("order_id", sa.String(40), nullable=False, index=True),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("from_state", sa.String(20)),
        sa.Column("to_state", sa.String(20), nullable=False),
    )
    op.create_table(
        "port_vlans",
        sa.Column("port_id", sa.String(128), primary_key=True),
        sa.Column("vlan_id", sa.Integer(), primary_key=True),
        sa.Column("circuit_id", sa.String(40), nullable=False, index=True),
    )


def downgrade() -> None:
    for table in ("port_vlans", "order_audit", "plans", "approvals", "orders", "circuits",
                  "quotes", "channel_lock"):
        op.drop_table(table)
