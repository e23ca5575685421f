"""The relational store: the hot ingest path and the queries behind the API.

Hot path (:meth:`WriteTx.store_envelopes`): one transaction per batch, a handful of statements
per batch whatever its size, rows built once as plain tuples (:mod:`.bulk`). Each table's insert
reports exactly the keys this transaction stored (PostgreSQL: ``INSERT ... ON CONFLICT DO
NOTHING RETURNING`` from a COPY-filled staging table; SQLite: pre-select under ``BEGIN
IMMEDIATE``), so two workers racing on the same message or reading store it once and only the
winner evaluates rules on it. Rows are inserted in key order so concurrent batches take index
locks in the same order.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Final, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Engine

from cloud_ingest.storage import schema as t
from cloud_ingest.storage.bulk import (
    EVENT_COLUMNS,
    MESSAGE_COLUMNS,
    OBSERVATION_COLUMNS,
    BulkInserter,
    Row,
    RowBuilder,
)
from cloud_ingest.storage.engine import SQLITE_BEGIN, create_engine
from cloud_ingest.storage.engine import migrate as migrate_schema
from cloud_ingest.storage.records import (
    AlertChangedError,
    AlertEventIn,
    AlertEventRecord,
    AlertNotFoundError,
    AlertRecord,
    AuditIn,
    ConflictError,
    Counts,
    DeadLetterIn,
    DeadLetterRecord,
    DeviceSubjectRecord,
    EventFacts,
    EventOutcome,
    EventRecord,
    InboundEnvelope,
    InboundEvents,
    KioskVisitRecord,
    LastSeen,
    ObservationRecord,
    OverrideRecord,
    ParameterRecord,
    PefDiaryRecord,
    ReadingFacts,
    Routing,
    SeriesPoint,
    SiteRecord,
    StatusIn,
    StorageError,
    StoredEvent,
    StoredReading,
    StoreOutcome,
    TeamThresholdRecord,
    TelemetryIn,
    UnroutedSubject,
    VisitIn,
)

#: Keys per IN (...) list; well under SQLite's and PostgreSQL's bind parameter limits.
IN_CHUNK: Final = 900
_ACTIVE: Final = ("open", "acknowledged")
_RETRIABLE_SQLSTATES: Final = frozenset({"40001", "40P01", "23505"})
#: device_telemetry: each value column and the column of its time.
_TELEMETRY_VALUES: Final = {
    "battery_pct": "battery_at",
    "rssi_dbm": "rssi_at",
    "link": "link_at",
    "clock_offset_s": "clock_at",
}
#: The telemetry listed beside a device's bindings.
_LISTED_TELEMETRY: Final = tuple(c for pair in _TELEMETRY_VALUES.items() for c in pair)

R = TypeVar("R")


def _chunks(items: Sequence[R], size: int = IN_CHUNK) -> Iterator[Sequence[R]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _translate(exc: sa.exc.DBAPIError) -> StorageError:
    code = getattr(exc.orig, "sqlstate", None)
    if isinstance(exc, sa.exc.IntegrityError) or code in _RETRIABLE_SQLSTATES:
        return ConflictError(str(exc.orig))
    return StorageError(str(exc.orig))


def _row(cls: type[R], row: Any) -> R:
    return cls(**row._asdict())


def _utc_param(dt: datetime) -> datetime:
    """A UTC column's parameter as :class:`~.schema.UTCDateTime` binds it on PostgreSQL."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"naive datetime {dt.isoformat()} given to a UTC column")
    return dt.astimezone(UTC)


#: Side tables of the ingest hot path on PostgreSQL: one statement per batch, rows as arrays.
_PG_UPSERT_DEVICE_SUBJECTS: Final = (
    "INSERT INTO device_subjects "
    "(device_key, subject_ref, site, device_id, first_seen, last_seen, firmware, transport) "
    "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], "
    "%s::timestamptz[], %s::timestamptz[], %s::text[], %s::text[]) "
    "ON CONFLICT (device_key, subject_ref) DO UPDATE SET "
    "site = excluded.site, device_id = excluded.device_id, "
    "firmware = CASE WHEN excluded.last_seen >= device_subjects.last_seen "
    "THEN COALESCE(excluded.firmware, device_subjects.firmware) "
    "ELSE COALESCE(device_subjects.firmware, excluded.firmware) END, "
    "transport = CASE WHEN excluded.last_seen >= device_subjects.last_seen "
    "THEN COALESCE(excluded.transport, device_subjects.transport) "
    "ELSE COALESCE(device_subjects.transport, excluded.transport) END, "
    "first_seen = CASE WHEN excluded.first_seen < device_subjects.first_seen "
    "THEN excluded.first_seen ELSE device_subjects.first_seen END, "
    "last_seen = CASE WHEN excluded.last_seen > device_subjects.last_seen "
    "THEN excluded.last_seen ELSE device_subjects.last_seen END"
)
_PG_INSERT_ALERT_EVENTS: Final = (
    "INSERT INTO alert_events (alert_id, at, action, actor, note) "
    "SELECT alert_id, at, action, actor, note "
    "FROM unnest(%s::int8[], %s::timestamptz[], %s::text[], %s::text[], %s::text[]) "
    "WITH ORDINALITY AS e(alert_id, at, action, actor, note, n) ORDER BY n"
)
_PG_UPSERT_LAST_SEEN: Final = (
    "INSERT INTO stream_last_seen (subject_ref, stream, newest_time, newest_obs_id, simulated) "
    "SELECT * FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::text[], %s::bool[]) "
    "ON CONFLICT (subject_ref, stream) DO UPDATE SET "
    "newest_time = excluded.newest_time, newest_obs_id = excluded.newest_obs_id, "
    "simulated = excluded.simulated "
    "WHERE excluded.newest_time > stream_last_seen.newest_time"
)


class WriteTx:
    """One write transaction (see :meth:`Storage.write`)."""

    def __init__(self, conn: sa.Connection) -> None:
        self.conn = conn
        self._dialect = conn.dialect.name
        self._bulk = BulkInserter(conn)

    def _insert(self, table: sa.Table) -> Any:
        if self._dialect == "postgresql":
            return pg_dialect.insert(table)
        return sqlite_dialect.insert(table)

    # -- ingest --------------------------------------------------------------------------------

    def insert_dead_letters(self, rows: Sequence[DeadLetterIn], *, now: datetime) -> None:
        if not rows:
            return
        self.conn.execute(
            sa.insert(t.dead_letters),
            [
                {
                    "topic": r.topic,
                    "payload": r.payload,
                    "code": r.code,
                    "path": r.path,
                    "detail": r.detail,
                    "received_at": r.received_at,
                    "stored_at": now,
                }
                for r in rows
            ],
        )

    def insert_visits(self, rows: Sequence[VisitIn]) -> int:
        """Store each kiosk visit once (by its msg_id); return how many were new. Its readings
        are stored with the other envelopes of the batch."""
        if not rows:
            return 0
        values = [
            {
                "msg_id": v.envelope.msg_id,
                "visit_ref": v.envelope.visit_ref,
                "site": v.envelope.site,
                "subject_ref": v.envelope.subject.ref,
                "started_at": v.envelope.started_at,
                "ended_at": v.envelope.ended_at,
                "quarantined": v.envelope.quarantined,
                "observations": v.envelope.observation_count,
                "part_msg_ids": [p.msg_id for p in v.envelope.parts],
                "answers": [{"id": a.id, "value": a.value} for a in v.envelope.answers],
                "summaries": [
                    {"id": s.id, "values": dict(s.values), "method": s.method}
                    for s in v.envelope.summaries
                ],
                "received_at": v.received_at,
            }
            for v in {v.envelope.msg_id: v for v in rows}.values()
        ]
        kv = t.kiosk_visits
        stmt = (
            self._insert(kv)
            .on_conflict_do_nothing(index_elements=["msg_id"])
            .returning(kv.c.msg_id)
        )
        new = 0
        for row in values:  # a handful per batch: a visit is minutes of a person's time
            new += len(self.conn.execute(stmt, row).all())
        return new

    def store_envelopes(self, items: Sequence[InboundEnvelope]) -> StoreOutcome:
        """Store messages and their readings exactly once; return what was new.

        Only the readings of messages this transaction stored are offered, and only the readings
        it stored come back in ``new_readings`` (see :mod:`.bulk` for how each dialect knows).
        """
        unique: dict[str, InboundEnvelope] = {}
        for it in items:
            unique.setdefault(it.envelope.msg_id, it)
        keys = sorted(unique)
        build = RowBuilder(self._dialect)
        stored_msgs = self._bulk.insert_new(
            t.messages,
            MESSAGE_COLUMNS,
            [
                build.message(unique[k].topic, unique[k].envelope, unique[k].received_at)
                for k in keys
            ],
        )
        dup_msgs = len(items) - len(stored_msgs)
        if not stored_msgs:
            return StoreOutcome(
                messages=0, duplicate_messages=dup_msgs, duplicate_observations=0, new_readings=()
            )

        readings: dict[str, StoredReading] = {}
        parts: dict[str, Row] = {}
        offered = 0
        for k in keys:
            if k not in stored_msgs:
                continue
            it = unique[k]
            observations = it.envelope.observations
            offered += len(observations)
            parts[k] = build.envelope_part(it.envelope, it.received_at)
            for wo in observations:
                if wo.obs_id not in readings:
                    readings[wo.obs_id] = StoredReading(it, wo)
        obs_keys = sorted(readings)
        rows = []
        for k in obs_keys:
            r = readings[k]
            rows.append(build.observation(parts[r.inbound.envelope.msg_id], r.observation))
        stored_obs = self._bulk.insert_new(t.observations, OBSERVATION_COLUMNS, rows)
        new = tuple(readings[k] for k in obs_keys if k in stored_obs)
        return StoreOutcome(
            messages=len(stored_msgs),
            duplicate_messages=dup_msgs,
            duplicate_observations=offered - len(new),
            new_readings=new,
        )

    def store_events(self, items: Sequence[InboundEvents]) -> EventOutcome:
        """Store device events exactly once (by ``event_id``); return the ones this batch stored."""
        offered: dict[str, StoredEvent] = {}
        count = 0
        for it in items:
            count += len(it.envelope.events)
            for we in it.envelope.events:
                offered.setdefault(we.event_id, StoredEvent(it, we))
        keys = sorted(offered)
        build = RowBuilder(self._dialect)
        rows = [
            build.event(
                offered[k].inbound.envelope, offered[k].inbound.received_at, offered[k].event
            )
            for k in keys
        ]
        stored = self._bulk.insert_new(t.device_events, EVENT_COLUMNS, rows)
        new = tuple(offered[k] for k in keys if k in stored)
        return EventOutcome(duplicates=count - len(new), new_events=new)

    def upsert_statuses(self, rows: Sequence[StatusIn]) -> None:
        """Latest status per site wins (by the agent's own time, else the receive time)."""
        latest: dict[str, dict[str, Any]] = {}
        for r in rows:
            at = r.status.at or r.received_at
            cur = latest.get(r.status.site)
            if cur is None or at >= cur["at"]:
                latest[r.status.site] = {
                    "site": r.status.site,
                    "state": r.status.state,
                    "at": at,
                    "agent_version": r.status.agent_version,
                    "received_at": r.received_at,
                    "outbox_pending": r.status.outbox_pending,
                }
        if not latest:
            return
        ins = self._insert(t.sites)
        stmt = ins.on_conflict_do_update(
            index_elements=["site"],
            set_={
                c: ins.excluded[c]
                for c in ("state", "at", "agent_version", "received_at", "outbox_pending")
            },
            where=t.sites.c.at <= ins.excluded.at,
        )
        self.conn.execute(stmt, [latest[k] for k in sorted(latest)])

    def upsert_telemetry(self, rows: Sequence[TelemetryIn]) -> None:
        """Each device's last known battery, RSSI, link and clock offset.

        Each value is replaced only by a newer one (by the sample's hub time), so samples that
        arrive out of order, twice, or from concurrent workers leave the newest of each.
        """
        latest: dict[str, dict[str, Any]] = {}
        for r in rows:
            env = r.envelope
            key = env.device.key
            row = latest.setdefault(
                key,
                {
                    "device_key": key,
                    **dict.fromkeys(_TELEMETRY_VALUES),  # every column, so rows share a shape
                    **dict.fromkeys(_TELEMETRY_VALUES.values()),
                    "at": None,
                },
            )
            for w in env.samples:
                s = w.telemetry
                if row["at"] is None or s.at >= row["at"]:
                    row["at"] = s.at
                    row["site"], row["device_id"] = env.site, env.device_id
                for name, at_col in _TELEMETRY_VALUES.items():
                    value = getattr(s, name)
                    if value is not None and (row[at_col] is None or s.at >= row[at_col]):
                        row[name] = value.value if name == "link" else value
                        row[at_col] = s.at
            row["received_at"] = r.received_at
        if not latest:
            return
        tbl = t.device_telemetry
        ins = self._insert(tbl)
        newer = {
            at_col: sa.and_(
                ins.excluded[at_col].is_not(None),
                sa.or_(tbl.c[at_col].is_(None), ins.excluded[at_col] >= tbl.c[at_col]),
            )
            for at_col in _TELEMETRY_VALUES.values()
        }
        set_: dict[str, Any] = {"received_at": ins.excluded.received_at}
        for name, at_col in _TELEMETRY_VALUES.items():
            for col in (name, at_col):
                set_[col] = sa.case((newer[at_col], ins.excluded[col]), else_=tbl.c[col])
        # the site and topic id follow the link state (a device reported by another hub)
        for col in ("site", "device_id"):
            set_[col] = sa.case((newer["link_at"], ins.excluded[col]), else_=tbl.c[col])
        stmt = ins.on_conflict_do_update(index_elements=["device_key"], set_=set_)
        self.conn.execute(
            stmt,
            [{k: v for k, v in latest[key].items() if k != "at"} for key in sorted(latest)],
        )

    def stored_facts(self, obs_ids: Iterable[str]) -> dict[str, ReadingFacts]:
        """What is stored for these reading ids: time, value, comparator, absent reason."""
        o = t.observations
        out: dict[str, ReadingFacts] = {}
        for part in _chunks(sorted(set(obs_ids))):
            stmt = sa.select(
                o.c.obs_id,
                o.c.effective_time,
                o.c.value,
                o.c.comparator,
                o.c.absent_reason,
                o.c.device_time,
            ).where(o.c.obs_id.in_(part))
            for r in self.conn.execute(stmt):
                out[r.obs_id] = ReadingFacts(
                    r.effective_time, r.value, r.comparator, r.absent_reason, r.device_time
                )
        return out

    def stored_event_facts(self, event_ids: Iterable[str]) -> dict[str, EventFacts]:
        """What is stored for these event ids: event time, dose id, scheduled time."""
        e = t.device_events
        out: dict[str, EventFacts] = {}
        for part in _chunks(sorted(set(event_ids))):
            stmt = sa.select(
                e.c.event_id, e.c.event_time, e.c.dose_id, e.c.scheduled_time, e.c.device_time
            ).where(e.c.event_id.in_(part))
            for r in self.conn.execute(stmt):
                out[r.event_id] = EventFacts(
                    r.event_time, r.dose_id, r.scheduled_time, r.device_time
                )
        return out

    # -- alerts --------------------------------------------------------------------------------

    def active_alerts(self, subject_refs: Iterable[str]) -> list[AlertRecord]:
        """Open/acknowledged alerts of these subjects, locked until commit (PostgreSQL)."""
        refs = sorted(set(subject_refs))
        out: list[AlertRecord] = []
        for part in _chunks(refs):
            stmt = (
                sa.select(t.alerts)
                .where(t.alerts.c.subject_ref.in_(part), t.alerts.c.state.in_(_ACTIVE))
                .order_by(t.alerts.c.id)
                .with_for_update()
            )
            out.extend(_row(AlertRecord, r) for r in self.conn.execute(stmt))
        return out

    def overrides(self, subject_refs: Iterable[str]) -> list[OverrideRecord]:
        refs = sorted(set(subject_refs))
        out: list[OverrideRecord] = []
        for part in _chunks(refs):
            stmt = sa.select(t.patient_thresholds).where(
                t.patient_thresholds.c.subject_ref.in_(part)
            )
            out.extend(_row(OverrideRecord, r) for r in self.conn.execute(stmt))
        return out

    def routing(self, subject_refs: Iterable[str]) -> dict[str, Routing]:
        """Where each subject's alerts go (subjects missing from the directory are left out)."""
        refs = sorted(set(subject_refs))
        out: dict[str, Routing] = {}
        p, dc = t.patients, t.dispenser_clients
        for part in _chunks(refs):
            stmt = (
                sa.select(p.c.subject_ref, p.c.team_id, dc.c.home_care_team_id)
                .select_from(p.outerjoin(dc, dc.c.subject_ref == p.c.subject_ref))
                .where(p.c.subject_ref.in_(part))
            )
            for r in self.conn.execute(stmt):
                out[r.subject_ref] = Routing(
                    team_id=r.team_id, home_care_team_id=r.home_care_team_id
                )
        return out

    def time_zones(self, subject_refs: Iterable[str]) -> dict[str, str]:
        """The time zone of each subject in the directory."""
        p = t.patients
        out: dict[str, str] = {}
        for part in _chunks(sorted(set(subject_refs))):
            stmt = sa.select(p.c.subject_ref, p.c.time_zone).where(p.c.subject_ref.in_(part))
            out.update({ref: tz for ref, tz in self.conn.execute(stmt)})
        return out

    def site_subjects(self, sites: Iterable[str]) -> dict[str, set[str]]:
        """The subjects whose devices have reported from each site."""
        ds = t.device_subjects
        out: dict[str, set[str]] = {}
        for part in _chunks(sorted(set(sites))):
            stmt = sa.select(ds.c.site, ds.c.subject_ref).where(ds.c.site.in_(part)).distinct()
            for site, ref in self.conn.execute(stmt):
                out.setdefault(site, set()).add(ref)
        return out

    def escalation_candidates(self, priorities: Iterable[str], *, limit: int) -> list[AlertRecord]:
        """Open, uncleared alerts of these priorities, oldest first, locked until commit.

        PostgreSQL skips rows another worker holds: it is escalating them right now.
        """
        c = t.alerts.c
        stmt = (
            sa.select(t.alerts)
            .where(
                c.state == "open",
                c.cleared_at.is_(None),
                c.priority.in_(sorted(set(priorities))),
            )
            .order_by(c.raised_at, c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [_row(AlertRecord, r) for r in self.conn.execute(stmt)]

    def upsert_last_seen(self, rows: Sequence[LastSeen]) -> None:
        """Move each stream's newest reading forward (an older reading never moves it back)."""
        if not rows:
            return
        ordered = sorted(rows, key=lambda r: (r.subject_ref, r.stream))
        if self._dialect == "postgresql":
            # One statement for the batch (not one per row). Rows applied one after another
            # leave the first of a stream's newest rows: the same row is sent alone.
            merged: dict[tuple[str, str], LastSeen] = {}
            for r in ordered:
                cur = merged.get((r.subject_ref, r.stream))
                if cur is None or r.newest_time > cur.newest_time:
                    merged[(r.subject_ref, r.stream)] = r
            self.conn.exec_driver_sql(
                _PG_UPSERT_LAST_SEEN,
                (
                    [r.subject_ref for r in merged.values()],
                    [r.stream for r in merged.values()],
                    [_utc_param(r.newest_time) for r in merged.values()],
                    [r.newest_obs_id for r in merged.values()],
                    [r.simulated for r in merged.values()],
                ),
            )
            return
        tbl = t.stream_last_seen
        ins = self._insert(tbl)
        stmt = ins.on_conflict_do_update(
            index_elements=["subject_ref", "stream"],
            set_={c: ins.excluded[c] for c in ("newest_time", "newest_obs_id", "simulated")},
            where=ins.excluded.newest_time > tbl.c.newest_time,
        )
        self.conn.execute(
            stmt,
            [
                {
                    "subject_ref": r.subject_ref,
                    "stream": r.stream,
                    "newest_time": r.newest_time,
                    "newest_obs_id": r.newest_obs_id,
                    "simulated": r.simulated,
                }
                for r in ordered
            ],
        )

    def last_seen(self, stream: str, *, since: datetime) -> list[LastSeen]:
        tbl = t.stream_last_seen
        stmt = sa.select(tbl).where(tbl.c.stream == stream, tbl.c.newest_time >= since)
        return [_row(LastSeen, r) for r in self.conn.execute(stmt)]

    def last_seen_of(self, stream: str, subject_refs: Iterable[str]) -> list[LastSeen]:
        tbl = t.stream_last_seen
        out: list[LastSeen] = []
        for part in _chunks(sorted(set(subject_refs))):
            stmt = sa.select(tbl).where(tbl.c.stream == stream, tbl.c.subject_ref.in_(part))
            out.extend(_row(LastSeen, r) for r in self.conn.execute(stmt))
        return out

    def active_alerts_of(self, conditions: Iterable[str]) -> list[AlertRecord]:
        """Open/acknowledged alerts of these conditions (any subject), locked until commit."""
        c = t.alerts.c
        stmt = (
            sa.select(t.alerts)
            .where(c.condition.in_(sorted(set(conditions))), c.state.in_(_ACTIVE))
            .order_by(c.id)
            .with_for_update()
        )
        return [_row(AlertRecord, r) for r in self.conn.execute(stmt)]

    def site_statuses(self) -> list[SiteRecord]:
        return [
            _row(SiteRecord, r)
            for r in self.conn.execute(sa.select(t.sites).order_by(t.sites.c.site))
        ]

    def upsert_device_subjects(self, rows: Sequence[DeviceSubjectRecord]) -> None:
        """Widen each (device, subject) pair's first/last seen to cover these rows."""
        if not rows:
            return
        ordered = sorted(rows, key=lambda r: (r.device_key, r.subject_ref))
        if self._dialect == "postgresql":
            # One statement for the batch (not one per row). Rows of one pair applied one after
            # another widen its span and leave the last site and device id: so does their merge.
            # The identity (firmware, transport) is the one of the row with the newest data.
            merged: dict[
                tuple[str, str], tuple[str, str, datetime, datetime, str | None, str | None]
            ] = {}
            for r in ordered:
                first, last = _utc_param(r.first_seen), _utc_param(r.last_seen)
                firmware, transport = r.firmware, r.transport
                cur = merged.get((r.device_key, r.subject_ref))
                if cur is not None:
                    if last < cur[3]:
                        firmware, transport = cur[4] or firmware, cur[5] or transport
                    else:
                        firmware, transport = firmware or cur[4], transport or cur[5]
                    first, last = min(first, cur[2]), max(last, cur[3])
                merged[(r.device_key, r.subject_ref)] = (
                    r.site,
                    r.device_id,
                    first,
                    last,
                    firmware,
                    transport,
                )
            self.conn.exec_driver_sql(
                _PG_UPSERT_DEVICE_SUBJECTS,
                (
                    [k[0] for k in merged],
                    [k[1] for k in merged],
                    [v[0] for v in merged.values()],
                    [v[1] for v in merged.values()],
                    [v[2] for v in merged.values()],
                    [v[3] for v in merged.values()],
                    [v[4] for v in merged.values()],
                    [v[5] for v in merged.values()],
                ),
            )
            return
        tbl = t.device_subjects
        ins = self._insert(tbl)
        newer = ins.excluded.last_seen >= tbl.c.last_seen

        def identity(col: str) -> Any:
            new, old = ins.excluded[col], tbl.c[col]
            return sa.case((newer, sa.func.coalesce(new, old)), else_=sa.func.coalesce(old, new))

        stmt = ins.on_conflict_do_update(
            index_elements=["device_key", "subject_ref"],
            set_={
                "site": ins.excluded.site,
                "device_id": ins.excluded.device_id,
                "firmware": identity("firmware"),
                "transport": identity("transport"),
                "first_seen": sa.case(
                    (ins.excluded.first_seen < tbl.c.first_seen, ins.excluded.first_seen),
                    else_=tbl.c.first_seen,
                ),
                "last_seen": sa.case(
                    (ins.excluded.last_seen > tbl.c.last_seen, ins.excluded.last_seen),
                    else_=tbl.c.last_seen,
                ),
            },
        )
        self.conn.execute(
            stmt,
            [
                {
                    "device_key": r.device_key,
                    "subject_ref": r.subject_ref,
                    "site": r.site,
                    "device_id": r.device_id,
                    "first_seen": r.first_seen,
                    "last_seen": r.last_seen,
                    "firmware": r.firmware,
                    "transport": r.transport,
                }
                for r in ordered
            ],
        )

    def team_thresholds(self, team_ids: Iterable[str]) -> list[TeamThresholdRecord]:
        ids = sorted(set(team_ids))
        if not ids:
            return []
        tt = t.team_thresholds
        stmt = sa.select(tt).where(tt.c.team_id.in_(ids))
        return [_row(TeamThresholdRecord, r) for r in self.conn.execute(stmt)]

    def parameters(self, name: str, subject_refs: Iterable[str]) -> list[ParameterRecord]:
        pp = t.patient_parameters
        out: list[ParameterRecord] = []
        for part in _chunks(sorted(set(subject_refs))):
            stmt = sa.select(pp).where(pp.c.name == name, pp.c.subject_ref.in_(part))
            out.extend(_row(ParameterRecord, r) for r in self.conn.execute(stmt))
        return out

    def pef_diaries_around(self, first: date, last: date) -> list[PefDiaryRecord]:
        """Diaries whose period overlaps first..last (local dates)."""
        d = t.pef_diaries
        stmt = sa.select(d).where(d.c.first_day <= last, d.c.last_day >= first)
        return [_row(PefDiaryRecord, r) for r in self.conn.execute(stmt)]

    def readings_of(
        self, subject_ref: str, measure: str, *, since: datetime, until: datetime
    ) -> list[ObservationRecord]:
        """One subject's readings of one measure in [since, until), oldest first."""
        c = t.observations.c
        cols = [col for col in t.observations.columns if col.name != "id"]
        stmt = (
            sa.select(*cols)
            .where(
                c.subject_ref == subject_ref,
                c.effective_time >= since,
                c.effective_time < until,
                c.measure == measure,
            )
            .order_by(c.effective_time, c.obs_id)
        )
        return [_row(ObservationRecord, r) for r in self.conn.execute(stmt)]

    def readings_before(
        self, subject_ref: str, measure: str, *, before: datetime, n: int
    ) -> list[ObservationRecord]:
        """The ``n`` readings of one subject and measure just before ``before``, oldest first."""
        c = t.observations.c
        cols = [col for col in t.observations.columns if col.name != "id"]
        stmt = (
            sa.select(*cols)
            .where(c.subject_ref == subject_ref, c.measure == measure, c.effective_time < before)
            .order_by(c.effective_time.desc(), c.obs_id.desc())
            .limit(n)
        )
        rows = [_row(ObservationRecord, r) for r in self.conn.execute(stmt)]
        return rows[::-1]

    def resolved_evidence_until(
        self, condition: str, subject_refs: Iterable[str]
    ) -> dict[str, datetime]:
        """The newest last-evidence time of each subject's resolved alerts of ``condition``."""
        c = t.alerts.c
        out: dict[str, datetime] = {}
        for part in _chunks(sorted(set(subject_refs))):
            stmt = (
                sa.select(c.subject_ref, sa.func.max(c.last_time))
                .where(c.condition == condition, c.state == "resolved", c.subject_ref.in_(part))
                .group_by(c.subject_ref)
            )
            for ref, at in self.conn.execute(stmt):
                out[ref] = _aware(at)
        return out

    def insert_audit(self, rows: Sequence[AuditIn]) -> None:
        if not rows:
            return
        self.conn.execute(
            sa.insert(t.audit_log),
            [
                {
                    "at": a.at,
                    "actor": a.actor,
                    "action": a.action,
                    "object_kind": a.object_kind,
                    "object_id": a.object_id,
                    "detail": a.detail,
                }
                for a in rows
            ],
        )

    def insert_alerts(self, rows: Sequence[Mapping[str, Any]]) -> list[int]:
        """Insert alerts (column -> value); return their ids in the given order."""
        if not rows:
            return []
        stmt = sa.insert(t.alerts).returning(t.alerts.c.id, sort_by_parameter_order=True)
        return [r[0] for r in self.conn.execute(stmt, [dict(r) for r in rows])]

    def update_alerts(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Update alerts by ``id``; every row must carry the same columns."""
        if not rows:
            return
        if len(rows) > 1:
            # Rules update one alert once per reading that touches it; applied in order, the
            # last row of each alert is what stays, so only that one is sent.
            last = {r["id"]: r for r in rows}
            if len(last) < len(rows):
                rows = list(last.values())
        cols = [c for c in rows[0] if c != "id"]
        stmt = (
            sa.update(t.alerts)
            .where(t.alerts.c.id == sa.bindparam("_id"))
            .values({c: sa.bindparam(f"_v_{c}") for c in cols})
        )
        self.conn.execute(stmt, [{"_id": r["id"], **{f"_v_{c}": r[c] for c in cols}} for r in rows])

    def insert_alert_events(self, rows: Sequence[AlertEventIn], new_ids: Sequence[int]) -> None:
        if not rows:
            return
        if self._dialect == "postgresql":
            # one statement for the batch; ids are drawn in row order, as one per row would
            self.conn.exec_driver_sql(
                _PG_INSERT_ALERT_EVENTS,
                (
                    [
                        e.alert_id if e.alert_id is not None else new_ids[e.alert_index or 0]
                        for e in rows
                    ],
                    [_utc_param(e.at) for e in rows],
                    [e.action for e in rows],
                    [e.actor for e in rows],
                    [e.note for e in rows],
                ),
            )
            return
        values = []
        for e in rows:
            alert_id = e.alert_id if e.alert_id is not None else new_ids[e.alert_index or 0]
            values.append(
                {
                    "alert_id": alert_id,
                    "at": e.at,
                    "action": e.action,
                    "actor": e.actor,
                    "note": e.note,
                }
            )
        self.conn.execute(sa.insert(t.alert_events), values)


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertFilter:
    state: str | None = None
    subject_ref: str | None = None
    priority: str | None = None
    condition: str | None = None
    kind: str | None = None
    assigned_to: str | None = None
    team_id: str | None = None
    #: routing: None = every alert (admins); else only alerts routed to one of these teams...
    teams: frozenset[str] | None = None
    #: ...for one of these audiences (None = any)
    audiences: frozenset[str] | None = None
    #: hide alerts snoozed past ``now``
    hide_snoozed_at: datetime | None = None
    #: only open and acknowledged alerts (the working queue); ``state`` narrows further
    active_only: bool = False


def _alert_where(flt: AlertFilter) -> list[sa.ColumnElement[bool]]:
    c = t.alerts.c
    where: list[sa.ColumnElement[bool]] = []
    for col, value in (
        (c.state, flt.state),
        (c.subject_ref, flt.subject_ref),
        (c.priority, flt.priority),
        (c.condition, flt.condition),
        (c.kind, flt.kind),
        (c.assigned_to, flt.assigned_to),
        (c.team_id, flt.team_id),
    ):
        if value is not None:
            where.append(col == value)
    if flt.teams is not None:
        where.append(c.team_id.in_(sorted(flt.teams)))
    if flt.audiences is not None:
        where.append(c.audience.in_(sorted(flt.audiences)))
    if flt.active_only:
        where.append(c.state.in_(_ACTIVE))
    if flt.hide_snoozed_at is not None:
        where.append(sa.or_(c.snoozed_until.is_(None), c.snoozed_until <= flt.hide_snoozed_at))
    return where


class Storage:
    """Owns the engine. Every public method is one transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def write(self) -> Iterator[WriteTx]:
        """A write transaction; commits on success, rolls back and raises on any error.

        Database errors are translated to :class:`StorageError` (:class:`ConflictError` when a
        retry can succeed).
        """
        try:
            with self.engine.connect() as raw:
                conn = raw.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
                with conn.begin():
                    yield WriteTx(conn)
        except sa.exc.DBAPIError as exc:
            raise _translate(exc) from exc

    @contextmanager
    def _read(self) -> Iterator[sa.Connection]:
        try:
            with self.engine.connect() as conn, conn.begin():
                yield conn
        except sa.exc.DBAPIError as exc:
            raise _translate(exc) from exc

    def ping(self) -> None:
        with self._read() as conn:
            conn.execute(sa.text("SELECT 1"))

    # -- queries -------------------------------------------------------------------------------

    def list_visits(
        self, *, subject_ref: str, since: datetime | None = None, limit: int = 100
    ) -> list[KioskVisitRecord]:
        """A patient's kiosk visits, newest first."""
        kv = t.kiosk_visits
        stmt = sa.select(kv).where(kv.c.subject_ref == subject_ref)
        if since is not None:
            stmt = stmt.where(kv.c.started_at >= since)
        stmt = stmt.order_by(kv.c.started_at.desc(), kv.c.msg_id).limit(limit)
        with self._read() as conn:
            return [_row(KioskVisitRecord, r) for r in conn.execute(stmt)]

    def series(
        self, *, subject_ref: str, measure: str, since: datetime, limit: int
    ) -> list[SeriesPoint]:
        """A measure's plain values for a chart, oldest first: (time, value, unit) of the
        readings with a value and no comparator (LO/HI bounds are not points of a curve).
        Four columns instead of whole records: a 14-day CGM series is 4 000 rows."""
        c = t.observations.c
        stmt = (
            sa.select(c.effective_time, c.value, c.unit)
            .where(
                c.subject_ref == subject_ref,
                c.measure == measure,
                c.effective_time >= since,
                c.value.is_not(None),
                c.comparator.is_(None),
            )
            .order_by(c.effective_time.desc())
            .limit(limit)
        )
        with self._read() as conn:
            rows = [SeriesPoint(r[0], float(r[1]), str(r[2])) for r in conn.execute(stmt)]
        rows.reverse()
        return rows

    def observations_of_messages(self, msg_ids: Sequence[str]) -> list[ObservationRecord]:
        """The readings stored under these messages (a visit's parts), oldest first."""
        c = t.observations.c
        cols = [col for col in t.observations.columns if col.name != "id"]
        out: list[ObservationRecord] = []
        with self._read() as conn:
            for part in _chunks(sorted(set(msg_ids))):
                stmt = sa.select(*cols).where(c.msg_id.in_(part))
                out += [_row(ObservationRecord, r) for r in conn.execute(stmt)]
        return sorted(out, key=lambda o: (o.effective_time, o.obs_id))

    def list_observations(
        self,
        *,
        subject_ref: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        measure: str | None = None,
        site_prefix: str | None = None,
        limit: int = 100,
    ) -> list[ObservationRecord]:
        """Newest first. ``site_prefix``: only readings taken at sites whose id starts with it
        (``kiosk-``: the self-measurement stations)."""
        c = t.observations.c
        cols = [col for col in t.observations.columns if col.name != "id"]
        stmt = sa.select(*cols)
        if subject_ref is not None:
            stmt = stmt.where(c.subject_ref == subject_ref)
        if since is not None:
            stmt = stmt.where(c.effective_time >= since)
        if until is not None:
            stmt = stmt.where(c.effective_time < until)
        if measure is not None:
            stmt = stmt.where(c.measure == measure)
        if site_prefix is not None:
            stmt = stmt.where(c.site.startswith(site_prefix, autoescape=True))
        stmt = stmt.order_by(c.effective_time.desc(), c.obs_id).limit(limit)
        with self._read() as conn:
            return [_row(ObservationRecord, r) for r in conn.execute(stmt)]

    def list_events(
        self,
        *,
        subject_ref: str | None = None,
        kind: str | None = None,
        device_id: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[EventRecord]:
        """Device events, newest first (by event time)."""
        c = t.device_events.c
        stmt = sa.select(*(col for col in t.device_events.columns if col.name != "id"))
        if subject_ref is not None:
            stmt = stmt.where(c.subject_ref == subject_ref)
        if kind is not None:
            stmt = stmt.where(c.kind == kind)
        if device_id is not None:
            stmt = stmt.where(c.device_id == device_id)
        if since is not None:
            stmt = stmt.where(c.event_time >= since)
        stmt = stmt.order_by(c.event_time.desc(), c.event_id).limit(limit).offset(offset)
        with self._read() as conn:
            return [
                EventRecord(**{**r._asdict(), "details": json.loads(r.details)})
                for r in conn.execute(stmt)
            ]

    def list_alerts(
        self, flt: AlertFilter, *, limit: int = 100, offset: int = 0
    ) -> list[AlertRecord]:
        c = t.alerts.c
        stmt = sa.select(t.alerts).where(*_alert_where(flt))
        prio = sa.case({"high": 0, "medium": 1, "low": 2}, value=c.priority, else_=3)
        stmt = stmt.order_by(prio, c.raised_at.desc(), c.id.desc()).limit(limit).offset(offset)
        with self._read() as conn:
            return [_row(AlertRecord, r) for r in conn.execute(stmt)]

    def get_alert(self, alert_id: int) -> AlertRecord | None:
        with self._read() as conn:
            r = conn.execute(sa.select(t.alerts).where(t.alerts.c.id == alert_id)).first()
            return None if r is None else _row(AlertRecord, r)

    def alert_events(self, alert_id: int) -> list[AlertEventRecord]:
        stmt = (
            sa.select(t.alert_events)
            .where(t.alert_events.c.alert_id == alert_id)
            .order_by(t.alert_events.c.id)
        )
        with self._read() as conn:
            return [_row(AlertEventRecord, r) for r in conn.execute(stmt)]

    def alert_changes(
        self, *, after_id: int, also_ids: Iterable[int] = (), flt: AlertFilter, limit: int = 500
    ) -> tuple[list[int], list[tuple[AlertEventRecord, AlertRecord]]]:
        """Audit events with ``id > after_id`` (plus ``also_ids``), oldest first: every id found
        (whoever may see it, so a reader can tell a gap from a change it may not see), and the
        events ``flt`` lets through, each with its alert as it is now."""
        e = t.alert_events
        cond: sa.ColumnElement[bool] = e.c.id > after_id
        extra = sorted(set(also_ids))[:IN_CHUNK]
        if extra:
            cond = sa.or_(cond, e.c.id.in_(extra))
        ecols = [col.label(f"e_{col.name}") for col in e.columns]
        with self._read() as conn:
            ids = [
                r[0]
                for r in conn.execute(sa.select(e.c.id).where(cond).order_by(e.c.id).limit(limit))
            ]
            if not ids:
                return [], []
            stmt = (
                sa.select(*ecols, t.alerts)
                .select_from(e.join(t.alerts, t.alerts.c.id == e.c.alert_id))
                .where(e.c.id.in_(ids), *_alert_where(flt))
                .order_by(e.c.id)
            )
            out: list[tuple[AlertEventRecord, AlertRecord]] = []
            for r in conn.execute(stmt):
                m = r._asdict()
                ev = AlertEventRecord(**{k[2:]: m.pop(k) for k in list(m) if k.startswith("e_")})
                out.append((ev, AlertRecord(**m)))
        return ids, out

    def max_alert_event_id(self) -> int:
        with self._read() as conn:
            return int(conn.execute(sa.select(sa.func.max(t.alert_events.c.id))).scalar() or 0)

    def transition_alert(
        self,
        alert_id: int,
        *,
        expected_state: str,
        values: Mapping[str, Any],
        event: AlertEventIn,
    ) -> AlertRecord:
        """Compare-and-set: apply ``values`` only if the alert is still in ``expected_state``."""
        with self.write() as tx:
            res = tx.conn.execute(
                sa.update(t.alerts)
                .where(t.alerts.c.id == alert_id, t.alerts.c.state == expected_state)
                .values(dict(values))
            )
            if res.rowcount != 1:
                exists = tx.conn.execute(
                    sa.select(t.alerts.c.id).where(t.alerts.c.id == alert_id)
                ).first()
                if exists is None:
                    raise AlertNotFoundError(alert_id)
                raise AlertChangedError(f"alert {alert_id} is no longer {expected_state}")
            tx.insert_alert_events([event], [])
            row = tx.conn.execute(sa.select(t.alerts).where(t.alerts.c.id == alert_id)).one()
            return _row(AlertRecord, row)

    def put_team_threshold(self, rec: TeamThresholdRecord, *, audit: AuditIn) -> None:
        with self.write() as tx:
            ins = tx._insert(t.team_thresholds)
            tx.conn.execute(
                ins.on_conflict_do_update(
                    index_elements=["team_id", "condition"],
                    set_={c: ins.excluded[c] for c in ("value", "unit", "set_by", "set_at")},
                ),
                {
                    "team_id": rec.team_id,
                    "condition": rec.condition,
                    "value": rec.value,
                    "unit": rec.unit,
                    "set_by": rec.set_by,
                    "set_at": rec.set_at,
                },
            )
            tx.insert_audit([audit])

    def delete_team_threshold(self, team_id: str, condition: str, *, audit: AuditIn) -> bool:
        tt = t.team_thresholds
        with self.write() as tx:
            res = tx.conn.execute(
                sa.delete(tt).where(tt.c.team_id == team_id, tt.c.condition == condition)
            )
            tx.insert_audit([audit])
            return res.rowcount > 0

    def team_threshold(self, team_id: str, condition: str) -> TeamThresholdRecord | None:
        tt = t.team_thresholds
        with self._read() as conn:
            r = conn.execute(
                sa.select(tt).where(tt.c.team_id == team_id, tt.c.condition == condition)
            ).first()
            return None if r is None else _row(TeamThresholdRecord, r)

    def list_team_thresholds(self, team_id: str) -> list[TeamThresholdRecord]:
        tt = t.team_thresholds
        with self._read() as conn:
            stmt = sa.select(tt).where(tt.c.team_id == team_id).order_by(tt.c.condition)
            return [_row(TeamThresholdRecord, r) for r in conn.execute(stmt)]

    def put_parameter(self, rec: ParameterRecord, *, audit: AuditIn) -> None:
        with self.write() as tx:
            ins = tx._insert(t.patient_parameters)
            tx.conn.execute(
                ins.on_conflict_do_update(
                    index_elements=["subject_ref", "name"],
                    set_={c: ins.excluded[c] for c in ("value", "unit", "set_by", "set_at")},
                ),
                {
                    "subject_ref": rec.subject_ref,
                    "name": rec.name,
                    "value": rec.value,
                    "unit": rec.unit,
                    "set_by": rec.set_by,
                    "set_at": rec.set_at,
                },
            )
            tx.insert_audit([audit])

    def get_parameter(self, subject_ref: str, name: str) -> ParameterRecord | None:
        pp = t.patient_parameters
        with self._read() as conn:
            r = conn.execute(
                sa.select(pp).where(pp.c.subject_ref == subject_ref, pp.c.name == name)
            ).first()
            return None if r is None else _row(ParameterRecord, r)

    def put_pef_diary(self, rec: PefDiaryRecord, *, audit: AuditIn) -> None:
        with self.write() as tx:
            ins = tx._insert(t.pef_diaries)
            tx.conn.execute(
                ins.on_conflict_do_update(
                    index_elements=["subject_ref"],
                    set_={
                        c: ins.excluded[c] for c in ("first_day", "last_day", "set_by", "set_at")
                    },
                ),
                {
                    "subject_ref": rec.subject_ref,
                    "first_day": rec.first_day,
                    "last_day": rec.last_day,
                    "set_by": rec.set_by,
                    "set_at": rec.set_at,
                },
            )
            tx.insert_audit([audit])

    def get_pef_diary(self, subject_ref: str) -> PefDiaryRecord | None:
        d = t.pef_diaries
        with self._read() as conn:
            r = conn.execute(sa.select(d).where(d.c.subject_ref == subject_ref)).first()
            return None if r is None else _row(PefDiaryRecord, r)

    def device_subjects(
        self,
        *,
        subject_ref: str | None = None,
        device_key: str | None = None,
        subject_refs: Sequence[str] | None = None,
        limit: int = 100,
    ) -> list[DeviceSubjectRecord]:
        """Devices per subject, each with its last known telemetry (None when none came), newest
        first. ``subject_refs``: only these subjects' bindings (a viewer's patients)."""
        ds, dt = t.device_subjects, t.device_telemetry
        base = sa.select(ds, *(dt.c[c] for c in _LISTED_TELEMETRY)).outerjoin(
            dt, dt.c.device_key == ds.c.device_key
        )
        if subject_ref is not None:
            base = base.where(ds.c.subject_ref == subject_ref)
        if device_key is not None:
            base = base.where(ds.c.device_key == device_key)
        if subject_refs is None:
            parts: list[Any] = [base]
        else:
            parts = [base.where(ds.c.subject_ref.in_(p)) for p in _chunks(sorted(subject_refs))]
        order = (ds.c.last_seen.desc(), ds.c.device_key, ds.c.subject_ref)
        with self._read() as conn:
            rows = [
                _row(DeviceSubjectRecord, r)
                for stmt in parts
                for r in conn.execute(stmt.order_by(*order).limit(limit))
            ]
        if len(parts) > 1:
            rows.sort(key=lambda r: (-r.last_seen.timestamp(), r.device_key, r.subject_ref))
        return rows[:limit]

    def unrouted_subjects(self, *, limit: int = 100, offset: int = 0) -> list[UnroutedSubject]:
        """Subjects that devices reported for and that no patient entry routes."""
        ds, p, a = t.device_subjects, t.patients, t.alerts
        stmt = (
            sa.select(
                ds.c.subject_ref,
                sa.func.count().label("devices"),
                sa.func.min(ds.c.first_seen).label("first_seen"),
                sa.func.max(ds.c.last_seen).label("last_seen"),
            )
            .where(~sa.exists().where(p.c.subject_ref == ds.c.subject_ref))
            .group_by(ds.c.subject_ref)
            .order_by(sa.func.max(ds.c.last_seen).desc(), ds.c.subject_ref)
            .limit(limit)
            .offset(offset)
        )
        with self._read() as conn:
            rows = list(conn.execute(stmt))
            counts: dict[str, int] = {}
            for part in _chunks([r.subject_ref for r in rows]):
                q = (
                    sa.select(a.c.subject_ref, sa.func.count())
                    .where(a.c.subject_ref.in_(part), a.c.state.in_(_ACTIVE))
                    .group_by(a.c.subject_ref)
                )
                counts.update({ref: int(n) for ref, n in conn.execute(q)})
        return [
            UnroutedSubject(
                subject_ref=r.subject_ref,
                devices=int(r.devices),
                first_seen=_aware(r.first_seen),
                last_seen=_aware(r.last_seen),
                active_alerts=counts.get(r.subject_ref, 0),
            )
            for r in rows
        ]

    def list_dead_letters(self, *, limit: int = 100, offset: int = 0) -> list[DeadLetterRecord]:
        stmt = (
            sa.select(t.dead_letters)
            .order_by(t.dead_letters.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        with self._read() as conn:
            return [_row(DeadLetterRecord, r) for r in conn.execute(stmt)]

    def list_sites(self) -> list[SiteRecord]:
        with self._read() as conn:
            return [
                _row(SiteRecord, r)
                for r in conn.execute(sa.select(t.sites).order_by(t.sites.c.site))
            ]

    def counts(self) -> Counts:
        def n(table: sa.Table, *where: sa.ColumnElement[bool]) -> sa.ScalarSelect[int]:
            return sa.select(sa.func.count()).select_from(table).where(*where).scalar_subquery()

        stmt = sa.select(
            n(t.messages).label("messages"),
            n(t.observations).label("observations"),
            n(t.device_events).label("events"),
            n(t.dead_letters).label("dead_letters"),
            n(t.alerts, t.alerts.c.state.in_(_ACTIVE)).label("open_alerts"),
            n(t.alerts).label("alerts_total"),
            n(t.sites, t.sites.c.state == "online").label("sites_online"),
        )
        with self._read() as conn:
            return _row(Counts, conn.execute(stmt).one())

    def get_override(self, subject_ref: str, condition: str) -> OverrideRecord | None:
        pt = t.patient_thresholds
        stmt = sa.select(pt).where(pt.c.subject_ref == subject_ref, pt.c.condition == condition)
        with self._read() as conn:
            r = conn.execute(stmt).first()
            return None if r is None else _row(OverrideRecord, r)

    def put_override(self, rec: OverrideRecord) -> OverrideRecord:
        with self.write() as tx:
            ins = tx._insert(t.patient_thresholds)
            stmt = ins.on_conflict_do_update(
                index_elements=["subject_ref", "condition"],
                set_={c: ins.excluded[c] for c in ("value", "unit", "set_by", "set_at")},
            )
            tx.conn.execute(
                stmt,
                {
                    "subject_ref": rec.subject_ref,
                    "condition": rec.condition,
                    "value": rec.value,
                    "unit": rec.unit,
                    "set_by": rec.set_by,
                    "set_at": rec.set_at,
                },
            )
        return rec

    def delete_override(self, subject_ref: str, condition: str) -> bool:
        pt = t.patient_thresholds
        with self.write() as tx:
            res = tx.conn.execute(
                sa.delete(pt).where(pt.c.subject_ref == subject_ref, pt.c.condition == condition)
            )
            return res.rowcount > 0


def open_storage(url: str, *, migrate: bool = True) -> Storage:
    """Open the database at ``url``; with ``migrate`` upgrade its schema to the newest revision.

    ``migrate=False`` is for processes that must not change the schema.
    """
    engine = create_engine(url)
    try:
        if migrate:
            migrate_schema(engine)
    except Exception:
        engine.dispose()
        raise
    return Storage(engine)


def _aware(dt: datetime) -> datetime:
    """Aggregates (min/max) bypass the column type on SQLite: make them aware UTC again."""
    if isinstance(dt, str):
        dt = datetime.fromisoformat(dt)
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)
