"""PEF diary sessions from stored readings: one stored ``pef`` observation per blow in, the
:class:`~cloud_ingest.analytics.pef_diary.Blow` values :func:`~.pef_diary.analyse_diary` takes
out, and every reading that cannot be a diary blow listed with the reason. Pure: no I/O.

A PEF sensor board (and a meter read over BLE or serial) stores one ``pef`` observation per blow
with its UTC time and value in L/min; nothing on it says which diary session it belongs to or
whether it was blown before or after the bronchodilator (BD). The diary (DOMAIN.md §1: a
morning and an evening session a day, at least 3 blows each, and for the BD test blows again
15-30 min after the reliever) needs both. :func:`blows_from_readings` recovers them:

1. **Usable readings.** A reading is a diary blow only if its value is a number the meter
   measured: a missing value, a non-finite or non-positive one, a value outside the meter range
   (50-900 L/min, DOMAIN.md §1), a meter limit (a ``>``/``<`` comparator: HI/LO), a blow the
   edge's blow analysis flagged (``cough``, ``early-stop``, ``slow-rise``, ``hesitation``,
   ``large-bev``: it may not show the true peak), a reading the device marked ``questionable``,
   one the ingest flagged (``implausible``, ``future-time``) and a ``derived`` one are listed in
   ``unclassified`` with the reason. Values are never changed, clamped or invented.
2. **Sessions.** Readings with an aware time are taken in time order; a reading at most
   :data:`PEF_SESSION_GAP_MIN` after the previous one belongs to its session (the gap the edge
   and the zone rules use). Elapsed time is measured on UTC instants, so a daylight-saving
   change never splits or merges a session.
3. **Half-day.** A session's first reading, in the patient's local wall-clock time, decides:
   inside :data:`PEF_MORNING_WINDOW` it is a morning session, inside :data:`PEF_EVENING_WINDOW`
   an evening session. A session starting outside both is the post-BD part of the session
   before it when it starts within the BD interval after it (see 4) on the same local date;
   otherwise its readings are unclassified ("blow at 03:10 on ... is outside the morning
   (06:00-11:00) and evening (18:00-23:00) windows").
4. **Phase.** A reading that says pre/post (``post_bd``) keeps what it says. Otherwise a
   session that starts between :data:`PEF_POST_BD_MIN_AFTER` and :data:`PEF_POST_BD_MAX_AFTER`
   after the *end* (last reading) of the previous session of the same half-day and local date is
   post-BD (the reliever is taken after the pre-BD blows); any other session is pre-BD. Each
   inferred post-BD session gets a note saying so, for the clinician to check.

Each blow's ``time`` is the reading's instant in the patient's zone (aware, with the offset in
force), so the diary files it under its local calendar date; in the repeated autumn hour two
blows with the same wall time stay two blows. ``blow_indices`` maps each blow back to its
reading (``readings[blow_indices[k]]`` gave ``blows[k]``): every reading is either a blow or
unclassified, exactly once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Final, TypeAlias
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cloud_ingest.analytics.pef_diary import Blow, Phase, Session
from device_profiles.clinical import PEF_METER_MAX_L_MIN, PEF_METER_MIN_L_MIN, Figure
from device_profiles.observation import CLOUD_ONLY_FLAGS, COMPARATORS, QualityFlag

__all__ = [
    "DEFAULT_TZ",
    "EXCLUDED_FLAGS",
    "PEF_EVENING_WINDOW",
    "PEF_MORNING_WINDOW",
    "PEF_POST_BD_MAX_AFTER",
    "PEF_POST_BD_MIN_AFTER",
    "PEF_SESSION_GAP_MIN",
    "PefBlowReading",
    "PefSession",
    "PefSessionsError",
    "ReadingLike",
    "SessionsResult",
    "Unclassified",
    "blows_from_readings",
]

DEFAULT_TZ: Final = "Europe/Helsinki"

#: Blows further apart than this start a new session. remon default: the gap the edge uses to
#: follow a board's session (edge_agent.signal.SESSION_GAP) and the zone rules use to find a
#: session's value (cloud_ingest.rules.pef_zones.PEF_SESSION_GAP_MIN, which analytics may not
#: import: tests/test_pef_sessions.py checks the two figures are the same).
PEF_SESSION_GAP_MIN: Final = Figure(
    10.0, "min", "remon default: the edge's PEF session gap (edge_agent.signal), configurable"
)
#: Local wall-clock windows ``[start, end)`` of the two daily sessions. DOMAIN.md §1: "morning
#: right after waking, evening at about the same time"; the bounds are remon defaults, the same
#: as the missed-session rule's (cloud_ingest.rules.silence.DEFAULT_PEF_WINDOWS, checked by the
#: tests), so a blow that keeps a diary window from being "missed" is a blow of that session.
PEF_MORNING_WINDOW: Final = (time(6, 0), time(11, 0))
PEF_EVENING_WINDOW: Final = (time(18, 0), time(23, 0))
#: A session starting at least this long after the end of the previous session of the same
#: half-day (and at most PEF_POST_BD_MAX_AFTER) is post-BD. DOMAIN.md §1 BD test: blows again
#: 15-30 min after the reliever, which is taken after the pre-BD blows. remon default 10 min:
#: anything nearer is the same session (the session gap).
PEF_POST_BD_MIN_AFTER: Final = Figure(
    10.0, "min", "DOMAIN.md §1 BD test (15-30 min after the reliever); remon default 10 min"
)
#: The latest start of a post-BD session after the previous session's end (remon default:
#: DOMAIN.md §1 says 15-30 min; a late second round is still the BD test, a session more than
#: an hour later is a new pre-BD session).
PEF_POST_BD_MAX_AFTER: Final = Figure(
    60.0, "min", "DOMAIN.md §1 BD test (15-30 min after the reliever); remon default 60 min"
)
#: Flags that keep a blow out of the diary's values (it stays listed, with the reason): the
#: edge's blow-quality flags and the device's "questionable" (as the PEF zone rules,
#: cloud_ingest.rules.pef_zones), the ingest's own flags, and derived (not measured) values.
EXCLUDED_FLAGS: Final[frozenset[str]] = frozenset(
    f.value
    for f in (
        QualityFlag.COUGH,
        QualityFlag.EARLY_STOP,
        QualityFlag.SLOW_RISE,
        QualityFlag.HESITATION,
        QualityFlag.LARGE_BEV,
        QualityFlag.QUESTIONABLE,
        QualityFlag.DERIVED,
        *CLOUD_ONLY_FLAGS,
    )
)

Window: TypeAlias = tuple[time, time]


class PefSessionsError(ValueError):
    """A parameter cannot be used (unknown time zone, windows out of order, bad interval)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PefBlowReading:
    """One stored PEF reading (one blow), as the store holds it.

    ``at`` is the effective time (aware; UTC in the store). ``post_bd`` is what the reading
    itself says (True post-BD, False pre-BD, None not said). Built from stored data, it is not
    validated here: what cannot be a blow comes back in ``unclassified`` with the reason.
    """

    at: datetime
    value: float | None
    post_bd: bool | None = None
    obs_id: str | None = None
    comparator: str | None = None
    quality: frozenset[str] = frozenset()


#: A reading as the dataclass, or as a ``(at, value, post_bd)`` tuple.
ReadingLike: TypeAlias = PefBlowReading | tuple[datetime, float | None, bool | None]


@dataclass(frozen=True, slots=True, kw_only=True)
class Unclassified:
    """A reading that is not a diary blow; ``index`` is its position in the input."""

    index: int
    reading: PefBlowReading
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PefSession:
    """A run of readings at most the session gap apart (all readings with an aware time).

    ``session``/``phase`` are None when the run is outside both windows; ``phase`` is the
    inferred one (a reading's own ``post_bd`` wins for that reading). ``start``/``end`` are the
    first and last reading's local times.
    """

    session: Session | None
    phase: Phase | None
    phase_inferred: bool
    start: datetime
    end: datetime
    indices: tuple[int, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionsResult:
    """``blows`` in time order for :func:`~.pef_diary.analyse_diary`; ``blow_indices[k]`` is the
    input position of ``blows[k]``; ``unclassified`` in time order (no-time readings last)."""

    tz: str
    blows: tuple[Blow, ...]
    blow_indices: tuple[int, ...]
    unclassified: tuple[Unclassified, ...]
    sessions: tuple[PefSession, ...]
    notes: tuple[str, ...]


# --------------------------------------------------------------------------------------------


def _zone(tz: str | ZoneInfo) -> ZoneInfo:
    if isinstance(tz, ZoneInfo):
        return tz
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise PefSessionsError(f"unknown time zone {tz!r}") from exc


def _minutes(name: str, fig: Figure) -> timedelta:
    if fig.unit != "min" or not math.isfinite(fig.value) or fig.value < 0:
        raise PefSessionsError(f"{name} must be >= 0 min, got {fig.value!r} {fig.unit}")
    return timedelta(minutes=fig.value)


def _hm(t: time) -> str:
    return t.isoformat("minutes")


def _window_text(name: str, w: Window) -> str:
    return f"{name} ({_hm(w[0])}-{_hm(w[1])})"


def _as_reading(r: ReadingLike) -> PefBlowReading:
    if isinstance(r, PefBlowReading):
        return r
    at, value, post_bd = r
    return PefBlowReading(at=at, value=value, post_bd=post_bd)


def _aware(dt: datetime) -> bool:
    return isinstance(dt, datetime) and dt.tzinfo is not None and dt.utcoffset() is not None


def _num(x: float) -> str:
    return f"{x:.0f}" if float(x).is_integer() else f"{x:g}"


def _usable(r: PefBlowReading) -> tuple[float | None, str | None]:
    """The reading's value as a diary blow, or why it cannot be one (never changed)."""
    v = r.value
    if v is None:
        return None, "no value (the meter reported none)"
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v <= 0:
        return None, f"value {v!r} L/min is not a positive finite number"
    if r.comparator is not None:
        if r.comparator in COMPARATORS:
            return None, (
                f"'{r.comparator} {_num(v)} L/min' is the meter's range limit (HI/LO), "
                "not a measured value"
            )
        return None, f"unknown comparator {r.comparator!r}"
    lo, hi = PEF_METER_MIN_L_MIN.value, PEF_METER_MAX_L_MIN.value
    if not lo <= v <= hi:
        return None, (
            f"value {_num(v)} L/min is outside the meter range {_num(lo)}-{_num(hi)} L/min "
            f"({PEF_METER_MIN_L_MIN.source})"
        )
    flags = sorted(str(f) for f in r.quality if str(f) in EXCLUDED_FLAGS)
    if flags:
        return None, (
            f"flagged {', '.join(flags)}: may not show the patient's true peak flow, "
            "so not used for the diary's values"
        )
    return v, None


def _in(t: time, w: Window) -> bool:
    return w[0] <= t < w[1]


def _check_window(name: str, w: Window) -> None:
    if len(w) != 2 or any(x.tzinfo is not None for x in w) or not w[0] < w[1]:
        raise PefSessionsError(
            f"{name} window must be (start, end) local times without a zone, start < end"
        )


@dataclass(slots=True)
class _Run:
    indices: list[int]
    first: datetime  # UTC-comparable aware instants
    last: datetime


def blows_from_readings(
    readings: Sequence[ReadingLike],
    *,
    tz: str | ZoneInfo = DEFAULT_TZ,
    session_gap: Figure = PEF_SESSION_GAP_MIN,
    morning: Window = PEF_MORNING_WINDOW,
    evening: Window = PEF_EVENING_WINDOW,
    post_bd_min_after: Figure = PEF_POST_BD_MIN_AFTER,
    post_bd_max_after: Figure = PEF_POST_BD_MAX_AFTER,
) -> SessionsResult:
    """Diary blows and unclassified readings from stored PEF readings (see the module doc)."""
    zone = _zone(tz)
    gap = _minutes("session_gap", session_gap)
    bd_lo = _minutes("post_bd_min_after", post_bd_min_after)
    bd_hi = _minutes("post_bd_max_after", post_bd_max_after)
    if bd_hi < bd_lo:
        raise PefSessionsError("post_bd_max_after must not be shorter than post_bd_min_after")
    _check_window("morning", morning)
    _check_window("evening", evening)
    if not morning[1] <= evening[0]:
        raise PefSessionsError("the morning window must end before the evening window starts")
    windows: tuple[tuple[Session, Window], ...] = (("morning", morning), ("evening", evening))
    zone_name = str(zone.key)

    items = [_as_reading(r) for r in readings]
    unclassified: list[Unclassified] = []
    no_time: list[Unclassified] = []
    timed: list[int] = []
    for i, r in enumerate(items):
        if _aware(r.at):
            timed.append(i)
        else:
            no_time.append(
                Unclassified(
                    index=i,
                    reading=r,
                    reason=f"time {r.at!r} has no time zone: the local session cannot be known",
                )
            )
    # instants in UTC: aware datetimes sharing a tzinfo subtract and compare by wall time
    utc = {i: items[i].at.astimezone(UTC) for i in timed}
    timed.sort(key=lambda i: (utc[i], i))

    runs: list[_Run] = []
    for i in timed:
        at = utc[i]
        if runs and at - runs[-1].last <= gap:
            runs[-1].indices.append(i)
            runs[-1].last = at
        else:
            runs.append(_Run(indices=[i], first=at, last=at))

    local = {i: utc[i].astimezone(zone) for i in timed}
    sessions: list[PefSession] = []
    notes: list[str] = []
    blow_pairs: list[tuple[int, Blow]] = []
    # the latest classified run of each (local date, half-day): its end, for the BD test
    latest: dict[tuple[date, Session], datetime] = {}
    latest_any: tuple[date, Session, datetime] | None = None
    for run in runs:
        start = local[run.indices[0]]
        end = local[run.indices[-1]]
        day = start.date()
        half: Session | None = next((s for s, w in windows if _in(start.time(), w)), None)
        inferred = False
        phase: Phase | None = None
        where = f"{start.date().isoformat()} {_hm(start.time())}"
        if half is not None:
            prev_end = latest.get((day, half))
            if prev_end is not None and bd_lo <= run.first - prev_end <= bd_hi:
                phase, inferred = "post", True
                notes.append(
                    f"{half} session at {where} taken as post-BD: it starts "
                    f"{_mins(run.first - prev_end)} min after the previous {half} session"
                )
            else:
                phase = "pre"
        elif latest_any is not None:
            pday, psession, pend = latest_any
            if pday == day and bd_lo <= run.first - pend <= bd_hi:
                half, phase, inferred = psession, "post", True
                notes.append(
                    f"session at {where} is outside the {psession} window but starts "
                    f"{_mins(run.first - pend)} min after the {psession} session: taken as its "
                    "post-BD session"
                )
        sessions.append(
            PefSession(
                session=half,
                phase=phase,
                phase_inferred=inferred,
                start=start,
                end=end,
                indices=tuple(run.indices),
            )
        )
        if half is None or phase is None:
            for i in run.indices:
                t = local[i]
                unclassified.append(
                    Unclassified(
                        index=i,
                        reading=items[i],
                        reason=(
                            f"blow at {_hm(t.time())} on {t.date().isoformat()} ({zone_name}) "
                            f"is outside the {_window_text('morning', morning)} and "
                            f"{_window_text('evening', evening)} windows"
                            + ("" if i == run.indices[0] else f" (its session began {where})")
                        ),
                    )
                )
            continue
        latest[(day, half)] = run.last
        latest_any = (day, half, run.last)
        for i in run.indices:
            r = items[i]
            value, problem = _usable(r)
            if value is None:
                unclassified.append(Unclassified(index=i, reading=r, reason=str(problem)))
                continue
            own: Phase | None = None if r.post_bd is None else ("post" if r.post_bd else "pre")
            blow_pairs.append(
                (
                    i,
                    Blow(
                        time=local[i],
                        session=half,
                        phase=own or phase,
                        pef_l_min=value,
                    ),
                )
            )
    return SessionsResult(
        tz=zone_name,
        blows=tuple(b for _, b in blow_pairs),
        blow_indices=tuple(i for i, _ in blow_pairs),
        unclassified=tuple(unclassified + no_time),
        sessions=tuple(sessions),
        notes=tuple(notes),
    )


def _mins(d: timedelta) -> str:
    return _num(round(d.total_seconds() / 60, 1))
