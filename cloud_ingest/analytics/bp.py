"""Home blood-pressure protocol and kiosk/office visit summaries (DOMAIN.md §3).

**Home BP** (:func:`home_bp_summary`): the patient measures for 7 days, two readings in the
morning and two in the evening; day 1 is discarded and the rest averaged; the average is
compared with the home threshold 135/85 mmHg (either value at or above it counts). Days are the
patient's *local calendar days* (DST-correct: each reading's UTC time is converted to the
patient's zone), day 1 being the first local day with a reading; a reading before
:data:`MORNING_ENDS` local time is a morning reading, any later one an evening reading. The
protocol average is the plain mean of every reading of days 2-7 (each reading weighs the same,
as in the ESH home BP practice guidance; a day with more readings weighs more). Readings after
the last protocol day are ignored and counted. The summary lists what the protocol misses
(fewer than :data:`HOME_BP_MIN_READINGS` readings used, sessions without their duplicate
reading, days without readings) in ``notes`` instead of guessing.

**Kiosk/office visit** (:func:`kiosk_visit_summary`): 3 readings, more if the first two differ
by >= 10 mmHg (systolic or diastolic; exactly 10 counts as differing); the result is the mean of
the *last two* readings, also when there are 4 or more.

Both report the ESH 2023 band (:data:`device_profiles.clinical.ESH_GRADES`) of their result.
ESH grades are *office* thresholds: for a home average the band is labelled "ESH band of the
home average" and is a description of the number, not a diagnosis; the software never states
one. Every clinical figure comes from :mod:`device_profiles.clinical` and is a keyword
parameter; the figures defined here are remon defaults with their reason. Input is validated
(aware times, finite plausible values, systolic > diastolic) and an error names the reading's
index; values are never clamped. Pure: no I/O.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from device_profiles.clinical import (
    ESH_GRADES,
    HOME_BP_DAYS,
    HOME_BP_THRESHOLD_DIA,
    HOME_BP_THRESHOLD_SYS,
    KIOSK_BP_EXTRA,
    KIOSK_BP_READINGS,
    KIOSK_BP_REPEAT_DIFF,
    BpGrade,
    kiosk_bp_wanted,
)

#: Local time at which the morning session ends (remon default: DOMAIN.md §3 says "morning and
#: evening" without a boundary; noon splits any waking-time and bedtime routine).
MORNING_ENDS: Final = time(12, 0)
#: Readings per session: DOMAIN.md §3 "duplicate readings morning and evening".
HOME_BP_READINGS_PER_SESSION: Final = 2
#: Fewest readings for a home average to be reported without a note (remon default after the
#: ESH home BP practice guidance, Parati et al. 2008/2021: at least 12 readings; not in
#: DOMAIN.md).
HOME_BP_MIN_READINGS: Final = 12
#: "More" readings at a kiosk visit when the first two differ (device_profiles.clinical).
KIOSK_EXTRA_READINGS: Final = int(KIOSK_BP_EXTRA.value)
#: Plausible ranges, mm[Hg] and /min (remon defaults: wider than any cuff's measuring range;
#: outside them a reading is a device or entry error, rejected with its index, never clamped).
SYSTOLIC_PLAUSIBLE_MM_HG: Final = (50.0, 300.0)
DIASTOLIC_PLAUSIBLE_MM_HG: Final = (20.0, 200.0)
PULSE_PLAUSIBLE_PER_MIN: Final = (20.0, 300.0)

ESH_HOME_NOTE: Final = (
    "ESH band of the home average: ESH 2023 grades are office thresholds; the band describes "
    "the average and is not a diagnosis"
)
ESH_OFFICE_NOTE: Final = (
    "ESH 2023 band of the visit result (office thresholds); a description, not a diagnosis"
)


class BpInputError(ValueError):
    """A reading or a parameter is unusable; the message names the reading's index."""


@dataclass(frozen=True, slots=True)
class BpReading:
    time: datetime  # aware
    systolic: float  # mm[Hg]
    diastolic: float  # mm[Hg]
    pulse: float | None = None  # /min


@dataclass(frozen=True, slots=True)
class BpMean:
    """Mean of ``n`` readings (pulse over the ``n_pulse`` of them that had one)."""

    systolic: float
    diastolic: float
    n: int
    pulse: float | None = None
    n_pulse: int = 0


@dataclass(frozen=True, slots=True)
class HomeBpDay:
    day: int  # protocol day, 1 = the first local calendar day with a reading
    date: date  # local calendar date in the patient's zone
    status: Literal["discarded", "used"]
    morning: BpMean | None  # None: no morning reading
    evening: BpMean | None

    @property
    def morning_n(self) -> int:
        return 0 if self.morning is None else self.morning.n

    @property
    def evening_n(self) -> int:
        return 0 if self.evening is None else self.evening.n


@dataclass(frozen=True, slots=True, kw_only=True)
class HomeBpSummary:
    tz: str
    days: int
    discard_first_day: bool
    first_day: date | None  # local date of day 1 (None: no readings)
    average: BpMean | None  # protocol average; None when no reading is in the used days
    morning: BpMean | None
    evening: BpMean | None
    readings_total: int
    readings_used: int
    readings_discarded: int  # day 1
    readings_ignored: int  # after the last protocol day
    day_table: tuple[HomeBpDay, ...]  # days 1..days, also the days without readings
    threshold_systolic: float
    threshold_diastolic: float
    at_or_above_threshold: bool | None  # average sys >= threshold or dia >= threshold
    esh_band_of_home_average: BpGrade | None  # None: below every listed band (or no average)
    esh_band_label: str | None
    esh_note: str
    notes: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class KioskVisitSummary:
    readings_n: int
    computable: bool
    reason: str | None  # why the result is not computable
    result: BpMean | None  # mean of the last two readings in time order
    used: tuple[int, int] | None  # input indices of the two readings averaged
    first_two_differ: bool | None  # |Δsys| >= 10 or |Δdia| >= 10 (None: < 2 readings)
    first_two_difference_mm_hg: tuple[float, float] | None  # (|Δsys|, |Δdia|)
    needs_more: bool
    needs_more_reason: str | None
    esh_grade: BpGrade | None
    esh_label: str | None
    esh_note: str
    notes: tuple[str, ...]


def esh_grade(
    systolic: float, diastolic: float, *, grades: Sequence[BpGrade] = ESH_GRADES
) -> BpGrade | None:
    """The highest ESH band either value meets (``grades`` most severe first), or None below
    all of them (DOMAIN.md §3: grade 3 is >= 180 and/or >= 110)."""
    for g in grades:
        if systolic >= g.systolic_min or diastolic >= g.diastolic_min:
            return g
    return None


def _band_label(g: BpGrade | None, grades: Sequence[BpGrade]) -> str:
    if g is not None:
        return g.label
    if not grades:
        return "no ESH bands given"
    low = grades[-1]
    return f"below {low.key} (< {low.systolic_min:g} and < {low.diastolic_min:g})"


def _number(x: object, what: str, i: int, lo: float, hi: float) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise BpInputError(f"reading {i}: {what} must be a number, got {type(x).__name__}")
    v = float(x)
    if not math.isfinite(v):
        raise BpInputError(f"reading {i}: {what} {x!r} is not finite")
    if not lo <= v <= hi:
        raise BpInputError(f"reading {i}: {what} {v:g} outside the plausible range {lo:g}-{hi:g}")
    return v


def _validate(readings: Sequence[BpReading]) -> list[tuple[int, BpReading, datetime]]:
    out: list[tuple[int, BpReading, datetime]] = []
    for i, r in enumerate(readings):
        if not isinstance(r, BpReading):
            raise BpInputError(f"reading {i}: expected a BpReading, got {type(r).__name__}")
        if not isinstance(r.time, datetime) or r.time.tzinfo is None or r.time.utcoffset() is None:
            raise BpInputError(f"reading {i}: time must be an aware datetime, got {r.time!r}")
        s = _number(r.systolic, "systolic", i, *SYSTOLIC_PLAUSIBLE_MM_HG)
        d = _number(r.diastolic, "diastolic", i, *DIASTOLIC_PLAUSIBLE_MM_HG)
        if not s > d:
            raise BpInputError(f"reading {i}: systolic {s:g} must exceed diastolic {d:g}")
        if r.pulse is not None:
            _number(r.pulse, "pulse", i, *PULSE_PLAUSIBLE_PER_MIN)
        out.append((i, r, r.time.astimezone(UTC)))
    return out


def _mean(rs: Sequence[BpReading]) -> BpMean | None:
    if not rs:
        return None
    n = len(rs)
    pulses = [float(r.pulse) for r in rs if r.pulse is not None]
    return BpMean(
        systolic=math.fsum(float(r.systolic) for r in rs) / n,
        diastolic=math.fsum(float(r.diastolic) for r in rs) / n,
        n=n,
        pulse=math.fsum(pulses) / len(pulses) if pulses else None,
        n_pulse=len(pulses),
    )


def _zone(tz: str | ZoneInfo) -> ZoneInfo:
    if isinstance(tz, ZoneInfo):
        return tz
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:  # OSError: "Europe" is a directory
        raise BpInputError(f"unknown time zone {tz!r}") from exc


def home_bp_summary(
    readings: Sequence[BpReading],
    *,
    tz: str | ZoneInfo,
    days: int = int(HOME_BP_DAYS.value),
    discard_first_day: bool = True,
    threshold: tuple[float, float] = (HOME_BP_THRESHOLD_SYS.value, HOME_BP_THRESHOLD_DIA.value),
    morning_ends: time = MORNING_ENDS,
    min_readings: int = HOME_BP_MIN_READINGS,
    readings_per_session: int = HOME_BP_READINGS_PER_SESSION,
    grades: Sequence[BpGrade] = ESH_GRADES,
) -> HomeBpSummary:
    """Summarise a home BP week (DOMAIN.md §3). Input order does not matter."""
    zone = _zone(tz)
    if (
        isinstance(days, bool)
        or not isinstance(days, int)
        or days < (2 if discard_first_day else 1)
    ):
        raise BpInputError(
            f"days must be an integer >= {2 if discard_first_day else 1}, got {days!r}"
        )
    if len(threshold) != 2 or not all(math.isfinite(x) and x > 0 for x in threshold):
        raise BpInputError(f"threshold must be (systolic, diastolic) > 0, got {threshold!r}")
    if morning_ends.tzinfo is not None:
        raise BpInputError("morning_ends is a local wall-clock time: give it without a zone")
    checked = _validate(readings)
    t_sys, t_dia = float(threshold[0]), float(threshold[1])
    first_used = 2 if discard_first_day else 1
    notes: list[str] = []

    local = sorted(((u.astimezone(zone), r) for _, r, u in checked), key=lambda p: p[0])
    if not local:
        notes.append("no readings: nothing to summarise")
        return HomeBpSummary(
            tz=str(zone.key),
            days=days,
            discard_first_day=discard_first_day,
            first_day=None,
            average=None,
            morning=None,
            evening=None,
            readings_total=0,
            readings_used=0,
            readings_discarded=0,
            readings_ignored=0,
            day_table=(),
            threshold_systolic=t_sys,
            threshold_diastolic=t_dia,
            at_or_above_threshold=None,
            esh_band_of_home_average=None,
            esh_band_label=None,
            esh_note=ESH_HOME_NOTE,
            notes=tuple(notes),
        )

    first = local[0][0].date()
    by_day: dict[int, tuple[list[BpReading], list[BpReading]]] = {
        k: ([], []) for k in range(1, days + 1)
    }
    ignored: list[date] = []
    for lt, r in local:
        k = (lt.date() - first).days + 1
        if k > days:
            ignored.append(lt.date())
            continue
        by_day[k][0 if lt.time() < morning_ends else 1].append(r)

    table: list[HomeBpDay] = []
    used_m: list[BpReading] = []
    used_e: list[BpReading] = []
    discarded = 0
    for k in range(1, days + 1):
        m, e = by_day[k]
        d = date.fromordinal(first.toordinal() + k - 1)
        status: Literal["discarded", "used"] = "used" if k >= first_used else "discarded"
        table.append(HomeBpDay(day=k, date=d, status=status, morning=_mean(m), evening=_mean(e)))
        if status == "discarded":
            discarded += len(m) + len(e)
            continue
        used_m.extend(m)
        used_e.extend(e)
        if not m and not e:
            notes.append(f"day {k} ({d}): no readings")
            continue
        for label, rs in (("morning", m), ("evening", e)):
            if len(rs) < readings_per_session:
                notes.append(
                    f"day {k} ({d}): {len(rs)} {label} reading(s); the protocol asks for "
                    f"{readings_per_session}"
                )
            elif len(rs) > readings_per_session:
                notes.append(
                    f"day {k} ({d}): {len(rs)} {label} readings (protocol: "
                    f"{readings_per_session}); all are averaged"
                )

    used = used_m + used_e
    span = f"days {first_used}-{days}"
    if ignored:
        notes.append(f"{len(ignored)} reading(s) after day {days} (from {min(ignored)}) ignored")
    average = _mean(used)
    if average is None:
        notes.append(f"no readings on {span}: the home average cannot be computed")
    elif len(used) < min_readings:
        notes.append(
            f"only {len(used)} reading(s) on {span}; at least {min_readings} are needed for a "
            "reliable home average"
        )
    grade = (
        None if average is None else esh_grade(average.systolic, average.diastolic, grades=grades)
    )
    return HomeBpSummary(
        tz=str(zone.key),
        days=days,
        discard_first_day=discard_first_day,
        first_day=first,
        average=average,
        morning=_mean(used_m),
        evening=_mean(used_e),
        readings_total=len(local),
        readings_used=len(used),
        readings_discarded=discarded,
        readings_ignored=len(ignored),
        day_table=tuple(table),
        threshold_systolic=t_sys,
        threshold_diastolic=t_dia,
        at_or_above_threshold=(
            None if average is None else average.systolic >= t_sys or average.diastolic >= t_dia
        ),
        esh_band_of_home_average=grade,
        esh_band_label=None if average is None else _band_label(grade, grades),
        esh_note=ESH_HOME_NOTE,
        notes=tuple(notes),
    )


def kiosk_visit_summary(
    readings: Sequence[BpReading],
    *,
    expected_readings: int = int(KIOSK_BP_READINGS.value),
    repeat_diff_mm_hg: float = KIOSK_BP_REPEAT_DIFF.value,
    extra_readings: int = KIOSK_EXTRA_READINGS,
    grades: Sequence[BpGrade] = ESH_GRADES,
) -> KioskVisitSummary:
    """Summarise one kiosk/office visit (DOMAIN.md §3); readings are put in time order."""
    if expected_readings < 2 or extra_readings < 0:
        raise BpInputError("expected_readings must be >= 2 and extra_readings >= 0")
    if not math.isfinite(repeat_diff_mm_hg) or repeat_diff_mm_hg <= 0:
        raise BpInputError(f"repeat_diff_mm_hg must be > 0, got {repeat_diff_mm_hg!r}")
    checked = sorted(_validate(readings), key=lambda c: c[2])
    for (i, _, ta), (j, _, tb) in itertools.pairwise(checked):
        if ta == tb:
            raise BpInputError(f"readings {i} and {j} have the same time {ta.isoformat()}")
    n = len(checked)
    notes: list[str] = []
    if n < 2:
        return KioskVisitSummary(
            readings_n=n,
            computable=False,
            reason=f"{n} reading(s): the mean of the last two needs at least 2",
            result=None,
            used=None,
            first_two_differ=None,
            first_two_difference_mm_hg=None,
            needs_more=True,
            needs_more_reason=f"{n} of {expected_readings} readings taken",
            esh_grade=None,
            esh_label=None,
            esh_note=ESH_OFFICE_NOTE,
            notes=(),
        )
    r1, r2 = checked[0][1], checked[1][1]
    dsys = abs(float(r1.systolic) - float(r2.systolic))
    ddia = abs(float(r1.diastolic) - float(r2.diastolic))
    differ = dsys >= repeat_diff_mm_hg or ddia >= repeat_diff_mm_hg
    diff_text = (
        f"the first two readings differ by {dsys:g}/{ddia:g} mmHg (>= {repeat_diff_mm_hg:g})"
    )
    wanted = kiosk_bp_wanted(
        (float(r1.systolic), float(r1.diastolic)),
        (float(r2.systolic), float(r2.diastolic)),
        readings=expected_readings,
        repeat_diff_mm_hg=repeat_diff_mm_hg,
        extra=extra_readings,
    )
    needs_more = n < wanted
    if not needs_more:
        more_reason = None
    elif differ:
        more_reason = f"{diff_text}: {wanted} readings wanted, {n} taken"
    else:
        more_reason = f"{n} of {expected_readings} readings taken"
    (i_a, a, _), (i_b, b, _) = checked[-2], checked[-1]
    result = _mean([a, b])
    assert result is not None
    if n == 2:
        notes.append("mean of the only two readings")
    elif n > expected_readings:
        notes.append(f"mean of the last two of {n} readings")
    if (
        abs(float(a.systolic) - float(b.systolic)) >= repeat_diff_mm_hg
        or abs(float(a.diastolic) - float(b.diastolic)) >= repeat_diff_mm_hg
    ):
        notes.append(f"the last two readings also differ by >= {repeat_diff_mm_hg:g} mmHg")
    grade = esh_grade(result.systolic, result.diastolic, grades=grades)
    return KioskVisitSummary(
        readings_n=n,
        computable=True,
        reason=None,
        result=result,
        used=(i_a, i_b),
        first_two_differ=differ,
        first_two_difference_mm_hg=(dsys, ddia),
        needs_more=needs_more,
        needs_more_reason=more_reason,
        esh_grade=grade,
        esh_label=_band_label(grade, grades),
        esh_note=ESH_OFFICE_NOTE,
        notes=tuple(notes),
    )
