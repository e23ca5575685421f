"""IEEE 11073 numbers, date time, reader and CRC against the examples in PROTOCOLS.md."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_profiles.gatt.ieee11073 import (
    DateTime,
    DecodeError,
    EncodeError,
    Number,
    Reader,
    Special,
    crc16_mcrf4xx,
    decode_float,
    decode_sfloat,
    encode_float,
    encode_sfloat,
    number_from_decimal,
)
from device_profiles.observation import AbsentReason


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (0xF4F6, 127.0),
        (0xB078, 0.0012),
        (0x0000, 0.0),
        (0x0001, 1.0),
        (0x0FFF, -1.0),
        (0x2001, 100.0),
        (0xF800, -204.8),
    ],
)
def test_sfloat_examples(raw: int, value: float) -> None:
    assert decode_sfloat(raw).value == pytest.approx(value)


def test_float_example() -> None:
    assert decode_float(int.from_bytes(bytes.fromhex("B00E00FE"), "little")).value == 37.6


@pytest.mark.parametrize(
    ("raw", "special", "reason"),
    [
        (0x07FF, Special.NAN, AbsentReason.NOT_A_NUMBER),
        (0x0800, Special.NRES, AbsentReason.NOT_AT_THIS_RESOLUTION),
        (0x07FE, Special.POSITIVE_INFINITY, AbsentReason.POSITIVE_INFINITY),
        (0x0802, Special.NEGATIVE_INFINITY, AbsentReason.NEGATIVE_INFINITY),
        (0x0801, Special.RESERVED, AbsentReason.ERROR),
    ],
)
def test_sfloat_specials_are_never_numbers(
    raw: int, special: Special, reason: AbsentReason
) -> None:
    n = decode_sfloat(raw)
    assert n.special is special
    assert n.special.absent_reason is reason
    assert not n.is_number
    with pytest.raises(ValueError, match="not a number"):
        _ = n.value
    assert encode_sfloat(n) == raw


def test_specials_only_with_exponent_zero() -> None:
    # 0x17FF: exponent 1, mantissa 2047 is an ordinary number, not NaN
    assert decode_sfloat(0x17FF).value == 20470.0


@given(st.integers(0, 0xFFFF))
def test_sfloat_round_trip(raw: int) -> None:
    assert encode_sfloat(decode_sfloat(raw)) == raw


@given(st.integers(0, 0xFFFFFFFF))
def test_float_round_trip(raw: int) -> None:
    assert encode_float(decode_float(raw)) == raw


def test_encoding_refuses_what_does_not_fit() -> None:
    with pytest.raises(EncodeError):
        encode_sfloat(Number(5000, 0))
    with pytest.raises(EncodeError):
        encode_sfloat(Number(2047, 0))  # would be read back as NaN
    assert number_from_decimal("127.0") == Number(1270, -1)
    assert number_from_decimal("-0.5") == Number(-5, -1)


def test_scaled_is_exact() -> None:
    # 120 mg/dL as real meters send it: 120 x 10^-5 kg/L
    assert Number(120, -5).scaled(5) == 120.0


def test_date_time() -> None:
    r = Reader(bytes.fromhex("E2070C1F173B3B"))
    dt = r.date_time("base_time")
    assert (dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second) == (2018, 12, 31, 23, 59, 59)
    assert DateTime.of(dt.value).pack() == bytes.fromhex("E2070C1F173B3B")  # type: ignore[arg-type]
    assert Reader(bytes(7)).date_time().value is None  # year/month/day 0: unknown


@pytest.mark.parametrize(
    "hexdata",
    [
        "E2070D01000000",
        "E2070230000000",
        "E2070101180000",
        "E207020D003C00",
        "E2070230",
        "E207021F000000",
    ],
)
def test_impossible_or_short_date_times(hexdata: str) -> None:
    with pytest.raises(DecodeError) as info:
        Reader(bytes.fromhex(hexdata)).date_time("base_time")
    assert info.value.offset == 0
    assert "base_time" in str(info.value)


def test_reader_names_offset_and_expectation() -> None:
    r = Reader(b"\x01\x02\x03")
    assert r.u16() == 0x0201
    with pytest.raises(DecodeError, match=r"byte 2: seq expected uint16 \(2 bytes\), only 1 left"):
        r.u16("seq")
    r2 = Reader(b"\x01\x02")
    r2.u8()
    with pytest.raises(DecodeError, match="byte 1: expected end of value"):
        r2.end()


def test_crc_check_value() -> None:
    assert crc16_mcrf4xx(b"123456789") == 0x6F91


@given(st.binary(max_size=64))
def test_reader_never_crashes(data: bytes) -> None:
    r = Reader(data)
    error: DecodeError | None = None
    try:
        while r.remaining:
            r.sfloat()
            r.date_time()
    except DecodeError as exc:
        error = exc
    if error is not None:
        assert 0 <= error.offset <= len(data)
