"""PEF diary sessions from stored readings (cloud_ingest.analytics.pef_sessions)."""

from __future__ import annotations

import math
import random
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from cloud_ingest.analytics.pef_diary import analyse_diary
from cloud_ingest.analytics.pef_sessions import (
    EXCLUDED_FLAGS,
    PEF_EVENING_WINDOW,
    PEF_MORNING_WINDOW,
    PEF_SESSION_GAP_MIN,
    PefBlowReading,
    PefSessionsError,
    blows_from_readings,
)
from cloud_ingest.rules.pef_zones import PEF_SESSION_GAP_MIN as RULES_GAP
from cloud_ingest.rules.pef_zones import POOR_BLOW_FLAGS
from cloud_ingest.rules.silence import DEFAULT_PEF_WINDOWS
from device_profiles.clinical import Figure
from device_profiles.observation import CLOUD_ONLY_FLAGS, QualityFlag
from edge_agent.signal import SESSION_GAP

HEL = ZoneInfo("Europe/Helsinki")
D0 = date(2026, 3, 2)


def at(day: date, hh: int, mm: int, ss: int = 0, *, fold: int = 0) -> datetime:
    """A Helsinki wall time as the store holds it (UTC)."""
    local = datetime(day.year, day.month, day.day, hh, mm, ss, tzinfo=HEL, fold=fold)
    return local.astimezone(UTC)


def session(day: date, hh: int, mm: int, *values: float) -> list[PefBlowReading]:
    """Blows a minute apart from hh:mm."""
    t0 = at(day, hh, mm)
    return [
        PefBlowReading(at=t0 + timedelta(minutes=k), value=v, obs_id=f"{day}-{hh}{mm}-{k}")
        for k, v in enumerate(values)
    ]


# ------------------------------------------------------------------------------- constants


def test_figures_are_the_ones_the_edge_and_the_rules_use() -> None:
    assert PEF_SESSION_GAP_MIN.value == RULES_GAP.value
    assert PEF_SESSION_GAP_MIN.unit == RULES_GAP.unit == "min"
    assert timedelta(minutes=PEF_SESSION_GAP_MIN.value) == SESSION_GAP
    windows = {w.label: (w.start, w.end) for w in DEFAULT_PEF_WINDOWS}
    assert windows == {"morning": PEF_MORNING_WINDOW, "evening": PEF_EVENING_WINDOW}
    poor = {f.value for f in POOR_BLOW_FLAGS} | {QualityFlag.QUESTIONABLE.value}
    assert poor | {f.value for f in CLOUD_ONLY_FLAGS} | {"derived"} == EXCLUDED_FLAGS


# ------------------------------------------------------------------------------- examples


def test_a_day_with_a_bd_test_becomes_a_diary_day() -> None:
    readings = [
        *session(D0, 7, 0, 400, 410, 405),
        *session(D0, 7, 20, 480, 470, 475),  # 18 min after the pre-BD session ended
        *session(D0, 20, 0, 450, 440, 445),
    ]
    r = blows_from_readings(readings)
    assert [(b.session, b.phase) for b in r.blows] == [("morning", "pre")] * 3 + [
        ("morning", "post")
    ] * 3 + [("evening", "pre")] * 3
    assert [b.pef_l_min for b in r.blows] == [400, 410, 405, 480, 470, 475, 450, 440, 445]
    assert r.blow_indices == tuple(range(9))
    assert r.unclassified == ()
    assert r.blows[0].time == datetime(2026, 3, 2, 7, 0, tzinfo=HEL)
    assert r.blows[0].time.utcoffset() == timedelta(hours=2)
    assert r.notes == (
        "morning session at 2026-03-02 07:20 taken as post-BD: it starts 18 min after the "
        "previous morning session",
    )
    assert [(s.session, s.phase, s.phase_inferred, len(s.indices)) for s in r.sessions] == [
        ("morning", "pre", False, 3),
        ("morning", "post", True, 3),
        ("evening", "pre", False, 3),
    ]
    day = analyse_diary(r.blows).days[0]
    assert day.morning_pre_best == 410
    assert day.morning_post_best == 480
    assert day.evening_pre_best == 450
    assert day.bd_response_l_min == 70


def test_a_blow_outside_the_windows_is_unclassified_with_its_local_time() -> None:
    readings = [*session(D0, 7, 0, 400, 410, 405), *session(D0 + timedelta(days=1), 3, 10, 300)]
    r = blows_from_readings(readings)
    assert len(r.blows) == 3
    (u,) = r.unclassified
    assert u.index == 3
    assert u.reading is readings[3]
    assert u.reason == (
        "blow at 03:10 on 2026-03-03 (Europe/Helsinki) is outside the morning (06:00-11:00) "
        "and evening (18:00-23:00) windows"
    )


def test_every_blow_of_an_outside_session_is_listed_and_names_where_it_began() -> None:
    r = blows_from_readings(session(D0, 14, 0, 300, 310))
    assert r.blows == ()
    assert [u.index for u in r.unclassified] == [0, 1]
    assert r.unclassified[1].reason.endswith("(its session began 2026-03-02 14:00)")


def test_a_session_an_hour_later_is_a_new_pre_bd_session() -> None:
    r = blows_from_readings([*session(D0, 7, 0, 400, 410, 405), *session(D0, 8, 3, 420, 430)])
    assert {b.phase for b in r.blows} == {"pre"}
    assert r.notes == ()


def test_the_bd_interval_is_measured_from_the_end_of_the_previous_session() -> None:
    # pre-BD 07:00-07:08 (blows 4 min apart: one session), next 07:55: 47 min after its end
    pre = [PefBlowReading(at=at(D0, 7, 4 * k), value=400.0 + k) for k in range(3)]
    r = blows_from_readings([*pre, *session(D0, 7, 55, 470, 480)])
    assert [b.phase for b in r.blows] == ["pre"] * 3 + ["post"] * 2
    # 61 min after the end: a new pre-BD session
    r = blows_from_readings([*pre, *session(D0, 8, 9, 470, 480)])
    assert [b.phase for b in r.blows] == ["pre"] * 5


def test_what_the_reading_says_wins_over_the_timing() -> None:
    readings = [
        *session(D0, 7, 0, 400, 410),
        PefBlowReading(at=at(D0, 7, 20), value=420.0, post_bd=False),
        PefBlowReading(at=at(D0, 7, 21), value=425.0),
        PefBlowReading(at=at(D0, 20, 0), value=450.0, post_bd=True),
    ]
    r = blows_from_readings(readings)
    assert [b.phase for b in r.blows] == ["pre", "pre", "pre", "post", "post"]


def test_a_post_bd_session_just_after_the_window_belongs_to_its_session() -> None:
    readings = [*session(D0, 10, 40, 400, 410, 405), *session(D0, 11, 5, 470, 480)]
    r = blows_from_readings(readings)
    assert [(b.session, b.phase) for b in r.blows] == [("morning", "pre")] * 3 + [
        ("morning", "post")
    ] * 2
    assert r.notes == (
        "session at 2026-03-02 11:05 is outside the morning window but starts 23 min after the "
        "morning session: taken as its post-BD session",
    )
    # not when the reliever round would be the first session of the day
    r = blows_from_readings(session(D0, 11, 5, 470, 480))
    assert r.blows == ()
    assert len(r.unclassified) == 2


def test_blows_that_cannot_give_the_diary_a_value_are_listed_with_the_reason() -> None:
    t = at(D0, 7, 0)
    m = timedelta(minutes=1)
    readings = [
        PefBlowReading(at=t, value=420.0),
        PefBlowReading(at=t + m, value=300.0, quality=frozenset({"cough"})),
        PefBlowReading(at=t + 2 * m, value=900.0, comparator=">"),
        PefBlowReading(at=t + 3 * m, value=None),
        PefBlowReading(at=t + 4 * m, value=math.nan),
        PefBlowReading(at=t + 5 * m, value=30.0),
        PefBlowReading(at=t + 6 * m, value=415.0, quality=frozenset({"simulated"})),
        PefBlowReading(at=t + 7 * m, value=410.0, quality=frozenset({"implausible"})),
        PefBlowReading(at=datetime(2026, 3, 2, 7, 8), value=400.0),  # naive: no zone
    ]
    r = blows_from_readings(readings)
    assert r.blow_indices == (0, 6)
    reasons = {u.index: u.reason for u in r.unclassified}
    assert reasons == {
        1: "flagged cough: may not show the patient's true peak flow, so not used for the "
        "diary's values",
        2: "'> 900 L/min' is the meter's range limit (HI/LO), not a measured value",
        3: "no value (the meter reported none)",
        4: "value nan L/min is not a positive finite number",
        5: "value 30 L/min is outside the meter range 50-900 L/min "
        "(DOMAIN.md §1: meter range 50-900 L/min)",
        7: "flagged implausible: may not show the patient's true peak flow, so not used for "
        "the diary's values",
        8: "time datetime.datetime(2026, 3, 2, 7, 8) has no time zone: the local session "
        "cannot be known",
    }


def test_tuples_and_any_input_order_are_accepted() -> None:
    readings = [*session(D0, 7, 0, 400, 410, 405), *session(D0, 20, 0, 450, 440, 445)]
    tuples = [(r.at, r.value, r.post_bd) for r in readings]
    shuffled = list(reversed(tuples))
    a = blows_from_readings(tuples)
    b = blows_from_readings(shuffled)
    assert a.blows == b.blows
    assert [shuffled[i] for i in b.blow_indices] == tuples


def test_a_zone_given_as_text_or_zoneinfo_and_other_zones() -> None:
    readings = session(D0, 7, 0, 400)
    assert blows_from_readings(readings, tz="Europe/Helsinki") == blows_from_readings(
        readings, tz=HEL
    )
    # 07:00 Helsinki is 06:00 in Stockholm: still morning there
    r = blows_from_readings(readings, tz="Europe/Stockholm")
    assert r.blows[0].time.hour == 6
    assert r.tz == "Europe/Stockholm"
    # and 05:00 UTC: outside the morning window
    assert blows_from_readings(readings, tz="UTC").blows == ()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tz": "Mars/Olympus"}, "unknown time zone"),
        ({"session_gap": Figure(600, "s", "t")}, "session_gap must be >= 0 min"),
        (
            {
                "post_bd_min_after": Figure(30, "min", "t"),
                "post_bd_max_after": Figure(20, "min", "t"),
            },
            "must not be shorter",
        ),
        ({"morning": (time(11), time(6))}, "morning window must be"),
        ({"evening": (time(10), time(23))}, "morning window must end before"),
    ],
)
def test_bad_parameters_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(PefSessionsError, match=message):
        blows_from_readings([], **kwargs)  # type: ignore[arg-type]


def test_no_readings_give_an_empty_result() -> None:
    r = blows_from_readings([])
    assert (r.blows, r.unclassified, r.sessions, r.notes) == ((), (), (), ())


# ------------------------------------------------------------------------------- DST


def test_spring_forward_day_sessions_by_the_clock_on_the_wall() -> None:
    # 2026-03-29: 03:00 EET -> 04:00 EEST. A morning session at 06:30 EEST, evening 21:00.
    day = date(2026, 3, 29)
    readings = [*session(day, 6, 30, 400, 410, 405), *session(day, 21, 0, 430, 440, 435)]
    r = blows_from_readings(readings)
    assert [b.session for b in r.blows] == ["morning"] * 3 + ["evening"] * 3
    assert r.blows[0].time.utcoffset() == timedelta(hours=3)
    assert r.blows[0].time.hour == 6
    assert analyse_diary(r.blows).days[0].date == day


def test_autumn_repeated_hour_keeps_two_blows_and_splits_sessions_by_real_time() -> None:
    # 2026-10-25: 04:00 EEST -> 03:00 EET; 03:55 (first) and 03:05 (second) are 10 min apart
    day = date(2026, 10, 25)
    first = PefBlowReading(at=at(day, 3, 55, fold=0), value=400.0)
    second = PefBlowReading(at=at(day, 3, 5, fold=1), value=410.0)
    assert second.at - first.at == timedelta(minutes=10)
    r = blows_from_readings([first, second])
    assert len(r.sessions) == 1  # 10 min apart by the clock of the world, not 50 min back
    assert r.blows == ()
    assert [u.reason.split(" on ")[0] for u in r.unclassified] == [
        "blow at 03:55",
        "blow at 03:05",
    ]
    # same wall time twice (03:30+03:00 and 03:30+02:00): two readings, two distinct instants
    a = PefBlowReading(at=at(day, 3, 30, fold=0), value=400.0)
    b = PefBlowReading(at=at(day, 3, 30, fold=1), value=400.0)
    r = blows_from_readings([a, b])
    assert len(r.sessions) == 2
    assert len(r.unclassified) == 2


def test_local_aware_inputs_are_ordered_by_the_instant_not_the_wall_time() -> None:
    # both in Helsinki time with the same tzinfo: naive subtraction would say 50 min back
    day = date(2026, 10, 25)
    a = datetime(2026, 10, 25, 3, 55, tzinfo=HEL, fold=0)
    b = datetime(2026, 10, 25, 3, 5, tzinfo=HEL, fold=1)
    r = blows_from_readings([(b, 410.0, None), (a, 400.0, None)])
    assert [u.index for u in r.unclassified] == [1, 0]  # a first: it happened first
    assert len(r.sessions) == 1
    assert r.sessions[0].start.date() == day


# ------------------------------------------------------------------------------- properties

DST_DAYS = (date(2026, 3, 29), date(2026, 10, 25), date(2026, 6, 1))


@st.composite
def reading_sets(draw: st.DrawFn) -> list[PefBlowReading]:
    day = draw(st.sampled_from(DST_DAYS))
    base = datetime(day.year, day.month, day.day, tzinfo=HEL).astimezone(UTC) - timedelta(hours=2)
    n = draw(st.integers(0, 25))
    out = []
    for _ in range(n):
        offset = draw(st.integers(0, 28 * 3600))
        value = draw(
            st.one_of(
                st.floats(50, 900, allow_nan=False),
                st.floats(allow_nan=True, allow_infinity=True),
                st.none(),
            )
        )
        out.append(
            PefBlowReading(
                at=base + timedelta(seconds=offset),
                value=value,
                post_bd=draw(st.none() | st.booleans()),
                comparator=draw(st.sampled_from([None, None, None, ">", "<"])),
                quality=draw(
                    st.frozensets(st.sampled_from(["simulated", "cough", "questionable"]))
                ),
            )
        )
    # clustered sessions: a few blows a minute or two apart, sometimes a reliever round
    for _ in range(draw(st.integers(0, 4))):
        start = base + timedelta(seconds=draw(st.integers(0, 27 * 3600)))
        for k in range(draw(st.integers(1, 5))):
            out.append(
                PefBlowReading(
                    at=start + timedelta(seconds=70 * k),
                    value=draw(st.floats(50, 900, allow_nan=False)),
                )
            )
        if draw(st.booleans()):
            later = start + timedelta(minutes=draw(st.integers(5, 80)))
            out.append(PefBlowReading(at=later, value=draw(st.floats(50, 900, allow_nan=False))))
    return out


@given(reading_sets())
@example([PefBlowReading(at=at(date(2026, 10, 25), 3, 30, fold=1), value=400.0)])
def test_every_reading_is_a_blow_or_unclassified_once_and_values_are_unchanged(
    readings: list[PefBlowReading],
) -> None:
    r = blows_from_readings(readings)
    seen = list(r.blow_indices) + [u.index for u in r.unclassified]
    assert sorted(seen) == list(range(len(readings)))
    assert len(r.blows) == len(r.blow_indices)
    for b, i in zip(r.blows, r.blow_indices, strict=True):
        src = readings[i]
        assert b.pef_l_min == src.value  # the same number, never rounded or clamped
        assert b.time == src.at  # the same instant ...
        assert b.time.utcoffset() == src.at.astimezone(HEL).utcoffset()  # ... on Helsinki's wall
        assert b.time.replace(tzinfo=None) == src.at.astimezone(HEL).replace(tzinfo=None)
        if src.post_bd is not None:
            assert b.phase == ("post" if src.post_bd else "pre")
    # a session's half-day is decided by the local wall time of its first reading
    windows = {"morning": PEF_MORNING_WINDOW, "evening": PEF_EVENING_WINDOW}
    for s in r.sessions:
        wall = s.start.time().replace(tzinfo=None)
        if s.session is not None and not (s.phase_inferred and s.phase == "post"):
            lo, hi = windows[s.session]
            assert lo <= wall < hi
        if s.session is None:
            assert not any(i in r.blow_indices for i in s.indices)
    for u in r.unclassified:
        assert u.reading is readings[u.index]
        assert u.reason
    # blows come in time order; sessions partition the timed readings
    assert [b.time for b in r.blows] == sorted(b.time for b in r.blows)
    in_sessions = sorted(i for s in r.sessions for i in s.indices)
    assert in_sessions == sorted(i for i, x in enumerate(readings) if x.at.tzinfo is not None)
    gap = timedelta(minutes=PEF_SESSION_GAP_MIN.value)
    for s in r.sessions:
        times = [readings[i].at for i in s.indices]
        assert all(b - a <= gap for a, b in pairwise(times))
    for s1, s2 in pairwise(r.sessions):
        assert readings[s2.indices[0]].at - readings[s1.indices[-1]].at > gap
    if r.blows:
        analyse_diary(r.blows)  # the diary takes them as they are


@given(reading_sets(), st.randoms(use_true_random=False))
def test_the_result_does_not_depend_on_the_input_order(
    readings: list[PefBlowReading], rnd: random.Random
) -> None:
    shuffled = readings[:]
    rnd.shuffle(shuffled)
    a = blows_from_readings(readings)
    b = blows_from_readings(shuffled)
    key_a = sorted(
        (readings[i].at, id(readings[i]), x) for i, x in zip(a.blow_indices, a.blows, strict=True)
    )
    key_b = sorted(
        (shuffled[i].at, id(shuffled[i]), x) for i, x in zip(b.blow_indices, b.blows, strict=True)
    )
    assert key_a == key_b
    assert sorted(id(u.reading) for u in a.unclassified) == sorted(
        id(u.reading) for u in b.unclassified
    )


@given(st.sampled_from(DST_DAYS), st.integers(0, 23 * 60 + 59))
def test_a_single_blow_is_classified_by_its_local_hour(day: date, minute: int) -> None:
    wall = time(minute // 60, minute % 60)
    local = datetime.combine(day, wall, HEL)
    instant = local.astimezone(UTC)
    r = blows_from_readings([(instant, 400.0, None)])
    shown = instant.astimezone(HEL)  # a spring-forward gap time moves on by an hour
    w = shown.time().replace(tzinfo=None)
    if PEF_MORNING_WINDOW[0] <= w < PEF_MORNING_WINDOW[1]:
        assert [b.session for b in r.blows] == ["morning"]
    elif PEF_EVENING_WINDOW[0] <= w < PEF_EVENING_WINDOW[1]:
        assert [b.session for b in r.blows] == ["evening"]
    else:
        assert r.blows == ()
        assert f"blow at {w.isoformat('minutes')} on {shown.date().isoformat()}" in (
            r.unclassified[0].reason
        )
    if r.blows:
        assert r.blows[0].local_date == shown.date()
