"""Device health rules: quality flags on newly stored readings -> alert actions. Pure.

The readings a home device sends say how the device is doing: a ``battery-low`` flag, a
``sensor-malfunction`` flag or a measurement that came back with the absent reason ``error``,
and a ``clock-offset`` flag that the edge adds when the device clock is off by more than
:data:`~device_profiles.observation.CLOCK_OFFSET_FLAG_LIMIT` (15 min, see
:func:`device_profiles.observation.clock_quality`). These rules turn them into alerts with the
same machinery as the dispenser and silence rules
(:class:`~cloud_ingest.rules.dispenser.FindingBook`):

- Rules are data (:class:`DeviceHealthRule`): what raises a condition, what an all-clear reading
  must also be free of, an IEC 60601-1-8 priority with the reason for it (DOMAIN.md §5) and the
  audience. :data:`DEFAULT_DEVICE_HEALTH_RULES` is the default set.
- One open alert per subject + condition: all of a subject's home devices share it, and each
  flagged reading is a piece of evidence (a blood pressure measurement gives two or three
  readings, so it counts two or three times). Readings are processed in effective-time order
  (ties by observation id); the same observation id twice counts once, and the same id with
  other content is refused.
- All-clear: a later reading *from the device of the latest evidence* that no longer shows the
  condition sets ``cleared_at``; a person still resolves the alert (``lifecycle.py``). A reading
  from another device says nothing about the faulty one. If two devices of one subject are
  faulty, the clean reading of one may mark the alert cleared, and the other's next flagged
  reading marks it present again (evidence at or after ``cleared_at`` un-clears).
- A late reading older than the latest evidence adds to the count but neither clears the
  alert nor replaces its latest evidence; the final state does not depend on arrival order.
- Readings flagged ``derived`` (a CGM trend or prediction computed at the edge) are ignored:
  they were computed, not measured, and copy their flags from the readings they come from.
- The device of the latest evidence must survive a round trip through the store, which keeps
  only the :class:`~cloud_ingest.rules.dispenser.FindingEvidence` fields: it is written into the
  evidence ``kind`` as ``<cause>@<device id>`` (:func:`evidence_kind`, :func:`evidence_device`).

No wording states a diagnosis; the alerts are about devices, not the patient.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from cloud_ingest.rules.dispenser import (
    Audience,
    FindingAction,
    FindingBook,
    FindingEvidence,
    OpenFinding,
    RuleInputError,
    check_rule_facts,
    require_text,
    require_utc,
    unique_by_id,
    utc_text,
)
from cloud_ingest.rules.thresholds import Priority, RuleError
from device_profiles.codes import MEASURES
from device_profiles.observation import CLOCK_OFFSET_FLAG_LIMIT, AbsentReason, QualityFlag

DEVICE_BATTERY_LOW: Final = "device-battery-low"
DEVICE_SENSOR_FAULT: Final = "device-sensor-fault"
DEVICE_CLOCK_FAULT: Final = "device-clock-fault"

#: The edge's clock limit in whole minutes, for the rule's words (15 min).
CLOCK_LIMIT_MIN: Final = int(CLOCK_OFFSET_FLAG_LIMIT.total_seconds() // 60)

_KNOWN_FLAGS: Final[frozenset[str]] = frozenset(f.value for f in QualityFlag)
_KNOWN_REASONS: Final[frozenset[str]] = frozenset(r.value for r in AbsentReason)
#: Separates the cause from the device id in an evidence kind; no flag or reason contains it.
_DEVICE_SEP: Final = "@"


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceReading:
    """What the device health rules need of one stored reading.

    ``quality`` holds the reading's quality flags as their string values
    (:class:`~device_profiles.observation.QualityFlag`); ``absent_reason`` is the
    :class:`~device_profiles.observation.AbsentReason` value of a reading without a value.
    """

    obs_id: str
    subject_ref: str
    device_id: str
    measure: str
    effective_time: datetime
    quality: frozenset[str] = frozenset()
    absent_reason: str | None = None
    simulated: bool = False

    def __post_init__(self) -> None:
        require_text("reading obs_id", self.obs_id)
        where = f"reading {self.obs_id}"
        require_text(f"{where}: subject_ref", self.subject_ref)
        require_text(f"{where}: device_id", self.device_id)
        if self.measure not in MEASURES:
            raise RuleInputError(f"{where}: unknown measure {self.measure!r}")
        require_utc(f"{where}: effective_time", self.effective_time)
        if not isinstance(self.quality, frozenset):
            raise RuleInputError(f"{where}: quality must be a frozenset of flag values")
        unknown = sorted(str(f) for f in self.quality if f not in _KNOWN_FLAGS)
        if unknown:
            raise RuleInputError(f"{where}: unknown quality flags {unknown}")
        if self.absent_reason is not None and self.absent_reason not in _KNOWN_REASONS:
            raise RuleInputError(f"{where}: unknown absent_reason {self.absent_reason!r}")
        if not isinstance(self.simulated, bool):
            raise RuleInputError(f"{where}: simulated must be a bool")
        # keep plain strings, so a StrEnum member and its value make equal readings
        object.__setattr__(self, "quality", frozenset(str(f) for f in self.quality))

    @property
    def is_simulated(self) -> bool:
        """Simulated by the field or by the reading's own ``simulated`` flag."""
        return self.simulated or QualityFlag.SIMULATED.value in self.quality


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceHealthRule:
    """One device health condition as data.

    A reading raises the condition when it carries one of ``flags`` or has no value for one of
    ``absent_reasons``. A later reading from the same device clears it when it shows neither,
    carries none of ``unknown_with`` (flags that leave the condition undecided) and, when
    ``clear_needs_value``, has a value.
    """

    condition: str
    title: str  # what it means, in words care staff read (never a diagnosis)
    flags: frozenset[QualityFlag]
    absent_reasons: frozenset[AbsentReason]
    unknown_with: frozenset[QualityFlag]
    clear_needs_value: bool
    meaning: str  # what the flag or reason says about the device, with its figures
    priority: Priority
    audience: Audience
    source: str  # "remon default: <reason>" for the priority, with its facts' sources

    def __post_init__(self) -> None:
        check_rule_facts(self)
        if not self.flags and not self.absent_reasons:
            raise RuleError(f"{self.condition}: no flag or absent reason raises it")
        for f in self.flags | self.unknown_with:
            if not isinstance(f, QualityFlag):
                raise RuleError(f"{self.condition}: unknown quality flag {f!r}")
        for r in self.absent_reasons:
            if not isinstance(r, AbsentReason):
                raise RuleError(f"{self.condition}: unknown absent reason {r!r}")
        both = self.flags & self.unknown_with
        if both:
            raise RuleError(
                f"{self.condition}: {sorted(f.value for f in both)} both raise it and leave "
                "it undecided"
            )
        if QualityFlag.DERIVED in self.flags:
            raise RuleError(f"{self.condition}: derived readings are never evidence")

    @property
    def criterion(self) -> str:
        parts = [f"the {f.value} quality flag" for f in sorted(self.flags)]
        parts += [f"no value with absent reason {r.value}" for r in sorted(self.absent_reasons)]
        return (
            f"a reading from one of the subject's home devices has {' or '.join(parts)} "
            f"({self.meaning})"
        )

    @property
    def all_clear(self) -> str:
        shows = [f.value for f in sorted(self.flags | self.unknown_with)]
        text = f"a later reading from the same device without the {' or '.join(shows)} flag"
        if self.clear_needs_value:
            text += " and with a value"
        return text + "; a person still resolves it"

    def cause(self, r: DeviceReading) -> str | None:
        """What in ``r`` raises this condition (a flag or reason value), or None."""
        for f in sorted(self.flags):
            if f.value in r.quality:
                return f.value
        if r.absent_reason is not None and r.absent_reason in self.absent_reasons:
            return f"absent-{r.absent_reason}"
        return None

    def clears(self, r: DeviceReading) -> bool:
        """``r`` shows the condition is gone (for ``r``'s device)."""
        if self.cause(r) is not None:
            return False
        if any(f.value in r.quality for f in self.unknown_with):
            return False
        return not (self.clear_needs_value and r.absent_reason is not None)


_CARE_TEAM: Final = (
    "Audience: the patient's care team (clinicians), who look after the patient's home devices"
)

#: The default device health rules. Priorities are IEC 60601-1-8 (DOMAIN.md §5): high =
#: immediate response, medium = prompt, low = awareness; DOMAIN.md gives none for device
#: faults, so each source says why (remon default).
DEFAULT_DEVICE_HEALTH_RULES: Final[tuple[DeviceHealthRule, ...]] = (
    DeviceHealthRule(
        condition=DEVICE_BATTERY_LOW,
        title="Home device battery low: replace or charge it",
        flags=frozenset({QualityFlag.BATTERY_LOW}),
        absent_reasons=frozenset(),
        unknown_with=frozenset(),
        clear_needs_value=False,
        meaning="the device reported its battery low with the reading",
        priority=Priority.LOW,
        audience="clinician",
        source="remon default, low: the device still measures and its readings are valid, so "
        "awareness, a new battery at the next contact (IEC 60601-1-8 low, DOMAIN.md §5); a "
        "device that then stops shows up as missing data. " + _CARE_TEAM,
    ),
    DeviceHealthRule(
        condition=DEVICE_SENSOR_FAULT,
        title="Home device reports a sensor fault",
        flags=frozenset({QualityFlag.SENSOR_MALFUNCTION}),
        absent_reasons=frozenset({AbsentReason.ERROR}),
        # the device marking its own reading invalid is no sign that the sensor works again
        unknown_with=frozenset({QualityFlag.QUESTIONABLE}),
        clear_needs_value=True,
        meaning="the device reported a sensor malfunction or a measurement error",
        priority=Priority.MEDIUM,
        audience="clinician",
        source="remon default, medium: the device's readings are missing or unreliable, so a "
        "value that should raise a clinical alert may never arrive; prompt check or "
        "replacement (IEC 60601-1-8 medium, DOMAIN.md §5). " + _CARE_TEAM,
    ),
    DeviceHealthRule(
        condition=DEVICE_CLOCK_FAULT,
        title="Home device clock is wrong",
        flags=frozenset({QualityFlag.CLOCK_OFFSET}),
        absent_reasons=frozenset(),
        # without a measured offset the clock may still be wrong: that is no all-clear
        unknown_with=frozenset({QualityFlag.DEVICE_TIME_ONLY}),
        clear_needs_value=False,
        meaning=f"the device clock differed from the hub's clock by more than "
        f"{CLOCK_LIMIT_MIN} min, the limit at which the edge flags it, "
        "device_profiles.observation.CLOCK_OFFSET_FLAG_LIMIT",
        priority=Priority.LOW,
        audience="clinician",
        source="remon default, low: the edge measured the offset and stored the corrected "
        "time, so the readings stay usable; awareness, set the clock at the next contact "
        "(the device's own display and records made before a clock change can be off; "
        "IEC 60601-1-8 low, DOMAIN.md §5). " + _CARE_TEAM,
    ),
)


def rule_index(rules: Iterable[DeviceHealthRule]) -> dict[str, DeviceHealthRule]:
    """Rules by condition; refuses two definitions of one condition."""
    out: dict[str, DeviceHealthRule] = {}
    for r in rules:
        if not isinstance(r, DeviceHealthRule):
            raise RuleError(f"rules holds {type(r).__name__}, not DeviceHealthRule")
        if r.condition in out:
            raise RuleError(f"condition {r.condition!r} is defined twice")
        out[r.condition] = r
    return out


def evidence_kind(cause: str, device_id: str) -> str:
    """The evidence kind ``<cause>@<device id>``: the store keeps the device with the cause."""
    return f"{cause}{_DEVICE_SEP}{device_id}"


def evidence_device(ev: FindingEvidence) -> str:
    """The device id written into an evidence kind by :func:`evidence_kind`."""
    cause, sep, device = ev.kind.partition(_DEVICE_SEP)
    if not sep or not cause or not device:
        raise RuleInputError(
            f"evidence {ev.event_id}: kind {ev.kind!r} names no device (expected cause@device)"
        )
    return device


def describe_reading(r: DeviceReading) -> str:
    """One reading in words: measure, UTC time, device, observation id."""
    m = MEASURES[r.measure]
    text = f"{m.display} reading at {utc_text(r.effective_time)} from device {r.device_id}"
    if r.is_simulated:
        text += " (simulated)"
    return f"{text} (observation {r.obs_id})"


def _cause_words(cause: str) -> str:
    if cause.startswith("absent-"):
        return f"no value: absent reason {cause.removeprefix('absent-')}"
    return f"flag {cause}"


def evidence_of(r: DeviceReading, cause: str) -> FindingEvidence:
    return FindingEvidence(
        event_id=r.obs_id,
        kind=evidence_kind(cause, r.device_id),
        time=r.effective_time,
        summary=f"{describe_reading(r)}, {_cause_words(cause)}",
    )


def unique_readings(readings: Iterable[DeviceReading]) -> list[DeviceReading]:
    """The readings in processing order (time, then id), each id once.

    The same id twice is the same reading delivered twice and counts once; the same id with
    other content is a fault upstream and is refused, not guessed at.
    """
    by_id = unique_by_id(
        readings, DeviceReading, lambda r: r.obs_id, holder="readings", label="reading"
    )
    return sorted(by_id.values(), key=lambda r: (r.effective_time, r.obs_id))


def evaluate_device_health(
    readings: Iterable[DeviceReading],
    *,
    open_alerts: Iterable[OpenFinding],
    now: datetime,
    rules: Sequence[DeviceHealthRule] = DEFAULT_DEVICE_HEALTH_RULES,
) -> list[FindingAction]:
    """Device health actions for newly stored ``readings`` given the active alerts.

    ``now`` stamps the audit events; it is passed in, never read from a clock. Returns one
    action per alert raised or changed, in the order they were first touched.
    """
    index = rule_index(rules)
    book = FindingBook(open_alerts, rules=index, now=now)
    for r in unique_readings(readings):
        if QualityFlag.DERIVED.value in r.quality:
            continue  # computed at the edge, not measured: says nothing about the device
        for rule in index.values():
            cause = rule.cause(r)
            if cause is not None:
                book.trigger(
                    r.subject_ref,
                    rule.condition,
                    evidence_of(r, cause),
                    simulated=r.is_simulated,
                    note=f"{describe_reading(r)}: {_cause_words(cause)}",
                )
                continue
            cur = book.current(r.subject_ref, rule.condition)
            if cur is None or not rule.clears(r) or evidence_device(cur.last) != r.device_id:
                continue
            book.clear(
                r.subject_ref,
                rule.condition,
                at=r.effective_time,
                by=r.obs_id,
                note=f"all-clear: {describe_reading(r)} no longer shows it",
            )
    return book.actions()
