"""LifeScan OneTouch Ultra 2 serial protocol, host side (sans-I/O).

Wire (PROTOCOLS.md): 9600 baud 8N1, ASCII. The host wakes the meter with DC1 CR and sends each
command as text + CR, e.g. ``b"\\x11\\rDM@\\r"``. Every answer line is text, one space, the
16-bit sum of the text bytes as four upper-case hex digits, CR; the meter follows CR with LF
(tolerated, like stray DC1/NUL bytes)::

    DM@    @ "GMF600DCY" 02F4                          serial number, 9 characters
    DM?    ?P02.00.00 30/08/06 03BC                    software version (and its date)
    DMF    F "SAT","03/21/15","16:47:02   " 0604       clock: weekday, MM/DD/YY, 24 h time
    DMT..  T "SAT",... (same layout)                   set clock: DMTMM/DD/YY HH:MM:SS
    DMSU?  SU?,"MG/DL " 02CA                           display unit ("MG/DL " or "MMOL/L")
    DMP    P 003,"GMF600DCY","MG/DL " 05A6             header: record count, serial, unit
           P "SAT","03/21/15","16:45:24   ","  081 ","N","03", 00 09B6
                                                       one line per record, newest first

A record's value field is six characters: control-solution marker (``C`` or space), space,
three digits in mg/dL (always mg/dL, whatever the display unit), then a marker that is ``?``
when the meter flags the stored record (the published field name is "parity error"; we treat
the value as questionable). Then the meal flag (``N`` none, ``B`` before, ``A`` after) and a
comment code ``00``-``11``; the trailing `` 00`` field has no published meaning and is kept raw.
The year is 2000 + YY.

Sources: PROTOCOLS.md; the line layouts above as published by LifeScan and reproduced in two
independent public uploaders (glucometerutils ``otultra2``, Tidepool ``oneTouchUltra2``), whose
example lines' checksums we re-computed (05A6, 09B6 and 0608 agree with the 16-bit sum).

UNVERIFIED (no primary source available to us): how LO/HI results are stored. The Tidepool
uploader treats stored numbers below 20 / above 600 mg/dL as LO / HI, so we map those numbers
to the range limit with comparator ``<`` / ``>``; a text body (``HIGH``, ``HI``, ``LO``,
``LOW``) in the value field is accepted the same way. The meaning of the trailing ``00`` field,
the layout of an empty dump (assumed ``P 000,...``), and whether a serial can have other than
9 characters (we require 9, as both uploaders do) are also unverified.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Final, Literal
from zoneinfo import ZoneInfo

from device_profiles.observation import (
    Observation,
    Provenance,
    QualityFlag,
    clock_quality,
    utc,
)
from device_profiles.units import convert

__all__ = [
    "BAUD_RATE",
    "CMD_DUMP",
    "CMD_READ_CLOCK",
    "CMD_SERIAL",
    "CMD_SET_CLOCK",
    "CMD_UNIT",
    "CMD_VERSION",
    "COMMAND_TIMEOUT_S",
    "DUMP_IDLE_TIMEOUT_S",
    "FLAG_PARITY_ERROR",
    "GLUCOSE_HIGH_LIMIT_MG_DL",
    "GLUCOSE_LOW_LIMIT_MG_DL",
    "MAX_LINE_BYTES",
    "MAX_RETRIES",
    "ClockRead",
    "DumpComplete",
    "DumpHeader",
    "Identified",
    "Line",
    "LineError",
    "LineReader",
    "LineRejected",
    "OneTouchError",
    "OneTouchEvent",
    "OneTouchSession",
    "Reading",
    "ReadingParsed",
    "SessionFailed",
    "SessionState",
    "Transmit",
    "checksum",
    "clock_offset_s",
    "command",
    "encode_line",
    "parse_clock",
    "parse_dump_header",
    "parse_reading",
    "parse_serial",
    "parse_unit",
    "parse_version",
    "reading_to_observation",
    "record_key",
    "set_clock_command",
]

BAUD_RATE: Final = 9600  # 8N1, no flow control (PROTOCOLS.md)
WAKE: Final = b"\x11\r"  # DC1 CR before every command wakes the meter (PROTOCOLS.md)
CMD_VERSION: Final = "DM?"
CMD_SERIAL: Final = "DM@"
CMD_READ_CLOCK: Final = "DMF"
CMD_SET_CLOCK: Final = "DMT"  # followed by MM/DD/YY HH:MM:SS
CMD_DUMP: Final = "DMP"
CMD_UNIT: Final = "DMSU?"

#: Longest line accepted, bytes. The longest known line (a dump record) is 59 bytes + CR LF.
MAX_LINE_BYTES: Final = 128
#: Meter display range, mg/dL: below it the meter shows LO, above it HI. OneTouch Ultra family
#: owner's material ("lower than 20 mg/dL", "over 600 mg/dL"); the Tidepool Ultra 2 uploader
#: uses the same two thresholds.
GLUCOSE_LOW_LIMIT_MG_DL: Final = 20
GLUCOSE_HIGH_LIMIT_MG_DL: Final = 600
#: Seconds to wait for a one-line answer before re-sending the command (our choice: a line is
#: < 70 ms at 9600 baud; the Tidepool uploader polls every 2 s).
COMMAND_TIMEOUT_S: Final = 3.0
#: Re-sends of an unanswered command before the session fails (a sleeping meter may miss the
#: first wake-up).
MAX_RETRIES: Final = 3
#: Seconds without any line, once the dump header arrived, after which the dump is over.
DUMP_IDLE_TIMEOUT_S: Final = 3.0
#: Reading flag: the meter marked the stored record with ``?`` ("parity error").
FLAG_PARITY_ERROR: Final = "parity-error"

SOURCE: Final = "serial:onetouch-ultra2"
_DAYS: Final = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")
_IGNORED: Final = frozenset(b"\n\x11\x00")  # LF after CR, stray DC1 echo, NUL from line noise
_CR: Final = 0x0D
_FRAMED: Final = re.compile(rb"(.+) ([0-9A-F]{4})")
_SERIAL: Final = re.compile(r"[0-9A-Z]{9}")
_DATE: Final = re.compile(r"([0-9]{2})/([0-9]{2})/([0-9]{2})")
_TIME: Final = re.compile(r"([0-9]{2}):([0-9]{2}):([0-9]{2}) *")
_VALUE_DIGITS: Final = re.compile(r" [0-9]{3}")
_HIGH_TEXT: Final = frozenset({"HIGH", "HI"})
_LOW_TEXT: Final = frozenset({"LOW", "LO"})


class OneTouchError(ValueError):
    """A checksummed line that does not have the layout its place in the dialogue requires."""


# --------------------------------------------------------------------------- framing


def checksum(text: bytes) -> int:
    """The line checksum: sum of the text bytes modulo 2^16."""
    return sum(text) & 0xFFFF


def encode_line(text: str) -> bytes:
    """A meter answer line as the meter sends it: text, space, checksum, CR LF."""
    raw = text.encode("ascii")
    return raw + b" %04X\r\n" % checksum(raw)


def command(text: str) -> bytes:
    """The bytes the host writes for one command: wake-up, text, CR."""
    if not text or not all(" " <= c <= "~" for c in text):
        raise OneTouchError(f"command {text!r} must be non-empty printable ASCII")
    return WAKE + text.encode("ascii") + b"\r"


def set_clock_command(device_time: datetime) -> bytes:
    """``DMT`` with the meter's new local wall-clock time (naive; the meter has no zone)."""
    if device_time.tzinfo is not None or not 2000 <= device_time.year <= 2099:
        raise OneTouchError(f"{device_time} must be naive and in 2000-2099 (two-digit year)")
    return command(CMD_SET_CLOCK + device_time.strftime("%m/%d/%y %H:%M:%S"))


@dataclass(frozen=True, slots=True)
class Line:
    """A line whose checksum is valid: ``text`` without the checksum, ``raw`` as received."""

    text: str
    raw: bytes


@dataclass(frozen=True, slots=True)
class LineError:
    """A line that was dropped, and why."""

    reason: str
    raw: bytes


def _check_line(raw: bytes) -> Line | LineError:
    bad = next((i for i, b in enumerate(raw) if not 0x20 <= b <= 0x7E), None)
    if bad is not None:
        return LineError(f"non-ASCII byte 0x{raw[bad]:02X} at offset {bad}", raw)
    m = _FRAMED.fullmatch(raw)
    if m is None:
        return LineError("no checksum (expected text, space, 4 upper-case hex digits)", raw)
    text, given = m.group(1), int(m.group(2), 16)
    computed = checksum(text)
    if given != computed:
        return LineError(f"bad checksum: got {given:04X} computed {computed:04X}", raw)
    return Line(text.decode("ascii"), raw)


class LineReader:
    """Splits the meter's byte stream into checked lines.

    CR ends a line; LF, DC1 and NUL are dropped wherever they appear; empty lines are skipped.
    A run longer than ``max_line`` bytes is reported once and discarded up to the next CR.
    """

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        self._max = max_line
        self._buf = bytearray()
        self._discarding = False

    def feed(self, data: bytes) -> list[Line | LineError]:
        out: list[Line | LineError] = []
        for b in data:
            if b == _CR:
                if self._buf and not self._discarding:
                    out.append(_check_line(bytes(self._buf)))
                self._buf.clear()
                self._discarding = False
            elif b in _IGNORED or self._discarding:
                continue
            else:
                self._buf.append(b)
                if len(self._buf) > self._max:
                    reason = f"line longer than {self._max} bytes: dropped up to the next CR"
                    out.append(LineError(reason, bytes(self._buf)))
                    self._buf.clear()
                    self._discarding = True
        return out


# --------------------------------------------------------------------------- parsers


def _error(line: Line, what: str) -> OneTouchError:
    return OneTouchError(f"{what} in line {line.text!r}")


def _body(line: Line, prefix: str, what: str) -> str:
    if not line.text.startswith(prefix):
        raise _error(line, f"not a {what} (expected it to start with {prefix!r})")
    return line.text[len(prefix) :]


def _quoted(line: Line, fields: list[str], i: int, name: str) -> str:
    if i >= len(fields):
        raise _error(line, f"field {name!r} missing")
    f = fields[i]
    if len(f) < 2 or f[0] != '"' or f[-1] != '"':
        raise _error(line, f"field {name!r} is not quoted: {f!r}")
    return f[1:-1]


def _serial_field(line: Line, fields: list[str], i: int) -> str:
    serial = _quoted(line, fields, i, "serial")
    if not _SERIAL.fullmatch(serial):
        raise _error(line, f"field 'serial' {serial!r} is not 9 characters 0-9/A-Z")
    return serial


def _device_time(line: Line, fields: list[str], first: int) -> datetime:
    """Weekday, date and time fields starting at ``first``: a naive device wall-clock time."""
    day = _quoted(line, fields, first, "weekday")
    if day not in _DAYS:
        raise _error(line, f"field 'weekday' {day!r} is not one of {', '.join(_DAYS)}")
    date = _DATE.fullmatch(_quoted(line, fields, first + 1, "date"))
    if date is None:
        raise _error(line, "field 'date' is not MM/DD/YY")
    time = _TIME.fullmatch(_quoted(line, fields, first + 2, "time"))
    if time is None:
        raise _error(line, "field 'time' is not HH:MM:SS")
    month, mday, year = (int(g) for g in date.groups())
    hour, minute, second = (int(g) for g in time.groups())
    try:
        return datetime(2000 + year, month, mday, hour, minute, second)  # noqa: DTZ001
    except ValueError as exc:
        raise _error(line, f"fields 'date'/'time' are not a valid time ({exc})") from None


def parse_serial(line: Line) -> str:
    """``@ "GMF600DCY"`` (answer to ``DM@``) → the serial number."""
    return _serial_field(line, [_body(line, "@ ", "serial-number answer")], 0)


def parse_version(line: Line) -> str:
    """``?P02.00.00 30/08/06`` (answer to ``DM?``) → ``P02.00.00 30/08/06``."""
    version = _body(line, "?", "software-version answer")
    if not version.strip():
        raise _error(line, "software version is empty")
    return version


def parse_clock(line: Line) -> datetime:
    """``F "SAT","03/21/15","16:47:02   "`` (``DMF``; ``T ...`` after ``DMT``) → naive time."""
    prefix = "T " if line.text.startswith("T ") else "F "
    fields = _body(line, prefix, "clock answer").split(",")
    if len(fields) != 3:
        raise _error(line, f"clock answer has {len(fields)} fields, expected 3")
    return _device_time(line, fields, 0)


def parse_unit(line: Line) -> str:
    """``SU?,"MG/DL "`` (answer to ``DMSU?``) → the display unit as spelled, e.g. ``MG/DL``."""
    fields = _body(line, "SU?,", "unit answer").split(",")
    unit = _quoted(line, fields, 0, "unit").strip()
    if len(fields) != 1 or not unit:
        raise _error(line, "unit answer must be one non-empty quoted field")
    return unit


@dataclass(frozen=True, slots=True)
class DumpHeader:
    count: int
    serial: str
    unit: str  # display unit as the meter spells it ("MG/DL", "MMOL/L"); values are mg/dL


def parse_dump_header(line: Line) -> DumpHeader:
    """``P 003,"GMF600DCY","MG/DL "`` → count, serial and display unit."""
    fields = _body(line, "P ", "dump header").split(",")
    if len(fields) != 3:
        raise _error(line, f"dump header has {len(fields)} fields, expected 3")
    if not re.fullmatch(r"[0-9]{3}", fields[0]):
        raise _error(line, f"field 'count' {fields[0]!r} is not 3 digits")
    unit = _quoted(line, fields, 2, "unit").strip()
    if not unit:
        raise _error(line, "field 'unit' is empty")
    return DumpHeader(count=int(fields[0]), serial=_serial_field(line, fields, 1), unit=unit)


@dataclass(frozen=True, slots=True, kw_only=True)
class Reading:
    """One stored record. Out-of-range results carry the range limit and a comparator."""

    time: datetime  # naive device wall-clock time
    value_mg_dl: int
    comparator: Literal["<", ">"] | None
    control: bool  # control-solution test: never patient data
    flags: tuple[str, ...]  # value markers, e.g. FLAG_PARITY_ERROR
    raw: str  # the line text without its checksum
    meal: str = "N"  # N none, B before meal, A after meal
    comment: str = "00"  # 00 none, 01-11 comment codes
    extra: tuple[str, ...] = ()  # fields after the comment, raw (known layout: " 00")


def _value(line: Line, field: str) -> tuple[int, Literal["<", ">"] | None]:
    body = field[1:-1]
    if _VALUE_DIGITS.fullmatch(body):
        v = int(body)
        if v < GLUCOSE_LOW_LIMIT_MG_DL:
            return GLUCOSE_LOW_LIMIT_MG_DL, "<"
        if v > GLUCOSE_HIGH_LIMIT_MG_DL:
            return GLUCOSE_HIGH_LIMIT_MG_DL, ">"
        return v, None
    if body.strip() in _HIGH_TEXT:
        return GLUCOSE_HIGH_LIMIT_MG_DL, ">"
    if body.strip() in _LOW_TEXT:
        return GLUCOSE_LOW_LIMIT_MG_DL, "<"
    raise _error(line, f"field 'value' {field!r} is neither ' NNN' nor HIGH/LO")


def parse_reading(line: Line) -> Reading:
    """One dump record line (see the module docstring) → :class:`Reading`."""
    fields = _body(line, "P ", "dump record").split(",")
    if len(fields) < 6:
        raise _error(line, f"dump record has {len(fields)} fields, expected at least 6")
    time = _device_time(line, fields, 0)
    field = _quoted(line, fields, 3, "value")
    if len(field) < 3 or field[0] not in "C " or field[-1] not in "? ":
        raise _error(line, f"field 'value' {field!r} lacks its control/parity markers")
    value, comparator = _value(line, field)
    meal = _quoted(line, fields, 4, "meal")
    if not re.fullmatch("[A-Z]", meal):
        raise _error(line, f"field 'meal' {meal!r} is not one letter")
    comment = _quoted(line, fields, 5, "comment")
    if not re.fullmatch("[0-9]{2}", comment):
        raise _error(line, f"field 'comment' {comment!r} is not two digits")
    return Reading(
        time=time,
        value_mg_dl=value,
        comparator=comparator,
        control=field[0] == "C",
        flags=(FLAG_PARITY_ERROR,) if field[-1] == "?" else (),
        raw=line.text,
        meal=meal,
        comment=comment,
        extra=tuple(fields[6:]),
    )


# --------------------------------------------------------------------------- session


class SessionState(StrEnum):
    IDLE = "idle"
    SERIAL = "serial"  # DM@ sent
    VERSION = "version"  # DM? sent
    CLOCK = "clock"  # DMF sent
    DUMP_HEADER = "dump-header"  # DMP sent, header not yet seen
    DUMP = "dump"  # receiving records
    DONE = "done"
    FAILED = "failed"


_COMMAND_OF: Final = {
    SessionState.SERIAL: CMD_SERIAL,
    SessionState.VERSION: CMD_VERSION,
    SessionState.CLOCK: CMD_READ_CLOCK,
    SessionState.DUMP_HEADER: CMD_DUMP,
}


@dataclass(frozen=True, slots=True)
class Transmit:
    """Write these bytes to the meter."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Identified:
    serial: str
    version: str


@dataclass(frozen=True, slots=True)
class ClockRead:
    device_time: datetime  # naive meter wall clock (whole seconds)
    at: float  # the monotonic ``now`` at which the answer arrived


@dataclass(frozen=True, slots=True)
class ReadingParsed:
    reading: Reading


@dataclass(frozen=True, slots=True)
class DumpComplete:
    """The dump ended: all ``expected`` records parsed, or the meter fell silent first.

    ``rejected`` counts lines refused during the dump (bad checksum, noise, unparseable); a
    record whose line was lost cannot be re-requested alone: re-run the dump later.
    """

    expected: int
    received: int
    rejected: int = 0
    timed_out: bool = False

    @property
    def complete(self) -> bool:
        return self.received == self.expected


@dataclass(frozen=True, slots=True)
class LineRejected:
    reason: str
    raw: bytes


@dataclass(frozen=True, slots=True)
class SessionFailed:
    reason: str


OneTouchEvent = (
    Transmit | Identified | ClockRead | ReadingParsed | DumpComplete | LineRejected | SessionFailed
)


class OneTouchSession:
    """Host dialogue: ``DM@`` → ``DM?`` → ``DMF`` → ``DMP``, with timeouts and retries.

    ``start`` returns the first command; every later write is a :class:`Transmit` event. A
    command unanswered for ``command_timeout_s`` is re-sent up to ``max_retries`` times, then
    the session fails. A checksummed line that is not the expected answer is rejected and the
    wait goes on. Once the dump header arrived, records are parsed until ``count`` of them
    arrived or no line came for ``dump_idle_timeout_s`` (:class:`DumpComplete` says which).
    """

    def __init__(
        self,
        *,
        command_timeout_s: float = COMMAND_TIMEOUT_S,
        max_retries: int = MAX_RETRIES,
        dump_idle_timeout_s: float = DUMP_IDLE_TIMEOUT_S,
    ) -> None:
        self._timeout = command_timeout_s
        self._max_retries = max_retries
        self._idle = dump_idle_timeout_s
        self._reader = LineReader()
        self.state = SessionState.IDLE
        self.serial: str | None = None
        self.version: str | None = None
        self._attempts = 0
        self._deadline: float | None = None
        self._expected = 0
        self._received = 0
        self._rejected = 0

    @property
    def finished(self) -> bool:
        return self.state in (SessionState.DONE, SessionState.FAILED)

    def next_deadline(self) -> float | None:
        return self._deadline

    def start(self, now: float) -> bytes:
        if self.state is not SessionState.IDLE:
            raise RuntimeError(f"session already started (state {self.state})")
        return self._send(SessionState.SERIAL, now)

    def _send(self, state: SessionState, now: float) -> bytes:
        self.state = state
        self._attempts = 1
        self._deadline = now + self._timeout
        return command(_COMMAND_OF[state])

    def feed(self, data: bytes, now: float) -> list[OneTouchEvent]:
        events: list[OneTouchEvent] = []
        for item in self._reader.feed(data):
            if self.state is SessionState.DUMP:
                self._deadline = now + self._idle
            if isinstance(item, LineError):
                self._count_rejected()
                events.append(LineRejected(item.reason, item.raw))
            else:
                events += self._on_line(item, now)
        return events

    def _on_line(self, line: Line, now: float) -> list[OneTouchEvent]:
        st = self.state
        try:
            if st is SessionState.SERIAL:
                self.serial = parse_serial(line)
                return [Transmit(self._send(SessionState.VERSION, now))]
            if st is SessionState.VERSION:
                self.version = parse_version(line)
                assert self.serial is not None  # set in SERIAL
                ident = Identified(self.serial, self.version)
                return [ident, Transmit(self._send(SessionState.CLOCK, now))]
            if st is SessionState.CLOCK:
                clock = ClockRead(parse_clock(line), now)
                return [clock, Transmit(self._send(SessionState.DUMP_HEADER, now))]
            if st is SessionState.DUMP_HEADER:
                return self._on_header(parse_dump_header(line), now)
            if st is SessionState.DUMP:
                events: list[OneTouchEvent] = [ReadingParsed(parse_reading(line))]
                self._received += 1
                if self._received == self._expected:
                    events += self._finish(timed_out=False)
                return events
        except OneTouchError as exc:
            self._count_rejected()
            return [LineRejected(str(exc), line.raw)]
        return [LineRejected(f"unexpected line while {st}: {line.text!r}", line.raw)]

    def _on_header(self, header: DumpHeader, now: float) -> list[OneTouchEvent]:
        if header.serial != self.serial:
            return self._fail(f"dump header serial {header.serial} is not {self.serial}")
        self._expected = header.count
        self.state = SessionState.DUMP
        self._deadline = now + self._idle
        return self._finish(timed_out=False) if header.count == 0 else []

    def poll(self, now: float) -> list[OneTouchEvent]:
        if self._deadline is None or now < self._deadline:
            return []
        if self.state is SessionState.DUMP:
            return self._finish(timed_out=True)
        cmd = _COMMAND_OF[self.state]
        if self._attempts > self._max_retries:
            return self._fail(f"no answer to {cmd} after {self._attempts} attempts")
        self._attempts += 1
        self._deadline = now + self._timeout
        return [Transmit(command(cmd))]

    def connection_lost(self, now: float) -> list[OneTouchEvent]:
        """The transport lost the port (cable pulled): fail unless already finished."""
        if self.finished:
            return []
        reason = f"serial link lost while {self.state}"
        if self.state is SessionState.DUMP:
            reason += f" after {self._received} of {self._expected} records"
        return self._fail(reason)

    def _count_rejected(self) -> None:
        if self.state is SessionState.DUMP:
            self._rejected += 1

    def _finish(self, *, timed_out: bool) -> list[OneTouchEvent]:
        self.state = SessionState.DONE
        self._deadline = None
        return [DumpComplete(self._expected, self._received, self._rejected, timed_out)]

    def _fail(self, reason: str) -> list[OneTouchEvent]:
        self.state = SessionState.FAILED
        self._deadline = None
        return [SessionFailed(reason)]


# --------------------------------------------------------------------------- observations


def _local_to_utc(local: datetime, tz: ZoneInfo) -> datetime:
    """A naive meter wall-clock time read in ``tz`` (DST overlap: the first reading)."""
    return local.replace(tzinfo=tz).astimezone(UTC)


def clock_offset_s(device_time: datetime, *, hub_time: datetime, tz: ZoneInfo) -> float:
    """Meter clock minus hub clock, seconds (±1 s: the meter reports whole seconds)."""
    if device_time.tzinfo is not None:
        raise OneTouchError("the meter's clock reading is naive wall-clock time")
    return (_local_to_utc(device_time, tz) - utc(hub_time)).total_seconds()


def record_key(reading: Reading, *, serial: str) -> str:
    """Content-derived key (the meter has no sequence numbers): serial, time, value, markers.

    Meal flag and comment are left out on purpose: they annotate a result and are not part
    of what was measured, so a re-read with a changed annotation keeps its key.
    """
    value = f"{reading.comparator or ''}{reading.value_mg_dl}"
    markers = "".join(f"+{f}" for f in reading.flags)
    return f"ot2:{serial}@{reading.time:%Y%m%dT%H%M%S}:{value}{markers}"


def reading_to_observation(
    reading: Reading,
    *,
    serial: str,
    tz: ZoneInfo,
    clock_offset_s: float | None,
    simulated: bool,
) -> Observation | None:
    """A capillary glucose observation in mmol/L; None for a control-solution test."""
    if reading.control:
        return None
    quality = set(clock_quality(clock_offset_s))
    if reading.comparator == "<":
        quality.add(QualityFlag.BELOW_RANGE)
    elif reading.comparator == ">":
        quality.add(QualityFlag.ABOVE_RANGE)
    if FLAG_PARITY_ERROR in reading.flags:
        quality.add(QualityFlag.QUESTIONABLE)
    if simulated:
        quality.add(QualityFlag.SIMULATED)
    # Read the wall-clock time in the zone first, then correct by the offset (elapsed time).
    effective = _local_to_utc(reading.time, tz) - timedelta(seconds=clock_offset_s or 0.0)
    mg_dl = float(reading.value_mg_dl)
    return Observation(
        measure="glucose.capillary",
        unit="mmol/L",
        effective_time=effective,
        record_key=record_key(reading, serial=serial),
        value=convert(mg_dl, "mg/dL", "mmol/L"),
        comparator=reading.comparator,
        device_time=reading.time.isoformat(timespec="seconds"),
        clock_offset_s=clock_offset_s,
        quality=frozenset(quality),
        provenance=Provenance(
            source=SOURCE, original_value=mg_dl, original_unit="mg/dL", raw=reading.raw
        ),
    )
