"""Device events: dispenser and device-health events (``remon.event/1``).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _ts(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "device_events",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(32), nullable=False),
        sa.Column("msg_id", sa.String(32), nullable=False),
        sa.Column("site", sa.String(63), nullable=False),
        sa.Column("device_id", sa.String(63), nullable=False),
        sa.Column("device_key", sa.String(400), nullable=False),
        sa.Column("subject_kind", sa.String(20), nullable=False),
        sa.Column("subject_ref", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        _ts("event_time"),
        sa.Column("dose_id", sa.String(64), nullable=True),
        _ts("scheduled_time", nullable=True),
        sa.Column("device_time", sa.String(40), nullable=True),
        sa.Column("clock_offset_s", sa.Float, nullable=True),
        sa.Column("details", sa.Text, nullable=False),
        sa.Column("quality", _JSON, nullable=False),
        sa.Column("provenance_source", sa.String(128), nullable=False),
        _ts("received_at"),
        sa.UniqueConstraint("event_id", name="uq_device_events_event_id"),
    )
    op.create_index("ix_device_events_subject_time", "device_events", ["subject_ref", "event_time"])
    op.create_index("ix_device_events_kind_time", "device_events", ["kind", "event_time"])


def downgrade() -> None:
    op.drop_table("device_events")
