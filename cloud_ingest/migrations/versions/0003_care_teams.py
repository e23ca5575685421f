"""Care teams, staff and routing; patients and dispenser clients; alert life cycle; audit log.

- ``care_teams``, ``staff`` (role clinician / home_care / admin; API token kept as its SHA-256),
  ``staff_teams``: who sees which patients' alerts.
- ``patients`` (pseudonymous subject ref, clinical care team, time zone) and
  ``dispenser_clients`` (the home-care team that receives the client's dispenser alerts, the
  missed-dose window, the local dose times).
- ``alerts`` gain the rule kind (threshold / event / silence), the audience (clinician or
  home_care), the team it was routed to, assignment, snooze and escalation, and (event and
  silence alerts) their evidence as JSON. Threshold and value
  and evidence-id columns become nullable: an event or silence alert has no measured value, and
  none is invented.
- ``audit_log``: every change made through the API (who, what, when).
- ``team_thresholds`` (a care team's default for a condition, between the built-in default and
  a patient's own value), ``patient_parameters`` (e.g. the PEF personal best), ``pef_diaries``
  (a patient's PEF diary period, for the missed-session rule).
- ``device_subjects``: which subject each device has reported for, first and last seen (the
  device bindings over time, as the hubs asserted them).
- ``stream_last_seen``: the newest reading of each subject's continuous stream (CGM), kept by
  ingest so the stale-data rules need not scan the observations.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_ACTIVE = "state IN ('open', 'acknowledged')"
#: alert columns that only a threshold alert has a value for
_THRESHOLD_ONLY = (
    ("measure", sa.String(64)),
    ("threshold_value", sa.Float()),
    ("threshold_unit", sa.String(32)),
    ("threshold_comparator", sa.String(2)),
    ("first_value", sa.Float()),
    ("last_value", sa.Float()),
    ("first_obs_id", sa.String(32)),
    ("last_obs_id", sa.String(32)),
)


def _ts(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "care_teams",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        _ts("created_at"),
    )
    op.create_table(
        "staff",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        _ts("created_at"),
        sa.UniqueConstraint("token_sha256", name="uq_staff_token_sha256"),
    )
    op.create_table(
        "staff_teams",
        sa.Column("staff_id", sa.String(64), sa.ForeignKey("staff.id"), primary_key=True),
        sa.Column("team_id", sa.String(64), sa.ForeignKey("care_teams.id"), primary_key=True),
    )
    op.create_table(
        "patients",
        sa.Column("subject_ref", sa.String(128), primary_key=True),
        sa.Column("team_id", sa.String(64), sa.ForeignKey("care_teams.id"), nullable=False),
        sa.Column("time_zone", sa.String(64), nullable=False),
        _ts("updated_at"),
    )
    op.create_index("ix_patients_team", "patients", ["team_id"])
    op.create_table(
        "dispenser_clients",
        sa.Column(
            "subject_ref",
            sa.String(128),
            sa.ForeignKey("patients.subject_ref"),
            primary_key=True,
        ),
        sa.Column(
            "home_care_team_id", sa.String(64), sa.ForeignKey("care_teams.id"), nullable=False
        ),
        sa.Column("missed_dose_window_min", sa.Integer(), nullable=False),
        sa.Column("dose_times", _JSON, nullable=False),
        _ts("updated_at"),
    )
    op.create_index("ix_dispenser_clients_team", "dispenser_clients", ["home_care_team_id"])
    op.create_table(
        "audit_log",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        _ts("at"),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("object_kind", sa.String(20), nullable=False),
        sa.Column("object_id", sa.String(128), nullable=False),
        sa.Column("detail", _JSON, nullable=False),
    )
    op.create_index("ix_audit_log_object", "audit_log", ["object_kind", "object_id"])
    op.create_table(
        "team_thresholds",
        sa.Column("team_id", sa.String(64), sa.ForeignKey("care_teams.id"), primary_key=True),
        sa.Column("condition", sa.String(64), primary_key=True),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("unit", sa.String(32), nullable=False),
        sa.Column("set_by", sa.String(128), nullable=False),
        _ts("set_at"),
    )
    op.create_table(
        "patient_parameters",
        sa.Column("subject_ref", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("unit", sa.String(32), nullable=False),
        sa.Column("set_by", sa.String(128), nullable=False),
        _ts("set_at"),
    )
    op.create_table(
        "pef_diaries",
        sa.Column("subject_ref", sa.String(128), primary_key=True),
        sa.Column("first_day", sa.Date(), nullable=False),
        sa.Column("last_day", sa.Date(), nullable=False),
        sa.Column("set_by", sa.String(128), nullable=False),
        _ts("set_at"),
    )
    op.create_table(
        "device_subjects",
        sa.Column("device_key", sa.String(400), primary_key=True),
        sa.Column("subject_ref", sa.String(128), primary_key=True),
        sa.Column("site", sa.String(63), nullable=False),
        sa.Column("device_id", sa.String(63), nullable=False),
        _ts("first_seen"),
        _ts("last_seen"),
    )
    op.create_index("ix_device_subjects_subject", "device_subjects", ["subject_ref"])
    op.create_table(
        "stream_last_seen",
        sa.Column("subject_ref", sa.String(128), primary_key=True),
        sa.Column("stream", sa.String(32), primary_key=True),
        _ts("newest_time"),
        sa.Column("newest_obs_id", sa.String(32), nullable=False),
        sa.Column("simulated", sa.Boolean(), nullable=False),
    )
    # SQLite rebuilds the table for the nullability changes: the partial unique index is dropped
    # first and made again after, so its WHERE clause cannot be lost in the rebuild.
    op.drop_index("uq_alerts_active_subject_condition", table_name="alerts")
    with op.batch_alter_table("alerts") as b:
        b.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="threshold"))
        b.add_column(
            sa.Column("audience", sa.String(16), nullable=False, server_default="clinician")
        )
        b.add_column(sa.Column("team_id", sa.String(64), nullable=True))
        b.add_column(sa.Column("assigned_to", sa.String(64), nullable=True))
        b.add_column(sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=True))
        b.add_column(sa.Column("snoozed_until", sa.DateTime(timezone=True), nullable=True))
        b.add_column(
            sa.Column("escalation_level", sa.Integer(), nullable=False, server_default="0")
        )
        b.add_column(sa.Column("escalated_at", sa.DateTime(timezone=True), nullable=True))
        b.add_column(sa.Column("evidence", _JSON, nullable=True))
        for name, type_ in _THRESHOLD_ONLY:
            b.alter_column(name, existing_type=type_, nullable=True)
    op.create_index(
        "uq_alerts_active_subject_condition",
        "alerts",
        ["subject_ref", "condition"],
        unique=True,
        sqlite_where=sa.text(_ACTIVE),
        postgresql_where=sa.text(_ACTIVE),
    )
    op.create_index("ix_alerts_team_state", "alerts", ["team_id", "state"])
    # CGM readings have their own level 1 condition now (cgm-low-l1, raised after 15 min): a
    # clinician's patient-specific level 1 value keeps applying to the patient's CGM readings
    op.execute(
        "INSERT INTO patient_thresholds (subject_ref, condition, value, unit, set_by, set_at)"
        " SELECT subject_ref, 'cgm-low-l1', value, unit, set_by, set_at"
        " FROM patient_thresholds WHERE condition = 'glucose-low-l1'"
    )


def downgrade() -> None:
    op.drop_index("ix_alerts_team_state", table_name="alerts")
    op.drop_index("uq_alerts_active_subject_condition", table_name="alerts")
    op.execute("DELETE FROM patient_thresholds WHERE condition = 'cgm-low-l1'")
    op.execute(
        "DELETE FROM alert_events"
        " WHERE alert_id IN (SELECT id FROM alerts WHERE kind <> 'threshold')"
    )
    op.execute("DELETE FROM alerts WHERE kind <> 'threshold'")
    with op.batch_alter_table("alerts") as b:
        for name, type_ in _THRESHOLD_ONLY:
            b.alter_column(name, existing_type=type_, nullable=False)
        for name in (
            "evidence",
            "escalated_at",
            "escalation_level",
            "snoozed_until",
            "assigned_at",
            "assigned_to",
            "team_id",
            "audience",
            "kind",
        ):
            b.drop_column(name)
    op.create_index(
        "uq_alerts_active_subject_condition",
        "alerts",
        ["subject_ref", "condition"],
        unique=True,
        sqlite_where=sa.text(_ACTIVE),
        postgresql_where=sa.text(_ACTIVE),
    )
    for table in (
        "device_subjects",
        "pef_diaries",
        "patient_parameters",
        "team_thresholds",
        "stream_last_seen",
        "audit_log",
        "dispenser_clients",
        "patients",
        "staff_teams",
    ):
        op.drop_table(table)
    op.drop_table("staff")
    op.drop_table("care_teams")
