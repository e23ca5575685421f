"""Observation and device identity: the value types every layer agrees on.

An :class:`Observation` is one measured quantity (or the device's statement that it has none)
for one measure, at one instant, from one bound device. It is immutable and validated when
built: a value is finite and in the measure's canonical UCUM unit, times are aware UTC, and an
absent value always carries a reason (IEEE 11073 NaN/NRes/±INF, device error) instead of a
made-up number. The device's own time and the measured clock offset are kept beside the UTC
effective time (ARCHITECTURE.md, "Time, identity and binding").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Final, Literal

from device_profiles.codes import MEASURES

#: A device clock further than this from the hub's clock is flagged (PROTOCOLS.md / issue 3).
CLOCK_OFFSET_FLAG_LIMIT: Final = timedelta(minutes=15)

Comparator = Literal["<", "<=", ">", ">="]
COMPARATORS: Final[frozenset[str]] = frozenset({"<", "<=", ">", ">="})


class ObservationError(ValueError):
    """An observation was built with inconsistent or impossible content."""


class AbsentReason(StrEnum):
    """Why an observation has no value. Aligned with FHIR ``data-absent-reason`` codes."""

    NOT_A_NUMBER = "not-a-number"  # IEEE 11073 NaN
    NOT_AT_THIS_RESOLUTION = "not-at-this-resolution"  # IEEE 11073 NRes
    POSITIVE_INFINITY = "positive-infinity"  # IEEE 11073 +INF
    NEGATIVE_INFINITY = "negative-infinity"  # IEEE 11073 -INF
    ERROR = "error"  # the device reported a measurement error
    UNKNOWN = "unknown"


class QualityFlag(StrEnum):
    """Facts about how a value was obtained that a reader of it must know."""

    SIMULATED = "simulated"  # produced by a simulator, never patient data
    CLOCK_OFFSET = "clock-offset"  # device clock off by more than CLOCK_OFFSET_FLAG_LIMIT
    DEVICE_TIME_ONLY = "device-time-only"  # no offset could be measured; time as the device said
    BELOW_RANGE = "below-range"  # device reported LO: value is the range limit, comparator '<'
    ABOVE_RANGE = "above-range"  # device reported HI: value is the range limit, comparator '>'
    DEVICE_WARNING = "device-warning"  # a status/annunciation bit was set with the reading
    BATTERY_LOW = "battery-low"
    SENSOR_MALFUNCTION = "sensor-malfunction"
    #: The device marked the reading unavailable, questionable or invalid (e.g. PLX measurement
    #: status bits 13-15): stored and shown, never a reason for a clinical alert.
    QUESTIONABLE = "questionable"
    #: Computed at the edge from other readings (a CGM trend or prediction), not measured.
    DERIVED = "derived"
    # PEF blow quality from the raw flow curve (edge_agent.pef_blow, DOMAIN.md §1): the value is
    # kept and sent; the flag tells the reader why the blow may understate the true PEF.
    SLOW_RISE = "slow-rise"  # time to peak >= 120 ms
    COUGH = "cough"  # a second peak after the first
    EARLY_STOP = "early-stop"  # the blow stopped abruptly while flow was still high
    HESITATION = "hesitation"  # a hesitant start: flow creeping up before the blow
    LARGE_BEV = "large-bev"  # back-extrapolated volume above max(0.150 L, 5 % of the volume)
    # CGM stream cleaning (edge_agent.cgm_stream, DOMAIN.md §2): suspicions, not facts.
    SENSOR_WARM_UP = "sensor-warm-up"  # inside the sensor's warm-up period after insertion
    IMPOSSIBLE_JUMP = "impossible-jump"  # faster change than physiology allows
    COMPRESSION_LOW = "compression-low"  # a fast drop into a low that looks like sensor pressure
    # Set by the cloud ingest on arrival (cloud_ingest.screening), never by a device: the reading
    # is stored and shown but raises, updates and clears no alert.
    FUTURE_TIME = "future-time"  # effective time later than its arrival by more than the limit
    IMPLAUSIBLE = "implausible"  # a value no human or device of this measure can produce


#: Flags only the cloud sets; a message that carries one is refused (a hub must not be able to
#: switch a reading's alerts off by claiming it implausible).
CLOUD_ONLY_FLAGS: Final[frozenset[QualityFlag]] = frozenset(
    {QualityFlag.FUTURE_TIME, QualityFlag.IMPLAUSIBLE}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Provenance:
    """Where a value came from: the device's original value/unit and the decoder that read it."""

    source: str  # e.g. "sim:glucose-meter", "ble:0x2A18", "serial:onetouch-ultra2"
    original_value: float | None = None
    original_unit: str | None = None
    raw: str | None = None  # hex of the raw record, when the transport has one

    def __post_init__(self) -> None:
        if not self.source:
            raise ObservationError("provenance.source must not be empty")
        if self.original_value is not None and not math.isfinite(self.original_value):
            raise ObservationError("provenance.original_value must be finite")


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceIdentity:
    """Who measured: enough to tell two devices of the same model apart, and no personal data."""

    manufacturer: str
    model: str
    serial: str
    firmware: str | None = None
    transport: str = "sim"  # "ble", "serial", "sim"

    def __post_init__(self) -> None:
        for name in ("manufacturer", "model", "serial", "transport"):
            if not getattr(self, name):
                raise ObservationError(f"device identity field {name!r} must not be empty")

    @property
    def key(self) -> str:
        """A stable text key for this physical device (used in content-derived ids)."""
        return f"{self.manufacturer}|{self.model}|{self.serial}"


def utc(dt: datetime) -> datetime:
    """Return ``dt`` as an aware UTC datetime; naive datetimes are refused, not guessed."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ObservationError(f"naive datetime {dt.isoformat()} where an aware one is required")
    return dt.astimezone(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class Observation:
    measure: str
    unit: str
    effective_time: datetime
    record_key: str  # device-scoped id of the reading (e.g. "seq:42"); same reading, same key
    provenance: Provenance
    value: float | None = None
    comparator: Comparator | None = None
    absent_reason: AbsentReason | None = None
    device_time: str | None = None  # the device's own clock reading, ISO 8601 as it said it
    clock_offset_s: float | None = None  # device clock minus hub clock, seconds
    quality: frozenset[QualityFlag] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        m = MEASURES.get(self.measure)
        if m is None:
            raise ObservationError(f"unknown measure {self.measure!r}")
        if self.unit != m.unit:
            raise ObservationError(
                f"{self.measure} must be in {m.unit!r} (converted at the edge), got {self.unit!r}"
            )
        if (self.value is None) == (self.absent_reason is None):
            raise ObservationError("exactly one of value and absent_reason must be given")
        if self.value is not None:
            if isinstance(self.value, bool) or not isinstance(self.value, int | float):
                raise ObservationError(f"value must be a number, got {type(self.value).__name__}")
            if not math.isfinite(self.value):
                raise ObservationError(
                    "value must be finite: carry NaN/INF as absent_reason, never as a number"
                )
        if self.comparator is not None:
            if self.comparator not in COMPARATORS:
                raise ObservationError(f"unknown comparator {self.comparator!r}")
            if self.value is None:
                raise ObservationError("a comparator needs a value (the range limit)")
        if self.effective_time.tzinfo is None or self.effective_time.utcoffset() != timedelta(0):
            raise ObservationError("effective_time must be an aware UTC datetime")
        if not self.record_key or len(self.record_key) > 128:
            raise ObservationError("record_key must be 1..128 characters")
        if self.clock_offset_s is not None and not math.isfinite(self.clock_offset_s):
            raise ObservationError("clock_offset_s must be finite")


def clock_quality(offset_s: float | None) -> frozenset[QualityFlag]:
    """Quality flags implied by a measured device clock offset."""
    if offset_s is None:
        return frozenset({QualityFlag.DEVICE_TIME_ONLY})
    if abs(offset_s) > CLOCK_OFFSET_FLAG_LIMIT.total_seconds():
        return frozenset({QualityFlag.CLOCK_OFFSET})
    return frozenset()
