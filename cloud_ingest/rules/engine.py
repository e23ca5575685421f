"""Threshold evaluation: newly stored readings + open alerts -> alert actions. Pure.

Theory of operation (DOMAIN.md §5, alarm fatigue):

- One open alert per subject + condition. An open (or acknowledged) alert is updated by further
  triggering readings (``trigger_count``, last reading); a second alert is never raised for it.
- A reading triggers a condition only when it *decisively* meets it: a plain value is compared
  directly; a device LO/HI reading (value = range limit with a comparator, e.g. ``< 1.1``)
  triggers when every value it stands for meets the threshold (``< 1.1`` is below 3.0), and does
  not trigger when the bound leaves it undecided (``> 22.2`` says nothing about a low).
  A reading with an ``absent_reason`` never triggers and never clears.
- Of the conditions of one family a reading meets, only the most severe is triggered
  (see :mod:`cloud_ingest.rules.thresholds`).
- A reading newer than the alert's last trigger that is decisively back past the threshold by the
  hysteresis sets ``cleared_at`` (its effective time). The alert stays open for a human to
  resolve. A later triggering reading un-clears it.
- Readings are processed in effective-time order. A late (backfilled) reading older than the
  alert's last trigger adds to the count but neither clears it nor replaces the latest reading.
- Qualified thresholds ("N in a row", "for N minutes"; see :class:`Threshold`) gate *raising*:
  with no alert of the condition yet, a meeting reading raises it only when the run of meeting
  readings that ends at it is long enough. The run is read from the subject's readings of that
  measure: the ``history`` the caller passes (readings stored before this batch, see
  :func:`history_needed`) and this batch's own readings. A non-meeting, absent or questionable
  reading breaks a run, and for "for N minutes" so does a gap longer than ``max_gap``. The run
  the alert reports is the shortest one that qualifies (the ``confirm_count`` readings, or the
  span back to the latest reading at least ``confirm_for`` before), so the answer never depends
  on how much history beyond :func:`history_needed`'s window was passed; it starts the alert
  (first evidence, trigger count, simulated). A late reading is judged by the run that ends at
  it, in effective-time order: it does not re-judge readings stored after it (the next meeting
  reading, whose run now includes it, does).
- Every alert explains itself: the rule, the threshold with unit and source, the triggering
  readings, LO/HI device readings and simulated data are named. No wording states a diagnosis.
"""

from __future__ import annotations

import math
import operator
from bisect import bisect_right
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Final, Literal, Protocol

from cloud_ingest.rules.thresholds import (
    DEFAULT_THRESHOLDS,
    PRIORITY_ORDER,
    Priority,
    Threshold,
    ThresholdComparator,
    ThresholdOverride,
    apply_override,
    format_duration,
    threshold_index,
)
from device_profiles.codes import MEASURES

SIMULATED_FLAG: Final = "simulated"
#: The device itself marked the reading questionable/invalid (PROTOCOLS.md, PLX measurement
#: status): such readings are stored and shown but never raise, update or clear an alert.
QUESTIONABLE_FLAG: Final = "questionable"

EventAction = Literal["raised", "updated", "cleared"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Reading:
    """What the rules need of one stored observation."""

    obs_id: str
    subject_ref: str
    measure: str
    unit: str
    effective_time: datetime
    value: float | None
    comparator: str | None = None
    absent_reason: str | None = None
    quality: frozenset[str] = frozenset()


#: Readings of one (subject_ref, measure) stored before the batch, in any order (see
#: :func:`evaluate` and :func:`history_needed`).
HistoryMap = Mapping[tuple[str, str], Sequence[Reading]]
_NO_HISTORY: Final[HistoryMap] = MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class Evidence:
    """A triggering reading as an alert remembers it."""

    obs_id: str
    value: float
    comparator: str | None
    time: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertState:
    """An open or acknowledged alert (``id`` None while not yet stored)."""

    id: int | None
    subject_ref: str
    condition: str
    measure: str
    priority: Priority
    rule: str
    threshold_value: float
    threshold_unit: str
    threshold_comparator: ThresholdComparator
    threshold_source: str
    explanation: str
    first: Evidence
    last: Evidence
    trigger_count: int
    simulated: bool
    cleared_at: datetime | None = None
    cleared_by_obs_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertEvent:
    action: EventAction
    at: datetime
    note: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertAction:
    """The new state of one alert and the audit events that led there."""

    kind: Literal["raise", "update"]
    state: AlertState
    events: tuple[AlertEvent, ...] = field(default_factory=tuple)


# --------------------------------------------------------------------------------------------
# comparing a reading (possibly a LO/HI bound) with a threshold


@dataclass(frozen=True, slots=True)
class _Interval:
    lo: float
    lo_incl: bool
    hi: float
    hi_incl: bool


def _interval(value: float, comparator: str | None) -> _Interval:
    inf = math.inf
    if comparator is None:
        return _Interval(value, True, value, True)
    if comparator == "<":
        return _Interval(-inf, False, value, False)
    if comparator == "<=":
        return _Interval(-inf, False, value, True)
    if comparator == ">":
        return _Interval(value, False, inf, False)
    if comparator == ">=":
        return _Interval(value, True, inf, False)
    raise ValueError(f"unknown comparator {comparator!r}")


def _always(iv: _Interval, cmp: str, t: float) -> bool:
    """Every value the reading stands for satisfies ``x cmp t``."""
    if cmp == "<":
        return iv.hi < t or (iv.hi == t and not iv.hi_incl)
    if cmp == "<=":
        return iv.hi <= t
    if cmp == ">":
        return iv.lo > t or (iv.lo == t and not iv.lo_incl)
    if cmp == ">=":
        return iv.lo >= t
    raise ValueError(f"unknown comparator {cmp!r}")


def _never(iv: _Interval, cmp: str, t: float) -> bool:
    """No value the reading stands for satisfies ``x cmp t``."""
    if cmp == "<":
        return iv.lo >= t
    if cmp == "<=":
        return iv.lo > t or (iv.lo == t and not iv.lo_incl)
    if cmp == ">":
        return iv.hi <= t
    if cmp == ">=":
        return iv.hi < t or (iv.hi == t and not iv.hi_incl)
    raise ValueError(f"unknown comparator {cmp!r}")


#: Readings are compared with thresholds at the resolution care reads them in (DOMAIN.md: mmol/L
#: and Cel to 0.1; mm[Hg], /min and % whole). A meter showing 54 mg/dL is 2.997 mmol/L after
#: conversion but reads 3.0 mmol/L, and "< 3.0 mmol/L (< 54 mg/dL)" must not fire on it.
#: The stored value keeps full precision; only the comparison rounds.
COMPARE_DECIMALS: Final = 1
#: Units read finer than that: a glucose rate of change (mmol/L/min) is read to 0.001, the
#: resolution of the 1 mg/dL/min steps of the trend bands (DOMAIN.md §2: 1 mg/dL/min is
#: 0.056 mmol/L/min).
DECIMALS_BY_UNIT: Final[Mapping[str, int]] = {"mmol/L/min": 3}


def decimals(unit: str) -> int:
    return DECIMALS_BY_UNIT.get(unit, COMPARE_DECIMALS)


def at_resolution(value: float | None, unit: str = "") -> float | None:
    return None if value is None else round(value, decimals(unit))


def meets(reading: Reading, comparator: str, value: float) -> bool:
    """The reading decisively meets ``comparator value`` (absent readings never do)."""
    v = at_resolution(reading.value, reading.unit)
    if v is None or reading.absent_reason is not None:
        return False
    return _meets_value(v, reading.comparator, comparator, value)


#: Plain (comparator-less) values compare directly: the same answer as :func:`_always` on a point
#: interval, without building one. Hot path: every new reading passes here per threshold.
_POINT_OPS: Final[Mapping[str, Callable[[float, float], bool]]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _meets_value(value: float, comparator: str | None, cmp: str, t: float) -> bool:
    """:func:`meets` for a reading known to have a value and no absent reason."""
    if comparator is None:
        op = _POINT_OPS.get(cmp)
        if op is not None:
            return op(value, t)
    return _always(_interval(value, comparator), cmp, t)


def clear_bound(comparator: str, value: float, hysteresis: float) -> float:
    """The threshold moved by the hysteresis, away from the alert range (rounded: no 3.2000001)."""
    moved = value + hysteresis if comparator in ("<", "<=") else value - hysteresis
    return round(moved, 9)


def clears(reading: Reading, comparator: str, value: float, hysteresis: float) -> bool:
    """The reading is decisively back past the threshold by at least the hysteresis."""
    v = at_resolution(reading.value, reading.unit)
    if v is None or reading.absent_reason is not None:
        return False
    return _clears_value(v, reading.comparator, comparator, value, hysteresis)


# --------------------------------------------------------------------------------------------
# wording


def _time(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _num(v: float, unit: str = "") -> str:
    """A reading's value as care reads it (the stored value keeps full precision)."""
    return f"{round(v, decimals(unit)):g}"


def describe_reading(
    measure: str, value: float, comparator: str | None, unit: str, time: datetime
) -> str:
    m = MEASURES.get(measure)
    name = m.display if m is not None else measure
    if comparator in ("<", "<="):
        text = (
            f"{name} LO reading: the device reported a value below its measuring range "
            f"({comparator} {_num(value, unit)} {unit})"
        )
    elif comparator in (">", ">="):
        text = (
            f"{name} HI reading: the device reported a value above its measuring range "
            f"({comparator} {_num(value, unit)} {unit})"
        )
    else:
        text = f"{name} {_num(value, unit)} {unit}"
    return f"{text} at {_time(time)}"


def explain(state: AlertState, threshold: Threshold, *, raised_by_run: bool = False) -> str:
    """The alert's self-explanation: rule, threshold, unit, source, triggering readings.

    ``raised_by_run``: ``state`` is the alert just raised by a qualified threshold's run (first
    evidence = the run's first reading, last = the reading that completed it, trigger count =
    its length); the explanation then says how long the run was. Later updates keep the rule's
    qualifier and the first reading of the run (the audit event of the raise keeps the figures).
    """
    qualifier = threshold.describe_qualifier()
    parts = [
        f"{threshold.title}. Rule {threshold.condition} ({state.priority.value} priority): "
        f"a reading {state.threshold_comparator} "
        f"{_num(state.threshold_value, state.threshold_unit)} "
        f"{state.threshold_unit} triggers it"
        + (f" once the condition has held {qualifier}" if qualifier else "")
        + f". Source: {state.threshold_source}.",
    ]
    if qualifier:
        parts.append(
            _run_sentence(state, threshold)
            if raised_by_run
            else "The first triggering reading is the first of the run that raised it."
        )
    parts += [
        "First triggering reading: "
        + describe_reading(
            state.measure,
            state.first.value,
            state.first.comparator,
            state.threshold_unit,
            state.first.time,
        )
        + f" (observation {state.first.obs_id}).",
    ]
    if state.trigger_count > 1:
        parts.append(
            f"{state.trigger_count} readings have met the condition; latest: "
            + describe_reading(
                state.measure,
                state.last.value,
                state.last.comparator,
                state.threshold_unit,
                state.last.time,
            )
            + f" (observation {state.last.obs_id})."
        )
    if state.simulated:
        parts.append(
            "Simulated data: at least one triggering reading carries the 'simulated' "
            "quality flag and is not patient data."
        )
    if state.cleared_at is not None:
        parts.append(
            f"Back past the threshold by the hysteresis ({threshold.hysteresis:g} "
            f"{threshold.unit}) since {_time(state.cleared_at)}; awaiting review."
        )
    return " ".join(parts)


def _run_sentence(state: AlertState, threshold: Threshold) -> str:
    """How the qualifying run met the rule ("met continuously for 17 min (from ...)")."""
    first = f"first reading of the run: observation {state.first.obs_id}"
    if threshold.confirm_for > timedelta(0):
        span = format_duration(state.last.time - state.first.time)
        return (
            f"Raised when met continuously for {span} (from {_time(state.first.time)}) "
            f"by {state.trigger_count} readings in a row; {first}."
        )
    return (
        f"Raised when met by {state.trigger_count} readings in a row "
        f"(from {_time(state.first.time)}); {first}."
    )


# --------------------------------------------------------------------------------------------
# evaluation


OverrideMap = Mapping[tuple[str, str], ThresholdOverride]


def evaluate(
    readings: Iterable[Reading],
    *,
    open_alerts: Iterable[AlertState],
    now: datetime,
    overrides: OverrideMap | None = None,
    thresholds: Sequence[Threshold] = DEFAULT_THRESHOLDS,
    history: HistoryMap = _NO_HISTORY,
) -> list[AlertAction]:
    """Alert actions for newly stored ``readings`` given the currently open alerts.

    ``overrides`` maps (subject_ref, condition) to a patient-specific value. ``history`` maps
    (subject_ref, measure) to readings stored before this batch, in any order, for the runs of
    qualified thresholds (:func:`history_needed` says which and how far back; a reading also in
    ``readings``, by obs_id, counts once, as the batch has it). History only ever completes or
    breaks a run: it raises, updates and clears nothing by itself. Returns one action per alert
    raised or changed, in a stable order; unchanged alerts are not returned.
    """
    by_condition = threshold_index(thresholds)
    by_measure = _by_measure(thresholds)
    effective = _Effective(overrides)
    _check_history(history)

    states: dict[tuple[str, str], AlertState] = {}
    for a in open_alerts:
        key = (a.subject_ref, a.condition)
        if key in states:
            raise ValueError(f"two open alerts for {key}")
        states[key] = a
    original = dict(states)
    events: dict[tuple[str, str], list[AlertEvent]] = {}
    touched: list[tuple[str, str]] = []

    def touch(key: tuple[str, str], new: AlertState, event: AlertEvent | None) -> None:
        states[key] = new
        if key not in events:
            events[key] = []
            touched.append(key)
        if event is not None:
            events[key].append(event)

    ordered = sorted(readings, key=_time_order)
    runs = _Runs(ordered, history)
    for r in ordered:
        value = at_resolution(r.value, r.unit)
        if value is None or r.absent_reason is not None or QUESTIONABLE_FLAG in r.quality:
            continue
        applicable = by_measure.get(r.measure)
        if not applicable:
            continue
        # 1. which condition (most severe per family) does this reading trigger? A qualified
        # condition with no alert yet triggers only once its run is complete.
        triggered: dict[str, Threshold] = {}
        raising_runs: dict[str, _Run] = {}
        for default in applicable:
            t = effective(r.subject_ref, default)
            if r.unit != t.unit or not _meets_value(value, r.comparator, t.comparator, t.value):
                continue
            best = triggered.get(t.family)
            if best is not None and _severity(t) <= _severity(best):
                continue
            if t.is_qualified and (r.subject_ref, t.condition) not in states:
                run = runs.qualifying(r, t)
                if run is None:
                    continue  # met, not yet long enough: neither raises nor blocks a lesser one
                raising_runs[t.condition] = run
            triggered[t.family] = t
        if not triggered and not states:
            continue  # nothing to raise, update or clear
        simulated = SIMULATED_FLAG in r.quality
        evidence = (
            Evidence(obs_id=r.obs_id, value=value, comparator=r.comparator, time=r.effective_time)
            if triggered
            else None
        )
        for t in triggered.values():
            assert evidence is not None
            key = (r.subject_ref, t.condition)
            cur = states.get(key)
            if cur is None:
                run = raising_runs.get(t.condition)
                new = AlertState(
                    id=None,
                    subject_ref=r.subject_ref,
                    condition=t.condition,
                    measure=r.measure,
                    priority=t.priority,
                    rule=t.condition,
                    threshold_value=t.value,
                    threshold_unit=t.unit,
                    threshold_comparator=t.comparator,
                    threshold_source=t.source,
                    explanation="",
                    first=evidence if run is None else run.first,
                    last=evidence,
                    trigger_count=1 if run is None else len(run.readings),
                    simulated=simulated if run is None else run.simulated,
                )
                new = replace(
                    new,
                    explanation=explain(
                        new, by_condition[t.condition], raised_by_run=run is not None
                    ),
                )
                note = (
                    f"raised by observation {r.obs_id} "
                    f"({_num(value, r.unit)} {r.unit} {t.describe()})"
                )
                if run is not None:
                    note += (
                        f", completing a run of {len(run.readings)} readings over "
                        f"{format_duration(r.effective_time - run.first.time)} from observation "
                        f"{run.first.obs_id}"
                    )
                touch(key, new, AlertEvent(action="raised", at=now, note=note))
                continue
            newer = r.effective_time >= cur.last.time
            uncleared = cur.cleared_at is not None and r.effective_time > cur.cleared_at
            new = replace(
                cur,
                last=evidence if newer else cur.last,
                trigger_count=cur.trigger_count + 1,
                simulated=cur.simulated or simulated,
                cleared_at=None if uncleared else cur.cleared_at,
                cleared_by_obs_id=None if uncleared else cur.cleared_by_obs_id,
            )
            new = replace(new, explanation=explain(new, by_condition[t.condition]))
            touch(
                key,
                new,
                AlertEvent(
                    action="updated",
                    at=now,
                    note=(
                        f"condition present again: observation {r.obs_id}"
                        if uncleared
                        else f"further triggering observation {r.obs_id}"
                    ),
                ),
            )
        # 2. does it clear alerts it did not trigger?
        for default in applicable:
            key = (r.subject_ref, default.condition)
            cur = states.get(key)
            if cur is None or (
                triggered and default.condition in {t.condition for t in triggered.values()}
            ):
                continue
            if cur.cleared_at is not None or r.effective_time <= cur.last.time:
                continue
            if r.unit != cur.threshold_unit:
                continue
            if not clears(r, cur.threshold_comparator, cur.threshold_value, default.hysteresis):
                continue
            new = replace(cur, cleared_at=r.effective_time, cleared_by_obs_id=r.obs_id)
            new = replace(new, explanation=explain(new, by_condition[default.condition]))
            bound = clear_bound(cur.threshold_comparator, cur.threshold_value, default.hysteresis)
            touch(
                key,
                new,
                AlertEvent(
                    action="cleared",
                    at=now,
                    note=(
                        f"observation {r.obs_id} ({_num(value, r.unit)} {r.unit}) is back "
                        f"past {_num(bound, r.unit)} {r.unit} (threshold ± hysteresis)"
                    ),
                ),
            )

    actions: list[AlertAction] = []
    for key in touched:
        state = states[key]
        if state == original.get(key):
            continue
        kind: Literal["raise", "update"] = "raise" if state.id is None else "update"
        actions.append(AlertAction(kind=kind, state=state, events=tuple(events[key])))
    return actions


def _severity(t: Threshold) -> tuple[int, int]:
    return (t.rank, PRIORITY_ORDER[t.priority])


# --------------------------------------------------------------------------------------------
# runs of qualified thresholds: history + batch, per (subject, measure)


def decisively_meets(reading: Reading, threshold: Threshold) -> bool:
    """The reading counts as meeting ``threshold`` in a run: it has a value in the threshold's
    unit, no absent reason, is not questionable, and decisively meets it (LO/HI aware)."""
    if (
        reading.absent_reason is not None
        or QUESTIONABLE_FLAG in reading.quality
        or reading.unit != threshold.unit
    ):
        return False
    v = at_resolution(reading.value, reading.unit)
    return v is not None and _meets_value(
        v, reading.comparator, threshold.comparator, threshold.value
    )


@dataclass(frozen=True, slots=True)
class _Run:
    """Meeting readings in a row, in effective-time order; the last one completes the run."""

    readings: tuple[Reading, ...]

    @property
    def first(self) -> Evidence:
        r = self.readings[0]
        value = at_resolution(r.value, r.unit)
        assert value is not None  # a run holds meeting readings only
        return Evidence(
            obs_id=r.obs_id, value=value, comparator=r.comparator, time=r.effective_time
        )

    @property
    def simulated(self) -> bool:
        return any(SIMULATED_FLAG in r.quality for r in self.readings)


@dataclass(frozen=True, slots=True)
class _Line:
    """One (subject, measure)'s readings, history and batch, in :func:`evaluate`'s order."""

    readings: list[Reading]
    times: list[datetime]
    index: dict[Reading, int]


def _check_history(history: HistoryMap) -> None:
    for key, rs in history.items():
        if not (isinstance(key, tuple) and len(key) == 2):
            raise ValueError(f"history key {key!r} must be a (subject_ref, measure) pair")
        for x in rs:
            if (x.subject_ref, x.measure) != key:
                raise ValueError(
                    f"history[{key!r}] holds observation {x.obs_id} of "
                    f"({x.subject_ref!r}, {x.measure!r})"
                )


class _Runs:
    """Answers "is the run ending at this reading long enough?", building what it needs lazily:
    most batches meet no qualified threshold and pay nothing."""

    __slots__ = ("_batch", "_grouped", "_history", "_lines", "_starts")

    def __init__(self, batch: Sequence[Reading], history: HistoryMap) -> None:
        self._batch = batch  # in evaluate's order
        self._history = history
        self._grouped: dict[tuple[str, str], list[Reading]] | None = None
        self._lines: dict[tuple[str, str], _Line] = {}
        self._starts: dict[tuple[str, str, str], list[int]] = {}

    def _line(self, subject: str, measure: str) -> _Line:
        key = (subject, measure)
        line = self._lines.get(key)
        if line is not None:
            return line
        if self._grouped is None:
            self._grouped = {}
            for r in self._batch:
                self._grouped.setdefault((r.subject_ref, r.measure), []).append(r)
        mine = self._grouped.get(key, [])
        ids = {r.obs_id for r in mine}
        merged = sorted(
            [*mine, *(x for x in self._history.get(key, ()) if x.obs_id not in ids)],
            key=_time_order,
        )
        line = _Line(
            merged, [x.effective_time for x in merged], {x: i for i, x in enumerate(merged)}
        )
        self._lines[key] = line
        return line

    def _run_starts(self, line: _Line, subject: str, measure: str, t: Threshold) -> list[int]:
        """For each reading of the line, where the run of readings meeting ``t`` that ends at
        it starts (-1: the reading does not meet ``t``)."""
        key = (subject, measure, t.condition)
        starts = self._starts.get(key)
        if starts is not None:
            return starts
        gaps_break = t.confirm_for > timedelta(0)
        starts = []
        for i, x in enumerate(line.readings):
            if not decisively_meets(x, t):
                starts.append(-1)
            elif (
                i > 0
                and starts[i - 1] >= 0
                and not (gaps_break and line.times[i] - line.times[i - 1] > t.max_gap)
            ):
                starts.append(starts[i - 1])
            else:
                starts.append(i)
        self._starts[key] = starts
        return starts

    def qualifying(self, r: Reading, t: Threshold) -> _Run | None:
        """The shortest run ending at ``r`` that satisfies ``t``'s qualifiers, or None."""
        line = self._line(r.subject_ref, r.measure)
        idx = line.index[r]
        start = self._run_starts(line, r.subject_ref, r.measure, t)[idx]
        if start < 0:
            return None
        first = idx - t.confirm_count + 1
        if t.confirm_for > timedelta(0):
            # the latest reading at least confirm_for before r
            latest = bisect_right(line.times, r.effective_time - t.confirm_for, 0, idx + 1) - 1
            first = min(first, latest)
        if first < start:
            return None
        return _Run(tuple(line.readings[first : idx + 1]))


# --------------------------------------------------------------------------------------------
# which stored readings evaluate() needs as history


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryWindow:
    """The stored readings of one (subject, measure) that :func:`evaluate` needs as history.

    Every stored reading with ``since <= effective_time <= until``, plus the ``last_n`` stored
    readings just before ``since`` (the latest effective times; ties broken by obs_id, the
    order :func:`evaluate` uses). *Every* reading, absent and questionable ones included: they
    break runs, and leaving them out could join two runs into one that raises. More history
    than this never changes :func:`evaluate`'s answer; less can miss a run.
    :meth:`select` is the reference for the query.
    """

    since: datetime
    until: datetime
    last_n: int = 0

    def merge(self, other: HistoryWindow) -> HistoryWindow:
        return HistoryWindow(
            since=min(self.since, other.since),
            until=max(self.until, other.until),
            last_n=max(self.last_n, other.last_n),
        )

    def select(self, stored: Iterable[Reading]) -> list[Reading]:
        """The window's readings out of ``stored`` (all stored readings of its key)."""
        inside: list[Reading] = []
        before: list[Reading] = []
        for x in stored:
            if x.effective_time < self.since:
                before.append(x)
            elif x.effective_time <= self.until:
                inside.append(x)
        before.sort(key=_time_order)
        kept = before[len(before) - self.last_n :] if self.last_n > 0 else []
        return kept + sorted(inside, key=_time_order)


def history_needed(
    readings: Iterable[Reading],
    *,
    open_alerts: Iterable[AlertState] = (),
    overrides: OverrideMap | None = None,
    thresholds: Sequence[Threshold] = DEFAULT_THRESHOLDS,
) -> dict[tuple[str, str], HistoryWindow]:
    """Which stored readings :func:`evaluate` needs as ``history`` for these ``readings``.

    Only readings that could *raise* a qualified condition ask for history: the reading meets it
    decisively, no alert of (subject, condition) is open in ``open_alerts``, and the reading
    meets no more severe immediate condition of its family (that one wins). Such a reading
    needs the ``confirm_count - 1`` readings just before it and, for ``confirm_for``, every
    reading back to ``confirm_for + max_gap`` before it (a run reaching back ``confirm_for``
    has a reading in that last ``max_gap``, as no gap of the run is longer). The windows of one
    (subject, measure) are merged into one. Call it with the readings that will be passed to
    :func:`evaluate` (after :func:`needs_evaluation`) and the same alerts, overrides and
    thresholds; most batches need no history at all (an empty dict).
    """
    qualified = _by_measure(t for t in thresholds if t.is_qualified)
    if not qualified:
        return {}
    by_measure = _by_measure(thresholds)
    effective = _Effective(overrides)
    open_keys = {(a.subject_ref, a.condition) for a in open_alerts}
    out: dict[tuple[str, str], HistoryWindow] = {}
    for r in readings:
        candidates = qualified.get(r.measure)
        if not candidates or r.absent_reason is not None or QUESTIONABLE_FLAG in r.quality:
            continue
        value = at_resolution(r.value, r.unit)
        if value is None:
            continue
        for default in candidates:
            if (r.subject_ref, default.condition) in open_keys:
                continue
            t = effective(r.subject_ref, default)
            if (
                r.unit != t.unit
                or not _meets_value(value, r.comparator, t.comparator, t.value)
                or _outranked(r.subject_ref, value, r, t, by_measure[r.measure], effective)
            ):
                continue
            at = r.effective_time
            since = at - t.confirm_for - t.max_gap if t.confirm_for > timedelta(0) else at
            w = HistoryWindow(since=since, until=at, last_n=t.confirm_count - 1)
            key = (r.subject_ref, r.measure)
            cur = out.get(key)
            out[key] = w if cur is None else cur.merge(w)
    return out


def _time_order(r: Reading) -> tuple[datetime, str]:
    return (r.effective_time, r.obs_id)


def _by_measure(thresholds: Iterable[Threshold]) -> dict[str, list[Threshold]]:
    out: dict[str, list[Threshold]] = {}
    for t in thresholds:
        for m in t.measures:
            out.setdefault(m, []).append(t)
    return out


class _Effective:
    """The threshold in effect for (subject, default): :func:`apply_override`, memoised."""

    __slots__ = ("_cache", "_overrides")

    def __init__(self, overrides: OverrideMap | None) -> None:
        self._overrides = overrides or {}
        self._cache: dict[tuple[str, str], Threshold] = {}

    def __call__(self, subject_ref: str, default: Threshold) -> Threshold:
        if not self._overrides:
            return default
        key = (subject_ref, default.condition)
        t = self._cache.get(key)
        if t is None:
            t = self._cache[key] = apply_override(default, self._overrides.get(key))
        return t


# --------------------------------------------------------------------------------------------
# prefiltering: which new readings can change an alert at all


class ReadingFacts(Protocol):
    """What :func:`needs_evaluation` reads of a reading (a :class:`Reading`, or the stored
    observation it would be built from)."""

    @property
    def measure(self) -> str: ...
    @property
    def unit(self) -> str: ...
    @property
    def effective_time(self) -> datetime: ...
    @property
    def value(self) -> float | None: ...
    @property
    def comparator(self) -> str | None: ...
    @property
    def absent_reason(self) -> object | None: ...


@dataclass(slots=True)
class _Track:
    """What :func:`needs_evaluation` knows of one (subject, condition) alert state."""

    live: bool  # may exist uncleared (False: certainly absent or cleared)
    last: datetime  # upper bound of its latest trigger time
    comparator: str  # its threshold (an open alert keeps the one it was raised with)
    value: float
    unit: str


def needs_evaluation(
    readings: Sequence[tuple[str, str, ReadingFacts]],
    *,
    open_alerts: Iterable[AlertState],
    overrides: OverrideMap | None = None,
    thresholds: Sequence[Threshold] = DEFAULT_THRESHOLDS,
) -> list[int]:
    """Indices of the (subject_ref, obs_id, reading) triples that :func:`evaluate` must see.

    :func:`evaluate` returns the same actions for the selected readings as for all of them.
    A reading that meets no threshold of its measure can only *clear* an uncleared alert state
    (subject, condition) whose latest trigger is older than the reading. Walking the readings in
    :func:`evaluate`'s order, each state is tracked conservatively: it *may be live* (exist
    uncleared) from an open uncleared alert or from any reading that meets the condition, and it
    is *certainly not live* after a reading that would clear it if it were (newer than every
    possible trigger so far, same unit, back past the state's threshold by the hysteresis).
    A reading that meets nothing while no state of its conditions may be live is a no-op inside
    :func:`evaluate` (as are readings without a value, with an absent reason, or of a measure
    without thresholds), so leaving it out cannot change what the kept readings see.

    Qualified thresholds also read runs, and a dropped reading that breaks a run could let two
    runs join. So for a reading that may raise a qualified condition (it meets it, no alert of
    it is open, and it meets no more severe immediate condition of the family, which would
    win), the latest reading before it that does not meet the condition (absent, questionable,
    another unit included) is kept: that reading is where its run starts, and every reading
    after it meets the condition and is kept anyway. This costs no object per reading; most
    readings are far from every threshold and are dropped.
    """
    by_measure = _by_measure(thresholds)
    qualified = _by_measure(t for t in thresholds if t.is_qualified)
    effective = _Effective(overrides)
    tracks: dict[tuple[str, str], _Track] = {}
    open_keys: set[tuple[str, str]] = set()
    for a in open_alerts:
        key = (a.subject_ref, a.condition)
        if key in tracks:
            raise ValueError(f"two open alerts for {key}")
        open_keys.add(key)
        tracks[key] = _Track(
            a.cleared_at is None,
            a.last.time,
            a.threshold_comparator,
            a.threshold_value,
            a.threshold_unit,
        )
    order = sorted(
        range(len(readings)), key=lambda i: (readings[i][2].effective_time, readings[i][1])
    )
    keep: list[int] = []
    breakers: dict[tuple[str, str], int] = {}  # (subject, condition): latest non-meeting reading
    for i in order:
        subject, _, r = readings[i]
        value = at_resolution(r.value, r.unit)
        for default in qualified.get(r.measure, ()):
            key = (subject, default.condition)
            if key in open_keys:
                continue  # an open alert is updated by any reading: no run is read
            t = effective(subject, default)
            if (
                value is None
                or r.absent_reason is not None
                or r.unit != t.unit
                or not _meets_value(value, r.comparator, t.comparator, t.value)
            ):
                breakers[key] = i
            elif key in breakers and not _outranked(
                subject, value, r, t, by_measure[r.measure], effective
            ):
                keep.append(breakers.pop(key))
        # (a questionable reading is kept here: evaluate() skips it, keeping it is only safe;
        # it never ends a track, see _may_be_questionable)
        if value is None or r.absent_reason is not None:
            continue
        applicable = by_measure.get(r.measure)
        if not applicable:
            continue
        needed = False
        at = r.effective_time
        for default in applicable:
            key = (subject, default.condition)
            tr = tracks.get(key)
            t = effective(subject, default)
            if r.unit == t.unit and _meets_value(value, r.comparator, t.comparator, t.value):
                needed = True
                if tr is None:
                    tracks[key] = _Track(True, at, t.comparator, t.value, t.unit)
                else:
                    tr.live = True
                    tr.last = max(tr.last, at)
            elif tr is not None and tr.live:
                needed = True
                if (
                    at > tr.last
                    and r.unit == tr.unit
                    and not _may_be_questionable(r)
                    and _clears_value(
                        value, r.comparator, tr.comparator, tr.value, default.hysteresis
                    )
                ):
                    tr.live = False
        if needed:
            keep.append(i)
    return sorted(set(keep))


def _may_be_questionable(r: ReadingFacts) -> bool:
    """A questionable reading clears nothing in :func:`evaluate`, so it must not end a track
    here (else the reading that does clear would be dropped). :class:`ReadingFacts` need not
    carry quality flags: without them, assume it may be."""
    quality: Collection[str] | None = getattr(r, "quality", None)
    return quality is None or QUESTIONABLE_FLAG in quality


def _outranked(
    subject: str,
    value: float,
    r: ReadingFacts,
    t: Threshold,
    applicable: Iterable[Threshold],
    effective: _Effective,
) -> bool:
    """The reading meets an immediate condition of ``t``'s family that is more severe than
    ``t``: it triggers that one, so it cannot raise ``t`` (see :func:`evaluate`)."""
    for default in applicable:
        if default.family != t.family or default.is_qualified:
            continue
        o = effective(subject, default)
        if (
            _severity(o) > _severity(t)
            and r.unit == o.unit
            and _meets_value(value, r.comparator, o.comparator, o.value)
        ):
            return True
    return False


def _clears_value(
    value: float, comparator: str | None, cmp: str, t: float, hysteresis: float
) -> bool:
    """:func:`clears` for a reading known to have a value and no absent reason."""
    return _never(_interval(value, comparator), cmp, clear_bound(cmp, t, hysteresis))
