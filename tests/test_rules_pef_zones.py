"""PEF zone rules: zone boundaries, HI/LO readings, session value, blow quality, properties."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud_ingest.rules.dispenser import (
    FindingAction,
    FindingEvidence,
    OpenFinding,
    RuleInputError,
)
from cloud_ingest.rules.pef_zones import (
    PEF_SESSION_GAP_MIN,
    PEF_UNIT,
    PEF_ZONE_RED,
    PEF_ZONE_YELLOW,
    POOR_BLOW_FLAGS,
    PefReading,
    PefZonePolicy,
    blow_zone,
    check_personal_best,
    evaluate_pef_zones,
    pef_zone_rules,
)
from cloud_ingest.rules.thresholds import Priority, RuleError
from device_profiles.clinical import PEF_ZONE_GREEN_PERCENT, PEF_ZONE_RED_PERCENT, Figure
from device_profiles.codes import MEASURES
from device_profiles.observation import QualityFlag
from tests.findings import Key, by_condition, feed, final_states

T0 = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
NOW = datetime(2026, 3, 3, 8, 0, tzinfo=UTC)
PB: Mapping[str, float] = {"p1": 500.0, "p2": 400.0}
F = QualityFlag
M = timedelta(minutes=1)

_seq = iter(range(10**9))


def blow(
    value: float,
    *flags: str,
    minutes: float = 0,
    subject: str = "p1",
    comparator: str | None = None,
    obs_id: str | None = None,
    simulated: bool = False,
) -> PefReading:
    return PefReading(
        obs_id=obs_id or f"pef{next(_seq):08d}",
        subject_ref=subject,
        effective_time=T0 + timedelta(minutes=minutes),
        value=value,
        comparator=comparator,
        quality=frozenset(flags),
        simulated=simulated,
    )


def run(
    readings: Iterable[PefReading],
    open_alerts: Iterable[OpenFinding] = (),
    *,
    personal_best: Mapping[str, float] = PB,
    earlier: Iterable[PefReading] = (),
    policy: PefZonePolicy | None = None,
) -> list[FindingAction]:
    return evaluate_pef_zones(
        readings,
        personal_best=personal_best,
        open_alerts=open_alerts,
        now=NOW,
        policy=policy,
        earlier=earlier,
    )


def test_pef_is_the_measure_and_unit_of_the_codes_table() -> None:
    assert MEASURES["pef"].unit == "L/min"
    assert PEF_UNIT == "L/min"
    assert PEF_ZONE_GREEN_PERCENT.value == 80.0
    assert PEF_ZONE_RED_PERCENT.value == 50.0


# --------------------------------------------------------------------------------------------
# zone boundaries (personal best 500 L/min)

ZONES = [
    # (value, comparator, zone of the reading, condition raised)
    (500.0, None, "green", None),
    (600.0, None, "green", None),  # above the personal best: still green
    (400.0, None, "green", None),  # exactly 80 %: green
    (399.95, None, "yellow", PEF_ZONE_YELLOW),  # 79.99 %
    (300.0, None, "yellow", PEF_ZONE_YELLOW),
    (250.0, None, "yellow", PEF_ZONE_YELLOW),  # exactly 50 %: yellow
    (249.95, None, "red", PEF_ZONE_RED),  # 49.99 %
    (100.0, None, "red", PEF_ZONE_RED),
    (0.0, None, "red", PEF_ZONE_RED),
    # HI readings: at least the sensor limit
    (900.0, ">", "green", None),
    (400.0, ">", "green", None),
    (400.0, ">=", "green", None),
    (399.95, ">", None, None),  # may be green: undecided, raises nothing
    (100.0, ">", None, None),
    # LO readings: below the limit
    (50.0, "<", "red", PEF_ZONE_RED),
    (250.0, "<", "red", PEF_ZONE_RED),  # every value below 250 is below 50 %
    (250.0, "<=", None, PEF_ZONE_YELLOW),  # may be exactly 50 %: below green at least
    (300.0, "<", None, PEF_ZONE_YELLOW),
    (400.0, "<", None, PEF_ZONE_YELLOW),
    (400.0, "<=", None, None),  # may be exactly 80 % (green)
    (450.0, "<", None, None),
]


@pytest.mark.parametrize(("value", "comparator", "zone", "raised"), ZONES)
def test_zone_boundaries(
    value: float, comparator: str | None, zone: str | None, raised: str | None
) -> None:
    assert blow_zone(value, 500.0, comparator=comparator) == zone
    actions = run([blow(value, comparator=comparator)])
    if raised is None:
        assert actions == []
        return
    (a,) = actions
    assert a.kind == "raise"
    assert a.state.condition == raised
    assert a.state.priority == (Priority.HIGH if raised == PEF_ZONE_RED else Priority.MEDIUM)
    assert a.state.audience == "clinician"


@pytest.mark.parametrize(
    ("value", "shown"),
    [(399.95, "79.9 %"), (400.0, "80.0 %"), (249.95, "49.9 %"), (250.0, "50.0 %")],
)
def test_percentages_never_read_across_a_boundary(value: float, shown: str) -> None:
    actions = run([blow(100.0), blow(value, minutes=30)])  # a green blow shows as all-clear
    notes = " ".join(e.note for a in actions for e in a.events)
    assert f"PEF {value:g} L/min, {shown} of personal best 500 L/min" in notes


@given(st.integers(min_value=0, max_value=12000), st.integers(min_value=50, max_value=900))
def test_plain_zones_match_integer_arithmetic(tenths: int, best: int) -> None:
    """A value in tenths of L/min against a whole personal best, decided without floats:
    green iff value >= 0.8 best, i.e. tenths * 10 >= 80 * best (and 50 % likewise)."""
    zone = blow_zone(tenths / 10, float(best))
    expected = "green" if tenths >= 8 * best else "yellow" if tenths >= 5 * best else "red"
    assert zone == expected


def test_policy_boundaries_are_parameters() -> None:
    pol = PefZonePolicy(
        green_from=Figure(70.0, "%", "care team X"), yellow_from=Figure(40.0, "%", "care team X")
    )
    assert blow_zone(350.0, 500.0, policy=pol) == "green"
    assert blow_zone(199.95, 500.0, policy=pol) == "red"
    (a,) = run([blow(300.0)], policy=pol)
    assert a.state.condition == PEF_ZONE_YELLOW
    assert "below 70 % of personal best" in a.state.explanation
    assert "in effect: care team X;" in a.state.explanation


# --------------------------------------------------------------------------------------------
# personal best


def test_subjects_without_a_personal_best_get_no_zone_alert() -> None:
    actions = run([blow(100.0, subject="p3"), blow(100.0, subject="p1")])
    assert [a.state.subject_ref for a in actions] == ["p1"]
    assert run([blow(100.0)], personal_best={}) == []


@pytest.mark.parametrize("bad", [0.0, -400.0, 49.9, 900.1, float("nan"), float("inf")])
def test_an_impossible_personal_best_is_refused(bad: float) -> None:
    with pytest.raises(RuleInputError, match=r"personal best of p1 is .* outside the PEF meter"):
        run([blow(100.0)], personal_best={"p1": bad})


def test_personal_best_types_and_meter_range_ends() -> None:
    assert check_personal_best(50.0) == 50
    assert check_personal_best(900) == 900
    assert check_personal_best(433.3) == Fraction(4333, 10)
    with pytest.raises(RuleInputError, match="must be a number"):
        check_personal_best(True)
    with pytest.raises(RuleInputError, match="must be a number"):
        run([], personal_best={"p1": "500"})  # type: ignore[dict-item]


def test_the_personal_best_in_use_is_named() -> None:
    (a,) = run([blow(150.0, subject="p2")])
    assert "PEF 150 L/min, 37.5 % of personal best 400 L/min" in a.state.explanation


# --------------------------------------------------------------------------------------------
# session value: the best good-quality blow


@pytest.mark.parametrize("flag", sorted(POOR_BLOW_FLAGS | {F.QUESTIONABLE}))
def test_poor_quality_blows_neither_raise_nor_clear(flag: QualityFlag) -> None:
    assert run([blow(100.0, flag)]) == []
    open_ = feed({}, run([blow(100.0)]))
    assert run([blow(480.0, flag, minutes=60)], open_.values()) == []
    # in a session, a poor blow is not the session's value
    (a,) = run([blow(450.0, flag), blow(200.0, minutes=1)])
    assert a.state.condition == PEF_ZONE_RED
    assert "1 left out for blow quality" in a.state.explanation


def test_derived_readings_are_ignored() -> None:
    assert run([blow(100.0, F.DERIVED)]) == []
    open_ = feed({}, run([blow(100.0)]))
    assert run([blow(480.0, F.DERIVED, minutes=60)], open_.values()) == []
    # not even part of a session
    (a,) = run([blow(450.0, F.DERIVED), blow(200.0, minutes=1)])
    assert "(1 blow)" in a.state.explanation


SESSIONS = [
    # (blows as (minutes, value), conditions raised, cleared)
    ([(0, 450.0), (1, 200.0)], set(), False),  # a tired later blow: the session is green
    ([(0, 300.0), (1, 200.0)], {PEF_ZONE_YELLOW}, False),  # session value 300: yellow
    ([(0, 200.0), (1, 450.0)], {PEF_ZONE_RED}, True),  # judged as blown: raised, then cleared
    ([(0, 200.0), (1, 300.0)], {PEF_ZONE_RED, PEF_ZONE_YELLOW}, False),  # yellow: no all-clear
    ([(0, 450.0), (10, 200.0)], set(), False),  # 10 min apart: still one session
    ([(0, 450.0), (10.5, 200.0)], {PEF_ZONE_RED}, False),  # a new session
    ([(0, 450.0), (8, 440.0), (16, 200.0)], set(), False),  # the session chains on
    ([(0, 200.0), (1, 200.0), (2, 190.0)], {PEF_ZONE_RED}, False),
]


@pytest.mark.parametrize(("blows", "raised", "cleared"), SESSIONS)
def test_session_value_is_the_best_blow_so_far(
    blows: list[tuple[float, float]], raised: set[str], cleared: bool
) -> None:
    readings = [blow(v, minutes=m) for m, v in blows]
    actions = by_condition(run(readings))
    assert set(actions) == raised
    for a in actions.values():
        assert a.kind == "raise"
        assert a.state.trigger_count == 1
    if PEF_ZONE_RED in actions:
        assert (actions[PEF_ZONE_RED].state.cleared_at is not None) is cleared


def test_a_better_blow_still_red_is_further_evidence() -> None:
    low, better = blow(150.0, obs_id="b1"), blow(200.0, minutes=1, obs_id="b2")
    (a,) = run([low, better])
    assert a.state.trigger_count == 2
    assert a.state.last.event_id == "b2"
    assert "(2 blows)" in a.state.last.summary


def test_hi_reading_in_a_session_leaves_it_undecided() -> None:
    assert run([blow(350.0, comparator=">"), blow(300.0, minutes=1)]) == []
    assert run([blow(300.0), blow(350.0, comparator=">", minutes=1)]) != []  # 300 judged first
    assert run([blow(200.0, comparator="<"), blow(450.0, minutes=1)])[0].state.cleared_at


def test_earlier_readings_complete_a_session_across_calls() -> None:
    good = blow(450.0, obs_id="b1")
    tired = blow(200.0, minutes=1, obs_id="b2")
    assert run([good]) == []
    assert run([tired], earlier=[good]) == []
    # without them the call sees a session that starts with the tired blow (shown, not hidden)
    (a,) = run([tired])
    assert a.state.condition == PEF_ZONE_RED
    # earlier readings are never judged themselves, and may repeat new ones
    assert run([], earlier=[blow(100.0)]) == []
    assert run([tired], earlier=[tired, good]) == []
    with pytest.raises(RuleInputError, match="'b2' given twice with different content"):
        run([tired], earlier=[replace(tired, value=210.0)])


# --------------------------------------------------------------------------------------------
# one family: most severe only; all-clear in green


def test_red_is_raised_beside_an_open_yellow_which_is_left_alone() -> None:
    open_ = feed({}, run([blow(300.0)]))
    actions = by_condition(run([blow(200.0, minutes=60)], open_.values()))
    assert set(actions) == {PEF_ZONE_RED}
    assert actions[PEF_ZONE_RED].kind == "raise"
    # first seen already red: only red
    assert set(by_condition(run([blow(100.0)]))) == {PEF_ZONE_RED}


def test_yellow_does_not_clear_red_green_clears_both() -> None:
    open_ = feed({}, run([blow(300.0), blow(200.0, minutes=60)]))
    yellow = by_condition(run([blow(350.0, minutes=120)], open_.values()))
    assert set(yellow) == {PEF_ZONE_YELLOW}
    assert yellow[PEF_ZONE_YELLOW].kind == "update"
    open_ = feed(open_, list(yellow.values()))
    green = blow(400.0, minutes=180, obs_id="g1")
    cleared = by_condition(run([green], open_.values()))
    assert set(cleared) == {PEF_ZONE_RED, PEF_ZONE_YELLOW}
    for a in cleared.values():
        assert a.kind == "clear"
        assert a.state.cleared_at == green.effective_time
        assert a.state.cleared_by == "g1"
        assert "green zone" in a.events[0].note
    # a saturated blow above the limit clears too
    sat = by_condition(run([blow(900.0, comparator=">", minutes=180)], open_.values()))
    assert set(sat) == {PEF_ZONE_RED, PEF_ZONE_YELLOW}


def test_zone_on_off_on_across_calls() -> None:
    on1, off, on2 = blow(200.0), blow(450.0, minutes=60), blow(210.0, minutes=120)
    open_ = feed({}, run([on1]))
    (c,) = run([off], open_.values())
    assert c.kind == "clear"
    open_ = feed(open_, [c])
    (u,) = run([on2], open_.values())
    assert u.kind == "update"
    assert u.state.cleared_at is None
    assert u.state.trigger_count == 2
    assert "condition present again" in u.events[0].note
    (one,) = run([on2, off, on1])
    assert one.state == replace(u.state, alert_id=None)


# --------------------------------------------------------------------------------------------
# late and duplicated readings


def test_late_reading_counts_but_neither_replaces_latest_nor_clears() -> None:
    newest = blow(200.0, minutes=120, obs_id="new")
    open_ = feed({}, run([newest]))
    late = blow(150.0, minutes=0, obs_id="late")
    (a,) = run([late], open_.values())
    assert a.kind == "update"
    assert a.state.trigger_count == 2
    assert a.state.last.event_id == "new"
    assert a.state.first.event_id == "late"
    assert "older than the latest" in a.events[0].note
    assert run([blow(450.0, minutes=60)], feed(open_, [a]).values()) == []


def test_same_reading_twice_counts_once_and_other_content_is_refused() -> None:
    r = blow(200.0, obs_id="b-1")
    (a,) = run([r, r, r])
    assert a.state.trigger_count == 1
    assert len(a.events) == 1
    with pytest.raises(RuleInputError, match="b-1"):
        run([r, blow(201.0, obs_id="b-1")])


@pytest.mark.parametrize("which", ["first", "last"])
def test_reading_seen_in_an_earlier_call_is_recognised(which: str) -> None:
    r1, r2 = blow(200.0, minutes=0), blow(200.0, minutes=60)
    open_ = feed({}, run([r1, r2]))
    assert run([r1 if which == "first" else r2], open_.values()) == []


# --------------------------------------------------------------------------------------------
# explanations


def test_explanation_names_rule_blow_zone_source_session_and_simulated() -> None:
    a = run(
        [
            blow(450.0, F.COUGH, minutes=95),
            blow(180.0, minutes=96, obs_id="pef-77", simulated=True),
        ]
    )[0]
    text = a.state.explanation
    assert text.startswith(
        "PEF in the red zone: below 50 % of personal best. Rule pef-zone-red "
        "(high priority, for clinicians)"
    )
    assert "(exactly 50 % is yellow)" in text
    assert "DOMAIN.md §1 zones against personal best (asthma action plan)" in text
    assert "IEC 60601-1-8 high, DOMAIN.md §5" in text
    assert "PEF 180 L/min, 36.0 % of personal best 500 L/min, at 2026-03-02 08:36 UTC" in text
    assert "(observation pef-77)" in text
    assert "session begun at 2026-03-02 08:35 UTC (2 blows, 1 left out for blow quality)" in text
    assert "Simulated data" in text
    assert a.state.simulated is True
    assert "a yellow blow does not clear it" in text
    (y,) = run([blow(399.95)])
    assert "(exactly 80 % is green)" in y.state.explanation
    assert "IEC 60601-1-8 medium" in y.state.explanation
    assert "Simulated" not in y.state.explanation
    lo = by_condition(run([blow(300.0), blow(50.0, comparator="<", minutes=60)]))[PEF_ZONE_RED]
    assert "PEF LO reading < 50 L/min (below the meter's range), < 10.0 % of" in (
        lo.state.explanation
    )


def test_no_diagnosis_wording() -> None:
    for value in (100.0, 300.0):
        (a,) = run([blow(value)])
        text = a.state.explanation.lower()
        for word in ("diagnos", "exacerbation", "you have", "uncontrolled"):
            assert word not in text


# --------------------------------------------------------------------------------------------
# bad input and policy validation


def test_bad_readings_are_refused_with_what_and_where() -> None:
    with pytest.raises(RuleInputError, match="PEF reading x: unit must be 'L/min'"):
        replace(blow(300.0, obs_id="x"), unit="L/s")
    with pytest.raises(RuleInputError, match="finite and >= 0"):
        blow(-1.0)
    with pytest.raises(RuleInputError, match="finite and >= 0"):
        blow(float("nan"))
    with pytest.raises(RuleInputError, match="must be a number"):
        blow(True)
    with pytest.raises(RuleInputError, match="unknown comparator '~'"):
        blow(300.0, comparator="~")
    with pytest.raises(RuleInputError, match=r"unknown quality flags \['wobbly'\]"):
        blow(300.0, "wobbly")
    with pytest.raises(RuleInputError, match="effective_time must be an aware"):
        replace(blow(300.0), effective_time=datetime(2026, 3, 2, 7, 0))
    with pytest.raises(RuleInputError, match="not PefReading"):
        run([300.0])  # type: ignore[list-item]
    with pytest.raises(RuleInputError, match="now must be an aware"):
        evaluate_pef_zones([], personal_best={}, open_alerts=[], now=datetime(2026, 3, 2))


def test_policy_validation() -> None:
    with pytest.raises(RuleError, match="green_from must be in %"):
        PefZonePolicy(green_from=Figure(0.8, "1", "test"))
    with pytest.raises(RuleError, match="0 < yellow_from < green_from"):
        PefZonePolicy(yellow_from=Figure(80.0, "%", "test"))
    with pytest.raises(RuleError, match="0 < yellow_from < green_from"):
        PefZonePolicy(yellow_from=Figure(0.0, "%", "test"))
    with pytest.raises(RuleError, match="session_gap must be in min"):
        PefZonePolicy(session_gap=Figure(600.0, "s", "test"))
    with pytest.raises(RuleError, match="session_gap must be >= 0"):
        PefZonePolicy(session_gap=Figure(-1.0, "min", "test"))
    assert PefZonePolicy().gap == timedelta(minutes=PEF_SESSION_GAP_MIN.value)
    no_sessions = PefZonePolicy(session_gap=Figure(0.0, "min", "test"))
    assert run([blow(450.0), blow(200.0, minutes=1)], policy=no_sessions) != []


def test_rules_are_built_from_the_policy() -> None:
    rules = pef_zone_rules(PefZonePolicy())
    assert set(rules) == {PEF_ZONE_RED, PEF_ZONE_YELLOW}
    assert rules[PEF_ZONE_RED].priority == Priority.HIGH
    assert rules[PEF_ZONE_YELLOW].priority == Priority.MEDIUM
    for r in rules.values():
        assert r.audience == "clinician"
        assert "remon default" in r.source


def test_open_alerts_of_other_families_are_ignored() -> None:
    ev = FindingEvidence(event_id="old", kind="dose_missed", time=T0, summary="old")
    other = OpenFinding(
        alert_id=1, subject_ref="p1", condition="dose-missed", first=ev, last=ev, trigger_count=1
    )
    assert run([blow(450.0, minutes=60)], [other]) == []
    with pytest.raises(RuleInputError, match="two open alerts"):
        run([], [replace(other, condition=PEF_ZONE_RED), replace(other, condition=PEF_ZONE_RED)])


# --------------------------------------------------------------------------------------------
# properties

_VALUES = (100.0, 200.0, 249.95, 250.0, 300.0, 320.0, 399.95, 400.0, 450.0, 600.0)
_FLAGS = ((), (), (), (F.COUGH,), (F.QUESTIONABLE,), (F.DERIVED,), (F.SIMULATED,))


@st.composite
def pef_pools(draw: st.DrawFn) -> list[PefReading]:
    """Blows of three subjects (p3 without a personal best), often within one session."""
    n = draw(st.integers(min_value=0, max_value=14))
    out = []
    for i in range(n):
        comparator = draw(st.sampled_from((None, None, None, ">", "<")))
        out.append(
            blow(
                draw(st.sampled_from(_VALUES)),
                *draw(st.sampled_from(_FLAGS)),
                minutes=draw(st.integers(min_value=0, max_value=60)),
                subject=draw(st.sampled_from(("p1", "p1", "p2", "p3"))),
                comparator=comparator,
                obs_id=f"b{i}",
            )
        )
    return out


@st.composite
def pef_lists(draw: st.DrawFn) -> list[PefReading]:
    """Blows with duplicates: a pool, each blow given 1-2 times, in any order."""
    pool = draw(pef_pools())
    out = [r for r in pool for _ in range(draw(st.integers(min_value=1, max_value=2)))]
    return draw(st.permutations(out))


def _sorted(readings: Iterable[PefReading]) -> list[PefReading]:
    return sorted(readings, key=lambda r: (r.effective_time, r.obs_id))


@given(pef_lists(), st.randoms(use_true_random=False))
def test_shuffled_input_gives_the_same_result_as_sorted(
    readings: list[PefReading], rnd: random.Random
) -> None:
    shuffled = list(readings)
    rnd.shuffle(shuffled)
    assert run(shuffled) == run(_sorted(readings))


@given(pef_lists(), st.data())
def test_calls_one_chunk_at_a_time_end_in_the_same_state(
    readings: list[PefReading], data: st.DataObject
) -> None:
    """Blows arriving in time order, in calls of any size (one at a time included), with the
    open alerts fed back and the earlier calls' blows passed as ``earlier``."""
    ordered = _sorted({r.obs_id: r for r in readings}.values())
    cuts = sorted(
        data.draw(st.lists(st.integers(min_value=0, max_value=len(ordered)), max_size=len(ordered)))
    )
    open_: dict[Key, OpenFinding] = {}
    calls = []
    for lo, hi in zip([0, *cuts], [*cuts, len(ordered)], strict=True):
        actions = run(ordered[lo:hi], open_.values(), earlier=ordered[:lo])
        calls.append(actions)
        open_ = feed(open_, actions)
    assert final_states(calls) == final_states([run(readings)])


@given(pef_pools(), st.data())
def test_without_earlier_readings_a_split_never_hides_an_alert(
    pool: list[PefReading], data: st.DataObject
) -> None:
    """Calls that do not pass the earlier blows judge each call's part of a session alone:
    they may show more, never less (every alert of the single call is there, uncleared if it
    is uncleared there)."""
    ordered = _sorted(pool)
    cuts = sorted(
        data.draw(st.lists(st.integers(min_value=0, max_value=len(ordered)), max_size=len(ordered)))
    )
    open_: dict[Key, OpenFinding] = {}
    calls = []
    for lo, hi in zip([0, *cuts], [*cuts, len(ordered)], strict=True):
        actions = run(ordered[lo:hi], open_.values())
        calls.append(actions)
        open_ = feed(open_, actions)
    split, single = final_states(calls), final_states([run(pool)])
    for key, state in single.items():
        assert key in split
        if state.cleared_at is None:
            assert split[key].cleared_at is None


@given(pef_lists())
def test_duplicated_input_does_not_double_count(readings: list[PefReading]) -> None:
    once = run(readings)
    assert run(readings + readings) == once
    assert run(list(reversed(readings)) + readings) == once


@given(pef_pools())
def test_alerts_only_for_subjects_with_a_personal_best_and_good_blows(
    pool: list[PefReading],
) -> None:
    for a in run(pool):
        assert a.state.subject_ref in PB
        for ev in (a.state.first, a.state.last):
            (r,) = [r for r in pool if r.obs_id == ev.event_id]
            assert not r.poor_quality
            assert F.DERIVED.value not in r.quality
