"""The ingest hot path: messages and readings as plain tuples, one or two statements per table.

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
- PostgreSQL: one ``INSERT ... SELECT FROM unnest(<one array parameter per column>) ON CONFLICT
  DO NOTHING RETURNING <key>`` per table: a short SQL text whatever the batch size, no pre-select.
  The returned keys are exactly the rows this transaction stored; a key inserted by a concurrent
  transaction waits for it and is then skipped, so two workers never both store (or evaluate) a
  reading. Rows go in key order, so concurrent batches take index locks in the same order.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa

from cloud_ingest.storage import schema as t
from gateway.wire import Envelope, WireObservation

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

Row = tuple[Any, ...]
TimeFn = Callable[[datetime], Any]


def _check_aware(dt: datetime) -> datetime:
    if dt.utcoffset() is None:
        raise ValueError(f"naive datetime {dt.isoformat()} given to a UTC column")
    return dt


def sqlite_time(dt: datetime) -> str:
    """An aware datetime as SQLite stores it here: UTC text with microseconds, no offset."""
    off = dt.utcoffset()
    if off is None:
        raise ValueError(f"naive datetime {dt.isoformat()} given to a UTC column")
    if off:
        dt = dt - off
    return dt.replace(tzinfo=None).isoformat(" ", "microseconds")


def _float(v: float | None) -> float | None:
    return None if v is None else float(v)


class RowBuilder:
    """Builds message and observation rows for one dialect; JSON texts are cached per batch."""

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
            (wo.obs_id,)
            + env_part
            + (
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
        )


def insert_new(
    conn: sa.Connection,
    table: sa.Table,
    columns: Sequence[tuple[str, str]],
    rows: Sequence[Row],
) -> set[str]:
    """Insert the rows whose key (first column, unique) is not stored yet; return their keys.

    ``rows`` must be sorted by key with no key twice.
    """
    if not rows:
        return set()
    if conn.dialect.name == "postgresql":
        return _insert_new_pg(conn, table.name, columns, rows)
    return _insert_new_sqlite(conn, table.name, columns, rows)


def _insert_new_pg(
    conn: sa.Connection, table: str, columns: Sequence[tuple[str, str]], rows: Sequence[Row]
) -> set[str]:
    names = ", ".join(f'"{c}"' for c, _ in columns)
    arrays = ", ".join(f"%s::{'text' if ty == 'jsonb' else ty}[]" for _, ty in columns)
    aliases = ", ".join(f"c{i}" for i in range(len(columns)))
    select = ", ".join(
        f"c{i}::jsonb" if ty == "jsonb" else f"c{i}" for i, (_, ty) in enumerate(columns)
    )
    key = columns[0][0]
    sql = (
        f"INSERT INTO {table} ({names}) SELECT {select} FROM unnest({arrays}) AS u({aliases}) "
        f'ON CONFLICT ("{key}") DO NOTHING RETURNING "{key}"'
    )
    params = tuple(list(col) for col in zip(*rows, strict=True))
    return {r[0] for r in conn.exec_driver_sql(sql, params)}


def _insert_new_sqlite(
    conn: sa.Connection, table: str, columns: Sequence[tuple[str, str]], rows: Sequence[Row]
) -> set[str]:
    key = columns[0][0]
    keys = [r[0] for r in rows]
    existing: set[str] = set()
    for i in range(0, len(keys), SQLITE_IN_CHUNK):
        part = keys[i : i + SQLITE_IN_CHUNK]
        marks = ",".join("?" * len(part))
        sql = f'SELECT "{key}" FROM {table} WHERE "{key}" IN ({marks})'
        existing.update(r[0] for r in conn.exec_driver_sql(sql, tuple(part)))
    new_rows = [r for r in rows if r[0] not in existing] if existing else list(rows)
    if new_rows:
        names = ", ".join(f'"{c}"' for c, _ in columns)
        marks = ", ".join("?" * len(columns))
        conn.exec_driver_sql(f"INSERT INTO {table} ({names}) VALUES ({marks})", new_rows)
    return {r[0] for r in new_rows}


def check_columns() -> None:
    """The hot-path column lists cover the tables (every column but the surrogate ``id``)."""
    for table, columns in ((t.messages, MESSAGE_COLUMNS), (t.observations, OBSERVATION_COLUMNS)):
        want = {c.name for c in table.columns if c.name != "id"}
        have = {c for c, _ in columns}
        if want != have:
            raise AssertionError(f"{table.name}: hot-path columns {have ^ want} out of step")
