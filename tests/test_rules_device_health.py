"""Device health rules: battery, sensor and clock faults from reading quality flags."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud_ingest.rules.device_health import (
    CLOCK_LIMIT_MIN,
    DEFAULT_DEVICE_HEALTH_RULES,
    DEVICE_BATTERY_LOW,
    DEVICE_CLOCK_FAULT,
    DEVICE_SENSOR_FAULT,
    DeviceHealthRule,
    DeviceReading,
    evaluate_device_health,
    evidence_device,
    evidence_kind,
)
from cloud_ingest.rules.dispenser import (
    FindingAction,
    FindingEvidence,
    OpenFinding,
    RuleInputError,
)
from cloud_ingest.rules.thresholds import Priority, RuleError
from device_profiles.observation import (
    CLOCK_OFFSET_FLAG_LIMIT,
    AbsentReason,
    QualityFlag,
    clock_quality,
)
from tests.findings import Key, feed, final_states, only

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
NOW = datetime(2026, 3, 3, 8, 0, tzinfo=UTC)
F = QualityFlag

_seq = iter(range(10**9))


def rd(
    *flags: str,
    minutes: float = 0,
    subject: str = "p1",
    device: str = "meter-1",
    measure: str = "glucose.capillary",
    absent: str | None = None,
    obs_id: str | None = None,
    simulated: bool = False,
) -> DeviceReading:
    return DeviceReading(
        obs_id=obs_id or f"obs{next(_seq):08d}",
        subject_ref=subject,
        device_id=device,
        measure=measure,
        effective_time=T0 + timedelta(minutes=minutes),
        quality=frozenset(flags),
        absent_reason=absent,
        simulated=simulated,
    )


def run(
    readings: Iterable[DeviceReading],
    open_alerts: Iterable[OpenFinding] = (),
    rules: Sequence[DeviceHealthRule] = DEFAULT_DEVICE_HEALTH_RULES,
) -> list[FindingAction]:
    return evaluate_device_health(readings, open_alerts=open_alerts, now=NOW, rules=rules)


# --------------------------------------------------------------------------------------------
# what raises what, at which priority

RAISES = [
    # (flags, absent reason, conditions raised)
    ((F.BATTERY_LOW,), None, {DEVICE_BATTERY_LOW}),
    ((F.SENSOR_MALFUNCTION,), None, {DEVICE_SENSOR_FAULT}),
    ((), AbsentReason.ERROR, {DEVICE_SENSOR_FAULT}),
    ((F.SENSOR_MALFUNCTION,), AbsentReason.ERROR, {DEVICE_SENSOR_FAULT}),
    ((F.CLOCK_OFFSET,), None, {DEVICE_CLOCK_FAULT}),
    ((F.BATTERY_LOW, F.CLOCK_OFFSET), None, {DEVICE_BATTERY_LOW, DEVICE_CLOCK_FAULT}),
    ((F.BATTERY_LOW,), AbsentReason.ERROR, {DEVICE_BATTERY_LOW, DEVICE_SENSOR_FAULT}),
    ((F.BATTERY_LOW, F.QUESTIONABLE), None, {DEVICE_BATTERY_LOW}),  # still a device fact
    ((), AbsentReason.NOT_A_NUMBER, set()),  # no value, but no fault reported
    ((), AbsentReason.UNKNOWN, set()),
    ((F.DEVICE_TIME_ONLY,), None, set()),  # an unmeasured offset is not a clock fault
    ((F.QUESTIONABLE,), None, set()),
    ((F.DEVICE_WARNING,), None, set()),
    ((), None, set()),
    # derived readings are computed at the edge: ignored, whatever they carry
    ((F.DERIVED, F.BATTERY_LOW), None, set()),
    ((F.DERIVED, F.SENSOR_MALFUNCTION, F.CLOCK_OFFSET), AbsentReason.ERROR, set()),
]

PRIORITIES = {
    DEVICE_BATTERY_LOW: Priority.LOW,
    DEVICE_SENSOR_FAULT: Priority.MEDIUM,
    DEVICE_CLOCK_FAULT: Priority.LOW,
}


@pytest.mark.parametrize(("flags", "absent", "raised"), RAISES)
def test_flags_raise_conditions_at_priority(
    flags: tuple[QualityFlag, ...], absent: AbsentReason | None, raised: set[str]
) -> None:
    actions = run([rd(*flags, absent=absent)])
    assert {a.state.condition for a in actions} == raised
    for a in actions:
        assert a.kind == "raise"
        assert a.state.priority == PRIORITIES[a.state.condition]
        assert a.state.audience == "clinician"
        assert a.state.trigger_count == 1


def test_every_default_rule_says_why_its_priority_and_who_acts() -> None:
    assert {r.condition for r in DEFAULT_DEVICE_HEALTH_RULES} == set(PRIORITIES)
    for r in DEFAULT_DEVICE_HEALTH_RULES:
        assert r.source.startswith(f"remon default, {r.priority.value}: ")
        assert "care team" in r.source
        assert "home devices" in r.source
    sensor = {r.condition: r for r in DEFAULT_DEVICE_HEALTH_RULES}[DEVICE_SENSOR_FAULT]
    assert "IEC 60601-1-8 medium, DOMAIN.md §5" in sensor.source


def test_the_clock_rule_quotes_the_limit_the_edge_applies() -> None:
    assert timedelta(minutes=CLOCK_LIMIT_MIN) == CLOCK_OFFSET_FLAG_LIMIT
    assert CLOCK_LIMIT_MIN == 15
    # the edge flags strictly beyond the limit
    assert F.CLOCK_OFFSET not in clock_quality(15 * 60.0)
    assert F.CLOCK_OFFSET in clock_quality(15 * 60.0 + 1)
    assert F.CLOCK_OFFSET in clock_quality(-(15 * 60.0 + 1))
    text = only(run([rd(F.CLOCK_OFFSET)])).state.explanation
    assert "by more than 15 min" in text
    assert "CLOCK_OFFSET_FLAG_LIMIT" in text


# --------------------------------------------------------------------------------------------
# all-clear

CLEARS = [
    # (raising reading, later reading: flags, absent, device, minutes later, cleared)
    (rd(F.BATTERY_LOW), (), None, "meter-1", 5, True),
    (rd(F.BATTERY_LOW), (F.QUESTIONABLE,), None, "meter-1", 5, True),
    (rd(F.BATTERY_LOW), (), AbsentReason.NOT_A_NUMBER, "meter-1", 5, True),
    (rd(F.BATTERY_LOW), (), None, "cuff-2", 5, False),  # another device says nothing
    (rd(F.BATTERY_LOW), (), None, "meter-1", 0, False),  # same instant: not later
    (rd(F.BATTERY_LOW), (), None, "meter-1", -5, False),  # late reading: older
    (rd(F.BATTERY_LOW), (F.DERIVED,), None, "meter-1", 5, False),  # derived: ignored
    (rd(F.SENSOR_MALFUNCTION), (), None, "meter-1", 5, True),
    (rd(absent=AbsentReason.ERROR), (), None, "meter-1", 5, True),
    (rd(F.SENSOR_MALFUNCTION), (), AbsentReason.NOT_A_NUMBER, "meter-1", 5, False),  # no value
    (rd(F.SENSOR_MALFUNCTION), (F.QUESTIONABLE,), None, "meter-1", 5, False),
    (rd(F.SENSOR_MALFUNCTION), (F.BATTERY_LOW,), None, "meter-1", 5, True),
    (rd(F.CLOCK_OFFSET), (), None, "meter-1", 5, True),
    (rd(F.CLOCK_OFFSET), (F.DEVICE_TIME_ONLY,), None, "meter-1", 5, False),  # offset unknown
    (rd(F.CLOCK_OFFSET), (), None, "cuff-2", 5, False),
]


@pytest.mark.parametrize(("first", "flags", "absent", "device", "after", "cleared"), CLEARS)
def test_clearing_table(
    first: DeviceReading,
    flags: tuple[QualityFlag, ...],
    absent: AbsentReason | None,
    device: str,
    after: float,
    cleared: bool,
) -> None:
    (raised,) = run([first])
    condition = raised.state.condition
    later = rd(*flags, absent=absent, device=device, minutes=after)
    one_call = only(run([first, later]), condition)
    assert (one_call.state.cleared_at is not None) is cleared
    next_call = [
        a for a in run([later], feed({}, [raised]).values()) if a.state.condition == condition
    ]
    if not cleared:
        assert next_call == []
        return
    (a,) = next_call
    assert a.kind == "clear"
    assert a.state == replace(one_call.state, alert_id=a.state.alert_id)
    assert a.state.cleared_at == later.effective_time
    assert a.state.cleared_by == later.obs_id
    assert "awaiting review" in a.state.explanation


def test_flag_on_off_on_across_calls() -> None:
    on1, off, on2 = rd(F.BATTERY_LOW), rd(minutes=10), rd(F.BATTERY_LOW, minutes=20)
    open_ = feed({}, run([on1]))
    c = only(run([off], open_.values()))
    assert c.kind == "clear"
    open_ = feed(open_, [c])
    u = only(run([on2], open_.values()))
    assert u.kind == "update"
    assert u.state.cleared_at is None
    assert u.state.cleared_by is None
    assert u.state.trigger_count == 2
    assert u.state.first.event_id == on1.obs_id
    assert u.state.last.event_id == on2.obs_id
    assert "condition present again" in u.events[0].note
    # the same in one call: flag on, off, on
    one = only(run([on2, off, on1]))
    assert one.kind == "raise"
    assert one.state == replace(u.state, alert_id=None)


def test_flagged_reading_at_the_clearing_instant_unclears() -> None:
    off = rd(minutes=10)
    open_ = feed({}, run([rd(F.CLOCK_OFFSET), off]))
    a = only(run([rd(F.CLOCK_OFFSET, minutes=10)], open_.values()))
    assert a.state.cleared_at is None


def test_the_all_clear_follows_the_device_of_the_latest_evidence() -> None:
    """Two faulty devices share one alert; the clean reading of the older one does not clear."""
    a1 = rd(F.BATTERY_LOW, device="meter-1")
    b1 = rd(F.BATTERY_LOW, device="cuff-2", minutes=5)
    assert run([a1, b1, rd(device="meter-1", minutes=10)]) == run([a1, b1])
    cleared = only(run([a1, b1, rd(device="cuff-2", minutes=10)]))
    assert cleared.state.cleared_at == T0 + timedelta(minutes=10)
    # the other device still flagged afterwards: present again
    again = only(run([a1, b1, rd(device="cuff-2", minutes=10), rd(F.BATTERY_LOW, minutes=15)]))
    assert again.state.cleared_at is None
    assert again.state.trigger_count == 3


def test_the_device_survives_the_store_round_trip() -> None:
    (raised,) = run([rd(F.SENSOR_MALFUNCTION, device="Acme|Peak@2|SN-7")])
    stored = raised.state.as_open(7)
    assert stored.last.kind == "sensor-malfunction@Acme|Peak@2|SN-7"
    assert evidence_device(stored.last) == "Acme|Peak@2|SN-7"
    assert evidence_kind("absent-error", "d@x") == "absent-error@d@x"
    bad = replace(stored, last=replace(stored.last, kind="sensor-malfunction"))
    with pytest.raises(RuleInputError, match="names no device"):
        run([rd(device="Acme|Peak@2|SN-7", minutes=5)], [bad])


def test_subjects_are_separate() -> None:
    actions = run([rd(F.BATTERY_LOW, subject="p1"), rd(F.BATTERY_LOW, subject="p2")])
    assert sorted(a.state.subject_ref for a in actions) == ["p1", "p2"]
    open_ = feed({}, actions)
    (c,) = run([rd(subject="p2", minutes=5)], open_.values())
    assert c.state.subject_ref == "p2"


# --------------------------------------------------------------------------------------------
# late and duplicated readings


def test_late_reading_counts_but_neither_replaces_latest_nor_clears() -> None:
    newest = rd(F.BATTERY_LOW, minutes=60)
    open_ = feed({}, run([newest]))
    late = rd(F.BATTERY_LOW, minutes=30)
    a = only(run([late], open_.values()))
    assert a.kind == "update"
    assert a.state.trigger_count == 2
    assert a.state.last.event_id == newest.obs_id
    assert a.state.first.event_id == late.obs_id
    assert "older than the latest" in a.events[0].note
    assert run([rd(minutes=45)], feed(open_, [a]).values()) == []


def test_same_reading_twice_counts_once_and_other_content_is_refused() -> None:
    r = rd(F.BATTERY_LOW, obs_id="o-1")
    a = only(run([r, r, r]))
    assert a.state.trigger_count == 1
    assert len(a.events) == 1
    with pytest.raises(RuleInputError, match="o-1"):
        run([r, rd(F.BATTERY_LOW, obs_id="o-1", minutes=1)])


@pytest.mark.parametrize("which", ["first", "last"])
def test_reading_seen_in_an_earlier_call_is_recognised(which: str) -> None:
    r1, r2 = rd(F.CLOCK_OFFSET, minutes=0), rd(F.CLOCK_OFFSET, minutes=60)
    open_ = feed({}, run([r1, r2]))
    assert run([r1 if which == "first" else r2], open_.values()) == []


def test_a_blood_pressure_measurement_counts_each_reading() -> None:
    bp = [
        rd(F.BATTERY_LOW, measure=m, device="cuff-1")
        for m in ("bp.systolic", "bp.diastolic", "pulse.cuff")
    ]
    a = only(run(bp))
    assert a.state.trigger_count == 3


# --------------------------------------------------------------------------------------------
# explanations


def test_explanation_names_rule_reading_device_time_source_and_simulated() -> None:
    r = rd(
        F.BATTERY_LOW,
        minutes=95,
        device="cuff-9",
        measure="bp.systolic",
        obs_id="obs-77",
        simulated=True,
    )
    a = only(run([r]))
    text = a.state.explanation
    assert text.startswith(
        "Home device battery low: replace or charge it. Rule device-battery-low "
        "(low priority, for clinicians)"
    )
    assert "Systolic blood pressure reading at 2026-03-02 09:35 UTC from device cuff-9" in text
    assert "(observation obs-77)" in text
    assert "flag battery-low" in text
    assert "Source: remon default, low:" in text
    assert "Simulated data" in text
    assert a.state.simulated is True
    assert "without the battery-low flag" in text
    err = only(run([rd(absent=AbsentReason.ERROR, obs_id="obs-78")]))
    assert "no value: absent reason error" in err.state.explanation
    assert "Simulated" not in err.state.explanation
    assert "and with a value" in err.state.explanation
    # the simulated flag alone marks it too
    assert only(run([rd(F.BATTERY_LOW, F.SIMULATED)])).state.simulated is True


@pytest.mark.parametrize("rule", DEFAULT_DEVICE_HEALTH_RULES, ids=lambda r: r.condition)
def test_no_diagnosis_wording(rule: DeviceHealthRule) -> None:
    r = rd(*rule.flags) if rule.flags else rd(absent=min(rule.absent_reasons))
    text = only(run([r]), rule.condition).state.explanation.lower()
    for word in ("diagnos", "asthma", "hypo", "hyper", "disease"):
        assert word not in text


# --------------------------------------------------------------------------------------------
# bad input and rule validation


def test_bad_readings_are_refused_with_what_and_where() -> None:
    with pytest.raises(RuleInputError, match=r"reading o1: effective_time must be an aware"):
        replace(rd(obs_id="o1"), effective_time=datetime(2026, 3, 2, 8, 0))
    with pytest.raises(RuleInputError, match="must be in UTC"):
        replace(rd(), effective_time=datetime(2026, 3, 2, 8, tzinfo=timezone(timedelta(hours=2))))
    with pytest.raises(RuleInputError, match=r"unknown quality flags \['low-fuel'\]"):
        rd("low-fuel")
    with pytest.raises(RuleInputError, match="unknown absent_reason 'broken'"):
        rd(absent="broken")
    with pytest.raises(RuleInputError, match="unknown measure 'glucose'"):
        rd(measure="glucose")
    with pytest.raises(RuleInputError, match="device_id must be a non-empty"):
        rd(device="")
    with pytest.raises(RuleInputError, match="obs_id must be a non-empty"):
        replace(rd(), obs_id="")
    with pytest.raises(RuleInputError, match="quality must be a frozenset"):
        replace(rd(), quality={"battery-low"})  # type: ignore[arg-type]
    with pytest.raises(RuleInputError, match="not DeviceReading"):
        run(["battery-low"])  # type: ignore[list-item]
    with pytest.raises(RuleInputError, match="now must be an aware"):
        evaluate_device_health([], open_alerts=[], now=datetime(2026, 3, 2))


def test_flag_members_and_values_make_equal_readings() -> None:
    a = rd(F.BATTERY_LOW, obs_id="same")
    b = rd("battery-low", obs_id="same")
    assert a == b
    assert only(run([a, b])).state.trigger_count == 1


def _rule(**kw: object) -> DeviceHealthRule:
    base: dict[str, object] = {
        "condition": "x",
        "title": "X",
        "flags": frozenset({F.DEVICE_WARNING}),
        "absent_reasons": frozenset(),
        "unknown_with": frozenset(),
        "clear_needs_value": False,
        "meaning": "m",
        "priority": Priority.LOW,
        "audience": "clinician",
        "source": "test",
    }
    return DeviceHealthRule(**(base | kw))  # type: ignore[arg-type]


def test_rule_validation() -> None:
    with pytest.raises(RuleError, match="no flag or absent reason"):
        _rule(flags=frozenset())
    with pytest.raises(RuleError, match="both raise it and leave it undecided"):
        _rule(unknown_with=frozenset({F.DEVICE_WARNING}))
    with pytest.raises(RuleError, match="derived readings are never evidence"):
        _rule(flags=frozenset({F.DERIVED}))
    with pytest.raises(RuleError, match="unknown quality flag"):
        _rule(flags=frozenset({"battery-low"}))
    with pytest.raises(RuleError, match="unknown absent reason"):
        _rule(absent_reasons=frozenset({"error"}))
    with pytest.raises(RuleError, match="unknown audience"):
        _rule(audience="family")
    with pytest.raises(RuleError, match="source"):
        _rule(source="")
    with pytest.raises(RuleError, match="defined twice"):
        run([], rules=[DEFAULT_DEVICE_HEALTH_RULES[0], DEFAULT_DEVICE_HEALTH_RULES[0]])
    with pytest.raises(RuleError, match="not DeviceHealthRule"):
        run([], rules=["device-battery-low"])  # type: ignore[list-item]


def test_custom_rule_for_device_warnings() -> None:
    rule = _rule(condition="device-warning", title="Device warning", priority=Priority.MEDIUM)
    a = only(run([rd(F.DEVICE_WARNING), rd(F.BATTERY_LOW)], rules=[rule]))
    assert a.state.condition == "device-warning"
    assert a.state.priority == Priority.MEDIUM
    assert "has the device-warning quality flag (m)" in a.state.explanation


def _open(condition: str, alert_id: int = 1) -> OpenFinding:
    ev = FindingEvidence(event_id="old", kind="battery-low@meter-1", time=T0, summary="old")
    return OpenFinding(
        alert_id=alert_id,
        subject_ref="p1",
        condition=condition,
        first=ev,
        last=ev,
        trigger_count=1,
    )


def test_open_alert_checks() -> None:
    with pytest.raises(RuleInputError, match="two open alerts"):
        run([], [_open(DEVICE_BATTERY_LOW), _open(DEVICE_BATTERY_LOW, alert_id=2)])
    # another family's alert is not this family's business (its kind names no device)
    other = replace(_open("dose-missed"), first=replace(_open("x").first, kind="dose_missed"))
    other = replace(other, last=other.first)
    assert run([rd(minutes=5)], [other]) == []
    # a stored alert of this family is cleared by the device named in its evidence
    (c,) = run([rd(minutes=5)], [_open(DEVICE_BATTERY_LOW)])
    assert c.kind == "clear"
    assert c.state.alert_id == 1


# --------------------------------------------------------------------------------------------
# properties

_FLAG_SETS = (
    (),
    (F.BATTERY_LOW,),
    (F.SENSOR_MALFUNCTION,),
    (F.CLOCK_OFFSET,),
    (F.DEVICE_TIME_ONLY,),
    (F.QUESTIONABLE,),
    (F.DERIVED, F.BATTERY_LOW),
    (F.BATTERY_LOW, F.CLOCK_OFFSET, F.SIMULATED),
)


@st.composite
def reading_pools(draw: st.DrawFn) -> list[DeviceReading]:
    n = draw(st.integers(min_value=0, max_value=14))
    return [
        rd(
            *draw(st.sampled_from(_FLAG_SETS)),
            minutes=draw(st.integers(min_value=0, max_value=30)),
            subject=draw(st.sampled_from(("p1", "p2"))),
            device=draw(st.sampled_from(("meter-1", "cuff-2"))),
            absent=draw(st.sampled_from((None, None, AbsentReason.ERROR, AbsentReason.UNKNOWN))),
            obs_id=f"r{i}",
        )
        for i in range(n)
    ]


@st.composite
def reading_lists(draw: st.DrawFn) -> list[DeviceReading]:
    """Readings with duplicates: a pool, each reading given 1-2 times, in any order."""
    pool = draw(reading_pools())
    out = [r for r in pool for _ in range(draw(st.integers(min_value=1, max_value=2)))]
    return draw(st.permutations(out))


def _sorted(readings: list[DeviceReading]) -> list[DeviceReading]:
    return sorted(readings, key=lambda r: (r.effective_time, r.obs_id))


@given(reading_lists(), st.randoms(use_true_random=False))
def test_shuffled_input_gives_the_same_result_as_sorted(
    readings: list[DeviceReading], rnd: random.Random
) -> None:
    shuffled = list(readings)
    rnd.shuffle(shuffled)
    assert run(shuffled) == run(_sorted(readings))


@given(reading_lists(), st.data())
def test_calls_one_chunk_at_a_time_end_in_the_same_state(
    readings: list[DeviceReading], data: st.DataObject
) -> None:
    """Readings arriving in time order, in calls of any size, open alerts fed back."""
    ordered = _sorted(list({r.obs_id: r for r in readings}.values()))
    cuts = sorted(
        data.draw(st.lists(st.integers(min_value=0, max_value=len(ordered)), max_size=len(ordered)))
    )
    open_: dict[Key, OpenFinding] = {}
    calls = []
    for lo, hi in zip([0, *cuts], [*cuts, len(ordered)], strict=True):
        actions = run(ordered[lo:hi], open_.values())
        calls.append(actions)
        open_ = feed(open_, actions)
    assert final_states(calls) == final_states([run(readings)])


@given(reading_pools(), st.randoms(use_true_random=False))
def test_flagged_readings_in_any_arrival_order_end_in_the_same_state(
    pool: list[DeviceReading], rnd: random.Random
) -> None:
    """Without all-clears, late readings only add to the count: any order, same end."""
    flagged = [replace(r, quality=frozenset({"battery-low"}), absent_reason=None) for r in pool]
    arrival = list(flagged)
    rnd.shuffle(arrival)
    open_: dict[Key, OpenFinding] = {}
    calls = []
    for r in arrival:
        actions = run([r], open_.values())
        calls.append(actions)
        open_ = feed(open_, actions)
    end = final_states(calls)
    assert end == final_states([run(flagged)])
    assert {s for s, _ in end} == {r.subject_ref for r in flagged}
    for (subject, _), state in end.items():
        mine = [r for r in flagged if r.subject_ref == subject]
        assert state.trigger_count == len(mine)
        assert state.first.event_id == min(mine, key=lambda r: (r.effective_time, r.obs_id)).obs_id
        assert state.last.event_id == max(mine, key=lambda r: (r.effective_time, r.obs_id)).obs_id


@given(reading_lists())
def test_duplicated_input_does_not_double_count(readings: list[DeviceReading]) -> None:
    once = run(readings)
    assert run(readings + readings) == once
    assert run(list(reversed(readings)) + readings) == once
