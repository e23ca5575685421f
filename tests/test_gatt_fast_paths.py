"""The fast decode paths agree with the careful (Reader, field by field) paths on any bytes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from device_profiles.gatt import glucose
from device_profiles.gatt.ieee11073 import (
    DecodeError,
    _crc16_mcrf4xx_bitwise,
    _decode_sfloat,
    crc16_mcrf4xx,
    date_time_ok,
    decode_sfloat,
)


def _outcome(fn: Callable[[bytes], object], data: bytes) -> object:
    try:
        return ("ok", fn(data))
    except DecodeError as e:
        return ("error", str(e), e.offset, e.field, e.expected)


def _glucose_values() -> st.SearchStrategy[bytes]:
    sizes = st.sampled_from([0, 1, 3, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19])
    date = st.tuples(
        st.sampled_from([0, 1581, 1582, 2000, 2023, 2024, 2100, 9999, 10000]),
        st.integers(0, 13),
        st.integers(0, 32),
        st.integers(0, 24),
        st.integers(0, 60),
        st.integers(0, 60),
    ).map(lambda t: t[0].to_bytes(2, "little") + bytes(t[1:]))
    structured = st.tuples(
        st.integers(0, 255), st.binary(min_size=2, max_size=2), date, st.binary(max_size=8)
    ).map(lambda t: bytes([t[0]]) + t[1] + t[2] + t[3])
    return st.one_of(
        st.binary(max_size=24),
        structured,
        sizes.flatmap(lambda n: st.binary(min_size=n, max_size=n)),
    )


@settings(max_examples=3000)
@given(_glucose_values())
def test_glucose_fast_path_agrees_with_careful_path(data: bytes) -> None:
    fast = glucose._decode_glucose_measurement_fast(data)
    careful = _outcome(glucose._decode_glucose_measurement_careful, data)
    if fast is not None:
        assert ("ok", fast) == careful
    assert _outcome(glucose.decode_glucose_measurement, data) == careful


@settings(max_examples=500)
@given(st.binary(max_size=40))
def test_crc_table_matches_bitwise_reference(data: bytes) -> None:
    assert crc16_mcrf4xx(data) == _crc16_mcrf4xx_bitwise(data)


def test_sfloat_cache_matches_uncached_decode() -> None:
    for raw in range(0x10000):
        assert decode_sfloat(raw) == _decode_sfloat(raw)


def _reference_ok(y: int, mo: int, d: int, h: int, mi: int, s: int) -> bool:
    ok = (y == 0 or 1582 <= y <= 9999) and mo <= 12 and d <= 31 and h <= 23 and mi <= 59 and s <= 59
    if ok and y and mo and d:
        try:
            datetime(y, mo, d, h, mi, s)
        except ValueError:
            return False
    return ok


def test_date_time_ok_matches_datetime_on_every_day() -> None:
    for y in (0, 1581, 1582, 1600, 1700, 1900, 2000, 2023, 2024, 2100, 9999, 10000):
        for mo in range(14):
            for d in range(33):
                assert date_time_ok(y, mo, d, 0, 0, 0) == _reference_ok(y, mo, d, 0, 0, 0)


@given(
    st.integers(0, 0xFFFF),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
)
def test_date_time_ok_matches_datetime(y: int, mo: int, d: int, h: int, mi: int, s: int) -> None:
    assert date_time_ok(y, mo, d, h, mi, s) == _reference_ok(y, mo, d, h, mi, s)
