"""Dispenser alert rules: raise/clear tables, dedupe, late events, explanations, properties."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud_ingest.rules.dispenser import (
    DEFAULT_DISPENSER_RULES,
    DispenserEvent,
    DispenserRule,
    FindingAction,
    FindingEvidence,
    OpenFinding,
    RuleInputError,
    evaluate_events,
    evidence_of,
)
from cloud_ingest.rules.thresholds import Priority, RuleError
from device_profiles.events import DOSE_KINDS, EventKind
from tests.findings import Key, feed, final_states, only

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
NOW = datetime(2026, 3, 3, 8, 0, tzinfo=UTC)
K = EventKind

_seq = iter(range(10**9))


def ev(
    kind: EventKind,
    *,
    minutes: float = 0,
    subject: str = "p1",
    event_id: str | None = None,
    dose_id: str | None = None,
    scheduled_minutes: float | None = None,
    details: dict[str, str | int | float | bool] | None = None,
    simulated: bool = False,
) -> DispenserEvent:
    if dose_id is None and kind in DOSE_KINDS:
        dose_id = f"dose-{minutes:g}"
    return DispenserEvent(
        event_id=event_id or f"evt{next(_seq):08d}",
        subject_ref=subject,
        device_id="disp-1",
        kind=kind,
        event_time=T0 + timedelta(minutes=minutes),
        dose_id=dose_id,
        scheduled_time=None
        if scheduled_minutes is None
        else T0 + timedelta(minutes=scheduled_minutes),
        details=details or {},
        simulated=simulated,
    )


def run(
    events: Iterable[DispenserEvent],
    open_alerts: Iterable[OpenFinding] = (),
    rules: Sequence[DispenserRule] = DEFAULT_DISPENSER_RULES,
) -> list[FindingAction]:
    return evaluate_events(events, open_alerts=open_alerts, now=NOW, rules=rules)


# --------------------------------------------------------------------------------------------
# which kind raises what, at which priority

RAISES = [
    (K.DOSE_MISSED, "dose-missed", Priority.HIGH),
    (K.HELP_REQUEST, "help-request", Priority.HIGH),
    (K.ROLL_EMPTY, "roll-empty", Priority.HIGH),
    (K.JAM, "device-jam", Priority.HIGH),
    (K.TAMPER, "tamper", Priority.MEDIUM),
    (K.LOW_BATTERY, "low-battery", Priority.MEDIUM),
    (K.OFFLINE, "dispenser-offline", Priority.MEDIUM),
    (K.LOW_STOCK, "low-stock", Priority.LOW),
    (K.POWER_LOST, "power-lost", Priority.LOW),
    (K.DOSE_TAKEN_LATE, "dose-taken-late", Priority.LOW),
    (K.DOSE_DUE, None, None),
    (K.DOSE_DISPENSED, None, None),
    (K.DOSE_TAKEN, None, None),
    (K.POWER_RESTORED, None, None),
    (K.ONLINE, None, None),
]


def test_the_table_covers_every_event_kind() -> None:
    assert {k for k, _, _ in RAISES} == set(EventKind)


@pytest.mark.parametrize(("kind", "condition", "priority"), RAISES)
def test_kind_raises_condition_at_priority(
    kind: EventKind, condition: str | None, priority: Priority | None
) -> None:
    actions = run([ev(kind)])
    if condition is None:
        assert actions == []
        return
    a = only(actions)
    assert a.kind == "raise"
    assert a.state.condition == condition
    assert a.state.priority == priority
    assert a.state.audience == "home_care"
    assert a.state.trigger_count == 1
    assert a.state.alert_id is None
    assert a.state.cleared_at is None


def test_dose_missed_is_high_from_domain_and_other_priorities_say_why() -> None:
    by_condition = {r.condition: r for r in DEFAULT_DISPENSER_RULES}
    assert by_condition["dose-missed"].source.startswith("DOMAIN.md §4")
    for r in DEFAULT_DISPENSER_RULES:
        if r.condition != "dose-missed":
            assert r.source.startswith("remon default: "), r.condition


# --------------------------------------------------------------------------------------------
# clearing: (raising kind, clearing kind, minutes after, cleared?)

CLEARS = [
    (K.OFFLINE, K.ONLINE, 5, True),
    (K.OFFLINE, K.ONLINE, 0, False),  # same instant: not newer than the trigger
    (K.OFFLINE, K.ONLINE, -5, False),  # older than the trigger
    (K.POWER_LOST, K.POWER_RESTORED, 1, True),
    (K.LOW_BATTERY, K.POWER_RESTORED, 1, True),
    (K.ROLL_EMPTY, K.DOSE_DISPENSED, 1, True),
    (K.ROLL_EMPTY, K.DOSE_TAKEN, 1, False),  # may be the last dose before it ran out
    (K.JAM, K.DOSE_DISPENSED, 1, True),
    (K.LOW_STOCK, K.DOSE_DISPENSED, 1, False),  # dispensing while doses remain is no refill
    (K.LOW_STOCK, K.DOSE_TAKEN, 1, False),
    (K.DOSE_TAKEN_LATE, K.DOSE_TAKEN, 60, True),
    (K.DOSE_MISSED, K.DOSE_TAKEN, 60, False),  # a locked-away dose needs a person
    (K.DOSE_MISSED, K.DOSE_DISPENSED, 60, False),
    (K.DOSE_MISSED, K.DOSE_TAKEN_LATE, 60, False),
    (K.HELP_REQUEST, K.ONLINE, 1, False),
    (K.TAMPER, K.DOSE_DISPENSED, 1, False),
]


@pytest.mark.parametrize(("raising", "clearing", "after", "cleared"), CLEARS)
def test_clearing_table(raising: EventKind, clearing: EventKind, after: int, cleared: bool) -> None:
    first = ev(raising, minutes=10, dose_id="d-raise" if raising in DOSE_KINDS else None)
    other = ev(clearing, minutes=10 + after, dose_id="d-other" if clearing in DOSE_KINDS else None)
    a = only(
        run([first, other]),
        next(r.condition for r in DEFAULT_DISPENSER_RULES if raising in r.raised_by),
    )
    if cleared:
        assert a.state.cleared_at == other.event_time
        assert a.state.cleared_by == other.event_id
        assert "awaiting review" in a.state.explanation
    else:
        assert a.state.cleared_at is None
        assert a.state.cleared_by is None


def test_news_about_the_dose_that_raised_it_is_no_all_clear() -> None:
    late = ev(K.DOSE_TAKEN_LATE, minutes=0, dose_id="d1")
    same = ev(K.DOSE_TAKEN, minutes=1, dose_id="d1")
    a = only(run([late, same]))
    assert a.state.cleared_at is None
    other = ev(K.DOSE_TAKEN, minutes=600, dose_id="d2")
    b = only(run([late, same, other]))
    assert b.state.cleared_at == other.event_time


def test_no_all_clear_is_said_in_words() -> None:
    a = only(run([ev(K.DOSE_MISSED)]))
    assert "No automatic all-clear: a person must check and resolve it." in a.state.explanation
    b = only(run([ev(K.OFFLINE)]))
    assert "All-clear: a later online event marks it cleared" in b.state.explanation


# --------------------------------------------------------------------------------------------
# one open alert per subject + condition


def test_second_missed_dose_updates_the_open_alert_and_names_both_doses() -> None:
    first = ev(K.DOSE_MISSED, minutes=0, dose_id="morning-0302", scheduled_minutes=-60)
    a = only(run([first]))
    open_ = feed({}, [a])
    second = ev(K.DOSE_MISSED, minutes=600, dose_id="evening-0302", scheduled_minutes=540)
    b = only(run([second], open_.values()))
    assert b.kind == "update"
    assert b.state.alert_id == 100
    assert b.state.trigger_count == 2
    assert b.state.first.dose_id == "morning-0302"
    assert b.state.last.dose_id == "evening-0302"
    assert "morning-0302" in b.state.explanation
    assert "evening-0302" in b.state.explanation
    assert "2 pieces of evidence so far" in b.state.explanation


def test_two_missed_doses_in_one_call_are_one_alert() -> None:
    a = only(run([ev(K.DOSE_MISSED, minutes=0), ev(K.DOSE_MISSED, minutes=600)]))
    assert a.kind == "raise"
    assert a.state.trigger_count == 2
    assert [e.action for e in a.events] == ["raised", "updated"]


def test_subjects_are_separate() -> None:
    actions = run([ev(K.OFFLINE, subject="p1"), ev(K.OFFLINE, subject="p2")])
    assert sorted(a.state.subject_ref for a in actions) == ["p1", "p2"]
    assert all(a.kind == "raise" for a in actions)


def test_clear_then_retrigger_in_one_call() -> None:
    a = only(run([ev(K.OFFLINE, minutes=0), ev(K.ONLINE, minutes=5), ev(K.OFFLINE, minutes=9)]))
    assert a.kind == "raise"
    assert a.state.trigger_count == 2
    assert a.state.cleared_at is None
    assert [e.action for e in a.events] == ["raised", "cleared", "updated"]
    assert a.events[-1].note.startswith("condition present again")


def test_clear_then_retrigger_across_calls() -> None:
    off1, on, off2 = ev(K.OFFLINE, minutes=0), ev(K.ONLINE, minutes=5), ev(K.OFFLINE, minutes=9)
    open_ = feed({}, run([off1]))
    c = only(run([on], open_.values()))
    assert c.kind == "clear"
    assert c.state.cleared_at == on.event_time
    assert c.state.cleared_by == on.event_id
    open_ = feed(open_, [c])
    u = only(run([off2], open_.values()))
    assert u.kind == "update"
    assert u.state.cleared_at is None
    assert u.state.cleared_by is None
    assert u.state.trigger_count == 2
    assert u.state.last.event_id == off2.event_id


def test_trigger_at_the_clearing_instant_unclears() -> None:
    """At one instant the condition stays present, whichever event sorts first."""
    off = ev(K.OFFLINE, minutes=0)
    on = ev(K.ONLINE, minutes=5, event_id="b-on")
    for off_id in ("a-off", "c-off"):
        again = ev(K.OFFLINE, minutes=5, event_id=off_id)
        a = only(run([off, on, again]))
        assert a.state.cleared_at is None, off_id
        assert a.state.trigger_count == 2


def test_second_all_clear_keeps_the_first() -> None:
    off, on1, on2 = ev(K.OFFLINE, minutes=0), ev(K.ONLINE, minutes=5), ev(K.ONLINE, minutes=7)
    a = only(run([off, on2, on1]))
    assert a.state.cleared_at == on1.event_time
    open_ = feed({}, run([off, on2]))
    b = only(run([on1], open_.values()))  # an earlier all-clear arriving late moves it back
    assert b.state.cleared_at == on1.event_time
    assert run([on2], feed(open_, [b]).values()) == []


# --------------------------------------------------------------------------------------------
# late and duplicated events


def test_late_event_counts_but_neither_replaces_latest_nor_clears() -> None:
    newest = ev(K.OFFLINE, minutes=60)
    open_ = feed({}, run([newest]))
    late = ev(K.OFFLINE, minutes=30)
    a = only(run([late], open_.values()))
    assert a.kind == "update"
    assert a.state.trigger_count == 2
    assert a.state.last.event_id == newest.event_id
    assert a.state.first.event_id == late.event_id
    assert "older than the latest" in a.events[0].note
    # an all-clear older than the latest trigger changes nothing
    assert run([ev(K.ONLINE, minutes=45)], feed(open_, [a]).values()) == []


def test_late_trigger_does_not_unclear() -> None:
    off, on = ev(K.OFFLINE, minutes=0), ev(K.ONLINE, minutes=10)
    open_ = feed({}, run([off, on]))
    a = only(run([ev(K.OFFLINE, minutes=5)], open_.values()))
    assert a.state.cleared_at == on.event_time
    assert a.state.trigger_count == 2


def test_same_event_twice_in_one_call_counts_once() -> None:
    e = ev(K.DOSE_MISSED)
    a = only(run([e, e, e]))
    assert a.state.trigger_count == 1
    assert len(a.events) == 1


def test_same_id_with_other_content_is_refused() -> None:
    e = ev(K.DOSE_MISSED, event_id="evt-x")
    other = ev(K.DOSE_MISSED, event_id="evt-x", minutes=5)
    with pytest.raises(RuleInputError, match="evt-x"):
        run([e, other])


@pytest.mark.parametrize("which", ["first", "last"])
def test_event_seen_in_an_earlier_call_is_recognised(which: str) -> None:
    e1, e2 = ev(K.DOSE_MISSED, minutes=0), ev(K.DOSE_MISSED, minutes=60)
    open_ = feed({}, run([e1, e2]))
    again = e1 if which == "first" else e2
    assert run([again], open_.values()) == []


# --------------------------------------------------------------------------------------------
# explanations


def test_explanation_names_rule_event_times_dose_details_source_and_simulated() -> None:
    e = ev(
        K.LOW_STOCK,
        minutes=95,
        event_id="evt-77",
        details={"doses_left": 3},
        simulated=True,
    )
    m = ev(K.DOSE_MISSED, minutes=30, dose_id="d-0830", scheduled_minutes=0)
    low = only(run([e]))
    text = low.state.explanation
    assert text.startswith("Dispenser stock running low. Rule low-stock (low priority, for ")
    assert "home-care staff" in text
    assert "low_stock at 2026-03-02 09:35 UTC from dispenser disp-1" in text
    assert "doses_left 3" in text
    assert "(event evt-77)" in text
    assert "Source: remon default: doses remain" in text
    assert "Simulated data" in text
    assert low.state.simulated is True
    missed = only(run([m])).state.explanation
    assert "dose d-0830 scheduled for 2026-03-02 08:00 UTC" in missed
    assert "at 2026-03-02 08:30 UTC" in missed
    assert "DOMAIN.md §4" in missed
    assert "Simulated" not in missed


@pytest.mark.parametrize("rule", DEFAULT_DISPENSER_RULES, ids=lambda r: r.condition)
def test_no_diagnosis_wording(rule: DispenserRule) -> None:
    kind = min(rule.raised_by)
    text = only(run([ev(kind)])).state.explanation.lower()
    for word in ("diagnos", "non-adherent", "noncompliant", "dementia", "confused"):
        assert word not in text


# --------------------------------------------------------------------------------------------
# bad input and rule validation


def test_naive_and_non_utc_times_are_refused() -> None:
    with pytest.raises(RuleInputError, match="event_time must be an aware"):
        DispenserEvent(
            event_id="e1",
            subject_ref="p1",
            device_id="d",
            kind=K.OFFLINE,
            event_time=datetime(2026, 3, 2, 8, 0),
        )
    with pytest.raises(RuleInputError, match="must be in UTC"):
        DispenserEvent(
            event_id="e1",
            subject_ref="p1",
            device_id="d",
            kind=K.OFFLINE,
            event_time=datetime(2026, 3, 2, 8, 0, tzinfo=timezone(timedelta(hours=2))),
        )
    with pytest.raises(RuleInputError, match="now must be an aware"):
        evaluate_events([], open_alerts=[], now=datetime(2026, 3, 2))


def test_dose_event_without_dose_id_and_nested_details_are_refused() -> None:
    with pytest.raises(RuleInputError, match="needs its dose_id"):
        DispenserEvent(
            event_id="e1", subject_ref="p1", device_id="d", kind=K.DOSE_MISSED, event_time=T0
        )
    with pytest.raises(RuleInputError, match="flat value"):
        DispenserEvent(
            event_id="e1",
            subject_ref="p1",
            device_id="d",
            kind=K.LOW_STOCK,
            event_time=T0,
            details={"doses_left": [3]},  # type: ignore[dict-item]
        )
    with pytest.raises(RuleInputError, match="event_id"):
        DispenserEvent(
            event_id="", subject_ref="p1", device_id="d", kind=K.LOW_STOCK, event_time=T0
        )


def test_details_are_frozen() -> None:
    d: dict[str, str | int | float | bool] = {"doses_left": 3}
    e = ev(K.LOW_STOCK, details=d)
    d["doses_left"] = 0
    assert e.details["doses_left"] == 3


def test_rule_validation() -> None:
    with pytest.raises(RuleError, match="both raise and clear"):
        DispenserRule(
            condition="x",
            title="X",
            raised_by=frozenset({K.OFFLINE}),
            cleared_by=frozenset({K.OFFLINE}),
            priority=Priority.LOW,
            audience="home_care",
            source="test",
        )
    with pytest.raises(RuleError, match="no event kind raises it"):
        DispenserRule(
            condition="x",
            title="X",
            raised_by=frozenset(),
            cleared_by=frozenset(),
            priority=Priority.LOW,
            audience="home_care",
            source="test",
        )
    with pytest.raises(RuleError, match="unknown audience"):
        DispenserRule(
            condition="x",
            title="X",
            raised_by=frozenset({K.JAM}),
            cleared_by=frozenset(),
            priority=Priority.LOW,
            audience="family",  # type: ignore[arg-type]
            source="test",
        )
    with pytest.raises(RuleError, match="source"):
        DispenserRule(
            condition="x",
            title="X",
            raised_by=frozenset({K.JAM}),
            cleared_by=frozenset(),
            priority=Priority.LOW,
            audience="home_care",
            source="",
        )
    with pytest.raises(RuleError, match="defined twice"):
        run([], rules=[DEFAULT_DISPENSER_RULES[0], DEFAULT_DISPENSER_RULES[0]])


def test_custom_rules_for_clinicians() -> None:
    rule = DispenserRule(
        condition="late-pattern",
        title="Doses taken late",
        raised_by=frozenset({K.DOSE_TAKEN_LATE}),
        cleared_by=frozenset(),
        priority=Priority.MEDIUM,
        audience="clinician",
        source="care team X policy",
    )
    a = only(run([ev(K.DOSE_TAKEN_LATE), ev(K.DOSE_MISSED)], rules=[rule]))
    assert a.state.audience == "clinician"
    assert "for clinicians" in a.state.explanation
    assert a.state.priority == Priority.MEDIUM


def _open(condition: str, subject: str = "p1", alert_id: int = 1) -> OpenFinding:
    evidence = FindingEvidence(event_id="old", kind="offline", time=T0, summary="old")
    return OpenFinding(
        alert_id=alert_id,
        subject_ref=subject,
        condition=condition,
        first=evidence,
        last=evidence,
        trigger_count=1,
    )


def test_open_alert_checks() -> None:
    with pytest.raises(RuleInputError, match="two open alerts"):
        run([], [_open("dispenser-offline"), _open("dispenser-offline", alert_id=2)])
    # another family's alert is not this family's business
    assert run([ev(K.ONLINE, minutes=5)], [_open("glucose-low-l2")]) == []
    with pytest.raises(RuleInputError, match="trigger_count"):
        replace(_open("x"), trigger_count=0)
    with pytest.raises(RuleInputError, match="cleared_at without cleared_by"):
        replace(_open("x"), cleared_at=T0 + timedelta(minutes=1))


# --------------------------------------------------------------------------------------------
# properties

_DOSES = ("d1", "d2", "d3")


@st.composite
def event_pools(
    draw: st.DrawFn, kinds: Sequence[EventKind] = tuple(EventKind)
) -> list[DispenserEvent]:
    n = draw(st.integers(min_value=0, max_value=14))
    pool = []
    for i in range(n):
        kind = draw(st.sampled_from(kinds))
        pool.append(
            ev(
                kind,
                minutes=draw(st.integers(min_value=0, max_value=40)),
                subject=draw(st.sampled_from(("p1", "p2"))),
                event_id=f"e{i}",
                dose_id=draw(st.sampled_from(_DOSES)) if kind in DOSE_KINDS else None,
                simulated=draw(st.booleans()),
            )
        )
    return pool


@st.composite
def event_lists(draw: st.DrawFn) -> list[DispenserEvent]:
    """Events with duplicates: a pool, each event given 1-2 times, in any order."""
    pool = draw(event_pools())
    out = [e for e in pool for _ in range(draw(st.integers(min_value=1, max_value=2)))]
    return draw(st.permutations(out))


def _sorted(events: list[DispenserEvent]) -> list[DispenserEvent]:
    return sorted(events, key=lambda e: (e.event_time, e.event_id))


@given(event_lists(), st.randoms(use_true_random=False))
def test_shuffled_input_gives_the_same_result_as_sorted(
    events: list[DispenserEvent], rnd: random.Random
) -> None:
    shuffled = list(events)
    rnd.shuffle(shuffled)
    assert run(shuffled) == run(_sorted(events))


@given(event_lists(), st.data())
def test_calls_one_chunk_at_a_time_end_in_the_same_state(
    events: list[DispenserEvent], data: st.DataObject
) -> None:
    """Events arriving in time order, in calls of any size (one at a time included)."""
    ordered = _sorted(events)
    cuts = sorted(
        data.draw(st.lists(st.integers(min_value=0, max_value=len(ordered)), max_size=len(ordered)))
    )
    open_: dict[Key, OpenFinding] = {}
    calls = []
    for lo, hi in zip([0, *cuts], [*cuts, len(ordered)], strict=True):
        actions = run(ordered[lo:hi], open_.values())
        calls.append(actions)
        open_ = feed(open_, actions)
    assert final_states(calls) == final_states([run(events)])


_RAISING = tuple(k for r in DEFAULT_DISPENSER_RULES for k in sorted(r.raised_by))


@given(event_pools(_RAISING), st.randoms(use_true_random=False))
def test_raising_events_in_any_arrival_order_end_in_the_same_state(
    pool: list[DispenserEvent], rnd: random.Random
) -> None:
    """Late events (older than the latest evidence) only add to the count."""
    arrival = list(pool)
    rnd.shuffle(arrival)
    open_: dict[Key, OpenFinding] = {}
    calls = []
    for e in arrival:
        actions = run([e], open_.values())
        calls.append(actions)
        open_ = feed(open_, actions)
    assert final_states(calls) == final_states([run(pool)])
    raised_by = {r.condition: r.raised_by for r in DEFAULT_DISPENSER_RULES}
    for (subject, condition), state in final_states(calls).items():
        expected = [e for e in pool if e.subject_ref == subject and e.kind in raised_by[condition]]
        assert state.trigger_count == len(expected)
        assert state.first == min(
            (evidence_of(e) for e in expected), key=lambda x: (x.time, x.event_id)
        )
        assert state.last == max(
            (evidence_of(e) for e in expected), key=lambda x: (x.time, x.event_id)
        )


@given(event_lists())
def test_duplicated_input_does_not_double_count(events: list[DispenserEvent]) -> None:
    once = run(events)
    assert run(events + events) == once
    assert run(list(reversed(events)) + events) == once


def test_every_finding_rule_names_its_source_in_domain_md() -> None:
    """Traceability (every criterion and priority from DOMAIN.md, or a remon default that says
    which DOMAIN.md section it rests on): the alert text carries the source."""
    from cloud_ingest.rules.device_health import DEFAULT_DEVICE_HEALTH_RULES
    from cloud_ingest.rules.pef_zones import PefZonePolicy, pef_zone_rules
    from cloud_ingest.rules.silence import (
        CgmSilencePolicy,
        PefSchedulePolicy,
        SiteStatusPolicy,
        cgm_rules,
        pef_rules,
        site_rules,
    )

    rules = [
        *DEFAULT_DISPENSER_RULES,
        *DEFAULT_DEVICE_HEALTH_RULES,
        *cgm_rules(CgmSilencePolicy()).values(),
        *pef_rules(PefSchedulePolicy()).values(),
        *site_rules(SiteStatusPolicy()).values(),
        *pef_zone_rules(PefZonePolicy()).values(),
    ]
    missing = [r.condition for r in rules if "DOMAIN.md" not in r.source]
    assert missing == []
