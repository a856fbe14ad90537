"""Identifier-only descriptions: what provisioning intends and has planned carries the
description built from ids (services/common/limits.py identifier_description) instead of
the customer's free text that events carried before.

The routers still hold the old descriptions: the drift watch then reports those circuits
drifted ("configured otherwise") and Redeploy (``make run`` does it on start) writes the new
description. Orders planned before, still waiting for approval, render a different payload
now and go back to approval once. Finished sagas and agent commands are left as they were
recorded. No downgrade: the customer's text is not kept here to restore.

Revision ID: provisioning_0007
Revises: provisioning_0006
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

from idc.events.v1 import common_pb2, order_pb2
from services.common.limits import identifier_description

revision = "provisioning_0007"
down_revision = "provisioning_0006"
branch_labels = None
depends_on = None


def _scrubbed(circuit: common_pb2.CircuitParameters) -> bool:
    wanted = identifier_description(circuit.tenant_id)
    if circuit.description == wanted:
        return False
    circuit.description = wanted
    return True


def upgrade() -> None:
    connection = op.get_bind()
    intended = sa.table("intended_circuits", sa.column("circuit_id", sa.String()),
                        sa.column("parameters", sa.LargeBinary()))
    for circuit_id, raw in connection.execute(
            sa.select(intended.c.circuit_id, intended.c.parameters)).all():
        circuit = common_pb2.CircuitParameters.FromString(bytes(raw))
        if _scrubbed(circuit):
            connection.execute(intended.update().where(intended.c.circuit_id == circuit_id)
                               .values(parameters=circuit.SerializeToString()))
    planned = sa.table("planned_orders", sa.column("order_id", sa.String()),
                       sa.column("created", sa.LargeBinary()))
    for order_id, raw in connection.execute(
            sa.select(planned.c.order_id, planned.c.created)).all():
        created = order_pb2.OrderCreated.FromString(bytes(raw))
        if _scrubbed(created.circuit):
            connection.execute(planned.update().where(planned.c.order_id == order_id)
                               .values(created=created.SerializeToString()))


def downgrade() -> None:
    """Nothing to undo: the identifier-only descriptions stay."""
