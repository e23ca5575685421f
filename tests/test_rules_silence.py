"""Silence rules: CGM stale data, missed PEF diary sessions (DST days), sites offline."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud_ingest.rules.dispenser import (
    FindingAction,
    OpenFinding,
    RuleInputError,
)
from cloud_ingest.rules.silence import (
    CGM_STALE,
    CGM_STALE_URGENT,
    PEF_SESSION_MISSED,
    SITE_OFFLINE,
    CgmSilencePolicy,
    CgmStream,
    PefReadingTime,
    PefSchedule,
    PefSchedulePolicy,
    SessionWindow,
    SiteStatus,
    SiteStatusPolicy,
    diary_windows,
    evaluate_cgm_silence,
    evaluate_pef_schedule,
    evaluate_site_status,
)
from cloud_ingest.rules.thresholds import Priority, RuleError
from device_profiles.clinical import Figure
from tests.findings import Key, by_condition, feed, final_states

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
HEL = "Europe/Helsinki"


# ============================================================================================
# CGM stale data


def stream(
    silent: timedelta | None,
    *,
    expected_since: datetime | None = NOW - timedelta(days=3),
    subject: str = "p1",
    reading_id: str = "r1",
    now: datetime = NOW,
) -> CgmStream:
    return CgmStream(
        subject_ref=subject,
        expected_since=expected_since,
        newest_reading_time=None if silent is None else now - silent,
        newest_reading_id=None if silent is None else reading_id,
    )


def cgm(
    streams: list[CgmStream],
    open_: dict[Key, OpenFinding] | None = None,
    *,
    now: datetime = NOW,
    policy: CgmSilencePolicy | None = None,
) -> list[FindingAction]:
    return evaluate_cgm_silence(streams, open_alerts=(open_ or {}).values(), now=now, policy=policy)


M = timedelta(minutes=1)
S = timedelta(seconds=1)

CGM_TABLE = [
    # (stream, condition raised)
    (stream(15 * M - S), None),
    (stream(15 * M), CGM_STALE),
    (stream(30 * M - S), CGM_STALE),
    (stream(30 * M), CGM_STALE_URGENT),
    (stream(4 * 60 * M), CGM_STALE_URGENT),
    (stream(-5 * M), None),  # a reading stamped after now (clock skew) is not silence
    (stream(4 * 60 * M, expected_since=None), None),  # no CGM expected: never stale
    (stream(None, expected_since=None), None),
    (stream(None, expected_since=NOW - 20 * M), CGM_STALE),  # never a reading this session
    (stream(None, expected_since=NOW - 10 * M), None),
    (stream(2 * 60 * M, expected_since=NOW - 10 * M), None),  # old session's reading
]


@pytest.mark.parametrize(("s", "condition"), CGM_TABLE)
def test_cgm_stale_boundaries(s: CgmStream, condition: str | None) -> None:
    actions = cgm([s])
    if condition is None:
        assert actions == []
        return
    (a,) = actions
    assert a.kind == "raise"
    assert a.state.condition == condition
    assert a.state.priority == (Priority.MEDIUM if condition == CGM_STALE_URGENT else Priority.LOW)
    assert a.state.trigger_count == 1


def test_cgm_explanation() -> None:
    (a,) = cgm([stream(16 * M, reading_id="obs-9")])
    text = a.state.explanation
    assert text.startswith("No CGM readings received. Rule cgm-stale (low priority, for ")
    assert "no reading for 15 min or more" in text
    assert "DOMAIN.md §2 stale data" in text
    assert "Nightscout" in text
    assert "newest reading obs-9 at 2026-03-02 11:44 UTC" in text
    assert "16 min when checked at 2026-03-02 12:00 UTC" in a.events[0].note
    (never,) = cgm([stream(None, expected_since=NOW - 20 * M)])
    assert "expected since 2026-03-02 11:40 UTC and no reading after it" in never.state.explanation


def test_cgm_same_episode_is_counted_once() -> None:
    open_ = feed({}, cgm([stream(16 * M)]))
    later = NOW + 5 * M
    assert cgm([stream(21 * M, now=later)], open_, now=later) == []


def test_cgm_urgent_is_raised_beside_the_warning_which_is_left_alone() -> None:
    open_ = feed({}, cgm([stream(16 * M)]))
    later = NOW + 15 * M
    actions = by_condition(cgm([stream(31 * M, now=later)], open_, now=later))
    assert set(actions) == {CGM_STALE_URGENT}
    assert actions[CGM_STALE_URGENT].kind == "raise"
    # first check already past 30 min: only the urgent one
    assert set(by_condition(cgm([stream(45 * M)]))) == {CGM_STALE_URGENT}


def test_cgm_reading_clears_both_then_a_new_episode_unclears() -> None:
    open_ = feed({}, cgm([stream(16 * M)]))
    t1 = NOW + 15 * M
    open_ = feed(open_, cgm([stream(31 * M, now=t1)], open_, now=t1))
    t2 = NOW + 20 * M
    cleared = by_condition(cgm([stream(2 * M, reading_id="r2", now=t2)], open_, now=t2))
    assert set(cleared) == {CGM_STALE, CGM_STALE_URGENT}
    for a in cleared.values():
        assert a.kind == "clear"
        assert a.state.cleared_at == t2 - 2 * M
        assert a.state.cleared_by == "r2"
        assert "awaiting review" in a.state.explanation
    open_ = feed(open_, list(cleared.values()))
    t3 = t2 + 20 * M  # silent again since r2: a new episode
    again = by_condition(cgm([stream(22 * M, reading_id="r2", now=t3)], open_, now=t3))
    assert set(again) == {CGM_STALE}
    warn = again[CGM_STALE]
    assert warn.kind == "update"
    assert warn.state.cleared_at is None
    assert warn.state.trigger_count == 2
    assert warn.state.first.time == NOW - 16 * M
    assert warn.state.last.time == t2 - 2 * M


def test_cgm_stream_no_longer_expected_clears() -> None:
    open_ = feed({}, cgm([stream(16 * M)]))
    later = NOW + 10 * M
    (a,) = cgm([stream(26 * M, expected_since=None, now=later)], open_, now=later)
    assert a.kind == "clear"
    assert a.state.cleared_at == later
    assert a.state.cleared_by == "cgm-stream-not-expected:p1"


def test_cgm_subjects_are_separate_and_each_once() -> None:
    actions = cgm([stream(16 * M, subject="p1"), stream(3 * M, subject="p2")])
    assert [a.state.subject_ref for a in actions] == ["p1"]
    with pytest.raises(RuleInputError, match="given twice"):
        cgm([stream(16 * M), stream(3 * M)])


def test_cgm_policy_overrides_and_checks() -> None:
    policy = CgmSilencePolicy(warn_after=Figure(10.0, "min", "care team X"))
    (a,) = cgm([stream(10 * M)], policy=policy)
    assert a.state.condition == CGM_STALE
    assert "no reading for 10 min or more" in a.state.explanation
    assert "care team X" in a.state.explanation
    with pytest.raises(RuleError, match="shorter"):
        CgmSilencePolicy(warn_after=Figure(30.0, "min", "x"))
    with pytest.raises(RuleError, match="in min"):
        CgmSilencePolicy(warn_after=Figure(600.0, "s", "x"))
    with pytest.raises(RuleError, match="> 0"):
        CgmSilencePolicy(warn_after=Figure(0.0, "min", "x"))


def test_cgm_bad_input() -> None:
    with pytest.raises(RuleInputError, match="go together"):
        CgmStream(subject_ref="p1", expected_since=NOW, newest_reading_time=NOW)
    with pytest.raises(RuleInputError, match="aware"):
        CgmStream(subject_ref="p1", expected_since=datetime(2026, 3, 2))
    with pytest.raises(RuleInputError, match="now must be an aware"):
        evaluate_cgm_silence([], open_alerts=[], now=datetime(2026, 3, 2))


@given(st.integers(min_value=-600, max_value=3 * 3600))
def test_cgm_level_follows_the_silence_and_rechecks_are_idempotent(seconds: int) -> None:
    actions = cgm([stream(timedelta(seconds=seconds))])
    if seconds >= 30 * 60:
        expected = {CGM_STALE_URGENT}
    elif seconds >= 15 * 60:
        expected = {CGM_STALE}
    else:
        expected = set()
    assert set(by_condition(actions)) == expected
    assert cgm([stream(timedelta(seconds=seconds))], feed({}, actions)) == []


# ============================================================================================
# PEF diary sessions


def utc(m: int, d: int, h: int, mi: int = 0, s: int = 0) -> datetime:
    return datetime(2026, m, d, h, mi, s, tzinfo=UTC)


def schedule(
    first: date,
    last: date | None = None,
    *,
    windows: tuple[SessionWindow, ...] | None = None,
    subject: str = "p1",
) -> PefSchedule:
    return PefSchedule(
        subject_ref=subject,
        time_zone=HEL,
        first_day=first,
        last_day=last or first,
        windows=windows,
    )


def rd(t: datetime, obs_id: str | None = None, subject: str = "p1") -> PefReadingTime:
    return PefReadingTime(
        obs_id=obs_id or f"pef-{t:%m%d%H%M%S}", subject_ref=subject, effective_time=t
    )


def pef(
    schedules: list[PefSchedule],
    readings: list[PefReadingTime],
    open_: dict[Key, OpenFinding] | None = None,
    *,
    now: datetime,
    judged_until: dict[str, datetime] | None = None,
    policy: PefSchedulePolicy | None = None,
) -> list[FindingAction]:
    return evaluate_pef_schedule(
        schedules,
        readings,
        open_alerts=(open_ or {}).values(),
        now=now,
        judged_until=judged_until,
        policy=policy,
    )


MAR2 = date(2026, 3, 2)  # EET (UTC+2): morning 04:00-09:00 UTC, evening 16:00-21:00 UTC
EVENING_MAR2 = rd(utc(3, 2, 17), "evening")
MORNING = "pef-window:p1:2026-03-02:morning"
EVENING = "pef-window:p1:2026-03-02:evening"

PEF_TABLE = [
    # (readings, missed window ids)
    ([rd(utc(3, 2, 4, 0, 0)), EVENING_MAR2], []),  # at the start instant: inside
    ([rd(utc(3, 2, 3, 59, 59)), EVENING_MAR2], [MORNING]),
    ([rd(utc(3, 2, 8, 59, 59)), EVENING_MAR2], []),
    ([rd(utc(3, 2, 9, 0, 0)), EVENING_MAR2], [MORNING]),  # at the end instant: outside
    ([rd(utc(3, 2, 6))], [EVENING]),
    ([], [MORNING, EVENING]),
    ([rd(utc(3, 2, 12)), rd(utc(3, 1, 6)), rd(utc(3, 3, 6))], [MORNING, EVENING]),  # outside
]


@pytest.mark.parametrize(("readings", "missed"), PEF_TABLE)
def test_pef_window_boundaries(readings: list[PefReadingTime], missed: list[str]) -> None:
    actions = pef([schedule(MAR2)], readings, now=utc(3, 4, 0))
    if not missed:
        assert actions == []
        return
    (a,) = actions
    assert a.kind == "raise"
    assert a.state.condition == PEF_SESSION_MISSED
    assert a.state.priority == Priority.LOW
    assert a.state.trigger_count == len(missed)
    assert a.state.first.event_id == missed[0]
    assert a.state.last.event_id == missed[-1]


def test_pef_window_at_end_instant_reading_does_not_clear() -> None:
    (a,) = pef([schedule(MAR2)], [rd(utc(3, 2, 9), "at-end")], now=utc(3, 2, 12))
    assert a.state.cleared_at is None


@pytest.mark.parametrize(
    ("now", "judged"),
    [
        (utc(3, 2, 9, 29, 59), False),  # the 30-min upload grace has not passed
        (utc(3, 2, 9, 30), True),
    ],
)
def test_pef_window_is_judged_after_the_upload_grace(now: datetime, judged: bool) -> None:
    actions = pef([schedule(MAR2)], [], now=now)
    assert (actions != []) is judged
    no_grace = PefSchedulePolicy(upload_grace=Figure(0.0, "min", "test"))
    assert pef([schedule(MAR2)], [], now=utc(3, 2, 9), policy=no_grace) != []
    assert pef([schedule(MAR2)], [], now=utc(3, 2, 8, 59, 59), policy=no_grace) == []


def test_pef_explanation() -> None:
    (a,) = pef([schedule(MAR2)], [], now=utc(3, 2, 12))
    text = a.state.explanation
    assert text.startswith("PEF diary session missed. Rule pef-session-missed (low priority")
    assert "DOMAIN.md §1" in text
    assert (
        "no PEF reading in the morning 06:00-11:00 window of 2026-03-02 (Europe/Helsinki; "
        "2026-03-02 04:00 UTC to 2026-03-02 09:00 UTC)"
    ) in text
    assert "All-clear: a PEF reading inside a later session window." in text


def test_pef_missed_windows_attach_and_are_judged_once() -> None:
    s = schedule(MAR2, date(2026, 3, 3))
    first = pef([s], [], now=utc(3, 2, 12))
    assert first[0].state.trigger_count == 1
    open_ = feed({}, first)
    assert pef([s], [], open_, now=utc(3, 2, 12)) == []
    (a,) = pef([s], [], open_, now=utc(3, 3, 12))
    assert a.kind == "update"
    assert a.state.trigger_count == 3  # + evening 2nd, morning 3rd
    assert a.state.first.event_id == MORNING
    assert a.state.last.event_id == "pef-window:p1:2026-03-03:morning"
    open_ = feed(open_, [a])
    assert pef([s], [], open_, now=utc(3, 3, 12)) == []
    assert pef([s], [], open_, now=utc(3, 9, 12))[0].state.trigger_count == 4  # diary ends


def test_pef_reading_in_a_later_window_clears_then_a_miss_unclears() -> None:
    s = schedule(MAR2, date(2026, 3, 3))
    open_ = feed({}, pef([s], [], now=utc(3, 2, 12)))
    r = rd(utc(3, 2, 17), "r-evening")
    (c,) = pef([s], [r], open_, now=utc(3, 2, 18))
    assert c.kind == "clear"
    assert c.state.cleared_at == r.effective_time
    assert c.state.cleared_by == "r-evening"
    open_ = feed(open_, [c])
    (u,) = pef([s], [r], open_, now=utc(3, 3, 12))
    assert u.kind == "update"
    assert u.state.cleared_at is None
    assert u.state.trigger_count == 2
    assert u.state.last.event_id == "pef-window:p1:2026-03-03:morning"


def test_pef_resolved_alert_is_not_raised_again_with_judged_until() -> None:
    s = schedule(MAR2, date(2026, 3, 3))
    (a,) = pef([s], [], now=utc(3, 2, 23))
    assert a.state.trigger_count == 2
    judged = {"p1": a.state.last.time}
    # the nurse resolved it: no open alert any more
    assert pef([s], [], now=utc(3, 2, 23), judged_until=judged) == []
    (b,) = pef([s], [], now=utc(3, 3, 12), judged_until=judged)
    assert b.kind == "raise"
    assert b.state.trigger_count == 1
    assert b.state.first.event_id == "pef-window:p1:2026-03-03:morning"
    # without it, old windows come back (shown twice, never hidden)
    assert pef([s], [], now=utc(3, 3, 12))[0].state.trigger_count == 3


def test_pef_subjects_without_schedule_and_duplicates() -> None:
    assert pef([], [rd(utc(3, 2, 5))], now=utc(3, 3, 0)) == []
    r = rd(utc(3, 2, 5), "same")
    assert pef([schedule(MAR2)], [r, r, EVENING_MAR2], now=utc(3, 3, 0)) == []
    with pytest.raises(RuleInputError, match="different content"):
        pef([schedule(MAR2)], [r, rd(utc(3, 2, 6), "same")], now=utc(3, 3, 0))
    with pytest.raises(RuleInputError, match="given twice"):
        pef([schedule(MAR2), schedule(MAR2)], [], now=utc(3, 3, 0))


# --- DST: Europe/Helsinki goes EET (+2) -> EEST (+3) on 2026-03-29 at 03:00 local, and back
# on 2026-10-25 at 04:00 local.


def test_pef_windows_follow_the_spring_dst_change() -> None:
    ws = diary_windows(schedule(date(2026, 3, 28), date(2026, 3, 29)), PefSchedulePolicy())
    spans = [(w.day.isoformat(), w.window.label, w.start, w.end) for w in ws]
    assert spans == [
        ("2026-03-28", "morning", utc(3, 28, 4), utc(3, 28, 9)),
        ("2026-03-28", "evening", utc(3, 28, 16), utc(3, 28, 21)),
        ("2026-03-29", "morning", utc(3, 29, 3), utc(3, 29, 8)),
        ("2026-03-29", "evening", utc(3, 29, 15), utc(3, 29, 20)),
    ]


def test_pef_reading_on_the_spring_dst_day() -> None:
    """03:30 UTC is 05:30 local on the 28th (before the window), 06:30 on the 29th (inside)."""
    s = schedule(date(2026, 3, 28), date(2026, 3, 29))
    readings = [
        rd(utc(3, 28, 3, 30)),
        rd(utc(3, 29, 3, 30)),
        rd(utc(3, 28, 17)),
        rd(utc(3, 29, 17)),
    ]
    (a,) = pef([s], readings, now=utc(3, 30, 0))
    assert a.state.trigger_count == 1
    assert a.state.first.event_id == "pef-window:p1:2026-03-28:morning"
    assert a.state.cleared_by == "pef-0328170000"


def test_pef_reading_on_the_autumn_dst_day() -> None:
    """03:30 UTC is 06:30 local on 24 Oct (EEST, inside), 05:30 on the 25th (EET, before)."""
    s = schedule(date(2026, 10, 24), date(2026, 10, 25))
    ws = diary_windows(s, PefSchedulePolicy())
    assert [(w.start, w.end) for w in ws if w.window.label == "morning"] == [
        (utc(10, 24, 3), utc(10, 24, 8)),
        (utc(10, 25, 4), utc(10, 25, 9)),
    ]
    readings = [rd(utc(10, 24, 3, 30)), rd(utc(10, 25, 3, 30)), rd(utc(10, 24, 17))]
    (a,) = pef([s], readings, now=utc(10, 26, 0))
    assert a.state.first.event_id == "pef-window:p1:2026-10-25:morning"
    assert a.state.last.event_id == "pef-window:p1:2026-10-25:evening"
    assert a.state.trigger_count == 2


def test_pef_windows_touching_the_dst_changes() -> None:
    """RFC 5545 / PEP 495 fold=0: a bound in the spring gap falls the gap's length later, an
    ambiguous autumn bound is its first occurrence; a window left with no instants is absent."""
    policy = PefSchedulePolicy()

    def spans(day: date, start: time, end: time) -> list[tuple[datetime, datetime]]:
        w = (SessionWindow(label="w", start=start, end=end),)
        return [(x.start, x.end) for x in diary_windows(schedule(day, windows=w), policy)]

    spring, autumn = date(2026, 3, 29), date(2026, 10, 25)
    # 03:10-03:50 does not exist on the spring day: read as 04:10-04:50 summer time
    assert spans(spring, time(3, 10), time(3, 50)) == [(utc(3, 29, 1, 10), utc(3, 29, 1, 50))]
    assert spans(date(2026, 3, 28), time(3, 10), time(3, 50)) == [
        (utc(3, 28, 1, 10), utc(3, 28, 1, 50))
    ]
    # 03:50-04:00 would end before it starts: no such window that day
    assert spans(spring, time(3, 50), time(4, 0)) == []
    # a window across the gap is an hour shorter
    assert spans(spring, time(2, 0), time(5, 0)) == [(utc(3, 29, 0), utc(3, 29, 2))]
    # 03:10-03:50 happens twice on the autumn day: the first occurrence (summer time)
    assert spans(autumn, time(3, 10), time(3, 50)) == [(utc(10, 25, 0, 10), utc(10, 25, 0, 50))]
    # a window across the repeated hour is an hour longer
    assert spans(autumn, time(2, 0), time(5, 0)) == [(utc(10, 24, 23), utc(10, 25, 3))]


def test_pef_bad_input() -> None:
    with pytest.raises(RuleInputError, match="unknown time zone"):
        PefSchedule(subject_ref="p1", time_zone="Europe/Nowhere", first_day=MAR2, last_day=MAR2)
    with pytest.raises(RuleInputError, match="after"):
        PefSchedule(subject_ref="p1", time_zone=HEL, first_day=MAR2, last_day=date(2026, 3, 1))
    with pytest.raises(RuleInputError, match="must be before end"):
        SessionWindow(label="x", start=time(11), end=time(6))
    with pytest.raises(RuleInputError, match="not overlap"):
        schedule(
            MAR2,
            windows=(
                SessionWindow(label="a", start=time(6), end=time(12)),
                SessionWindow(label="b", start=time(11), end=time(13)),
            ),
        )
    with pytest.raises(RuleInputError, match="repeat"):
        schedule(
            MAR2,
            windows=(
                SessionWindow(label="a", start=time(6), end=time(7)),
                SessionWindow(label="a", start=time(8), end=time(9)),
            ),
        )
    with pytest.raises(RuleInputError, match="aware"):
        PefReadingTime(obs_id="x", subject_ref="p1", effective_time=datetime(2026, 3, 2))


DST_DIARY = schedule(date(2026, 3, 27), date(2026, 3, 30))
DIARY_START = utc(3, 27, 0)
DIARY_NOW = utc(3, 31, 12)


@st.composite
def pef_readings(draw: st.DrawFn) -> list[PefReadingTime]:
    minutes = draw(st.lists(st.integers(min_value=0, max_value=4 * 24 * 60), max_size=12))
    return [rd(DIARY_START + timedelta(minutes=m), f"r{i:02d}") for i, m in enumerate(minutes)]


@given(pef_readings(), st.randoms(use_true_random=False))
def test_pef_shuffled_readings_give_the_same_result(
    readings: list[PefReadingTime], rnd: random.Random
) -> None:
    shuffled = list(readings)
    rnd.shuffle(shuffled)
    ordered = sorted(readings, key=lambda r: (r.effective_time, r.obs_id))
    assert pef([DST_DIARY], shuffled, now=DIARY_NOW) == pef([DST_DIARY], ordered, now=DIARY_NOW)


@given(pef_readings(), st.integers(min_value=1, max_value=8))
def test_pef_periodic_checks_end_in_the_same_state_as_one_check(
    readings: list[PefReadingTime], every_hours: int
) -> None:
    """Checking every few hours with the readings known by then (feeding back the state)
    ends where one check at the end does; and checking again changes nothing."""
    open_: dict[Key, OpenFinding] = {}
    calls = []
    t = DIARY_START
    while t <= DIARY_NOW:
        known = [r for r in readings if r.effective_time <= t]
        actions = pef([DST_DIARY], known, open_, now=t)
        calls.append(actions)
        open_ = feed(open_, actions)
        t += timedelta(hours=every_hours)
    last = pef([DST_DIARY], readings, open_, now=DIARY_NOW)
    calls.append(last)
    open_ = feed(open_, last)
    once = pef([DST_DIARY], readings, now=DIARY_NOW)
    assert final_states(calls) == final_states([once])
    assert pef([DST_DIARY], readings, open_, now=DIARY_NOW) == []


# ============================================================================================
# sites


def status(state: str, age: timedelta, site: str = "hub-1", now: datetime = NOW) -> SiteStatus:
    return SiteStatus(site=site, state=state, at=now - age)  # type: ignore[arg-type]


def sites(
    statuses: list[SiteStatus],
    open_: dict[Key, OpenFinding] | None = None,
    *,
    now: datetime = NOW,
    policy: SiteStatusPolicy | None = None,
) -> list[FindingAction]:
    return evaluate_site_status(
        statuses, open_alerts=(open_ or {}).values(), now=now, policy=policy
    )


@pytest.mark.parametrize(
    ("s", "raised"),
    [
        (status("offline", 10 * M - S), False),
        (status("offline", 10 * M), True),
        (status("offline", 3 * 60 * M), True),
        (status("online", 3 * 60 * M), False),
        (status("offline", -M), False),  # stamped after now: not yet offline for long
    ],
)
def test_site_offline_grace(s: SiteStatus, raised: bool) -> None:
    actions = sites([s])
    if not raised:
        assert actions == []
        return
    (a,) = actions
    assert a.kind == "raise"
    assert a.state.condition == SITE_OFFLINE
    assert a.state.subject_ref == "hub-1"
    assert a.state.priority == Priority.MEDIUM
    assert "offline for 10 min or more" in a.state.explanation
    assert f"reported offline at {s.at:%Y-%m-%d %H:%M} UTC" in a.state.explanation


def test_site_online_clears_and_offline_again_unclears() -> None:
    open_ = feed({}, sites([status("offline", 15 * M)]))
    assert sites([status("offline", 15 * M)], open_) == []  # same report: counted once
    t1 = NOW + 5 * M
    (c,) = sites([status("online", 2 * M, now=t1)], open_, now=t1)
    assert c.kind == "clear"
    assert c.state.cleared_at == t1 - 2 * M
    assert c.state.cleared_by is not None
    assert c.state.cleared_by.startswith("site-status:hub-1:online:")
    open_ = feed(open_, [c])
    t2 = t1 + 30 * M
    assert sites([status("offline", 5 * M, now=t2)], open_, now=t2) == []  # within grace
    (u,) = sites([status("offline", 12 * M, now=t2)], open_, now=t2)
    assert u.kind == "update"
    assert u.state.cleared_at is None
    assert u.state.trigger_count == 2


def test_site_online_older_than_the_offline_report_does_not_clear() -> None:
    open_ = feed({}, sites([status("offline", 15 * M)]))
    assert sites([status("online", 20 * M)], open_) == []


def test_site_policy_and_bad_input() -> None:
    immediate = SiteStatusPolicy(grace=Figure(0.0, "min", "test"))
    assert sites([status("offline", timedelta(0))], policy=immediate) != []
    with pytest.raises(RuleError, match=">= 0"):
        SiteStatusPolicy(grace=Figure(-1.0, "min", "test"))
    with pytest.raises(RuleError, match="in min"):
        SiteStatusPolicy(grace=Figure(1.0, "h", "test"))
    with pytest.raises(RuleInputError, match="unknown state"):
        status("rebooting", M)
    with pytest.raises(RuleInputError, match="given twice"):
        sites([status("offline", M), status("online", M)])


@given(st.integers(min_value=-3600, max_value=6 * 3600), st.sampled_from(["online", "offline"]))
def test_site_raises_exactly_past_the_grace_and_rechecks_are_idempotent(
    seconds: int, state: str
) -> None:
    s = status(state, timedelta(seconds=seconds))
    actions = sites([s])
    assert (actions != []) is (state == "offline" and seconds >= 600)
    assert sites([s], feed({}, actions)) == []
