"""Alert rules: table-driven boundary cases, LO/HI comparators, dedupe, hysteresis, overrides."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from cloud_ingest.rules import (
    DEFAULT_THRESHOLDS,
    DEFAULTS_BY_CONDITION,
    AlertAction,
    AlertState,
    InvalidTransitionError,
    Reading,
    RuleError,
    ThresholdOverride,
    Transition,
    UnknownConditionError,
    check_override,
    evaluate,
    next_state,
)
from device_profiles.codes import MEASURES

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
UNITS = {k: m.unit for k, m in MEASURES.items()}

_seq = iter(range(10**9))


def rd(
    measure: str,
    value: float | None,
    *,
    minutes: int = 0,
    comparator: str | None = None,
    absent: str | None = None,
    subject: str = "p1",
    quality: frozenset[str] = frozenset(),
    obs_id: str | None = None,
) -> Reading:
    return Reading(
        obs_id=obs_id or f"obs{next(_seq):08d}",
        subject_ref=subject,
        measure=measure,
        unit=UNITS[measure],
        effective_time=T0 + timedelta(minutes=minutes),
        value=value,
        comparator=comparator,
        absent_reason=absent,
        quality=quality,
    )


def run(
    readings: list[Reading],
    open_alerts: list[AlertState] | None = None,
    overrides: dict[tuple[str, str], ThresholdOverride] | None = None,
) -> list[AlertAction]:
    return evaluate(readings, open_alerts=open_alerts or [], now=NOW, overrides=overrides)


def raised(readings: list[Reading]) -> set[str]:
    return {a.state.condition for a in run(readings) if a.kind == "raise"}


def stored(actions: list[AlertAction], first_id: int = 1) -> list[AlertState]:
    """What the service would hand back next time: the states with ids."""
    return [replace(a.state, id=a.state.id or first_id + i) for i, a in enumerate(actions)]


# --------------------------------------------------------------------------------------------
# boundaries: (measure, value, comparator, expected conditions raised)

BOUNDARIES = [
    # glucose, meter: L2 < 3.0, L1 < 3.9, high > 13.9
    # values compare at 0.1 mmol/L, the resolution care reads (engine.COMPARE_DECIMALS)
    ("glucose.capillary", 2.9, None, {"glucose-low-l2"}),
    ("glucose.capillary", 2.94, None, {"glucose-low-l2"}),  # reads 2.9
    ("glucose.capillary", 2.99, None, {"glucose-low-l1"}),  # reads 3.0
    ("glucose.capillary", 3.0, None, {"glucose-low-l1"}),
    ("glucose.capillary", 3.1, None, {"glucose-low-l1"}),  # urgent low is CGM only
    ("glucose.capillary", 3.84, None, {"glucose-low-l1"}),  # reads 3.8
    ("glucose.capillary", 3.89, None, set()),  # reads 3.9
    ("glucose.capillary", 3.9, None, set()),
    ("glucose.capillary", 10.0, None, set()),
    ("glucose.capillary", 13.9, None, set()),
    ("glucose.capillary", 13.91, None, set()),  # reads 13.9
    ("glucose.capillary", 13.96, None, {"glucose-high-l2"}),  # reads 14.0
    # a mg/dL meter, converted at the edge: DOMAIN's "< 54 mg/dL" and "< 70 mg/dL" hold
    ("glucose.capillary", 54 / 18.016, None, {"glucose-low-l1"}),
    ("glucose.capillary", 53 / 18.016, None, {"glucose-low-l2"}),
    ("glucose.capillary", 70 / 18.016, None, set()),
    ("glucose.capillary", 69 / 18.016, None, {"glucose-low-l1"}),
    # glucose, CGM: urgent low <= 3.1 ranks between L2 and L1
    ("glucose.cgm", 2.9, None, {"glucose-low-l2"}),
    ("glucose.cgm", 3.0, None, {"cgm-urgent-low"}),
    ("glucose.cgm", 3.1, None, {"cgm-urgent-low"}),
    ("glucose.cgm", 3.11, None, {"cgm-urgent-low"}),  # reads 3.1
    # reads 3.2: level 1 low on a CGM (cgm-low-l1) waits for 15 min (test_rules_sustained.py)
    ("glucose.cgm", 3.16, None, set()),
    ("glucose.cgm", 14.0, None, {"glucose-high-l2"}),
    # device LO / HI readings: trigger only when the bound is decisive
    ("glucose.capillary", 1.1, "<", {"glucose-low-l2"}),
    ("glucose.capillary", 3.0, "<", {"glucose-low-l2"}),  # < 3.0 is below 3.0
    ("glucose.capillary", 3.0, "<=", {"glucose-low-l1"}),  # could be exactly 3.0
    ("glucose.cgm", 2.2, "<", {"glucose-low-l2"}),
    ("glucose.cgm", 3.1, "<=", {"cgm-urgent-low"}),
    ("glucose.capillary", 33.3, ">", {"glucose-high-l2"}),
    ("glucose.cgm", 22.2, ">", {"glucose-high-l2"}),
    ("glucose.capillary", 13.9, ">", {"glucose-high-l2"}),
    ("glucose.capillary", 13.9, ">=", set()),  # could be exactly 13.9: undecided
    ("glucose.capillary", 5.0, "<", set()),  # "< 5" says nothing decisive
    # blood pressure
    ("bp.systolic", 179, None, set()),
    ("bp.systolic", 180, None, {"bp-systolic-grade3"}),
    ("bp.systolic", 91, None, set()),
    ("bp.systolic", 90, None, {"bp-systolic-low"}),
    ("bp.diastolic", 109, None, set()),
    ("bp.diastolic", 110, None, {"bp-diastolic-grade3"}),
    # pulse, both sources
    ("pulse.cuff", 41, None, set()),
    ("pulse.cuff", 40, None, {"pulse-low"}),
    ("pulse.oximeter", 130, None, set()),
    ("pulse.oximeter", 131, None, {"pulse-high"}),
    # SpO2: NEWS2 3 points <= 91 (high), 2 points 92-93 (medium)
    ("spo2", 94, None, set()),
    ("spo2", 93, None, {"spo2-low-news2-2"}),
    ("spo2", 92, None, {"spo2-low-news2-2"}),
    ("spo2", 91, None, {"spo2-low-news2-3"}),
    ("spo2", 85, None, {"spo2-low-news2-3"}),
    # temperature
    ("body.temperature", 35.1, None, set()),
    ("body.temperature", 35.0, None, {"temperature-low"}),
    ("body.temperature", 39.0, None, set()),
    ("body.temperature", 39.1, None, {"temperature-high"}),
    # the edge's 20-min CGM prediction: urgent low soon at <= 3.1 mmol/L (0.1 resolution)
    ("glucose.cgm.predicted", 3.1, None, {"cgm-urgent-low-soon"}),
    ("glucose.cgm.predicted", 3.14, None, {"cgm-urgent-low-soon"}),  # reads 3.1
    ("glucose.cgm.predicted", 3.16, None, set()),  # reads 3.2
    ("glucose.cgm.predicted", -0.5, None, {"cgm-urgent-low-soon"}),  # an extrapolation
    # the edge's 15-min CGM trend: falling fast at <= -3 mg/dL/min, read to 0.001 mmol/L/min
    ("glucose.cgm.trend", -3 / 18.016, None, {"cgm-falling-fast"}),  # -0.1665 reads -0.167
    ("glucose.cgm.trend", -0.1664, None, set()),  # reads -0.166, not 0.2 at 0.1 resolution
    ("glucose.cgm.trend", -0.2, None, {"cgm-falling-fast"}),
    ("glucose.cgm.trend", -2 / 18.016, None, set()),  # 2 mg/dL/min: single arrow, no alert
    ("glucose.cgm.trend", 0.3, None, set()),  # rising
    # measures without thresholds never alert
    ("body.weight", 300.0, None, set()),
    ("pef", 60.0, None, set()),
]


@pytest.mark.parametrize(("measure", "value", "comparator", "expected"), BOUNDARIES)
def test_threshold_boundaries(
    measure: str, value: float, comparator: str | None, expected: set[str]
) -> None:
    assert raised([rd(measure, value, comparator=comparator)]) == expected


@pytest.mark.parametrize(
    ("condition", "priority"),
    [
        ("glucose-low-l2", "high"),
        ("cgm-urgent-low", "high"),
        ("cgm-urgent-low-soon", "high"),
        ("cgm-falling-fast", "low"),
        ("glucose-low-l1", "medium"),
        ("glucose-high-l2", "medium"),
        ("bp-systolic-grade3", "high"),
        ("bp-diastolic-grade3", "high"),
        ("bp-systolic-low", "high"),
        ("pulse-low", "high"),
        ("pulse-high", "high"),
        ("spo2-low-news2-3", "high"),
        ("spo2-low-news2-2", "medium"),
        ("temperature-low", "high"),
        ("temperature-high", "medium"),
    ],
)
def test_priorities_and_sources(condition: str, priority: str) -> None:
    t = DEFAULTS_BY_CONDITION[condition]
    assert t.priority.value == priority
    assert "DOMAIN.md §" in t.source
    assert all(MEASURES[m].unit == t.unit for m in t.measures)


def test_every_default_has_unique_condition_and_known_measures() -> None:
    assert len({t.condition for t in DEFAULT_THRESHOLDS}) == len(DEFAULT_THRESHOLDS)
    assert all(m in MEASURES for t in DEFAULT_THRESHOLDS for m in t.measures)


@pytest.mark.parametrize("reason", ["not-a-number", "error", "positive-infinity"])
def test_absent_reading_never_triggers(reason: str) -> None:
    assert run([rd("glucose.capillary", None, absent=reason)]) == []


def test_absent_reading_never_clears() -> None:
    [a] = run([rd("glucose.capillary", 2.5)])
    assert run([rd("glucose.capillary", None, minutes=5, absent="error")], stored([a])) == []


def test_questionable_reading_never_triggers_nor_clears() -> None:
    """PROTOCOLS.md: readings the device flags questionable/invalid never raise clinical alerts."""
    q = frozenset({"questionable"})
    assert run([rd("spo2", 80, quality=q)]) == []
    [a] = run([rd("spo2", 86)])
    assert run([rd("spo2", 98, minutes=5, quality=q)], stored([a])) == []


def test_lo_reading_is_named_in_explanation() -> None:
    [a] = run([rd("glucose.capillary", 1.1, comparator="<")])
    assert "LO reading" in a.state.explanation
    assert "< 1.1 mmol/L" in a.state.explanation
    assert a.state.first.comparator == "<"


def test_hi_reading_is_named_in_explanation() -> None:
    [a] = run([rd("glucose.cgm", 22.2, comparator=">")])
    assert "HI reading" in a.state.explanation


def test_simulated_data_still_alerts_and_says_so() -> None:
    [a] = run([rd("spo2", 88, quality=frozenset({"simulated"}))])
    assert a.state.simulated
    assert "Simulated data" in a.state.explanation


def test_explanation_names_rule_threshold_unit_source_and_reading() -> None:
    r = rd("bp.systolic", 192)
    [a] = run([r])
    text = a.state.explanation
    for part in (
        "bp-systolic-grade3",
        ">= 180 mm[Hg]",
        "DOMAIN.md §3",
        "192 mm[Hg]",
        r.obs_id,
        "high priority",
    ):
        assert part in text
    assert "Simulated" not in text
    for word in ("diagnos", "hypertension", "hypoglycaemia", "has "):
        assert word not in text.lower()
    assert a.events[0].action == "raised"
    assert a.events[0].at == NOW


def test_one_alert_per_subject_and_condition_in_one_batch() -> None:
    readings = [rd("glucose.capillary", v, minutes=i) for i, v in enumerate([2.8, 2.6, 2.9])]
    [a] = run(readings)
    assert a.kind == "raise"
    assert a.state.trigger_count == 3
    assert a.state.first.value == 2.8
    assert a.state.last.value == 2.9


def test_repeated_evidence_updates_the_open_alert() -> None:
    first = run([rd("glucose.capillary", 2.8)])
    [u] = run([rd("glucose.capillary", 2.5, minutes=10)], stored(first))
    assert u.kind == "update"
    assert u.state.id == 1
    assert u.state.trigger_count == 2
    assert u.state.last.value == 2.5
    assert u.state.first.value == 2.8
    assert "2 readings have met the condition" in u.state.explanation
    assert [e.action for e in u.events] == ["updated"]


def test_subjects_are_independent() -> None:
    actions = run([rd("spo2", 90, subject="a"), rd("spo2", 90, subject="b")])
    assert sorted(a.state.subject_ref for a in actions) == ["a", "b"]


def test_family_only_most_severe_level() -> None:
    # a 2.8 reading is L2 only; an open L1 alert is neither updated nor cleared by it
    l1 = run([rd("glucose.capillary", 3.5)])
    actions = run([rd("glucose.capillary", 2.8, minutes=5)], stored(l1))
    assert [(a.kind, a.state.condition) for a in actions] == [("raise", "glucose-low-l2")]


@pytest.mark.parametrize(
    ("measure", "trigger", "still", "clear"),
    [
        ("glucose.capillary", 2.8, 3.1, 3.2),  # < 3.0, hysteresis 0.2
        ("glucose.capillary", 15.0, 13.5, 13.4),  # > 13.9, hysteresis 0.5
        ("bp.systolic", 185, 175, 174),  # >= 180, hysteresis 5: clears below 175
        ("spo2", 90, 92, 93),  # <= 91, hysteresis 1 (92 meets the 2-point band)
        ("pulse.cuff", 38, 43, 44),  # <= 40, hysteresis 3
        ("body.temperature", 39.5, 38.9, 38.8),  # >= 39.1, hysteresis 0.2: below 38.9
        # <= -0.167 mmol/L/min, hysteresis 0.056 (1 mg/dL/min): above -0.111, read to 0.001
        ("glucose.cgm.trend", -0.2, -0.111, -0.110),
        ("glucose.cgm.predicted", 2.5, 3.4, 3.5),  # <= 3.1, hysteresis 0.3: above 3.4
    ],
)
def test_clearing_needs_the_hysteresis(
    measure: str, trigger: float, still: float, clear: float
) -> None:
    [a] = run([rd(measure, trigger)])
    open_ = stored([a])
    not_cleared = [
        x
        for x in run([rd(measure, still, minutes=5)], open_)
        if x.state.condition == a.state.condition
    ]
    assert not_cleared == [] or not_cleared[0].state.cleared_at is None
    [c] = [
        x
        for x in run([rd(measure, clear, minutes=5)], open_)
        if x.state.condition == a.state.condition
    ]
    assert c.kind == "update"
    assert c.state.cleared_at == T0 + timedelta(minutes=5)
    assert [e.action for e in c.events] == ["cleared"]
    assert "awaiting review" in c.state.explanation


def test_lo_reading_clears_a_high_alert_and_hi_clears_a_low() -> None:
    [hi] = run([rd("glucose.cgm", 15.0)])
    actions = run([rd("glucose.cgm", 2.2, minutes=5, comparator="<")], stored([hi]))
    assert {(a.kind, a.state.condition, a.state.cleared_at is not None) for a in actions} == {
        ("update", "glucose-high-l2", True),
        ("raise", "glucose-low-l2", False),
    }
    [lo] = run([rd("glucose.cgm", 2.5)])
    actions = run([rd("glucose.cgm", 22.2, minutes=5, comparator=">")], stored([lo]))
    assert [a.state.condition for a in actions if a.state.cleared_at] == ["glucose-low-l2"]


def test_cleared_alert_is_updated_again_when_condition_returns() -> None:
    [a] = run([rd("spo2", 88)])
    [c] = run([rd("spo2", 97, minutes=5)], stored([a]))
    [again] = run([rd("spo2", 89, minutes=10)], [c.state])
    assert again.state.cleared_at is None
    assert again.state.trigger_count == 2
    assert "condition present again" in again.events[0].note


def test_trigger_then_clear_in_one_batch() -> None:
    [a] = run([rd("spo2", 88), rd("spo2", 97, minutes=5)])
    assert a.kind == "raise"
    assert a.state.cleared_at is not None
    assert [e.action for e in a.events] == ["raised", "cleared"]


def test_out_of_order_late_reading_neither_clears_nor_becomes_latest() -> None:
    [a] = run([rd("spo2", 88, minutes=30)])
    # a normal reading from before the alert arrives late: it must not clear it
    assert run([rd("spo2", 98, minutes=10)], stored([a])) == []
    # a late triggering reading counts but the latest stays the newest
    [u] = run([rd("spo2", 85, minutes=20)], stored([a]))
    assert u.state.trigger_count == 2
    assert u.state.last.value == 88


def test_unordered_batch_is_processed_in_time_order() -> None:
    [a] = run([rd("spo2", 97, minutes=10), rd("spo2", 88, minutes=0)])
    assert a.state.cleared_at == T0 + timedelta(minutes=10)


def test_patient_override_replaces_value() -> None:
    ov = ThresholdOverride(
        subject_ref="p1",
        condition="glucose-low-l1",
        value=4.5,
        unit="mmol/L",
        set_by="dr.k",
        set_at=T0,
    )
    overrides = {("p1", "glucose-low-l1"): ov}
    [a] = run([rd("glucose.capillary", 4.2)], overrides=overrides)
    assert a.state.threshold_value == 4.5
    assert "patient-specific value set by dr.k" in a.state.threshold_source
    assert "< 3.9 mmol/L" in a.state.threshold_source  # the default stays visible
    # other patients keep the default
    assert run([rd("glucose.capillary", 4.2, subject="p2")], overrides=overrides) == []


def test_override_validation() -> None:
    assert check_override("spo2-low-news2-3", 88, "%").condition == "spo2-low-news2-3"
    with pytest.raises(UnknownConditionError):
        check_override("no-such", 1.0, "%")
    with pytest.raises(RuleError, match="mmol/L"):
        check_override("glucose-low-l2", 54, "mg/dL")
    with pytest.raises(RuleError, match="finite"):
        check_override("glucose-low-l2", float("nan"), "mmol/L")


def test_two_open_alerts_for_one_condition_are_refused() -> None:
    [a] = run([rd("spo2", 88)])
    s = stored([a])[0]
    with pytest.raises(ValueError, match="two open alerts"):
        run([], [s, replace(s, id=2)])


@pytest.mark.parametrize(
    ("state", "transition", "result"),
    [
        ("open", Transition.ACKNOWLEDGE, "acknowledged"),
        ("open", Transition.RESOLVE, "resolved"),
        ("acknowledged", Transition.RESOLVE, "resolved"),
        ("acknowledged", Transition.ACKNOWLEDGE, None),
        ("resolved", Transition.ACKNOWLEDGE, None),
        ("resolved", Transition.RESOLVE, None),
    ],
)
def test_life_cycle(state: str, transition: Transition, result: str | None) -> None:
    if result is None:
        with pytest.raises(InvalidTransitionError):
            next_state(state, transition)
    else:
        assert next_state(state, transition).value == result


def test_overrides_cannot_switch_a_condition_off() -> None:
    from cloud_ingest.rules.thresholds import OVERRIDE_RANGES, check_override

    assert set(OVERRIDE_RANGES) == set(DEFAULTS_BY_CONDITION)
    for condition, (lo, hi) in OVERRIDE_RANGES.items():
        default = DEFAULTS_BY_CONDITION[condition]
        assert lo <= default.value <= hi, condition  # the default itself is allowed
        with pytest.raises(RuleError, match="safety bounds"):
            check_override(condition, lo - 1, default.unit)
        with pytest.raises(RuleError, match="safety bounds"):
            check_override(condition, hi + 1, default.unit)
    # DOMAIN.md §2: the CGM urgent low is not disableable: it may be raised, never lowered
    with pytest.raises(RuleError):
        check_override("cgm-urgent-low", 3.0, "mmol/L")
    assert check_override("cgm-urgent-low", 3.5, "mmol/L").condition == "cgm-urgent-low"
    with pytest.raises(RuleError):
        check_override("glucose-low-l2", -100, "mmol/L")


def test_a_stored_override_outside_the_bounds_falls_back_to_the_default() -> None:
    from datetime import UTC, datetime

    from cloud_ingest.rules.thresholds import apply_override

    default = DEFAULTS_BY_CONDITION["glucose-low-l2"]
    stale = ThresholdOverride(
        subject_ref="p1",
        condition="glucose-low-l2",
        value=-100.0,
        unit="mmol/L",
        set_by="someone",
        set_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    t = apply_override(default, stale)
    assert t.value == default.value
    assert "ignored" in t.source


def test_a_trend_alert_explains_itself_at_the_trend_resolution() -> None:
    (action,) = run([rd("glucose.cgm.trend", -0.2)])
    text = action.state.explanation
    assert "<= -0.167 mmol/L/min" in text
    assert "-0.2 mmol/L/min" in text
