"""Device telemetry: each device's last known battery, signal, link and clock; the depth of
each hub's outbox (from its periodic status).

One row per device (its identity key). Each value keeps its own time, so a later sample that
carries only the link state does not erase the battery level an earlier one reported.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _ts(name: str, *, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "device_telemetry",
        sa.Column("device_key", sa.String(400), primary_key=True),
        sa.Column("site", sa.String(63), nullable=False),
        sa.Column("device_id", sa.String(63), nullable=False),
        sa.Column("battery_pct", sa.SmallInteger(), nullable=True),
        _ts("battery_at"),
        sa.Column("rssi_dbm", sa.SmallInteger(), nullable=True),
        _ts("rssi_at"),
        sa.Column("link", sa.String(16), nullable=True),
        _ts("link_at"),
        sa.Column("clock_offset_s", sa.Float(), nullable=True),
        _ts("clock_at"),
        _ts("received_at", nullable=False),
    )
    with op.batch_alter_table("sites") as batch:
        batch.add_column(sa.Column("outbox_pending", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sites") as batch:
        batch.drop_column("outbox_pending")
    op.drop_table("device_telemetry")
