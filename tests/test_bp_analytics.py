"""Home BP protocol and kiosk visit summaries (cloud_ingest/analytics/bp.py), DOMAIN.md §3.

Boundaries checked: the home threshold 135/85 (either value, at or above), the kiosk repeat
rule (first two differ by >= 10 mmHg, exactly 10 counts), the ESH 2023 band edges
(130/85, 140/90, 160/100, 180/110), local calendar days and the noon split across the
Europe/Helsinki DST changes (2026-03-29 and 2026-10-25).
"""

from __future__ import annotations

import math
import random
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_ingest.analytics.bp import (
    ESH_HOME_NOTE,
    BpInputError,
    BpReading,
    esh_grade,
    home_bp_summary,
    kiosk_visit_summary,
)
from device_profiles.clinical import ESH_GRADES

HEL = ZoneInfo("Europe/Helsinki")
SESSION_TIMES = ((7, 0), (7, 5), (21, 0), (21, 5))  # two morning, two evening readings


def local(d: date, h: int, m: int, tz: ZoneInfo = HEL) -> datetime:
    """A local wall time, given to the summaries in UTC (they must convert it back)."""
    return datetime(d.year, d.month, d.day, h, m, tzinfo=tz).astimezone(UTC)


def week(
    start: date,
    sys_dia: tuple[float, float] = (130.0, 80.0),
    *,
    days: int = 7,
    times: tuple[tuple[int, int], ...] = SESSION_TIMES,
) -> list[BpReading]:
    return [
        BpReading(local(start + timedelta(days=k), h, m), sys_dia[0], sys_dia[1], 70.0)
        for k in range(days)
        for h, m in times
    ]


# --------------------------------------------------------------------------- home BP


def test_a_complete_week_discards_day_1_and_averages_the_rest() -> None:
    start = date(2026, 5, 4)
    rs = week(start, (150.0, 95.0), days=1) + week(start + timedelta(days=1), days=6)
    s = home_bp_summary(rs, tz="Europe/Helsinki")
    assert s.first_day == start
    assert (s.readings_total, s.readings_used, s.readings_discarded, s.readings_ignored) == (
        28,
        24,
        4,
        0,
    )
    assert s.average is not None
    assert (s.average.systolic, s.average.diastolic, s.average.n) == (130.0, 80.0, 24)
    assert s.average.pulse == 70.0
    assert s.morning is not None
    assert s.evening is not None
    assert s.morning.n == s.evening.n == 12
    assert [d.status for d in s.day_table] == ["discarded"] + ["used"] * 6
    assert [d.date for d in s.day_table] == [start + timedelta(days=k) for k in range(7)]
    assert s.day_table[0].morning is not None
    assert s.day_table[0].morning.systolic == 150.0  # day 1 is shown, not used
    assert all(d.morning_n == d.evening_n == 2 for d in s.day_table)
    assert s.notes == ()
    assert s.at_or_above_threshold is False
    assert s.esh_band_of_home_average is not None
    assert s.esh_band_of_home_average.key == "high-normal"
    assert s.esh_note == ESH_HOME_NOTE
    assert "not a diagnosis" in s.esh_note
    # keeping day 1 changes the average
    kept = home_bp_summary(rs, tz=HEL, discard_first_day=False)
    assert kept.readings_used == 28
    assert kept.average is not None
    assert kept.average.systolic == pytest.approx((150 * 4 + 130 * 24) / 28)


@pytest.mark.parametrize(
    ("sys_dia", "above"),
    [
        ((135.0, 80.0), True),  # exactly the systolic threshold
        ((120.0, 85.0), True),  # exactly the diastolic threshold
        ((135.0, 85.0), True),
        ((134.0, 84.0), False),
        ((134.99, 84.99), False),
        ((150.0, 70.0), True),
    ],
)
def test_home_threshold_either_value_at_or_above(sys_dia: tuple[float, float], above: bool) -> None:
    s = home_bp_summary(week(date(2026, 5, 4), sys_dia), tz=HEL)
    assert s.at_or_above_threshold is above


def test_home_threshold_on_a_mean_exactly_at_the_edge_and_as_a_parameter() -> None:
    start = date(2026, 5, 4)
    rs = week(start, (130.0, 80.0)) + week(start, (140.0, 90.0))  # 8 a day, mean 135/85
    s = home_bp_summary(rs, tz=HEL)
    assert s.average is not None
    assert (s.average.systolic, s.average.diastolic) == (135.0, 85.0)
    assert s.at_or_above_threshold is True
    high_risk = home_bp_summary(week(start, (126.0, 78.0)), tz=HEL, threshold=(125.0, 80.0))
    assert high_risk.at_or_above_threshold is True
    assert high_risk.threshold_systolic == 125.0


def test_spring_dst_week_in_helsinki_uses_local_days_and_local_noon() -> None:
    # DST starts 2026-03-29 03:00 EET -> 04:00 EEST (01:00 UTC)
    start = date(2026, 3, 26)
    rs = week(start)
    rs += [
        # 00:30 local on Mar 29 is 22:30 UTC on Mar 28: it belongs to Mar 29 (day 4)
        BpReading(datetime(2026, 3, 28, 22, 30, tzinfo=UTC), 131.0, 81.0),
        # 09:30 UTC on Mar 29 is 12:30 EEST: evening (with EET's +2 it would be 11:30 morning)
        BpReading(datetime(2026, 3, 29, 9, 30, tzinfo=UTC), 132.0, 82.0),
        # 08:30 UTC is 11:30 EEST: morning
        BpReading(datetime(2026, 3, 29, 8, 30, tzinfo=UTC), 133.0, 83.0),
    ]
    s = home_bp_summary(rs, tz="Europe/Helsinki")
    day4 = s.day_table[3]
    assert day4.date == date(2026, 3, 29)
    assert (day4.morning_n, day4.evening_n) == (4, 3)  # 07:00, 07:05, 00:30, 11:30 / 21:xx, 12:30
    assert [d.date for d in s.day_table][-1] == date(2026, 4, 1)
    assert s.readings_used == 24 + 3
    assert any("day 4 (2026-03-29): 4 morning readings" in n for n in s.notes)


def test_autumn_dst_day_in_helsinki() -> None:
    # DST ends 2026-10-25 04:00 EEST -> 03:00 EET (01:00 UTC)
    start = date(2026, 10, 22)
    rs = week(start)
    # 09:30 UTC on Oct 25 is 11:30 EET: morning (with EEST's +3 it would be 12:30 evening)
    rs.append(BpReading(datetime(2026, 10, 25, 9, 30, tzinfo=UTC), 131.0, 81.0))
    # 21:30 UTC on Oct 25 is 23:30 EET, still Oct 25
    rs.append(BpReading(datetime(2026, 10, 25, 21, 30, tzinfo=UTC), 131.0, 81.0))
    s = home_bp_summary(rs, tz=HEL)
    day4 = s.day_table[3]
    assert day4.date == date(2026, 10, 25)
    assert (day4.morning_n, day4.evening_n) == (3, 3)


@pytest.mark.parametrize(
    ("hm", "morning"), [((0, 0), True), ((11, 59), True), ((12, 0), False), ((23, 59), False)]
)
def test_morning_ends_at_local_noon(hm: tuple[int, int], morning: bool) -> None:
    start = date(2026, 5, 4)
    rs = [*week(start), BpReading(local(start + timedelta(days=2), *hm), 131.0, 81.0)]
    day3 = home_bp_summary(rs, tz=HEL).day_table[2]
    assert (day3.morning_n, day3.evening_n) == ((3, 2) if morning else (2, 3))


def test_day_numbers_count_calendar_days_not_days_with_readings() -> None:
    start = date(2026, 5, 4)
    rs = week(start, days=1) + week(start + timedelta(days=3), days=4)  # days 2-3 empty
    s = home_bp_summary(rs, tz=HEL)
    assert [d.morning_n for d in s.day_table] == [2, 0, 0, 2, 2, 2, 2]
    assert "day 2 (2026-05-05): no readings" in s.notes
    assert "day 3 (2026-05-06): no readings" in s.notes
    assert s.readings_used == 16


def test_notes_say_what_the_protocol_misses() -> None:
    start = date(2026, 5, 4)
    rs = week(start, days=3)  # days 1-3 complete
    rs += week(start + timedelta(days=3), days=1, times=((7, 0),))  # day 4: one morning only
    rs += week(start + timedelta(days=8), days=2)  # days 9-10: beyond day 7
    s = home_bp_summary(rs, tz=HEL)
    assert s.readings_used == 9
    assert s.readings_ignored == 8
    assert s.notes == (
        "day 4 (2026-05-07): 1 morning reading(s); the protocol asks for 2",
        "day 4 (2026-05-07): 0 evening reading(s); the protocol asks for 2",
        "day 5 (2026-05-08): no readings",
        "day 6 (2026-05-09): no readings",
        "day 7 (2026-05-10): no readings",
        "8 reading(s) after day 7 (from 2026-05-12) ignored",
        "only 9 reading(s) on days 2-7; at least 12 are needed for a reliable home average",
    )
    assert s.average is not None  # still computed, with the notes beside it


def test_nothing_to_average() -> None:
    empty = home_bp_summary([], tz=HEL)
    assert empty.average is None
    assert empty.at_or_above_threshold is None
    assert empty.esh_band_label is None
    assert empty.notes == ("no readings: nothing to summarise",)
    only_day1 = home_bp_summary(week(date(2026, 5, 4), days=1), tz=HEL)
    assert only_day1.average is None
    assert only_day1.readings_discarded == 4
    assert only_day1.at_or_above_threshold is None
    assert "no readings on days 2-7: the home average cannot be computed" in only_day1.notes


NAIVE = datetime(2026, 5, 4, 7, 0)
AWARE = datetime(2026, 5, 4, 4, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("reading", "message"),
    [
        (BpReading(NAIVE, 130.0, 80.0), "reading 1: time must be an aware datetime"),
        (BpReading(AWARE, 301.0, 80.0), "reading 1: systolic 301 outside the plausible range"),
        (BpReading(AWARE, 49.0, 30.0), "reading 1: systolic 49 outside"),
        (BpReading(AWARE, 130.0, 19.0), "reading 1: diastolic 19 outside"),
        (BpReading(AWARE, 80.0, 80.0), "reading 1: systolic 80 must exceed diastolic 80"),
        (BpReading(AWARE, math.nan, 80.0), "reading 1: systolic nan is not finite"),
        (BpReading(AWARE, 130.0, 80.0, 400.0), "reading 1: pulse 400 outside"),
        (BpReading(AWARE, True, 80.0), "reading 1: systolic must be a number"),
    ],
)
def test_bad_readings_are_errors_naming_the_index(reading: BpReading, message: str) -> None:
    ok = BpReading(AWARE - timedelta(hours=1), 130.0, 80.0)
    with pytest.raises(BpInputError, match=message):
        home_bp_summary([ok, reading], tz=HEL)
    with pytest.raises(BpInputError, match=message):
        kiosk_visit_summary([ok, reading])


def test_bad_parameters() -> None:
    rs = week(date(2026, 5, 4))
    with pytest.raises(BpInputError, match="unknown time zone"):
        home_bp_summary(rs, tz="Mars/Olympus")
    with pytest.raises(BpInputError, match="days must be an integer >= 2"):
        home_bp_summary(rs, tz=HEL, days=1)
    assert home_bp_summary(rs, tz=HEL, days=1, discard_first_day=False).readings_used == 4
    with pytest.raises(BpInputError, match="threshold"):
        home_bp_summary(rs, tz=HEL, threshold=(135.0, math.nan))


# --------------------------------------------------------------------------- ESH bands


@pytest.mark.parametrize(
    ("sys_dia", "key"),
    [
        ((129.0, 84.0), None),
        ((129.9, 84.9), None),
        ((130.0, 70.0), "high-normal"),
        ((120.0, 85.0), "high-normal"),
        ((139.0, 89.0), "high-normal"),
        ((140.0, 60.0), "grade1"),
        ((120.0, 90.0), "grade1"),
        ((159.0, 99.0), "grade1"),
        ((160.0, 80.0), "grade2"),
        ((120.0, 100.0), "grade2"),
        ((179.0, 109.0), "grade2"),
        ((179.9, 109.9), "grade2"),
        ((180.0, 80.0), "grade3"),
        ((120.0, 110.0), "grade3"),
        ((200.0, 120.0), "grade3"),
    ],
)
def test_esh_band_edges(sys_dia: tuple[float, float], key: str | None) -> None:
    g = esh_grade(*sys_dia)
    assert (None if g is None else g.key) == key
    s = home_bp_summary(week(date(2026, 5, 4), sys_dia), tz=HEL)
    assert s.esh_band_of_home_average == g
    assert s.esh_band_label is not None
    if g is None:
        assert s.esh_band_label.startswith("below high-normal (< 130 and < 85)")
    else:
        assert s.esh_band_label == g.label


# --------------------------------------------------------------------------- kiosk visit

K0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)


def visit(*pairs: tuple[float, float]) -> list[BpReading]:
    return [BpReading(K0 + timedelta(minutes=2 * k), s, d) for k, (s, d) in enumerate(pairs)]


def test_three_readings_mean_of_the_last_two() -> None:
    v = kiosk_visit_summary(visit((150, 95), (144, 90), (140, 88)))
    assert v.computable
    assert v.result is not None
    assert (v.result.systolic, v.result.diastolic, v.result.n) == (142.0, 89.0, 2)
    assert v.used == (1, 2)
    assert v.first_two_differ is False
    assert v.first_two_difference_mm_hg == (6.0, 5.0)
    assert not v.needs_more
    assert v.needs_more_reason is None
    assert v.esh_grade is not None
    assert v.esh_grade.key == "grade1"
    assert v.notes == ()


@pytest.mark.parametrize(
    ("first_two", "differ"),
    [
        (((150, 90), (140, 90)), True),  # exactly 10 systolic counts as differing
        (((150, 90), (140.1, 90)), False),  # 9.9
        (((140, 100), (140, 90)), True),  # exactly 10 diastolic
        (((140, 99.5), (140, 90)), False),
        (((130, 80), (141, 80)), True),  # order within the pair does not matter
    ],
)
def test_repeat_rule_boundary(first_two: tuple[tuple[float, float], ...], differ: bool) -> None:
    three = kiosk_visit_summary(visit(*first_two, (135, 85)))
    assert three.first_two_differ is differ
    assert three.needs_more is differ
    if differ:
        assert three.needs_more_reason is not None
        assert "differ by" in three.needs_more_reason
        assert "4 readings wanted, 3 taken" in three.needs_more_reason
    four = kiosk_visit_summary(visit(*first_two, (135, 85), (131, 83)))
    assert not four.needs_more
    assert four.result is not None
    assert (four.result.systolic, four.result.diastolic) == (133.0, 84.0)  # still the last two
    assert four.used == (2, 3)
    assert four.notes == ("mean of the last two of 4 readings",)


def test_readings_are_put_in_time_order() -> None:
    rs = visit((150, 95), (144, 90), (140, 88))
    v = kiosk_visit_summary([rs[2], rs[0], rs[1]])
    assert v.used == (2, 0)  # input indices of the 2nd and 3rd readings in time
    assert v.result is not None
    assert (v.result.systolic, v.result.diastolic) == (142.0, 89.0)
    with pytest.raises(BpInputError, match="readings 0 and 1 have the same time"):
        kiosk_visit_summary([rs[0], rs[0]])


@pytest.mark.parametrize("n", [0, 1])
def test_fewer_than_two_readings_are_not_computable(n: int) -> None:
    v = kiosk_visit_summary(visit((130, 80), (128, 78))[:n])
    assert not v.computable
    assert v.result is None
    assert v.reason is not None
    assert "at least 2" in v.reason
    assert v.needs_more
    assert v.esh_grade is None


def test_two_readings_are_computable_but_need_more() -> None:
    v = kiosk_visit_summary(visit((130, 80), (128, 78)))
    assert v.computable
    assert v.needs_more
    assert v.needs_more_reason == "2 of 3 readings taken"
    assert v.notes == ("mean of the only two readings",)


def test_last_two_that_disagree_get_a_note() -> None:
    v = kiosk_visit_summary(visit((130, 80), (128, 78), (145, 80)))
    assert "the last two readings also differ by >= 10 mmHg" in v.notes


@pytest.mark.parametrize(
    ("last_two", "key"),
    [
        (((180, 100), (180, 100)), "grade3"),
        (((179, 109), (180, 100)), "grade2"),  # 179.5/104.5
        (((179, 109), (181, 109)), "grade3"),  # mean exactly 180
        (((120, 109), (120, 111)), "grade3"),  # mean exactly 110
        (((160, 80), (159, 80)), "grade1"),  # 159.5
        (((139, 89), (139, 89)), "high-normal"),
        (((129, 84), (129, 84)), None),
    ],
)
def test_kiosk_grade_boundaries(last_two: tuple[tuple[float, float], ...], key: str | None) -> None:
    v = kiosk_visit_summary(visit((150, 90), (150, 90), *last_two))
    assert (None if v.esh_grade is None else v.esh_grade.key) == key
    assert v.esh_label is not None
    assert "not a diagnosis" in v.esh_note


# --------------------------------------------------------------------------- properties

bp_values = st.tuples(
    st.floats(min_value=90.0, max_value=220.0), st.floats(min_value=40.0, max_value=85.0)
).filter(lambda p: p[0] > p[1])
home_reading = st.builds(
    lambda day, minute, sd, pulse: BpReading(
        datetime(2026, 3, 25, 22, 0, tzinfo=UTC) + timedelta(days=day, minutes=minute),
        sd[0],
        sd[1],
        pulse,
    ),
    st.integers(min_value=0, max_value=9),
    st.integers(min_value=0, max_value=24 * 60 - 1),
    bp_values,
    st.one_of(st.none(), st.floats(min_value=40.0, max_value=120.0)),
)


@settings(max_examples=120, deadline=None)
@given(st.lists(home_reading, max_size=40), st.randoms(use_true_random=False))
def test_home_average_is_within_the_used_readings_and_order_free(
    rs: list[BpReading], rnd: random.Random
) -> None:
    s = home_bp_summary(rs, tz=HEL)
    shuffled = list(rs)
    rnd.shuffle(shuffled)
    assert home_bp_summary(shuffled, tz=HEL) == s
    assert s.readings_total == len(rs)
    assert s.readings_used + s.readings_discarded + s.readings_ignored == len(rs)
    if s.average is None:
        assert s.readings_used == 0
        return
    first = s.first_day
    assert first is not None
    used = [r for r in rs if 2 <= (r.time.astimezone(HEL).date() - first).days + 1 <= 7]
    assert len(used) == s.average.n == s.readings_used
    # within the readings, up to the float rounding of a sum divided by n (three readings of
    # 90.5890684880018 average to 90.58906848800181: one unit in the last place above)
    for name in ("systolic", "diastolic"):
        values = [float(getattr(r, name)) for r in used]
        mean = getattr(s.average, name)
        slack = 4 * math.ulp(max(values))
        assert min(values) - slack <= mean <= max(values) + slack
    assert s.at_or_above_threshold == (s.average.systolic >= 135 or s.average.diastolic >= 85)
    sessions = [x for x in (s.morning, s.evening) if x is not None]
    assert sum(x.n for x in sessions) == s.average.n


@settings(max_examples=120, deadline=None)
@given(st.lists(bp_values, min_size=2, max_size=6))
def test_kiosk_result_is_between_the_last_two(pairs: list[tuple[float, float]]) -> None:
    v = kiosk_visit_summary(visit(*pairs))
    assert v.result is not None
    (s1, d1), (s2, d2) = pairs[-2], pairs[-1]
    assert min(s1, s2) <= v.result.systolic <= max(s1, s2)
    assert min(d1, d2) <= v.result.diastolic <= max(d1, d2)
    assert v.esh_grade == esh_grade(v.result.systolic, v.result.diastolic, grades=ESH_GRADES)
