"""Device bindings carry the device's firmware and transport as its newest message gave them,
so the fleet view reads a device's identity from its binding instead of searching observations.

Rows written before this revision keep NULL until the device's next message.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("device_subjects") as batch:
        batch.add_column(sa.Column("firmware", sa.String(128), nullable=True))
        batch.add_column(sa.Column("transport", sa.String(128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("device_subjects") as batch:
        batch.drop_column("transport")
        batch.drop_column("firmware")
