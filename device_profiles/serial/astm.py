r"""ASTM E1381 link layer and E1394 records of Ascensia (Bayer) Contour glucose meters, sans-I/O.

The meter is the sender; the host answers (PROTOCOLS.md "Serial meters", ASTM E1381-95)::

    meter  ENQ                                            host  ACK
    meter  STX '1' H|\^&||pw|Bayer7390^...|...  CR ETB C1 C2 CR LF   host  ACK
    meter  STX '2' P|1                          CR ETB C1 C2 CR LF   host  ACK   (NAK: send again)
    meter  STX '3' R|1|^^^Glucose|5.6|mmol/L^P||B||202601150730  CR ETB C1 C2 CR LF  host ACK
    meter  STX '4' L|1||N                       CR ETX C1 C2 CR LF   host  ACK
    meter  EOT

Frame numbers are ASCII '0'-'7', the first frame of a transfer is '1' (1..7, 0, 1, ...). The
checksum is the sum mod 256 of the bytes from the frame number through ETB/ETX inclusive, as two
uppercase hex characters. A frame carries at most 240 text characters. The CR ending each record
is the E1394 record terminator and belongs to the frame text; ETB ends every frame of a message
but the last, which ends with ETX. Contour meters put one record in a frame (captures published
by open-source Contour drivers: every record frame ``CR ETB``, the ``L`` frame ``CR ETX``); a
record longer than 240 characters continues in the next frame, whose predecessor therefore has
no CR. So the receiver joins frame texts and cuts records at CR (ETX also ends a record): that
reads Contour meters, and lab-style senders that end every record frame with ETX, alike.

Link rules (E1381): a good frame is ACKed; a bad one (checksum, structure, frame-number skip) is
NAKed and the sender sends it again, at most :data:`MAX_TRANSMISSIONS` times in all; the repeat
of the previous good frame (our ACK was lost) is ACKed but not used twice; a sender waits
:data:`SENDER_ACK_TIMEOUT_S` for an answer, a receiver :data:`RECEIVER_TIMEOUT_S` for the next
frame (the driver measures it and calls :meth:`AstmReceiver.timeout`). Bytes outside a frame are
noise: counted and reported in bounded pieces, never fatal. STX, ENQ and EOT always resynchronise.
Text is decoded as Latin-1 (one character per byte, never fails).

Records (E1394): the H record's characters 1-4 declare the field, repeat, component and escape
delimiters (``|\^&``). Contour layout (same captures, and the E1394 field positions):

* H: field 4 = ``product code ^ versions (repeat-separated) ^ serial ^ SKU``, e.g.
  ``Bayer7390^01.24\01.04\04.02.19^7390-2336773^7403-``; field 13 = the meter's clock when the
  transfer began, ``YYYYMMDDhhmm`` (Contour USB) or ``YYYYMMDDhhmmss`` (Contour Next).
* R: ``R|seq|^^^Glucose|value|unit^method||markers||YYYYMMDDhhmm[ss]``; unit ``mmol/L`` or
  ``mg/dL``; method ``P`` plasma-calibrated, ``B`` whole blood (others kept as given). Markers are
  ``/``-separated tokens (``B/X``, ``A/Z1``, ``F/M0/T1``): see :data:`KNOWN_MARKERS`. A LO / HI
  result carries ``<`` / ``>`` and the meter's range limit as its value.
* O (some Contour USB dumps): action code ``Q`` (E1394 field 12) marks the results that follow as
  quality-control tests.
* L: ``L|1||N`` (Contour puts the termination code one field later than E1394; the first
  non-empty field after the sequence number is taken).

Sequence numbers restart in every transfer and a meter sends its whole memory each time, so
observations are keyed by content (device time, analyte, value, unit).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Final, TypeAlias
from zoneinfo import ZoneInfo

from device_profiles.codes import MEASURES
from device_profiles.observation import (
    Comparator,
    Observation,
    Provenance,
    QualityFlag,
    clock_quality,
)
from device_profiles.units import UnitError, convert

__all__ = [
    "CONTROL_MARKERS",
    "DEFAULT",
    "KNOWN_MARKERS",
    "MAX_TRANSMISSIONS",
    "RECEIVER_TIMEOUT_S",
    "SENDER_ACK_TIMEOUT_S",
    "AstmEvent",
    "AstmMessage",
    "AstmMessageAssembler",
    "AstmReceiver",
    "AstmRecord",
    "AstmRecordError",
    "AstmStats",
    "Delimiters",
    "HeaderRecord",
    "LinkError",
    "LinkErrorKind",
    "MeterIdentity",
    "OrderRecord",
    "OtherRecord",
    "PatientRecord",
    "RecordReceived",
    "ResultRecord",
    "TerminatorRecord",
    "TransferEnded",
    "TransferStarted",
    "Transmit",
    "checksum",
    "clock_offset",
    "escape",
    "frame",
    "message_chunks",
    "message_frames",
    "parse_record",
    "result_key",
    "result_to_observation",
]

# --------------------------------------------------------------------------- link constants

STX: Final = 0x02
ETX: Final = 0x03
EOT: Final = 0x04
ENQ: Final = 0x05
ACK: Final = 0x06
LF: Final = 0x0A
CR: Final = 0x0D
NAK: Final = 0x15
ETB: Final = 0x17

#: Text characters per frame (E1381).
FRAME_TEXT_MAX: Final = 240
#: STX + frame number + 240 text + ETB/ETX + 2 checksum + CR LF (E1381).
FRAME_MAX_BYTES: Final = 247
#: Bytes after which a frame is dropped as noise (ours: some slack for sloppy senders).
FRAME_LIMIT_BYTES: Final = FRAME_MAX_BYTES + 64
#: Characters after which a record still without CR is dropped (ours; Contour records are < 250).
RECORD_LIMIT_CHARS: Final = 64 * FRAME_TEXT_MAX
#: Noise is reported in pieces of at most this many bytes (ours).
NOISE_REPORT_BYTES: Final = 64
#: Seconds a receiver waits for the next frame or EOT before abandoning the message (E1381).
RECEIVER_TIMEOUT_S: Final = 30.0
#: Seconds a sender waits for ACK/NAK before sending EOT and giving up (E1381).
SENDER_ACK_TIMEOUT_S: Final = 15.0
#: Transmissions of one frame (the first and the repeats after NAK) before the sender aborts
#: (E1381: "six" unsuccessful attempts).
MAX_TRANSMISSIONS: Final = 6

_TERMINATORS: Final = (ETB, ETX)
_RESYNC: Final = frozenset((STX, ENQ, EOT))
_HEX: Final = frozenset(b"0123456789ABCDEFabcdef")
_CONTROL_NAMES: Final = {STX: "STX", ENQ: "ENQ", EOT: "EOT"}


def checksum(body: bytes) -> str:
    """Two uppercase hex characters: sum mod 256 of frame number .. ETB/ETX inclusive."""
    return f"{sum(body) & 0xFF:02X}"


def frame(number: int, text: str, final: bool) -> bytes:
    """``STX number text ETB|ETX C1 C2 CR LF``; ``text`` verbatim (a record's CR included).

    ``final`` picks ETX (last frame of the message) over ETB. Raises ValueError for a frame
    number outside 0-7, text longer than 240 characters, or text holding a link control byte.
    """
    if not 0 <= number <= 7:
        raise ValueError(f"frame number {number} is outside 0..7")
    raw = text.encode("latin-1")
    if len(raw) > FRAME_TEXT_MAX:
        raise ValueError(f"frame text of {len(raw)} characters exceeds {FRAME_TEXT_MAX}")
    if any(b in raw for b in (STX, ETX, EOT, ENQ, LF, ETB)):
        raise ValueError("frame text must not contain STX, ETX, ETB, EOT, ENQ or LF")
    body = bytes([0x30 + number]) + raw + bytes([ETX if final else ETB])
    return bytes([STX]) + body + checksum(body).encode("ascii") + b"\r\n"


def message_chunks(records: Sequence[str]) -> list[tuple[str, bool]]:
    """Frame texts of a message, Contour style: each record + CR starts a new frame and is cut
    into pieces of at most 240 characters; only the message's last piece is final (ETX)."""
    chunks: list[str] = []
    for record in records:
        text = record + "\r"
        chunks += [text[i : i + FRAME_TEXT_MAX] for i in range(0, len(text), FRAME_TEXT_MAX)]
    return [(c, i == len(chunks) - 1) for i, c in enumerate(chunks)]


def message_frames(records: Sequence[str], *, first_number: int = 1) -> list[bytes]:
    """The frames of a message, numbered from ``first_number`` (1 after ENQ) modulo 8."""
    return [
        frame((first_number + i) % 8, text, final)
        for i, (text, final) in enumerate(message_chunks(records))
    ]


# --------------------------------------------------------------------------- link events


class LinkErrorKind(StrEnum):
    CHECKSUM = "checksum"
    MALFORMED = "malformed"  # no ETB/ETX + checksum + CR, bad frame number
    OUT_OF_SEQUENCE = "out-of-sequence"
    NOISE = "noise"  # bytes outside a frame
    OVERLONG_FRAME = "overlong-frame"
    TRUNCATED_FRAME = "truncated-frame"  # STX/ENQ/EOT or a timeout inside a frame
    OVERLONG_RECORD = "overlong-record"
    INCOMPLETE_RECORD = "incomplete-record"  # the transfer ended inside a record
    RESTART = "restart"  # ENQ in the middle of a transfer
    TIMEOUT = "timeout"


@dataclass(frozen=True, slots=True)
class Transmit:
    """Bytes (ACK / NAK) the driver must write to the port, in order."""

    data: bytes


@dataclass(frozen=True, slots=True)
class TransferStarted:
    """The meter's ENQ was answered: a message follows."""


@dataclass(frozen=True, slots=True)
class RecordReceived:
    """One whole record (continuation frames joined), without its CR."""

    text: str


@dataclass(frozen=True, slots=True)
class TransferEnded:
    """EOT, a restart or a timeout ended the transfer. ``complete``: the last record was an L
    record, nothing was cut off and the sender ended with EOT."""

    records: int
    complete: bool


@dataclass(frozen=True, slots=True)
class LinkError:
    """Something on the line that could not be used; ``raw`` is kept as a dead letter."""

    reason: str
    raw: bytes
    kind: LinkErrorKind


AstmEvent: TypeAlias = Transmit | TransferStarted | RecordReceived | TransferEnded | LinkError


@dataclass(slots=True)
class AstmStats:
    frames_ok: int = 0
    frames_bad: int = 0  # checksum or structure wrong: NAKed
    frames_out_of_sequence: int = 0  # NAKed
    duplicate_frames: int = 0  # repeat of the previous good frame: ACKed, not used
    junk_bytes: int = 0  # noise, truncated and over-long frames
    transfers_complete: int = 0
    transfers_aborted: int = 0


class _BadFrame(Exception):
    def __init__(self, kind: LinkErrorKind, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def _check_frame(raw: bytes) -> tuple[int, bytes, bool]:
    """(frame number, text, final) of a whole frame ``STX .. CR [LF]``, or :class:`_BadFrame`."""
    body = raw[:-1] if raw[-1] == LF else raw
    if len(body) < 6 or body[-1] != CR or body[-4] not in _TERMINATORS:
        raise _BadFrame(LinkErrorKind.MALFORMED, "frame: no ETB/ETX, checksum and CR at its end")
    fn = body[1]
    if not 0x30 <= fn <= 0x37:
        raise _BadFrame(LinkErrorKind.MALFORMED, f"frame: number {chr(fn)!r} is not 0-7")
    number = fn - 0x30
    text = body[2:-4]
    if ETX in text or ETB in text:
        raise _BadFrame(LinkErrorKind.MALFORMED, f"frame {number}: ETB/ETX inside the text")
    given = body[-3:-1]
    computed = checksum(body[1:-3])
    if not all(b in _HEX for b in given) or given.decode("ascii").upper() != computed:
        shown = given.decode("latin-1")
        raise _BadFrame(
            LinkErrorKind.CHECKSUM, f"frame {number}: checksum {shown!r} != computed {computed}"
        )
    return number, text, body[-4] == ETX


class AstmReceiver:
    """The host side of E1381: feed it what the port reads, write back every :class:`Transmit`.

    Bytes are handled one at a time, so splitting the input differently never changes the
    events. Never raises on input.
    """

    def __init__(self) -> None:
        self.stats = AstmStats()
        self._active = False  # between the ACKed ENQ and EOT
        self._frame: bytearray | None = None  # bytes since STX
        self._discard = False  # inside an over-long frame
        self._swallow_lf = False  # the frame ended at CR; its LF is not noise
        self._noise = bytearray()
        self._expected = 1
        self._last_good: int | None = None
        self._frames = 0
        self._text = bytearray()  # the record being joined
        self._skip_record = False  # the record being joined was too long
        self._records = 0
        self._last_kind = ""

    @property
    def in_transfer(self) -> bool:
        """True between an ACKed ENQ and the end of the transfer (arm the 30 s timer)."""
        return self._active

    def feed(self, data: bytes) -> list[AstmEvent]:
        out: list[AstmEvent] = []
        for b in data:
            self._byte(b, out)
        return out

    def timeout(self) -> list[AstmEvent]:
        """Nothing arrived for :data:`RECEIVER_TIMEOUT_S`: abandon a partial message."""
        out: list[AstmEvent] = []
        self._cut_frame("a timeout", out)
        self._discard = False
        self._flush_noise(out)
        if self._active:
            out.append(
                LinkError(
                    f"timeout: nothing for {RECEIVER_TIMEOUT_S:g} s after {self._frames} "
                    "frames; transfer abandoned",
                    b"",
                    LinkErrorKind.TIMEOUT,
                )
            )
            self._end(out, complete=False)
        return out

    # ------------------------------------------------------------------ byte level

    def _byte(self, b: int, out: list[AstmEvent]) -> None:
        if self._frame is not None:
            if b not in _RESYNC:
                self._in_frame(b, out)
                return
            self._cut_frame(_CONTROL_NAMES[b], out)
        if self._discard:
            if b not in _RESYNC:
                self.stats.junk_bytes += 1
                if b == LF:  # the over-long frame ended: the sender waits for an answer
                    self._discard = False
                    out.append(Transmit(bytes([NAK])))
                return
            self._discard = False
        if self._swallow_lf:
            self._swallow_lf = False
            if b == LF:
                return
        if b == ENQ:
            self._flush_noise(out)
            self._enq(out)
        elif b == EOT:
            self._flush_noise(out)
            if self._active:
                self._end(out, complete=self._last_kind == "L" and not self._pending())
        elif b == STX and self._active:
            self._flush_noise(out)
            self._frame = bytearray((STX,))
        else:
            self._noise.append(b)
            self.stats.junk_bytes += 1
            if len(self._noise) >= NOISE_REPORT_BYTES:
                self._flush_noise(out)

    def _in_frame(self, b: int, out: list[AstmEvent]) -> None:
        f = self._frame
        assert f is not None
        f.append(b)
        if b == LF or (b == CR and len(f) >= 6 and f[-4] in _TERMINATORS):
            self._frame = None
            self._swallow_lf = b == CR
            self._frame_done(bytes(f), out)
        elif len(f) > FRAME_LIMIT_BYTES:
            self._frame = None
            self._discard = True
            self.stats.junk_bytes += len(f)
            out.append(
                LinkError(
                    f"frame longer than {FRAME_LIMIT_BYTES} bytes dropped",
                    bytes(f),
                    LinkErrorKind.OVERLONG_FRAME,
                )
            )

    def _cut_frame(self, by: str, out: list[AstmEvent]) -> None:
        f = self._frame
        if f is None:
            return
        self._frame = None
        self.stats.junk_bytes += len(f)
        out.append(
            LinkError(
                f"frame cut off by {by} after {len(f)} bytes",
                bytes(f),
                LinkErrorKind.TRUNCATED_FRAME,
            )
        )

    def _flush_noise(self, out: list[AstmEvent]) -> None:
        if self._noise:
            where = "between frames" if self._active else "outside a transfer"
            out.append(
                LinkError(
                    f"noise: {len(self._noise)} bytes {where}",
                    bytes(self._noise),
                    LinkErrorKind.NOISE,
                )
            )
            self._noise.clear()

    # ------------------------------------------------------------------ link level

    def _enq(self, out: list[AstmEvent]) -> None:
        if self._active and (self._frames or self._pending()):
            out.append(
                LinkError(
                    f"ENQ after {self._frames} frames: transfer restarted",
                    bytes((ENQ,)),
                    LinkErrorKind.RESTART,
                )
            )
            self._end(out, complete=False)
        if not self._active:
            self._active = True
            self._expected, self._last_good, self._frames = 1, None, 0
            self._records, self._last_kind = 0, ""
            out.append(TransferStarted())
        out.append(Transmit(bytes((ACK,))))

    def _pending(self) -> bool:
        return bool(self._text) or self._skip_record

    def _end(self, out: list[AstmEvent], *, complete: bool) -> None:
        if self._text:
            out.append(
                LinkError(
                    f"transfer ended inside a record ({len(self._text)} characters)",
                    bytes(self._text),
                    LinkErrorKind.INCOMPLETE_RECORD,
                )
            )
        self._text.clear()
        self._skip_record = False
        self._active = False
        if complete:
            self.stats.transfers_complete += 1
        else:
            self.stats.transfers_aborted += 1
        out.append(TransferEnded(records=self._records, complete=complete))

    def _frame_done(self, raw: bytes, out: list[AstmEvent]) -> None:
        try:
            number, text, final = _check_frame(raw)
        except _BadFrame as exc:
            self.stats.frames_bad += 1
            out += [LinkError(exc.reason, raw, exc.kind), Transmit(bytes((NAK,)))]
            return
        if number == self._last_good:
            self.stats.duplicate_frames += 1
            out.append(Transmit(bytes((ACK,))))
            return
        if number != self._expected:
            self.stats.frames_out_of_sequence += 1
            out += [
                LinkError(
                    f"frame {number}: out of sequence, expected {self._expected}",
                    raw,
                    LinkErrorKind.OUT_OF_SEQUENCE,
                ),
                Transmit(bytes((NAK,))),
            ]
            return
        self.stats.frames_ok += 1
        self._frames += 1
        self._last_good, self._expected = number, (number + 1) % 8
        out.append(Transmit(bytes((ACK,))))
        *whole, rest = text.split(b"\r")
        for piece in whole:
            self._append(piece, out)
            self._emit_record(out)
        self._append(rest, out)
        if final and self._text:
            self._emit_record(out)

    def _append(self, piece: bytes, out: list[AstmEvent]) -> None:
        if self._skip_record:
            return
        self._text += piece
        if len(self._text) > RECORD_LIMIT_CHARS:
            out.append(
                LinkError(
                    f"record longer than {RECORD_LIMIT_CHARS} characters dropped",
                    bytes(self._text),
                    LinkErrorKind.OVERLONG_RECORD,
                )
            )
            self._text.clear()
            self._skip_record = True

    def _emit_record(self, out: list[AstmEvent]) -> None:
        if self._skip_record:
            self._skip_record = False
            return
        if not self._text:
            return  # an empty line between records
        text = self._text.decode("latin-1")
        self._text.clear()
        self._records += 1
        self._last_kind = text[0]
        out.append(RecordReceived(text))


# --------------------------------------------------------------------------- records


class AstmRecordError(ValueError):
    """A record that does not parse, or cannot become an observation; names record and field."""


@dataclass(frozen=True, slots=True)
class Delimiters:
    field: str = "|"
    repeat: str = "\\"
    component: str = "^"
    escape: str = "&"

    def __post_init__(self) -> None:
        chars = (self.field, self.repeat, self.component, self.escape)
        if (
            any(len(c) != 1 or not 0x21 <= ord(c) <= 0x7E or c.isalnum() for c in chars)
            or len(set(chars)) != 4
        ):
            raise AstmRecordError(
                f"H record: delimiters {''.join(chars)!r} must be 4 distinct punctuation characters"
            )


DEFAULT: Final = Delimiters()

#: Result markers of Contour meters. B/A/F, </> and C: captures and drivers of Contour USB and
#: Contour Next; D/I/S/X and Z1-ZC (minutes after a meal in 15-minute steps): the GGC Ascensia
#: decoder; E: PROTOCOLS.md (control solution). Others (e.g. Contour Next's M0/T1) are kept in
#: :attr:`ResultRecord.markers` and listed by :attr:`ResultRecord.unknown_markers`.
KNOWN_MARKERS: Final[dict[str, str]] = {
    "B": "before meal",
    "A": "after meal",
    "F": "fasting",
    "<": "below the meter's range (LO); the value is the range limit",
    ">": "above the meter's range (HI); the value is the range limit",
    "C": "control solution",
    "E": "control solution",
    "D": "don't feel right",
    "I": "sick",
    "S": "stress",
    "X": "activity",
    **{f"Z{c}": f"{15 * (i + 1)} min after a meal" for i, c in enumerate("123456789ABC")},
}
CONTROL_MARKERS: Final = frozenset({"C", "E"})
MARKER_SEPARATOR: Final = "/"
GLUCOSE_ANALYTE: Final = "Glucose"
_DECIMAL: Final = re.compile(r"[0-9]{1,6}(?:\.[0-9]{1,4})?")


@dataclass(frozen=True, slots=True)
class MeterIdentity:
    """From the H record: ``model`` is the product code as sent (e.g. ``Bayer7390``),
    ``firmware`` the first (main) of the repeat-separated versions, all of them in ``versions``."""

    model: str
    serial: str
    firmware: str | None
    versions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HeaderRecord:
    delimiters: Delimiters
    sender: MeterIdentity | None  # None: no product code or serial in field 4
    transfer_time: datetime | None  # naive, the meter's own clock
    raw: str


@dataclass(frozen=True, slots=True)
class PatientRecord:
    seq: int | None
    raw: str


@dataclass(frozen=True, slots=True)
class OrderRecord:
    seq: int | None
    action_code: str | None  # E1394 field 12; "Q": quality control
    raw: str

    @property
    def quality_control(self) -> bool:
        return self.action_code == "Q"


@dataclass(frozen=True, slots=True)
class ResultRecord:
    seq: int
    analyte: str
    value: float
    unit: str
    method: str | None
    markers: frozenset[str]
    time: datetime  # naive, the meter's own clock
    raw: str
    order_control: bool = False  # follows an O record with action code Q

    @property
    def control_solution(self) -> bool:
        return bool(self.markers & CONTROL_MARKERS) or self.order_control

    @property
    def below_range(self) -> bool:
        return "<" in self.markers

    @property
    def above_range(self) -> bool:
        return ">" in self.markers

    @property
    def unknown_markers(self) -> frozenset[str]:
        return self.markers - KNOWN_MARKERS.keys()


@dataclass(frozen=True, slots=True)
class TerminatorRecord:
    code: str | None
    raw: str = ""


@dataclass(frozen=True, slots=True)
class OtherRecord:
    kind: str
    raw: str


AstmRecord: TypeAlias = (
    HeaderRecord | PatientRecord | OrderRecord | ResultRecord | TerminatorRecord | OtherRecord
)


def escape(text: str, d: Delimiters = DEFAULT) -> str:
    """E1394 escapes: ``&E&`` escape, ``&F&`` field, ``&S&`` component, ``&R&`` repeat."""
    e = d.escape
    out = text.replace(e, f"{e}E{e}")
    for char, code in ((d.field, "F"), (d.component, "S"), (d.repeat, "R")):
        out = out.replace(char, f"{e}{code}{e}")
    return out


def _unescape(text: str, d: Delimiters) -> str:
    if d.escape not in text:
        return text
    subst = {"F": d.field, "S": d.component, "R": d.repeat, "E": d.escape}
    e = re.escape(d.escape)
    return re.sub(f"{e}([FSRE]){e}", lambda m: subst[m.group(1)], text)


def _field(fields: list[str], i: int) -> str:
    return fields[i] if i < len(fields) else ""


def _seq(fields: list[str], where: str, *, required: bool = False) -> int | None:
    text = _field(fields, 1).strip()
    if not text and not required:
        return None
    if not (text.isascii() and text.isdigit()):
        raise AstmRecordError(f"{where}: field 1 (sequence number) {text[:16]!r} is not a number")
    return int(text)


def _timestamp(text: str, where: str) -> datetime:
    text = text.strip()
    if not (text.isascii() and text.isdigit() and len(text) in (12, 14)):
        raise AstmRecordError(f"{where} {text[:20]!r} is not YYYYMMDDhhmm[ss]")
    try:
        return datetime(  # noqa: DTZ001 - the meter's wall clock, no zone on the wire
            int(text[0:4]),
            int(text[4:6]),
            int(text[6:8]),
            int(text[8:10]),
            int(text[10:12]),
            int(text[12:14] or 0),
        )
    except ValueError:
        raise AstmRecordError(f"{where} {text!r} is not a valid date and time") from None


def _identity(text: str, d: Delimiters) -> MeterIdentity | None:
    # Contour puts repeat delimiters inside a component, so components are split first.
    comps = text.split(d.component)
    product = _unescape(comps[0], d).strip()
    serial = _unescape(_field(comps, 2), d).strip()
    versions = tuple(
        v for v in (_unescape(x, d).strip() for x in _field(comps, 1).split(d.repeat)) if v
    )
    if not product or not serial:
        return None
    return MeterIdentity(
        model=product, serial=serial, firmware=versions[0] if versions else None, versions=versions
    )


def _parse_header(text: str) -> HeaderRecord:
    if len(text) < 5 or (len(text) > 5 and text[5] != text[1]):
        raise AstmRecordError("H record: field 1 must be the 4 delimiter characters (e.g. |\\^&)")
    d = Delimiters(text[1], text[2], text[3], text[4])
    fields = text.split(d.field)
    when = _field(fields, 13).strip()
    return HeaderRecord(
        delimiters=d,
        sender=_identity(_field(fields, 4), d),
        transfer_time=_timestamp(when, "H record: field 13 (date and time)") if when else None,
        raw=text,
    )


def _parse_result(text: str, fields: list[str], d: Delimiters) -> ResultRecord:
    seq = _seq(fields, "R record", required=True)
    assert seq is not None
    where = f"R record {seq}"
    test = _field(fields, 2)
    analyte = _unescape(_field(test.split(d.component), 3), d).strip()
    if not analyte:
        raise AstmRecordError(f"{where}: field 2 (test id) {test[:32]!r} names no analyte")
    value_text = _field(fields, 3).strip()
    if not _DECIMAL.fullmatch(value_text):
        raise AstmRecordError(f"{where}: field 3 (value) {value_text[:16]!r} is not a number")
    unit_comps = _field(fields, 4).split(d.component)
    unit = _unescape(unit_comps[0], d).strip()
    if not unit:
        raise AstmRecordError(f"{where}: field 4 (unit) is empty")
    method = _unescape(_field(unit_comps, 1), d).strip() or None
    markers = frozenset(
        m for m in (_unescape(x, d).strip() for x in _field(fields, 6).split(MARKER_SEPARATOR)) if m
    )
    return ResultRecord(
        seq=seq,
        analyte=analyte,
        value=float(value_text),
        unit=unit,
        method=method,
        markers=markers,
        time=_timestamp(_field(fields, 8), f"{where}: field 8 (date and time)"),
        raw=text,
    )


def parse_record(text: str, delimiters: Delimiters = DEFAULT) -> AstmRecord:
    """One E1394 record (without its CR). An H record declares its own delimiters; the others
    are split with ``delimiters`` (those of the message's H record)."""
    if not text:
        raise AstmRecordError("empty record")
    if text[0] == "H":
        return _parse_header(text)
    fields = text.split(delimiters.field)
    kind = fields[0]
    if len(kind) != 1 or not ("A" <= kind <= "Z"):
        raise AstmRecordError(f"record type {kind[:8]!r} is not one letter A-Z")
    if kind == "R":
        return _parse_result(text, fields, delimiters)
    if kind == "P":
        return PatientRecord(seq=_seq(fields, "P record"), raw=text)
    if kind == "O":
        code = _field(fields, 11).strip() or None
        return OrderRecord(seq=_seq(fields, "O record"), action_code=code, raw=text)
    if kind == "L":
        code = next((f.strip() for f in fields[2:] if f.strip()), None)
        return TerminatorRecord(code=code, raw=text)
    return OtherRecord(kind=kind, raw=text)


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class AstmMessage:
    """One transfer's records. ``header.raw`` is "" (and ``sender`` None) when the transfer had no
    usable H record; ``errors`` holds (record text, reason) for every record that did not parse;
    ``terminated``: an L record closed the message."""

    header: HeaderRecord
    results: tuple[ResultRecord, ...]
    errors: tuple[tuple[str, str], ...]
    terminated: bool


class AstmMessageAssembler:
    """Collects one transfer: :meth:`add` each :class:`RecordReceived` text, then :meth:`end`.

    Records are split with the delimiters the H record declares. A record that does not parse
    is kept in ``errors`` and the rest go on. Results after an O record with action code Q are
    marked ``order_control``. Records after the L record are reported as errors.
    """

    def __init__(self) -> None:
        self._header: HeaderRecord | None = None
        self._delimiters = DEFAULT
        self._results: list[ResultRecord] = []
        self._errors: list[tuple[str, str]] = []
        self._quality_control = False
        self._terminated = False
        self._seen = False

    def add(self, text: str) -> None:
        self._seen = True
        if self._terminated:
            self._errors.append((text, "record after the L record"))
            return
        if text.startswith("H") and self._header is not None:
            self._errors.append((text, "second H record in one transfer"))
            return
        try:
            record = parse_record(text, self._delimiters)
        except AstmRecordError as exc:
            self._errors.append((text, str(exc)))
            return
        if isinstance(record, HeaderRecord):
            self._header, self._delimiters = record, record.delimiters
        elif isinstance(record, OrderRecord):
            self._quality_control = record.quality_control
        elif isinstance(record, ResultRecord):
            if self._quality_control:
                record = replace(record, order_control=True)
            self._results.append(record)
        elif isinstance(record, TerminatorRecord):
            self._terminated = True

    def end(self, complete: bool) -> AstmMessage | None:
        """The message of the transfer (None if it had no records). ``complete`` is
        :attr:`TransferEnded.complete`: an unterminated message says why it ended."""
        if not self._seen:
            return None
        errors = list(self._errors)
        if self._header is None:
            errors.append(("", "no H record: the meter is not identified"))
        if not self._terminated:
            why = "transfer ended without an L record" if complete else "transfer cut off"
            errors.append(("", why))
        header = self._header or HeaderRecord(
            delimiters=self._delimiters, sender=None, transfer_time=None, raw=""
        )
        return AstmMessage(
            header=header,
            results=tuple(self._results),
            errors=tuple(errors),
            terminated=self._terminated,
        )


# --------------------------------------------------------------------------- observations


def clock_offset(header: HeaderRecord, *, hub_now: datetime, tz: ZoneInfo) -> float | None:
    """The meter's clock minus the hub's, in seconds, from the H record's time read in ``tz``
    and ``hub_now`` (aware: when the H record arrived). None when the header has no time.
    A 12-digit header time is to the minute, so the offset is good to 60 s."""
    if hub_now.tzinfo is None or hub_now.utcoffset() is None:
        raise ValueError("hub_now must be an aware datetime")
    if header.transfer_time is None:
        return None
    device = header.transfer_time.replace(tzinfo=tz).astimezone(UTC)
    return (device - hub_now.astimezone(UTC)).total_seconds()


def result_key(result: ResultRecord) -> str:
    """Content-derived id (ASTM sequence numbers restart every transfer)."""
    return f"astm:{result.time:%Y%m%dT%H%M%S}/{result.analyte}/{result.value!r}/{result.unit}"


def result_to_observation(
    result: ResultRecord,
    *,
    identity_source: str = "serial:astm",
    tz: ZoneInfo,
    clock_offset_s: float | None,
    simulated: bool,
) -> Observation | None:
    """A capillary glucose observation in mmol/L, or None for a control-solution result (never
    patient data; the caller counts it). Raises :class:`AstmRecordError` for another analyte,
    an unknown unit, both ``<`` and ``>``, or a time that cannot be placed.

    The value is the meter's, converted from mg/dL when needed; a LO / HI result is the range
    limit the meter sent with comparator ``<`` / ``>``. Time: the meter's wall clock read in
    ``tz``, minus the measured clock offset (device minus hub), in UTC.
    """
    where = f"R record {result.seq}"
    if result.control_solution:
        return None
    if result.analyte.lower() != GLUCOSE_ANALYTE.lower():
        raise AstmRecordError(f"{where}: analyte {result.analyte!r} is not glucose")
    measure = "glucose.capillary"
    if result.unit not in ("mmol/L", "mg/dL"):
        raise AstmRecordError(f"{where}: field 4 (unit) {result.unit!r} is not mmol/L or mg/dL")
    try:
        value = convert(result.value, result.unit, MEASURES[measure].unit)
    except UnitError as exc:
        raise AstmRecordError(f"{where}: {exc}") from None
    quality = clock_quality(clock_offset_s)
    if simulated:
        quality |= {QualityFlag.SIMULATED}
    comparator: Comparator | None = None
    if result.below_range and result.above_range:
        raise AstmRecordError(f"{where}: field 6 (markers) says both below and above range")
    if result.below_range:
        comparator, quality = "<", quality | {QualityFlag.BELOW_RANGE}
    elif result.above_range:
        comparator, quality = ">", quality | {QualityFlag.ABOVE_RANGE}
    if clock_offset_s is not None and not math.isfinite(clock_offset_s):
        raise ValueError("clock_offset_s must be finite")
    try:
        local = result.time.replace(tzinfo=tz).astimezone(UTC)
        effective = local - timedelta(seconds=clock_offset_s or 0.0)
    except (OverflowError, ValueError) as exc:
        raise AstmRecordError(f"{where}: time {result.time} cannot be placed ({exc})") from None
    return Observation(
        measure=measure,
        unit=MEASURES[measure].unit,
        effective_time=effective,
        record_key=result_key(result),
        value=value,
        comparator=comparator,
        device_time=result.time.isoformat(timespec="seconds"),
        clock_offset_s=clock_offset_s,
        quality=quality,
        provenance=Provenance(
            source=identity_source,
            original_value=result.value,
            original_unit=result.unit,
            raw=result.raw,
        ),
    )
