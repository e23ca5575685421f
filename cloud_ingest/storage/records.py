"""Plain records the storage layer returns and accepts (no SQLAlchemy types leak out)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, NamedTuple

from gateway.wire import (
    AgentStatus,
    Envelope,
    EventEnvelope,
    TelemetryEnvelope,
    VisitEnvelope,
    WireEvent,
    WireObservation,
)


class StorageError(RuntimeError):
    """The database failed; the batch was not stored (the caller must not ack it)."""


class ConflictError(StorageError):
    """A concurrent writer won a race (unique index, deadlock, serialization); retry the work."""


class AlertNotFoundError(LookupError):
    pass


class AlertChangedError(StorageError):
    """The alert's state changed between read and write (compare-and-set lost)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InboundEnvelope:
    topic: str
    envelope: Envelope
    received_at: datetime


class SeriesPoint(NamedTuple):
    """One plain value of a measure's series (a chart's point)."""

    at: datetime
    value: float
    unit: str


class ReadingFacts(NamedTuple):
    """The facts of a reading that its id must pin down; a second reading with the same id and
    different facts is a conflict, not a duplicate (see :func:`same_reading`)."""

    effective_time: datetime
    value: float | None
    comparator: str | None
    absent_reason: str | None
    device_time: str | None = None


def same_reading(a: ReadingFacts, b: ReadingFacts) -> bool:
    """The same reading, read again? Its value and its time on the device's own clock agree.

    The device's clock reading is what pins a record down: the effective time is that reading
    corrected by the clock offset measured in each session, which jitters by a second or so
    between sessions (whole-second device clocks), so a meter that sends its whole memory again
    would otherwise look like it reused ids. Without a device time, the effective times must
    agree.
    """
    if (a.value, a.comparator, a.absent_reason) != (b.value, b.comparator, b.absent_reason):
        return False
    if a.device_time is not None or b.device_time is not None:
        return a.device_time == b.device_time
    return a.effective_time == b.effective_time


class StoredReading(NamedTuple):
    """A reading stored by this batch (first time seen).

    A named tuple, not a dataclass: one is built per new reading on the ingest hot path.
    """

    inbound: InboundEnvelope
    observation: WireObservation


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreOutcome:
    messages: int
    duplicate_messages: int
    duplicate_observations: int
    new_readings: tuple[StoredReading, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class InboundEvents:
    topic: str
    envelope: EventEnvelope
    received_at: datetime


class StoredEvent(NamedTuple):
    """An event stored by this batch (first time seen)."""

    inbound: InboundEvents
    event: WireEvent


class EventFacts(NamedTuple):
    """The facts of an event that its id must pin down (kind and record key are in the id)."""

    event_time: datetime
    dose_id: str | None
    scheduled_time: datetime | None
    device_time: str | None = None


def same_event(a: EventFacts, b: EventFacts) -> bool:
    """The same event, sent again? As :func:`same_reading`: the device's own time decides."""
    if (a.dose_id, a.scheduled_time) != (b.dose_id, b.scheduled_time):
        return False
    if a.device_time is not None or b.device_time is not None:
        return a.device_time == b.device_time
    return a.event_time == b.event_time


@dataclass(frozen=True, slots=True, kw_only=True)
class EventOutcome:
    duplicates: int  # events offered that were already stored (or twice in the batch)
    new_events: tuple[StoredEvent, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetterIn:
    topic: str
    payload: bytes
    code: str
    path: str
    detail: str
    received_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusIn:
    status: AgentStatus
    received_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class VisitIn:
    """A decoded kiosk visit and when it arrived (its parts go in as observation envelopes)."""

    envelope: VisitEnvelope
    received_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class KioskVisitRecord:
    msg_id: str
    visit_ref: str
    site: str
    subject_ref: str
    started_at: datetime
    ended_at: datetime
    quarantined: int
    observations: int
    part_msg_ids: list[str]
    answers: list[dict[str, Any]]
    summaries: list[dict[str, Any]]
    received_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class TelemetryIn:
    """A decoded device-telemetry message and when it arrived."""

    envelope: TelemetryEnvelope
    received_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class ObservationRecord:
    obs_id: str
    msg_id: str
    site: str
    device_id: str
    device_manufacturer: str
    device_model: str
    device_serial: str
    device_firmware: str | None
    device_transport: str
    subject_kind: str
    subject_ref: str
    measure: str
    value: float | None
    comparator: str | None
    absent_reason: str | None
    unit: str
    effective_time: datetime
    device_time: str | None
    clock_offset_s: float | None
    record_key: str
    quality: list[str]
    provenance: dict[str, Any]
    received_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class EventRecord:
    event_id: str
    msg_id: str
    site: str
    device_id: str
    device_key: str
    subject_kind: str
    subject_ref: str
    kind: str
    event_time: datetime
    dose_id: str | None
    scheduled_time: datetime | None
    device_time: str | None
    clock_offset_s: float | None
    details: dict[str, Any]
    quality: list[str]
    provenance_source: str
    received_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertRecord:
    id: int
    subject_ref: str
    condition: str
    measure: str | None
    priority: str
    state: str
    rule: str
    threshold_value: float | None
    threshold_unit: str | None
    threshold_comparator: str | None
    threshold_source: str
    explanation: str
    first_obs_id: str | None
    first_value: float | None
    first_comparator: str | None
    first_time: datetime
    last_obs_id: str | None
    last_value: float | None
    last_comparator: str | None
    last_time: datetime
    trigger_count: int
    simulated: bool
    raised_at: datetime
    updated_at: datetime
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    resolved_by: str | None
    resolved_at: datetime | None
    resolved_note: str | None
    cleared_at: datetime | None
    cleared_by_obs_id: str | None
    kind: str = "threshold"  # threshold | event | silence | reading (cloud_ingest.findings)
    audience: str = "clinician"  # clinician | home_care
    team_id: str | None = None
    assigned_to: str | None = None
    assigned_at: datetime | None = None
    snoozed_until: datetime | None = None
    escalation_level: int = 0
    escalated_at: datetime | None = None
    evidence: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertEventRecord:
    id: int
    alert_id: int
    at: datetime
    action: str
    actor: str
    note: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertEventIn:
    """An audit event; ``alert_index`` points into the alerts being inserted when ``alert_id``
    is not yet known."""

    alert_id: int | None
    alert_index: int | None
    at: datetime
    action: str
    actor: str
    note: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetterRecord:
    id: int
    topic: str
    payload: bytes
    code: str
    path: str
    detail: str
    received_at: datetime
    stored_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class SiteRecord:
    site: str
    state: str
    at: datetime
    agent_version: str
    received_at: datetime
    outbox_pending: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OverrideRecord:
    subject_ref: str
    condition: str
    value: float
    unit: str
    set_by: str
    set_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Counts:
    messages: int
    observations: int
    events: int
    dead_letters: int
    open_alerts: int
    alerts_total: int
    sites_online: int


# -- care teams, staff, patients (0003) ----------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TeamRecord:
    id: str
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class StaffRecord:
    id: str
    name: str
    role: str
    active: bool
    created_at: datetime
    team_ids: tuple[str, ...]
    has_token: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class PatientRecord:
    subject_ref: str
    team_id: str
    time_zone: str
    updated_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class DispenserClientRecord:
    subject_ref: str
    home_care_team_id: str
    missed_dose_window_min: int
    dose_times: tuple[str, ...]
    updated_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Routing:
    """Where a subject's alerts go: the clinical team and, for a dispenser client, the
    home-care team. None: the subject is not in the directory (admins see its alerts)."""

    team_id: str | None
    home_care_team_id: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditIn:
    at: datetime
    actor: str
    action: str
    object_kind: str
    object_id: str
    detail: dict[str, object]


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditRecord:
    id: int
    at: datetime
    actor: str
    action: str
    object_kind: str
    object_id: str
    detail: dict[str, object]


@dataclass(frozen=True, slots=True, kw_only=True)
class LastSeen:
    """The newest reading of a subject's continuous stream."""

    subject_ref: str
    stream: str
    newest_time: datetime
    newest_obs_id: str
    simulated: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class TeamThresholdRecord:
    team_id: str
    condition: str
    value: float
    unit: str
    set_by: str
    set_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class ParameterRecord:
    subject_ref: str
    name: str
    value: float
    unit: str
    set_by: str
    set_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class PefDiaryRecord:
    subject_ref: str
    first_day: date
    last_day: date
    set_by: str
    set_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceSubjectRecord:
    device_key: str
    subject_ref: str
    site: str
    device_id: str
    first_seen: datetime
    last_seen: datetime
    # firmware and transport as the newest message (by data time) from the device gave them
    firmware: str | None = None
    transport: str | None = None
    # the device's last known telemetry (remon.telemetry/1), each value with its own time
    battery_pct: int | None = None
    battery_at: datetime | None = None
    rssi_dbm: int | None = None
    rssi_at: datetime | None = None
    link: str | None = None
    link_at: datetime | None = None
    clock_offset_s: float | None = None  # device clock minus hub clock, seconds
    clock_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class UnroutedSubject:
    """A subject whose readings or events arrived but who is in no care team's directory."""

    subject_ref: str
    devices: int
    first_seen: datetime
    last_seen: datetime
    active_alerts: int
