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
    sa.Column("first_time", UTCDateTime(), nullable=False),
    sa.Column("last_obs_id", sa.String(32), nullable=False),
    sa.Column("last_value", sa.Float, nullable=False),
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
    sa.Index("ix_alerts_state_priority", "state", "priority"),
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
