"""Board simulators against BridgeHost over an in-memory link with a fake clock; PEF curves."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_profiles.events import EventKind
from device_profiles.observation import AbsentReason
from device_profiles.serial.sim import SerialSim
from firmware_bridges import messages as m
from firmware_bridges.framing import encode_frame
from firmware_bridges.host import (
    BlowCurve,
    BoardBack,
    BoardError,
    BoardHello,
    BoardSilent,
    BridgeHost,
    BridgeProblem,
    DispenserReport,
    Heartbeat,
    HostEvent,
    PeripheralMeasurement,
    ProblemKind,
    Transmit,
)
from firmware_bridges.pef_curves import END_FLOW_L_S, PefCurve, pef_flow_curve
from firmware_bridges.sim_boards import (
    BoardFaults,
    BoardOptions,
    DispenserSim,
    DoseSlot,
    KioskPeripheralSim,
    KioskReading,
    PefBoardSim,
)

T0 = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)
Wall = Callable[[], datetime]


class Link:
    """A simulator and a BridgeHost joined in memory; one fake clock drives both (no sleeping).

    Time jumps from deadline to deadline (the simulator's and the host's), as the pty runner
    does. ``lose`` decides which host transmissions never reach the board.
    """

    def __init__(
        self,
        make_sim: Callable[[Wall], SerialSim],
        *,
        host: BridgeHost | None = None,
        lose: Callable[[m.BridgeMessage], bool] = lambda _: False,
    ) -> None:
        self.t = 0.0
        self.sim = make_sim(self.wall)
        self.host = host or BridgeHost()
        self.lose = lose
        self.events: list[tuple[float, HostEvent]] = []
        self.rx_times: list[float] = []

    def wall(self) -> datetime:
        return T0 + timedelta(seconds=self.t)

    def ms(self) -> int:
        return T0_MS + round(self.t * 1000)

    def run(self, until: float) -> list[HostEvent]:
        first = len(self.events)
        for _ in range(100_000):
            deadlines = [self.sim.next_deadline()]
            host_ms = self.host.next_deadline_ms()
            if host_ms is not None:
                deadlines.append((host_ms - T0_MS) / 1000)
            due = [d for d in deadlines if d is not None]
            t = max(min(due), self.t) if due else math.inf
            if t > until:
                break
            self.t = t
            self.step()
        else:
            raise AssertionError("the link made no progress")
        self.t = until
        return [e for _, e in self.events[first:]]

    def step(self) -> None:
        data = self.sim.poll(self.t)
        out = self.host.feed(data, self.ms()) if data else []
        if data:
            self.rx_times.append(self.t)
        out += self.host.poll(self.ms())
        for e in out:
            self.events.append((self.t, e))
            if isinstance(e, Transmit) and not self.lose(e.message):
                self.sim.receive(e.data, self.t)


E = TypeVar("E")


def of(kind: type[E], events: list[HostEvent]) -> list[E]:
    return [e for e in events if isinstance(e, kind)]


def sent(events: list[HostEvent]) -> list[m.BridgeMessage]:
    return [e.message for e in events if isinstance(e, Transmit)]


def as_sent(curve: PefCurve) -> tuple[float, ...]:
    return tuple(round(f * 1000) / 1000 for f in curve.flow_l_s)


# ------------------------------------------------------------------ PEF board

C1 = pef_flow_curve(pef_l_min=420, fvc_l=3.0, noise_l_s=0.05, seed=1)
C2 = pef_flow_curve(pef_l_min=610, fvc_l=3.5, artefact="cough")


def pef_board(faults: BoardFaults | None = None, **kw: object) -> Callable[[Wall], PefBoardSim]:
    def make(wall: Wall) -> PefBoardSim:
        return PefBoardSim(
            "PEF-1",
            blows=[(1.0, C1), (8.0, C2)],
            wall_clock=wall,
            options=BoardOptions(faults=faults or BoardFaults()),
            **kw,  # type: ignore[arg-type]
        )

    return make


def test_blows_arrive_whole_exact_and_at_the_sample_rate() -> None:
    link = Link(pef_board())
    events = link.run(30)
    curves = of(BlowCurve, events)
    assert [c.blow_id for c in curves] == [1, 2]
    assert curves[0].flow_l_s == as_sent(C1)
    assert curves[1].flow_l_s == as_sent(C2)
    assert curves[0].board_time == T0 + timedelta(seconds=1)
    assert curves[0].rtc_offset_ms == 0
    assert curves[1].board_peak_l_s == pytest.approx(C2.true_pef_l_min / 60, abs=0.001)
    assert not of(BridgeProblem, events)
    # streamed live: one frame per 50 samples, each as its last sample is measured
    duration = len(C1.flow_l_s) / 1000
    live = [t for t in link.rx_times if 1.0 < t <= 1.0 + duration]
    assert len(live) >= len(C1.flow_l_s) // 50 - 1
    (t_first,) = [t for t, e in link.events if isinstance(e, BlowCurve) and e.blow_id == 1]
    assert t_first == pytest.approx(1.0 + duration)
    assert list(link.sim.acked) == [(m.MsgType.BLOW_END, 1), (m.MsgType.BLOW_END, 2)]  # type: ignore[attr-defined]


def test_a_lost_chunk_is_asked_for_and_the_blow_delivered_once() -> None:
    # frame 1 HELLO, 2 HEARTBEAT (clock set), 3 BLOW_START, 4 and 5 the first chunks
    link = Link(pef_board(BoardFaults(drop_frames=frozenset({5}))))
    events = link.run(30)
    assert sent(events).count(m.ResendBlow(blow_id=1)) == 1
    (problem,) = of(BridgeProblem, events)
    assert problem.kind is ProblemKind.BLOW_INCOMPLETE
    assert "sample index gap: expected 50, got 100" in problem.reason
    assert [c.blow_id for c in of(BlowCurve, events)] == [1, 2]
    assert of(BlowCurve, events)[0].flow_l_s == as_sent(C1)
    assert link.sim.resends == 1  # type: ignore[attr-defined]
    assert link.host.counters.seq_gaps == 1


def test_a_lost_ack_brings_the_blow_again_and_it_is_only_acked() -> None:
    lost: list[m.BridgeMessage] = []

    def lose_first_ack(msg: m.BridgeMessage) -> bool:
        if isinstance(msg, m.Ack) and not lost:
            lost.append(msg)
            return True
        return False

    link = Link(pef_board(), lose=lose_first_ack)
    events = link.run(30)
    assert [c.blow_id for c in of(BlowCurve, events)] == [1, 2]
    assert sent(events).count(m.Ack(acked_type=m.MsgType.BLOW_END, event_id=1)) == 2
    assert link.host.counters.duplicates == 1
    assert link.sim.resends == 1  # type: ignore[attr-defined]


def test_duplicated_events_are_emitted_once() -> None:
    link = Link(pef_board(BoardFaults(duplicate_every=1)))
    events = link.run(30)
    assert [c.blow_id for c in of(BlowCurve, events)] == [1, 2]
    assert link.host.counters.duplicates == 2


def test_a_saturated_sensor_is_flagged_not_hidden() -> None:
    fast = pef_flow_curve(pef_l_min=2100, fvc_l=6.0)
    link = Link(lambda wall: PefBoardSim("PEF-2", blows=[(0.5, fast)], wall_clock=wall))
    (curve,) = of(BlowCurve, link.run(20))
    assert curve.saturated
    assert max(curve.flow_l_s) == 32.767


def test_resend_of_a_blow_the_board_no_longer_holds_is_an_error() -> None:
    link = Link(pef_board())
    link.run(3)
    link.sim.receive(m.encode_message(m.ResendBlow(blow_id=99), 500), link.t)
    errors = of(BoardError, link.run(6))
    assert errors[0].code is m.BoardErrorCode.BLOW_NOT_BUFFERED
    assert errors[0].ref == 99


def test_an_unknown_host_message_is_answered_with_an_error() -> None:
    link = Link(pef_board())
    link.run(0.5)
    link.sim.receive(encode_frame(0x6A, 77, b""), link.t)
    (error,) = of(BoardError, link.run(0.6))
    assert (error.code, error.ref) == (m.BoardErrorCode.UNKNOWN_MESSAGE, 0x6A)


# ------------------------------------------------------------------ dispenser


def dispenser(
    behaviour: object = "on_time",
    *,
    n: int = 3,
    options: BoardOptions | None = None,
    **kw: object,
) -> Callable[[Wall], DispenserSim]:
    schedule = [DoseSlot(dose_id=f"d{i}", scheduled=T0 + timedelta(hours=1 + i)) for i in range(n)]

    def make(wall: Wall) -> DispenserSim:
        return DispenserSim(
            "DISP-7",
            schedule=schedule,
            behaviour=behaviour,  # type: ignore[arg-type]
            wall_clock=wall,
            options=options,
            **kw,  # type: ignore[arg-type]
        )

    return make


@pytest.mark.parametrize(
    ("behaviour", "kind", "after"),
    [
        ("on_time", EventKind.DOSE_TAKEN, timedelta(minutes=5)),
        ("late", EventKind.DOSE_TAKEN_LATE, timedelta(minutes=20)),
        ("misses", EventKind.DOSE_MISSED, timedelta(minutes=30)),
    ],
)
def test_dispenser_behaviour_gives_the_right_event_at_the_right_time(
    behaviour: str, kind: EventKind, after: timedelta
) -> None:
    link = Link(dispenser(behaviour, n=1, late_after=timedelta(minutes=10)))
    reports = of(DispenserReport, link.run(2 * 3600))
    due = T0 + timedelta(hours=1)
    assert [(r.kind, r.dose_id, r.actual) for r in reports] == [
        (EventKind.DOSE_DUE, "d0", due),
        (EventKind.DOSE_DISPENSED, "d0", due),
        (EventKind.LOW_STOCK, None, due),
        (EventKind.ROLL_EMPTY, None, due),
        (kind, "d0", due + after),
    ]
    assert all(r.scheduled == due for r in reports if r.dose_id)
    assert reports[-1].details == {"doses_left": 0}
    assert len({r.seq for r in reports}) == len(reports)


def test_missed_window_is_per_client() -> None:
    link = Link(dispenser("misses", n=1, missed_window=timedelta(hours=2)))
    (missed,) = [
        r
        for r in of(DispenserReport, link.run(4 * 3600))
        if r.dose_id and r.kind is EventKind.DOSE_MISSED
    ]
    assert missed.actual == T0 + timedelta(hours=3)


def test_a_noisy_link_delivers_every_dispenser_event_exactly_once() -> None:
    faults = BoardFaults(noise_every=3, corrupt_every=7, drop_frame_every=11, seed=5)
    link = Link(
        dispenser(
            ["on_time", "late", "misses"],
            stock=6,
            help_requests=[T0 + timedelta(minutes=20)],
            power_outages=[(T0 + timedelta(minutes=30), T0 + timedelta(minutes=40))],
            options=BoardOptions(has_battery=True, faults=faults),
        )
    )
    events = link.run(4 * 3600)
    reports = sorted(of(DispenserReport, events), key=lambda r: r.seq)
    assert len({r.seq for r in reports}) == len(reports)  # each once
    assert [r.kind for r in reports] == [
        EventKind.HELP_REQUEST,
        EventKind.POWER_LOST,
        EventKind.POWER_RESTORED,
        EventKind.DOSE_DUE,
        EventKind.DOSE_DISPENSED,
        EventKind.DOSE_TAKEN,
        EventKind.DOSE_DUE,
        EventKind.DOSE_DISPENSED,
        EventKind.DOSE_TAKEN_LATE,
        EventKind.DOSE_DUE,
        EventKind.DOSE_DISPENSED,
        EventKind.LOW_STOCK,
        EventKind.DOSE_MISSED,
    ]
    assert of(BridgeProblem, events)  # the faults were real
    assert link.host.framing.crc_errors > 0
    on_battery = [h for t, h in link.events if isinstance(h, Heartbeat) and 30 * 60 < t < 40 * 60]
    assert on_battery
    assert all(m.BoardStatus.ON_BATTERY in h.status for h in on_battery)
    assert link.sim.acked  # type: ignore[attr-defined]
    assert not link.sim._pending  # type: ignore[attr-defined]


def test_a_fast_board_clock_is_set_and_queued_events_are_corrected() -> None:
    options = BoardOptions(
        has_battery=True,
        rtc_offset=timedelta(minutes=7),
        faults=BoardFaults(drop_frames=frozenset({1})),  # the first HELLO is lost
    )
    link = Link(dispenser(n=0, help_requests=[T0 + timedelta(seconds=0.5)], options=options))
    events = link.run(30)
    (board_hello,) = of(BoardHello, events)
    assert board_hello.rtc_offset_ms == 7 * 60 * 1000
    (help_request,) = of(DispenserReport, events)
    assert help_request.actual == T0  # stamped 07:07:00.5 by the fast clock, corrected by -7 min
    assert [h.rtc_offset_ms for h in of(Heartbeat, events)][-1] == 0


def test_host_restart_asks_the_board_to_say_hello_again() -> None:
    link = Link(dispenser(n=1))
    link.run(60)
    link.host = BridgeHost()
    events = link.run(2 * 3600)
    assert of(BridgeProblem, events)[0].kind is ProblemKind.BEFORE_HELLO
    assert m.HelloRequest() in sent(events)
    assert of(BoardHello, events)
    assert EventKind.DOSE_TAKEN in [r.kind for r in of(DispenserReport, events)]


def test_schedule_parameters_are_checked() -> None:
    with pytest.raises(ValueError, match="missed_window"):
        dispenser(missed_window=timedelta(minutes=2))(lambda: T0)
    with pytest.raises(ValueError, match="one behaviour per dose"):
        dispenser(["late"], n=2)(lambda: T0)
    with pytest.raises(m.BridgeMessageError, match="board_id"):
        PefBoardSim("no spaces allowed", blows=[], wall_clock=lambda: T0)


# ------------------------------------------------------------------ kiosk peripheral


def test_kiosk_readings_exact_with_error_and_limit() -> None:
    readings: list[tuple[float, str, float | None] | KioskReading] = [
        (1.0, "body.height", 175.5),
        (2.0, "body.weight", None),
        KioskReading(
            at_s=3.0, measure="body.weight", value=250, status=m.MeasurementStatus.ABOVE_RANGE
        ),
    ]
    link = Link(lambda wall: KioskPeripheralSim("SCALE-1", measurements=readings, wall_clock=wall))
    got = of(PeripheralMeasurement, link.run(10))
    assert [(p.measure, p.value, p.unit, p.comparator, p.absent_reason) for p in got] == [
        ("body.height", 175.5, "cm", None, None),
        ("body.weight", None, "kg", None, AbsentReason.ERROR),
        ("body.weight", 250.0, "kg", ">", None),
    ]
    assert got[0].at == T0 + timedelta(seconds=1)  # no RTC: the host set its clock at HELLO


def test_board_silent_then_back_after_replugging() -> None:
    link = Link(
        lambda wall: KioskPeripheralSim(
            "SCALE-1",
            measurements=[],
            wall_clock=wall,
            options=BoardOptions(faults=BoardFaults(unplug_after_frames=3)),
        )
    )
    events = link.run(60)
    assert link.sim.unplugged
    (silent,) = of(BoardSilent, events)
    assert silent.board_id == "SCALE-1"
    assert link.sim.next_deadline() is None
    link.sim.replug(link.t)
    events = link.run(70)
    assert events[0] == BoardBack(board_id="SCALE-1", silent_ms=60_000 - 5_000)
    assert of(BoardHello, events)
    assert not link.sim.unplugged  # the fault acts once


def test_a_blow_cut_by_an_unplug_is_sent_again_whole_after_replugging() -> None:
    link = Link(pef_board(BoardFaults(unplug_after_frames=10)))  # inside the first blow
    events = link.run(5)
    assert link.sim.unplugged
    assert not of(BlowCurve, events)
    link.sim.replug(link.t)
    events = link.run(30)
    assert [c.blow_id for c in of(BlowCurve, events)] == [1, 2]
    assert of(BlowCurve, events)[0].flow_l_s == as_sent(C1)


def test_an_idle_board_wakes_only_for_its_heartbeat() -> None:
    link = Link(dispenser(n=0))
    link.run(12)
    deadline = link.sim.next_deadline()
    assert deadline is not None
    assert 12 < deadline <= 15


# ------------------------------------------------------------------ PEF curves


@settings(max_examples=40)
@given(
    pef=st.floats(100, 900),
    ttp=st.floats(60, 150),
    fvc=st.floats(3, 6),
    rate=st.sampled_from([500, 1000, 2000]),
    artefact=st.sampled_from(["none", "cough", "early_stop", "hesitation"]),
    noise=st.floats(0.01, 0.3),
    seed=st.integers(0, 100),
)
def test_true_pef_is_the_max_of_the_noise_free_curve(
    pef: float, ttp: float, fvc: float, rate: int, artefact: str, noise: float, seed: int
) -> None:
    args = {"pef_l_min": pef, "time_to_peak_ms": ttp, "fvc_l": fvc, "sample_rate_hz": rate}
    clean = pef_flow_curve(**args, artefact=artefact)  # type: ignore[arg-type]
    noisy = pef_flow_curve(**args, artefact=artefact, noise_l_s=noise, seed=seed)  # type: ignore[arg-type]
    assert noisy.true_pef_l_min == clean.true_pef_l_min == max(clean.flow_l_s) * 60
    assert noisy.flow_l_s != clean.flow_l_s
    assert len(noisy.flow_l_s) == len(clean.flow_l_s)
    if artefact == "none":
        assert clean.true_pef_l_min == pytest.approx(pef, rel=1e-3)
        assert abs(clean.time_to_peak_ms - ttp) <= 1000 / rate / 2 + 1e-9
        assert clean.volume_l == pytest.approx(fvc, rel=0.005)


def test_noise_is_reproducible_by_seed() -> None:
    a = pef_flow_curve(pef_l_min=500, noise_l_s=0.1, seed=3)
    assert a == pef_flow_curve(pef_l_min=500, noise_l_s=0.1, seed=3)
    assert a.flow_l_s != pef_flow_curve(pef_l_min=500, noise_l_s=0.1, seed=4).flow_l_s


def test_artefacts_have_their_shape() -> None:
    base = pef_flow_curve(pef_l_min=500)
    cough = pef_flow_curve(pef_l_min=500, artefact="cough")
    after_peak = cough.flow_l_s[cough.peak_index :]
    rises = [b - a for a, b in itertools.pairwise(after_peak)]
    assert max(rises) > 0  # a second peak after the first
    stop = pef_flow_curve(pef_l_min=500, artefact="early_stop")
    assert stop.volume_l == pytest.approx(0.5 * 4.0, rel=0.01)
    last = max(i for i, f in enumerate(stop.flow_l_s) if f > 0)
    assert stop.flow_l_s[last] > 20 * END_FLOW_L_S  # cut, not a gentle end
    slow = pef_flow_curve(pef_l_min=500, artefact="hesitation")
    assert slow.time_to_peak_ms == pytest.approx(base.time_to_peak_ms + 240)
    assert slow.flow_l_s[slow.onset_index + 100] == pytest.approx(0.2 * 500 / 60)
    assert base.flow_l_s[: base.onset_index + 1] == (0.0,) * (base.onset_index + 1)


@pytest.mark.parametrize(
    "kw",
    [
        {"pef_l_min": 0},
        {"pef_l_min": math.nan},
        {"pef_l_min": 500, "fvc_l": 0.5},
        {"pef_l_min": 500, "time_to_peak_ms": 0.1},
        {"pef_l_min": 500, "noise_l_s": -1},
    ],
)
def test_impossible_curves_are_refused(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"must|too small|shorter"):
        pef_flow_curve(**kw)  # type: ignore[arg-type]
