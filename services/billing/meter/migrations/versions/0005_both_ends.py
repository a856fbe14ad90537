"""Both ends metered: the meter's circuits are keyed by circuit and side (one row per end).

The rows already there keep their side (the one end metered until now); their baselines
(meter_readings, keyed by circuit and router) stay valid.

Revision ID: meter_0005
Revises: meter_0004
Create Date: 2026-12-03
"""

from alembic import op

from services.billing.meter.store import create_circuit_ends_table

revision = "meter_0005"
down_revision = "meter_0004"
branch_labels = None
depends_on = None

_COLUMNS = "circuit_id, tenant_id, side, router_name, interface_name, vlan_id, updated_at"


def upgrade() -> None:
    # A primary key cannot be altered on SQLite: build the new table and move the rows.
    op.rename_table("meter_circuits", "meter_circuits_one_end")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE meter_circuits_one_end RENAME CONSTRAINT pk_meter_circuits "
                   "TO pk_meter_circuits_one_end")
    create_circuit_ends_table(op, "meter_circuits")
    op.execute(
        f"INSERT INTO meter_circuits ({_COLUMNS}) SELECT {_COLUMNS} FROM meter_circuits_one_end"
    )
    op.drop_table("meter_circuits_one_end")


def downgrade() -> None:
    # One end per circuit again: the Singapore end where both are metered.
    op.execute(
        "DELETE FROM meter_circuits WHERE side <> 1 AND circuit_id IN "
        "(SELECT circuit_id FROM meter_circuits WHERE side = 1)"
    )
    with op.batch_alter_table("meter_circuits", recreate="always") as batch:
        batch.drop_constraint("pk_meter_circuits", type_="primary")
        batch.create_primary_key("pk_meter_circuits", ["circuit_id"])
