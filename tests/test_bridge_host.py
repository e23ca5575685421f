"""BridgeHost fed hand-built board frames: HELLO, ACK ordering, dedupe, blows, problems, silence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_profiles.events import EventKind
from device_profiles.observation import AbsentReason
from firmware_bridges import messages as m
from firmware_bridges.framing import encode_frame
from firmware_bridges.host import (
    HEARTBEAT_TIMEOUT_MS,
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

T0 = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)
K = m.BoardKind


class Board:
    """Frames as a board would send them, with its own running frame sequence number."""

    def __init__(self) -> None:
        self.seq = 0

    def __call__(self, *msgs: m.BridgeMessage) -> bytes:
        out = b""
        for msg in msgs:
            out += m.encode_message(msg, self.seq)
            self.seq += 1
        return out


def hello(board_id: str = "B-1", kind: m.BoardKind = K.DISPENSER, rtc: int = 0) -> m.Hello:
    return m.Hello(
        kind=kind,
        protocol_version=1,
        flags=m.HelloFlags.HAS_RTC,
        board_id=board_id,
        firmware="fw-2.1",
        rtc_unix_ms=rtc,
        sample_rate_hz=1000 if kind is K.PEF_SENSOR else 0,
    )


def connected(kind: m.BoardKind = K.DISPENSER, **host_kw: object) -> tuple[BridgeHost, Board]:
    host, board = BridgeHost(**host_kw), Board()  # type: ignore[arg-type]
    out = host.feed(board(hello(kind=kind)), T0_MS)
    assert isinstance(out[0], BoardHello)
    assert out[0].accepted
    return host, board


def sent(events: list[HostEvent]) -> list[m.BridgeMessage]:
    return [e.message for e in events if isinstance(e, Transmit)]


def dispenser_event(seq: int, kind: EventKind = EventKind.DOSE_TAKEN) -> m.DispenserEvent:
    return m.DispenserEvent(
        event_seq=seq,
        kind=kind,
        dose_id="morning-1",
        scheduled_unix_s=T0_MS // 1000,
        actual_unix_s=T0_MS // 1000 + 120,
        doses_left=12,
    )


def ack(msg_type: m.MsgType, event_id: int) -> m.Ack:
    return m.Ack(acked_type=msg_type, event_id=event_id)


# ------------------------------------------------------------------ HELLO


def test_hello_is_answered_with_the_host_time_and_reports_the_clock_offset() -> None:
    host = BridgeHost()
    out = host.feed(Board()(hello(rtc=T0_MS - 90_000)), T0_MS)
    assert out == [
        BoardHello(
            board_id="B-1",
            kind=K.DISPENSER,
            firmware="fw-2.1",
            protocol_version=1,
            rtc_offset_ms=-90_000,
            capabilities=out[0].capabilities,  # type: ignore[union-attr]
            accepted=True,
        ),
        out[1],
    ]
    assert sent(out) == [m.HelloAck(host_unix_ms=T0_MS, accepted=True)]
    assert host.board_id == "B-1"


def test_frames_before_hello_ask_for_a_hello_at_most_once_a_second() -> None:
    host, board = BridgeHost(), Board()
    first = host.feed(
        board(m.Heartbeat(uptime_ms=1, status=m.BoardStatus(0), queued_events=0, rtc_unix_ms=0)),
        T0_MS,
    )
    assert [type(e) for e in first] == [BridgeProblem, Transmit]
    assert first[0].kind is ProblemKind.BEFORE_HELLO  # type: ignore[union-attr]
    assert sent(first) == [m.HelloRequest()]
    again = host.feed(board(dispenser_event(1)), T0_MS + 500)
    assert again == []
    later = host.feed(board(dispenser_event(1)), T0_MS + 1000)
    assert sent(later) == [m.HelloRequest()]
    assert host.counters.before_hello == 3
    assert host.counters.events == 0


def test_a_board_other_than_the_configured_one_is_refused() -> None:
    host, board = BridgeHost(expected_board_id="B-2", expected_kind=K.DISPENSER), Board()
    out = host.feed(board(hello("B-1")), T0_MS)
    assert isinstance(out[0], BoardHello)
    assert not out[0].accepted
    assert isinstance(out[1], BridgeProblem)
    assert out[1].kind is ProblemKind.REFUSED_BOARD
    assert "'B-1'" in out[1].reason
    assert sent(out) == [m.HelloAck(host_unix_ms=T0_MS, accepted=False)]
    assert host.board_id is None
    later = host.feed(board(dispenser_event(1)), T0_MS + 10)
    assert not any(isinstance(e, DispenserReport) for e in later)


# ------------------------------------------------------------------ events, ACKs, dedupe


def test_each_event_comes_before_its_ack_and_duplicates_are_only_acked() -> None:
    host, board = connected()
    out = host.feed(board(dispenser_event(7), dispenser_event(8, EventKind.DOSE_MISSED)), T0_MS)
    assert [type(e) for e in out] == [DispenserReport, Transmit, DispenserReport, Transmit]
    assert sent(out) == [ack(m.MsgType.DISPENSER_EVENT, 7), ack(m.MsgType.DISPENSER_EVENT, 8)]
    report = out[0]
    assert report == DispenserReport(
        board_id="B-1",
        seq=7,
        kind=EventKind.DOSE_TAKEN,
        dose_id="morning-1",
        scheduled=T0,
        actual=T0 + timedelta(minutes=2),
        rtc_offset_ms=None,
        details={"doses_left": 12},
        received_at=T0,
    )
    again = host.feed(board(dispenser_event(7)), T0_MS + 5)
    assert again == [Transmit(data=again[0].data, message=ack(m.MsgType.DISPENSER_EVENT, 7))]  # type: ignore[union-attr]
    assert host.counters.duplicates == 1
    assert host.counters.events == 2


def test_dedupe_memory_is_bounded() -> None:
    host, board = connected(dedupe_window=4)
    for seq in range(1, 7):
        host.feed(board(dispenser_event(seq)), T0_MS)
    forgotten = host.feed(board(dispenser_event(1)), T0_MS)
    remembered = host.feed(board(dispenser_event(6)), T0_MS)
    assert isinstance(forgotten[0], DispenserReport)  # at-least-once: the cloud dedupes it
    assert [type(e) for e in remembered] == [Transmit]


def test_kiosk_measurement_limits_and_errors_are_never_numbers() -> None:
    host, board = connected(K.KIOSK_PERIPHERAL)
    high = m.Measurement(
        seq=1,
        measure="body.weight",
        status=m.MeasurementStatus.ABOVE_RANGE,
        exponent=0,
        mantissa=250,
        rtc_unix_ms=T0_MS,
    )
    error = m.Measurement(
        seq=2,
        measure="body.height",
        status=m.MeasurementStatus.ERROR,
        exponent=0,
        mantissa=0,
        rtc_unix_ms=0,
    )
    out = host.feed(board(high, error), T0_MS + 1000)
    got = [e for e in out if isinstance(e, PeripheralMeasurement)]
    assert (got[0].value, got[0].comparator, got[0].unit, got[0].at) == (250.0, ">", "kg", T0)
    assert (got[1].value, got[1].absent_reason, got[1].unit, got[1].at) == (
        None,
        AbsentReason.ERROR,
        "cm",
        None,
    )
    assert sent(out) == [ack(m.MsgType.MEASUREMENT, 1), ack(m.MsgType.MEASUREMENT, 2)]


def test_heartbeat_measures_the_clock_offset_and_set_time_forgets_it() -> None:
    host, board = connected()
    beat = m.Heartbeat(
        uptime_ms=5000,
        status=m.BoardStatus.ON_BATTERY,
        queued_events=2,
        rtc_unix_ms=T0_MS + 6500,
    )
    (hb,) = host.feed(board(beat), T0_MS + 5000)
    assert hb == Heartbeat(
        board_id="B-1",
        uptime_ms=5000,
        status=m.BoardStatus.ON_BATTERY,
        queued_events=2,
        rtc_offset_ms=1500,
    )
    (t,) = host.set_time(T0_MS + 6000)
    assert isinstance(t, Transmit)
    assert t.message == m.SetTime(host_unix_ms=T0_MS + 6000)
    out = host.feed(board(dispenser_event(1)), T0_MS + 6100)
    assert isinstance(out[0], DispenserReport)
    assert out[0].rtc_offset_ms is None


def test_board_error_is_reported() -> None:
    host, board = connected(K.PEF_SENSOR)
    err = m.ErrorReport(code=m.BoardErrorCode.BLOW_NOT_BUFFERED, ref=9, text="gone")
    assert host.feed(board(err), T0_MS) == [
        BoardError(board_id="B-1", code=m.BoardErrorCode.BLOW_NOT_BUFFERED, ref=9, text="gone")
    ]


# ------------------------------------------------------------------ blows


def blow(blow_id: int, samples: list[int], chunk: int = 4) -> list[m.BridgeMessage]:
    out: list[m.BridgeMessage] = [
        m.BlowStart(blow_id=blow_id, sample_rate_hz=1000, start_tick_us=123, rtc_unix_ms=T0_MS)
    ]
    for i in range(0, len(samples), chunk):
        part = tuple(samples[i : i + chunk])
        out.append(m.FlowSamples(blow_id=blow_id, first_index=i, samples=part))
    out.append(
        m.BlowEnd(
            blow_id=blow_id,
            total_samples=len(samples),
            end_reason=m.EndReason.COMPLETE,
            flags=m.BlowFlags(0),
            board_peak_ml_s=max(samples),
        )
    )
    return out


SAMPLES = [0, 120, 2500, 8000, 8300, 7000, 5100, 3000, 1500, 700, 120, -15, 0]


def test_a_blow_is_assembled_exactly_and_acked_after_it() -> None:
    host, board = connected(K.PEF_SENSOR)
    out = host.feed(board(*blow(3, SAMPLES)), T0_MS + 2000)
    assert [type(e) for e in out] == [BlowCurve, Transmit]
    curve = out[0]
    assert curve == BlowCurve(
        board_id="B-1",
        blow_id=3,
        sample_rate_hz=1000,
        start_tick_us=123,
        flow_l_s=tuple(s / 1000 for s in SAMPLES),
        end_reason=m.EndReason.COMPLETE,
        board_peak_l_s=8.3,
        saturated=False,
        sensor_fault=False,
        board_time=T0,
        rtc_offset_ms=None,
        received_at=T0 + timedelta(seconds=2),
    )
    assert sent(out) == [ack(m.MsgType.BLOW_END, 3)]


def test_a_gap_asks_for_the_whole_blow_and_the_resend_completes_it_once() -> None:
    host, board = connected(K.PEF_SENSOR)
    frames = blow(4, SAMPLES)
    wire = [board(f) for f in frames]
    out = host.feed(b"".join(wire[:2] + wire[3:]), T0_MS)  # the second chunk is lost
    assert [type(e) for e in out] == [BridgeProblem, Transmit]
    problem = out[0]
    assert problem.kind is ProblemKind.BLOW_INCOMPLETE  # type: ignore[union-attr]
    assert "expected 4, got 8" in problem.reason  # type: ignore[union-attr]
    assert sent(out) == [m.ResendBlow(blow_id=4)]
    resent = host.feed(board(*frames), T0_MS + 100)
    assert [type(e) for e in resent] == [BlowCurve, Transmit]
    assert resent[0].flow_l_s == tuple(s / 1000 for s in SAMPLES)  # type: ignore[union-attr]
    duplicate = host.feed(board(*frames), T0_MS + 200)  # our ACK was lost on the way
    assert sent(duplicate) == [ack(m.MsgType.BLOW_END, 4)]
    assert not any(isinstance(e, BlowCurve) for e in duplicate)
    assert host.counters.resend_requests == 1
    assert host.counters.seq_gaps == 1


@pytest.mark.parametrize(
    ("keep", "why"),
    [
        (lambda f: f[1:], "BLOW_START was lost"),
        (lambda f: f[:-2] + f[-1:], "12 samples received, BLOW_END says 13"),
        (lambda f: f[-1:], "BLOW_END without BLOW_START"),
    ],
)
def test_incomplete_blows_are_asked_for_again(keep: object, why: str) -> None:
    host, board = connected(K.PEF_SENSOR)
    out = host.feed(board(*keep(blow(5, SAMPLES))), T0_MS)  # type: ignore[operator]
    problems = [e for e in out if isinstance(e, BridgeProblem)]
    assert len(problems) == 1
    assert why in problems[0].reason
    assert sent(out) == [m.ResendBlow(blow_id=5)]
    assert not any(isinstance(e, BlowCurve) for e in out)


def test_a_blow_abandoned_by_the_next_one_is_asked_for_again() -> None:
    host, board = connected(K.PEF_SENSOR)
    first, second = blow(1, SAMPLES), blow(2, SAMPLES)
    out = host.feed(board(*first[:-1], *second), T0_MS)
    assert sent(out) == [m.ResendBlow(blow_id=1), ack(m.MsgType.BLOW_END, 2)]
    assert [e.blow_id for e in out if isinstance(e, BlowCurve)] == [2]


def test_a_blow_longer_than_the_limit_is_refused() -> None:
    host, board = connected(K.PEF_SENSOR, max_blow_samples=10)
    out = host.feed(board(*blow(6, SAMPLES)), T0_MS)
    assert sent(out) == [m.ResendBlow(blow_id=6)]
    assert "longer than 10 samples" in out[0].reason  # type: ignore[union-attr]


# ------------------------------------------------------------------ problems


def test_problems_say_what_and_where_and_the_stream_keeps_flowing() -> None:
    host, board = connected(K.PEF_SENSOR)
    good = board(dispenser_event(1))  # a dispenser event from a PEF board
    wrong_way = board(m.ResendBlow(blow_id=1))  # a host-to-board type from the board
    unknown = encode_frame(0x7E, board.seq, b"\x01")
    bad_payload = encode_frame(m.MsgType.BLOW_END, board.seq + 1, b"\x01\x02")
    crc_broken = bytearray(m.encode_message(m.HelloRequest(), board.seq + 2))
    crc_broken[-2] ^= 0xFF
    beat = m.Heartbeat(uptime_ms=1, status=m.BoardStatus(0), queued_events=0, rtc_unix_ms=0)
    out = host.feed(
        good + wrong_way + unknown + bad_payload + bytes(crc_broken) + board(beat), T0_MS
    )
    problems = [e for e in out if isinstance(e, BridgeProblem)]
    assert [p.kind for p in problems] == [
        ProblemKind.WRONG_BOARD_KIND,
        ProblemKind.WRONG_DIRECTION,
        ProblemKind.UNKNOWN_TYPE,
        ProblemKind.UNDECODABLE,
        ProblemKind.FRAMING,
    ]
    assert all(p.reason.startswith("board B-1: ") for p in problems)
    assert "DISPENSER_EVENT seq 1 from a PEF_SENSOR board" in problems[0].reason
    assert "0x7e" in problems[2].reason
    assert "BLOW_END.blow_id: needs 4 bytes at byte 0, payload has 2" in problems[3].reason
    assert "crc 0x" in problems[4].reason
    assert problems[2].raw == unknown[:-1]
    assert isinstance(out[-1], Heartbeat)
    assert (host.counters.unknown_types, host.counters.undecodable) == (1, 1)
    assert host.framing.crc_errors == 1


@settings(max_examples=60)
@given(data=st.binary(max_size=2000))
def test_random_bytes_never_raise_and_never_become_data(data: bytes) -> None:
    host, _ = connected(K.PEF_SENSOR)
    out = host.feed(data, T0_MS)
    assert not any(isinstance(e, BlowCurve | DispenserReport | PeripheralMeasurement) for e in out)


@settings(max_examples=30)
@given(cut=st.lists(st.integers(1, 40), min_size=1, max_size=30))
def test_any_split_of_the_stream_gives_the_same_events(cut: list[int]) -> None:
    def stream() -> bytes:
        board = Board()
        return board(hello(kind=K.PEF_SENSOR), *blow(1, SAMPLES), *blow(2, SAMPLES[:5]))

    whole = BridgeHost().feed(stream(), T0_MS)
    host, data, pos, pieces = BridgeHost(), stream(), 0, []
    for n in cut * 50:
        if pos >= len(data):
            break
        pieces += host.feed(data[pos : pos + n], T0_MS)
        pos += n
    pieces += host.feed(data[pos:], T0_MS)
    assert pieces == whole
    assert len([e for e in whole if isinstance(e, BlowCurve)]) == 2


# ------------------------------------------------------------------ supervision


def test_silent_once_then_back() -> None:
    host, board = connected()
    assert host.next_deadline_ms() == T0_MS + HEARTBEAT_TIMEOUT_MS
    assert host.poll(T0_MS + HEARTBEAT_TIMEOUT_MS - 1) == []
    assert host.poll(T0_MS + HEARTBEAT_TIMEOUT_MS) == [
        BoardSilent(board_id="B-1", last_heard_ms=T0_MS)
    ]
    assert host.poll(T0_MS + 3 * HEARTBEAT_TIMEOUT_MS) == []
    assert host.next_deadline_ms() is None
    beat = m.Heartbeat(uptime_ms=1, status=m.BoardStatus(0), queued_events=0, rtc_unix_ms=0)
    out = host.feed(board(beat), T0_MS + 60_000)
    assert out[0] == BoardBack(board_id="B-1", silent_ms=60_000)
    assert isinstance(out[1], Heartbeat)
    assert host.next_deadline_ms() == T0_MS + 60_000 + HEARTBEAT_TIMEOUT_MS


def test_noise_alone_does_not_count_as_the_board_speaking() -> None:
    host = BridgeHost()
    host.poll(T0_MS)
    host.feed(b"\x13\x37\x00", T0_MS + 10_000)
    assert host.poll(T0_MS + HEARTBEAT_TIMEOUT_MS) == [
        BoardSilent(board_id=None, last_heard_ms=T0_MS)
    ]
