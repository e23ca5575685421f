"""Qualified thresholds: "N in a row" and "for N minutes" (runs, gaps, history, explanations)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud_ingest.rules import (
    DEFAULT_THRESHOLDS,
    DEFAULTS_BY_CONDITION,
    AlertAction,
    AlertState,
    Reading,
    RuleError,
    Threshold,
    ThresholdOverride,
    apply_override,
    evaluate,
)
from cloud_ingest.rules.engine import (
    HistoryWindow,
    decisively_meets,
    history_needed,
    needs_evaluation,
)
from cloud_ingest.rules.thresholds import DEFAULT_MAX_GAP, format_duration
from device_profiles.codes import MEASURES

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
UNITS = {k: m.unit for k, m in MEASURES.items()}
MIN = timedelta(minutes=1)
SEC = timedelta(seconds=1)
Q = frozenset({"questionable"})
SIM = frozenset({"simulated"})

#: systolic grade 3 as "3 readings in a row" (a count-only qualifier to test with)
BP3 = replace(DEFAULTS_BY_CONDITION["bp-systolic-grade3"], confirm_count=3)
COUNT_THRESHOLDS = tuple(BP3 if t.condition == BP3.condition else t for t in DEFAULT_THRESHOLDS)
#: capillary level 1 low as "2 readings in a row": LO readings in a count run
CAP2 = replace(DEFAULTS_BY_CONDITION["glucose-low-l1"], confirm_count=2)
CAP_THRESHOLDS = tuple(CAP2 if t.condition == CAP2.condition else t for t in DEFAULT_THRESHOLDS)

_ids = iter(range(10**9))


def rd(
    value: float | None,
    at: timedelta,
    *,
    measure: str = "glucose.cgm",
    comparator: str | None = None,
    absent: str | None = None,
    subject: str = "p1",
    quality: frozenset[str] = frozenset(),
    obs_id: str | None = None,
) -> Reading:
    return Reading(
        obs_id=obs_id or f"o{next(_ids):08d}",
        subject_ref=subject,
        measure=measure,
        unit=UNITS[measure],
        effective_time=T0 + at,
        value=value,
        comparator=comparator,
        absent_reason=absent,
        quality=quality,
    )


def series(
    values: Sequence[float | None],
    *,
    every: timedelta = 5 * MIN,
    measure: str = "glucose.cgm",
) -> list[Reading]:
    """Readings ``every`` apart from T0; None is an absent reading."""
    return [
        rd(v, i * every, measure=measure, absent="error" if v is None else None)
        for i, v in enumerate(values)
    ]


def run(
    readings: Sequence[Reading],
    open_alerts: Sequence[AlertState] = (),
    *,
    history: dict[tuple[str, str], list[Reading]] | None = None,
    overrides: dict[tuple[str, str], ThresholdOverride] | None = None,
    thresholds: Sequence[Threshold] = DEFAULT_THRESHOLDS,
) -> list[AlertAction]:
    return evaluate(
        readings,
        open_alerts=open_alerts,
        now=NOW,
        overrides=overrides,
        thresholds=thresholds,
        history=history or {},
    )


def raises(actions: list[AlertAction], condition: str = "cgm-low-l1") -> list[AlertAction]:
    return [a for a in actions if a.kind == "raise" and a.state.condition == condition]


def stored(actions: list[AlertAction], first_id: int = 1) -> list[AlertState]:
    return [replace(a.state, id=a.state.id or first_id + i) for i, a in enumerate(actions)]


def hist(readings: Sequence[Reading]) -> dict[tuple[str, str], list[Reading]]:
    out: dict[tuple[str, str], list[Reading]] = {}
    for r in readings:
        out.setdefault((r.subject_ref, r.measure), []).append(r)
    return out


# --------------------------------------------------------------------------------------------
# thresholds: validation, defaults, overrides


def _base(**kw: object) -> Threshold:
    args: dict[str, object] = {
        "condition": "x",
        "title": "x",
        "measures": frozenset({"spo2"}),
        "comparator": "<=",
        "value": 90.0,
        "unit": "%",
        "priority": DEFAULTS_BY_CONDITION["spo2-low-news2-3"].priority,
        "hysteresis": 1.0,
        "family": "x",
        "rank": 1,
        "source": "test",
    }
    args.update(kw)
    return Threshold(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"confirm_count": 0}, "confirm_count"),
        ({"confirm_count": -3}, "confirm_count"),
        ({"confirm_count": True}, "confirm_count"),
        ({"confirm_count": 2.0}, "confirm_count"),
        ({"confirm_for": -SEC}, "confirm_for"),
        ({"confirm_for": 15}, "confirm_for"),
        ({"max_gap": timedelta(0)}, "max_gap"),
        ({"max_gap": -MIN}, "max_gap"),
        ({"max_gap": 600}, "max_gap"),
    ],
)
def test_qualifier_validation(kw: dict[str, object], needle: str) -> None:
    with pytest.raises(RuleError, match=needle) as exc:
        _base(**kw)
    assert str(exc.value).startswith("x: ")  # names the condition


@pytest.mark.parametrize(
    ("kw", "qualified", "words"),
    [
        ({}, False, ""),
        ({"confirm_count": 1, "confirm_for": timedelta(0)}, False, ""),
        ({"confirm_count": 3}, True, "for 3 readings in a row"),
        (
            {"confirm_for": 15 * MIN},
            True,
            "continuously for at least 15 min (readings no more than 10 min apart)",
        ),
        (
            {"confirm_count": 2, "confirm_for": 90 * SEC, "max_gap": 2 * MIN},
            True,
            "for 2 readings in a row and continuously for at least 1 min 30 s "
            "(readings no more than 2 min apart)",
        ),
    ],
)
def test_qualifier_defaults_and_wording(kw: dict[str, object], qualified: bool, words: str) -> None:
    t = _base(**kw)
    assert t.is_qualified is qualified
    assert t.describe_qualifier() == words


@pytest.mark.parametrize(
    ("d", "text"),
    [
        (timedelta(0), "0 s"),
        (45 * SEC, "45 s"),
        (15 * MIN, "15 min"),
        (15 * MIN - SEC, "14 min 59 s"),
        (125 * MIN, "2 h 5 min"),
        (timedelta(hours=1, seconds=1), "1 h 1 s"),
    ],
)
def test_format_duration(d: timedelta, text: str) -> None:
    assert format_duration(d) == text


def test_cgm_level_1_low_waits_15_minutes_and_the_rest_stay_immediate() -> None:
    cgm = DEFAULTS_BY_CONDITION["cgm-low-l1"]
    cap = DEFAULTS_BY_CONDITION["glucose-low-l1"]
    assert cgm.measures == frozenset({"glucose.cgm"})
    assert cap.measures == frozenset({"glucose.capillary"})
    for field in ("comparator", "value", "unit", "priority", "hysteresis", "family", "rank"):
        assert getattr(cgm, field) == getattr(cap, field), field
    assert cgm.confirm_for == 15 * MIN
    assert cgm.confirm_count == 1
    assert cgm.max_gap == DEFAULT_MAX_GAP == 10 * MIN
    assert "DOMAIN.md §2" in cgm.source
    assert ">= 15 consecutive minutes" in cgm.source
    # patient safety: only the CGM level 1 low waits; level 2, urgent low and the rest do not
    assert [t.condition for t in DEFAULT_THRESHOLDS if t.is_qualified] == ["cgm-low-l1"]
    # the family still ranks level 2 > urgent low > level 1 for both sources
    ranks = {t.condition: t.rank for t in DEFAULT_THRESHOLDS if t.family == "glucose-low"}
    assert ranks["glucose-low-l2"] > ranks["cgm-urgent-low"] > ranks["cgm-low-l1"]
    assert ranks["glucose-low-l2"] > ranks["glucose-low-l1"]


@pytest.mark.parametrize("value", [4.5, -100.0])  # accepted, and out of bounds (ignored)
def test_overrides_keep_the_qualifiers(value: float) -> None:
    default = DEFAULTS_BY_CONDITION["cgm-low-l1"]
    ov = ThresholdOverride(
        subject_ref="p1",
        condition="cgm-low-l1",
        value=value,
        unit="mmol/L",
        set_by="dr.k",
        set_at=T0,
    )
    t = apply_override(default, ov)
    assert (t.confirm_count, t.confirm_for, t.max_gap) == (1, 15 * MIN, 10 * MIN)
    assert t.value == (value if value > 0 else default.value)


def test_a_patient_value_still_waits_for_the_run() -> None:
    ov = ThresholdOverride(
        subject_ref="p1", condition="cgm-low-l1", value=4.5, unit="mmol/L", set_by="dr", set_at=T0
    )
    overrides = {("p1", "cgm-low-l1"): ov}
    assert run(series([4.2, 4.2, 4.2]), overrides=overrides) == []
    [a] = run(series([4.2, 4.2, 4.2, 4.2]), overrides=overrides)
    assert a.state.condition == "cgm-low-l1"
    assert a.state.threshold_value == 4.5
    assert run(series([4.2, 4.2, 4.2, 4.2])) == []  # 4.2 is not low by default


# --------------------------------------------------------------------------------------------
# "N in a row": boundary table (systolic >= 180, 3 in a row)

A = None  # an absent reading in a table


@pytest.mark.parametrize(
    ("values", "quality_at", "raised_at"),
    [
        ([185, 185, 185], None, 2),  # exactly N
        ([185, 185], None, None),  # N - 1
        ([185, 185, 185, 190], None, 2),  # raised once; the 4th updates
        ([185, 170, 185, 185], None, None),  # broken by a reading that does not meet
        ([185, 179, 185, 185, 185], None, 4),  # a new run after the break
        ([185, A, 185, 185], None, None),  # broken by an absent reading
        ([185, 200, 185, 185], 1, None),  # broken by a questionable reading
        ([200, 185, 185, 185], 0, 3),  # a questionable first reading is no part of the run
        ([180, 180, 180], None, 2),  # ">= 180": the value itself meets
    ],
)
def test_n_in_a_row(
    values: list[float | None], quality_at: int | None, raised_at: int | None
) -> None:
    readings = series(values, every=timedelta(hours=20), measure="bp.systolic")  # gaps don't count
    if quality_at is not None:
        readings[quality_at] = replace(readings[quality_at], quality=Q)
    got = raises(run(readings, thresholds=COUNT_THRESHOLDS), "bp-systolic-grade3")
    if raised_at is None:
        assert got == []
        return
    [a] = got
    assert a.events[0].note.startswith(f"raised by observation {readings[raised_at].obs_id} ")
    assert a.state.first.obs_id == readings[raised_at - 2].obs_id
    assert a.state.trigger_count == len(values) - raised_at + 2


@pytest.mark.parametrize(
    ("readings", "raised"),
    [
        ([(3.5, None), (3.5, None)], {"glucose-low-l1"}),
        # LO readings that decisively meet "< 3.9" (but not "< 3.0") form a run
        ([(3.5, "<"), (3.5, "<")], {"glucose-low-l1"}),
        ([(3.5, None), (3.9, "<")], {"glucose-low-l1"}),  # "< 3.9" meets "< 3.9"
        # a LO below 3.0 raises level 2 at once and continues the level 1 run
        ([(1.1, "<"), (3.5, None)], {"glucose-low-l2", "glucose-low-l1"}),
        ([(3.5, None), (1.1, "<")], {"glucose-low-l2"}),  # the LO triggers level 2 only
        ([(3.5, None), (3.9, "<="), (3.5, None)], set()),  # could be 3.9: undecided, breaks
        ([(3.5, None), (5.0, "<"), (3.5, None)], set()),  # "< 5.0" is undecided: breaks
        # HI: a high, and it breaks the low run
        ([(3.5, None), (33.3, ">"), (3.5, None)], {"glucose-high-l2"}),
    ],
)
def test_lo_hi_readings_in_a_count_run(
    readings: list[tuple[float, str | None]], raised: set[str]
) -> None:
    rs = [
        rd(v, i * timedelta(hours=3), measure="glucose.capillary", comparator=c)
        for i, (v, c) in enumerate(readings)
    ]
    assert {a.state.condition for a in run(rs, thresholds=CAP_THRESHOLDS)} == raised


# --------------------------------------------------------------------------------------------
# "for N minutes": boundary table (CGM level 1 low, 15 min, gaps up to 10 min)


@pytest.mark.parametrize(
    ("points", "raised_by", "first"),
    [
        # (offset, value); value None: absent; "q": a questionable 3.5
        ([(0, 3.5), (5, 3.5), (10, 3.5), (15, 3.5)], 3, 0),  # exactly 15:00
        ([(0, 3.5), (5, 3.5), (10, 3.5), (15 * 60 - 1, 3.5)], None, None),  # 14:59
        ([(0, 3.5), (5, 3.5), (10, 3.5), (15 * 60 - 1, 3.5), (15 * 60 + 1, 3.5)], 4, 0),
        ([(0, 3.5), (10, 3.5), (15, 3.5)], 2, 0),  # a gap of exactly max_gap
        ([(0, 3.5), (10 * 60 + 1, 3.5), (15, 3.5)], None, None),  # just over max_gap
        # after a gap the run starts again and needs its own 15 min
        ([(0, 3.5), (10 * 60 + 1, 3.5), (15, 3.5), (20, 3.5), (25 * 60 + 1, 3.5)], 4, 1),
        ([(0, 3.5), (5, 4.0), (10, 3.5), (15, 3.5)], None, None),  # broken: 4.0 is not low
        ([(0, 3.5), (5, 3.89), (10, 3.5), (15, 3.5)], None, None),  # 3.89 reads 3.9
        ([(0, 3.5), (5, None), (10, 3.5), (15, 3.5)], None, None),  # broken: absent
        ([(0, 3.5), (5, "q"), (10, 3.5), (15, 3.5)], None, None),  # broken: questionable
        ([(0, 3.5), (5, 3.5), (10, 3.5), (15, 3.5), (20, 3.5)], 3, 0),  # raised once
        # a longer run raises from the latest reading at least 15 min back
        ([(i, 3.5) for i in range(16)], 15, 0),  # 1-min sampling
    ],
)
def test_for_n_minutes(
    points: list[tuple[int, float | str | None]], raised_by: int | None, first: int | None
) -> None:
    readings = []
    for at, v in points:
        offset = at * MIN if at <= 60 else at * SEC
        if v == "q":
            readings.append(rd(3.5, offset, quality=Q))
        else:
            assert not isinstance(v, str)
            readings.append(rd(v, offset, absent="error" if v is None else None))
    got = raises(run(readings))
    if raised_by is None:
        assert got == []
        return
    assert first is not None
    [a] = got
    assert a.events[0].note.startswith(f"raised by observation {readings[raised_by].obs_id} ")
    assert a.state.first.obs_id == readings[first].obs_id
    assert a.state.trigger_count == len(readings) - first
    assert a.state.last.time - a.state.first.time >= 15 * MIN


def test_the_run_reported_is_the_shortest_that_qualifies() -> None:
    """A 30-min run seen at once (e.g. its earlier alert was resolved): the alert starts at
    the latest reading 15 min back, whatever history lies before it."""
    readings = series([3.5] * 7)  # 0..30 min
    [a] = raises(run(readings[-1:], history=hist(readings[:-1])))
    assert a.state.first.obs_id == readings[3].obs_id
    assert a.state.trigger_count == 4
    assert "met continuously for 15 min (from 2026-03-01 08:15 UTC)" in a.state.explanation


def test_simulated_run_readings_mark_the_alert() -> None:
    readings = series([3.5, 3.5, 3.5, 3.5])
    readings[0] = replace(readings[0], quality=SIM)
    [a] = raises(run(readings))
    assert a.state.simulated
    assert "Simulated data" in a.state.explanation
    [b] = raises(run(series([3.5, 3.5, 3.5, 3.5])))
    assert not b.state.simulated


# --------------------------------------------------------------------------------------------
# the family: immediate, more severe conditions are never held back


def test_level_2_is_raised_at_once_while_level_1_accumulates() -> None:
    readings = series([3.5, 2.8, 3.5, 3.5])
    actions = run(readings)
    assert [(a.state.condition, a.state.first.obs_id) for a in actions] == [
        ("glucose-low-l2", readings[1].obs_id),
        ("cgm-low-l1", readings[0].obs_id),  # the 2.8 is < 3.9 too: it continues the run
    ]
    [l1] = raises(actions)
    assert l1.state.last.obs_id == readings[3].obs_id
    assert l1.state.trigger_count == 4


@pytest.mark.parametrize(
    ("value", "condition"), [(2.9, "glucose-low-l2"), (3.1, "cgm-urgent-low"), (3.5, None)]
)
def test_a_single_cgm_reading(value: float, condition: str | None) -> None:
    actions = run([rd(value, timedelta(0))])
    assert [a.state.condition for a in actions] == ([condition] if condition else [])


def test_a_completed_level_1_run_on_a_level_2_reading_raises_level_2_only() -> None:
    readings = series([3.5, 3.5, 3.5, 2.8])
    assert [a.state.condition for a in run(readings)] == ["glucose-low-l2"]
    # the next level 1 reading raises level 1: its run goes back over the 2.8
    more = [*readings, rd(3.5, 20 * MIN)]
    assert [a.state.condition for a in raises(run(more))] == ["cgm-low-l1"]


def test_capillary_level_1_stays_immediate() -> None:
    [a] = run([rd(3.5, timedelta(0), measure="glucose.capillary")])
    assert a.state.condition == "glucose-low-l1"
    assert a.state.trigger_count == 1
    assert "once the condition has held" not in a.state.explanation


# --------------------------------------------------------------------------------------------
# the qualifiers gate raising only


def _raised_l1() -> AlertState:
    [a] = raises(run(series([3.5, 3.5, 3.5, 3.5])))
    [s] = stored([a])
    return s


def test_an_open_alert_is_updated_by_a_single_reading() -> None:
    s = _raised_l1()
    [u] = run([rd(3.6, 40 * MIN)], [s])
    assert u.kind == "update"
    assert u.state.trigger_count == 5
    assert u.state.first == s.first
    assert "The first triggering reading is the first of the run" in u.state.explanation


def test_a_cleared_alert_is_uncleared_by_a_single_reading() -> None:
    s = _raised_l1()
    [c] = run([rd(4.0, 20 * MIN), rd(4.1, 25 * MIN)], [s])  # 4.0: within the hysteresis
    assert c.state.cleared_at == T0 + 25 * MIN
    [again] = run([rd(3.5, 30 * MIN)], [c.state])
    assert again.state.cleared_at is None
    assert "condition present again" in again.events[0].note


def test_a_resolved_alert_leaves_the_next_reading_gated_again() -> None:
    # no open alert (it was resolved): one reading does not raise, a 15-min run does
    assert run([rd(3.5, 60 * MIN)]) == []
    assert raises(run(series([3.5] * 4, every=5 * MIN)))


# --------------------------------------------------------------------------------------------
# explanations


def test_explanation_of_a_run_for_n_minutes() -> None:
    readings = [rd(3.5, m * MIN) for m in (0, 5, 10, 17)]
    [a] = run(readings)
    text = a.state.explanation
    for part in (
        "Rule cgm-low-l1 (medium priority)",
        "a reading < 3.9 mmol/L triggers it once the condition has held continuously for at "
        "least 15 min (readings no more than 10 min apart)",
        "met continuously for 17 min (from 2026-03-01 08:00 UTC) by 4 readings in a row",
        f"first reading of the run: observation {readings[0].obs_id}",
        f"(observation {readings[0].obs_id})",
        "4 readings have met the condition",
        "DOMAIN.md §2",
    ):
        assert part in text
    for word in ("diagnos", "hypoglycaemia"):
        assert word not in text.lower()
    [e] = a.events
    assert e.action == "raised"
    assert f"raised by observation {readings[3].obs_id}" in e.note
    assert f"completing a run of 4 readings over 17 min from observation {readings[0].obs_id}" in (
        e.note
    )


def test_explanation_of_n_in_a_row() -> None:
    readings = series([185, 190, 186], every=timedelta(hours=12), measure="bp.systolic")
    [a] = run(readings, thresholds=COUNT_THRESHOLDS)
    text = a.state.explanation
    assert "once the condition has held for 3 readings in a row" in text
    assert "met by 3 readings in a row (from 2026-03-01 08:00 UTC)" in text
    assert f"first reading of the run: observation {readings[0].obs_id}" in text
    assert "continuously" not in text  # a count run says nothing about the time between


# --------------------------------------------------------------------------------------------
# history: earlier readings, any order, late readings


def test_history_completes_a_run() -> None:
    readings = series([3.5, 3.5, 3.5, 3.5])
    [a] = run(readings[3:], history=hist(readings[:3]))
    assert a.state.first.obs_id == readings[0].obs_id
    assert a.state.trigger_count == 4
    # history alone raises nothing
    assert run([], history=hist(readings)) == []


def test_history_in_any_order_and_overlapping_the_batch() -> None:
    readings = series([3.5, 3.5, 3.5, 3.5, 3.6])
    expected = run(readings[3:], history=hist(readings[:3]))
    shuffled = readings[:4]
    random.Random(7).shuffle(shuffled)
    # the batch's own readings may be in the history too: each counts once
    assert run(readings[3:], history=hist(shuffled)) == expected
    assert expected[0].state.trigger_count == 5


def test_history_of_another_measure_or_subject_does_not_count() -> None:
    cap = [rd(3.5, m * MIN, measure="glucose.capillary") for m in (0, 5, 10)]
    other = [rd(3.5, m * MIN, subject="p2") for m in (0, 5, 10)]
    assert raises(run([rd(3.5, 15 * MIN)], history=hist(cap + other))) == []


def test_history_under_the_wrong_key_is_refused() -> None:
    r = rd(3.5, timedelta(0), subject="p2")
    with pytest.raises(ValueError, match=r"history\[\('p1', 'glucose.cgm'\)\] holds observation"):
        run([rd(3.5, 15 * MIN)], history={("p1", "glucose.cgm"): [r]})


def test_history_breaks_a_run_too() -> None:
    readings = series([3.5, 4.5, 3.5, 3.5])
    assert raises(run(readings[2:], history=hist(readings[:2]))) == []


def test_late_readings_fill_a_gap_and_complete_the_run() -> None:
    stored_ = [rd(3.5, m * MIN) for m in (0, 5, 20)]  # 5 -> 20: a gap longer than max_gap
    late = [rd(3.5, m * MIN) for m in (10, 15)]
    [a] = raises(run(late, history=hist(stored_)))
    assert a.state.last.obs_id == late[1].obs_id
    assert a.state.first.obs_id == stored_[0].obs_id
    assert a.state.trigger_count == 4  # 0, 5, 10, 15: the stored 20 is no part of it


def test_a_late_reading_is_judged_by_the_run_ending_at_it() -> None:
    """It does not re-judge stored readings after it; the next reading (its run now spans the
    filled gap) raises."""
    stored_ = [rd(3.5, m * MIN) for m in (0, 12, 17)]  # 0 -> 12 breaks
    late = rd(3.5, 6 * MIN)
    assert run([late], history=hist(stored_)) == []
    nxt = rd(3.5, 22 * MIN)
    [a] = raises(run([nxt], history=hist([*stored_, late])))
    assert a.state.first.obs_id == late.obs_id  # the latest reading >= 15 min back
    assert a.state.trigger_count == 4


def test_a_late_reading_updates_an_open_alert_without_a_run() -> None:
    s = _raised_l1()  # last trigger at 15 min
    [u] = run([rd(3.7, -30 * MIN)], [s])
    assert u.state.trigger_count == 5
    assert u.state.last == s.last  # a late reading never becomes the latest


def test_readings_over_several_calls_match_one_call() -> None:
    readings = series([3.5, 3.6, 2.9, 3.5, 3.5, 4.0, 4.2, 3.5])
    one = final_states([readings])
    split = final_states([readings[:2], readings[2:4], readings[4:5], readings[5:]])
    assert split == one
    assert {s.condition for s in one.values()} == {"glucose-low-l2", "cgm-low-l1"}


# --------------------------------------------------------------------------------------------
# history_needed: which stored readings the service must fetch


def test_history_needed_asks_only_for_readings_that_could_raise() -> None:
    at = T0 + 30 * MIN
    low = rd(3.5, 30 * MIN)
    assert history_needed([low]) == {
        ("p1", "glucose.cgm"): HistoryWindow(since=at - 25 * MIN, until=at, last_n=0)
    }
    assert history_needed([rd(5.0, timedelta(0))]) == {}  # meets nothing
    assert history_needed([rd(3.5, timedelta(0), measure="glucose.capillary")]) == {}
    assert history_needed([rd(3.5, timedelta(0), quality=Q)]) == {}
    assert history_needed([rd(None, timedelta(0), absent="error")]) == {}
    assert history_needed([rd(3.9, timedelta(0), comparator="<=")]) == {}  # undecided
    assert history_needed([rd(2.9, timedelta(0))]) == {}  # level 2 wins: no level 1 run read
    s = _raised_l1()
    assert history_needed([low], open_alerts=[s]) == {}  # an open alert: no run needed
    assert history_needed([low], open_alerts=[replace(s, subject_ref="p2")]) != {}


def test_history_needed_merges_and_counts() -> None:
    readings = [rd(190, m * MIN, measure="bp.systolic") for m in (0, 60)]
    readings += [rd(3.5, m * MIN) for m in (10, 40)]
    readings.append(rd(3.5, 0 * MIN, subject="p2"))
    got = history_needed(readings, thresholds=COUNT_THRESHOLDS)
    assert got == {
        ("p1", "bp.systolic"): HistoryWindow(since=T0, until=T0 + 60 * MIN, last_n=2),
        ("p1", "glucose.cgm"): HistoryWindow(
            since=T0 + 10 * MIN - 25 * MIN, until=T0 + 40 * MIN, last_n=0
        ),
        ("p2", "glucose.cgm"): HistoryWindow(since=T0 - 25 * MIN, until=T0, last_n=0),
    }


def test_history_needed_follows_overrides() -> None:
    ov = ThresholdOverride(
        subject_ref="p1", condition="cgm-low-l1", value=4.5, unit="mmol/L", set_by="dr", set_at=T0
    )
    r = rd(4.2, timedelta(0))
    assert history_needed([r]) == {}
    assert set(history_needed([r], overrides={("p1", "cgm-low-l1"): ov})) == {("p1", "glucose.cgm")}


def test_history_window_select() -> None:
    w = HistoryWindow(since=T0 + 10 * MIN, until=T0 + 20 * MIN, last_n=2)
    readings = [rd(3.5, m * MIN, obs_id=f"m{m:02d}") for m in (25, 20, 15, 10, 9, 5, 1)]
    assert [x.obs_id for x in w.select(readings)] == ["m05", "m09", "m10", "m15", "m20"]
    assert [x.obs_id for x in replace(w, last_n=0).select(readings)] == ["m10", "m15", "m20"]


# --------------------------------------------------------------------------------------------
# the prefilter keeps the readings that end a run


def test_prefilter_keeps_the_reading_that_breaks_a_run() -> None:
    # an absent reading changes no alert, yet it ends the run: 10..20 is 10 min only
    readings = series([3.5, None, 3.5, 3.5, 3.5])
    assert run(readings) == []
    selected = needs_evaluation([(r.subject_ref, r.obs_id, r) for r in readings], open_alerts=[])
    assert selected == [0, 1, 2, 3, 4]
    # a normal reading after stored lows: it meets nothing and no alert is open, but it ends
    # the stored run (without it, 0..20 would raise)
    readings = series([3.5, 3.5, 6.0, 3.5, 3.5])
    old, batch = hist(readings[:2]), readings[2:]
    assert run(batch, history=old) == []
    assert raises(run([batch[1], batch[2]], history=old))  # what dropping it would do
    selected = needs_evaluation([(r.subject_ref, r.obs_id, r) for r in batch], open_alerts=[])
    assert selected == [0, 1, 2]


def test_prefilter_drops_a_break_no_run_reads() -> None:
    quiet = series([6.0, 6.0, 6.0, 6.0])
    low = rd(2.8, 16 * MIN)  # level 2: it cannot raise level 1, no run is read
    batch = [*quiet, low]
    selected = needs_evaluation([(r.subject_ref, r.obs_id, r) for r in batch], open_alerts=[])
    assert [batch[i].obs_id for i in selected] == [low.obs_id]
    s = replace(_raised_l1(), cleared_at=T0 + 16 * MIN)  # an open alert: no run is read either
    level1 = rd(3.5, 16 * MIN)
    batch = [*quiet, level1]
    selected = needs_evaluation([(r.subject_ref, r.obs_id, r) for r in batch], open_alerts=[s])
    assert [batch[i].obs_id for i in selected] == [level1.obs_id]


def test_decisively_meets_is_what_a_run_counts() -> None:
    t = DEFAULTS_BY_CONDITION["cgm-low-l1"]
    assert decisively_meets(rd(3.8, timedelta(0)), t)
    assert not decisively_meets(rd(3.89, timedelta(0)), t)
    assert decisively_meets(rd(2.2, timedelta(0), comparator="<"), t)
    assert not decisively_meets(rd(3.5, timedelta(0), quality=Q), t)
    assert not decisively_meets(rd(None, timedelta(0), absent="error"), t)
    assert not decisively_meets(replace(rd(63.0, timedelta(0)), unit="mg/dL"), t)


# --------------------------------------------------------------------------------------------
# properties: order of history, calls split over time, history windows, the prefilter

#: CGM values around the level 1/2 and urgent thresholds, and SpO2 with a count qualifier
_CGM = [2.8, 3.0, 3.1, 3.5, 3.5, 3.5, 3.5, 3.8, 3.89, 3.9, 4.0, 4.1, 4.2, 6.0]
_SPO2 = [89.0, 91.0, 92.0, 93.0, 94.0, 97.0]
SPO2_2 = replace(DEFAULTS_BY_CONDITION["spo2-low-news2-2"], confirm_count=2)
PROP_THRESHOLDS = tuple(
    SPO2_2 if t.condition == SPO2_2.condition else t for t in DEFAULT_THRESHOLDS
)
PROP_OVERRIDES = {
    ("p2", "cgm-low-l1"): ThresholdOverride(
        subject_ref="p2", condition="cgm-low-l1", value=4.5, unit="mmol/L", set_by="dr", set_at=T0
    )
}


@st.composite
def timelines(draw: st.DrawFn) -> list[Reading]:
    """Readings of two subjects and two measures, in effective-time order."""
    n = draw(st.integers(1, 30))
    at = timedelta(0)
    out: list[Reading] = []
    for i in range(n):
        at += draw(st.sampled_from([0, 1, 4, 5, 5, 5, 5, 5, 9, 10, 11, 16])) * MIN + draw(
            st.sampled_from([timedelta(0), timedelta(0), SEC, -SEC])
        )
        measure = draw(st.sampled_from(["glucose.cgm"] * 3 + ["spo2"]))
        kind = draw(st.sampled_from(["value"] * 8 + ["absent", "questionable", "lo", "sim"]))
        value: float | None = draw(st.sampled_from(_CGM if measure == "glucose.cgm" else _SPO2))
        comparator = None
        if kind == "lo" and measure == "glucose.cgm":
            value, comparator = draw(st.sampled_from([(2.2, "<"), (22.2, ">"), (5.0, "<")]))
        out.append(
            Reading(
                obs_id=f"r{i:03d}",
                subject_ref=draw(st.sampled_from(["p1", "p1", "p1", "p2"])),
                measure=measure,
                unit=UNITS[measure],
                effective_time=T0 + at,
                value=None if kind == "absent" else value,
                comparator=comparator,
                absent_reason="error" if kind == "absent" else None,
                quality={"questionable": Q, "sim": SIM}.get(kind, frozenset()),
            )
        )
    return sorted(out, key=lambda r: (r.effective_time, r.obs_id))


def _eval(
    batch: Sequence[Reading],
    open_alerts: Sequence[AlertState],
    history: dict[tuple[str, str], list[Reading]],
) -> list[AlertAction]:
    return evaluate(
        batch,
        open_alerts=open_alerts,
        now=NOW,
        overrides=PROP_OVERRIDES,
        thresholds=PROP_THRESHOLDS,
        history=history,
    )


def final_states(
    calls: Sequence[Sequence[Reading]], *, thresholds: Sequence[Threshold] | None = None
) -> dict[tuple[str, str], AlertState]:
    """Feed the calls one after the other, as the service would: each call sees the alerts
    the earlier ones left and their readings as history. States without their ids."""
    states: dict[tuple[str, str], AlertState] = {}
    seen: list[Reading] = []
    next_id = 1
    for batch in calls:
        actions = evaluate(
            batch,
            open_alerts=list(states.values()),
            now=NOW,
            overrides=PROP_OVERRIDES if thresholds is None else None,
            thresholds=PROP_THRESHOLDS if thresholds is None else thresholds,
            history=hist(seen),
        )
        for a in actions:
            s = a.state
            if s.id is None:
                s = replace(s, id=next_id)
                next_id += 1
            states[(s.subject_ref, s.condition)] = s
        seen.extend(batch)
    return {k: replace(s, id=None) for k, s in states.items()}


@given(timelines(), st.integers(0, 10**6), st.data())
def test_history_order_does_not_matter(
    readings: list[Reading], seed: int, data: st.DataObject
) -> None:
    cut = data.draw(st.integers(0, len(readings)))
    history, batch = readings[:cut], readings[cut:]
    expected = _eval(batch, [], hist(history))
    shuffled = list(history)
    # the batch's readings may be in the history too (a query after the insert)
    shuffled += data.draw(st.lists(st.sampled_from(batch), max_size=3)) if batch else []
    random.Random(seed).shuffle(shuffled)
    assert _eval(batch, [], hist(shuffled)) == expected


@given(timelines(), st.lists(st.integers(0, 30), max_size=4))
def test_split_calls_match_one_call(readings: list[Reading], cuts: list[int]) -> None:
    bounds = sorted({min(c, len(readings)) for c in cuts} | {0, len(readings)})
    calls = [readings[a:b] for a, b in itertools.pairwise(bounds)]
    assert final_states(calls) == final_states([readings])


@given(timelines(), st.data())
def test_the_needed_window_gives_the_same_answer_as_all_history(
    readings: list[Reading], data: st.DataObject
) -> None:
    """Any split into stored and new readings (late ones included): evaluating with just the
    windows history_needed asks for equals evaluating with every stored reading."""
    is_new = data.draw(st.lists(st.booleans(), min_size=len(readings), max_size=len(readings)))
    batch = [r for r, n in zip(readings, is_new, strict=True) if n]
    old = [r for r, n in zip(readings, is_new, strict=True) if not n]
    open_alerts = stored(_eval(old, [], {}))
    full = hist(old)
    windows = history_needed(
        batch, open_alerts=open_alerts, overrides=PROP_OVERRIDES, thresholds=PROP_THRESHOLDS
    )
    windowed = {k: w.select(full.get(k, [])) for k, w in windows.items()}
    assert _eval(batch, open_alerts, windowed) == _eval(batch, open_alerts, full)


@given(timelines(), st.data())
def test_the_prefilter_and_windows_give_the_same_answer_as_everything(
    readings: list[Reading], data: st.DataObject
) -> None:
    """The service's path: needs_evaluation, then history_needed for the selected readings."""
    cut = data.draw(st.integers(0, len(readings)))
    old, batch = readings[:cut], readings[cut:]
    open_alerts = stored(_eval(old, [], {}))
    full = hist(old)
    selected = needs_evaluation(
        [(r.subject_ref, r.obs_id, r) for r in batch],
        open_alerts=open_alerts,
        overrides=PROP_OVERRIDES,
        thresholds=PROP_THRESHOLDS,
    )
    chosen = [batch[i] for i in selected]
    windows = history_needed(
        chosen, open_alerts=open_alerts, overrides=PROP_OVERRIDES, thresholds=PROP_THRESHOLDS
    )
    windowed = {k: w.select(full.get(k, [])) for k, w in windows.items()}
    assert _eval(chosen, open_alerts, windowed) == _eval(batch, open_alerts, full)
