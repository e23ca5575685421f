"""Table definitions for queries (SQLAlchemy Core). DDL lives in the Alembic migrations.

Keep this file and ``cloud_ingest/migrations/versions`` in step: ``tests/test_storage.py``
compares the migrated database with this metadata.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every backend.

    PostgreSQL stores ``timestamptz``. SQLite has no time type: values are stored as UTC text in
    one fixed format, so text order is time order and range queries stay correct.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} given to a UTC column")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


JSONType: Final[Any] = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

metadata = sa.MetaData()

messages = sa.Table(
    "messages",
    metadata,
    sa.Column("msg_id", sa.String(32), primary_key=True),
    sa.Column("schema", sa.String(40), nullable=False),
    sa.Column("topic", sa.String(300), nullable=False),
    sa.Column("site", sa.String(63), nullable=False),
    sa.Column("device_id", sa.String(63), nullable=False),
    sa.Column("subject_kind", sa.String(20), nullable=False),
    sa.Column("subject_ref", sa.String(128), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("received_at", UTCDateTime(), nullable=False),
    sa.Column("observation_count", sa.Integer, nullable=False),
)

observations = sa.Table(
    "observations",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("obs_id", sa.String(32), nullable=False, unique=True),
    # the message the reading came in; a foreign key on SQLite only (migration 0008 dropped it
    # on PostgreSQL, where its per-row check was a third of the insert: ingest writes both rows
    # in one transaction, and the end-to-end tests check that every reading has its message)
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
    sa.Column("effective_time", UTCDateTime(), nullable=False),
    sa.Column("device_time", sa.String(40), nullable=True),
    sa.Column("clock_offset_s", sa.Float, nullable=True),
    sa.Column("record_key", sa.String(128), nullable=False),
    sa.Column("quality", JSONType, nullable=False),
    sa.Column("provenance", JSONType, nullable=False),
    sa.Column("received_at", UTCDateTime(), nullable=False),
    sa.Index("ix_observations_subject_time", "subject_ref", "effective_time"),
)

#: Device events (``remon.event/1``), e.g. a dispenser's dose_missed. One row per event id: a
#: redelivered event is not stored again. Event envelopes get no ``messages`` row.
device_events = sa.Table(
    "device_events",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("event_id", sa.String(32), nullable=False, unique=True),
    sa.Column("msg_id", sa.String(32), nullable=False),
    sa.Column("site", sa.String(63), nullable=False),
    sa.Column("device_id", sa.String(63), nullable=False),
    sa.Column("device_key", sa.String(400), nullable=False),  # manufacturer|model|serial
    sa.Column("subject_kind", sa.String(20), nullable=False),
    sa.Column("subject_ref", sa.String(128), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("event_time", UTCDateTime(), nullable=False),
    sa.Column("dose_id", sa.String(64), nullable=True),
    sa.Column("scheduled_time", UTCDateTime(), nullable=True),
    sa.Column("device_time", sa.String(40), nullable=True),
    sa.Column("clock_offset_s", sa.Float, nullable=True),
    sa.Column("details", sa.Text, nullable=False),  # JSON text of a flat object
    sa.Column("quality", JSONType, nullable=False),
    sa.Column("provenance_source", sa.String(128), nullable=False),
    sa.Column("received_at", UTCDateTime(), nullable=False),
    sa.Index("ix_device_events_subject_time", "subject_ref", "event_time"),
    sa.Index("ix_device_events_kind_time", "kind", "event_time"),
)

dead_letters = sa.Table(
    "dead_letters",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("topic", sa.Text, nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("code", sa.String(40), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("received_at", UTCDateTime(), nullable=False),
    sa.Column("stored_at", UTCDateTime(), nullable=False),
)

sites = sa.Table(
    "sites",
    metadata,
    sa.Column("site", sa.String(63), primary_key=True),
    sa.Column("state", sa.String(10), nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("agent_version", sa.String(128), nullable=False),
    sa.Column("received_at", UTCDateTime(), nullable=False),
    # messages waiting in the hub's outbox at its last periodic status (None: not reported)
    sa.Column("outbox_pending", sa.BigInteger(), nullable=True),
)

alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("subject_ref", sa.String(128), nullable=False),
    sa.Column("condition", sa.String(64), nullable=False),
    sa.Column("measure", sa.String(64), nullable=True),
    sa.Column("priority", sa.String(10), nullable=False),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("rule", sa.String(64), nullable=False),
    sa.Column("threshold_value", sa.Float, nullable=True),
    sa.Column("threshold_unit", sa.String(32), nullable=True),
    sa.Column("threshold_comparator", sa.String(2), nullable=True),
    sa.Column("threshold_source", sa.Text, nullable=False),
    sa.Column("explanation", sa.Text, nullable=False),
    sa.Column("first_obs_id", sa.String(32), nullable=True),
    sa.Column("first_value", sa.Float, nullable=True),
    sa.Column("first_comparator", sa.String(2), nullable=True),
    sa.Column("first_time", UTCDateTime(), nullable=False),
    sa.Column("last_obs_id", sa.String(32), nullable=True),
    sa.Column("last_value", sa.Float, nullable=True),
    sa.Column("last_comparator", sa.String(2), nullable=True),
    sa.Column("last_time", UTCDateTime(), nullable=False),
    sa.Column("trigger_count", sa.Integer, nullable=False),
    sa.Column("simulated", sa.Boolean, nullable=False),
    sa.Column("raised_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("acknowledged_by", sa.String(128), nullable=True),
    sa.Column("acknowledged_at", UTCDateTime(), nullable=True),
    sa.Column("resolved_by", sa.String(128), nullable=True),
    sa.Column("resolved_at", UTCDateTime(), nullable=True),
    sa.Column("resolved_note", sa.Text, nullable=True),
    sa.Column("cleared_at", UTCDateTime(), nullable=True),
    sa.Column("cleared_by_obs_id", sa.String(32), nullable=True),
    # 0003: rule kind, routing, assignment, snooze, escalation
    sa.Column("kind", sa.String(16), nullable=False, server_default="threshold"),
    sa.Column("audience", sa.String(16), nullable=False, server_default="clinician"),
    sa.Column("team_id", sa.String(64), nullable=True),
    sa.Column("assigned_to", sa.String(64), nullable=True),
    sa.Column("assigned_at", UTCDateTime(), nullable=True),
    sa.Column("snoozed_until", UTCDateTime(), nullable=True),
    sa.Column("escalation_level", sa.Integer, nullable=False, server_default="0"),
    sa.Column("escalated_at", UTCDateTime(), nullable=True),
    #: event and silence alerts: {"first": ..., "last": ..., "criterion": ..., "cleared_by": ...}
    sa.Column("evidence", JSONType, nullable=True),
    sa.Index("ix_alerts_state_priority", "state", "priority"),
    sa.Index("ix_alerts_team_state", "team_id", "state"),
    sa.Index("ix_alerts_subject", "subject_ref"),
    sa.Index(
        "uq_alerts_active_subject_condition",
        "subject_ref",
        "condition",
        unique=True,
        sqlite_where=sa.text("state IN ('open', 'acknowledged')"),
        postgresql_where=sa.text("state IN ('open', 'acknowledged')"),
    ),
)

alert_events = sa.Table(
    "alert_events",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column(
        "alert_id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        sa.ForeignKey("alerts.id"),
        nullable=False,
        index=True,
    ),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("action", sa.String(20), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("note", sa.Text, nullable=True),
)

patient_thresholds = sa.Table(
    "patient_thresholds",
    metadata,
    sa.Column("subject_ref", sa.String(128), primary_key=True),
    sa.Column("condition", sa.String(64), primary_key=True),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("unit", sa.String(32), nullable=False),
    sa.Column("set_by", sa.String(128), nullable=False),
    sa.Column("set_at", UTCDateTime(), nullable=False),
)


# -- care teams, staff and routing (0003) ---------------------------------------------------------

care_teams = sa.Table(
    "care_teams",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

#: Staff: role clinician / home_care / admin. The API token is kept as its SHA-256 only.
staff = sa.Table(
    "staff",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("role", sa.String(20), nullable=False),
    sa.Column("token_sha256", sa.String(64), nullable=True, unique=True),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

staff_teams = sa.Table(
    "staff_teams",
    metadata,
    sa.Column("staff_id", sa.String(64), sa.ForeignKey("staff.id"), primary_key=True),
    sa.Column("team_id", sa.String(64), sa.ForeignKey("care_teams.id"), primary_key=True),
)

#: A patient: pseudonymous subject ref (never a name or a personal identity code), the clinical
#: care team that receives the patient's clinical alerts, the local time zone.
patients = sa.Table(
    "patients",
    metadata,
    sa.Column("subject_ref", sa.String(128), primary_key=True),
    sa.Column("team_id", sa.String(64), sa.ForeignKey("care_teams.id"), nullable=False),
    sa.Column("time_zone", sa.String(64), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Index("ix_patients_team", "team_id"),
)

#: A home-care medication dispenser client: the home-care team that receives the dispenser's
#: alerts, the missed-dose window (DOMAIN.md §4: 5 min to 5 h, typically 30 to 60 min) and the
#: local dose times ("HH:MM" strings).
dispenser_clients = sa.Table(
    "dispenser_clients",
    metadata,
    sa.Column(
        "subject_ref", sa.String(128), sa.ForeignKey("patients.subject_ref"), primary_key=True
    ),
    sa.Column("home_care_team_id", sa.String(64), sa.ForeignKey("care_teams.id"), nullable=False),
    sa.Column("missed_dose_window_min", sa.Integer, nullable=False),
    sa.Column("dose_times", JSONType, nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Index("ix_dispenser_clients_team", "home_care_team_id"),
)

#: Kiosk visits (``remon.visit/1``): one row per visit message; its readings are ordinary
#: observations, stored under the parts' msg_ids (``part_msg_ids``).
kiosk_visits = sa.Table(
    "kiosk_visits",
    metadata,
    sa.Column("msg_id", sa.String(32), primary_key=True),
    sa.Column("visit_ref", sa.String(128), nullable=False),
    sa.Column("site", sa.String(63), nullable=False),
    sa.Column("subject_ref", sa.String(128), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("ended_at", UTCDateTime(), nullable=False),
    sa.Column("quarantined", sa.Integer, nullable=False),
    sa.Column("observations", sa.Integer, nullable=False),
    sa.Column("part_msg_ids", JSONType, nullable=False),
    sa.Column("answers", JSONType, nullable=False),
    sa.Column("summaries", JSONType, nullable=False),  # results the kiosk derived (BP mean)
    sa.Column("received_at", UTCDateTime(), nullable=False),
    sa.Index("ix_kiosk_visits_subject_time", "subject_ref", "started_at"),
)

#: The web UI's sign-ins. The browser holds a random session id; only its SHA-256 is stored,
#: with the SHA-256 of the token it was opened with: re-issuing that token (or removing a service
#: account) ends its sessions, and so does signing out, at once, on the server.
web_sessions = sa.Table(
    "web_sessions",
    metadata,
    sa.Column("sid_sha256", sa.String(64), primary_key=True),
    sa.Column("token_sha256", sa.String(64), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Index("ix_web_sessions_expires", "expires_at"),
)

#: Changes made through the API to the directory and thresholds (alert actions are in
#: ``alert_events``, each alert's own trail).
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("action", sa.String(40), nullable=False),
    sa.Column("object_kind", sa.String(20), nullable=False),
    sa.Column("object_id", sa.String(128), nullable=False),
    sa.Column("detail", JSONType, nullable=False),
    sa.Index("ix_audit_log_object", "object_kind", "object_id"),
)


#: The newest reading of each subject's continuous stream (``cgm``), upserted by ingest (only
#: ever forward in time) so the stale-data rule reads one row per subject, not the observations.
stream_last_seen = sa.Table(
    "stream_last_seen",
    metadata,
    sa.Column("subject_ref", sa.String(128), primary_key=True),
    sa.Column("stream", sa.String(32), primary_key=True),
    sa.Column("newest_time", UTCDateTime(), nullable=False),
    sa.Column("newest_obs_id", sa.String(32), nullable=False),
    sa.Column("simulated", sa.Boolean, nullable=False),
)

#: A care team's own value for a condition: between the built-in default and a patient's value.
team_thresholds = sa.Table(
    "team_thresholds",
    metadata,
    sa.Column("team_id", sa.String(64), sa.ForeignKey("care_teams.id"), primary_key=True),
    sa.Column("condition", sa.String(64), primary_key=True),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("unit", sa.String(32), nullable=False),
    sa.Column("set_by", sa.String(128), nullable=False),
    sa.Column("set_at", UTCDateTime(), nullable=False),
)

#: A clinician-entered figure of one patient, e.g. ``pef-personal-best`` in L/min (DOMAIN.md §1).
patient_parameters = sa.Table(
    "patient_parameters",
    metadata,
    sa.Column("subject_ref", sa.String(128), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("unit", sa.String(32), nullable=False),
    sa.Column("set_by", sa.String(128), nullable=False),
    sa.Column("set_at", UTCDateTime(), nullable=False),
)

#: A patient's PEF diary period (local dates, in the patient's time zone), for the missed
#: session rule (DOMAIN.md §1: two sessions a day for one or two weeks).
pef_diaries = sa.Table(
    "pef_diaries",
    metadata,
    sa.Column("subject_ref", sa.String(128), primary_key=True),
    sa.Column("first_day", sa.Date, nullable=False),
    sa.Column("last_day", sa.Date, nullable=False),
    sa.Column("set_by", sa.String(128), nullable=False),
    sa.Column("set_at", UTCDateTime(), nullable=False),
)

#: Which subject each device has reported for (the hub's binding), first and last seen: the
#: device bindings over time. ``device_key`` is manufacturer|model|serial, as on device events.
device_subjects = sa.Table(
    "device_subjects",
    metadata,
    sa.Column("device_key", sa.String(400), primary_key=True),
    sa.Column("subject_ref", sa.String(128), primary_key=True),
    sa.Column("site", sa.String(63), nullable=False),
    sa.Column("device_id", sa.String(63), nullable=False),
    sa.Column("first_seen", UTCDateTime(), nullable=False),
    sa.Column("last_seen", UTCDateTime(), nullable=False),
    # the device's identity as its newest message gave it (what support staff check first)
    sa.Column("firmware", sa.String(128), nullable=True),
    sa.Column("transport", sa.String(128), nullable=True),
    sa.Index("ix_device_subjects_subject", "subject_ref"),
)

#: Each device's last known state (``remon.telemetry/1``); each value keeps its own time.
device_telemetry = sa.Table(
    "device_telemetry",
    metadata,
    sa.Column("device_key", sa.String(400), primary_key=True),
    sa.Column("site", sa.String(63), nullable=False),
    sa.Column("device_id", sa.String(63), nullable=False),
    sa.Column("battery_pct", sa.SmallInteger(), nullable=True),
    sa.Column("battery_at", UTCDateTime(), nullable=True),
    sa.Column("rssi_dbm", sa.SmallInteger(), nullable=True),
    sa.Column("rssi_at", UTCDateTime(), nullable=True),
    sa.Column("link", sa.String(16), nullable=True),
    sa.Column("link_at", UTCDateTime(), nullable=True),
    sa.Column("clock_offset_s", sa.Float(), nullable=True),
    sa.Column("clock_at", UTCDateTime(), nullable=True),
    sa.Column("received_at", UTCDateTime(), nullable=False),
)
