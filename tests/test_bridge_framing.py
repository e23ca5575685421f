"""Bridge frames (COBS + CRC-32) and message payloads: round trips, hostile bytes, field errors."""

from __future__ import annotations

import struct
from datetime import UTC, datetime

import pytest
from cobs import cobs  # type: ignore[import-untyped]
from hypothesis import given, settings
from hypothesis import strategies as st

from device_profiles.events import DOSE_KINDS, EventKind
from firmware_bridges import messages as m
from firmware_bridges.framing import (
    MAX_PAYLOAD,
    MAX_STUFFED,
    Frame,
    FrameDecoder,
    FrameError,
    FrameErrorKind,
    crc32,
    encode_frame,
)

# ------------------------------------------------------------------ framing


def test_crc_is_crc32_iso_hdlc_check_value() -> None:
    assert crc32(b"123456789") == 0xCBF43926


def test_worked_example_of_the_doc() -> None:
    """docs/firmware-bridges.md, "Worked examples"."""
    frame = m.encode_message(m.Ack(acked_type=m.MsgType.DISPENSER_EVENT, event_id=5), 3)
    assert frame.hex(" ") == "04 01 04 03 03 20 05 01 01 05 bc cb cf b2 00"
    assert FrameDecoder().feed(frame) == [
        Frame(version=1, msg_type=0x04, seq=3, payload=bytes.fromhex("2005000000"))
    ]
    samples = m.FlowSamples(blow_id=7, first_index=100, samples=(0, 1250, -3))
    assert m.encode_message(samples, 42).hex(" ") == (
        "04 01 11 2a 02 07 01 01 02 64 01 01 02 03 01 01 09 e2 04 fd ff d5 9f 9c 4e 00"
    )


@given(msg_type=st.integers(0, 255), seq=st.integers(0, 0xFFFF), payload=st.binary(max_size=300))
def test_frame_round_trip(msg_type: int, seq: int, payload: bytes) -> None:
    wire = encode_frame(msg_type, seq, payload)
    assert wire.count(0) == 1
    assert wire[-1] == 0
    d = FrameDecoder()
    assert d.feed(wire) == [Frame(version=1, msg_type=msg_type, seq=seq, payload=payload)]
    assert d.counters.frames_ok == 1
    assert d.counters.junk_bytes == 0


@settings(max_examples=20)
@given(payload=st.one_of(st.just(bytes(MAX_PAYLOAD)), st.binary(min_size=MAX_PAYLOAD - 300)))
def test_largest_frames_and_all_zero_payloads(payload: bytes) -> None:
    payload = payload[:MAX_PAYLOAD]
    wire = encode_frame(0x11, 7, payload)
    assert len(wire) - 1 <= MAX_STUFFED
    assert FrameDecoder().feed(wire) == [Frame(version=1, msg_type=0x11, seq=7, payload=payload)]


def test_encoder_refuses_what_no_frame_can_carry() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        encode_frame(1, 0, bytes(MAX_PAYLOAD + 1))
    with pytest.raises(ValueError, match="message type"):
        encode_frame(256, 0, b"")
    assert FrameDecoder().feed(encode_frame(1, 0x1_0005, b""))[0] == Frame(
        version=1, msg_type=1, seq=5, payload=b""
    )


@given(data=st.binary(max_size=3000))
def test_random_bytes_never_raise(data: bytes) -> None:
    d = FrameDecoder()
    out = d.feed(data)
    assert all(isinstance(x, Frame | FrameError) for x in out)
    c = d.counters
    errors = c.crc_errors + c.cobs_errors + c.short_frames + c.version_errors + c.oversize
    assert c.frames_ok + errors == len(out)
    assert c.junk_bytes <= len(data)
    assert all(len(x.raw) <= MAX_STUFFED for x in out if isinstance(x, FrameError))


@settings(max_examples=50)
@given(
    frames=st.lists(
        st.tuples(st.integers(0, 255), st.integers(0, 0xFFFF), st.binary(max_size=80)),
        max_size=5,
    ),
    garbage=st.lists(st.binary(max_size=40), max_size=5),
)
def test_byte_at_a_time_equals_one_chunk(
    frames: list[tuple[int, int, bytes]], garbage: list[bytes]
) -> None:
    stream = b"".join(g + encode_frame(*f) for g, f in zip(garbage, frames, strict=False))
    stream += b"".join(encode_frame(*f) for f in frames[len(garbage) :])
    whole = FrameDecoder().feed(stream)
    d = FrameDecoder()
    single = [x for i in range(len(stream)) for x in d.feed(stream[i : i + 1])]
    assert single == whole


def test_every_single_bit_flip_is_detected_and_the_next_frame_survives() -> None:
    good = encode_frame(0x20, 1234, bytes(range(0, 60)) + bytes(10))
    after = encode_frame(0x03, 1235, b"\x00\x01\x02")
    expected_after = Frame(version=1, msg_type=0x03, seq=1235, payload=b"\x00\x01\x02")
    for bit in range((len(good) - 1) * 8):  # every bit but the delimiter's
        bad = bytearray(good)
        bad[bit // 8] ^= 1 << (bit % 8)
        out = FrameDecoder().feed(bytes(bad) + after)
        assert out[-1] == expected_after, bit
        assert all(isinstance(x, FrameError) for x in out[:-1]), bit


def test_crc_error_says_both_values() -> None:
    body = bytes([1, 0x20, 9, 0]) + b"abc"
    wire = cobs.encode(body + struct.pack("<I", crc32(body) ^ 0x10)) + b"\x00"
    (err,) = FrameDecoder().feed(wire)
    assert isinstance(err, FrameError)
    assert err.kind is FrameErrorKind.CRC
    assert err.reason == f"crc {crc32(body) ^ 0x10:#010x} != computed {crc32(body):#010x}"
    assert err.raw == wire[:-1]
    assert err.offset == 0


def test_unknown_version_and_short_frame_are_reported() -> None:
    body = bytes([2, 0x01, 0, 0])
    v2 = cobs.encode(body + struct.pack("<I", crc32(body))) + b"\x00"
    short = cobs.encode(b"\x01\x02\x03") + b"\x00"
    d = FrameDecoder()
    out = d.feed(b"\x00\x00" + v2 + short + encode_frame(5, 1, b"x"))
    assert [x.kind for x in out if isinstance(x, FrameError)] == [
        FrameErrorKind.VERSION,
        FrameErrorKind.TOO_SHORT,
    ]
    assert isinstance(out[0], FrameError)
    assert "protocol version 2" in out[0].reason
    assert out[0].offset == 2  # the two idle delimiters before it are not errors
    assert out[-1] == Frame(version=1, msg_type=5, seq=1, payload=b"x")
    assert (d.counters.version_errors, d.counters.short_frames, d.counters.frames_ok) == (1, 1, 1)


@given(garbage=st.binary(min_size=1, max_size=200))
def test_resynchronises_after_garbage(garbage: bytes) -> None:
    frame = encode_frame(0x30, 77, b"\x00payload\x00")
    out = FrameDecoder().feed(garbage + b"\x00" + frame)
    assert out[-1] == Frame(version=1, msg_type=0x30, seq=77, payload=b"\x00payload\x00")


def test_garbage_glued_to_a_frame_costs_that_frame_only() -> None:
    one, two = encode_frame(1, 1, b"one"), encode_frame(1, 2, b"two")
    out = FrameDecoder().feed(b"\x17\x99" + one + two)
    assert isinstance(out[0], FrameError)
    assert out[1] == Frame(version=1, msg_type=1, seq=2, payload=b"two")


def test_over_long_run_is_one_error_and_the_buffer_stays_bounded() -> None:
    d = FrameDecoder()
    out: list[Frame | FrameError] = []
    for _ in range(10):  # 10 000 bytes without a delimiter, fed in pieces
        out += d.feed(b"\x55" * 1000)
    out += d.feed(b"\x00" + encode_frame(2, 3, b"ok"))
    assert [type(x) for x in out] == [FrameError, Frame]
    assert isinstance(out[0], FrameError)
    assert out[0].kind is FrameErrorKind.OVERSIZE
    assert len(out[0].raw) <= MAX_STUFFED
    assert d.counters.oversize == 1
    assert d.counters.junk_bytes == 10_000
    assert len(d._buf) == 0


# ------------------------------------------------------------------ messages

ascii_id = st.from_regex(r"[A-Za-z0-9._-]{1,16}", fullmatch=True)
printable = st.from_regex(r"[\x20-\x7e]{0,16}", fullmatch=True)
u16, u32 = st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)
unix_ms = st.integers(0, m.MAX_UNIX_MS)
flags16 = st.integers(0, 0xFFFF)


@st.composite
def dispenser_events(draw: st.DrawFn) -> m.DispenserEvent:
    kind = draw(st.sampled_from(list(EventKind)))
    dose = draw(st.from_regex(r"[\x20-\x7e]{1,32}", fullmatch=True))
    return m.DispenserEvent(
        event_seq=draw(u32),
        kind=kind,
        dose_id=dose if kind in DOSE_KINDS else draw(st.sampled_from(["", dose])),
        scheduled_unix_s=draw(st.integers(0, m.MAX_UNIX_S)),
        actual_unix_s=draw(st.integers(0, m.MAX_UNIX_S)),
        doses_left=draw(u16),
    )


@st.composite
def measurements(draw: st.DrawFn) -> m.Measurement:
    status = m.MeasurementStatus(draw(st.sampled_from([0, 1, 2, 4, 8, 9, 0xF0])))
    error = m.MeasurementStatus.ERROR in status
    return m.Measurement(
        seq=draw(u32),
        measure=draw(st.sampled_from(sorted(m.MEASURE_CODES.values()))),
        status=status,
        exponent=0 if error else draw(st.integers(-128, 127)),
        mantissa=0 if error else draw(st.integers(-(2**31), 2**31 - 1)),
        rtc_unix_ms=draw(unix_ms),
    )


any_message: st.SearchStrategy[m.BridgeMessage] = st.one_of(
    st.builds(
        m.Hello,
        kind=st.sampled_from(m.BoardKind),
        protocol_version=st.integers(1, 255),
        flags=flags16.map(m.HelloFlags),
        board_id=ascii_id,
        firmware=printable,
        rtc_unix_ms=unix_ms,
        sample_rate_hz=u16,
        max_blow_samples=u32,
    ),
    st.builds(m.HelloAck, host_unix_ms=st.integers(1, m.MAX_UNIX_MS), accepted=st.booleans()),
    st.builds(
        m.Heartbeat,
        uptime_ms=st.integers(0, 2**64 - 1),
        status=flags16.map(m.BoardStatus),
        queued_events=u16,
        rtc_unix_ms=unix_ms,
    ),
    st.builds(m.Ack, acked_type=st.sampled_from(sorted(m.ACKED_TYPES)), event_id=u32),
    st.builds(
        m.ErrorReport,
        code=st.one_of(st.sampled_from(m.BoardErrorCode), u16),
        ref=u32,
        text=st.text(max_size=50),
    ),
    st.builds(m.SetTime, host_unix_ms=st.integers(1, m.MAX_UNIX_MS)),
    st.builds(m.HelloRequest),
    st.builds(
        m.BlowStart,
        blow_id=u32,
        sample_rate_hz=st.integers(m.MIN_SAMPLE_RATE_HZ, 0xFFFF),
        start_tick_us=u32,
        rtc_unix_ms=unix_ms,
    ),
    st.builds(
        m.FlowSamples,
        blow_id=u32,
        first_index=u32,
        samples=st.lists(
            st.integers(-0x8000, 0x7FFF), min_size=1, max_size=m.MAX_SAMPLES_PER_FRAME
        ).map(tuple),
    ),
    st.builds(
        m.BlowEnd,
        blow_id=u32,
        total_samples=u32,
        end_reason=st.sampled_from(m.EndReason),
        flags=st.integers(0, 255).map(m.BlowFlags),
        board_peak_ml_s=u16,
    ),
    st.builds(m.ResendBlow, blow_id=u32),
    st.builds(
        m.BlowResult,
        blow_id=u32,
        pef_l_min=u16,
        quality=st.integers(0, 255).map(m.BlowQualityBits),
        advice=st.sampled_from(m.SessionAdvice),
        session_best_l_min=u16,
        session_blows=st.integers(0, 255),
    ),
    dispenser_events(),
    measurements(),
)


@given(msg=any_message, extra=st.binary(max_size=8))
def test_message_round_trip_and_appended_fields_are_ignored(
    msg: m.BridgeMessage, extra: bytes
) -> None:
    payload = msg.encode()
    assert type(msg).decode(payload) == msg
    assert m.decode_message(msg.TYPE, payload + extra) == msg  # a later version's new fields
    wire = m.encode_message(msg, 9)
    (frame,) = FrameDecoder().feed(wire)
    assert isinstance(frame, Frame)
    assert m.decode_message(frame.msg_type, frame.payload) == msg


@given(msg=any_message, data=st.data())
def test_truncated_payload_names_message_and_field(
    msg: m.BridgeMessage, data: st.DataObject
) -> None:
    payload = msg.encode()
    if not payload:
        return
    cut = data.draw(st.integers(0, len(payload) - 1))
    with pytest.raises(m.BridgeMessageError) as caught:
        type(msg).decode(payload[:cut])
    assert caught.value.message == msg.TYPE.name
    assert "needs" in caught.value.problem


@given(msg_type=st.sampled_from(m.MsgType), payload=st.binary(max_size=120))
def test_random_payloads_decode_or_raise_the_documented_error(
    msg_type: m.MsgType, payload: bytes
) -> None:
    try:
        msg = m.decode_message(msg_type, payload)
    except m.BridgeMessageError as exc:
        assert exc.field
        assert exc.message
    else:
        assert msg.TYPE is msg_type


@pytest.mark.parametrize(
    ("cls", "payload", "field"),
    [
        (m.Hello, b"\x01\x01", "flags"),
        (m.Hello, b"\x09" + bytes(49), "kind"),
        (m.Hello, b"\x01\x01\x00\x00PEF 1" + bytes(11 + 16 + 14), "board_id"),
        (m.Hello, b"\x01\x01\x00\x00" + bytes(16) + bytes(30), "board_id"),
        (m.HelloAck, bytes(8) + b"\x01", "host_unix_ms"),
        (m.HelloAck, b"\x01" + bytes(7) + b"\x02", "accepted"),
        (m.Ack, b"\x01" + bytes(4), "acked_type"),
        (m.Ack, b"\x20\x01", "event_id"),
        (m.BlowStart, struct.pack("<IHIQ", 1, 200, 0, 0), "sample_rate_hz"),
        (m.FlowSamples, struct.pack("<IIH", 1, 0, 3) + bytes(4), "samples"),
        (m.FlowSamples, struct.pack("<IIH", 1, 0, 0), "count"),
        (m.BlowEnd, struct.pack("<IIBBH", 1, 10, 7, 0, 0), "end_reason"),
        (m.DispenserEvent, struct.pack("<IB", 1, 99) + bytes(50), "kind"),
        (m.DispenserEvent, struct.pack("<IB", 1, 3) + bytes(50), "dose_id"),
        (m.DispenserEvent, struct.pack("<IB", 1, 6) + b"\x01" + bytes(49), "dose_id"),
        (
            m.DispenserEvent,
            struct.pack("<IB", 1, 6) + bytes(32) + b"\xff" * 8 + bytes(10),
            "scheduled_unix_s",
        ),
        (m.Measurement, struct.pack("<IHBbiQ", 1, 999, 0, 0, 1, 0), "measure"),
        (m.Measurement, struct.pack("<IHBbiQ", 1, 1, 6, 0, 1, 0), "status"),
        (m.Measurement, struct.pack("<IHBbiQ", 1, 1, 8, -1, 1755, 0), "mantissa"),
        (m.ErrorReport, struct.pack("<HIB", 1, 0, 5) + b"ab", "text"),
    ],
)
def test_malformed_payload_names_the_field(
    cls: type[m.BridgeMessage], payload: bytes, field: str
) -> None:
    with pytest.raises(m.BridgeMessageError) as caught:
        cls.decode(payload)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{cls.TYPE.name}.{field}: ")


def test_unknown_type_is_its_own_error() -> None:
    with pytest.raises(m.UnknownMessageTypeError) as caught:
        m.decode_message(0x7E, b"")
    assert caught.value.msg_type == 0x7E


def test_encoder_refuses_values_the_layout_cannot_carry() -> None:
    with pytest.raises(m.BridgeMessageError, match=r"FLOW_SAMPLES\.samples\[1\]"):
        m.FlowSamples(blow_id=1, first_index=0, samples=(0, 40_000))
    with pytest.raises(m.BridgeMessageError, match=r"DISPENSER_EVENT\.dose_id"):
        m.DispenserEvent(
            event_seq=1, kind=EventKind.DOSE_TAKEN, dose_id="", scheduled_unix_s=0, actual_unix_s=0
        )
    with pytest.raises(m.BridgeMessageError, match=r"ACK\.acked_type"):
        m.Ack(acked_type=m.MsgType.HEARTBEAT, event_id=1)


def test_code_tables_are_complete_and_unique() -> None:
    assert set(m.EVENT_KIND_CODES) == set(EventKind)
    assert len(set(m.EVENT_KIND_CODES.values())) == len(EventKind)
    assert m.MEASURE_CODES[1] == "body.height"
    assert m.MEASURE_CODES[2] == "body.weight"
    assert m.BOARD_TO_HOST.isdisjoint(m.HOST_TO_BOARD)


def test_measurement_value_is_the_exact_decimal() -> None:
    msg = m.Measurement(
        seq=1,
        measure="body.height",
        status=m.MeasurementStatus(0),
        exponent=-1,
        mantissa=1755,
        rtc_unix_ms=int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000),
    )
    assert msg.value == 175.5
    err = m.Measurement(
        seq=2,
        measure="body.weight",
        status=m.MeasurementStatus.ERROR,
        exponent=0,
        mantissa=0,
        rtc_unix_ms=0,
    )
    assert err.value is None


def test_blow_result_layout_is_the_documented_one() -> None:
    msg = m.BlowResult(
        blow_id=7,
        pef_l_min=432,
        quality=m.BlowQualityBits.COUGH | m.BlowQualityBits.SLOW_RISE,
        advice=m.SessionAdvice.BLOW_AGAIN,
        session_best_l_min=450,
        session_blows=2,
    )
    # docs/firmware-bridges.md: u32 blow_id, u16 pef, u8 quality, u8 advice, u16 best, u8 blows
    assert msg.encode() == bytes.fromhex("07000000 b001 03 01 c201 02")
    assert m.MsgType.BLOW_RESULT in m.HOST_TO_BOARD
    with pytest.raises(m.BridgeMessageError, match="advice"):
        m.BlowResult.decode(bytes.fromhex("07000000b0010309c20102"))
    with pytest.raises(m.BridgeMessageError, match="pef_l_min"):
        m.BlowResult(
            blow_id=1,
            pef_l_min=70000,
            quality=m.BlowQualityBits(0),
            advice=m.SessionAdvice.SESSION_COMPLETE,
            session_best_l_min=0,
            session_blows=1,
        )
