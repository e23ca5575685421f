"""Alert thresholds as data: each default keeps its value, unit, priority and source together.

Source of every figure: ../shared/docs/DOMAIN.md (§2 glucose, §3 vitals, §5 alarms). Priorities
follow IEC 60601-1-8 (high: immediate response; medium: prompt; low: awareness). Hysteresis
values are remon defaults chosen to stop an alert from flapping on measurement noise (DOMAIN.md
§5 "hysteresis before clearing"); they are not from a clinical source and are configurable.

Overlapping conditions on one measure form a *family* (e.g. ``glucose-low``: level 1, CGM urgent
low, level 2). A reading triggers only the most severe condition of a family it meets (highest
``rank``): a 2.8 mmol/L reading raises (or updates) the level 2 alert, not also a level 1 alert.
Each condition keeps its own alert, so a patient who first reads 3.5 and then 2.8 has an open
level 1 alert (medium) and a separate level 2 alert (high): the more urgent state is never hidden
inside an older, lower-priority alert, and the care team resolves each. This mirrors CGM systems,
where "low" and "urgent low" are distinct alarms.

Qualifiers ("for N minutes", "N in a row"). A threshold may ask for the condition to persist
before it raises: ``confirm_count`` readings in a row and/or ``confirm_for`` of continuous time
(readings no more than ``max_gap`` apart); see :class:`Threshold`. The qualifiers gate *raising*
only. An alert that is already open (acknowledged, or cleared and awaiting review) is updated by
every single triggering reading and un-cleared by one, exactly as without qualifiers: the care
team has already been told, and waiting for a new run before showing a relapse would hide it.
Clearing keeps its hysteresis, and the family ranking is unchanged: a reading triggers the most
severe condition of a family it meets *and may trigger* (an unconfirmed qualified condition does
not trigger, so it never stops a less severe immediate one, and an immediate more severe one,
e.g. level 2, is raised at once while the qualified level 1 is still accumulating).

Per-patient overrides replace a default's value (same unit, same comparator) and keep its
qualifiers; see :func:`apply_override`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final, Literal

from device_profiles.clinical import (
    CGM_STALE_WARN_MIN,
    CGM_TREND_BANDS_MG_DL_MIN,
    CGM_URGENT_LOW_MMOL_L,
    HYPO_EVENT_MIN,
)
from device_profiles.units import GLUCOSE_MG_DL_PER_MMOL_L

ThresholdComparator = Literal["<", "<=", ">", ">="]


class Priority(StrEnum):
    """IEC 60601-1-8 alarm priorities (DOMAIN.md §5)."""

    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


PRIORITY_ORDER: Final[Mapping[Priority, int]] = {
    Priority.LOW: 1,
    Priority.MEDIUM: 2,
    Priority.HIGH: 3,
}


class RuleError(ValueError):
    """A threshold or override that the rules cannot use (unknown condition, wrong unit...)."""


class UnknownConditionError(RuleError):
    """No threshold is defined for this condition key."""


#: The longest silence between two readings that still counts as "continuously" for a
#: ``confirm_for`` qualifier: 10 min, two 5-min CGM sampling intervals, so one missed or
#: unreadable transmission does not restart the count while a longer silence does. It stays
#: below the 15-min stale-data warning (DOMAIN.md §2, ``CGM_STALE_WARN_MIN``): a gap the
#: stale-data rule warns about is never called continuous. remon default, configurable; the
#: 5-min interval is the usual CGM sampling interval, not a DOMAIN.md figure (UNVERIFIED).
DEFAULT_MAX_GAP: Final = timedelta(minutes=10)
assert timedelta(minutes=CGM_STALE_WARN_MIN.value) > DEFAULT_MAX_GAP


def format_duration(d: timedelta) -> str:
    """A duration as care reads it: "15 min", "14 min 59 s", "45 s", "2 h 5 min"."""
    total = round(d.total_seconds())
    sign = "-" if total < 0 else ""
    hours, rest = divmod(abs(total), 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{hours} h"] if hours else []
    if minutes:
        parts.append(f"{minutes} min")
    if seconds or not parts:
        parts.append(f"{seconds} s")
    return sign + " ".join(parts)


@dataclass(frozen=True, slots=True, kw_only=True)
class Threshold:
    condition: str  # stable key: alerts and per-patient overrides refer to it
    title: str  # what the condition means, in words a care team reads (never a diagnosis)
    measures: frozenset[str]  # device_profiles.codes measure keys it applies to
    comparator: ThresholdComparator
    value: float
    unit: str  # UCUM, the measures' canonical unit
    priority: Priority
    hysteresis: float  # a reading must be this far back past the value to clear the alert
    family: str  # conditions of one family overlap; a reading triggers the most severe only
    rank: int  # severity inside the family (higher = more severe)
    source: str  # where the value comes from (and the qualifiers, when set)
    # "N in a row": a reading raises only when it and the confirm_count - 1 readings of the same
    # subject and measure just before it (by effective time) all decisively meet the condition.
    # An absent or questionable reading (or one in another unit) between them breaks the run.
    confirm_count: int = 1
    # "for N minutes": a reading raises only when the run of meeting readings that ends at it
    # began at least confirm_for before it, with no two consecutive readings of the run more
    # than max_gap apart (a longer silence breaks the run: nobody knows what happened in it).
    # With both qualifiers set, one run must satisfy both. max_gap only matters for confirm_for:
    # "N in a row" counts readings, however far apart (a daily spot check may confirm itself).
    confirm_for: timedelta = timedelta(0)
    max_gap: timedelta = DEFAULT_MAX_GAP

    def __post_init__(self) -> None:
        if not math.isfinite(self.value) or not math.isfinite(self.hysteresis):
            raise RuleError(f"{self.condition}: value and hysteresis must be finite")
        if self.hysteresis < 0:
            raise RuleError(f"{self.condition}: hysteresis must not be negative")
        if self.comparator not in ("<", "<=", ">", ">="):
            raise RuleError(f"{self.condition}: unknown comparator {self.comparator!r}")
        if (
            isinstance(self.confirm_count, bool)
            or not isinstance(self.confirm_count, int)
            or self.confirm_count < 1
        ):
            raise RuleError(
                f"{self.condition}: confirm_count (readings in a row) must be a whole number "
                f">= 1, got {self.confirm_count!r}"
            )
        if not isinstance(self.confirm_for, timedelta) or self.confirm_for < timedelta(0):
            raise RuleError(
                f"{self.condition}: confirm_for (how long the condition must hold) must be a "
                f"timedelta >= 0, got {self.confirm_for!r}"
            )
        if not isinstance(self.max_gap, timedelta) or self.max_gap <= timedelta(0):
            raise RuleError(
                f"{self.condition}: max_gap (the longest gap between readings of a run) must be "
                f"a timedelta > 0, got {self.max_gap!r}"
            )

    @property
    def is_low(self) -> bool:
        return self.comparator in ("<", "<=")

    @property
    def is_qualified(self) -> bool:
        """Raising waits for a run of readings (see ``confirm_count`` and ``confirm_for``)."""
        return self.confirm_count > 1 or self.confirm_for > timedelta(0)

    def describe(self) -> str:
        return f"{self.comparator} {_fmt(self.value)} {self.unit}"

    def describe_qualifier(self) -> str:
        """How long the condition must hold before it raises, in words ("" when immediate)."""
        parts: list[str] = []
        if self.confirm_count > 1:
            parts.append(f"for {self.confirm_count} readings in a row")
        if self.confirm_for > timedelta(0):
            parts.append(
                f"continuously for at least {format_duration(self.confirm_for)} (readings no "
                f"more than {format_duration(self.max_gap)} apart)"
            )
        return " and ".join(parts)


@dataclass(frozen=True, slots=True, kw_only=True)
class ThresholdOverride:
    """A clinician's patient-specific value for one condition."""

    subject_ref: str
    condition: str
    value: float
    unit: str
    set_by: str
    set_at: datetime


def _fmt(v: float) -> str:
    return f"{v:g}"


_GLUCOSE: Final = frozenset({"glucose.capillary", "glucose.cgm"})
_PULSE: Final = frozenset({"pulse.cuff", "pulse.oximeter"})
_HYST_NOTE: Final = "hysteresis: remon default, configurable"
#: The double-arrow edge of the trend bands (3 mg/dL/min, DOMAIN.md §2), as a fall in mmol/L/min
#: at the resolution trends are compared in (rules.engine.DECIMALS_BY_UNIT): -0.167.
_FALL_FAST_MMOL_L_MIN: Final = -round(CGM_TREND_BANDS_MG_DL_MIN[2] / GLUCOSE_MG_DL_PER_MMOL_L, 3)

DEFAULT_THRESHOLDS: Final[tuple[Threshold, ...]] = (
    Threshold(
        condition="glucose-low-l2",
        title="Glucose below the level 2 low threshold",
        measures=_GLUCOSE,
        comparator="<",
        value=3.0,
        unit="mmol/L",
        priority=Priority.HIGH,
        hysteresis=0.2,
        family="glucose-low",
        rank=3,
        source="DOMAIN.md §2: level 2 low glucose < 3.0 mmol/L (< 54 mg/dL), "
        "Battelino 2019 consensus; " + _HYST_NOTE,
    ),
    Threshold(
        condition="cgm-urgent-low",
        title="CGM glucose at or below the urgent low alarm level",
        measures=frozenset({"glucose.cgm"}),
        comparator="<=",
        value=3.1,
        unit="mmol/L",
        priority=Priority.HIGH,
        hysteresis=0.2,
        family="glucose-low",
        rank=2,
        source="DOMAIN.md §2: CGM urgent low alarm 3.1 mmol/L (55 mg/dL), "
        "not disableable; " + _HYST_NOTE,
    ),
    Threshold(
        condition="cgm-urgent-low-soon",
        title="CGM glucose predicted to reach the urgent low level within 20 minutes",
        measures=frozenset({"glucose.cgm.predicted"}),
        comparator="<=",
        value=CGM_URGENT_LOW_MMOL_L.value,  # the figure the edge's stream predicts against
        unit="mmol/L",
        priority=Priority.HIGH,
        hysteresis=0.3,
        family="glucose-low-soon",
        rank=1,
        source="DOMAIN.md §2: urgent-low-soon, predicted <= 3.1 mmol/L within 20 min "
        "(the edge's 15-min trend extrapolated, edge_agent.cgm_stream); " + _HYST_NOTE,
    ),
    Threshold(
        condition="cgm-falling-fast",
        title="CGM glucose falling fast (15-min trend)",
        measures=frozenset({"glucose.cgm.trend"}),
        comparator="<=",
        value=_FALL_FAST_MMOL_L_MIN,
        unit="mmol/L/min",
        priority=Priority.LOW,
        hysteresis=0.056,
        family="glucose-rate-fall",
        rank=1,
        source="DOMAIN.md §2: fall alerts at 2 or 3 mg/dL/min; 3 mg/dL/min (double arrow "
        "beyond it) = 0.167 mmol/L/min; the edge's 15-min least-squares trend "
        "(edge_agent.cgm_stream); hysteresis 1 mg/dL/min (0.056 mmol/L/min), remon default, "
        "configurable",
    ),
    # Level 1 low is split by source. A meter's capillary reading is a spot check: there is no
    # series to confirm it with (the next check may be hours away), so it raises at once. A CGM
    # reports every few minutes and DOMAIN.md §2 counts a low event only after >= 15
    # consecutive minutes, so the CGM level 1 low waits for that: one noisy or compression-low
    # sample does not page the care team. Level 2 and the CGM urgent low above stay immediate
    # (patient safety: they are the states that need an immediate response, DOMAIN.md §5 high
    # priority, and the urgent low is not disableable, §2); a level 2 reading raises level 2 at
    # once even while the CGM level 1 run is still accumulating.
    Threshold(
        condition="glucose-low-l1",
        title="Glucose below the level 1 low threshold",
        measures=frozenset({"glucose.capillary"}),
        comparator="<",
        value=3.9,
        unit="mmol/L",
        priority=Priority.MEDIUM,
        hysteresis=0.2,
        family="glucose-low",
        rank=1,
        source="DOMAIN.md §2: level 1 low glucose < 3.9 mmol/L (< 70 mg/dL), "
        "Battelino 2019 consensus; " + _HYST_NOTE,
    ),
    Threshold(
        condition="cgm-low-l1",
        title="CGM glucose below the level 1 low threshold for at least 15 minutes",
        measures=frozenset({"glucose.cgm"}),
        comparator="<",
        value=3.9,
        unit="mmol/L",
        priority=Priority.MEDIUM,
        hysteresis=0.2,
        family="glucose-low",
        rank=1,
        confirm_for=timedelta(minutes=HYPO_EVENT_MIN.value),
        source="DOMAIN.md §2: level 1 low glucose < 3.9 mmol/L (< 70 mg/dL), "
        "Battelino 2019 consensus; a low glucose event needs >= 15 consecutive minutes "
        f"(readings at most {format_duration(DEFAULT_MAX_GAP)} apart: remon default); "
        + _HYST_NOTE,
    ),
    Threshold(
        condition="glucose-high-l2",
        title="Glucose above the level 2 high threshold",
        measures=_GLUCOSE,
        comparator=">",
        value=13.9,
        unit="mmol/L",
        priority=Priority.MEDIUM,
        hysteresis=0.5,
        family="glucose-high",
        rank=1,
        source="DOMAIN.md §2: time above range level 2 > 13.9 mmol/L (> 250 mg/dL), "
        "Battelino 2019 consensus; " + _HYST_NOTE,
    ),
    Threshold(
        condition="bp-systolic-grade3",
        title="Systolic pressure in the ESH grade 3 range",
        measures=frozenset({"bp.systolic"}),
        comparator=">=",
        value=180.0,
        unit="mm[Hg]",
        priority=Priority.HIGH,
        hysteresis=5.0,
        family="bp-systolic-high",
        rank=1,
        source="DOMAIN.md §3: ESH 2023 grade 3 systolic >= 180 mmHg "
        "(urgent alert candidate); " + _HYST_NOTE,
    ),
    Threshold(
        condition="bp-diastolic-grade3",
        title="Diastolic pressure in the ESH grade 3 range",
        measures=frozenset({"bp.diastolic"}),
        comparator=">=",
        value=110.0,
        unit="mm[Hg]",
        priority=Priority.HIGH,
        hysteresis=5.0,
        family="bp-diastolic-high",
        rank=1,
        source="DOMAIN.md §3: ESH 2023 grade 3 diastolic >= 110 mmHg "
        "(urgent alert candidate); " + _HYST_NOTE,
    ),
    Threshold(
        condition="bp-systolic-low",
        title="Systolic pressure at or below the NEWS2 3-point band",
        measures=frozenset({"bp.systolic"}),
        comparator="<=",
        value=90.0,
        unit="mm[Hg]",
        priority=Priority.HIGH,
        hysteresis=5.0,
        family="bp-systolic-low",
        rank=1,
        source="DOMAIN.md §3: NEWS2 systolic <= 90 mmHg scores 3 points; " + _HYST_NOTE,
    ),
    Threshold(
        condition="pulse-low",
        title="Pulse rate at or below the NEWS2 3-point band",
        measures=_PULSE,
        comparator="<=",
        value=40.0,
        unit="/min",
        priority=Priority.HIGH,
        hysteresis=3.0,
        family="pulse-low",
        rank=1,
        source="DOMAIN.md §3: NEWS2 pulse <= 40 /min scores 3 points; " + _HYST_NOTE,
    ),
    Threshold(
        condition="pulse-high",
        title="Pulse rate at or above the NEWS2 3-point band",
        measures=_PULSE,
        comparator=">=",
        value=131.0,
        unit="/min",
        priority=Priority.HIGH,
        hysteresis=5.0,
        family="pulse-high",
        rank=1,
        source="DOMAIN.md §3: NEWS2 pulse >= 131 /min scores 3 points; " + _HYST_NOTE,
    ),
    Threshold(
        condition="spo2-low-news2-3",
        title="SpO2 at or below the NEWS2 3-point band",
        measures=frozenset({"spo2"}),
        comparator="<=",
        value=91.0,
        unit="%",
        priority=Priority.HIGH,
        hysteresis=1.0,
        family="spo2-low",
        rank=2,
        source="DOMAIN.md §3: NEWS2 SpO2 <= 91 % scores 3 points; " + _HYST_NOTE,
    ),
    Threshold(
        condition="spo2-low-news2-2",
        title="SpO2 in the NEWS2 2-point band (92-93 %)",
        measures=frozenset({"spo2"}),
        comparator="<=",
        value=93.0,
        unit="%",
        priority=Priority.MEDIUM,
        hysteresis=1.0,
        family="spo2-low",
        rank=1,
        source="DOMAIN.md §3: NEWS2 SpO2 92-93 % scores 2 points; " + _HYST_NOTE,
    ),
    Threshold(
        condition="temperature-low",
        title="Body temperature at or below the NEWS2 3-point band",
        measures=frozenset({"body.temperature"}),
        comparator="<=",
        value=35.0,
        unit="Cel",
        priority=Priority.HIGH,
        hysteresis=0.2,
        family="temperature-low",
        rank=1,
        source="DOMAIN.md §3: NEWS2 temperature <= 35.0 °C scores 3 points; " + _HYST_NOTE,
    ),
    Threshold(
        condition="temperature-high",
        title="Body temperature at or above the NEWS2 2-point band",
        measures=frozenset({"body.temperature"}),
        comparator=">=",
        value=39.1,
        unit="Cel",
        priority=Priority.MEDIUM,
        hysteresis=0.2,
        family="temperature-high",
        rank=1,
        source="DOMAIN.md §3: NEWS2 temperature >= 39.1 °C scores 2 points; " + _HYST_NOTE,
    ),
)


def threshold_index(thresholds: Iterable[Threshold]) -> dict[str, Threshold]:
    """Thresholds by condition key; refuses two definitions of one condition."""
    out: dict[str, Threshold] = {}
    for t in thresholds:
        if t.condition in out:
            raise RuleError(f"condition {t.condition!r} is defined twice")
        out[t.condition] = t
    return out


DEFAULTS_BY_CONDITION: Final[Mapping[str, Threshold]] = threshold_index(DEFAULT_THRESHOLDS)


#: How far a patient-specific value may move each threshold (inclusive, in the threshold's unit).
#: Source: remon safety bounds, UNVERIFIED clinically (DOMAIN.md marks such figures as
#: configurable placeholders): they stop an override from switching a condition off (e.g. a low
#: threshold of -100) while leaving room for individual targets. DOMAIN.md §2: the CGM urgent
#: low (3.1 mmol/L) is "not disableable", so it may be raised but never lowered.
OVERRIDE_RANGES: Final[Mapping[str, tuple[float, float]]] = {
    "glucose-low-l2": (2.5, 3.9),
    "cgm-urgent-low": (3.1, 4.4),
    "cgm-urgent-low-soon": (3.1, 4.4),
    "cgm-falling-fast": (-0.3, -0.111),  # 5.4 to 2 mg/dL/min
    "glucose-low-l1": (3.0, 6.0),
    "cgm-low-l1": (3.0, 6.0),
    "glucose-high-l2": (8.0, 25.0),
    "bp-systolic-grade3": (140.0, 200.0),
    "bp-diastolic-grade3": (90.0, 120.0),
    "bp-systolic-low": (80.0, 110.0),
    "pulse-low": (30.0, 60.0),
    "pulse-high": (90.0, 160.0),
    "spo2-low-news2-3": (80.0, 95.0),
    "spo2-low-news2-2": (82.0, 97.0),
    "temperature-low": (34.0, 36.5),
    "temperature-high": (37.5, 40.5),
}


def check_override(
    condition: str,
    value: float,
    unit: str,
    thresholds: Mapping[str, Threshold] = DEFAULTS_BY_CONDITION,
) -> Threshold:
    """Validate a patient-specific value for ``condition``; return the default it replaces."""
    default = thresholds.get(condition)
    if default is None:
        raise UnknownConditionError(f"unknown condition {condition!r}; known: {sorted(thresholds)}")
    if unit != default.unit:
        raise RuleError(f"{condition} is set in {default.unit!r}, got {unit!r}")
    if isinstance(value, bool) or not math.isfinite(value):
        raise RuleError(f"{condition}: value must be a finite number")
    lo, hi = OVERRIDE_RANGES.get(condition, (-math.inf, math.inf))
    if not lo <= value <= hi:
        raise RuleError(
            f"{condition}: a patient-specific value must lie within {lo:g}..{hi:g} "
            f"{default.unit} (remon safety bounds; the default is {default.value:g})"
        )
    return default


def apply_override(default: Threshold, override: ThresholdOverride | None) -> Threshold:
    """The threshold in effect for one patient: the default, or its value replaced.

    Only the value (and the source that says so) changes: the qualifiers (``confirm_count``,
    ``confirm_for``, ``max_gap``), the unit, the comparator and the family stay the default's,
    so a patient-specific level 1 low still waits for its 15 minutes.
    """
    if override is None:
        return default
    try:
        check_override(
            default.condition, override.value, override.unit, {default.condition: default}
        )
    except RuleError as exc:
        # A stored value that is no longer acceptable (bounds tightened since it was set) must
        # neither stop ingest nor weaken the rule: the default applies and says why.
        return replace(default, source=f"{default.source}; patient-specific value ignored: {exc}")
    return replace(
        default,
        value=override.value,
        source=(
            f"patient-specific value set by {override.set_by} at "
            f"{override.set_at.isoformat()} (default {default.describe()}: {default.source})"
        ),
    )
