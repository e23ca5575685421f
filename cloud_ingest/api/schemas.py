"""Response and request bodies of the API (pydantic); built from the service's records."""

from __future__ import annotations

import base64
from datetime import date, datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from cloud_ingest.service import (
    AlertRecord,
    AlertWithEvents,
    DeadLetterRecord,
    EventRecord,
    ObservationRecord,
    SiteRecord,
    Stats,
    ThresholdView,
)
from device_profiles.events import EventKind

AlertStateName = Literal["open", "acknowledged", "resolved"]
PriorityName = Literal["high", "medium", "low"]


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True, frozen=True)


class Health(_Out):
    status: Literal["ok"]
    database: Literal["ok"]


class ObservationOut(_Out):
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

    @classmethod
    def of(cls, r: ObservationRecord) -> ObservationOut:
        return cls.model_validate(r)


class AnswerOut(_Out):
    id: str
    value: str | bool | int | float


class VisitOut(_Out):
    """A kiosk visit (``remon.visit/1``) with its readings."""

    msg_id: str
    visit_ref: str
    site: str
    subject_ref: str
    started_at: datetime
    ended_at: datetime
    quarantined: int = Field(description="measurements the kiosk refused to bind to this visit")
    answers: list[AnswerOut]
    summaries: list[dict[str, Any]] = Field(
        description="results the kiosk derived from the readings, e.g. the BP mean of the last two"
    )
    received_at: datetime
    observations: list[ObservationOut]


class SubjectOut(_Out):
    kind: Literal["patient", "kiosk-session"]
    ref: str


class EventOut(_Out):
    """A device event (e.g. a dispenser's dose_missed) as the device reported it."""

    event_id: str
    kind: EventKind
    event_time: datetime
    dose_id: str | None
    scheduled_time: datetime | None
    device_id: str
    site: str
    subject: SubjectOut
    details: dict[str, str | bool | int | float]
    quality: list[str]
    received_at: datetime

    @classmethod
    def of(cls, r: EventRecord) -> EventOut:
        return cls(
            event_id=r.event_id,
            kind=EventKind(r.kind),
            event_time=r.event_time,
            dose_id=r.dose_id,
            scheduled_time=r.scheduled_time,
            device_id=r.device_id,
            site=r.site,
            subject=SubjectOut(kind=r.subject_kind, ref=r.subject_ref),
            details=r.details,
            quality=r.quality,
            received_at=r.received_at,
        )


class AlertOut(_Out):
    id: int
    subject_ref: str
    condition: str
    kind: Literal["threshold", "event", "silence", "reading"]
    audience: Literal["clinician", "home_care"]
    team_id: str | None
    measure: str | None
    priority: PriorityName
    state: AlertStateName
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
    assigned_to: str | None
    assigned_at: datetime | None
    snoozed_until: datetime | None
    escalation_level: int
    escalated_at: datetime | None

    @classmethod
    def of(cls, r: AlertRecord) -> AlertOut:
        return cls.model_validate(r)


class AlertEventOut(_Out):
    id: int
    at: datetime
    action: Literal[
        "raised",
        "updated",
        "cleared",
        "acknowledged",
        "resolved",
        "assigned",
        "snoozed",
        "escalated",
    ]
    actor: str
    note: str | None


class AlertDetailOut(AlertOut):
    events: list[AlertEventOut]

    @classmethod
    def of_detail(cls, a: AlertWithEvents) -> AlertDetailOut:
        base = AlertOut.model_validate(a.alert).model_dump()
        return cls(**base, events=[AlertEventOut.model_validate(e) for e in a.events])


class AlertNote(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str | None = Field(default=None, max_length=2000)


class DeadLetterOut(_Out):
    id: int
    topic: str
    code: str
    path: str
    detail: str
    received_at: datetime
    stored_at: datetime
    payload_base64: str
    payload_text: str = Field(
        description="the payload decoded as UTF-8 with replacement "
        "characters, cut to 2000 characters"
    )
    payload_bytes: int

    @classmethod
    def of(cls, r: DeadLetterRecord) -> DeadLetterOut:
        return cls(
            id=r.id,
            topic=r.topic,
            code=r.code,
            path=r.path,
            detail=r.detail,
            received_at=r.received_at,
            stored_at=r.stored_at,
            payload_base64=base64.b64encode(r.payload).decode("ascii"),
            payload_text=r.payload.decode("utf-8", errors="replace")[:2000],
            payload_bytes=len(r.payload),
        )


class StatsOut(_Out):
    messages: int
    observations: int
    events: int
    dead_letters: int
    open_alerts: int
    alerts_total: int
    sites_online: int

    @classmethod
    def of(cls, s: Stats) -> StatsOut:
        return cls.model_validate(s)


class SiteOut(_Out):
    """A home hub or kiosk as its agent last reported (retained status, MQTT last will)."""

    site: str
    state: str
    at: datetime
    agent_version: str
    received_at: datetime
    outbox_pending: int | None = Field(
        None,
        description="messages waiting in the hub's outbox at its last status (sent every "
        "minute while online); none after its last will",
    )

    @classmethod
    def of(cls, s: SiteRecord) -> SiteOut:
        return cls.model_validate(s)


class ThresholdOut(_Out):
    subject_ref: str
    condition: str
    title: str
    comparator: str
    value: float
    unit: str
    priority: PriorityName
    hysteresis: float
    source: str
    #: whose value applies: the patient's own, the patient's care team's, or the default
    scope: Literal["patient", "team", "default"]
    default_value: float
    default_source: str
    overridden: bool
    set_by: str | None
    set_at: datetime | None

    @classmethod
    def of(cls, v: ThresholdView) -> ThresholdOut:
        return cls.model_validate(v)


class ThresholdIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: float = Field(allow_inf_nan=False)
    unit: str = Field(min_length=1, max_length=32)


class AssignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: staff id; null unassigns
    assignee: str | None = Field(min_length=1, max_length=64)
    note: str | None = Field(default=None, max_length=2000)


class SnoozeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    minutes: float = Field(gt=0, allow_inf_nan=False)
    note: str | None = Field(default=None, max_length=2000)


class AlertChangeOut(_Out):
    """One queue change on the SSE stream: the audit event and the alert as it is now."""

    event: AlertEventOut
    alert: AlertOut


# -- the care directory ---------------------------------------------------------------------


class TeamIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)


class TeamOut(_Out):
    id: str
    name: str
    created_at: datetime


class StaffIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    role: Literal["clinician", "home_care", "admin"]
    team_ids: list[str] = Field(default_factory=list, max_length=100)
    active: bool = True
    #: make a new API token (shown once in the response); a new member always gets one
    issue_token: bool = False


class StaffOut(_Out):
    id: str
    name: str
    role: str
    active: bool
    created_at: datetime
    team_ids: list[str]
    has_token: bool


class StaffIssuedOut(StaffOut):
    #: the new API token, shown this once (only its SHA-256 is stored); null if none was issued
    token: str | None


class PatientIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    team_id: str = Field(min_length=1, max_length=64)
    time_zone: str = Field(default="Europe/Helsinki", min_length=1, max_length=64)


class PatientOut(_Out):
    subject_ref: str
    team_id: str
    time_zone: str
    updated_at: datetime


class DispenserClientIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    home_care_team_id: str = Field(min_length=1, max_length=64)
    missed_dose_window_min: int = Field(default=60)
    dose_times: list[str] = Field(default_factory=list)


class DispenserClientOut(_Out):
    subject_ref: str
    home_care_team_id: str
    missed_dose_window_min: int
    dose_times: list[str]
    updated_at: datetime


class AuditOut(_Out):
    id: int
    at: datetime
    actor: str
    action: str
    object_kind: str
    object_id: str
    detail: dict[str, Any]


class TeamThresholdIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: float = Field(allow_inf_nan=False)
    unit: str = Field(min_length=1, max_length=32)


class TeamThresholdOut(_Out):
    team_id: str
    condition: str
    value: float
    unit: str
    set_by: str
    set_at: datetime


class PersonalBestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: L/min
    value: float = Field(allow_inf_nan=False)


class ParameterOut(_Out):
    subject_ref: str
    name: str
    value: float
    unit: str
    set_by: str
    set_at: datetime


class PefDiaryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    first_day: date
    last_day: date


class PefDiaryOut(_Out):
    subject_ref: str
    first_day: date
    last_day: date
    set_by: str
    set_at: datetime


class DeviceSubjectOut(_Out):
    device_key: str
    subject_ref: str
    site: str
    device_id: str
    first_seen: datetime
    last_seen: datetime
    firmware: str | None = Field(None, description="firmware its newest message named")
    transport: str | None = Field(None, description="how the hub reads it: ble, serial, ...")
    battery_pct: int | None = Field(
        None, description="last Battery Level the device reported (percent)"
    )
    battery_at: datetime | None = None
    rssi_dbm: int | None = Field(None, description="signal strength the hub last saw (dBm)")
    rssi_at: datetime | None = None
    link: str | None = Field(None, description="the hub's link to it: connected / disconnected")
    link_at: datetime | None = None
    clock_offset_s: float | None = Field(
        None, description="the device clock minus the hub clock when last read (seconds)"
    )
    clock_at: datetime | None = None


class UnroutedOut(_Out):
    subject_ref: str
    devices: int
    first_seen: datetime
    last_seen: datetime
    active_alerts: int


class ErrorOut(BaseModel):
    detail: str


__all__ = ["AwareDatetime"]
