"""The kiosk visit state machine: every reading bound to exactly one open visit or quarantined
with its reason; scripted adversarial scenarios and a property over random operation sequences."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_profiles.observation import Observation, Provenance
from edge_agent.kiosk_session import (
    Accepted,
    Arm,
    Disarm,
    KioskError,
    KioskSession,
    KioskState,
    KioskTimeouts,
    Output,
    Quarantine,
    QuarantineReason,
    VisitReady,
    Warn,
    Wipe,
)

T0 = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
BP, SCALE, OXI = "bp", "scale", "oximeter"
STATION = frozenset({BP, SCALE, OXI})


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


_seq = itertools.count(1)


def sys_bp(taken: datetime, value: float = 128.0, key: str | None = None) -> Observation:
    return Observation(
        measure="bp.systolic",
        unit="mm[Hg]",
        value=value,
        effective_time=taken,
        record_key=key or f"rec:{next(_seq)}",
        provenance=Provenance(source="test"),
    )


def refs() -> Iterator[str]:
    for n in itertools.count(1):
        yield f"visit-{n}"


def kiosk(**kw: object) -> KioskSession:
    it = refs()
    return KioskSession(devices=STATION, new_ref=lambda: next(it), **kw)  # type: ignore[arg-type]


def quarantined(out: list[Output]) -> list[QuarantineReason]:
    return [o.reason for o in out if isinstance(o, Quarantine)]


def test_a_whole_visit_sends_once_and_wipes() -> None:
    k = kiosk()
    assert k.identify("p-1", at(0)) == []
    [arm] = k.start(at(10))
    assert arm == Arm("visit-1", STATION, at(10))
    r = sys_bp(at(40))
    assert k.measured(BP, [r], at(41)) == [Accepted("visit-1", BP, (r,))]
    assert k.readings() == (r,)
    assert k.review(at(60)) == [Disarm("visit-1", STATION)]
    [ready] = k.consent(at(70))
    assert ready == VisitReady("visit-1", "p-1", (r,))
    assert k.state is KioskState.SENDING
    assert k.sent("visit-1", at(71)) == [Wipe("visit-1", "sent")]
    assert (k.state, k.visit_ref, k.readings()) == (KioskState.IDLE, None, ())


def test_a_reading_arriving_a_second_after_the_visit_ended_is_quarantined() -> None:
    k = kiosk()
    k.identify("p-1", at(0))
    k.start(at(10))
    k.review(at(50))
    k.cancel(at(60))
    late = sys_bp(at(55))  # taken during the visit, handed over after it ended
    out = k.measured(BP, [late], at(61))
    assert quarantined(out) == [QuarantineReason.NO_OPEN_VISIT]
    assert out[0].observations == (late,)  # type: ignore[union-attr]


def test_back_to_back_visits_with_a_device_replaying_its_memory() -> None:
    """The cuff resends every stored reading when it reconnects: the second patient gets only
    the reading taken after the cuff was armed for them."""
    k = kiosk()
    k.identify("p-1", at(0))
    k.start(at(10))
    first = sys_bp(at(30), 141.0)
    k.measured(BP, [first], at(31))
    k.review(at(40))
    k.consent(at(45))
    k.sent("visit-1", at(46))
    k.identify("p-2", at(50))
    k.start(at(60))
    second = sys_bp(at(90), 118.0)
    out = k.measured(BP, [first, second], at(91))  # the replay and the new one together
    assert quarantined(out) == [QuarantineReason.TAKEN_BEFORE_ARMED]
    assert [o for o in out if isinstance(o, Accepted)] == [Accepted("visit-2", BP, (second,))]
    k.review(at(100))
    [ready] = k.consent(at(101))
    assert isinstance(ready, VisitReady)
    assert (ready.patient_ref, ready.observations) == ("p-2", (second,))


def test_a_replay_within_the_clock_tolerance_of_the_next_visit_is_still_refused() -> None:
    """A cuff 4 s fast: its reading says 4 s after it arrived. The next visit starts 2 s later,
    so by time alone the replay would fit the new visit; the station remembers the record."""
    k = kiosk()
    k.identify("p-1", at(0))
    k.start(at(10))
    fast = sys_bp(at(24))
    assert k.measured(BP, [fast], at(20)) == [Accepted("visit-1", BP, (fast,))]
    k.cancel(at(21))
    k.identify("p-2", at(21))
    k.start(at(22))
    assert quarantined(k.measured(BP, [fast], at(30))) == [QuarantineReason.BOUND_BEFORE]
    assert k.readings() == ()


def test_a_patient_who_walks_away_is_warned_then_wiped() -> None:
    t = KioskTimeouts()
    k = kiosk(timeouts=t)
    k.identify("p-1", at(0))
    k.start(at(10))
    k.measured(BP, [sys_bp(at(20))], at(21))
    end = at(10) + t.measuring
    assert k.tick(end - t.warn_before - timedelta(seconds=1)) == []
    assert k.tick(end - t.warn_before) == [Warn("visit-1", KioskState.MEASURING, end)]
    assert k.tick(end - timedelta(seconds=1)) == []  # warned once
    out = k.tick(end)
    assert out == [Disarm("visit-1", STATION), Wipe("visit-1", "timed out in measuring")]
    assert k.readings() == ()
    assert quarantined(k.measured(BP, [sys_bp(end)], end)) == [QuarantineReason.NO_OPEN_VISIT]


def test_a_touch_restarts_the_current_state_s_clock() -> None:
    t = KioskTimeouts()
    k = kiosk(timeouts=t)
    k.identify("p-1", at(0))
    k.touch(at(0) + t.identified - timedelta(seconds=10))
    assert k.tick(at(0) + t.identified) == []
    assert k.state is KioskState.IDENTIFIED


def test_only_armed_devices_of_the_open_visit_in_measuring_bind() -> None:
    k = kiosk()
    assert quarantined(k.measured(BP, [sys_bp(at(0))], at(1))) == [QuarantineReason.NO_OPEN_VISIT]
    k.identify("p-1", at(0))
    assert quarantined(k.measured(BP, [sys_bp(at(5))], at(6))) == [QuarantineReason.NOT_MEASURING]
    k.start(at(10), frozenset({SCALE}))
    assert quarantined(k.measured(BP, [sys_bp(at(20))], at(21))) == [
        QuarantineReason.DEVICE_NOT_ARMED
    ]
    k.review(at(30))
    assert quarantined(k.measured(SCALE, [sys_bp(at(29))], at(31))) == [
        QuarantineReason.NOT_MEASURING
    ]


def test_a_reading_from_the_future_is_not_placed_in_the_visit() -> None:
    t = KioskTimeouts()
    k = kiosk(timeouts=t)
    k.identify("p-1", at(0))
    k.start(at(10))
    ok = sys_bp(at(20) + t.clock_tolerance)  # within the clocks' tolerance
    ahead = sys_bp(at(20) + t.clock_tolerance + timedelta(milliseconds=1))
    out = k.measured(BP, [ok, ahead], at(20))
    assert quarantined(out) == [QuarantineReason.TAKEN_AFTER_ARRIVAL]
    assert k.readings() == (ok,)


def test_taken_exactly_when_armed_binds_and_a_resend_counts_once() -> None:
    k = kiosk()
    k.identify("p-1", at(0))
    k.start(at(10))
    r = sys_bp(at(10), key="rec:x")
    assert k.measured(BP, [r], at(11)) == [Accepted("visit-1", BP, (r,))]
    assert k.measured(BP, [sys_bp(at(10), key="rec:x")], at(12)) == []
    assert len(k.readings()) == 1


def test_repeat_arms_again_and_what_came_between_is_quarantined() -> None:
    k = kiosk()
    k.identify("p-1", at(0))
    k.start(at(10))
    k.measured(BP, [sys_bp(at(20), 150.0)], at(21))
    k.review(at(30))
    assert k.repeat(frozenset({BP}), at(40)) == [Arm("visit-1", frozenset({BP}), at(40))]
    between = sys_bp(at(35))  # measured while the visit was in review
    again = sys_bp(at(60), 138.0)
    out = k.measured(BP, [between, again], at(61))
    assert quarantined(out) == [QuarantineReason.TAKEN_BEFORE_ARMED]
    assert [o.value for o in k.readings()] == [150.0, 138.0]
    assert quarantined(k.measured(SCALE, [sys_bp(at(62))], at(62))) == [
        QuarantineReason.DEVICE_NOT_ARMED
    ]


def test_steps_out_of_order_are_refused_with_a_reason() -> None:
    k = kiosk()
    with pytest.raises(KioskError, match="cannot start measuring in idle"):
        k.start(at(0))
    k.identify("p-1", at(0))
    with pytest.raises(KioskError, match="a visit is open"):
        k.identify("p-2", at(1))  # one visit at a time: no two visits race for a device
    with pytest.raises(KioskError, match="not devices of this station"):
        k.start(at(2), frozenset({"ecg"}))
    k.start(at(3))
    k.review(at(4))
    with pytest.raises(KioskError, match="nothing measured"):
        k.consent(at(5))
    k.repeat(frozenset({BP}), at(6))
    k.measured(BP, [sys_bp(at(7))], at(7))
    k.review(at(8))
    k.consent(at(9))
    with pytest.raises(KioskError, match="being sent"):
        k.cancel(at(10))
    with pytest.raises(KioskError, match="confirmation for visit 'visit-9'"):
        k.sent("visit-9", at(10))
    with pytest.raises(ValueError, match="longer than warn_before"):
        KioskTimeouts(review=timedelta(seconds=30))


# -- property: no reading ever reaches a visit it does not belong to ---------------------------

_OPS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "identify",
                "start",
                "start-bp",
                "measure",
                "review",
                "repeat",
                "consent",
                "sent",
                "cancel",
                "tick",
                "replay",
            ]
        ),
        st.integers(0, 400),  # seconds to advance
        st.integers(-600, 30),  # reading taken this many seconds from now
        st.sampled_from(sorted(STATION)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(_OPS)
def test_every_reading_is_in_exactly_one_visit_or_quarantined(
    ops: list[tuple[str, int, int, str]],
) -> None:
    k = kiosk()
    now = T0
    handed: list[tuple[Observation, str | None, str]] = []  # reading, open visit, device
    history: list[Observation] = []
    armed: dict[str, dict[str, datetime]] = {}  # visit -> device -> armed at (model)
    accepted: dict[int, str] = {}
    quarantined_ids: set[int] = set()
    sent: dict[str, tuple[Observation, ...]] = {}
    for op, advance, offset, device in ops:
        now += timedelta(seconds=advance)
        try:
            if op == "identify":
                out = k.identify(f"p-{now.timestamp():.0f}", now)
            elif op in ("start", "start-bp"):
                out = k.start(now, frozenset({BP}) if op == "start-bp" else None)
            elif op == "review":
                out = k.review(now)
            elif op == "repeat":
                out = k.repeat(frozenset({device}), now)
            elif op == "consent":
                out = k.consent(now)
            elif op == "sent":
                out = k.sent(k.visit_ref or "none", now)
            elif op == "cancel":
                out = k.cancel(now)
            elif op == "tick":
                out = k.tick(now)
            else:
                batch = (
                    list(history[-3:])
                    if op == "replay" and history
                    else [sys_bp(now + timedelta(seconds=offset))]
                )
                history.extend(b for b in batch if b not in history)
                out = k.measured(device, batch, now)
                for b in batch:
                    handed.append((b, k.visit_ref, device))
        except KioskError:
            continue
        for o in out:
            if isinstance(o, Arm):
                armed.setdefault(o.visit_ref, {}).update(dict.fromkeys(o.device_ids, o.at))
            elif isinstance(o, Accepted):
                for r in o.observations:
                    # bound once, only to the open visit, by a device armed for it, after arming
                    assert id(r) not in accepted
                    accepted[id(r)] = o.visit_ref
                    assert o.visit_ref == k.visit_ref
                    assert r.effective_time >= armed[o.visit_ref][o.device_id]
                    assert r.effective_time <= now + k.timeouts.clock_tolerance
            elif isinstance(o, Quarantine):
                assert o.observations
                quarantined_ids.update(id(r) for r in o.observations)
            elif isinstance(o, VisitReady):
                assert o.visit_ref not in sent
                sent[o.visit_ref] = o.observations
                for r in o.observations:
                    assert accepted[id(r)] == o.visit_ref
            elif isinstance(o, Wipe):
                assert k.readings() == ()
    # nothing lost: each reading handed over was bound, quarantined, or is a resend of one
    # the same visit already holds
    for r, _visit, _device in handed:
        assert id(r) in accepted or id(r) in quarantined_ids
    # no reading in two visits' messages
    seen: set[int] = set()
    for obs in sent.values():
        for r in obs:
            assert id(r) not in seen
            seen.add(id(r))
