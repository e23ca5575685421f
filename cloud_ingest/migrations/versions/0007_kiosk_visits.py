"""Kiosk visits (``remon.visit/1``): one row per visit message, with the visit's span, the
patient, the parts' msg_ids (its readings are ordinary observations), the questionnaire answers,
the results the kiosk derived (the BP mean) and how many measurements it quarantined.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _ts(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "kiosk_visits",
        sa.Column("msg_id", sa.String(32), primary_key=True),
        sa.Column("visit_ref", sa.String(128), nullable=False),
        sa.Column("site", sa.String(63), nullable=False),
        sa.Column("subject_ref", sa.String(128), nullable=False),
        _ts("started_at"),
        _ts("ended_at"),
        sa.Column("quarantined", sa.Integer(), nullable=False),
        sa.Column("observations", sa.Integer(), nullable=False),
        sa.Column("part_msg_ids", _JSON, nullable=False),
        sa.Column("answers", _JSON, nullable=False),
        sa.Column("summaries", _JSON, nullable=False),
        _ts("received_at"),
    )
    op.create_index("ix_kiosk_visits_subject_time", "kiosk_visits", ["subject_ref", "started_at"])


def downgrade() -> None:
    op.drop_index("ix_kiosk_visits_subject_time", table_name="kiosk_visits")
    op.drop_table("kiosk_visits")
