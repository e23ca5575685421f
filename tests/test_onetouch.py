"""OneTouch Ultra 2: line codec, parsers, host session against the simulated meter, mapping.

The session and the simulator are driven in memory by one fake monotonic clock; the meter's
wall clock is derived from the same clock, so clock offsets are measurable exactly (±1 s).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_profiles.observation import QualityFlag
from device_profiles.serial.onetouch import (
    COMMAND_TIMEOUT_S,
    DUMP_IDLE_TIMEOUT_S,
    FLAG_PARITY_ERROR,
    GLUCOSE_HIGH_LIMIT_MG_DL,
    GLUCOSE_LOW_LIMIT_MG_DL,
    MAX_LINE_BYTES,
    MAX_RETRIES,
    ClockRead,
    DumpComplete,
    Identified,
    Line,
    LineError,
    LineReader,
    LineRejected,
    OneTouchError,
    OneTouchSession,
    Reading,
    ReadingParsed,
    SessionFailed,
    SessionState,
    Transmit,
    clock_offset_s,
    command,
    encode_line,
    parse_clock,
    parse_dump_header,
    parse_reading,
    parse_serial,
    parse_unit,
    parse_version,
    reading_to_observation,
    set_clock_command,
)
from device_profiles.serial.sim import SerialSim
from device_profiles.serial.sim_onetouch import (
    OneTouchFaults,
    OneTouchReading,
    OneTouchUltra2Sim,
    reading_text,
    ultra2_readings,
)
from device_profiles.units import GLUCOSE_MG_DL_PER_MMOL_L

HELSINKI = ZoneInfo("Europe/Helsinki")
HUB_T0 = datetime(2026, 3, 2, 8, 0, 0)  # hub's local wall clock at monotonic 0
START = datetime(2026, 2, 1, 7, 30)
EVENT_TYPES = (
    Transmit,
    Identified,
    ClockRead,
    ReadingParsed,
    DumpComplete,
    LineRejected,
    SessionFailed,
)


def one_line(data: bytes) -> Line:
    (item,) = LineReader().feed(data)
    assert isinstance(item, Line), item
    return item


def line_of(text: str) -> Line:
    return one_line(encode_line(text))


# --------------------------------------------------------------------------- harness


@dataclass
class Clock:
    now: float = 0.0

    def local(self) -> datetime:
        return HUB_T0 + timedelta(seconds=self.now)


def make_sim(readings: list[OneTouchReading], clock: Clock, **kwargs: object) -> OneTouchUltra2Sim:
    return OneTouchUltra2Sim(readings, local_now=clock.local, **kwargs)  # type: ignore[arg-type]


def drive(
    session: OneTouchSession,
    sim: SerialSim,
    clock: Clock,
    *,
    byte_at_a_time: bool = False,
    report_unplug: bool = True,
) -> list[object]:
    """Run session and simulator against each other until the session finishes."""
    events: list[object] = []
    sim.receive(session.start(clock.now), clock.now)
    for _ in range(100_000):
        out = sim.poll(clock.now)
        new = []
        chunks = [out[i : i + 1] for i in range(len(out))] if byte_at_a_time else [out]
        for chunk in chunks:
            new += session.feed(chunk, clock.now)
        if report_unplug and sim.unplugged:
            new += session.connection_lost(clock.now)
        new += session.poll(clock.now)
        for e in new:
            if isinstance(e, Transmit):
                sim.receive(e.data, clock.now)
        events += new
        if session.finished:
            return events
        if out or new:
            continue
        deadlines = [d for d in (sim.next_deadline(), session.next_deadline()) if d is not None]
        assert deadlines, "deadlock: nobody has anything to do"
        clock.now = max(clock.now, min(deadlines))
    raise AssertionError("session did not finish")


def of(events: list[object], kind: type) -> list:  # type: ignore[type-arg]
    return [e for e in events if isinstance(e, kind)]


def expected_reading(r: OneTouchReading) -> tuple[datetime, int, str | None, bool]:
    if r.comparator == "<":
        return r.time, GLUCOSE_LOW_LIMIT_MG_DL, "<", r.control
    if r.comparator == ">":
        return r.time, GLUCOSE_HIGH_LIMIT_MG_DL, ">", r.control
    assert r.value_mg_dl is not None
    return r.time, r.value_mg_dl, None, r.control


def got_reading(r: Reading) -> tuple[datetime, int, str | None, bool]:
    return r.time, r.value_mg_dl, r.comparator, r.control


# --------------------------------------------------------------------------- framing


def test_checksum_matches_published_examples() -> None:
    # Example lines from public Ultra 2 uploaders, with the checksums the meter sent.
    assert encode_line('P 003,"GMF600DCY","MG/DL "').endswith(b" 05A6\r\n")
    assert encode_line('P "SAT","03/21/15","16:45:24   ","  081 ","N","03", 00').endswith(
        b" 09B6\r\n"
    )
    assert encode_line('T "SAT","08/03/13","22:12:00   "').endswith(b" 0608\r\n")


def test_command_bytes() -> None:
    assert command("DM@") == b"\x11\rDM@\r"
    assert set_clock_command(datetime(2026, 3, 2, 8, 5, 9)) == b"\x11\rDMT03/02/26 08:05:09\r"
    with pytest.raises(OneTouchError):
        command("DM\r")
    with pytest.raises(OneTouchError):
        set_clock_command(datetime(1999, 12, 31))


def test_line_reader_reasons_and_tolerance() -> None:
    good = encode_line('@ "GMF600DCY"')
    stream = (
        b"\x11\x00"
        + good  # stray DC1/NUL before the line, LF after its CR
        + b'@ "GMF600DCY" 02F5\r'  # off by one
        + b"no checksum here\r"
        + b'@ "GMF\xe9600DCY" 02F4\r'
        + b"\r\r\n"  # empty lines are skipped
    )
    items = LineReader().feed(stream)
    assert items[0] == Line('@ "GMF600DCY"', b'@ "GMF600DCY" 02F4')
    reasons = [i.reason for i in items[1:] if isinstance(i, LineError)]
    assert reasons == [
        "bad checksum: got 02F5 computed 02F4",
        "no checksum (expected text, space, 4 upper-case hex digits)",
        "non-ASCII byte 0xE9 at offset 6",
    ]
    assert len(items) == 4


def test_line_reader_drops_overlong_run_and_resyncs() -> None:
    reader = LineReader()
    items = reader.feed(b"A" * (MAX_LINE_BYTES * 3))
    assert len(items) == 1
    assert isinstance(items[0], LineError)
    assert "longer than" in items[0].reason
    assert len(items[0].raw) == MAX_LINE_BYTES + 1
    items = reader.feed(b"more junk\r" + encode_line("?P02.00.00"))
    assert items == [Line("?P02.00.00", encode_line("?P02.00.00")[:-2])]


@settings(max_examples=200)
@given(st.binary(max_size=400), st.data())
def test_line_reader_random_bytes_chunking_invariant(data: bytes, draw: st.DataObject) -> None:
    cuts = sorted(draw.draw(st.lists(st.integers(0, len(data)), max_size=8)))
    reader = LineReader()
    chunked = []
    for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True):
        chunked += reader.feed(data[a:b])
    whole = LineReader().feed(data)
    assert chunked == whole
    for item in whole:
        assert isinstance(item, Line | LineError)
        assert b"\r" not in item.raw
        assert len(item.raw) <= MAX_LINE_BYTES + 1
        if isinstance(item, Line):
            assert encode_line(item.text)[:-2] == item.raw


_printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1)


@settings(max_examples=300)
@given(_printable, st.data())
def test_any_single_byte_corruption_is_detected(text: str, draw: st.DataObject) -> None:
    """Changing any one byte of a line except its CR, to any value but CR, yields no Line.

    (A byte turned into CR splits the line and the terminating CR turned into something else
    merges two lines: both are outside this property.) Bytes turned into LF/DC1/NUL are
    dropped by the reader, which the checksum also detects.
    """
    wire = bytearray(encode_line(text)[:-2])  # without CR LF
    i = draw.draw(st.integers(0, len(wire) - 1))
    new = draw.draw(st.integers(0, 255).filter(lambda b: b not in (wire[i], 0x0D)))
    wire[i] = new
    items = LineReader().feed(bytes(wire) + b"\r")
    assert len(items) == 1
    assert isinstance(items[0], LineError)


# --------------------------------------------------------------------------- parsers


def test_parse_answers() -> None:
    assert parse_serial(line_of('@ "GMF600DCY"')) == "GMF600DCY"
    assert parse_version(line_of("?P02.00.00 30/08/06")) == "P02.00.00 30/08/06"
    assert parse_clock(line_of('F "SAT","03/21/15","16:47:02   "')) == datetime(
        2015, 3, 21, 16, 47, 2
    )
    assert parse_clock(line_of('T "SAT","08/03/13","22:12:00   "')) == datetime(2013, 8, 3, 22, 12)
    assert parse_unit(line_of('SU?,"MMOL/L"')) == "MMOL/L"
    header = parse_dump_header(line_of('P 003,"GMF600DCY","MG/DL "'))
    assert (header.count, header.serial, header.unit) == (3, "GMF600DCY", "MG/DL")


def test_parse_reading_published_example() -> None:
    r = parse_reading(line_of('P "SAT","03/21/15","16:42:11   ","  105 ","B","02", 00'))
    assert (r.time, r.value_mg_dl, r.comparator, r.control) == (
        datetime(2015, 3, 21, 16, 42, 11),
        105,
        None,
        False,
    )
    assert (r.meal, r.comment, r.extra, r.flags) == ("B", "02", (" 00",), ())


@pytest.mark.parametrize(
    ("field", "value", "comparator", "control", "flags"),
    [
        ("C 120 ", 120, None, True, ()),
        ("  099?", 99, None, False, (FLAG_PARITY_ERROR,)),
        ("  600 ", 600, None, False, ()),  # the limits themselves are in range
        ("  020 ", 20, None, False, ()),
        ("  019 ", 20, "<", False, ()),
        ("  731 ", 600, ">", False, ()),
        (" HIGH ", 600, ">", False, ()),
        ("  LO  ", 20, "<", False, ()),
    ],
)
def test_parse_reading_value_field(
    field: str, value: int, comparator: str | None, control: bool, flags: tuple[str, ...]
) -> None:
    r = parse_reading(line_of(f'P "MON","11/22/04","11:07:41   ","{field}","N","00", 00'))
    assert (r.value_mg_dl, r.comparator, r.control, r.flags) == (
        value,
        comparator,
        control,
        flags,
    )


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ('P "MON","11/22/04","11:07:41   ","  0x9 ","N","00", 00', "'value'"),
        ('P "MON","11/22/04","11:07:41   ","X 099 ","N","00", 00', "'value'"),
        ('P "MOX","11/22/04","11:07:41   ","  099 ","N","00", 00', "'weekday'"),
        ('P "MON","13/22/04","11:07:41   ","  099 ","N","00", 00', "'date'/'time'"),
        ('P "MON","11/22/04","11:07",  "  099 ","N","00", 00', "'time'"),
        ('P "MON","11/22/04","11:07:41   ","  099 ","n","00", 00', "'meal'"),
        ('P "MON","11/22/04","11:07:41   ","  099 ","N","0"', "'comment'"),
        ('P "MON","11/22/04","11:07:41   ","  099 "', "at least 6"),
        ('@ "GMF600DCY"', "dump record"),
    ],
)
def test_parse_reading_errors_name_the_field(text: str, names: str) -> None:
    with pytest.raises(OneTouchError, match=names) as info:
        parse_reading(line_of(text))
    assert repr(text) in str(info.value)


def test_parse_answer_errors() -> None:
    with pytest.raises(OneTouchError, match="'serial'"):
        parse_serial(line_of('@ "GMF600DC"'))
    with pytest.raises(OneTouchError, match="software-version"):
        parse_version(line_of('@ "GMF600DCY"'))
    with pytest.raises(OneTouchError, match="2 fields, expected 3"):
        parse_clock(line_of('F "SAT","03/21/15"'))
    with pytest.raises(OneTouchError, match="'count'"):
        parse_dump_header(line_of('P 3,"GMF600DCY","MG/DL "'))


@settings(max_examples=300)
@given(_printable)
def test_parsers_raise_only_onetouch_error(text: str) -> None:
    line = Line(text, text.encode())
    for parse in (parse_serial, parse_version, parse_clock, parse_unit):
        with contextlib.suppress(OneTouchError):
            parse(line)
    for parse_p in (parse_dump_header, parse_reading):
        with contextlib.suppress(OneTouchError):
            parse_p(Line("P " + text, b""))


_meter_times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31))


@st.composite
def _sim_readings(draw: st.DrawFn) -> OneTouchReading:
    kind = draw(st.sampled_from(["in", "lo", "hi", "lo-text", "hi-text"]))
    time = draw(_meter_times).replace(microsecond=0)
    value: int | None = {
        "in": draw(st.integers(20, 600)),
        "lo": draw(st.integers(0, 19)),
        "hi": draw(st.integers(601, 999)),
    }.get(kind)
    comparator = {"lo": "<", "lo-text": "<", "hi": ">", "hi-text": ">"}.get(kind)
    return OneTouchReading(
        time,
        value,
        comparator,
        control=draw(st.booleans()),
        meal=draw(st.sampled_from("NBA")),
        comment=f"{draw(st.integers(0, 11)):02d}",
    )


@settings(max_examples=300)
@given(_sim_readings())
def test_reading_round_trip_through_sim_encoder(r: OneTouchReading) -> None:
    parsed = parse_reading(one_line(encode_line(reading_text(r))))
    assert got_reading(parsed) == expected_reading(r)
    assert (parsed.meal, parsed.comment, parsed.flags) == (r.meal, r.comment, ())


def test_generated_readings_round_trip() -> None:
    readings = ultra2_readings(40, seed=3, start=START, every=timedelta(hours=5), control=True)
    kinds = {(r.comparator, r.value_mg_dl is None, r.control) for r in readings}
    assert {("<", True, False), ("<", False, False), (">", True, False), (">", False, False)} <= (
        kinds
    )
    assert any(r.control for r in readings)
    for r in readings:
        assert got_reading(parse_reading(line_of(reading_text(r)))) == expected_reading(r)


# --------------------------------------------------------------------------- session ↔ sim


def test_session_reads_everything_once() -> None:
    clock = Clock()
    readings = ultra2_readings(25, seed=1, start=START, every=timedelta(hours=7), control=True)
    offset = 2 * 3600 + 17.0
    sim = make_sim(readings, clock, clock_offset_s=offset, line_delay_s=0.07)
    session = OneTouchSession()
    events = drive(session, sim, clock)

    assert all(isinstance(e, EVENT_TYPES) for e in events)
    assert of(events, Identified) == [Identified(sim.serial, "P02.00.00")]
    assert of(events, LineRejected) == []
    assert of(events, SessionFailed) == []
    parsed = [e.reading for e in of(events, ReadingParsed)]
    # newest first, as the meter dumps; each record exactly once
    assert [got_reading(r) for r in parsed] == [expected_reading(r) for r in reversed(readings)]
    assert of(events, DumpComplete) == [DumpComplete(25, 25, 0, False)]
    assert of(events, DumpComplete)[0].complete
    assert session.state is SessionState.DONE
    assert session.next_deadline() is None

    (clock_read,) = of(events, ClockRead)
    hub = (HUB_T0 + timedelta(seconds=clock_read.at)).replace(tzinfo=HELSINKI)
    measured = clock_offset_s(clock_read.device_time, hub_time=hub, tz=HELSINKI)
    assert abs(measured - offset) <= 1.0

    observations = [
        reading_to_observation(
            r, serial=sim.serial, tz=HELSINKI, clock_offset_s=measured, simulated=True
        )
        for r in parsed
    ]
    kept = [o for o in observations if o is not None]
    assert len(kept) == len(parsed) - sum(r.control for r in readings)
    assert len({o.record_key for o in kept}) == len(kept)
    for r, o in zip(parsed, observations, strict=True):
        if o is None:
            assert r.control
            continue
        assert o.measure == "glucose.capillary"
        assert o.unit == "mmol/L"
        assert o.value == r.value_mg_dl / GLUCOSE_MG_DL_PER_MMOL_L
        assert o.provenance.original_value == r.value_mg_dl
        assert o.provenance.original_unit == "mg/dL"
        assert o.provenance.raw == r.raw
        assert o.comparator == r.comparator
        assert QualityFlag.SIMULATED in o.quality
        assert QualityFlag.CLOCK_OFFSET in o.quality
        assert (QualityFlag.BELOW_RANGE in o.quality) == (r.comparator == "<")
        assert (QualityFlag.ABOVE_RANGE in o.quality) == (r.comparator == ">")
        true_utc = r.time.replace(tzinfo=HELSINKI).astimezone(UTC) - timedelta(seconds=offset)
        assert abs((o.effective_time - true_utc).total_seconds()) <= 1.0
        assert o.device_time == r.time.isoformat()
    assert any(o.comparator == "<" for o in kept)
    assert any(o.comparator == ">" for o in kept)


def test_byte_at_a_time_gives_the_same_events() -> None:
    readings = ultra2_readings(12, seed=5, start=START, every=timedelta(hours=3))
    runs = []
    for byte_at_a_time in (False, True):
        clock = Clock()
        sim = make_sim(readings, clock, faults=OneTouchFaults(noise_every=4, seed=9))
        runs.append(drive(OneTouchSession(), sim, clock, byte_at_a_time=byte_at_a_time))
    assert runs[0] == runs[1]
    assert len(of(runs[0], ReadingParsed)) == 12


def test_empty_meter() -> None:
    clock = Clock()
    events = drive(OneTouchSession(), make_sim([], clock), clock)
    assert of(events, DumpComplete) == [DumpComplete(0, 0)]


def test_noise_lines_rejected_others_kept() -> None:
    clock = Clock()
    readings = ultra2_readings(30, seed=2, start=START, every=timedelta(hours=2))
    sim = make_sim(readings, clock, faults=OneTouchFaults(noise_every=3, seed=4))
    events = drive(OneTouchSession(), sim, clock)
    rejected = of(events, LineRejected)
    assert len(rejected) == sim.noise_lines > 5
    assert all(r.reason.startswith("non-ASCII byte 0xFF") for r in rejected)
    assert len(of(events, ReadingParsed)) == 30
    (done,) = of(events, DumpComplete)
    assert done.complete
    assert not done.timed_out


def test_bad_checksums_reported_and_gap_visible() -> None:
    clock = Clock()
    readings = ultra2_readings(30, seed=2, start=START, every=timedelta(hours=2))
    # lines: 1 serial, 2 version, 3 clock, 4 header, 5.. records: every 5th line is corrupted
    sim = make_sim(readings, clock, faults=OneTouchFaults(bad_checksum_every=5))
    events = drive(OneTouchSession(), sim, clock)
    bad = of(events, LineRejected)
    assert bad
    assert all(r.reason.startswith("bad checksum: got") for r in bad)
    lost = len(range(5, 4 + 30 + 1, 5))
    (done,) = of(events, DumpComplete)
    assert done == DumpComplete(30, 30 - lost, lost, timed_out=True)
    assert not done.complete
    parsed = {got_reading(e.reading) for e in of(events, ReadingParsed)}
    assert len(parsed) == 30 - lost
    assert parsed <= {expected_reading(r) for r in readings}


def test_dropped_bytes_never_yield_wrong_readings() -> None:
    clock = Clock()
    readings = ultra2_readings(40, seed=8, start=START, every=timedelta(hours=2))
    sim = make_sim(readings, clock, faults=OneTouchFaults(drop_byte_every=150))
    events = drive(OneTouchSession(), sim, clock)
    assert sim.bytes_dropped > 5
    assert of(events, LineRejected)
    truth = {expected_reading(r) for r in readings}
    parsed = [got_reading(e.reading) for e in of(events, ReadingParsed)]
    assert set(parsed) <= truth
    assert len(parsed) == len(set(parsed))
    (done,) = of(events, DumpComplete)
    assert done.received == len(parsed) < done.expected == 40


def test_asleep_meter_answers_after_retries() -> None:
    clock = Clock()
    readings = ultra2_readings(5, seed=1, start=START, every=timedelta(hours=1))
    sim = make_sim(readings, clock, faults=OneTouchFaults(ignore_first_commands=2))
    events = drive(OneTouchSession(), sim, clock)
    retries = [e for e in of(events, Transmit) if e.data == command("DM@")]
    assert len(retries) == 2
    assert sim.commands_ignored == 2
    assert of(events, Identified)
    assert of(events, DumpComplete)[0].complete
    assert clock.now >= 2 * COMMAND_TIMEOUT_S


def test_meter_that_never_answers_fails_the_session() -> None:
    clock = Clock()
    sim = make_sim([], clock, faults=OneTouchFaults(ignore_first_commands=100))
    events = drive(OneTouchSession(), sim, clock)
    assert events[-1] == SessionFailed(f"no answer to DM@ after {MAX_RETRIES + 1} attempts")
    assert sim.commands_received == MAX_RETRIES + 1


def test_unplug_mid_dump_fails_cleanly() -> None:
    clock = Clock()
    readings = ultra2_readings(20, seed=1, start=START, every=timedelta(hours=1))
    sim = make_sim(readings, clock, faults=OneTouchFaults(unplug_after_lines=4 + 7))
    session = OneTouchSession()
    events = drive(session, sim, clock)
    assert len(of(events, ReadingParsed)) == 7
    assert not of(events, DumpComplete)
    assert events[-1] == SessionFailed("serial link lost while dump after 7 of 20 records")
    assert session.next_deadline() is None
    assert session.poll(clock.now + 100) == []
    assert session.connection_lost(clock.now) == []


def test_replug_after_unplug_reads_everything() -> None:
    clock = Clock()
    readings = ultra2_readings(20, seed=1, start=START, every=timedelta(hours=1))
    sim = make_sim(readings, clock, faults=OneTouchFaults(unplug_after_lines=4 + 7))
    first = drive(OneTouchSession(), sim, clock)
    assert isinstance(first[-1], SessionFailed)
    clock.now += 60.0
    sim.replug(clock.now)
    assert not sim.unplugged
    events = drive(OneTouchSession(), sim, clock)
    assert of(events, DumpComplete) == [DumpComplete(20, 20)]
    assert len(of(events, ReadingParsed)) == 20


def test_silent_unplug_ends_dump_by_timeout() -> None:
    clock = Clock()
    readings = ultra2_readings(20, seed=1, start=START, every=timedelta(hours=1))
    sim = make_sim(readings, clock, faults=OneTouchFaults(unplug_after_lines=4 + 7))
    events = drive(OneTouchSession(), sim, clock, report_unplug=False)
    assert of(events, DumpComplete) == [DumpComplete(20, 7, 0, timed_out=True)]
    assert clock.now == pytest.approx(DUMP_IDLE_TIMEOUT_S)


def test_dump_header_of_another_meter_fails() -> None:
    session = OneTouchSession()
    session.start(0.0)
    session.feed(encode_line('@ "AAAAAAAAY"'), 0.1)
    session.feed(encode_line("?P02.00.00"), 0.2)
    session.feed(encode_line('F "SAT","03/21/15","16:47:02   "'), 0.3)
    events = session.feed(encode_line('P 001,"BBBBBBBBY","MG/DL "'), 0.4)
    assert events == [SessionFailed("dump header serial BBBBBBBBY is not AAAAAAAAY")]


def test_wrong_answer_is_rejected_and_waiting_goes_on() -> None:
    session = OneTouchSession()
    session.start(0.0)
    events = session.feed(encode_line("?P02.00.00"), 0.5)
    assert len(events) == 1
    assert isinstance(events[0], LineRejected)
    assert "serial-number answer" in events[0].reason
    assert session.state is SessionState.SERIAL
    assert session.next_deadline() == COMMAND_TIMEOUT_S


def test_sim_sets_clock_and_ignores_malformed_commands() -> None:
    clock = Clock()
    sim = make_sim([], clock)
    new = HUB_T0 - timedelta(minutes=3)
    sim.receive(b"\x11\rDMT13/45/26 00:00:00\r\x11\rXYZ\r" + set_clock_command(new), 0.0)
    items = LineReader().feed(sim.poll(0.0))
    assert sim.malformed_commands == 2
    assert [parse_clock(i) for i in items if isinstance(i, Line)] == [new]
    assert sim.clock_offset_s == -180.0
    clock.now = 10.0
    sim.receive(command("DMF") + command("DMSU?"), 10.0)
    f, unit = LineReader().feed(sim.poll(10.0))
    assert isinstance(f, Line)
    assert isinstance(unit, Line)
    assert parse_clock(f) == HUB_T0 + timedelta(seconds=10 - 180)
    assert parse_unit(unit) == "MG/DL"


@settings(max_examples=150)
@given(st.lists(st.tuples(st.binary(max_size=80), st.floats(0, 5)), max_size=30))
def test_session_random_bytes_only_documented_outcomes(chunks: list[tuple[bytes, float]]) -> None:
    session = OneTouchSession()
    now = 0.0
    session.start(now)
    for data, dt in chunks:
        now += dt
        events = session.feed(data, now) + session.poll(now)
        assert all(isinstance(e, EVENT_TYPES) for e in events)
        for e in events:
            if isinstance(e, DumpComplete):
                assert e.received <= e.expected
    deadline = session.next_deadline()
    assert deadline is None or deadline > now


@settings(max_examples=100)
@given(st.data())
def test_session_with_valid_lines_in_any_order(draw: st.DataObject) -> None:
    """Checksummed but arbitrary answers: still only documented events, never a crash."""
    pool = [
        '@ "GMF600DCY"',
        "?P02.00.00 30/08/06",
        'F "SAT","03/21/15","16:47:02   "',
        'P 002,"GMF600DCY","MG/DL "',
        'P "SAT","03/21/15","16:45:24   ","  081 ","N","03", 00',
        'P "SAT","02/30/15","16:45:24   ","  081 ","N","03", 00',
        "Z",
    ]
    session = OneTouchSession()
    session.start(0.0)
    for i, text in enumerate(draw.draw(st.lists(st.sampled_from(pool), max_size=20))):
        events = session.feed(encode_line(text), float(i))
        assert all(isinstance(e, EVENT_TYPES) for e in events)


def test_observation_without_offset_and_parity_flag() -> None:
    r = parse_reading(line_of('P "SUN","03/29/26","03:30:00   ","  099?","N","00", 00'))
    o = reading_to_observation(
        r, serial="GMF600DCY", tz=HELSINKI, clock_offset_s=None, simulated=False
    )
    assert o is not None
    assert o.quality == {QualityFlag.DEVICE_TIME_ONLY, QualityFlag.QUESTIONABLE}
    # 03:30 on the spring DST day does not exist in Helsinki: read with the offset before
    # the change (EET, UTC+2), as a meter clock not yet moved forward would mean it
    assert o.effective_time == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    assert o.record_key == "ot2:GMF600DCY@20260329T033000:99+parity-error"


def test_clock_offset_refuses_naive_hub_time() -> None:
    with pytest.raises(ValueError, match="naive"):
        clock_offset_s(HUB_T0, hub_time=HUB_T0, tz=HELSINKI)
