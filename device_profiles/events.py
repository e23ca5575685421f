"""Device events: things a device reports that are not a measured quantity.

A medication dispenser says a dose fell due, was taken, was missed; a device says its battery is
low or it jammed. These travel beside observations through the same outbox and wire contract
(``remon.event/1``), keyed by the same kind of content-derived id so a re-read event is
recognised. Event kinds for dispensers are the union listed in ``../shared/docs/DOMAIN.md`` §4
(Evondos, Pivotell, Tynetec, MedSmart); a few device-health kinds are shared by every device.

Like :class:`~device_profiles.observation.Observation`, a :class:`DeviceEvent` is validated when
built: times are aware UTC, details are small flat values, and nothing is guessed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from device_profiles.observation import ObservationError, Provenance, QualityFlag

MAX_DETAILS: Final = 16
MAX_DETAIL_TEXT: Final = 128


class EventKind(StrEnum):
    """What happened. Dispenser kinds: DOMAIN.md §4; the rest: device health."""

    DOSE_DUE = "dose_due"
    DOSE_DISPENSED = "dose_dispensed"  # ready to be taken
    DOSE_TAKEN = "dose_taken"
    DOSE_TAKEN_LATE = "dose_taken_late"
    DOSE_MISSED = "dose_missed"  # window expired, dose locked away
    HELP_REQUEST = "help_request"
    LOW_STOCK = "low_stock"  # details: doses_left
    ROLL_EMPTY = "roll_empty"  # refill needed
    JAM = "jam"  # jam / device error
    TAMPER = "tamper"  # tampering, upside down
    POWER_LOST = "power_lost"  # running on battery
    POWER_RESTORED = "power_restored"
    LOW_BATTERY = "low_battery"
    OFFLINE = "offline"
    ONLINE = "online"


#: Kinds that concern one dose: they carry its dose id and scheduled time.
DOSE_KINDS: Final[frozenset[EventKind]] = frozenset(
    {
        EventKind.DOSE_DUE,
        EventKind.DOSE_DISPENSED,
        EventKind.DOSE_TAKEN,
        EventKind.DOSE_TAKEN_LATE,
        EventKind.DOSE_MISSED,
    }
)

DetailValue = str | int | float | bool


def _check_text(name: str, text: str) -> None:
    """Text must cross the wire as UTF-8 JSON: no NUL, no unpaired surrogate."""
    if "\x00" in text or any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        raise ObservationError(f"{name} has a NUL or an unpaired surrogate")


def _aware_utc(name: str, dt: datetime | None) -> None:
    if dt is not None and (dt.tzinfo is None or dt.utcoffset() != timedelta(0)):
        raise ObservationError(f"{name} must be an aware UTC datetime")


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceEvent:
    kind: EventKind
    event_time: datetime  # when it happened (UTC, corrected by the measured clock offset)
    record_key: str  # device-scoped id (e.g. "evt:1042"); same event, same key
    provenance: Provenance
    dose_id: str | None = None
    scheduled_time: datetime | None = None  # the dose's scheduled time (UTC)
    device_time: str | None = None  # the device's own clock reading, as it said it
    clock_offset_s: float | None = None  # device clock minus hub clock, seconds
    details: Mapping[str, DetailValue] = field(default_factory=lambda: MappingProxyType({}))
    quality: frozenset[QualityFlag] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if not isinstance(self.kind, EventKind):
            raise ObservationError(f"unknown event kind {self.kind!r}")
        _aware_utc("event_time", self.event_time)
        _aware_utc("scheduled_time", self.scheduled_time)
        if not self.record_key or len(self.record_key) > 128:
            raise ObservationError("record_key must be 1..128 characters")
        if self.kind in DOSE_KINDS and not self.dose_id:
            raise ObservationError(f"a {self.kind.value} event needs its dose_id")
        if self.dose_id is not None:
            if not 1 <= len(self.dose_id) <= 64:
                raise ObservationError("dose_id must be 1..64 characters")
            _check_text("dose_id", self.dose_id)
        _check_text("record_key", self.record_key)
        if self.clock_offset_s is not None and not math.isfinite(self.clock_offset_s):
            raise ObservationError("clock_offset_s must be finite")
        if len(self.details) > MAX_DETAILS:
            raise ObservationError(f"at most {MAX_DETAILS} details, got {len(self.details)}")
        for k, v in self.details.items():
            if not isinstance(k, str) or not 1 <= len(k) <= 32:
                raise ObservationError(f"detail key {k!r} must be 1..32 characters")
            if isinstance(v, str):
                if len(v) > MAX_DETAIL_TEXT:
                    raise ObservationError(f"detail {k!r} longer than {MAX_DETAIL_TEXT}")
                _check_text(f"detail {k!r}", v)
            elif isinstance(v, float):
                if not math.isfinite(v):
                    raise ObservationError(f"detail {k!r} must be finite")
            elif not isinstance(v, int | bool):
                raise ObservationError(f"detail {k!r} has unsupported type {type(v).__name__}")
        # freeze a caller's dict so the event stays immutable
        object.__setattr__(self, "details", MappingProxyType(dict(self.details)))
