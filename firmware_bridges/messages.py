"""Bridge messages: the payloads inside :mod:`firmware_bridges.framing` frames, version 1.

Every payload is a fixed little-endian layout (table in docs/firmware-bridges.md); strings are
fixed-width, NUL-padded ASCII except the error text (u8 length + UTF-8). A receiver reads the
fields it knows and ignores bytes after them: a later protocol revision may only append fields.
Numbers that are medical values never travel as floats: flow is an i16 in mL/s, a kiosk value
is an i32 mantissa with a power-of-ten i8 exponent (as IEEE 11073 FLOAT), and "no value" is a
status bit with a reason, never a NaN.

Each message class validates itself when built (so an encoder cannot produce a payload the
decoder refuses) and has ``encode()`` and a ``decode(payload)`` classmethod. Anything malformed
raises :class:`BridgeMessageError` naming the message and the field. The numeric tables
(:data:`EVENT_KIND_CODES`, :data:`MEASURE_CODES`) are part of the protocol: codes are never
reused or renumbered.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from decimal import Decimal
from enum import IntEnum, IntFlag
from typing import ClassVar, Final, Self, TypeVar

from device_profiles.codes import MEASURES
from device_profiles.events import DOSE_KINDS, EventKind
from firmware_bridges.framing import MAX_PAYLOAD, encode_frame

__all__ = [
    "ACKED_TYPES",
    "BOARD_TO_HOST",
    "EVENT_KIND_CODES",
    "HOST_TO_BOARD",
    "MAX_SAMPLES_PER_FRAME",
    "MEASURE_CODES",
    "MIN_SAMPLE_RATE_HZ",
    "Ack",
    "BlowEnd",
    "BlowFlags",
    "BlowQualityBits",
    "BlowResult",
    "BlowStart",
    "BoardErrorCode",
    "BoardKind",
    "BoardStatus",
    "BridgeMessage",
    "BridgeMessageError",
    "DispenserEvent",
    "EndReason",
    "ErrorReport",
    "FlowSamples",
    "Heartbeat",
    "Hello",
    "HelloAck",
    "HelloFlags",
    "HelloRequest",
    "Measurement",
    "MeasurementStatus",
    "MsgType",
    "ResendBlow",
    "SessionAdvice",
    "SetTime",
    "UnknownMessageTypeError",
    "decode_message",
    "encode_message",
]


class BridgeMessageError(ValueError):
    """A payload (or a message being built) breaks its layout; names the message and field."""

    def __init__(self, message: str, field: str, problem: str) -> None:
        super().__init__(f"{message}.{field}: {problem}")
        self.message = message
        self.field = field
        self.problem = problem


class UnknownMessageTypeError(BridgeMessageError):
    def __init__(self, msg_type: int) -> None:
        super().__init__(f"type {msg_type:#04x}", "msg_type", "unknown message type")
        self.msg_type = msg_type


class MsgType(IntEnum):
    HELLO = 0x01  # board → host
    HELLO_ACK = 0x02  # host → board
    HEARTBEAT = 0x03  # board → host
    ACK = 0x04  # host → board
    ERROR = 0x05  # board → host
    SET_TIME = 0x06  # host → board
    HELLO_REQUEST = 0x07  # host → board
    BLOW_START = 0x10  # board → host
    FLOW_SAMPLES = 0x11  # board → host
    BLOW_END = 0x12  # board → host, needs ACK
    RESEND_BLOW = 0x13  # host → board
    BLOW_RESULT = 0x14  # host → board (what the hub made of a blow; for the patient)
    DISPENSER_EVENT = 0x20  # board → host, needs ACK
    MEASUREMENT = 0x30  # board → host, needs ACK


#: Messages that are events: the board keeps each until the host ACKs (type, event id).
ACKED_TYPES: Final = frozenset({MsgType.BLOW_END, MsgType.DISPENSER_EVENT, MsgType.MEASUREMENT})


class BoardKind(IntEnum):
    PEF_SENSOR = 1
    DISPENSER = 2
    KIOSK_PERIPHERAL = 3


class HelloFlags(IntFlag):
    HAS_RTC = 1 << 0  # a battery-backed clock that survives power loss
    HAS_BATTERY = 1 << 1


class BoardStatus(IntFlag):
    BATTERY_LOW = 1 << 0
    ON_BATTERY = 1 << 1  # mains power lost
    SENSOR_FAULT = 1 << 2
    RTC_UNSET = 1 << 3  # the board's clock has not been set since power-up
    QUEUE_FULL = 1 << 4  # the event store is full: new events are being lost


class BoardErrorCode(IntEnum):
    UNKNOWN_MESSAGE = 1  # ref = the message type the board does not know
    BAD_PAYLOAD = 2  # ref = the message type it could not decode
    BLOW_NOT_BUFFERED = 3  # ref = blow id asked for by RESEND_BLOW
    QUEUE_FULL = 4
    SENSOR_FAULT = 5


_KNOWN_ERRORS: Final[dict[int, BoardErrorCode | int]] = {int(c): c for c in BoardErrorCode}


class EndReason(IntEnum):
    COMPLETE = 1  # the board's end-of-blow criterion was met
    TIMEOUT = 2  # maximum blow duration reached
    ABORTED_BY_BOARD = 3  # e.g. sensor fault, buffer full


class BlowFlags(IntFlag):
    SATURATED = 1 << 0  # some samples sat at the sensor's limit: PEF is a lower bound
    SENSOR_FAULT = 1 << 1


class BlowQualityBits(IntFlag):
    """BLOW_RESULT quality bits: what the hub's blow analysis found (edge_agent.pef_blow)."""

    SLOW_RISE = 1 << 0
    COUGH = 1 << 1
    EARLY_STOP = 1 << 2
    HESITATION = 1 << 3
    LARGE_BEV = 1 << 4  # back-extrapolated volume above the ATS/ERS limit


class SessionAdvice(IntEnum):
    """BLOW_RESULT advice for the patient, from the session rule (DOMAIN.md §1)."""

    BLOW_AGAIN = 1  # fewer than 3 blows, or the two best differ by more than 20 L/min
    SESSION_COMPLETE = 2  # enough blows and the two best agree: the session value is kept
    SESSION_NOT_REPRODUCIBLE = 3  # the most blows asked for were done; still not reproducible
    BLOW_NOT_USABLE = 4  # the hub could not get a PEF from this blow: blow again


class MeasurementStatus(IntFlag):
    UNSTABLE = 1 << 0  # value present but had not settled
    ABOVE_RANGE = 1 << 1  # value is the device's upper limit; the true value is above it
    BELOW_RANGE = 1 << 2  # value is the device's lower limit; the true value is below it
    ERROR = 1 << 3  # no value; mantissa and exponent are 0


#: DISPENSER_EVENT kind codes (stable; one per device_profiles EventKind).
EVENT_KIND_CODES: Final[dict[EventKind, int]] = {
    EventKind.DOSE_DUE: 1,
    EventKind.DOSE_DISPENSED: 2,
    EventKind.DOSE_TAKEN: 3,
    EventKind.DOSE_TAKEN_LATE: 4,
    EventKind.DOSE_MISSED: 5,
    EventKind.HELP_REQUEST: 6,
    EventKind.LOW_STOCK: 7,
    EventKind.ROLL_EMPTY: 8,
    EventKind.JAM: 9,
    EventKind.TAMPER: 10,
    EventKind.POWER_LOST: 11,
    EventKind.POWER_RESTORED: 12,
    EventKind.LOW_BATTERY: 13,
    EventKind.OFFLINE: 14,
    EventKind.ONLINE: 15,
}
_KIND_OF_CODE: Final = {c: k for k, c in EVENT_KIND_CODES.items()}

#: MEASUREMENT measure codes → device_profiles measure keys; the value is in the key's unit.
MEASURE_CODES: Final[dict[int, str]] = {
    1: "body.height",  # cm
    2: "body.weight",  # kg
    3: "body.temperature",  # Cel
    4: "bp.systolic",  # mm[Hg]
    5: "bp.diastolic",  # mm[Hg]
    6: "pulse.cuff",  # /min
    7: "spo2",  # %
    8: "pulse.oximeter",  # /min
    9: "glucose.capillary",  # mmol/L
    10: "pef",  # L/min
}
_CODE_OF_MEASURE: Final = {k: c for c, k in MEASURE_CODES.items()}
assert set(MEASURE_CODES.values()) <= MEASURES.keys()
assert set(EVENT_KIND_CODES) == set(EventKind)

#: BLOW_START: below this the PEF is under-sampled (ATS 26 waveforms are sampled at 500 Hz).
MIN_SAMPLE_RATE_HZ: Final = 500
#: FLOW_SAMPLES header is 10 bytes, each sample 2 bytes.
MAX_SAMPLES_PER_FRAME: Final = (MAX_PAYLOAD - 10) // 2
BOARD_ID_SIZE: Final = 16
FIRMWARE_SIZE: Final = 16
DOSE_ID_SIZE: Final = 32
MAX_ERROR_TEXT: Final = 200  # bytes of UTF-8
DOSES_LEFT_UNKNOWN: Final = 0xFFFF
#: 9999-12-31T23:59:59.999Z: the last instant a datetime holds; later board times are refused.
MAX_UNIX_MS: Final = 253_402_300_799_999
MAX_UNIX_S: Final = MAX_UNIX_MS // 1000
_BOARD_ID_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,16}")
_PRINTABLE_RE: Final = re.compile(r"[\x20-\x7e]*")

_E = TypeVar("_E", bound=IntEnum)
_U8, _U16, _U32, _U64 = (1 << 8) - 1, (1 << 16) - 1, (1 << 32) - 1, (1 << 64) - 1


def _int(msg: str, field: str, value: int, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise BridgeMessageError(msg, field, f"{value!r} is outside {lo}..{hi}")


def _ascii(msg: str, field: str, value: str, size: int, pattern: re.Pattern[str]) -> None:
    if not isinstance(value, str) or len(value) > size or not pattern.fullmatch(value):
        raise BridgeMessageError(msg, field, f"{value!r} is not {size} or fewer allowed characters")


def _enum(msg: str, field: str, cls: type[_E], raw: int) -> _E:
    try:
        return cls(raw)
    except ValueError:
        raise BridgeMessageError(msg, field, f"unknown {cls.__name__} {raw}") from None


class _Reader:
    """Reads a payload front to back; a short payload names the field that did not fit."""

    __slots__ = ("_data", "_msg", "_pos")

    def __init__(self, msg: str, data: bytes) -> None:
        self._msg, self._data, self._pos = msg, bytes(data), 0

    def _take(self, size: int, field: str) -> bytes:
        if self._pos + size > len(self._data):
            raise BridgeMessageError(
                self._msg,
                field,
                f"needs {size} bytes at byte {self._pos}, payload has {len(self._data)}",
            )
        out = self._data[self._pos : self._pos + size]
        self._pos += size
        return out

    def uint(self, size: int, field: str) -> int:
        return int.from_bytes(self._take(size, field), "little")

    def sint(self, size: int, field: str) -> int:
        return int.from_bytes(self._take(size, field), "little", signed=True)

    def ascii(self, size: int, field: str) -> str:
        raw = self._take(size, field).rstrip(b"\x00")
        if b"\x00" in raw or any(b > 0x7E or b < 0x20 for b in raw):
            raise BridgeMessageError(self._msg, field, f"not NUL-padded printable ASCII: {raw!r}")
        return raw.decode("ascii")

    def raw(self, size: int, field: str) -> bytes:
        return self._take(size, field)


def _pad(value: str, size: int) -> bytes:
    return value.encode("ascii").ljust(size, b"\x00")


class BridgeMessage:
    """Base of every message: ``TYPE`` is its frame type byte."""

    __slots__ = ()
    TYPE: ClassVar[MsgType]

    def encode(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        raise NotImplementedError


# --------------------------------------------------------------------------- common


@dataclass(frozen=True, slots=True, kw_only=True)
class Hello(BridgeMessage):
    """Board → host on start-up (and every few seconds until a HELLO_ACK accepts it)."""

    TYPE: ClassVar[MsgType] = MsgType.HELLO
    kind: BoardKind
    protocol_version: int  # highest protocol version the firmware speaks
    flags: HelloFlags
    board_id: str  # 1..16 of [A-Za-z0-9._-]: the label on the enclosure
    firmware: str  # 0..16 printable ASCII, e.g. "pef-1.4.2"
    rtc_unix_ms: int  # board clock now, Unix ms; 0 = clock not set
    sample_rate_hz: int = 0  # PEF boards: flow sample rate; 0 = not applicable
    max_blow_samples: int = 0  # PEF boards: blow buffer capacity; 0 = not applicable

    def __post_init__(self) -> None:
        n = "HELLO"
        _int(n, "protocol_version", self.protocol_version, 1, _U8)
        _int(n, "flags", self.flags, 0, _U16)
        _ascii(n, "board_id", self.board_id, BOARD_ID_SIZE, _BOARD_ID_RE)
        _ascii(n, "firmware", self.firmware, FIRMWARE_SIZE, _PRINTABLE_RE)
        _int(n, "rtc_unix_ms", self.rtc_unix_ms, 0, MAX_UNIX_MS)
        _int(n, "sample_rate_hz", self.sample_rate_hz, 0, _U16)
        _int(n, "max_blow_samples", self.max_blow_samples, 0, _U32)

    def encode(self) -> bytes:
        return (
            struct.pack("<BBH", self.kind, self.protocol_version, self.flags)
            + _pad(self.board_id, BOARD_ID_SIZE)
            + _pad(self.firmware, FIRMWARE_SIZE)
            + struct.pack("<QHI", self.rtc_unix_ms, self.sample_rate_hz, self.max_blow_samples)
        )

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        n = "HELLO"
        r = _Reader(n, payload)
        return cls(
            kind=_enum(n, "kind", BoardKind, r.uint(1, "kind")),
            protocol_version=r.uint(1, "protocol_version"),
            flags=HelloFlags(r.uint(2, "flags")),
            board_id=r.ascii(BOARD_ID_SIZE, "board_id"),
            firmware=r.ascii(FIRMWARE_SIZE, "firmware"),
            rtc_unix_ms=r.uint(8, "rtc_unix_ms"),
            sample_rate_hz=r.uint(2, "sample_rate_hz"),
            max_blow_samples=r.uint(4, "max_blow_samples"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class HelloAck(BridgeMessage):
    """Host → board: accepted or refused, and the host's clock so the board can set its own."""

    TYPE: ClassVar[MsgType] = MsgType.HELLO_ACK
    host_unix_ms: int
    accepted: bool

    def __post_init__(self) -> None:
        _int("HELLO_ACK", "host_unix_ms", self.host_unix_ms, 1, MAX_UNIX_MS)

    def encode(self) -> bytes:
        return struct.pack("<QB", self.host_unix_ms, self.accepted)

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        r = _Reader("HELLO_ACK", payload)
        t = r.uint(8, "host_unix_ms")
        accepted = r.uint(1, "accepted")
        if accepted > 1:
            raise BridgeMessageError("HELLO_ACK", "accepted", f"{accepted} is neither 0 nor 1")
        return cls(host_unix_ms=t, accepted=bool(accepted))


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat(BridgeMessage):
    TYPE: ClassVar[MsgType] = MsgType.HEARTBEAT
    uptime_ms: int
    status: BoardStatus
    queued_events: int  # events waiting for an ACK
    rtc_unix_ms: int  # 0 = clock not set

    def __post_init__(self) -> None:
        n = "HEARTBEAT"
        _int(n, "uptime_ms", self.uptime_ms, 0, _U64)
        _int(n, "status", self.status, 0, _U16)
        _int(n, "queued_events", self.queued_events, 0, _U16)
        _int(n, "rtc_unix_ms", self.rtc_unix_ms, 0, MAX_UNIX_MS)

    def encode(self) -> bytes:
        return struct.pack(
            "<QHHQ", self.uptime_ms, self.status, self.queued_events, self.rtc_unix_ms
        )

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        r = _Reader("HEARTBEAT", payload)
        return cls(
            uptime_ms=r.uint(8, "uptime_ms"),
            status=BoardStatus(r.uint(2, "status")),
            queued_events=r.uint(2, "queued_events"),
            rtc_unix_ms=r.uint(8, "rtc_unix_ms"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Ack(BridgeMessage):
    """Host → board: event ``event_id`` of type ``acked_type`` is stored; forget it."""

    TYPE: ClassVar[MsgType] = MsgType.ACK
    acked_type: MsgType
    event_id: int  # blow id (BLOW_END), event seq (DISPENSER_EVENT), measurement seq

    def __post_init__(self) -> None:
        if self.acked_type not in ACKED_TYPES:
            raise BridgeMessageError("ACK", "acked_type", f"{self.acked_type!r} is not an event")
        _int("ACK", "event_id", self.event_id, 0, _U32)

    def encode(self) -> bytes:
        return struct.pack("<BI", self.acked_type, self.event_id)

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        r = _Reader("ACK", payload)
        t = _enum("ACK", "acked_type", MsgType, r.uint(1, "acked_type"))
        return cls(acked_type=t, event_id=r.uint(4, "event_id"))


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorReport(BridgeMessage):
    """Board → host ERROR: something the board could not do, with a short text."""

    TYPE: ClassVar[MsgType] = MsgType.ERROR
    code: BoardErrorCode | int  # codes the host does not know stay ints
    ref: int  # what the error is about (blow id, message type); 0 = nothing
    text: str

    def __post_init__(self) -> None:
        _int("ERROR", "code", self.code, 0, _U16)
        _int("ERROR", "ref", self.ref, 0, _U32)
        try:
            size = len(self.text.encode())
        except UnicodeEncodeError:
            raise BridgeMessageError("ERROR", "text", "not encodable as UTF-8") from None
        if size > MAX_ERROR_TEXT:
            raise BridgeMessageError("ERROR", "text", f"longer than {MAX_ERROR_TEXT} bytes")

    def encode(self) -> bytes:
        text = self.text.encode()
        return struct.pack("<HIB", self.code, self.ref, len(text)) + text

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        r = _Reader("ERROR", payload)
        raw_code, ref = r.uint(2, "code"), r.uint(4, "ref")
        text = r.raw(r.uint(1, "text_len"), "text").decode("utf-8", errors="replace")
        code = _KNOWN_ERRORS.get(raw_code, raw_code)
        return cls(code=code, ref=ref, text=text)


@dataclass(frozen=True, slots=True, kw_only=True)
class SetTime(BridgeMessage):
    TYPE: ClassVar[MsgType] = MsgType.SET_TIME
    host_unix_ms: int

    def __post_init__(self) -> None:
        _int("SET_TIME", "host_unix_ms", self.host_unix_ms, 1, MAX_UNIX_MS)

    def encode(self) -> bytes:
        return struct.pack("<Q", self.host_unix_ms)

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        return cls(host_unix_ms=_Reader("SET_TIME", payload).uint(8, "host_unix_ms"))


@dataclass(frozen=True, slots=True, kw_only=True)
class HelloRequest(BridgeMessage):
    """Host → board: "say HELLO again" (the host restarted and does not know this board)."""

    TYPE: ClassVar[MsgType] = MsgType.HELLO_REQUEST

    def encode(self) -> bytes:
        return b""

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        return cls()


# --------------------------------------------------------------------------- PEF sensor board


@dataclass(frozen=True, slots=True, kw_only=True)
class BlowStart(BridgeMessage):
    TYPE: ClassVar[MsgType] = MsgType.BLOW_START
    blow_id: int
    sample_rate_hz: int
    start_tick_us: int  # the board's free-running µs sample clock at sample 0 (wraps)
    rtc_unix_ms: int  # board clock at sample 0; 0 = clock not set

    def __post_init__(self) -> None:
        n = "BLOW_START"
        _int(n, "blow_id", self.blow_id, 0, _U32)
        _int(n, "sample_rate_hz", self.sample_rate_hz, MIN_SAMPLE_RATE_HZ, _U16)
        _int(n, "start_tick_us", self.start_tick_us, 0, _U32)
        _int(n, "rtc_unix_ms", self.rtc_unix_ms, 0, MAX_UNIX_MS)

    def encode(self) -> bytes:
        return struct.pack(
            "<IHIQ", self.blow_id, self.sample_rate_hz, self.start_tick_us, self.rtc_unix_ms
        )

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        r = _Reader("BLOW_START", payload)
        return cls(
            blow_id=r.uint(4, "blow_id"),
            sample_rate_hz=r.uint(2, "sample_rate_hz"),
            start_tick_us=r.uint(4, "start_tick_us"),
            rtc_unix_ms=r.uint(8, "rtc_unix_ms"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowSamples(BridgeMessage):
    """Consecutive flow samples, i16 mL/s each (negative = inspiratory / below sensor zero)."""

    TYPE: ClassVar[MsgType] = MsgType.FLOW_SAMPLES
    blow_id: int
    first_index: int  # index of samples[0] within the blow
    samples: tuple[int, ...]

    def __post_init__(self) -> None:
        n = "FLOW_SAMPLES"
        _int(n, "blow_id", self.blow_id, 0, _U32)
        _int(n, "first_index", self.first_index, 0, _U32)
        _int(n, "count", len(self.samples), 1, MAX_SAMPLES_PER_FRAME)
        for i, s in enumerate(self.samples):
            _int(n, f"samples[{i}]", s, -0x8000, 0x7FFF)

    def encode(self) -> bytes:
        k = len(self.samples)
        return struct.pack(f"<IIH{k}h", self.blow_id, self.first_index, k, *self.samples)

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        r = _Reader("FLOW_SAMPLES", payload)
        blow_id, first = r.uint(4, "blow_id"), r.uint(4, "first_index")
        k = r.uint(2, "count")
        raw = r.raw(2 * k, "samples")
        return cls(blow_id=blow_id, first_index=first, samples=struct.unpack(f"<{k}h", raw))


@dataclass(frozen=True, slots=True, kw_only=True)
class BlowEnd(BridgeMessage):
    """The event of a blow: the host ACKs it once it holds every sample, or asks for a resend."""

    TYPE: ClassVar[MsgType] = MsgType.BLOW_END
    blow_id: int
    total_samples: int
    end_reason: EndReason
    flags: BlowFlags
    board_peak_ml_s: int  # the board's own peak flow, for a cross-check; 0 = not computed

    def __post_init__(self) -> None:
        n = "BLOW_END"
        _int(n, "blow_id", self.blow_id, 0, _U32)
        _int(n, "total_samples", self.total_samples, 0, _U32)
        _int(n, "flags", self.flags, 0, _U8)
        _int(n, "board_peak_ml_s", self.board_peak_ml_s, 0, _U16)

    def encode(self) -> bytes:
        return struct.pack(
            "<IIBBH",
            self.blow_id,
            self.total_samples,
            self.end_reason,
            self.flags,
            self.board_peak_ml_s,
        )

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        n = "BLOW_END"
        r = _Reader(n, payload)
        return cls(
            blow_id=r.uint(4, "blow_id"),
            total_samples=r.uint(4, "total_samples"),
            end_reason=_enum(n, "end_reason", EndReason, r.uint(1, "end_reason")),
            flags=BlowFlags(r.uint(1, "flags")),
            board_peak_ml_s=r.uint(2, "board_peak_ml_s"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ResendBlow(BridgeMessage):
    """Host → board: send blow ``blow_id`` again, whole (BLOW_START, every chunk, BLOW_END)."""

    TYPE: ClassVar[MsgType] = MsgType.RESEND_BLOW
    blow_id: int

    def __post_init__(self) -> None:
        _int("RESEND_BLOW", "blow_id", self.blow_id, 0, _U32)

    def encode(self) -> bytes:
        return struct.pack("<I", self.blow_id)

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        return cls(blow_id=_Reader("RESEND_BLOW", payload).uint(4, "blow_id"))


@dataclass(frozen=True, slots=True, kw_only=True)
class BlowResult(BridgeMessage):
    """Host → PEF board: the blow's PEF and quality as the hub analysed them, and the session
    advice, so the board can tell the patient (display, LED or tone). Informational: sent once
    after the blow is stored, never acknowledged; a board may ignore it."""

    TYPE: ClassVar[MsgType] = MsgType.BLOW_RESULT
    blow_id: int
    pef_l_min: int  # the hub's PEF of this blow, L/min; 0 = none (BLOW_NOT_USABLE)
    quality: BlowQualityBits
    advice: SessionAdvice
    session_best_l_min: int  # best PEF of the session so far, L/min; 0 = none
    session_blows: int  # blows in the session so far, this one included

    def __post_init__(self) -> None:
        n = "BLOW_RESULT"
        _int(n, "blow_id", self.blow_id, 0, _U32)
        _int(n, "pef_l_min", self.pef_l_min, 0, _U16)
        _int(n, "quality", self.quality, 0, _U8)
        if not isinstance(self.advice, SessionAdvice):
            raise BridgeMessageError(n, "advice", f"{self.advice!r} is not a SessionAdvice")
        _int(n, "session_best_l_min", self.session_best_l_min, 0, _U16)
        _int(n, "session_blows", self.session_blows, 0, _U8)

    def encode(self) -> bytes:
        return struct.pack(
            "<IHBBHB",
            self.blow_id,
            self.pef_l_min,
            self.quality,
            self.advice,
            self.session_best_l_min,
            self.session_blows,
        )

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        n = "BLOW_RESULT"
        r = _Reader(n, payload)
        return cls(
            blow_id=r.uint(4, "blow_id"),
            pef_l_min=r.uint(2, "pef_l_min"),
            quality=BlowQualityBits(r.uint(1, "quality")),
            advice=_enum(n, "advice", SessionAdvice, r.uint(1, "advice")),
            session_best_l_min=r.uint(2, "session_best_l_min"),
            session_blows=r.uint(1, "session_blows"),
        )


# --------------------------------------------------------------------------- dispenser


@dataclass(frozen=True, slots=True, kw_only=True)
class DispenserEvent(BridgeMessage):
    TYPE: ClassVar[MsgType] = MsgType.DISPENSER_EVENT
    event_seq: int  # the board's own event counter, kept across reboots
    kind: EventKind
    dose_id: str  # 0..32 printable ASCII; required for dose kinds
    scheduled_unix_s: int  # the dose's scheduled time; 0 = none
    actual_unix_s: int  # board clock when it happened; 0 = clock not set
    doses_left: int = DOSES_LEFT_UNKNOWN  # doses in the device after the event

    def __post_init__(self) -> None:
        n = "DISPENSER_EVENT"
        _int(n, "event_seq", self.event_seq, 0, _U32)
        if self.kind not in EVENT_KIND_CODES:
            raise BridgeMessageError(n, "kind", f"{self.kind!r} has no code")
        _ascii(n, "dose_id", self.dose_id, DOSE_ID_SIZE, _PRINTABLE_RE)
        if self.kind in DOSE_KINDS and not self.dose_id:
            raise BridgeMessageError(n, "dose_id", f"a {self.kind.value} event needs a dose id")
        _int(n, "scheduled_unix_s", self.scheduled_unix_s, 0, MAX_UNIX_S)
        _int(n, "actual_unix_s", self.actual_unix_s, 0, MAX_UNIX_S)
        _int(n, "doses_left", self.doses_left, 0, _U16)

    def encode(self) -> bytes:
        return (
            struct.pack("<IB", self.event_seq, EVENT_KIND_CODES[self.kind])
            + _pad(self.dose_id, DOSE_ID_SIZE)
            + struct.pack("<QQH", self.scheduled_unix_s, self.actual_unix_s, self.doses_left)
        )

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        n = "DISPENSER_EVENT"
        r = _Reader(n, payload)
        seq, code = r.uint(4, "event_seq"), r.uint(1, "kind")
        kind = _KIND_OF_CODE.get(code)
        if kind is None:
            raise BridgeMessageError(n, "kind", f"unknown event kind code {code}")
        return cls(
            event_seq=seq,
            kind=kind,
            dose_id=r.ascii(DOSE_ID_SIZE, "dose_id"),
            scheduled_unix_s=r.uint(8, "scheduled_unix_s"),
            actual_unix_s=r.uint(8, "actual_unix_s"),
            doses_left=r.uint(2, "doses_left"),
        )


# --------------------------------------------------------------------------- kiosk peripheral


@dataclass(frozen=True, slots=True, kw_only=True)
class Measurement(BridgeMessage):
    """One reading: ``mantissa * 10**exponent`` in the canonical unit of ``measure``."""

    TYPE: ClassVar[MsgType] = MsgType.MEASUREMENT
    seq: int
    measure: str  # a key of MEASURE_CODES' values, e.g. "body.height"
    status: MeasurementStatus
    exponent: int
    mantissa: int
    rtc_unix_ms: int  # board clock when measured; 0 = clock not set

    def __post_init__(self) -> None:
        n = "MEASUREMENT"
        _int(n, "seq", self.seq, 0, _U32)
        if self.measure not in _CODE_OF_MEASURE:
            raise BridgeMessageError(n, "measure", f"{self.measure!r} has no measure code")
        _int(n, "status", self.status, 0, _U8)
        both = MeasurementStatus.ABOVE_RANGE | MeasurementStatus.BELOW_RANGE
        if self.status & both == both:
            raise BridgeMessageError(n, "status", "both above and below range")
        if self.status & MeasurementStatus.ERROR and (self.mantissa or self.exponent):
            raise BridgeMessageError(n, "mantissa", "an ERROR reading carries no value (0, 0)")
        _int(n, "exponent", self.exponent, -0x80, 0x7F)
        _int(n, "mantissa", self.mantissa, -(1 << 31), (1 << 31) - 1)
        _int(n, "rtc_unix_ms", self.rtc_unix_ms, 0, MAX_UNIX_MS)

    @property
    def value(self) -> float | None:
        """The exact decimal value as a float; None for an ERROR reading."""
        if self.status & MeasurementStatus.ERROR:
            return None
        return float(Decimal(self.mantissa).scaleb(self.exponent))

    def encode(self) -> bytes:
        return struct.pack(
            "<IHBbiQ",
            self.seq,
            _CODE_OF_MEASURE[self.measure],
            self.status,
            self.exponent,
            self.mantissa,
            self.rtc_unix_ms,
        )

    @classmethod
    def decode(cls, payload: bytes) -> Self:
        n = "MEASUREMENT"
        r = _Reader(n, payload)
        seq, code = r.uint(4, "seq"), r.uint(2, "measure")
        measure = MEASURE_CODES.get(code)
        if measure is None:
            raise BridgeMessageError(n, "measure", f"unknown measure code {code}")
        return cls(
            seq=seq,
            measure=measure,
            status=MeasurementStatus(r.uint(1, "status")),
            exponent=r.sint(1, "exponent"),
            mantissa=r.sint(4, "mantissa"),
            rtc_unix_ms=r.uint(8, "rtc_unix_ms"),
        )


# --------------------------------------------------------------------------- registry

_CLASSES: Final[tuple[type[BridgeMessage], ...]] = (
    Hello,
    HelloAck,
    Heartbeat,
    Ack,
    ErrorReport,
    SetTime,
    HelloRequest,
    BlowStart,
    FlowSamples,
    BlowEnd,
    ResendBlow,
    BlowResult,
    DispenserEvent,
    Measurement,
)
_BY_TYPE: Final[dict[int, type[BridgeMessage]]] = {c.TYPE: c for c in _CLASSES}
assert set(_BY_TYPE) == set(MsgType)
HOST_TO_BOARD: Final = frozenset(
    {
        MsgType.HELLO_ACK,
        MsgType.ACK,
        MsgType.SET_TIME,
        MsgType.HELLO_REQUEST,
        MsgType.RESEND_BLOW,
        MsgType.BLOW_RESULT,
    }
)
BOARD_TO_HOST: Final = frozenset(MsgType) - HOST_TO_BOARD


def decode_message(msg_type: int, payload: bytes) -> BridgeMessage:
    """The message of a frame; :class:`UnknownMessageTypeError` for a type this code lacks."""
    cls = _BY_TYPE.get(msg_type)
    if cls is None:
        raise UnknownMessageTypeError(msg_type)
    return cls.decode(payload)


def encode_message(msg: BridgeMessage, seq: int) -> bytes:
    """A whole frame (delimiter included) carrying ``msg`` with frame sequence number ``seq``."""
    return encode_frame(msg.TYPE, seq, msg.encode())
