"""The fast decode paths agree with the careful (Reader, field by field) paths on any bytes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from device_profiles.gatt import cgm, glucose, vitals
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


def _cgm_records(crc: bool) -> st.SearchStrategy[bytes]:
    def record(t: tuple[int, bytes, bool, int]) -> bytes:
        flags, body, with_crc, size_delta = t
        n = 2 + len(body) + (2 if with_crc else 0)  # size and flags octets, body, CRC
        raw = bytes([(n + size_delta) & 0xFF, flags]) + body
        return raw + crc16_mcrf4xx(raw).to_bytes(2, "little") if with_crc else raw

    def fitting(flags: int) -> st.SearchStrategy[bytes]:
        n = cgm._CGM_LAYOUTS[flags].size - 2  # body after the flags octet
        exact = st.binary(min_size=n, max_size=n)
        return exact | exact | st.binary(min_size=max(n - 2, 0), max_size=n + 2)

    one = (
        st.tuples(
            st.sampled_from([0, 1, 2, 3, 0x20, 0x40, 0x80, 0xE3, 0xFF, 0x1C]),
            st.sampled_from([crc, crc, crc, not crc]),
        )
        .flatmap(
            lambda t: st.tuples(
                st.just(t[0]), fitting(t[0]), st.just(t[1]), st.sampled_from([0, 0, 0, 0, 1, -1])
            )
        )
        .map(record)
    )
    return st.one_of(st.binary(max_size=30), st.lists(one, min_size=1, max_size=4).map(b"".join))


@settings(max_examples=3000)
@given(st.booleans().flatmap(lambda crc: st.tuples(st.just(crc), _cgm_records(crc))))
def test_cgm_fast_path_agrees_with_careful_path(case: tuple[bool, bytes]) -> None:
    """Records mostly match ``crc`` (some do not): both paths must agree either way."""
    crc, data = case
    fast = cgm._decode_cgm_fast(data, crc=crc)
    careful = _outcome(lambda d: cgm._decode_cgm_careful(d, crc=crc), data)
    if fast is not None:
        assert ("ok", fast) == careful
    assert _outcome(lambda d: cgm.decode_cgm_measurements(d, crc=crc), data) == careful


def test_fast_paths_take_well_formed_values() -> None:
    g = bytes.fromhex("1B0500E2070C1F173B3B000078B0110000")
    assert glucose._decode_glucose_measurement_fast(g) is not None
    body = bytes([8, 0]) + (120).to_bytes(2, "little") + (5).to_bytes(2, "little")
    with_crc = body + crc16_mcrf4xx(body).to_bytes(2, "little")
    assert cgm._decode_cgm_fast(with_crc * 3, crc=True) is not None
    assert cgm._decode_cgm_fast(bytes([6]) + body[1:6], crc=False) is not None


def test_slot_built_values_are_ordinary_instances() -> None:
    import copy
    import dataclasses
    import pickle

    import pytest

    from device_profiles.gatt.ieee11073 import DateTime, new_date_time, slot_setters

    g = bytes.fromhex("1B0500E2070C1F173B3B000078B0110000")
    fast = glucose._decode_glucose_measurement_fast(g)
    careful = glucose._decode_glucose_measurement_careful(g)
    assert fast is not None
    assert hash(fast) == hash(careful)
    assert repr(fast) == repr(careful)
    assert pickle.loads(pickle.dumps(fast)) == careful
    assert copy.copy(fast) == careful
    assert dataclasses.replace(fast) == careful
    assert new_date_time(2024, 2, 29, 1, 2, 3) == DateTime(2024, 2, 29, 1, 2, 3)
    with pytest.raises(TypeError):
        slot_setters(DateTime, ("year",))


def test_slot_built_cgm_values_are_ordinary_instances() -> None:
    import pickle

    rec = bytes([13, 0xE3]) + bytes(range(1, 12))  # all octets, trend, quality
    fast = cgm._decode_cgm_fast(rec, crc=False)
    careful = cgm._decode_cgm_careful(rec, crc=False)
    assert fast is not None
    assert fast == careful
    assert [hash(m) for m in fast] == [hash(m) for m in careful]
    assert pickle.loads(pickle.dumps(fast)) == careful


def _bp_values() -> st.SearchStrategy[bytes]:
    sfloat = st.sampled_from([b"\x01\x08", b"\xff\x07", b"\x79\x00", b"\x00\xf0"]) | st.binary(
        min_size=2, max_size=2
    )
    date = st.tuples(
        st.sampled_from([0, 1581, 2023, 2024, 2100, 10000]),
        st.integers(0, 13),
        st.integers(0, 32),
        st.integers(0, 24),
        st.integers(0, 60),
        st.integers(0, 60),
    ).map(lambda t: t[0].to_bytes(2, "little") + bytes(t[1:]))
    status = st.integers(0, 0xFFFF).map(lambda v: v.to_bytes(2, "little"))
    structured = st.tuples(
        st.integers(0, 255),
        st.lists(sfloat, min_size=3, max_size=3).map(b"".join),
        st.lists(st.one_of(date, sfloat, st.binary(max_size=1), status), max_size=4).map(b"".join),
    ).map(lambda t: bytes([t[0]]) + t[1] + t[2])
    return st.one_of(st.binary(max_size=24), structured)


@settings(max_examples=3000)
@given(_bp_values())
def test_blood_pressure_fast_path_agrees_with_careful_path(data: bytes) -> None:
    fast = vitals._decode_blood_pressure_fast(data)
    careful = _outcome(vitals._decode_blood_pressure_careful, data)
    if fast is not None:
        assert ("ok", fast) == careful
    assert _outcome(vitals.decode_blood_pressure, data) == careful


def test_blood_pressure_fast_path_takes_well_formed_values() -> None:
    bp = bytes.fromhex("1E790050005A00E2070C1F173B3B4800010000")
    assert vitals._decode_blood_pressure_fast(bp) is not None
