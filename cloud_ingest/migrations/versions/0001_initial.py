"""Initial schema: messages, observations, dead letters, sites, alerts, audit, thresholds.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_ACTIVE = "state IN ('open', 'acknowledged')"


def _ts(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "messages",
        sa.Column("msg_id", sa.String(32), primary_key=True),
        sa.Column("schema", sa.String(40), nullable=False),
        sa.Column("topic", sa.String(300), nullable=False),
        sa.Column("site", sa.String(63), nullable=False),
        sa.Column("device_id", sa.String(63), nullable=False),
        sa.Column("subject_kind", sa.String(20), nullable=False),
        sa.Column("subject_ref", sa.String(128), nullable=False),
        _ts("created_at"),
        _ts("received_at"),
        sa.Column("observation_count", sa.Integer, nullable=False),
    )
    op.create_table(
        "observations",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("obs_id", sa.String(32), nullable=False),
        sa.Column("msg_id", sa.String(32), sa.ForeignKey("messages.msg_id"), nullable=False),
        sa.Column("site", sa.String(63), nullable=False),
        sa.Column("device_id", sa.String(63), nullable=False),
        sa.Column("device_manufacturer", sa.String(128), nullable=False),
        sa.Column("device_model", sa.String(128), nullable=False),
        sa.Column("device_serial", sa.String(128), nullable=False),
        sa.Column("device_firmware", sa.String(128), nullable=True),
        sa.Column("device_transport", sa.String(128), nullable=False),
        sa.Column("subject_kind", sa.String(20), nullable=False),
        sa.Column("subject_ref", sa.String(128), nullable=False),
        sa.Column("measure", sa.String(64), nullable=False),
        sa.Column("value", sa.Float, nullable=True),
        sa.Column("comparator", sa.String(2), nullable=True),
        sa.Column("absent_reason", sa.String(32), nullable=True),
        sa.Column("unit", sa.String(32), nullable=False),
        _ts("effective_time"),
        sa.Column("device_time", sa.String(40), nullable=True),
        sa.Column("clock_offset_s", sa.Float, nullable=True),
        sa.Column("record_key", sa.String(128), nullable=False),
        sa.Column("quality", _JSON, nullable=False),
        sa.Column("provenance", _JSON, nullable=False),
        _ts("received_at"),
        sa.UniqueConstraint("obs_id", name="uq_observations_obs_id"),
    )
    op.create_index(
        "ix_observations_subject_time", "observations", ["subject_ref", "effective_time"]
    )
    op.create_table(
        "dead_letters",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("code", sa.String(40), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        _ts("received_at"),
        _ts("stored_at"),
    )
    op.create_table(
        "sites",
        sa.Column("site", sa.String(63), primary_key=True),
        sa.Column("state", sa.String(10), nullable=False),
        _ts("at"),
        sa.Column("agent_version", sa.String(128), nullable=False),
        _ts("received_at"),
    )
    op.create_table(
        "alerts",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("subject_ref", sa.String(128), nullable=False),
        sa.Column("condition", sa.String(64), nullable=False),
        sa.Column("measure", sa.String(64), nullable=False),
        sa.Column("priority", sa.String(10), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("threshold_value", sa.Float, nullable=False),
        sa.Column("threshold_unit", sa.String(32), nullable=False),
        sa.Column("threshold_comparator", sa.String(2), nullable=False),
        sa.Column("threshold_source", sa.Text, nullable=False),
        sa.Column("explanation", sa.Text, nullable=False),
        sa.Column("first_obs_id", sa.String(32), nullable=False),
        sa.Column("first_value", sa.Float, nullable=False),
        sa.Column("first_comparator", sa.String(2), nullable=True),
        _ts("first_time"),
        sa.Column("last_obs_id", sa.String(32), nullable=False),
        sa.Column("last_value", sa.Float, nullable=False),
        sa.Column("last_comparator", sa.String(2), nullable=True),
        _ts("last_time"),
        sa.Column("trigger_count", sa.Integer, nullable=False),
        sa.Column("simulated", sa.Boolean, nullable=False),
        _ts("raised_at"),
        _ts("updated_at"),
        sa.Column("acknowledged_by", sa.String(128), nullable=True),
        _ts("acknowledged_at", nullable=True),
        sa.Column("resolved_by", sa.String(128), nullable=True),
        _ts("resolved_at", nullable=True),
        sa.Column("resolved_note", sa.Text, nullable=True),
        _ts("cleared_at", nullable=True),
        sa.Column("cleared_by_obs_id", sa.String(32), nullable=True),
        sa.CheckConstraint("state IN ('open', 'acknowledged', 'resolved')", name="ck_alerts_state"),
        sa.CheckConstraint("priority IN ('high', 'medium', 'low')", name="ck_alerts_priority"),
    )
    op.create_index("ix_alerts_state_priority", "alerts", ["state", "priority"])
    op.create_index("ix_alerts_subject", "alerts", ["subject_ref"])
    op.create_index(
        "uq_alerts_active_subject_condition",
        "alerts",
        ["subject_ref", "condition"],
        unique=True,
        sqlite_where=sa.text(_ACTIVE),
        postgresql_where=sa.text(_ACTIVE),
    )
    op.create_table(
        "alert_events",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("alert_id", _ID, sa.ForeignKey("alerts.id"), nullable=False),
        _ts("at"),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("note", sa.Text, nullable=True),
    )
    op.create_index("ix_alert_events_alert_id", "alert_events", ["alert_id"])
    op.create_table(
        "patient_thresholds",
        sa.Column("subject_ref", sa.String(128), primary_key=True),
        sa.Column("condition", sa.String(64), primary_key=True),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("unit", sa.String(32), nullable=False),
        sa.Column("set_by", sa.String(128), nullable=False),
        _ts("set_at"),
    )


def downgrade() -> None:
    for table in (
        "patient_thresholds",
        "alert_events",
        "alerts",
        "sites",
        "dead_letters",
        "observations",
        "messages",
    ):
        op.drop_table(table)
