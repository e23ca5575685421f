"""Ingest service: validate -> dedupe -> store -> rules -> alerts, one transaction per batch.

:meth:`IngestService.ingest_batch` is what the MQTT consumer calls; it acks the broker only after
this returns, so every storage failure propagates (nothing is swallowed). Messages are routed by
topic: agent status, device events (``.../event``) or observations (everything else). Payloads
that break the wire contract are kept in the dead-letter store with the
:class:`gateway.wire.WireError` code, path and detail: nothing is dropped silently. Everything in
a batch (dead letters, site statuses, messages, readings, device events, alerts and their audit
events) commits together or not at all; a lost race with a concurrent worker (unique index,
deadlock) re-runs the whole batch, which is idempotent.

Device events are stored, not evaluated: no rule looks at them yet (alerts for missed doses
are a later issue; they would start from the ``new_events`` that :meth:`WriteTx.store_events`
returns, the events stored for the first time).

The query methods below are what the API and ``remon demo`` use; each is one short transaction.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from typing import Any, Final, Protocol, TypeVar

from cloud_ingest.care import Audience, Principal
from cloud_ingest.findings import (
    EVENT_KIND,
    READING_KIND,
    SILENCE_KIND,
    finding_columns,
    finding_events,
    open_finding,
)
from cloud_ingest.rules import (
    DEFAULTS_BY_CONDITION,
    AlertAction,
    AlertState,
    AlertStateName,
    Evidence,
    InvalidTransitionError,
    Priority,
    Reading,
    RuleError,
    SnoozeRefusedError,
    Threshold,
    ThresholdOverride,
    Transition,
    UnknownConditionError,
    check_override,
    evaluate,
    next_state,
)
from cloud_ingest.rules.device_health import (
    DEFAULT_DEVICE_HEALTH_RULES,
    DeviceReading,
    evaluate_device_health,
)
from cloud_ingest.rules.dispenser import (
    DEFAULT_DISPENSER_RULES,
    DispenserEvent,
    DispenserRule,
    FindingAction,
    FindingState,
    evaluate_events,
)
from cloud_ingest.rules.engine import HistoryWindow, history_needed, needs_evaluation
from cloud_ingest.rules.lifecycle import (
    DEFAULT_POLICY,
    LifecyclePolicy,
    escalation_level_due,
    snooze_until,
)
from cloud_ingest.rules.pef_zones import (
    PEF_ZONE_RED,
    PEF_ZONE_YELLOW,
    PERSONAL_BEST_PARAMETER,
    PefReading,
    evaluate_pef_zones,
)
from cloud_ingest.rules.silence import (
    CGM_STALE,
    CGM_STALE_URGENT,
    PEF_SESSION_MISSED,
    SITE_OFFLINE,
    CgmStream,
    PefReadingTime,
    PefSchedule,
    SiteStatus,
    evaluate_cgm_silence,
    evaluate_pef_schedule,
    evaluate_site_status,
)
from cloud_ingest.screening import FUTURE_LIMIT, screen
from cloud_ingest.storage import (
    AlertChangedError,
    AlertEventIn,
    AlertEventRecord,
    AlertFilter,
    AlertNotFoundError,
    AlertRecord,
    ConflictError,
    Counts,
    DeadLetterIn,
    DeadLetterRecord,
    DeviceSubjectRecord,
    Directory,
    EventFacts,
    EventRecord,
    InboundEnvelope,
    InboundEvents,
    KioskVisitRecord,
    LastSeen,
    ObservationRecord,
    OverrideRecord,
    ReadingFacts,
    Routing,
    SeriesPoint,
    SiteRecord,
    StatusIn,
    Storage,
    StorageError,
    StoredEvent,
    StoredReading,
    TelemetryIn,
    VisitIn,
    WriteTx,
    same_event,
    same_reading,
)
from cloud_ingest.timeseries import ObservationPoint, TelemetryPoint
from device_profiles.codes import MEASURES
from device_profiles.observation import CLOUD_ONLY_FLAGS, AbsentReason, QualityFlag
from gateway.wire import (
    TOPIC_ROOT,
    AgentStatus,
    Envelope,
    EventEnvelope,
    WireError,
    decode_events,
    decode_observations,
    decode_status,
    decode_telemetry,
    decode_visit,
)

__all__ = [
    "AlertNotFoundError",
    "AlertRecord",
    "AlertWithEvents",
    "AssignmentError",
    "ConflictError",
    "DeadLetterRecord",
    "EventRecord",
    "IngestResult",
    "IngestService",
    "InvalidTransitionError",
    "ObservationRecord",
    "RawMessage",
    "RuleError",
    "SiteRecord",
    "SnoozeRefusedError",
    "Stats",
    "StorageError",
    "ThresholdView",
    "UnknownConditionError",
]

log = logging.getLogger("remon.ingest.service")

#: Actor recorded on events the system itself writes (raise/update/clear).
SYSTEM_ACTOR: Final = "system:rules"
#: The continuous stream whose silence is watched, and its measure (device_profiles.codes).
CGM: Final = "cgm"
CGM_MEASURE: Final = "glucose.cgm"
PEF_MEASURE: Final = "pef"
#: The device id a hub's own link state is written under in the time-series store.
HUB_DEVICE: Final = "hub"
#: A subject whose newest CGM reading is older than this is no longer expected to stream (the
#: sensor session ended or the patient stopped CGM): no stale-data alert, open ones are cleared.
#: remon default: sensors are replaced within hours, so a day without any reading is not a gap.
CGM_EXPECTED_FOR: Final = timedelta(hours=24)
#: Attempts of one batch when a concurrent worker wins a race.
MAX_ATTEMPTS: Final = 5


class TimeSeriesSink(Protocol):
    """Where readings are copied after each commit (:class:`cloud_ingest.timeseries.
    TimeSeriesWriter`); the calls queue and must not raise."""

    def write_observations(self, points: Iterable[ObservationPoint]) -> None: ...

    def write_telemetry(self, points: Iterable[TelemetryPoint]) -> None: ...


class AssignmentError(ValueError):
    """An alert cannot be assigned to this staff member (unknown, inactive, other team/role)."""


@dataclass(frozen=True)
class RawMessage:
    topic: str
    payload: bytes
    received_at: datetime


@dataclass(frozen=True)
class IngestResult:
    messages: int
    duplicate_messages: int
    observations: int
    duplicate_observations: int
    dead_letters: int
    alerts_raised: int
    alerts_updated: int
    statuses: int = 0
    events_stored: int = 0
    events_duplicate: int = 0  # already stored, or twice in the batch
    telemetry_samples: int = 0  # device telemetry samples taken (battery, RSSI, link, clock)
    visits: int = 0  # kiosk visits stored (their readings count in messages/observations)


Stats = Counts


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertWithEvents:
    alert: AlertRecord
    events: list[AlertEventRecord]


@dataclass(frozen=True, slots=True, kw_only=True)
class ThresholdView:
    """The threshold in effect for one patient and condition, with the default beside it."""

    subject_ref: str
    condition: str
    title: str
    comparator: str
    value: float
    unit: str
    priority: str
    hysteresis: float
    source: str
    scope: str  # "patient" (its own value), "team" (its care team's) or "default"
    default_value: float
    default_source: str
    overridden: bool
    set_by: str | None
    set_at: datetime | None


#: Dead-letter codes of the ingest itself (the wire's own codes are WireErrorCode values).
INTERNAL_ERROR = "internal-error"  # the decoder failed in a way it should not
STORE_FAILED = "store-failed"  # the database refused the message on its own, repeatedly
ID_CONFLICT = "id-conflict"  # a reading id already stored with other facts (time, value)


def _facts(f: ReadingFacts) -> str:
    what = f.absent_reason if f.value is None else f"{f.comparator or ''}{f.value:g}"
    device = f" (device time {f.device_time})" if f.device_time is not None else ""
    return f"{what} at {f.effective_time.isoformat()}{device}"


def _event_facts(f: EventFacts) -> str:
    dose = "" if f.dose_id is None else f", dose {f.dose_id}"
    scheduled = "" if f.scheduled_time is None else f" scheduled {f.scheduled_time.isoformat()}"
    return f"an event at {f.event_time.isoformat()}{dose}{scheduled}"


def _dead_letter(m: RawMessage, code: str, path: str, detail: str) -> DeadLetterIn:
    return DeadLetterIn(
        topic=m.topic,
        payload=bytes(m.payload),
        code=code,
        path=path,
        detail=detail,
        received_at=m.received_at,
    )


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _is_event_topic(topic: str) -> bool:
    return topic.endswith("/event")  # decode_events checks the rest of the topic


def _is_telemetry_topic(topic: str) -> bool:
    return topic.endswith("/telemetry")  # decode_telemetry checks the rest of the topic


def _is_visit_topic(topic: str) -> bool:
    return topic.endswith("/_kiosk/visit")  # decode_visit checks the rest of the topic


def _is_status_topic(topic: str) -> bool:
    parts = topic.split("/")
    return (
        len(parts) == 5
        and f"{parts[0]}/{parts[1]}" == TOPIC_ROOT
        and parts[3] == "_agent"
        and parts[4] == "status"
    )


@dataclass(slots=True)
class _Decoded:
    envelopes: list[InboundEnvelope]
    statuses: list[StatusIn]
    dead: list[DeadLetterIn]
    events: list[InboundEvents] = field(default_factory=list)
    telemetry: list[TelemetryIn] = field(default_factory=list)
    visits: list[VisitIn] = field(default_factory=list)
    # id(InboundEnvelope) or id(InboundEvents) -> the raw message
    payloads: dict[int, RawMessage] = field(default_factory=dict)


_Facts = TypeVar("_Facts", ReadingFacts, EventFacts)
T = TypeVar("T")


class IngestService:
    def __init__(
        self,
        storage: Storage,
        *,
        clock: Callable[[], datetime] = _utcnow,
        thresholds: Sequence[Threshold] | None = None,
        lifecycle: LifecyclePolicy = DEFAULT_POLICY,
        dispenser_rules: Sequence[DispenserRule] = DEFAULT_DISPENSER_RULES,
        timeseries: TimeSeriesSink | None = None,
    ) -> None:
        self.storage = storage
        self.directory = Directory(storage)
        self.lifecycle = lifecycle
        self._timeseries = timeseries
        self._clock = clock
        self._thresholds = (
            tuple(thresholds) if thresholds is not None else tuple(DEFAULTS_BY_CONDITION.values())
        )
        self._by_condition = {t.condition: t for t in self._thresholds}
        self._measures = frozenset(m for t in self._thresholds for m in t.measures)
        self._dispenser_rules = tuple(dispenser_rules)
        self._dispenser_conditions = frozenset(r.condition for r in self._dispenser_rules)
        self._dispenser_kinds = frozenset(
            k for r in self._dispenser_rules for k in (*r.raised_by, *r.cleared_by)
        )

    # -- ingest --------------------------------------------------------------------------------

    def ingest_batch(self, batch: Sequence[RawMessage]) -> IngestResult:
        """Decode, store and evaluate a batch in one transaction; raise if it was not stored."""
        decoded = self._decode(batch)
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                result, stored = self._store(decoded)
                if self._timeseries is not None and (
                    stored or decoded.statuses or decoded.telemetry
                ):
                    try:
                        self._copy_to_timeseries(stored, decoded.statuses, decoded.telemetry)
                    except Exception:  # the batch is committed: the copy must never fail it
                        log.exception("time-series copy of a committed batch failed")
                return result
            except ConflictError:
                if attempt == MAX_ATTEMPTS:
                    raise
                log.info("batch lost a race with a concurrent writer; retry %d", attempt)
                time.sleep(0.01 * attempt)
        raise AssertionError("unreachable")

    def _decode(self, batch: Sequence[RawMessage]) -> _Decoded:
        out = _Decoded([], [], [])
        for m in batch:
            try:
                if _is_status_topic(m.topic):
                    out.statuses.append(
                        StatusIn(
                            status=decode_status(m.topic, m.payload), received_at=m.received_at
                        )
                    )
                elif _is_telemetry_topic(m.topic):
                    out.telemetry.append(
                        TelemetryIn(
                            envelope=decode_telemetry(m.topic, m.payload),
                            received_at=m.received_at,
                        )
                    )
                elif _is_visit_topic(m.topic):
                    # a visit is its parts' readings plus one row: the parts go in with the
                    # batch's other envelopes (same screening, rules and idempotency)
                    visit = decode_visit(m.topic, m.payload)
                    parts = [  # all or nothing of the visit goes into the batch
                        InboundEnvelope(
                            topic=m.topic,
                            envelope=screen(part, m.received_at),
                            received_at=m.received_at,
                        )
                        for part in visit.parts
                    ]
                    out.envelopes += parts
                    out.payloads.update((id(inbound), m) for inbound in parts)
                    out.visits.append(VisitIn(envelope=visit, received_at=m.received_at))
                elif _is_event_topic(m.topic):
                    events = InboundEvents(
                        topic=m.topic,
                        envelope=decode_events(m.topic, m.payload),
                        received_at=m.received_at,
                    )
                    out.events.append(events)
                    out.payloads[id(events)] = m
                else:
                    env = screen(decode_observations(m.topic, m.payload), m.received_at)
                    inbound = InboundEnvelope(
                        topic=m.topic, envelope=env, received_at=m.received_at
                    )
                    out.envelopes.append(inbound)
                    out.payloads[id(inbound)] = m
            except WireError as exc:
                out.dead.append(_dead_letter(m, exc.code.value, exc.path, exc.detail))
            except Exception as exc:
                # A decoder bug must not stall the stream: keep the message for inspection.
                log.exception("decoder failed on a message from %s", m.topic)
                out.dead.append(_dead_letter(m, INTERNAL_ERROR, "", f"decoder failed: {exc!r}"))
        return out

    def quarantine(self, message: RawMessage, reason: str) -> None:
        """Dead-letter one message that cannot be stored (e.g. the database refuses a value).

        The consumer calls this for a message that fails alone after its batch failed repeatedly,
        so one poison message never stops the stream. Raises if even the dead letter cannot be
        written (the database is down): then nothing is acknowledged and the broker keeps it.
        """
        with self.storage.write() as tx:
            tx.insert_dead_letters(
                [_dead_letter(message, STORE_FAILED, "", reason[:2000])], now=self._clock()
            )

    def _copy_to_timeseries(
        self,
        stored: Sequence[StoredReading],
        statuses: Sequence[StatusIn] = (),
        telemetry: Sequence[TelemetryIn] = (),
    ) -> None:
        """After the commit: the new readings, each device's newest clock offset, the devices'
        telemetry samples (battery, RSSI, link) and the hubs' link state (their online/offline
        status, as device ``hub``) to the time-series store. Its writer queues and never raises
        (SQL is the record)."""
        sink = self._timeseries
        assert sink is not None
        points: list[ObservationPoint] = []
        clocks: dict[tuple[str, str], TelemetryPoint] = {}
        for r in stored:
            env, o = r.inbound.envelope, r.observation.observation
            simulated = QualityFlag.SIMULATED in o.quality
            try:
                points.append(
                    ObservationPoint(
                        subject_ref=env.subject.ref,
                        site=env.site,
                        device_id=env.device_id,
                        measure=o.measure,
                        unit=o.unit,
                        time=o.effective_time,
                        simulated=simulated,
                        value=o.value,
                        comparator=o.comparator,
                        absent_reason=o.absent_reason.value if o.absent_reason else None,
                    )
                )
                if o.clock_offset_s is not None:
                    key = (env.site, env.device_id)
                    cur = clocks.get(key)
                    if cur is None or o.effective_time > cur.time:
                        clocks[key] = TelemetryPoint(
                            site=env.site,
                            device_id=env.device_id,
                            time=o.effective_time,
                            clock_offset_s=o.clock_offset_s,
                        )
            except ValueError as exc:  # stored in SQL already; the copy skips what it cannot hold
                log.warning(
                    "reading %s not copied to the time-series store: %s", r.observation.obs_id, exc
                )
        links = [
            TelemetryPoint(
                site=st.status.site,
                device_id=HUB_DEVICE,
                time=st.status.at or st.received_at,
                link_state=st.status.state,
            )
            for st in statuses
        ]
        samples = [
            TelemetryPoint(
                site=tin.envelope.site,
                device_id=tin.envelope.device_id,
                time=w.telemetry.at,
                battery_pct=w.telemetry.battery_pct,
                rssi_dbm=w.telemetry.rssi_dbm,
                link_state=w.telemetry.link.value if w.telemetry.link else None,
                clock_offset_s=w.telemetry.clock_offset_s,
            )
            for tin in telemetry
            for w in tin.envelope.samples
        ]
        sink.write_observations(points)
        sink.write_telemetry([*clocks.values(), *links, *samples])

    def _store(self, d: _Decoded) -> tuple[IngestResult, Sequence[StoredReading]]:
        now = self._clock()
        with self.storage.write() as tx:
            tx.insert_dead_letters(d.dead, now=now)
            tx.upsert_statuses(d.statuses)
            tx.upsert_telemetry(d.telemetry)
            tx.upsert_device_subjects(_device_subjects(d))
            outcome = tx.store_envelopes(d.envelopes) if d.envelopes else None
            visits = tx.insert_visits(d.visits)
            conflicts: list[DeadLetterIn] = []
            if outcome is not None and (
                outcome.duplicate_observations or outcome.duplicate_messages
            ):
                conflicts = self._conflicts(tx, d, outcome.new_readings)
                tx.insert_dead_letters(conflicts, now=now)
            raised = updated = 0
            if outcome is not None and outcome.new_readings:
                # one read (and lock) of the subjects' active alerts for both rule families
                active = tx.active_alerts(
                    x.inbound.envelope.subject.ref for x in outcome.new_readings
                )
                raised, updated = self._apply_rules(tx, outcome.new_readings, active, now)
                r, u = self._apply_reading_findings(tx, outcome.new_readings, active, now)
                raised += r
                updated += u
                tx.upsert_last_seen(_cgm_last_seen(outcome.new_readings))
            events = tx.store_events(d.events) if d.events else None
            if events is not None and events.duplicates:
                event_conflicts = self._event_conflicts(tx, d, events.new_events)
                tx.insert_dead_letters(event_conflicts, now=now)
                conflicts += event_conflicts
            if events is not None and events.new_events:
                r, u = self._apply_event_rules(tx, events.new_events, now)
                raised += r
                updated += u
        result = IngestResult(
            messages=outcome.messages if outcome else 0,
            duplicate_messages=outcome.duplicate_messages if outcome else 0,
            observations=len(outcome.new_readings) if outcome else 0,
            duplicate_observations=outcome.duplicate_observations if outcome else 0,
            dead_letters=len(d.dead) + len(conflicts),
            alerts_raised=raised,
            alerts_updated=updated,
            statuses=len(d.statuses),
            events_stored=len(events.new_events) if events else 0,
            events_duplicate=events.duplicates if events else 0,
            telemetry_samples=sum(len(x.envelope.samples) for x in d.telemetry),
            visits=visits,
        )
        return result, (outcome.new_readings if outcome else ())

    def _conflicts(
        self, tx: WriteTx, d: _Decoded, new: Sequence[StoredReading]
    ) -> list[DeadLetterIn]:
        """Readings whose id was already stored with other facts: not duplicates but conflicts.

        Ids are derived from the device and its own record key, so a device whose record
        numbering restarted (battery change, factory reset, a hub that lost its state) would
        reuse ids for new readings. Those are kept as ``id-conflict`` dead letters with the
        message, never dropped as duplicates.
        """
        fresh = {r.observation.obs_id for r in new}
        seen = [
            (inbound, f"observations[{i}]", w.obs_id, w.observation)
            for inbound in d.envelopes
            for i, w in enumerate(inbound.envelope.observations)
            if w.obs_id not in fresh
        ]
        stored = tx.stored_facts(item_id for _, _, item_id, _ in seen)
        mine = [
            (
                inbound,
                path,
                item_id,
                ReadingFacts(
                    o.effective_time,
                    o.value,
                    o.comparator,
                    o.absent_reason.value if o.absent_reason else None,
                    o.device_time,
                ),
            )
            for inbound, path, item_id, o in seen
        ]
        return _id_conflicts(d, mine, stored, "obs_id", _facts, same_reading)

    def _event_conflicts(
        self, tx: WriteTx, d: _Decoded, new: Sequence[StoredEvent]
    ) -> list[DeadLetterIn]:
        """Events whose id was already stored with another time or dose (see :meth:`_conflicts`:
        a dispenser whose event numbering restarted must not lose a new missed dose)."""
        fresh = {s.event.event_id for s in new}
        seen = [
            (inbound, f"events[{i}]", w.event_id, w.event)
            for inbound in d.events
            for i, w in enumerate(inbound.envelope.events)
            if w.event_id not in fresh
        ]
        stored = tx.stored_event_facts(item_id for _, _, item_id, _ in seen)
        mine = [
            (
                inbound,
                path,
                item_id,
                EventFacts(e.event_time, e.dose_id, e.scheduled_time, e.device_time),
            )
            for inbound, path, item_id, e in seen
        ]
        return _id_conflicts(d, mine, stored, "event_id", _event_facts, same_event)

    def _apply_rules(
        self,
        tx: WriteTx,
        new: Sequence[StoredReading],
        active_alerts: Sequence[AlertRecord],
        now: datetime,
    ) -> tuple[int, int]:
        measures = self._measures
        candidates = [
            r
            for r in new
            if r.observation.observation.measure in measures
            and not r.observation.observation.quality & CLOUD_ONLY_FLAGS
        ]
        if not candidates:
            return 0, 0
        subjects = {r.inbound.envelope.subject.ref for r in candidates}
        active = [
            _alert_state(a)
            for a in active_alerts
            if a.condition in self._by_condition and a.subject_ref in subjects
        ]
        overrides = self._team_overrides(tx, subjects)
        overrides |= {(o.subject_ref, o.condition): _override(o) for o in tx.overrides(subjects)}
        # Most readings are far from every threshold and can change no alert: only the few that
        # can are turned into rule readings and evaluated (same actions as evaluating them all).
        selected = needs_evaluation(
            [
                (r.inbound.envelope.subject.ref, r.observation.obs_id, r.observation.observation)
                for r in candidates
            ],
            open_alerts=active,
            overrides=overrides,
            thresholds=self._thresholds,
        )
        if not selected:
            return 0, 0
        quality: dict[frozenset[QualityFlag], frozenset[str]] = {}
        readings = [_reading(candidates[i], quality) for i in selected]
        # "for N minutes" / "N in a row" conditions (e.g. cgm-low-l1) need the stored readings
        # before this batch; usually none are needed
        windows = history_needed(
            readings, open_alerts=active, overrides=overrides, thresholds=self._thresholds
        )
        history = {key: _history(tx, key, w) for key, w in windows.items()}
        actions = evaluate(
            readings,
            open_alerts=active,
            now=now,
            overrides=overrides,
            thresholds=self._thresholds,
            history=history,
        )
        raises = [a for a in actions if a.kind == "raise"]
        updates = [a for a in actions if a.kind == "update"]
        routing = tx.routing(a.state.subject_ref for a in raises) if raises else {}
        new_ids = tx.insert_alerts(
            [
                _alert_columns(a.state, now, new=True, team_id=_team(routing, a.state.subject_ref))
                for a in raises
            ]
        )
        tx.update_alerts([_alert_columns(a.state, now, new=False) for a in updates])
        events: list[AlertEventIn] = []
        for i, a in enumerate(raises):
            events.extend(_events(a, alert_id=None, index=i))
        for a in updates:
            events.extend(_events(a, alert_id=a.state.id, index=None))
        tx.insert_alert_events(events, new_ids)
        return len(raises), len(updates)

    def _apply_reading_findings(
        self,
        tx: WriteTx,
        new: Sequence[StoredReading],
        active_alerts: Sequence[AlertRecord],
        now: datetime,
    ) -> tuple[int, int]:
        """Device health (battery, sensor, clock) and PEF zones on the newly stored readings.

        Only readings that can matter are turned into rule inputs: flagged ones, PEF blows, and
        the readings of subjects with an open device-health alert (a clean reading clears it).
        """
        active = [a for a in active_alerts if a.condition in _READING_FINDINGS]
        health_open = {a.subject_ref for a in active if a.condition in _HEALTH_CONDITIONS}
        health = [
            _device_reading(r)
            for r in new
            if r.inbound.envelope.subject.ref in health_open or _health_relevant(r)
        ]
        actions = evaluate_device_health(
            [h for h in health if h is not None],
            open_alerts=[open_finding(a) for a in active if a.condition in _HEALTH_CONDITIONS],
            now=now,
        )
        r1, u1 = self._store_findings(tx, actions, now, kind=READING_KIND)
        r2, u2 = self._apply_pef_zones(tx, new, active, now)
        return r1 + r2, u1 + u2

    def _apply_pef_zones(
        self,
        tx: WriteTx,
        new: Sequence[StoredReading],
        active: Sequence[AlertRecord],
        now: datetime,
    ) -> tuple[int, int]:
        blows = [r for r in new if r.observation.observation.measure == PEF_MEASURE]
        if not blows:
            return 0, 0
        subjects = {r.inbound.envelope.subject.ref for r in blows}
        bests = {p.subject_ref: p.value for p in tx.parameters(PERSONAL_BEST_PARAMETER, subjects)}
        readings = [
            _pef_reading(r)
            for r in blows
            if r.inbound.envelope.subject.ref in bests
            and r.observation.observation.value is not None  # an absent blow has no zone
        ]
        if not readings:
            return 0, 0
        fresh = {p.obs_id for p in readings}
        earliest = min(p.effective_time for p in readings)
        earlier = [
            _pef_record(o)
            for ref in sorted({p.subject_ref for p in readings})
            for o in tx.readings_of(ref, PEF_MEASURE, since=earliest - PEF_CONTEXT, until=earliest)
            if o.obs_id not in fresh and o.value is not None
        ]
        actions = evaluate_pef_zones(
            readings,
            personal_best=bests,
            open_alerts=[open_finding(a) for a in active if a.condition in _ZONE_CONDITIONS],
            now=now,
            earlier=earlier,
        )
        return self._store_findings(tx, actions, now, kind=READING_KIND)

    def _team_overrides(
        self, tx: WriteTx, subjects: set[str]
    ) -> dict[tuple[str, str], ThresholdOverride]:
        """Care-team values for these subjects' conditions (a patient's own value wins)."""
        routing = tx.routing(subjects)
        by_team: dict[str, list[str]] = {}
        for ref, r in routing.items():
            if r.team_id is not None:
                by_team.setdefault(r.team_id, []).append(ref)
        out: dict[tuple[str, str], ThresholdOverride] = {}
        for tt in tx.team_thresholds(by_team):
            for ref in by_team[tt.team_id]:
                out[(ref, tt.condition)] = ThresholdOverride(
                    subject_ref=ref,
                    condition=tt.condition,
                    value=tt.value,
                    unit=tt.unit,
                    set_by=f"care team {tt.team_id} ({tt.set_by})",
                    set_at=tt.set_at,
                )
        return out

    def _apply_event_rules(
        self, tx: WriteTx, new: Sequence[StoredEvent], now: datetime
    ) -> tuple[int, int]:
        """Dispenser rules on the events stored for the first time by this batch."""
        kinds = self._dispenser_kinds
        events = [_dispenser_event(e) for e in new if e.event.event.kind in kinds]
        if not events:
            return 0, 0
        subjects = {e.subject_ref for e in events}
        conditions = self._dispenser_conditions
        active = [open_finding(a) for a in tx.active_alerts(subjects) if a.condition in conditions]
        actions = evaluate_events(events, open_alerts=active, now=now, rules=self._dispenser_rules)
        return self._store_findings(tx, actions, now, kind=EVENT_KIND)

    def _store_findings(
        self,
        tx: WriteTx,
        actions: Sequence[FindingAction],
        now: datetime,
        *,
        kind: str,
        sites: bool = False,
    ) -> tuple[int, int]:
        """Store finding actions; a new alert is routed by its subject, or with ``sites`` (the
        subject is a hub or kiosk) by the one patient whose devices report there."""
        raises = [a for a in actions if a.state.alert_id is None]
        updates = [a for a in actions if a.state.alert_id is not None]
        if sites and raises:
            routes = _site_routes(tx, {a.state.subject_ref for a in raises})
            rows = [
                finding_columns(
                    a,
                    now,
                    kind=kind,
                    team_id=routes.get(a.state.subject_ref, (None, None))[0],
                    audience=routes.get(a.state.subject_ref, (None, None))[1],
                )
                for a in raises
            ]
        else:
            routing = tx.routing(a.state.subject_ref for a in raises) if raises else {}
            rows = [
                finding_columns(a, now, kind=kind, team_id=_audience_team(routing, a.state))
                for a in raises
            ]
        new_ids = tx.insert_alerts(rows)
        tx.update_alerts([finding_columns(a, now, kind=kind, team_id=None) for a in updates])
        events: list[AlertEventIn] = []
        for i, a in enumerate(raises):
            events.extend(finding_events(a, alert_id=None, index=i, actor=SYSTEM_ACTOR))
        for a in updates:
            events.extend(
                finding_events(a, alert_id=a.state.alert_id, index=None, actor=SYSTEM_ACTOR)
            )
        tx.insert_alert_events(events, new_ids)
        return len(raises), len(updates)

    def record_status(self, status: AgentStatus, *, received_at: datetime | None = None) -> None:
        """Record a site's online/offline state (the newest report by the agent's time wins)."""
        with self.storage.write() as tx:
            tx.upsert_statuses([StatusIn(status=status, received_at=received_at or self._clock())])

    # -- queries -------------------------------------------------------------------------------

    def health(self) -> None:
        """Raise :class:`StorageError` if the database cannot be reached."""
        self.storage.ping()

    def stats(self) -> Stats:
        return self.storage.counts()

    def list_sites(self) -> list[SiteRecord]:
        return self.storage.list_sites()

    def list_observations(
        self,
        *,
        subject: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        measure: str | None = None,
        site_prefix: str | None = None,
        limit: int = 100,
    ) -> list[ObservationRecord]:
        return self.storage.list_observations(
            subject_ref=subject,
            since=since,
            until=until,
            measure=measure,
            site_prefix=site_prefix,
            limit=limit,
        )

    def series(
        self, *, subject: str, measure: str, since: datetime, limit: int
    ) -> list[SeriesPoint]:
        return self.storage.series(subject_ref=subject, measure=measure, since=since, limit=limit)

    def list_visits(
        self, *, subject: str, since: datetime | None = None, limit: int = 100
    ) -> list[KioskVisitRecord]:
        return self.storage.list_visits(subject_ref=subject, since=since, limit=limit)

    def visit_observations(self, visit: KioskVisitRecord) -> list[ObservationRecord]:
        return self.storage.observations_of_messages(visit.part_msg_ids)

    def list_events(
        self,
        *,
        subject: str | None = None,
        kind: str | None = None,
        device_id: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[EventRecord]:
        return self.storage.list_events(
            subject_ref=subject,
            kind=kind,
            device_id=device_id,
            since=since,
            limit=limit,
            offset=offset,
        )

    def list_alerts(
        self,
        *,
        principal: Principal | None = None,
        state: str | None = None,
        subject: str | None = None,
        priority: str | None = None,
        condition: str | None = None,
        kind: str | None = None,
        assigned_to: str | None = None,
        team_id: str | None = None,
        include_snoozed: bool = True,
        active_only: bool = False,
        limit: int = 100,
        offset: int = 0,
    ) -> list[AlertRecord]:
        """Alerts the principal may see (None: every alert), highest priority first;
        ``active_only``: open and acknowledged ones (the working queue)."""
        teams, audiences = principal.scope() if principal is not None else (None, None)
        flt = AlertFilter(
            state=state,
            subject_ref=subject,
            priority=priority,
            condition=condition,
            kind=kind,
            assigned_to=assigned_to,
            team_id=team_id,
            teams=teams,
            audiences=audiences,
            hide_snoozed_at=None if include_snoozed else self._clock(),
            active_only=active_only,
        )
        return self.storage.list_alerts(flt, limit=limit, offset=offset)

    def _visible(self, alert_id: int, principal: Principal | None) -> AlertRecord:
        alert = self.storage.get_alert(alert_id)
        if alert is None or (principal is not None and not principal.can_see(alert)):
            raise AlertNotFoundError(alert_id)  # the same answer: no leak of other teams' alerts
        return alert

    def get_alert(self, alert_id: int, *, principal: Principal | None = None) -> AlertWithEvents:
        alert = self._visible(alert_id, principal)
        return AlertWithEvents(alert=alert, events=self.storage.alert_events(alert_id))

    def acknowledge(
        self,
        alert_id: int,
        *,
        actor: str,
        note: str | None = None,
        principal: Principal | None = None,
    ) -> AlertRecord:
        return self._transition(
            alert_id, Transition.ACKNOWLEDGE, actor=actor, note=note, principal=principal
        )

    def resolve(
        self,
        alert_id: int,
        *,
        actor: str,
        note: str | None = None,
        principal: Principal | None = None,
    ) -> AlertRecord:
        return self._transition(
            alert_id, Transition.RESOLVE, actor=actor, note=note, principal=principal
        )

    def assign(
        self,
        alert_id: int,
        *,
        actor: str,
        assignee: str | None,
        note: str | None = None,
        principal: Principal | None = None,
    ) -> AlertRecord:
        """Name the team member who handles the alert (None: unassign). The assignee must be an
        active member of the alert's team with the alert's audience role."""
        alert = self._visible(alert_id, principal)
        if assignee is not None:
            staff = self.directory.get_staff(assignee)
            if staff is None or not staff.active:
                raise AssignmentError(f"no active staff member {assignee!r}")
            if alert.team_id is None or alert.team_id not in staff.team_ids:
                raise AssignmentError(
                    f"{assignee} is not in the alert's care team ({alert.team_id or 'none'})"
                )
            if staff.role != alert.audience:
                raise AssignmentError(
                    f"{assignee} is {staff.role}; this alert is for {alert.audience} staff"
                )
        return self._transition(
            alert_id,
            Transition.ASSIGN,
            actor=actor,
            note=note,
            principal=principal,
            extra={"assigned_to": assignee},
        )

    def snooze(
        self,
        alert_id: int,
        *,
        actor: str,
        minutes: float,
        note: str | None = None,
        principal: Principal | None = None,
    ) -> AlertRecord:
        """Hide an acknowledged alert from the working queue for a bounded time."""
        alert = self._visible(alert_id, principal)
        until = snooze_until(
            state=alert.state,
            priority=alert.priority,
            minutes=minutes,
            now=self._clock(),
            policy=self.lifecycle,
        )
        return self._transition(
            alert_id,
            Transition.SNOOZE,
            actor=actor,
            note=note or f"snoozed until {until.isoformat(timespec='seconds')}",
            principal=principal,
            extra={"snoozed_until": until},
        )

    def _transition(
        self,
        alert_id: int,
        transition: Transition,
        *,
        actor: str,
        note: str | None,
        principal: Principal | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> AlertRecord:
        for _ in range(MAX_ATTEMPTS):
            alert = self._visible(alert_id, principal)
            target = next_state(alert.state, transition)  # raises InvalidTransitionError
            now = self._clock()
            values: dict[str, Any] = {"state": target.value, "updated_at": now, **(extra or {})}
            if transition is Transition.ACKNOWLEDGE:
                values |= {"acknowledged_by": actor, "acknowledged_at": now}
            elif transition is Transition.RESOLVE:
                values |= {
                    "resolved_by": actor,
                    "resolved_at": now,
                    "resolved_note": note,
                    "snoozed_until": None,
                }
            elif transition is Transition.ASSIGN:
                values["assigned_at"] = now if values.get("assigned_to") else None
            event = AlertEventIn(
                alert_id=alert_id,
                alert_index=None,
                at=now,
                action=_ACTION_WORD[transition],
                actor=actor,
                note=_assign_note(values, note) if transition is Transition.ASSIGN else note,
            )
            try:
                return self.storage.transition_alert(
                    alert_id, expected_state=alert.state, values=values, event=event
                )
            except AlertChangedError:
                continue  # re-read: the new state decides whether the transition is valid
        raise ConflictError(f"alert {alert_id} kept changing; try again")

    def housekeeping(self) -> int:
        """The time-driven rules, run by every ingest worker every few seconds: stale CGM
        data, sites offline (last will), escalation of unacknowledged alerts. Returns how many
        alerts were raised or changed."""
        changed = self.check_silence()
        return changed + self.escalate_due()

    def check_silence(self) -> int:
        """Raise, update or clear the stale-CGM and site-offline alerts as of now."""
        now = self._clock()
        cgm_conditions = (CGM_STALE, CGM_STALE_URGENT)
        with self.storage.write() as tx:
            active = tx.active_alerts_of((*cgm_conditions, SITE_OFFLINE))
            cgm_open = [open_finding(a) for a in active if a.condition in cgm_conditions]
            site_open = [open_finding(a) for a in active if a.condition == SITE_OFFLINE]
            expected_for = CGM_EXPECTED_FOR
            recent = {r.subject_ref: r for r in tx.last_seen(CGM, since=now - expected_for)}
            # subjects with an open alert but no recent reading: no longer expected (cleared)
            for r in tx.last_seen_of(CGM, {f.subject_ref for f in cgm_open} - set(recent)):
                recent.setdefault(r.subject_ref, r)
            streams = [
                CgmStream(
                    subject_ref=r.subject_ref,
                    expected_since=r.newest_time
                    if now - r.newest_time < CGM_EXPECTED_FOR
                    else None,
                    newest_reading_time=r.newest_time,
                    newest_reading_id=r.newest_obs_id,
                    simulated=r.simulated,
                )
                for r in recent.values()
            ]
            streams += [
                CgmStream(subject_ref=ref, expected_since=None)
                for ref in {f.subject_ref for f in cgm_open} - set(recent)
            ]
            actions = evaluate_cgm_silence(streams, open_alerts=cgm_open, now=now)
            r1, u1 = self._store_findings(tx, actions, now, kind=SILENCE_KIND)
            statuses = [
                SiteStatus(site=s.site, state=s.state, at=s.at)  # type: ignore[arg-type]
                for s in tx.site_statuses()
                if s.state in ("online", "offline")
            ]
            actions = evaluate_site_status(statuses, open_alerts=site_open, now=now)
            r2, u2 = self._store_findings(tx, actions, now, kind=SILENCE_KIND, sites=True)
            r3, u3 = self._check_pef_diaries(tx, now)
        return r1 + u1 + r2 + u2 + r3 + u3

    def _check_pef_diaries(self, tx: WriteTx, now: datetime) -> tuple[int, int]:
        """Missed PEF diary sessions of the diaries running now (or ended in the last 2 days:
        their last evening window is judged after it ends)."""
        today = now.date()
        diaries = tx.pef_diaries_around(today - timedelta(days=2), today + timedelta(days=1))
        if not diaries:
            return 0, 0
        refs = {d.subject_ref for d in diaries}
        zones = tx.time_zones(refs)
        schedules = [
            PefSchedule(
                subject_ref=d.subject_ref,
                time_zone=zones[d.subject_ref],
                first_day=d.first_day,
                last_day=d.last_day,
            )
            for d in diaries
            if d.subject_ref in zones  # a diary is set for directory patients only
        ]
        readings = [
            PefReadingTime(
                obs_id=r.obs_id,
                subject_ref=r.subject_ref,
                effective_time=r.effective_time,
                simulated="simulated" in r.quality,
            )
            for s in schedules
            for r in tx.readings_of(
                s.subject_ref,
                PEF_MEASURE,
                since=datetime.combine(s.first_day, clock_time(0), UTC) - timedelta(days=1),
                until=now + FUTURE_LIMIT,
            )
            if not {q.value for q in CLOUD_ONLY_FLAGS} & set(r.quality)
        ]
        open_ = [
            open_finding(a) for a in tx.active_alerts(refs) if a.condition == PEF_SESSION_MISSED
        ]
        actions = evaluate_pef_schedule(
            schedules,
            readings,
            open_alerts=open_,
            now=now,
            judged_until=tx.resolved_evidence_until(PEF_SESSION_MISSED, refs),
        )
        return self._store_findings(tx, actions, now, kind=SILENCE_KIND)

    def escalate_due(self, *, limit: int = 500) -> int:
        """Raise the escalation level of open alerts left unacknowledged past their priority's
        interval (:class:`cloud_ingest.rules.LifecyclePolicy`); return how many changed.

        Several workers may call this at once: each alert is changed by one of them (rows are
        locked; PostgreSQL skips the ones another worker holds).
        """
        now = self._clock()
        priorities = list(self.lifecycle.escalate_every)
        if not priorities:
            return 0
        with self.storage.write() as tx:
            changed: list[dict[str, Any]] = []
            events: list[AlertEventIn] = []
            for a in tx.escalation_candidates(priorities, limit=limit):
                level = escalation_level_due(
                    state=a.state,
                    priority=a.priority,
                    raised_at=a.raised_at,
                    level=a.escalation_level,
                    cleared=a.cleared_at is not None,
                    now=now,
                    policy=self.lifecycle,
                )
                if level is None:
                    continue
                changed.append(
                    {"id": a.id, "escalation_level": level, "escalated_at": now, "updated_at": now}
                )
                every = self.lifecycle.escalate_every[a.priority]
                events.append(
                    AlertEventIn(
                        alert_id=a.id,
                        alert_index=None,
                        at=now,
                        action="escalated",
                        actor=SYSTEM_ACTOR,
                        note=(
                            f"escalation level {level}: {a.priority}-priority alert not "
                            f"acknowledged {_minutes_text(now - a.raised_at)} after it was raised "
                            f"(escalates every {_minutes_text(every)}; remon default)"
                        ),
                    )
                )
            tx.update_alerts(changed)
            tx.insert_alert_events(events, [])
        return len(changed)

    def alert_changes(
        self,
        *,
        principal: Principal | None,
        after_id: int,
        also_ids: Sequence[int] = (),
        limit: int = 500,
    ) -> tuple[list[int], list[tuple[AlertEventRecord, AlertRecord]]]:
        """Queue changes after ``after_id`` (and the awaited ``also_ids``): every audit event id
        found, and the events the principal may see with their alerts. What the SSE stream
        sends (see :class:`cloud_ingest.api.stream.ChangeCursor` for why both)."""
        teams, audiences = principal.scope() if principal is not None else (None, None)
        flt = AlertFilter(teams=teams, audiences=audiences)
        return self.storage.alert_changes(
            after_id=after_id, also_ids=also_ids, flt=flt, limit=limit
        )

    def last_alert_change_id(self) -> int:
        return self.storage.max_alert_event_id()

    def list_dead_letters(self, *, limit: int = 100, offset: int = 0) -> list[DeadLetterRecord]:
        return self.storage.list_dead_letters(limit=limit, offset=offset)

    def get_threshold(self, subject: str, condition: str) -> ThresholdView:
        default = self._by_condition.get(condition)
        if default is None:
            raise UnknownConditionError(
                f"unknown condition {condition!r}; known: {sorted(self._by_condition)}"
            )
        own = self.storage.get_override(subject, condition)
        if own is not None:
            return _view(subject, default, own)
        entry = self.directory.get_patient(subject)
        team = self.storage.team_threshold(entry.team_id, condition) if entry else None
        if team is None:
            return _view(subject, default, None)
        as_override = OverrideRecord(
            subject_ref=subject,
            condition=condition,
            value=team.value,
            unit=team.unit,
            set_by=team.set_by,
            set_at=team.set_at,
        )
        return _view(subject, default, as_override, team_id=team.team_id)

    def put_threshold(
        self, subject: str, condition: str, *, value: float, unit: str, actor: str
    ) -> ThresholdView:
        """Set a patient-specific value for ``condition`` (same unit as the default)."""
        default = check_override(condition, value, unit, self._by_condition)
        rec = self.storage.put_override(
            OverrideRecord(
                subject_ref=subject,
                condition=condition,
                value=float(value),
                unit=unit,
                set_by=actor,
                set_at=self._clock(),
            )
        )
        return _view(subject, default, rec)

    def reset_threshold(self, subject: str, condition: str) -> ThresholdView:
        """Remove a patient-specific value: the default applies again."""
        default = self._by_condition.get(condition)
        if default is None:
            raise UnknownConditionError(
                f"unknown condition {condition!r}; known: {sorted(self._by_condition)}"
            )
        self.storage.delete_override(subject, condition)
        return _view(subject, default, None)

    def thresholds(self) -> list[Threshold]:
        return list(self._thresholds)


def _id_conflicts(
    d: _Decoded,
    seen: Sequence[tuple[InboundEnvelope | InboundEvents, str, str, _Facts]],
    stored: Mapping[str, _Facts],
    id_name: str,
    describe: Callable[[_Facts], str],
    same: Callable[[_Facts, _Facts], bool],
) -> list[DeadLetterIn]:
    """One ``id-conflict`` dead letter per message holding an id stored with other facts.

    ``seen`` holds (message, JSON path of the item, item id, the item's facts).
    """
    out: list[DeadLetterIn] = []
    reported: set[int] = set()
    for inbound, path, item_id, mine in seen:
        facts = stored.get(item_id)
        if facts is None or same(facts, mine) or id(inbound) in reported:
            continue
        reported.add(id(inbound))
        log.warning(
            "%s %s reused with other facts (message %s)", id_name, item_id, inbound.envelope.msg_id
        )
        out.append(
            _dead_letter(
                d.payloads[id(inbound)],
                ID_CONFLICT,
                path,
                f"{id_name} {item_id} is already stored as {describe(facts)}; this message says "
                f"{describe(mine)}",
            )
        )
    return out


# --------------------------------------------------------------------------------------------
# conversions between storage records and rule values


def _reading(r: StoredReading, quality: dict[frozenset[QualityFlag], frozenset[str]]) -> Reading:
    """``quality`` memoises the flag sets as strings (a batch has few distinct sets)."""
    o = r.observation.observation
    flags = quality.get(o.quality)
    if flags is None:
        flags = quality[o.quality] = frozenset(q.value for q in o.quality)
    return Reading(
        obs_id=r.observation.obs_id,
        subject_ref=r.inbound.envelope.subject.ref,
        measure=o.measure,
        unit=o.unit,
        effective_time=o.effective_time,
        value=o.value,
        comparator=o.comparator,
        absent_reason=o.absent_reason.value if o.absent_reason is not None else None,
        quality=flags,
    )


def _req(a: AlertRecord, name: str, value: T | None) -> T:
    """A column every threshold alert has; None means the row is not a threshold alert."""
    if value is None:
        raise StorageError(f"alert {a.id} ({a.kind}) has no {name}: not a threshold alert")
    return value


def _alert_state(a: AlertRecord) -> AlertState:
    return AlertState(
        id=a.id,
        subject_ref=a.subject_ref,
        condition=a.condition,
        measure=_req(a, "measure", a.measure),
        priority=Priority(a.priority),
        rule=a.rule,
        threshold_value=_req(a, "threshold_value", a.threshold_value),
        threshold_unit=_req(a, "threshold_unit", a.threshold_unit),
        threshold_comparator=_req(a, "threshold_comparator", a.threshold_comparator),  # type: ignore[arg-type]
        threshold_source=a.threshold_source,
        explanation=a.explanation,
        first=Evidence(
            obs_id=_req(a, "first_obs_id", a.first_obs_id),
            value=_req(a, "first_value", a.first_value),
            comparator=a.first_comparator,
            time=a.first_time,
        ),
        last=Evidence(
            obs_id=_req(a, "last_obs_id", a.last_obs_id),
            value=_req(a, "last_value", a.last_value),
            comparator=a.last_comparator,
            time=a.last_time,
        ),
        trigger_count=a.trigger_count,
        simulated=a.simulated,
        cleared_at=a.cleared_at,
        cleared_by_obs_id=a.cleared_by_obs_id,
    )


def _alert_columns(
    s: AlertState, now: datetime, *, new: bool, team_id: str | None = None
) -> dict[str, Any]:
    cols: dict[str, Any] = {
        "explanation": s.explanation,
        "last_obs_id": s.last.obs_id,
        "last_value": s.last.value,
        "last_comparator": s.last.comparator,
        "last_time": s.last.time,
        "trigger_count": s.trigger_count,
        "simulated": s.simulated,
        "cleared_at": s.cleared_at,
        "cleared_by_obs_id": s.cleared_by_obs_id,
        "updated_at": now,
    }
    if new:
        cols |= {
            "subject_ref": s.subject_ref,
            "condition": s.condition,
            "measure": s.measure,
            "priority": s.priority.value,
            "state": AlertStateName.OPEN.value,
            "rule": s.rule,
            "threshold_value": s.threshold_value,
            "threshold_unit": s.threshold_unit,
            "threshold_comparator": s.threshold_comparator,
            "threshold_source": s.threshold_source,
            "first_obs_id": s.first.obs_id,
            "first_value": s.first.value,
            "first_comparator": s.first.comparator,
            "first_time": s.first.time,
            "raised_at": now,
            "kind": "threshold",
            "audience": Audience.CLINICIAN.value,
            "team_id": team_id,
        }
    else:
        cols["id"] = s.id
    return cols


_ACTION_WORD: Final[Mapping[Transition, str]] = {
    Transition.ACKNOWLEDGE: "acknowledged",
    Transition.RESOLVE: "resolved",
    Transition.ASSIGN: "assigned",
    Transition.SNOOZE: "snoozed",
}


def _assign_note(values: Mapping[str, Any], note: str | None) -> str:
    who = values.get("assigned_to")
    head = f"assigned to {who}" if who else "unassigned"
    return f"{head}: {note}" if note else head


def _minutes_text(span: timedelta) -> str:
    return f"{span.total_seconds() / 60:.0f} min"


def _site_routes(tx: WriteTx, sites: set[str]) -> dict[str, tuple[str, str]]:
    """Where a site's alerts go: a home hub serving one patient reaches that patient's
    home-care team when the patient is a dispenser client (the dispenser is their tool),
    else the patient's care team. A kiosk or a hub of several patients is routed to no team
    (admins see it)."""
    subjects = tx.site_subjects(sites)
    routing = tx.routing({s for refs in subjects.values() for s in refs})
    out: dict[str, tuple[str, str]] = {}
    for site, refs in subjects.items():
        if len(refs) != 1:
            continue
        r = routing.get(next(iter(refs)))
        if r is None:
            continue
        if r.home_care_team_id is not None:
            out[site] = (r.home_care_team_id, Audience.HOME_CARE.value)
        elif r.team_id is not None:
            out[site] = (r.team_id, Audience.CLINICIAN.value)
    return out


def _audience_team(routing: Mapping[str, Routing], state: FindingState) -> str | None:
    """The team a new finding goes to: the client's home-care team for home-care alerts."""
    r = routing.get(state.subject_ref)
    if r is None:
        return None
    return r.home_care_team_id if state.audience == "home_care" else r.team_id


def _dispenser_event(e: StoredEvent) -> DispenserEvent:
    ev = e.event.event
    return DispenserEvent(
        event_id=e.event.event_id,
        subject_ref=e.inbound.envelope.subject.ref,
        device_id=e.inbound.envelope.device_id,
        kind=ev.kind,
        event_time=ev.event_time,
        dose_id=ev.dose_id,
        scheduled_time=ev.scheduled_time,
        details=ev.details,
        simulated=QualityFlag.SIMULATED in ev.quality,
    )


def _device_subjects(d: _Decoded) -> list[DeviceSubjectRecord]:
    """Each (device, subject) pair of this batch with the time span of its data."""
    spans: dict[tuple[str, str], DeviceSubjectRecord] = {}

    def add(env: Envelope | EventEnvelope, first: datetime, last: datetime) -> None:
        dev = env.device
        key = (f"{dev.manufacturer}|{dev.model}|{dev.serial}", env.subject.ref)
        firmware: str | None = dev.firmware
        transport: str | None = dev.transport
        cur = spans.get(key)
        if cur is not None:
            if last < cur.last_seen:  # the identity of the newest data stands
                firmware, transport = cur.firmware or firmware, cur.transport or transport
            else:  # newer data naming none erases nothing
                firmware, transport = firmware or cur.firmware, transport or cur.transport
            first, last = min(first, cur.first_seen), max(last, cur.last_seen)
        spans[key] = DeviceSubjectRecord(
            device_key=key[0],
            subject_ref=key[1],
            site=env.site,
            device_id=env.device_id,
            first_seen=first,
            last_seen=last,
            firmware=firmware,
            transport=transport,
        )

    for i in d.envelopes:
        times = [w.observation.effective_time for w in i.envelope.observations]
        if times:
            add(i.envelope, min(times), max(times))
    for e in d.events:
        times = [w.event.event_time for w in e.envelope.events]
        if times:
            add(e.envelope, min(times), max(times))
    return list(spans.values())


_HEALTH_CONDITIONS: Final = frozenset(r.condition for r in DEFAULT_DEVICE_HEALTH_RULES)
_ZONE_CONDITIONS: Final = frozenset({PEF_ZONE_RED, PEF_ZONE_YELLOW})
_READING_FINDINGS: Final = _HEALTH_CONDITIONS | _ZONE_CONDITIONS
_HEALTH_FLAGS: Final = frozenset(
    {
        QualityFlag.BATTERY_LOW,
        QualityFlag.SENSOR_MALFUNCTION,
        QualityFlag.CLOCK_OFFSET,
        QualityFlag.FUTURE_TIME,
    }
)
#: How far back stored PEF blows are read as the session context of new ones (a session is a
#: run of blows at most 10 min apart; more context is harmless).
PEF_CONTEXT: Final = timedelta(hours=2)


def _history(tx: WriteTx, key: tuple[str, str], w: HistoryWindow) -> list[Reading]:
    """The stored readings a qualified condition needs (:class:`HistoryWindow`): the window,
    inclusive at both ends, and the last ``w.last_n`` before it. Readings the screening flagged
    take no part in the rules, in history either."""
    subject, measure = key
    rows = tx.readings_of(
        subject, measure, since=w.since, until=w.until + timedelta(microseconds=1)
    )
    if w.last_n:
        rows = tx.readings_before(subject, measure, before=w.since, n=w.last_n) + rows
    untrusted = {q.value for q in CLOUD_ONLY_FLAGS}
    return [_record_reading(o) for o in rows if not untrusted & set(o.quality)]


def _record_reading(o: ObservationRecord) -> Reading:
    return Reading(
        obs_id=o.obs_id,
        subject_ref=o.subject_ref,
        measure=o.measure,
        unit=o.unit,
        effective_time=o.effective_time,
        value=o.value,
        comparator=o.comparator,
        absent_reason=o.absent_reason,
        quality=frozenset(o.quality),
    )


def _health_relevant(r: StoredReading) -> bool:
    o = r.observation.observation
    return bool(o.quality & _HEALTH_FLAGS) or o.absent_reason is AbsentReason.ERROR


def _device_reading(r: StoredReading) -> DeviceReading | None:
    o = r.observation.observation
    if o.measure not in MEASURES:
        return None
    flags = {q.value for q in o.quality}
    if QualityFlag.FUTURE_TIME in o.quality:
        # a time beyond what the hub accepts is a clock the hub could not correct
        flags.add(QualityFlag.CLOCK_OFFSET.value)
    return DeviceReading(
        obs_id=r.observation.obs_id,
        subject_ref=r.inbound.envelope.subject.ref,
        device_id=r.inbound.envelope.device_id,
        measure=o.measure,
        effective_time=o.effective_time,
        quality=frozenset(flags),
        absent_reason=o.absent_reason.value if o.absent_reason else None,
        simulated=QualityFlag.SIMULATED in o.quality,
    )


def _pef_reading(r: StoredReading) -> PefReading:
    o = r.observation.observation
    assert o.value is not None  # callers pass blows with a value only
    return PefReading(
        obs_id=r.observation.obs_id,
        subject_ref=r.inbound.envelope.subject.ref,
        effective_time=o.effective_time,
        value=o.value,
        comparator=o.comparator,
        quality=frozenset(q.value for q in o.quality),
        simulated=QualityFlag.SIMULATED in o.quality,
    )


def _pef_record(o: ObservationRecord) -> PefReading:
    assert o.value is not None
    return PefReading(
        obs_id=o.obs_id,
        subject_ref=o.subject_ref,
        effective_time=o.effective_time,
        value=o.value,
        comparator=o.comparator,
        quality=frozenset(o.quality),
        simulated="simulated" in o.quality,
    )


def _cgm_last_seen(new: Sequence[StoredReading]) -> list[LastSeen]:
    """The newest CGM glucose value per subject in this batch (a reading without a value,
    e.g. a sensor error, does not keep the stream fresh)."""
    newest: dict[str, LastSeen] = {}
    for r in new:
        o = r.observation.observation
        if o.measure != CGM_MEASURE or o.value is None or o.quality & CLOUD_ONLY_FLAGS:
            continue  # a future-stamped reading must not keep the stream fresh
        ref = r.inbound.envelope.subject.ref
        cur = newest.get(ref)
        if cur is None or o.effective_time > cur.newest_time:
            newest[ref] = LastSeen(
                subject_ref=ref,
                stream=CGM,
                newest_time=o.effective_time,
                newest_obs_id=r.observation.obs_id,
                simulated=QualityFlag.SIMULATED in o.quality,
            )
    return list(newest.values())


def _team(routing: Mapping[str, Routing], subject: str) -> str | None:
    r = routing.get(subject)
    return None if r is None else r.team_id


def _events(a: AlertAction, *, alert_id: int | None, index: int | None) -> list[AlertEventIn]:
    return [
        AlertEventIn(
            alert_id=alert_id,
            alert_index=index,
            at=e.at,
            action=e.action,
            actor=SYSTEM_ACTOR,
            note=e.note,
        )
        for e in a.events
    ]


def _override(o: OverrideRecord) -> ThresholdOverride:
    return ThresholdOverride(
        subject_ref=o.subject_ref,
        condition=o.condition,
        value=o.value,
        unit=o.unit,
        set_by=o.set_by,
        set_at=o.set_at,
    )


def _view(
    subject: str, default: Threshold, o: OverrideRecord | None, *, team_id: str | None = None
) -> ThresholdView:
    if o is None:
        source, scope = default.source, "default"
    elif team_id is not None:
        source, scope = f"care team {team_id} value set by {o.set_by}", "team"
    else:
        source, scope = f"patient-specific value set by {o.set_by}", "patient"
    return ThresholdView(
        subject_ref=subject,
        condition=default.condition,
        title=default.title,
        comparator=default.comparator,
        value=o.value if o else default.value,
        unit=default.unit,
        priority=default.priority.value,
        hysteresis=default.hysteresis,
        source=source,
        scope=scope,
        default_value=default.value,
        default_source=default.source,
        overridden=o is not None,
        set_by=o.set_by if o else None,
        set_at=o.set_at if o else None,
    )
