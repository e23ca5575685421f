"""PEF diary analysis: 1-2 weeks of home peak-flow blows → daily metrics and the support rule.

The patient follows the regions' PEF monitoring protocol (DOMAIN.md §1): two sessions a day
(morning, evening), at least 3 blows each, before (``pre``) and 15-30 min after (``post``) a
bronchodilator (BD). The session value is its best blow; every blow is kept.

Per calendar day this module computes (DOMAIN.md §1 "Metrics"):

* **diurnal variation** of the day's best pre-BD morning and evening values, in % and L/min.
  Finnish convention: ``(highest - lowest) / highest``. GINA convention:
  ``(highest - lowest) / mean(highest, lowest)``; GINA's period figure is the mean of the daily
  values (reported as ``mean_diurnal_variation_percent``; it is given for the Finnish
  convention too, for information). ``post_bd_in_max`` lets the day's post-BD bests enter the
  *highest* value (implementations differ; the *lowest* is always a pre-BD value). Both pre-BD
  sessions are needed, otherwise the value is ``None`` with the reason.
* **BD response** per session: ``(best post - best pre) / best pre``, % and L/min, negative
  when the post-BD value is lower (never clamped). The day's figure is the session that meets
  the criterion (the larger % response if both do), otherwise the session with the larger %
  response; ``bd_response_session`` names it. A day counts if ANY of its sessions meets it.
* **zone** of the day's best value (the value the diurnal maximum uses) against a
  clinician-given personal best: green ≥ 80 %, yellow 50-80 %, red < 50 %.

Diagnostic support rule (DOMAIN.md §1, BTS; Käypä hoito wording UNVERIFIED): diurnal variation
≥ 20 % **and** ≥ 60 L/min, or BD response ≥ 15 % **and** ≥ 60 L/min, each on ≥ 3 days in
2 weeks. A day meets a threshold with ``≥`` evaluated exactly: values are compared as the
decimals of their shortest form (``Decimal(repr(x))``, exact arithmetic), so 300 and
240 L/min give exactly 20 % and meet it, with no float tolerance. The rule is applied to the daily
percentage of the chosen convention (GINA's percentage is never smaller than the Finnish one
for the same day). The report lists the supporting days and says "criterion met (supports the
clinician's assessment)"; it never states a diagnosis.

Dates and time zones: the date of a blow is its **local calendar date as written** (the
wall-clock date; an explicit UTC offset is kept but never used to move a blow to another
date). A daylight-saving change day is therefore an ordinary day of 23 or 25 hours, and the
repeated hour in autumn (e.g. ``03:30+03:00`` and ``03:30+02:00`` on 2026-10-25 in Finland)
gives two distinct blows on the same date.

Period: from the first to the last date with blows; days inside it without blows are listed
as missing days. The rule says "in 2 weeks": a diary shorter than 7 or longer than 14 days
gets a note, and the criterion is counted over the whole period (remon default: simple and
transparent; no best-14-day window is searched).

Blow quality (DOMAIN.md §1): a session with fewer than 3 blows, more than about 5, or whose two
best blows differ by more than 20 L/min (Finnish practice) gets a note; its best blow is still
used. Nothing is dropped, clamped or invented: what cannot be computed is ``None`` with a
reason. Every figure is a :class:`DiaryCriteria` field defaulting to
:mod:`device_profiles.clinical`, so a clinician can override it.

CSV format (:func:`parse_pef_csv`): a header ``time,session,phase,pef_l_min`` (any column
order), one row per blow; ``time`` ISO 8601 local time (naive, or with an offset),
``session`` ``morning|evening``, ``phase`` ``pre|post``, PEF in L/min within the meter range
50-900 L/min. Rows are numbered as the file's lines (the header is row 1 unless blank
lines precede it). Pure: no I/O.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Context, Decimal, DivisionByZero, Inexact, InvalidOperation
from functools import lru_cache
from typing import Any, Final, Literal, TypeAlias

from device_profiles.clinical import (
    PEF_BD_L_MIN,
    PEF_BD_PERCENT,
    PEF_CRITERION_DAYS,
    PEF_DIURNAL_L_MIN,
    PEF_DIURNAL_PERCENT,
    PEF_MAX_BLOWS,
    PEF_METER_MAX_L_MIN,
    PEF_METER_MIN_L_MIN,
    PEF_MIN_BLOWS,
    PEF_REPRODUCIBILITY_L_MIN,
    PEF_ZONE_GREEN_PERCENT,
    PEF_ZONE_RED_PERCENT,
    Figure,
)

__all__ = [
    "CONVENTIONS",
    "CONVENTION_FORMULAS",
    "CSV_COLUMNS",
    "DEFAULT_CRITERIA",
    "MAX_PERIOD_DAYS",
    "PEF_PERIOD_DAYS",
    "PEF_PERIOD_MIN_DAYS",
    "SESSION_NOON",
    "BdResponse",
    "Blow",
    "Convention",
    "CriterionResult",
    "DayResult",
    "DiaryCriteria",
    "DiaryReport",
    "PefDiaryError",
    "Phase",
    "Session",
    "SessionResult",
    "Zone",
    "analyse_diary",
    "blows_to_csv",
    "parse_pef_csv",
    "report_to_json",
]

Convention: TypeAlias = Literal["finnish", "gina"]
Session: TypeAlias = Literal["morning", "evening"]
Phase: TypeAlias = Literal["pre", "post"]
Zone: TypeAlias = Literal["green", "yellow", "red"]

CONVENTIONS: Final[tuple[Convention, ...]] = ("finnish", "gina")
SESSIONS: Final[tuple[Session, ...]] = ("morning", "evening")
PHASES: Final[tuple[Phase, ...]] = ("pre", "post")
#: The CSV header, in this order when written; read in any order.
CSV_COLUMNS: Final = ("time", "session", "phase", "pef_l_min")
#: Formulas of the conventions, stated in every report (DOMAIN.md §1 "Metrics").
CONVENTION_FORMULAS: Final[dict[Convention, str]] = {
    "finnish": "(highest - lowest) / highest",
    "gina": "(highest - lowest) / mean(highest, lowest)",
}

#: Shortest diary the protocol uses: 1 week (treatment follow-up). DOMAIN.md §1 protocol.
PEF_PERIOD_MIN_DAYS: Final = Figure(7, "d", "DOMAIN.md §1 protocol: 1 week (follow-up)")
#: The support rule counts days "in 2 weeks" (diagnosis). DOMAIN.md §1 protocol and rule.
PEF_PERIOD_DAYS: Final = Figure(14, "d", "DOMAIN.md §1 protocol: 2 weeks (diagnosis)")
#: A morning blow at or after this local time, or an evening blow before it, gets a note (its
#: date is still its calendar date). remon default: catches evening sessions blown after
#: midnight, which the calendar-date rule files under the next day.
SESSION_NOON: Final = time(12, 0)
#: A diary spanning more days than this is refused as a probable date typo (remon default: a
#: PEF diary is 1-2 weeks, DOMAIN.md §1; a year leaves room for long follow-up uploads).
MAX_PERIOD_DAYS: Final = 366
#: At most this many error lines in one PefDiaryError message (remon default: readable).
MAX_LISTED_ERRORS: Final = 20

_DISCLAIMER: Final = (
    "Decision support only: the criteria in this report summarise the diary for the clinician; "
    "they do not make a diagnosis."
)


class PefDiaryError(ValueError):
    """The diary cannot be read or analysed; the message names the row(s) and the problem."""

    def __init__(self, message: str, *, errors: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.errors: tuple[str, ...] = tuple(errors) or (message,)


@dataclass(frozen=True, slots=True)
class Blow:
    """One blow. ``time`` is the patient's local wall time (naive, or aware with its offset)."""

    time: datetime
    session: Session
    phase: Phase
    pef_l_min: float
    row: int | None = None  # the CSV line it came from, for messages

    def __post_init__(self) -> None:
        where = f"row {self.row}: " if self.row is not None else ""
        if self.session not in SESSIONS:
            raise PefDiaryError(f"{where}session {self.session!r} is not morning or evening")
        if self.phase not in PHASES:
            raise PefDiaryError(f"{where}phase {self.phase!r} is not pre or post")
        if not math.isfinite(self.pef_l_min) or self.pef_l_min <= 0:
            raise PefDiaryError(f"{where}PEF {self.pef_l_min!r} is not a positive finite number")

    @property
    def local_date(self) -> date:
        """The calendar date as written (wall clock), whatever the offset."""
        return self.time.date()

    @property
    def wall_time(self) -> datetime:
        """The local wall-clock time as written, without its offset."""
        t = self.time
        return t if t.tzinfo is None else t.replace(tzinfo=None)


def _fig(f: Figure) -> float:
    return float(f.value)


@dataclass(frozen=True, slots=True, kw_only=True)
class DiaryCriteria:
    """The figures of the analysis; defaults from :mod:`device_profiles.clinical` (§1)."""

    diurnal_percent: float = _fig(PEF_DIURNAL_PERCENT)
    diurnal_l_min: float = _fig(PEF_DIURNAL_L_MIN)
    bd_percent: float = _fig(PEF_BD_PERCENT)
    bd_l_min: float = _fig(PEF_BD_L_MIN)
    required_days: int = int(PEF_CRITERION_DAYS.value)
    reproducibility_l_min: float = _fig(PEF_REPRODUCIBILITY_L_MIN)
    min_blows: int = int(PEF_MIN_BLOWS.value)
    max_blows: int = int(PEF_MAX_BLOWS.value)
    zone_green_percent: float = _fig(PEF_ZONE_GREEN_PERCENT)
    zone_red_percent: float = _fig(PEF_ZONE_RED_PERCENT)
    period_min_days: int = int(PEF_PERIOD_MIN_DAYS.value)
    period_max_days: int = int(PEF_PERIOD_DAYS.value)

    def __post_init__(self) -> None:
        for name in (
            "diurnal_percent",
            "diurnal_l_min",
            "bd_percent",
            "bd_l_min",
            "reproducibility_l_min",
            "zone_green_percent",
            "zone_red_percent",
        ):
            v = getattr(self, name)
            if not math.isfinite(v) or v < 0:
                raise PefDiaryError(f"criteria: {name} must be a finite number >= 0, got {v!r}")
        if self.required_days < 1 or self.min_blows < 1 or self.max_blows < self.min_blows:
            raise PefDiaryError("criteria: required_days, min_blows >= 1 and max >= min blows")
        if self.zone_red_percent > self.zone_green_percent:
            raise PefDiaryError("criteria: zone_red_percent must not exceed zone_green_percent")
        if self.period_min_days < 1 or self.period_max_days < self.period_min_days:
            raise PefDiaryError("criteria: period_min_days >= 1 and period_max_days >= it")


DEFAULT_CRITERIA: Final = DiaryCriteria()


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionResult:
    """One session/phase of one day: its blows (time order) and their best."""

    date: date
    session: Session
    phase: Phase
    values: tuple[float, ...]
    rows: tuple[int | None, ...]
    best: float
    two_best_diff_l_min: float | None  # None with a single blow
    reproducible: bool | None  # two best within the limit; None with a single blow
    quality: tuple[str, ...]  # protocol notes (blow count, reproducibility)

    @property
    def label(self) -> str:
        return f"{self.session} {self.phase}-BD"


@dataclass(frozen=True, slots=True, kw_only=True)
class BdResponse:
    session: Session
    pre_best: float
    post_best: float
    percent: float
    l_min: float
    meets: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class DayResult:
    date: date
    n_blows: int
    morning_pre_best: float | None
    evening_pre_best: float | None
    morning_post_best: float | None
    evening_post_best: float | None
    day_highest_l_min: float | None  # the diurnal maximum (pre-BD, plus post-BD if asked)
    day_lowest_l_min: float | None  # the lower of the pre-BD bests (both needed)
    diurnal_variation_percent: float | None
    diurnal_variation_l_min: float | None
    diurnal_meets: bool | None
    diurnal_not_computed: str | None
    bd_responses: tuple[BdResponse, ...]
    bd_response_percent: float | None
    bd_response_l_min: float | None
    bd_response_session: Session | None
    bd_meets: bool | None
    bd_not_computed: str | None
    day_best_l_min: float | None  # highest value of the day the zone is judged on
    percent_of_personal_best: float | None
    zone: Zone | None
    missing: tuple[str, ...]
    sessions: tuple[SessionResult, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class CriterionResult:
    name: str
    met: bool
    days_meeting: tuple[date, ...]
    days_evaluable: int
    required_days: int
    threshold: str
    source: str
    statement: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DiaryReport:
    convention: Convention
    post_bd_in_max: bool
    personal_best_l_min: float | None
    first_date: date
    last_date: date
    period_days: int
    days_with_data: int
    missing_days: tuple[date, ...]
    n_blows: int
    days: tuple[DayResult, ...]
    diurnal: CriterionResult
    bd: CriterionResult
    mean_diurnal_variation_percent: float | None
    days_with_diurnal_variation: int
    criteria: DiaryCriteria
    notes: tuple[str, ...] = field(default=())
    disclaimer: str = _DISCLAIMER

    @property
    def formula(self) -> str:
        return CONVENTION_FORMULAS[self.convention]


# --------------------------------------------------------------------------- parsing


def _lines(source: str | Iterable[str]) -> Iterator[str]:
    it = iter(source.splitlines() if isinstance(source, str) else source)
    first = True
    for line in it:
        yield line.removeprefix("\ufeff") if first else line
        first = False


def _num(x: float) -> str:
    """A value as a person writes it: 450, 450.5."""
    return f"{x:.0f}" if float(x).is_integer() else f"{x:g}"


def _header(names: list[str], row: int) -> dict[str, int]:
    cols = [n.strip().lower() for n in names]
    expected = ",".join(CSV_COLUMNS)
    if len(cols) == 1 and ";" in cols[0]:
        raise PefDiaryError(
            f"row {row}: the columns are separated by ';'; the diary must be comma-separated "
            f"with the header {expected!r}"
        )
    try:
        datetime.fromisoformat(cols[0])
    except ValueError:
        pass
    else:
        raise PefDiaryError(f"row {row}: no header; the first row must be {expected!r}")
    for c in cols:
        if c != "pef_l_min" and (c.startswith("pef") or c.endswith(("_l_s", "_l/s", "_lpm"))):
            raise PefDiaryError(
                f"row {row}: column {c!r}: PEF must be given in L/min in a column named "
                f"'pef_l_min' (expected header {expected!r}); values are not converted"
            )
    dups = sorted({c for c in cols if cols.count(c) > 1})
    if dups:
        raise PefDiaryError(f"row {row}: column(s) repeated: {', '.join(dups)}")
    missing = [c for c in CSV_COLUMNS if c not in cols]
    extra = [c for c in cols if c not in CSV_COLUMNS]
    if "" in extra:
        raise PefDiaryError(
            f"row {row}: a column without a name (a trailing comma?); "
            f"the header must be {expected!r}"
        )
    if extra:
        raise PefDiaryError(
            f"row {row}: unexpected column(s) {', '.join(map(repr, extra))}; "
            f"the header must be {expected!r}"
        )
    if missing:
        raise PefDiaryError(
            f"row {row}: missing column(s) {', '.join(map(repr, missing))}; "
            f"the header must be {expected!r}"
        )
    return {c: cols.index(c) for c in CSV_COLUMNS}


def _parse_time(raw: str, row: int) -> datetime:
    s = raw.strip()
    if not s:
        raise PefDiaryError(f"row {row}: time is empty")
    try:
        date.fromisoformat(s)
    except ValueError:
        pass
    else:
        raise PefDiaryError(f"row {row}: time {s!r} has no time of day (e.g. {s}T07:30)")
    try:
        return datetime.fromisoformat(s)
    except ValueError:
        raise PefDiaryError(
            f"row {row}: time {s!r} is not an ISO 8601 local date-time "
            "(e.g. 2026-03-02T07:30 or 2026-03-02T07:30+02:00)"
        ) from None


def _parse_pef(raw: str, row: int, lo: float, hi: float) -> float:
    s = raw.strip()
    if not s:
        raise PefDiaryError(f"row {row}: PEF is empty")
    try:
        v = float(s)
    except ValueError:
        raise PefDiaryError(f"row {row}: PEF {s!r} is not a number (L/min)") from None
    if not math.isfinite(v):
        raise PefDiaryError(f"row {row}: PEF {s!r} is not a finite number")
    if not lo <= v <= hi:
        raise PefDiaryError(
            f"row {row}: PEF {_num(v)} L/min is outside the meter range "
            f"{_num(lo)}-{_num(hi)} L/min (rejected, never clamped)"
        )
    return v


def _parse_row(fields: list[str], cols: dict[str, int], row: int, lo: float, hi: float) -> Blow:
    if len(fields) != len(CSV_COLUMNS):
        raise PefDiaryError(
            f"row {row}: expected {len(CSV_COLUMNS)} fields ({','.join(CSV_COLUMNS)}), "
            f"got {len(fields)}"
        )
    t = _parse_time(fields[cols["time"]], row)
    session = fields[cols["session"]].strip().lower()
    if session not in SESSIONS:
        raise PefDiaryError(
            f"row {row}: session {fields[cols['session']].strip()!r} is not one of "
            f"{', '.join(SESSIONS)}"
        )
    phase = fields[cols["phase"]].strip().lower()
    if phase not in PHASES:
        raise PefDiaryError(
            f"row {row}: phase {fields[cols['phase']].strip()!r} is not one of "
            f"{', '.join(PHASES)} (pre/post bronchodilator)"
        )
    pef = _parse_pef(fields[cols["pef_l_min"]], row, lo, hi)
    return Blow(time=t, session=session, phase=phase, pef_l_min=pef, row=row)


def _sort_key(b: Blow) -> tuple[datetime, float, str, str, float, int]:
    off = b.time.utcoffset()
    # wall time first; within a repeated autumn hour, the earlier instant (larger offset) first
    return (
        b.wall_time,
        -(off.total_seconds() if off is not None else 0.0),
        b.session,
        b.phase,
        b.pef_l_min,
        b.row if b.row is not None else 0,
    )


def _raise_collected(errors: list[str]) -> None:
    if not errors:
        return
    if len(errors) == 1:
        raise PefDiaryError(errors[0])
    shown = errors[:MAX_LISTED_ERRORS]
    more = len(errors) - len(shown)
    tail = f"\n... and {more} more" if more else ""
    raise PefDiaryError(
        f"{len(errors)} problems in the diary:\n" + "\n".join(shown) + tail, errors=errors
    )


def parse_pef_csv(
    source: str | Iterable[str],
    *,
    meter_min_l_min: float = _fig(PEF_METER_MIN_L_MIN),
    meter_max_l_min: float = _fig(PEF_METER_MAX_L_MIN),
) -> list[Blow]:
    """Blows of a diary CSV, sorted by local time; :class:`PefDiaryError` names every bad row.

    Blank lines are skipped; every other row must be a valid blow. Two rows with the same
    time, session, phase and value are an error naming both rows (a blow is written once; if
    the times are only to the minute, give each blow its own time, e.g. with seconds).
    """
    reader = csv.reader(_lines(source), strict=True)
    cols: dict[str, int] | None = None
    blows: list[Blow] = []
    errors: list[str] = []
    seen: dict[tuple[datetime, float | None, str, str, float], int] = {}
    try:
        for fields in reader:
            row = reader.line_num
            if not any(f.strip() for f in fields):
                continue
            if cols is None:
                cols = _header(fields, row)
                continue
            try:
                b = _parse_row(fields, cols, row, meter_min_l_min, meter_max_l_min)
            except PefDiaryError as exc:
                errors.append(str(exc))
                continue
            off = b.time.utcoffset()
            key = (
                b.wall_time,
                off.total_seconds() if off is not None else None,
                b.session,
                b.phase,
                b.pef_l_min,
            )
            if key in seen:
                errors.append(
                    f"rows {seen[key]} and {row}: the same blow twice ({b.time.isoformat()}, "
                    f"{b.session} {b.phase}-BD, {_num(b.pef_l_min)} L/min); give each blow "
                    "its own time (e.g. with seconds) or remove the copy"
                )
                continue
            seen[key] = row
            blows.append(b)
    except csv.Error as exc:
        raise PefDiaryError(f"row {reader.line_num}: not valid CSV ({exc})") from None
    if cols is None:
        raise PefDiaryError(f"empty file: expected the header {','.join(CSV_COLUMNS)!r} and rows")
    _raise_collected(errors)
    if not blows:
        raise PefDiaryError("no blows: the file has a header but no data rows")
    blows.sort(key=_sort_key)
    return blows


def blows_to_csv(blows: Iterable[Blow]) -> str:
    """The CSV form :func:`parse_pef_csv` reads (times as ISO 8601, as given)."""
    lines = [",".join(CSV_COLUMNS)]
    for b in blows:
        lines.append(f"{b.time.isoformat()},{b.session},{b.phase},{b.pef_l_min!r}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- analysis


#: Sums, differences and products of the values are exact at this precision (a float's
#: shortest repr has at most 17 significant digits); a rounding would raise, not pass.
_EXACT: Final = Context(prec=80, traps=[Inexact, InvalidOperation, DivisionByZero])
#: Percentages (a quotient) are rounded once, then converted to float.
_DIVIDE: Final = Context(prec=34, traps=[InvalidOperation, DivisionByZero])


@lru_cache(maxsize=65536)
def _q(x: float) -> Decimal:
    """The shortest decimal that round-trips ``x`` (300.1 → Decimal('300.1')), exactly."""
    return Decimal(repr(float(x)))


def _at_least(num: Decimal, den: Decimal, percent: float) -> bool:
    """``num / den * 100 >= percent``, decided exactly (den > 0)."""
    return _EXACT.multiply(num, 100) >= _EXACT.multiply(_q(percent), den)


def _sub(a: float, b: float) -> Decimal:
    return _EXACT.subtract(_q(a), _q(b))


def _session_result(
    d: date, session: Session, phase: Phase, blows: list[Blow], c: DiaryCriteria
) -> SessionResult:
    values = tuple(b.pef_l_min for b in blows)
    ranked = sorted(values, reverse=True)
    best = ranked[0]
    diff: float | None = None
    reproducible: bool | None = None
    label = f"{d.isoformat()} {session} {phase}-BD"
    quality: list[str] = []
    if len(ranked) >= 2:
        exact = _sub(ranked[0], ranked[1])
        diff = float(exact)
        reproducible = exact <= _q(c.reproducibility_l_min)
    n = len(values)
    if n < c.min_blows:
        quality.append(
            f"{label}: {n} blow{'s' if n != 1 else ''} (protocol: at least "
            f"{c.min_blows}); the best one is used"
        )
    elif n > c.max_blows:
        quality.append(f"{label}: {n} blows (protocol: about {c.max_blows} at most)")
    if reproducible is False and diff is not None:
        quality.append(
            f"{label}: the two best blows differ by {_num(diff)} L/min (more than "
            f"{_num(c.reproducibility_l_min)} L/min: not reproducible); the best one is used"
        )
    return SessionResult(
        date=d,
        session=session,
        phase=phase,
        values=values,
        rows=tuple(b.row for b in blows),
        best=best,
        two_best_diff_l_min=diff,
        reproducible=reproducible,
        quality=tuple(quality),
    )


def _pct(num: Decimal, den: Decimal) -> float:
    return float(_DIVIDE.divide(_EXACT.multiply(num, 100), den))


def _day(
    d: date,
    sessions: dict[tuple[Session, Phase], SessionResult],
    *,
    n_blows: int,
    diary_has_post: bool,
    convention: Convention,
    post_bd_in_max: bool,
    personal_best: float | None,
    c: DiaryCriteria,
) -> DayResult:
    def best(s: Session, p: Phase) -> float | None:
        r = sessions.get((s, p))
        return r.best if r is not None else None

    mpre, epre = best("morning", "pre"), best("evening", "pre")
    mpost, epost = best("morning", "post"), best("evening", "post")
    missing: list[str] = []
    if n_blows == 0:
        missing.append("no blows recorded")
    else:
        for s in SESSIONS:
            for p in PHASES:
                if (s, p) not in sessions and (p == "pre" or diary_has_post):
                    missing.append(f"{s} {p}-BD session missing")

    # diurnal variation
    pre = [v for v in (mpre, epre) if v is not None]
    highs = pre + ([v for v in (mpost, epost) if v is not None] if post_bd_in_max else [])
    day_best = max(highs) if highs else None
    dv_pct: float | None = None
    dv_l: float | None = None
    dv_meets: bool | None = None
    dv_reason: str | None = None
    hi = lo = None
    if mpre is None or epre is None:
        if n_blows == 0:
            dv_reason = "no blows recorded"
        else:
            gone = [s for s, v in (("morning", mpre), ("evening", epre)) if v is None]
            dv_reason = f"{' and '.join(gone)} pre-BD session{'s' if len(gone) > 1 else ''} missing"
    else:
        hi, lo = max(highs), min(mpre, epre)
        qhi, qlo = _q(hi), _q(lo)
        diff = _EXACT.subtract(qhi, qlo)
        den = qhi if convention == "finnish" else _EXACT.divide(_EXACT.add(qhi, qlo), 2)
        dv_pct = _pct(diff, den)
        dv_l = float(diff)
        dv_meets = _at_least(diff, den, c.diurnal_percent) and diff >= _q(c.diurnal_l_min)

    # BD response, per session
    responses: list[BdResponse] = []
    for s in SESSIONS:
        pre_r, post_r = sessions.get((s, "pre")), sessions.get((s, "post"))
        if pre_r is None or post_r is None:
            continue
        qpre = _q(pre_r.best)
        delta = _sub(post_r.best, pre_r.best)
        responses.append(
            BdResponse(
                session=s,
                pre_best=pre_r.best,
                post_best=post_r.best,
                percent=_pct(delta, qpre),
                l_min=float(delta),
                meets=_at_least(delta, qpre, c.bd_percent) and delta >= _q(c.bd_l_min),
            )
        )
    chosen: BdResponse | None = None
    bd_reason: str | None = None
    if responses:
        pool = [r for r in responses if r.meets] or responses
        chosen = max(pool, key=lambda r: (r.percent, r.l_min))
    elif n_blows == 0:
        bd_reason = "no blows recorded"
    elif not diary_has_post:
        bd_reason = "no post-BD blows in the diary"
    else:
        bd_reason = "no session with both pre-BD and post-BD blows"

    # zone
    pb_pct: float | None = None
    zone: Zone | None = None
    if personal_best is not None and day_best is not None:
        qb, qpb = _q(day_best), _q(personal_best)
        pb_pct = _pct(qb, qpb)
        if _at_least(qb, qpb, c.zone_green_percent):
            zone = "green"
        elif _at_least(qb, qpb, c.zone_red_percent):
            zone = "yellow"
        else:
            zone = "red"

    order = [(s, p) for s in SESSIONS for p in PHASES]
    return DayResult(
        date=d,
        n_blows=n_blows,
        morning_pre_best=mpre,
        evening_pre_best=epre,
        morning_post_best=mpost,
        evening_post_best=epost,
        day_highest_l_min=hi,
        day_lowest_l_min=lo,
        diurnal_variation_percent=dv_pct,
        diurnal_variation_l_min=dv_l,
        diurnal_meets=dv_meets,
        diurnal_not_computed=dv_reason,
        bd_responses=tuple(responses),
        bd_response_percent=chosen.percent if chosen else None,
        bd_response_l_min=chosen.l_min if chosen else None,
        bd_response_session=chosen.session if chosen else None,
        bd_meets=any(r.meets for r in responses) if responses else None,
        bd_not_computed=bd_reason,
        day_best_l_min=day_best,
        percent_of_personal_best=pb_pct,
        zone=zone,
        missing=tuple(missing),
        sessions=tuple(sessions[k] for k in order if k in sessions),
    )


def _source(pairs: Iterable[tuple[float, Figure]], days: int) -> str:
    base = PEF_DIURNAL_PERCENT.source
    default = all(v == f.value for v, f in pairs) and days == PEF_CRITERION_DAYS.value
    return base if default else f"clinician override (default: {base})"


def _criterion(
    name: str,
    days: Sequence[DayResult],
    flag: str,
    *,
    percent: float,
    l_min: float,
    defaults: tuple[Figure, Figure],
    c: DiaryCriteria,
) -> CriterionResult:
    meeting = tuple(d.date for d in days if getattr(d, flag) is True)
    evaluable = sum(1 for d in days if getattr(d, flag) is not None)
    met = len(meeting) >= c.required_days
    if met:
        statement = (
            f"criterion met on {len(meeting)} day{'s' if len(meeting) != 1 else ''} "
            f"(≥ {c.required_days} required): supports the clinician's assessment"
        )
    else:
        statement = (
            f"criterion not met: {len(meeting)} of the required {c.required_days} days "
            f"({evaluable} day{'s' if evaluable != 1 else ''} evaluable)"
        )
    return CriterionResult(
        name=name,
        met=met,
        days_meeting=meeting,
        days_evaluable=evaluable,
        required_days=c.required_days,
        threshold=f"≥ {_num(percent)} % and ≥ {_num(l_min)} L/min",
        source=_source(zip((percent, l_min), defaults, strict=True), c.required_days),
        statement=statement,
    )


def _where(b: Blow) -> str:
    return f"row {b.row}:" if b.row is not None else "blow on"


def analyse_diary(
    blows: Iterable[Blow],
    *,
    convention: Convention = "finnish",
    post_bd_in_max: bool = False,
    personal_best_l_min: float | None = None,
    criteria: DiaryCriteria = DEFAULT_CRITERIA,
    max_period_days: int = MAX_PERIOD_DAYS,
) -> DiaryReport:
    """Daily PEF metrics and the diagnostic support criteria of a diary (see module doc)."""
    if convention not in CONVENTIONS:
        raise PefDiaryError(f"convention {convention!r} is not one of {', '.join(CONVENTIONS)}")
    if personal_best_l_min is not None and (
        not math.isfinite(personal_best_l_min) or personal_best_l_min <= 0
    ):
        raise PefDiaryError(
            f"personal best {personal_best_l_min!r} L/min must be a positive number"
        )
    c = criteria
    ordered = sorted(blows, key=_sort_key)
    if not ordered:
        raise PefDiaryError("no blows to analyse")
    groups: dict[date, dict[tuple[Session, Phase], list[Blow]]] = {}
    for b in ordered:
        groups.setdefault(b.local_date, {}).setdefault((b.session, b.phase), []).append(b)
    diary_has_post = any(b.phase == "post" for b in ordered)
    first, last = min(groups), max(groups)
    period_days = (last - first).days + 1
    if period_days > max_period_days:
        b0, b1 = ordered[0], ordered[-1]
        raise PefDiaryError(
            f"the diary spans {period_days} days ({_where(b0)} {first.isoformat()} to "
            f"{_where(b1)} {last.isoformat()}), more than {max_period_days}: check the dates"
        )

    notes: list[str] = []
    if period_days < c.period_min_days:
        notes.append(
            f"the diary covers {period_days} day{'s' if period_days != 1 else ''}: shorter than "
            f"the {c.period_min_days}-day protocol; fewer days give fewer chances to meet a "
            "criterion"
        )
    elif period_days > c.period_max_days:
        notes.append(
            f"the diary covers {period_days} days, longer than {c.period_max_days}: the criteria "
            f"are counted over the whole period, not over a {c.period_max_days}-day window"
        )
    if not diary_has_post:
        notes.append("no post-BD blows in the diary: BD response not assessed")

    days: list[DayResult] = []
    missing_days: list[date] = []
    quality: list[str] = []
    timing: list[str] = []
    for i in range(period_days):
        d = first + timedelta(days=i)
        by_key = groups.get(d, {})
        if not by_key:
            missing_days.append(d)
        sessions: dict[tuple[Session, Phase], SessionResult] = {}
        for (s, p), bl in by_key.items():
            r = _session_result(d, s, p, bl, c)
            sessions[(s, p)] = r
            for b in bl:
                if (s == "morning") == (b.time.time() >= SESSION_NOON):
                    when = "at or after" if s == "morning" else "before"
                    where = f"row {b.row}" if b.row is not None else d.isoformat()
                    timing.append(
                        f"{where}: {s} blow at {b.time.time().isoformat('minutes')} "
                        f"({when} {SESSION_NOON.isoformat('minutes')}) is counted on its "
                        f"calendar date {d.isoformat()}"
                    )
        for k in [(s, p) for s in SESSIONS for p in PHASES]:
            if k in sessions:
                quality.extend(sessions[k].quality)
        days.append(
            _day(
                d,
                sessions,
                n_blows=sum(len(v) for v in by_key.values()),
                diary_has_post=diary_has_post,
                convention=convention,
                post_bd_in_max=post_bd_in_max,
                personal_best=personal_best_l_min,
                c=c,
            )
        )
    if missing_days:
        notes.append("days without any blow: " + ", ".join(d.isoformat() for d in missing_days))
    notes.extend(quality)
    notes.extend(timing)
    if personal_best_l_min is None:
        notes.append("zones not assessed: no personal best given")

    dv_values = [
        d.diurnal_variation_percent for d in days if d.diurnal_variation_percent is not None
    ]
    mean_dv = math.fsum(dv_values) / len(dv_values) if dv_values else None
    diurnal = _criterion(
        "diurnal_variation",
        days,
        "diurnal_meets",
        percent=c.diurnal_percent,
        l_min=c.diurnal_l_min,
        defaults=(PEF_DIURNAL_PERCENT, PEF_DIURNAL_L_MIN),
        c=c,
    )
    bd = _criterion(
        "bd_response",
        days,
        "bd_meets",
        percent=c.bd_percent,
        l_min=c.bd_l_min,
        defaults=(PEF_BD_PERCENT, PEF_BD_L_MIN),
        c=c,
    )
    return DiaryReport(
        convention=convention,
        post_bd_in_max=post_bd_in_max,
        personal_best_l_min=personal_best_l_min,
        first_date=first,
        last_date=last,
        period_days=period_days,
        days_with_data=period_days - len(missing_days),
        missing_days=tuple(missing_days),
        n_blows=len(ordered),
        days=tuple(days),
        diurnal=diurnal,
        bd=bd,
        mean_diurnal_variation_percent=mean_dv,
        days_with_diurnal_variation=len(dv_values),
        criteria=c,
        notes=tuple(notes),
    )


# --------------------------------------------------------------------------- JSON


def _r1(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def _criterion_json(r: CriterionResult) -> dict[str, Any]:
    return {
        "met": r.met,
        "days_meeting": [d.isoformat() for d in r.days_meeting],
        "days_evaluable": r.days_evaluable,
        "required_days": r.required_days,
        "threshold": r.threshold,
        "source": r.source,
        "statement": r.statement,
    }


def _session_json(s: SessionResult) -> dict[str, Any]:
    return {
        "session": s.session,
        "phase": s.phase,
        "blows": list(s.values),
        "rows": list(s.rows),
        "best": s.best,
        "two_best_diff_l_min": _r1(s.two_best_diff_l_min),
        "reproducible": s.reproducible,
        "quality": list(s.quality),
    }


def _day_json(d: DayResult) -> dict[str, Any]:
    return {
        "date": d.date.isoformat(),
        "n_blows": d.n_blows,
        "morning_pre_best": d.morning_pre_best,
        "evening_pre_best": d.evening_pre_best,
        "morning_post_best": d.morning_post_best,
        "evening_post_best": d.evening_post_best,
        "day_highest_l_min": d.day_highest_l_min,
        "day_lowest_l_min": d.day_lowest_l_min,
        "diurnal_variation_percent": _r1(d.diurnal_variation_percent),
        "diurnal_variation_l_min": _r1(d.diurnal_variation_l_min),
        "diurnal_variation_meets_criterion": d.diurnal_meets,
        "diurnal_variation_not_computed": d.diurnal_not_computed,
        "bd_response_percent": _r1(d.bd_response_percent),
        "bd_response_l_min": _r1(d.bd_response_l_min),
        "bd_response_session": d.bd_response_session,
        "bd_response_meets_criterion": d.bd_meets,
        "bd_response_not_computed": d.bd_not_computed,
        "bd_responses": [
            {
                "session": r.session,
                "pre_best": r.pre_best,
                "post_best": r.post_best,
                "percent": _r1(r.percent),
                "l_min": _r1(r.l_min),
                "meets_criterion": r.meets,
            }
            for r in d.bd_responses
        ],
        "day_best_l_min": d.day_best_l_min,
        "percent_of_personal_best": _r1(d.percent_of_personal_best),
        "zone": d.zone,
        "missing": list(d.missing),
        "sessions": [_session_json(s) for s in d.sessions],
    }


def report_to_json(report: DiaryReport) -> dict[str, Any]:
    """A JSON-ready dict; percentages and differences rounded to 1 decimal (output only)."""
    c = report.criteria
    return {
        "convention": report.convention,
        "convention_formula": report.formula,
        "post_bd_in_max": report.post_bd_in_max,
        "personal_best_l_min": report.personal_best_l_min,
        "period": {
            "first_date": report.first_date.isoformat(),
            "last_date": report.last_date.isoformat(),
            "days": report.period_days,
            "days_with_data": report.days_with_data,
            "missing_days": [d.isoformat() for d in report.missing_days],
        },
        "summary": {
            "blows": report.n_blows,
            "mean_diurnal_variation_percent": _r1(report.mean_diurnal_variation_percent),
            "days_with_diurnal_variation": report.days_with_diurnal_variation,
        },
        "days": [_day_json(d) for d in report.days],
        "criteria": {
            "diurnal_variation": _criterion_json(report.diurnal),
            "bd_response": _criterion_json(report.bd),
        },
        "settings": {
            "reproducibility_l_min": c.reproducibility_l_min,
            "min_blows": c.min_blows,
            "max_blows": c.max_blows,
            "zone_green_percent": c.zone_green_percent,
            "zone_red_percent": c.zone_red_percent,
        },
        "notes": list(report.notes),
        "disclaimer": report.disclaimer,
    }
