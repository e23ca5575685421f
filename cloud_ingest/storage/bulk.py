"""The ingest hot path: messages, readings and events as plain tuples, few statements a table.

Why not SQLAlchemy Core here: at 10 000 readings per batch its per-row parameter processing
(``construct_params``, the :class:`~cloud_ingest.storage.schema.UTCDateTime` decorator, JSON
serialisation per value) and, on PostgreSQL, the giant ``insertmanyvalues`` SQL text that psycopg
then has to parse cost more than the database itself. Rows are built once, as tuples, with each
value already in the form the driver stores (the same forms SQLAlchemy would produce, so the
query side reads them back unchanged):

- SQLite: times as UTC text ``YYYY-MM-DD HH:MM:SS.ffffff`` (SQLAlchemy's SQLite ``DATETIME``
  format, so text order is time order), JSON as ``json.dumps`` text. The write transaction is
  ``BEGIN IMMEDIATE`` (the database's single writer lock is held from the start), so a pre-select
  of the keys followed by a plain ``executemany`` INSERT stores exactly the keys that were
  missing; a key that appears anyway raises ``IntegrityError`` and the batch is retried.
- PostgreSQL: the rows go by binary ``COPY`` into a session-local staging table, then one
  ``INSERT ... SELECT ... ON CONFLICT DO NOTHING RETURNING <key>`` per table moves them: short SQL
  whatever the batch size, no pre-select, no per-value Python adaptation. The returned keys are
  exactly the rows this transaction stored; a key inserted by a concurrent transaction waits for
  it and is then skipped, so two workers never both store (or evaluate) a reading. Rows go in
  key order, so concurrent batches take index locks in the same order.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, Final

import sqlalchemy as sa

from cloud_ingest.storage import schema as t
from gateway.wire import Envelope, EventEnvelope, WireEvent, WireObservation

#: Keys per ``IN (...)`` list on SQLite (its default bind parameter limit is 32 766).
SQLITE_IN_CHUNK: Final = 500

#: messages columns in row order, with the PostgreSQL array type of each.
MESSAGE_COLUMNS: Final[tuple[tuple[str, str], ...]] = (
    ("msg_id", "text"),
    ("schema", "text"),
    ("topic", "text"),
    ("site", "text"),
    ("device_id", "text"),
    ("subject_kind", "text"),
    ("subject_ref", "text"),
    ("created_at", "timestamptz"),
    ("received_at", "timestamptz"),
    ("observation_count", "int4"),
)

#: observations columns in row order: the key, the envelope's columns (shared by all readings of
#: one message), then the reading's own columns.
OBSERVATION_COLUMNS: Final[tuple[tuple[str, str], ...]] = (
    ("obs_id", "text"),
    ("msg_id", "text"),
    ("site", "text"),
    ("device_id", "text"),
    ("device_manufacturer", "text"),
    ("device_model", "text"),
    ("device_serial", "text"),
    ("device_firmware", "text"),
    ("device_transport", "text"),
    ("subject_kind", "text"),
    ("subject_ref", "text"),
    ("received_at", "timestamptz"),
    ("measure", "text"),
    ("value", "float8"),
    ("comparator", "text"),
    ("absent_reason", "text"),
    ("unit", "text"),
    ("effective_time", "timestamptz"),
    ("device_time", "text"),
    ("clock_offset_s", "float8"),
    ("record_key", "text"),
    ("quality", "jsonb"),
    ("provenance", "jsonb"),
)

#: device_events columns in row order: the key, the envelope's columns, the event's own.
EVENT_COLUMNS: Final[tuple[tuple[str, str], ...]] = (
    ("event_id", "text"),
    ("msg_id", "text"),
    ("site", "text"),
    ("device_id", "text"),
    ("device_key", "text"),
    ("subject_kind", "text"),
    ("subject_ref", "text"),
    ("received_at", "timestamptz"),
    ("kind", "text"),
    ("event_time", "timestamptz"),
    ("dose_id", "text"),
    ("scheduled_time", "timestamptz"),
    ("device_time", "text"),
    ("clock_offset_s", "float8"),
    ("details", "text"),
    ("quality", "jsonb"),
    ("provenance_source", "text"),
)

Row = tuple[Any, ...]
TimeFn = Callable[[datetime], Any]


def _check_aware(dt: datetime) -> datetime:
    if dt.tzinfo is UTC:  # the usual case (the wire decoder normalises to UTC)
        return dt
    if dt.utcoffset() is None:
        raise ValueError(f"naive datetime {dt.isoformat()} given to a UTC column")
    return dt


def sqlite_time(dt: datetime) -> str:
    """An aware datetime as SQLite stores it here: UTC text with microseconds, no offset."""
    if dt.tzinfo is UTC:  # the usual case (the wire decoder normalises to UTC): no arithmetic
        return dt.isoformat(" ", "microseconds")[:26]
    off = dt.utcoffset()
    if off is None:
        raise ValueError(f"naive datetime {dt.isoformat()} given to a UTC column")
    if off:
        dt = dt - off
    return dt.replace(tzinfo=None).isoformat(" ", "microseconds")


def _float(v: float | None) -> float | None:
    return None if v is None else float(v)


class RowBuilder:
    """Builds message, observation and event rows for one dialect; JSON texts cached per batch."""

    def __init__(self, dialect: str) -> None:
        self.sqlite = dialect == "sqlite"
        self.time: TimeFn = sqlite_time if self.sqlite else _check_aware
        self._quality: dict[frozenset[Any], str] = {}
        self._provenance: dict[Any, str] = {}

    def message(self, topic: str, env: Envelope, received_at: datetime) -> Row:
        return (
            env.msg_id,
            env.schema,
            topic,
            env.site,
            env.device_id,
            env.subject.kind,
            env.subject.ref,
            self.time(env.created_at),
            self.time(received_at),
            len(env.observations),
        )

    def envelope_part(self, env: Envelope, received_at: datetime) -> Row:
        """The observation columns that come from the envelope (after ``obs_id``)."""
        d = env.device
        return (
            env.msg_id,
            env.site,
            env.device_id,
            d.manufacturer,
            d.model,
            d.serial,
            d.firmware,
            d.transport,
            env.subject.kind,
            env.subject.ref,
            self.time(received_at),
        )

    def observation(self, env_part: Row, wo: WireObservation) -> Row:
        o = wo.observation
        q = o.quality
        quality = self._quality.get(q)
        if quality is None:
            quality = self._quality[q] = json.dumps(sorted(f.value for f in q))
        p = o.provenance
        provenance = self._provenance.get(p)
        if provenance is None:
            prov: dict[str, Any] = {"source": p.source}
            if p.original_value is not None:
                prov["original_value"] = p.original_value
            if p.original_unit is not None:
                prov["original_unit"] = p.original_unit
            if p.raw is not None:
                prov["raw"] = p.raw
            provenance = self._provenance[p] = json.dumps(prov)
        value = o.value
        offset = o.clock_offset_s
        if not self.sqlite:  # psycopg refuses lists that mix int and float
            value = _float(value)
            offset = _float(offset)
        return (
            wo.obs_id,
            *env_part,
            o.measure,
            value,
            o.comparator,
            o.absent_reason.value if o.absent_reason is not None else None,
            o.unit,
            self.time(o.effective_time),
            o.device_time,
            offset,
            o.record_key,
            quality,
            provenance,
        )

    def event(self, env: EventEnvelope, received_at: datetime, we: WireEvent) -> Row:
        e = we.event
        quality = self._quality.get(e.quality)
        if quality is None:
            quality = self._quality[e.quality] = json.dumps(sorted(f.value for f in e.quality))
        return (
            we.event_id,
            env.msg_id,
            env.site,
            env.device_id,
            env.device.key,
            env.subject.kind,
            env.subject.ref,
            self.time(received_at),
            e.kind.value,
            self.time(e.event_time),
            e.dose_id,
            None if e.scheduled_time is None else self.time(e.scheduled_time),
            e.device_time,
            _float(e.clock_offset_s),
            json.dumps(dict(e.details), sort_keys=True, ensure_ascii=False),
            quality,
            e.provenance.source,
        )


@dataclass(frozen=True, slots=True)
class _Statements:
    """The SQL of the hot path for one table. Built from this module's constants only."""

    key: str
    # PostgreSQL
    create_staging: str
    clear_staging: str
    copy: str
    copy_types: tuple[str, ...]
    insert_from_staging: str
    # SQLite
    select_keys: str  # "{marks}" is replaced by the placeholders of one chunk
    insert_rows: str


#: JSON goes through COPY as text (psycopg's jsonb dumper would re-serialise our JSON text).
_COPY_TYPE: Final = {"jsonb": "text"}


@cache
def _statements(table: str, columns: tuple[tuple[str, str], ...]) -> _Statements:
    key = columns[0][0]
    staging = f"remon_staging_{table}"
    names = ", ".join(f'"{c}"' for c, _ in columns)
    copy_types = tuple(_COPY_TYPE.get(ty, ty) for _, ty in columns)
    coldefs = ", ".join(f'"{c}" {ty}' for (c, _), ty in zip(columns, copy_types, strict=True))
    select = ", ".join(f'"{c}"::jsonb' if ty == "jsonb" else f'"{c}"' for c, ty in columns)
    return _Statements(
        key=key,
        create_staging=(
            "SET LOCAL client_min_messages = warning; "
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {staging} ({coldefs}) ON COMMIT DELETE ROWS"
        ),
        clear_staging=f"DELETE FROM {staging}",  # noqa: S608 - constant identifiers
        copy=f"COPY {staging} ({names}) FROM STDIN (FORMAT BINARY)",
        copy_types=copy_types,
        insert_from_staging=(
            f"INSERT INTO {table} ({names}) SELECT {select} FROM {staging} "  # noqa: S608
            f'ORDER BY "{key}" ON CONFLICT ("{key}") DO NOTHING RETURNING "{key}"'
        ),
        select_keys=f'SELECT "{key}" FROM {table} WHERE "{key}" IN ({{marks}})',  # noqa: S608
        insert_rows=(
            f"INSERT INTO {table} ({names}) "  # noqa: S608 - constant identifiers
            f"VALUES ({', '.join('?' * len(columns))})"
        ),
    )


class BulkInserter:
    """Inserts rows whose key is not stored yet, within one write transaction."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn
        self._staged: set[str] = set()  # PostgreSQL staging tables used in this transaction

    def insert_new(
        self, table: sa.Table, columns: tuple[tuple[str, str], ...], rows: Sequence[Row]
    ) -> set[str]:
        """Insert the rows whose key (first column, unique) is not stored yet; return their keys.

        ``rows`` must be sorted by key with no key twice.
        """
        if not rows:
            return set()
        sql = _statements(table.name, columns)
        if self.conn.dialect.name == "postgresql":
            return self._insert_new_pg(table.name, sql, rows)
        return self._insert_new_sqlite(sql, rows)

    def _insert_new_pg(self, table: str, sql: _Statements, rows: Sequence[Row]) -> set[str]:
        """COPY (binary) into a session-local staging table, then one INSERT ... SELECT.

        psycopg formats COPY rows in C; array parameters (``unnest``) were dumped element by
        element in Python at ~17 us per reading. The staging table is ``ON COMMIT DELETE ROWS``:
        emptied at commit, and a rollback removes what this transaction put there.
        """
        dbapi_conn: Any = self.conn.connection.driver_connection
        dbapi_error: type[Exception] = self.conn.dialect.loaded_dbapi.Error
        stmt = sql.clear_staging if table in self._staged else sql.create_staging
        try:
            with dbapi_conn.cursor() as cur:
                cur.execute(stmt)
                self._staged.add(table)
                stmt = sql.copy
                with cur.copy(stmt) as copy:
                    copy.set_types(sql.copy_types)
                    for r in rows:
                        copy.write_row(r)
                stmt = sql.insert_from_staging
                cur.execute(stmt)
                return {r[0] for r in cur.fetchall()}
        except dbapi_error as exc:  # the raw driver was used: wrap it as SQLAlchemy would
            raise sa.exc.DBAPIError.instance(stmt, None, exc, dbapi_error) from exc

    def _insert_new_sqlite(self, sql: _Statements, rows: Sequence[Row]) -> set[str]:
        keys = [r[0] for r in rows]
        existing: set[str] = set()
        for i in range(0, len(keys), SQLITE_IN_CHUNK):
            part = tuple(keys[i : i + SQLITE_IN_CHUNK])
            select = sql.select_keys.format(marks=",".join("?" * len(part)))
            existing.update(r[0] for r in self.conn.exec_driver_sql(select, part))
        new_rows = [r for r in rows if r[0] not in existing] if existing else list(rows)
        if new_rows:
            self.conn.exec_driver_sql(sql.insert_rows, new_rows)
        return {r[0] for r in new_rows}


def check_columns() -> None:
    """The hot-path column lists cover the tables (every column but the surrogate ``id``)."""
    for table, columns in (
        (t.messages, MESSAGE_COLUMNS),
        (t.observations, OBSERVATION_COLUMNS),
        (t.device_events, EVENT_COLUMNS),
    ):
        want = {c.name for c in table.columns if c.name != "id"}
        have = {c for c, _ in columns}
        if want != have:
            raise AssertionError(f"{table.name}: hot-path columns {have ^ want} out of step")
