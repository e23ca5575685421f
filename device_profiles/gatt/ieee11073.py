"""IEEE 11073-20601 numbers as GATT health profiles carry them, and a bounds-checked reader.

SFLOAT (16 bit): 4-bit signed exponent (high nibble), 12-bit signed mantissa, value = m x 10^e.
FLOAT (32 bit): 8-bit signed exponent (byte 3), 24-bit signed mantissa (bytes 0-2).
Special values (NaN, NRes, ±INF, reserved) are checked on the raw mantissa *before* sign
extension (PROTOCOLS.md "IEEE 11073 numbers") and are never numbers: they decode to
:class:`Special`, which the profiles map to an absent reason. All multi-byte fields are
little-endian.

:class:`Reader` reads a characteristic value front to back; every read is bounds-checked and a
short or malformed value raises :class:`DecodeError` naming the byte offset and what was
expected. Errors say whether the *device* sent something wrong (:class:`DecodeError`) or *we*
asked for something impossible (:class:`EncodeError`).
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Final

from device_profiles.observation import AbsentReason


class DecodeError(ValueError):
    """The peer sent bytes that break the specification (at ``offset``)."""

    def __init__(self, offset: int, expected: str, *, field: str = "") -> None:
        where = f"{field} " if field else ""
        super().__init__(f"byte {offset}: {where}expected {expected}")
        self.offset = offset
        self.expected = expected
        self.field = field


class EncodeError(ValueError):
    """We asked to encode a value the format cannot carry (our bug, not the device's)."""


class Special(StrEnum):
    NAN = "nan"
    NRES = "nres"
    POSITIVE_INFINITY = "+inf"
    NEGATIVE_INFINITY = "-inf"
    RESERVED = "reserved"

    @property
    def absent_reason(self) -> AbsentReason:
        return _ABSENT[self]


_ABSENT: Final[dict[Special, AbsentReason]] = {
    Special.NAN: AbsentReason.NOT_A_NUMBER,
    Special.NRES: AbsentReason.NOT_AT_THIS_RESOLUTION,
    Special.POSITIVE_INFINITY: AbsentReason.POSITIVE_INFINITY,
    Special.NEGATIVE_INFINITY: AbsentReason.NEGATIVE_INFINITY,
    Special.RESERVED: AbsentReason.ERROR,
}

_SFLOAT_SPECIAL: Final[dict[int, Special]] = {
    0x07FF: Special.NAN,
    0x0800: Special.NRES,
    0x07FE: Special.POSITIVE_INFINITY,
    0x0802: Special.NEGATIVE_INFINITY,
    0x0801: Special.RESERVED,
}
_FLOAT_SPECIAL: Final[dict[int, Special]] = {
    0x007FFFFF: Special.NAN,
    0x00800000: Special.NRES,
    0x007FFFFE: Special.POSITIVE_INFINITY,
    0x00800002: Special.NEGATIVE_INFINITY,
    0x00800001: Special.RESERVED,
}


@dataclass(frozen=True, slots=True)
class Number:
    """An IEEE 11073 number: exactly ``mantissa x 10^exponent`` (or a special value)."""

    mantissa: int
    exponent: int
    special: Special | None = None

    @property
    def is_number(self) -> bool:
        return self.special is None

    @property
    def value(self) -> float:
        """The value as a float; only for numbers (check :attr:`is_number`)."""
        if self.special is not None:
            raise ValueError(f"{self.special.value} is not a number")
        return float(Decimal(self.mantissa).scaleb(self.exponent))

    def scaled(self, factor_exp10: int) -> float:
        """The value x 10^factor_exp10, computed exactly (e.g. kg/L x 10^5 = mg/dL)."""
        if self.special is not None:
            raise ValueError(f"{self.special.value} is not a number")
        return float(Decimal(self.mantissa).scaleb(self.exponent + factor_exp10))


def _signed(v: int, bits: int) -> int:
    return v - (1 << bits) if v & (1 << (bits - 1)) else v


def decode_sfloat(raw: int) -> Number:
    # Numbers are immutable: a 16-bit raw value maps to one shared instance (at most 65 536).
    cached = _SFLOAT_CACHE.get(raw)
    if cached is not None:
        return cached
    n = _decode_sfloat(raw)
    if 0 <= raw <= 0xFFFF:
        _SFLOAT_CACHE[raw] = n
    return n


_SFLOAT_CACHE: Final[dict[int, Number]] = {}


def _decode_sfloat(raw: int) -> Number:
    mantissa_raw = raw & 0x0FFF
    special = _SFLOAT_SPECIAL.get(mantissa_raw) if (raw >> 12) == 0 else None
    if special is not None:
        return Number(0, 0, special)
    return Number(_signed(mantissa_raw, 12), _signed(raw >> 12, 4))


def decode_float(raw: int) -> Number:
    mantissa_raw = raw & 0x00FFFFFF
    special = _FLOAT_SPECIAL.get(mantissa_raw) if (raw >> 24) == 0 else None
    if special is not None:
        return Number(0, 0, special)
    return Number(_signed(mantissa_raw, 24), _signed(raw >> 24, 8))


def encode_sfloat(n: Number) -> int:
    if n.special is not None:
        return {v: k for k, v in _SFLOAT_SPECIAL.items()}[n.special]
    if not (-2048 <= n.mantissa <= 2047 and -8 <= n.exponent <= 7):
        raise EncodeError(f"{n.mantissa}e{n.exponent} does not fit an SFLOAT")
    if n.exponent == 0 and (n.mantissa & 0x0FFF) in _SFLOAT_SPECIAL:
        raise EncodeError(f"mantissa {n.mantissa} collides with a special value")
    return ((n.exponent & 0xF) << 12) | (n.mantissa & 0x0FFF)


def encode_float(n: Number) -> int:
    if n.special is not None:
        return {v: k for k, v in _FLOAT_SPECIAL.items()}[n.special]
    if not (-(1 << 23) <= n.mantissa < (1 << 23) and -128 <= n.exponent <= 127):
        raise EncodeError(f"{n.mantissa}e{n.exponent} does not fit a FLOAT")
    if n.exponent == 0 and (n.mantissa & 0x00FFFFFF) in _FLOAT_SPECIAL:
        raise EncodeError(f"mantissa {n.mantissa} collides with a special value")
    return ((n.exponent & 0xFF) << 24) | (n.mantissa & 0x00FFFFFF)


def number_from_decimal(text: str) -> Number:
    """``"127.0"`` → 1270 x 10^-1: the exact mantissa/exponent of a decimal literal."""
    d = Decimal(text)
    sign, digits, exp = d.as_tuple()
    if not isinstance(exp, int):
        raise EncodeError(f"{text!r} is not a finite decimal")
    m = int("".join(map(str, digits)) or "0")
    return Number(-m if sign else m, exp)


@dataclass(frozen=True, slots=True)
class DateTime:
    """The GATT Date Time (7 bytes). Year/month/day 0 mean unknown; then :attr:`value` is None."""

    year: int
    month: int
    day: int
    hour: int
    minute: int
    second: int

    @property
    def value(self) -> datetime | None:
        if self.year == 0 or self.month == 0 or self.day == 0:
            return None
        return datetime(self.year, self.month, self.day, self.hour, self.minute, self.second)  # noqa: DTZ001 - device local time, no zone on the wire

    def pack(self) -> bytes:
        return struct.pack(
            "<HBBBBB", self.year, self.month, self.day, self.hour, self.minute, self.second
        )

    @classmethod
    def of(cls, dt: datetime) -> DateTime:
        return cls(dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second)


def slot_setters(cls: type, names: tuple[str, ...]) -> tuple[Callable[[object, object], None], ...]:
    """The slot setters of a frozen slotted dataclass, for decoders' hot paths.

    ``object.__new__`` plus every setter builds the same instance as ``cls(...)`` without the
    frozen ``__setattr__`` round trips. ``names`` must be exactly the fields, in order, so a
    field added later fails at import rather than leaving an attribute unset.
    """
    fields = tuple(f.name for f in dataclasses.fields(cls))
    if fields != names:
        raise TypeError(f"{cls.__name__} fields are {fields}, not {names}")
    return tuple(cls.__dict__[n].__set__ for n in names)


_new: Final = object.__new__
(_dt_year, _dt_month, _dt_day, _dt_hour, _dt_minute, _dt_second) = slot_setters(
    DateTime, ("year", "month", "day", "hour", "minute", "second")
)


def new_date_time(year: int, month: int, day: int, hour: int, minute: int, second: int) -> DateTime:
    """``DateTime(...)`` for already-checked fields, about twice as fast."""
    dt: DateTime = _new(DateTime)
    _dt_year(dt, year)
    _dt_month(dt, month)
    _dt_day(dt, day)
    _dt_hour(dt, hour)
    _dt_minute(dt, minute)
    _dt_second(dt, second)
    return dt


#: Days per month (index 1-12) in a common year; February of a leap year has 29.
_MONTH_DAYS: Final = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def date_time_ok(year: int, month: int, day: int, hour: int, minute: int, second: int) -> bool:
    """What :meth:`Reader.date_time` accepts (unknown year/month/day 0 allowed).

    Equivalent to the range checks plus building the ``datetime`` when year, month and day are
    all known (which refuses e.g. 31 February), without building it.
    """
    if not (
        (year == 0 or 1582 <= year <= 9999)
        and month <= 12
        and day <= 31
        and hour <= 23
        and minute <= 59
        and second <= 59
    ):
        return False
    if year == 0 or month == 0 or day <= 28:
        return True
    if month == 2:
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        return day <= (29 if leap else 28)
    return day <= _MONTH_DAYS[month]


class Reader:
    """Bounds-checked little-endian reads over one characteristic value."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)
        self.pos = 0

    def _take(self, n: int, expected: str, field: str) -> bytes:
        if self.pos + n > len(self.data):
            raise DecodeError(
                self.pos,
                f"{expected} ({n} bytes), only {len(self.data) - self.pos} left",
                field=field,
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u8(self, field: str = "") -> int:
        return self._take(1, "uint8", field)[0]

    def u16(self, field: str = "") -> int:
        return int.from_bytes(self._take(2, "uint16", field), "little")

    def s16(self, field: str = "") -> int:
        return int.from_bytes(self._take(2, "sint16", field), "little", signed=True)

    def u24(self, field: str = "") -> int:
        return int.from_bytes(self._take(3, "uint24", field), "little")

    def u32(self, field: str = "") -> int:
        return int.from_bytes(self._take(4, "uint32", field), "little")

    def sfloat(self, field: str = "") -> Number:
        return decode_sfloat(int.from_bytes(self._take(2, "SFLOAT", field), "little"))

    def float32(self, field: str = "") -> Number:
        return decode_float(int.from_bytes(self._take(4, "FLOAT", field), "little"))

    def date_time(self, field: str = "") -> DateTime:
        start = self.pos
        year, month, day, hour, minute, second = struct.unpack(
            "<HBBBBB", self._take(7, "date time", field)
        )
        if not date_time_ok(year, month, day, hour, minute, second):
            raise DecodeError(
                start,
                f"a valid date time, got {year:04d}-{month:02d}-{day:02d} "
                f"{hour:02d}:{minute:02d}:{second:02d}",
                field=field,
            )
        return DateTime(year, month, day, hour, minute, second)

    def rest(self) -> bytes:
        chunk = self.data[self.pos :]
        self.pos = len(self.data)
        return chunk

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def end(self, *, allow_trailing: bool = False) -> None:
        """The value must end here (profiles that allow trailing bytes say so)."""
        if self.pos != len(self.data) and not allow_trailing:
            raise DecodeError(
                self.pos, f"end of value, found {len(self.data) - self.pos} more bytes"
            )


def _crc16_mcrf4xx_bitwise(data: bytes) -> int:
    """The bit-at-a-time reference (kept for the table and the tests)."""
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc


def _crc_table() -> tuple[int, ...]:
    out = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
        out.append(crc)
    return tuple(out)


_CRC_TABLE: Final = _crc_table()


def crc16_mcrf4xx(data: bytes) -> int:
    """CRC-16/MCRF4XX (CGM E2E-CRC): poly 0x1021 reflected (0x8408), init 0xFFFF, no final xor."""
    crc = 0xFFFF
    table = _CRC_TABLE
    for b in data:
        crc = (crc >> 8) ^ table[(crc ^ b) & 0xFF]
    return crc
