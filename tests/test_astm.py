"""ASTM E1381 link + E1394 records of Contour meters (device_profiles.serial.astm, sim_astm).

Checksum vectors: frames of Contour USB / Contour meters as published in the tests of the
open-source glucodump project (Anders Hammarquist) — only the bytes and their checksums are used.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_profiles.observation import Observation, QualityFlag
from device_profiles.serial.astm import (
    ACK,
    ENQ,
    EOT,
    MAX_TRANSMISSIONS,
    NAK,
    AstmEvent,
    AstmMessage,
    AstmMessageAssembler,
    AstmReceiver,
    AstmRecordError,
    HeaderRecord,
    LinkError,
    LinkErrorKind,
    OrderRecord,
    RecordReceived,
    ResultRecord,
    TerminatorRecord,
    TransferEnded,
    TransferStarted,
    Transmit,
    checksum,
    clock_offset,
    frame,
    message_frames,
    parse_record,
    result_key,
    result_to_observation,
)
from device_profiles.serial.sim import SerialSim
from device_profiles.serial.sim_astm import (
    AstmFaults,
    AstmMeterSim,
    AstmReading,
    contour_readings,
    result_record,
)
from device_profiles.units import GLUCOSE_MG_DL_PER_MMOL_L

TZ = ZoneInfo("Europe/Helsinki")
T0 = datetime(2026, 1, 15, 7, 30)
HUB_LOCAL = datetime(2026, 3, 1, 12, 0, 0)  # the hub's local wall clock during the tests
HUB_NOW = HUB_LOCAL.replace(tzinfo=TZ)
ACK_B, NAK_B = bytes([ACK]), bytes([NAK])
HEADER = (
    "H|\\^&||7w3LBL|Bayer7390^01.24\\01.04\\04.02.19^7390-2336773^7403-|A=1^C=63^U=1^V=10600"
    "|1714||||||1|20260301121500"
)


# --------------------------------------------------------------------------- helpers


def run(sim: AstmMeterSim, rx: AstmReceiver, *, bytewise: bool = False) -> list[AstmEvent]:
    """Sim and receiver in memory, on the sim's clock, until the sim has nothing left to do."""
    events: list[AstmEvent] = []
    t = 0.0
    for _ in range(100_000):
        out = sim.poll(t)
        for chunk in [out[i : i + 1] for i in range(len(out))] if bytewise else [out]:
            evs = rx.feed(chunk)
            events += evs
            for e in evs:
                if isinstance(e, Transmit):
                    sim.receive(e.data, t)
        deadline = sim.next_deadline()
        if deadline is None:
            return events
        t = max(t, deadline)
    raise AssertionError("the simulator never went quiet")


def messages(events: Sequence[AstmEvent]) -> list[tuple[AstmMessage, bool]]:
    out: list[tuple[AstmMessage, bool]] = []
    asm = AstmMessageAssembler()
    for e in events:
        if isinstance(e, TransferStarted):
            asm = AstmMessageAssembler()
        elif isinstance(e, RecordReceived):
            asm.add(e.text)
        elif isinstance(e, TransferEnded):
            m = asm.end(e.complete)
            if m is not None:
                out.append((m, e.complete))
    return out


def observations(message: AstmMessage, *, simulated: bool = True) -> list[Observation]:
    offset = clock_offset(message.header, hub_now=HUB_NOW, tz=TZ)
    obs = [
        result_to_observation(r, tz=TZ, clock_offset_s=offset, simulated=simulated)
        for r in message.results
    ]
    return [o for o in obs if o is not None]


def expected_keys(readings: Sequence[AstmReading]) -> set[str]:
    out = set()
    for r in readings:
        rec = parse_record(result_record(1, r))
        assert isinstance(rec, ResultRecord)
        if not rec.control_solution:
            out.add(result_key(rec))
    return out


def r_texts(events: Sequence[AstmEvent]) -> list[str]:
    return [e.text for e in events if isinstance(e, RecordReceived) and e.text.startswith("R")]


def ended(events: Sequence[AstmEvent]) -> list[TransferEnded]:
    return [e for e in events if isinstance(e, TransferEnded)]


def start(rx: AstmReceiver) -> None:
    assert rx.feed(bytes([ENQ])) == [TransferStarted(), Transmit(ACK_B)]


def meter(
    readings: Sequence[AstmReading],
    *,
    faults: AstmFaults | None = None,
    clock_offset_s: float = 0.0,
    enq_retry_s: float = 1.0,
    start: float = 0.0,
    patient_id: str = "",
) -> AstmMeterSim:
    """A meter whose clock reads the test's hub clock plus ``clock_offset_s``."""
    return AstmMeterSim(
        readings,
        faults=faults,
        clock_offset_s=clock_offset_s,
        enq_retry_s=enq_retry_s,
        start=start,
        hub_clock=lambda: HUB_LOCAL,
        patient_id=patient_id,
    )


READINGS = contour_readings(30, seed=1, start=T0, every=timedelta(hours=5))


# --------------------------------------------------------------------------- link layer


def test_checksum_matches_published_contour_frames() -> None:
    assert checksum(b"1R|67|^^^Glucose|7.9|mmol/L^P||B||201011281949\r\x17") == "04"
    assert checksum(b"5L|1||N\r\x03") == "84"
    header = b"1H|\\^&||-7880|Bayer7150^1.05\\0.00^7150-SAM2193|||||||P|1|200305121635\r\x17"
    assert checksum(header) == "AE"
    assert frame(5, "L|1||N\r", final=True) == b"\x025L|1||N\r\x0384\r\n"


def test_frame_refuses_what_it_cannot_carry() -> None:
    with pytest.raises(ValueError, match="outside"):
        frame(8, "x", final=True)
    with pytest.raises(ValueError, match="exceeds"):
        frame(1, "x" * 241, final=True)
    with pytest.raises(ValueError, match="must not contain"):
        frame(1, "a\nb", final=True)


def test_whole_message_is_acked_and_complete() -> None:
    rx = AstmReceiver()
    start(rx)
    assert rx.in_transfer
    frames = message_frames(
        [HEADER, "P|1", "R|1|^^^Glucose|5.6|mmol/L^P||B||202601150730", "L|1||N"]
    )
    events = rx.feed(b"".join(frames) + bytes([EOT]))
    assert [e for e in events if isinstance(e, Transmit)] == [Transmit(ACK_B)] * 4
    assert [e.text for e in events if isinstance(e, RecordReceived)][2].startswith("R|1|")
    assert events[-1] == TransferEnded(records=4, complete=True)
    assert not rx.in_transfer
    assert rx.stats.frames_ok == 4
    assert rx.stats.transfers_complete == 1


def test_checksum_error_is_naked_then_accepted_on_retry() -> None:
    rx = AstmReceiver()
    start(rx)
    good = frame(1, "H|\\^&\r", final=False)
    bad = good[:-4] + b"00\r\n"
    events = rx.feed(bad)
    assert events[-1] == Transmit(NAK_B)
    err = events[0]
    assert isinstance(err, LinkError)
    assert err.kind is LinkErrorKind.CHECKSUM
    assert err.reason == f"frame 1: checksum '00' != computed {good[-4:-2].decode()}"
    assert err.raw == bad[:-1]  # the frame ends at its CR; the LF after it is swallowed
    assert rx.feed(good) == [Transmit(ACK_B), RecordReceived("H|\\^&")]
    assert rx.stats.frames_bad == 1
    assert rx.stats.frames_ok == 1


def test_frame_number_skip_is_naked_and_counted() -> None:
    rx = AstmReceiver()
    start(rx)
    rx.feed(frame(1, "H|\\^&\r", final=False))
    events = rx.feed(frame(3, "P|1\r", final=False))
    assert isinstance(events[0], LinkError)
    assert events[0].kind is LinkErrorKind.OUT_OF_SEQUENCE
    assert "expected 2" in events[0].reason
    assert events[-1] == Transmit(NAK_B)
    assert rx.stats.frames_out_of_sequence == 1
    assert rx.feed(frame(2, "P|1\r", final=False)) == [Transmit(ACK_B), RecordReceived("P|1")]


def test_duplicate_frame_is_acked_but_not_used_twice() -> None:
    rx = AstmReceiver()
    start(rx)
    f1 = frame(1, "H|\\^&\r", final=False)
    assert rx.feed(f1) == [Transmit(ACK_B), RecordReceived("H|\\^&")]
    assert rx.feed(f1) == [Transmit(ACK_B)]
    assert rx.stats.duplicate_frames == 1
    events = rx.feed(frame(2, "L|1||N\r", final=True) + bytes([EOT]))
    assert events[-1] == TransferEnded(records=2, complete=True)


def test_frame_numbers_wrap_from_7_to_0() -> None:
    rx = AstmReceiver()
    start(rx)
    texts = [f"C|{i}" for i in range(10)] + ["L|1"]
    events = rx.feed(b"".join(message_frames(texts)) + bytes([EOT]))
    assert [e.text for e in events if isinstance(e, RecordReceived)] == texts
    assert rx.stats.frames_out_of_sequence == 0
    assert events[-1] == TransferEnded(11, True)


def test_repeated_enq_is_acked_and_restarts_a_started_message() -> None:
    rx = AstmReceiver()
    start(rx)
    assert rx.feed(bytes([ENQ])) == [Transmit(ACK_B)]  # our ACK was lost: nothing to abandon
    rx.feed(frame(1, "H|\\^&\r", final=False))
    events = rx.feed(bytes([ENQ]))
    assert isinstance(events[0], LinkError)
    assert events[0].kind is LinkErrorKind.RESTART
    assert events[1:] == [TransferEnded(1, False), TransferStarted(), Transmit(ACK_B)]
    assert rx.feed(frame(1, "H|\\^&\r", final=False))[0] == Transmit(ACK_B)  # numbering restarts
    assert rx.stats.transfers_aborted == 1


def test_timeout_abandons_a_partial_message() -> None:
    rx = AstmReceiver()
    assert rx.timeout() == []
    start(rx)
    rx.feed(frame(1, "H|\\^&\r", final=False) + frame(2, "P|1||" + "x" * 200, final=False))
    rx.feed(b"\x023R|1")  # a frame cut off by the unplug
    events = rx.timeout()
    kinds = [e.kind for e in events if isinstance(e, LinkError)]
    assert kinds == [
        LinkErrorKind.TRUNCATED_FRAME,
        LinkErrorKind.TIMEOUT,
        LinkErrorKind.INCOMPLETE_RECORD,
    ]
    assert events[-1] == TransferEnded(records=1, complete=False)
    assert not rx.in_transfer
    assert rx.stats.transfers_aborted == 1


def test_eot_without_terminator_is_incomplete() -> None:
    rx = AstmReceiver()
    start(rx)
    events = rx.feed(frame(1, "H|\\^&\r", final=False) + bytes([EOT]))
    assert events[-1] == TransferEnded(records=1, complete=False)


def test_overlong_frame_is_dropped_naked_and_the_link_resyncs() -> None:
    rx = AstmReceiver()
    start(rx)
    events = rx.feed(b"\x021" + b"A" * 400 + b"\r\x17AA\r\n")
    errors = [e for e in events if isinstance(e, LinkError)]
    assert [e.kind for e in errors] == [LinkErrorKind.OVERLONG_FRAME]
    assert events[-1] == Transmit(NAK_B)
    assert rx.feed(frame(1, "H|\\^&\r", final=False)) == [Transmit(ACK_B), RecordReceived("H|\\^&")]


def test_noise_is_reported_with_its_bytes_and_frames_outside_a_transfer_are_noise() -> None:
    rx = AstmReceiver()
    events = rx.feed(b"\xff\x00junk" + frame(1, "H|\\^&\r", final=True) + bytes([ENQ]))
    noise = events[0]
    assert isinstance(noise, LinkError)
    assert noise.kind is LinkErrorKind.NOISE
    assert noise.raw.startswith(b"\xff\x00junk")
    assert "outside a transfer" in noise.reason
    assert events[1:] == [TransferStarted(), Transmit(ACK_B)]
    assert rx.stats.frames_ok == 0


def test_record_split_over_etb_frames_is_joined() -> None:
    rx = AstmReceiver()
    start(rx)
    long_p = "P|1||" + "".join(chr(0x41 + i % 26) for i in range(600))
    frames = message_frames(["H|\\^&", long_p, "L|1||N"])
    assert len(frames) == 5  # H, P (606 characters with its CR) in three frames, L
    events = rx.feed(b"".join(frames) + bytes([EOT]))
    assert [e.text for e in events if isinstance(e, RecordReceived)] == ["H|\\^&", long_p, "L|1||N"]


_CONTROL = st.sampled_from([b"\x02", b"\x03", b"\x04", b"\x05", b"\x0d", b"\x0a", b"\x17"])
_VALID = st.sampled_from(message_frames([HEADER, "P|1", "R|1|^^^Glucose|5|mg/dL||||", "L|1"]))
_STREAM = st.lists(st.one_of(st.binary(max_size=40), _CONTROL, _VALID), max_size=40).map(b"".join)


@settings(max_examples=150, deadline=None)
@given(data=_STREAM)
def test_random_bytes_never_raise(data: bytes) -> None:
    rx = AstmReceiver()
    events = rx.feed(data) + rx.timeout()
    assert all(e.data in (ACK_B, NAK_B) for e in events if isinstance(e, Transmit))
    started = sum(isinstance(e, TransferStarted) for e in events)
    assert started == len(ended(events))
    assert not rx.in_transfer


@settings(max_examples=100, deadline=None)
@given(data=_STREAM, cuts=st.lists(st.integers(0, 2000), max_size=12))
def test_feeding_in_any_pieces_gives_the_same_events(data: bytes, cuts: list[int]) -> None:
    whole = AstmReceiver()
    expected = whole.feed(data)
    pieces = AstmReceiver()
    got: list[AstmEvent] = []
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    for a, b in itertools.pairwise(bounds):
        got += pieces.feed(data[a:b])
    assert got == expected
    assert pieces.stats == whole.stats


_NOISE = st.binary(max_size=20).map(lambda b: bytes(x for x in b if x not in (2, 4, 5)))


@settings(max_examples=100, deadline=None)
@given(
    texts=st.lists(st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=300)),
    noise=st.lists(_NOISE, min_size=1),
)
def test_noise_between_frames_loses_no_record(texts: list[str], noise: list[bytes]) -> None:
    records = ["H|\\^&", *[f"C|{t}" for t in texts], "L|1||N"]
    rx = AstmReceiver()
    start(rx)
    events: list[AstmEvent] = []
    for i, f in enumerate(message_frames(records)):
        events += rx.feed(noise[i % len(noise)] + f)
    events += rx.feed(bytes([EOT]))
    assert [e.text for e in events if isinstance(e, RecordReceived)] == records
    assert events[-1] == TransferEnded(records=len(records), complete=True)
    assert rx.stats.frames_bad == 0
    assert rx.stats.frames_out_of_sequence == 0
    assert rx.stats.junk_bytes == sum(len(noise[i % len(noise)]) for i in range(i + 1))


@settings(max_examples=100, deadline=None)
@given(
    texts=st.lists(
        st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=239),
        min_size=1,
        max_size=12,
    ),
    final=st.booleans(),
)
def test_frame_round_trip(texts: list[str], final: bool) -> None:
    rx = AstmReceiver()
    start(rx)
    events: list[AstmEvent] = []
    for i, t in enumerate(texts):
        events += rx.feed(frame((i + 1) % 8, t + "\r", final=final and i == len(texts) - 1))
    assert [e.text for e in events if isinstance(e, RecordReceived)] == texts
    assert rx.stats.frames_ok == len(texts)


# --------------------------------------------------------------------------- records


def test_header_identity_and_clock() -> None:
    h = parse_record(HEADER)
    assert isinstance(h, HeaderRecord)
    assert h.sender is not None
    assert (h.sender.model, h.sender.serial, h.sender.firmware) == (
        "Bayer7390",
        "7390-2336773",
        "01.24",
    )
    assert h.sender.versions == ("01.24", "01.04", "04.02.19")
    assert h.transfer_time == datetime(2026, 3, 1, 12, 15, 0)
    short = parse_record(HEADER.replace("20260301121500", "202603011215"))
    assert isinstance(short, HeaderRecord)
    assert short.transfer_time == datetime(2026, 3, 1, 12, 15)
    bare = parse_record("H|\\^&")
    assert isinstance(bare, HeaderRecord)
    assert bare.sender is None
    assert bare.transfer_time is None


def test_header_declares_its_own_delimiters() -> None:
    h = parse_record("H!@#$!!pw!Bayer7350#01.10@02.00#7350-123")
    assert isinstance(h, HeaderRecord)
    assert h.sender is not None
    assert (h.delimiters.field, h.delimiters.repeat, h.delimiters.component) == ("!", "@", "#")
    assert h.sender.versions == ("01.10", "02.00")
    assert h.sender.serial == "7350-123"
    r = parse_record("R!3!###Glucose!101!mg/dL#P!!B/X!!202601150730", h.delimiters)
    assert isinstance(r, ResultRecord)
    assert r.value == 101
    assert r.markers == {"B", "X"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty record"),
        ("H|\\^", "field 1 must be the 4 delimiter"),
        ("H|\\|&|", "4 distinct punctuation"),
        ("H|\\^&||||||||||||2026", "H record: field 13 (date and time) '2026'"),
        ("R|x|^^^Glucose|5|mmol/L||||202601150730", "R record: field 1 (sequence number)"),
        ("R|2|Glucose|5|mmol/L||||202601150730", "R record 2: field 2 (test id)"),
        ("R|2|^^^Glucose|5,6|mmol/L||||202601150730", "R record 2: field 3 (value) '5,6'"),
        ("R|2|^^^Glucose|HI|mmol/L||||202601150730", "R record 2: field 3 (value) 'HI'"),
        ("R|2|^^^Glucose|5.6|||||202601150730", "R record 2: field 4 (unit) is empty"),
        ("R|2|^^^Glucose|5.6|mmol/L||||202613150730", "not a valid date"),
        ("R|2|^^^Glucose|5.6|mmol/L", "R record 2: field 8 (date and time) ''"),
        ("1|2", "record type '1'"),
    ],
)
def test_bad_records_name_record_and_field(text: str, message: str) -> None:
    with pytest.raises(AstmRecordError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_record(text)


def test_other_record_kinds() -> None:
    assert parse_record("L|1||N") == TerminatorRecord(code="N", raw="L|1||N")
    assert parse_record("L|1|N") == TerminatorRecord(code="N", raw="L|1|N")
    o = parse_record("O|2||||||||||Q")
    assert isinstance(o, OrderRecord)
    assert o.quality_control


_MARKERS = st.lists(
    st.sampled_from(["B", "A", "F", "<", ">", "C", "E", "D", "X", "Z1", "ZC", "M0", "T1", "Q9"]),
    unique=True,
    max_size=4,
)


@st.composite
def readings(draw: st.DrawFn) -> AstmReading:
    unit = draw(st.sampled_from(["mmol/L", "mg/dL"]))
    value = draw(st.integers(0, 3330)) / 10 if unit == "mmol/L" else draw(st.integers(0, 600))
    when = draw(st.datetimes(datetime(2000, 1, 1), datetime(2099, 12, 31)))
    when = when.replace(microsecond=0, second=draw(st.sampled_from([0, when.second])))
    return AstmReading(when, float(value), unit, "/".join(draw(_MARKERS)))


@settings(max_examples=200, deadline=None)
@given(r=readings(), seq=st.integers(1, 9999))
def test_result_records_parse_back(r: AstmReading, seq: int) -> None:
    rec = parse_record(result_record(seq, r))
    assert isinstance(rec, ResultRecord)
    assert (rec.seq, rec.analyte, rec.value, rec.unit, rec.method) == (
        seq,
        "Glucose",
        r.value,
        r.unit,
        "P",
    )
    assert rec.time == r.time
    assert rec.markers == frozenset(m for m in r.markers.split("/") if m)
    assert rec.control_solution == bool(rec.markers & {"C", "E"})
    assert rec.unknown_markers == rec.markers & {"M0", "T1", "Q9"}


# --------------------------------------------------------------------------- observations


def _result(text: str) -> ResultRecord:
    rec = parse_record(text)
    assert isinstance(rec, ResultRecord)
    return rec


def _obs(text: str, offset: float | None = 0.0, *, simulated: bool = False) -> Observation | None:
    return result_to_observation(_result(text), tz=TZ, clock_offset_s=offset, simulated=simulated)


def test_glucose_observation_in_mmol_l() -> None:
    o = _obs("R|1|^^^Glucose|5.6|mmol/L^P||B||202601150730")
    assert o is not None
    assert (o.measure, o.value, o.unit, o.comparator) == ("glucose.capillary", 5.6, "mmol/L", None)
    assert o.effective_time == datetime(2026, 1, 15, 5, 30, tzinfo=UTC)  # Helsinki is UTC+2
    assert o.device_time == "2026-01-15T07:30:00"
    assert o.provenance.raw == "R|1|^^^Glucose|5.6|mmol/L^P||B||202601150730"
    assert o.provenance.source == "serial:astm"
    assert o.quality == frozenset()
    assert o.record_key == "astm:20260115T073000/Glucose/5.6/mmol/L"


def test_mg_dl_is_converted_and_kept_in_provenance() -> None:
    o = _obs("R|8|^^^Glucose|133|mg/dL^P||B/X||201202052034")
    assert o is not None
    assert o.value == pytest.approx(133 / GLUCOSE_MG_DL_PER_MMOL_L)
    assert (o.provenance.original_value, o.provenance.original_unit) == (133.0, "mg/dL")


def test_lo_and_hi_are_the_range_limit_with_a_comparator() -> None:
    lo = _obs("R|1|^^^Glucose|0.6|mmol/L^P||<||202601150730")
    hi = _obs("R|2|^^^Glucose|600|mg/dL^P||A/>||202601150731")
    assert lo is not None
    assert hi is not None
    assert (lo.comparator, lo.value) == ("<", 0.6)
    assert QualityFlag.BELOW_RANGE in lo.quality
    assert hi.comparator == ">"
    assert hi.value == pytest.approx(600 / GLUCOSE_MG_DL_PER_MMOL_L)
    assert QualityFlag.ABOVE_RANGE in hi.quality
    with pytest.raises(AstmRecordError, match="both below and above"):
        _obs("R|3|^^^Glucose|5|mmol/L^P||</>||202601150732")


@pytest.mark.parametrize("markers", ["C", "E", "B/C"])
def test_control_solution_is_never_an_observation(markers: str) -> None:
    assert _obs(f"R|1|^^^Glucose|6.1|mmol/L^P||{markers}||202601150730") is None


def test_results_after_a_quality_control_order_are_control_tests() -> None:
    asm = AstmMessageAssembler()
    for t in [HEADER, "O|1", "R|1|^^^Glucose|5.1|mmol/L^P||||202601150730"]:
        asm.add(t)
    for t in ["O|2||||||||||Q", "R|2|^^^Glucose|6.0|mmol/L^P||||202601150731", "L|1||N"]:
        asm.add(t)
    m = asm.end(True)
    assert m is not None
    assert [r.control_solution for r in m.results] == [False, True]
    assert len(observations(m)) == 1


def test_other_analytes_and_units_are_refused() -> None:
    with pytest.raises(AstmRecordError, match="R record 4: analyte 'Ketone' is not glucose"):
        _obs("R|4|^^^Ketone|0.4|mmol/L^P||||202601150730")
    with pytest.raises(AstmRecordError, match=r"R record 4: field 4 \(unit\) 'g/L'"):
        _obs("R|4|^^^Glucose|1.1|g/L^P||||202601150730")


def test_clock_offset_corrects_and_flags() -> None:
    h = parse_record(HEADER)  # meter says 12:15:00, hub is at 12:00:00
    assert isinstance(h, HeaderRecord)
    offset = clock_offset(h, hub_now=HUB_NOW, tz=TZ)
    assert offset == 900.0
    o = _obs("R|1|^^^Glucose|5.6|mmol/L^P||||202603011200", offset, simulated=True)
    assert o is not None
    assert o.effective_time == datetime(2026, 3, 1, 9, 45, tzinfo=UTC)
    assert o.clock_offset_s == 900.0
    assert o.quality == {QualityFlag.SIMULATED}
    far = _obs("R|1|^^^Glucose|5.6|mmol/L^P||||202603011200", 901.0)
    assert far is not None
    assert QualityFlag.CLOCK_OFFSET in far.quality
    none = _obs("R|1|^^^Glucose|5.6|mmol/L^P||||202603011200", None)
    assert none is not None
    assert none.quality == {QualityFlag.DEVICE_TIME_ONLY}
    bare = parse_record("H|\\^&")
    assert isinstance(bare, HeaderRecord)
    assert clock_offset(bare, hub_now=HUB_NOW, tz=TZ) is None
    with pytest.raises(ValueError, match="aware"):
        clock_offset(h, hub_now=HUB_LOCAL, tz=TZ)


def test_a_bad_record_does_not_lose_the_good_ones() -> None:
    asm = AstmMessageAssembler()
    texts = [
        HEADER,
        "P|1",
        "R|1|^^^Glucose|5.6|mmol/L^P||B||202601150730",
        "R|2|^^^Glucose|??|mmol/L^P||B||202601150731",
        "R|3|^^^Glucose|7.1|mmol/L^P||A||202601150732",
        "L|1||N",
        "R|9|^^^Glucose|1|mmol/L^P||||202601150733",
    ]
    for t in texts:
        asm.add(t)
    m = asm.end(True)
    assert m is not None
    assert m.terminated
    assert [r.seq for r in m.results] == [1, 3]
    assert [text for text, _ in m.errors] == [texts[3], texts[6]]
    assert "R record 2: field 3 (value)" in m.errors[0][1]
    assert AstmMessageAssembler().end(True) is None


def test_message_without_header_or_terminator_says_so() -> None:
    asm = AstmMessageAssembler()
    asm.add("R|1|^^^Glucose|5.6|mmol/L^P||B||202601150730")
    m = asm.end(False)
    assert m is not None
    assert not m.terminated
    assert m.header.sender is None
    assert len(m.results) == 1
    assert [why for _, why in m.errors] == [
        "no H record: the meter is not identified",
        "transfer cut off",
    ]


# --------------------------------------------------------------------------- simulator


def test_simulator_implements_the_serial_sim_protocol() -> None:
    sim: SerialSim = meter(READINGS)
    assert sim.next_deadline() == 0.0
    assert not sim.unplugged


FAULTS = [
    None,
    AstmFaults(corrupt_every=3),
    AstmFaults(noise_every=2, seed=5),
    AstmFaults(skip_frame_number_at=5),
    AstmFaults(drop_byte_every=4, seed=7),
    AstmFaults(corrupt_every=5, noise_every=3, drop_byte_every=7, skip_frame_number_at=2, seed=3),
]


@pytest.mark.parametrize("bytewise", [False, True])
@pytest.mark.parametrize("faults", FAULTS)
def test_every_reading_arrives_exactly_once(faults: AstmFaults | None, bytewise: bool) -> None:
    sim, rx = meter(READINGS, faults=faults), AstmReceiver()
    events = run(sim, rx, bytewise=bytewise)
    done = messages(events)
    assert done[-1][1]
    assert sum(ok for _, ok in done) == 1 == sim.transfers_completed
    last = done[-1][0]
    assert last.terminated
    assert last.errors == ()
    assert last.header.sender is not None
    assert last.header.sender.serial == "7390-0000001"
    keys = [o.record_key for o in observations(last)]
    assert len(keys) == len(set(keys)) == len(READINGS)
    assert set(keys) == expected_keys(READINGS)
    if faults is None:
        assert sim.retransmissions == 0
        assert rx.stats.junk_bytes == 0
        assert len(r_texts(events)) == len(READINGS)
    elif faults.corrupt_every == 3:
        assert rx.stats.frames_bad == sim.retransmissions == (len(READINGS) + 3) // 3  # H P R.. L
    elif faults.skip_frame_number_at == 5:
        assert rx.stats.frames_out_of_sequence == sim.retransmissions == 1
    elif faults.noise_every == 2:
        assert rx.stats.junk_bytes > 0
        assert sim.retransmissions == 0
        assert len(r_texts(events)) == len(READINGS)
    else:
        assert sim.retransmissions + sim.transfers_aborted > 0


@settings(max_examples=12, deadline=None)
@given(
    corrupt=st.none() | st.integers(1, 6),
    noise=st.none() | st.integers(1, 6),
    drop=st.none() | st.integers(2, 6),
    skip=st.none() | st.integers(1, 12),
    seed=st.integers(0, 1000),
)
def test_random_faults_still_deliver_everything(
    corrupt: int | None, noise: int | None, drop: int | None, skip: int | None, seed: int
) -> None:
    faults = AstmFaults(
        corrupt_every=corrupt,
        noise_every=noise,
        drop_byte_every=drop,
        skip_frame_number_at=skip,
        seed=seed,
    )
    readings = READINGS[:8]
    sim, rx = meter(readings, faults=faults), AstmReceiver()
    done = messages(run(sim, rx))
    complete = [m for m, ok in done if ok]
    assert len(complete) == 1
    assert {o.record_key for o in observations(complete[0])} == expected_keys(readings)


def test_unplugged_transfer_is_incomplete_and_the_next_one_gives_the_same_keys() -> None:
    readings = contour_readings(
        12, seed=2, start=T0, every=timedelta(hours=3), control_solution=True
    )
    rx = AstmReceiver()
    first = meter(readings, faults=AstmFaults(unplug_after_frames=6))
    events = run(first, rx)
    assert first.unplugged
    assert first.next_deadline() is None
    assert first.poll(99.0) == b""
    events += rx.timeout()  # the driver's 30 s timer
    assert ended(events) == [TransferEnded(records=6, complete=False)]
    ((partial, ok),) = messages(events)
    assert not ok
    assert not partial.terminated
    assert len(partial.results) == 4
    first.replug(100.0)
    assert not first.unplugged
    assert first.next_deadline() == 100.0
    again = run(first, rx)
    ((whole, ok),) = messages(again)
    assert ok
    assert whole.terminated
    partial_keys = {o.record_key for o in observations(partial)}
    whole_keys = {o.record_key for o in observations(whole)}
    assert partial_keys < whole_keys
    assert whole_keys == expected_keys(readings)
    assert len(whole.results) == len(readings)
    assert len(whole_keys) == len(readings) - 1


def test_new_reading_or_button_press_sends_the_whole_memory_again() -> None:
    sim, rx = meter(READINGS[:5]), AstmReceiver()
    first = messages(run(sim, rx))
    assert sim.next_deadline() is None
    assert sim.poll(1e6) == b""
    sim.add_reading(AstmReading(T0 + timedelta(days=30), 9.9, "mmol/L", "A"))
    second = messages(run(sim, rx))
    sim.retransmit()
    third = messages(run(sim, rx))
    assert sim.transfers_completed == 3
    k1, k2, k3 = ({o.record_key for o in observations(m)} for ((m, _),) in (first, second, third))
    assert len(k1) == 5
    assert k1 < k2
    assert len(k2) == 6
    assert k3 == k2


def test_enq_is_repeated_until_the_host_answers() -> None:
    sim = meter(READINGS[:2], enq_retry_s=2.0, start=10.0)
    assert sim.poll(9.0) == b""
    assert sim.next_deadline() == 10.0
    assert sim.poll(10.0) == bytes([ENQ])
    assert sim.poll(11.0) == b""
    assert sim.poll(12.0) == bytes([ENQ])
    assert sim.next_deadline() == 14.0
    sim.receive(NAK_B, 12.5)  # host busy
    assert sim.next_deadline() == 14.5
    sim.receive(ACK_B, 13.0)
    assert sim.poll(13.0).startswith(b"\x021H|\\^&||")


def test_lost_stx_makes_the_meter_time_out_and_send_everything_again() -> None:
    sim, rx = meter(READINGS[:3]), AstmReceiver()
    assert sim.poll(0.0) == bytes([ENQ])
    sim.receive(ACK_B, 0.0)
    start(rx)
    lost = rx.feed(sim.poll(0.0)[1:])  # the STX was lost: noise, nothing to answer
    assert lost
    assert all(isinstance(e, LinkError) and e.kind is LinkErrorKind.NOISE for e in lost)
    assert sim.next_deadline() == 15.0
    events = lost + run(sim, rx)
    noise = events[0]
    assert isinstance(noise, LinkError)
    assert noise.kind is LinkErrorKind.NOISE
    assert noise.raw.startswith(b"1H|")
    assert ended(events) == [TransferEnded(0, False), TransferEnded(6, True)]
    ((m, ok),) = messages(events)
    assert ok
    assert {o.record_key for o in observations(m)} == expected_keys(READINGS[:3])
    assert sim.transfers_aborted == 1


def test_sender_gives_up_after_six_transmissions() -> None:
    sim = meter(READINGS[:2])
    sim.poll(0.0)
    sim.receive(ACK_B, 0.0)
    sent = []
    for i in range(MAX_TRANSMISSIONS):
        sent.append(sim.poll(float(i)))
        sim.receive(NAK_B, float(i))
    assert len(set(sent)) == 1
    assert sent[0].startswith(b"\x021H")
    assert sim.next_deadline() == 5.0  # EOT right after the sixth NAK
    assert sim.poll(5.0) == bytes([EOT])
    assert sim.frames_sent == MAX_TRANSMISSIONS
    assert sim.retransmissions == MAX_TRANSMISSIONS - 1
    assert sim.transfers_aborted == 1
    assert sim.next_deadline() == 6.0


def test_sender_times_out_without_an_answer() -> None:
    sim = meter(READINGS[:2])
    sim.poll(0.0)
    sim.receive(ACK_B, 0.0)
    assert sim.poll(0.0).startswith(b"\x021")
    assert sim.next_deadline() == 15.0
    assert sim.poll(14.9) == b""
    assert sim.poll(15.0) == bytes([EOT])
    assert sim.transfers_aborted == 1


def test_long_patient_record_is_sent_in_etb_frames() -> None:
    sim, rx = meter(READINGS[:3], patient_id="x" * 500), AstmReceiver()
    events = run(sim, rx)
    texts = [e.text for e in events if isinstance(e, RecordReceived)]
    assert texts[1] == "P|1||" + "x" * 500
    assert rx.stats.frames_ok == len(texts) + 2  # P took three frames


def test_header_without_hub_clock_has_no_time() -> None:
    sim, rx = AstmMeterSim(READINGS[:3], clock_offset_s=500.0), AstmReceiver()
    ((m, ok),) = messages(run(sim, rx))
    assert ok
    assert m.header.transfer_time is None
    assert clock_offset(m.header, hub_now=HUB_NOW, tz=TZ) is None
    assert all(QualityFlag.DEVICE_TIME_ONLY in o.quality for o in observations(m))


def test_meter_clock_offset_is_measured_from_the_header() -> None:
    sim, rx = meter(READINGS[:3], clock_offset_s=-1200.0), AstmReceiver()
    ((m, _),) = messages(run(sim, rx))
    assert clock_offset(m.header, hub_now=HUB_NOW, tz=TZ) == -1200.0
    o = observations(m)[0]
    local = READINGS[0].time.replace(tzinfo=TZ).astimezone(UTC)
    assert o.effective_time == local + timedelta(seconds=1200)
    assert QualityFlag.CLOCK_OFFSET in o.quality


def test_contour_readings_are_plausible_and_deterministic() -> None:
    a = contour_readings(200, seed=9, start=T0, every=timedelta(hours=4), control_solution=True)
    assert a == contour_readings(
        200, seed=9, start=T0, every=timedelta(hours=4), control_solution=True
    )
    normal = [r for r in a if not r.markers or r.markers in ("A", "B")]
    assert all(4.0 <= r.value <= 12.0 for r in normal)
    assert sum(r.markers == "C" for r in a) == 1
    assert {"<", ">"} <= {r.markers for r in a}
    mg = contour_readings(20, seed=9, start=T0, every=timedelta(hours=4), unit="mg/dL")
    assert all(r.unit == "mg/dL" and r.value == int(r.value) for r in mg)
