"""Provisioning tables: agent command queue and batches, sagas, intended circuits, plans, log.

Revision ID: provisioning_0002
Revises: provisioning_0001
Create Date: 2026-11-26
"""

from alembic import op

from services.provisioning.tables import ProvisioningBase

revision = "provisioning_0002"
down_revision = "provisioning_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ProvisioningBase.metadata.create_all(op.get_bind())


def downgrade() -> None:
    ProvisioningBase.metadata.drop_all(op.get_bind())
