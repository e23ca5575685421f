"""CGM 0x181F codecs against PROTOCOLS.md facts, round trips and hostile bytes."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from functools import partial

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_profiles.gatt.cgm import (
    ANNUNCIATION_OCTET_ORDER,
    AnnunciationOctet,
    CgmFeatureBit,
    CgmMeasurement,
    CgmSensorStatus,
    CgmSessionRunTime,
    CgmSessionStartTime,
    CgmStatus,
    DstOffset,
    SocpMessage,
    SocpOpCode,
    SocpResponseCode,
    decode_cgm_feature,
    decode_cgm_measurements,
    decode_cgm_session_run_time,
    decode_cgm_session_start_time,
    decode_cgm_status,
    decode_socp,
    encode_cgm_feature,
    encode_cgm_measurement,
    encode_cgm_session_run_time,
    encode_cgm_session_start_time,
    encode_cgm_status,
    encode_socp,
)
from device_profiles.gatt.glucose import GlucoseType, SampleLocation
from device_profiles.gatt.ieee11073 import (
    DateTime,
    DecodeError,
    EncodeError,
    Number,
    Special,
    crc16_mcrf4xx,
    decode_sfloat,
)


def crc(b: bytes) -> bytes:
    return crc16_mcrf4xx(b).to_bytes(2, "little")


def test_crc_check_value() -> None:
    assert crc16_mcrf4xx(b"123456789") == 0x6F91


def test_multi_record_notification() -> None:
    # Record 1: size 6, flags 0, 120 mg/dL (raw 0x0078), offset 5 min.
    # Record 2: size 9, flags trend+status octet, 0x07FF NaN glucose, offset 10,
    #           status octet 0x03 (session stopped, battery low), trend -2 (raw 0x0FFE).
    r1 = bytes.fromhex("06 00 7800 0500")
    r2 = bytes.fromhex("09 81 FF07 0A00 03 FE0F")
    got = decode_cgm_measurements(r1 + r2, crc=False)
    assert got == [
        CgmMeasurement(glucose_mg_dl=Number(120, 0), time_offset=5),
        CgmMeasurement(
            glucose_mg_dl=Number(0, 0, Special.NAN),
            time_offset=10,
            annunciation_octets=frozenset({AnnunciationOctet.STATUS}),
            sensor_status=frozenset(
                {CgmSensorStatus.SESSION_STOPPED, CgmSensorStatus.DEVICE_BATTERY_LOW}
            ),
            trend_mg_dl_per_min=Number(-2, 0),
        ),
    ]
    assert (
        encode_cgm_measurement(got[0], crc=False) + encode_cgm_measurement(got[1], crc=False)
        == r1 + r2
    )


def test_multi_record_with_crc_and_mismatch_offset() -> None:
    r1 = bytes.fromhex("08 00 7800 0500")
    r1 += crc(r1)
    r2 = bytes.fromhex("08 00 7900 0600")
    r2 += crc(r2)
    assert [m.time_offset for m in decode_cgm_measurements(r1 + r2, crc=True)] == [5, 6]
    bad = bytearray(r1 + r2)
    bad[10] ^= 0x01  # flip a bit in record 2's glucose
    with pytest.raises(DecodeError) as exc:
        decode_cgm_measurements(bytes(bad), crc=True)
    assert (exc.value.offset, exc.value.field) == (len(r1) + 6, "E2E-CRC")


def test_annunciation_octet_order_is_one_constant() -> None:
    m = CgmMeasurement(
        glucose_mg_dl=Number(100, 0),
        time_offset=1,
        annunciation_octets=frozenset(AnnunciationOctet),
        sensor_status=frozenset(
            {
                CgmSensorStatus.SESSION_STOPPED,
                CgmSensorStatus.CALIBRATION_REQUIRED,
                CgmSensorStatus.RESULT_HIGHER_THAN_DEVICE_CAN_PROCESS,
            }
        ),
    )
    raw = encode_cgm_measurement(m, crc=False)
    octet_value = {
        AnnunciationOctet.STATUS: 0x01,
        AnnunciationOctet.CAL_TEMP: 0x08,
        AnnunciationOctet.WARNING: 0x80,
    }
    assert raw[6:9] == bytes(octet_value[o] for o in ANNUNCIATION_OCTET_ORDER)
    assert raw[1] == 0xE0
    assert decode_cgm_measurements(raw, crc=False) == [m]


@pytest.mark.parametrize(
    ("data", "crc_on", "offset", "field"),
    [
        (b"", False, 0, "size"),
        (bytes.fromhex("05 00 7800 05"), False, 0, "size"),
        (bytes.fromhex("07 00 7800 0500"), False, 0, "size"),
        (bytes.fromhex("06 00 7800 0500 06"), False, 6, "size"),
        (bytes.fromhex("06 01 7800 0500"), False, 6, "trend"),
        (bytes.fromhex("07 00 7800 0500 00"), False, 6, ""),
        (bytes.fromhex("06 00 7800 0500"), True, 0, "size"),
    ],
)
def test_measurement_bad_input(data: bytes, crc_on: bool, offset: int, field: str) -> None:
    with pytest.raises(DecodeError) as exc:
        decode_cgm_measurements(data, crc=crc_on)
    assert (exc.value.offset, exc.value.field) == (offset, field)


def test_reserved_flags_and_reserved_sfloat_tolerated() -> None:
    got = decode_cgm_measurements(bytes.fromhex("06 1C 0108 0000"), crc=False)
    assert got[0].reserved_flags == 0x1C
    assert got[0].glucose_mg_dl.special is Special.RESERVED
    assert encode_cgm_measurement(got[0], crc=False) == bytes.fromhex("06 1C 0108 0000")


def test_feature_crc_rules() -> None:
    body = (1 << 12 | 1).to_bytes(3, "little") + bytes([0x59])  # CRC + calibration; 9 / 5
    f = decode_cgm_feature(body + crc(body))
    assert f.e2e_crc_supported
    assert f.features == {CgmFeatureBit.E2E_CRC_SUPPORTED, CgmFeatureBit.CALIBRATION_SUPPORTED}
    assert f.cgm_type is GlucoseType.INTERSTITIAL_FLUID
    assert f.sample_location == 5  # subcutaneous tissue: kept as a raw int
    assert encode_cgm_feature(f) == body + crc(body)
    with pytest.raises(DecodeError) as exc:
        decode_cgm_feature(body + b"\xff\xff")
    assert exc.value.offset == 4
    plain = bytes([1, 0, 0, 0x11, 0xFF, 0xFF])
    g = decode_cgm_feature(plain)
    assert not g.e2e_crc_supported
    assert g.sample_location is SampleLocation.FINGER
    assert encode_cgm_feature(g) == plain
    with pytest.raises(DecodeError):
        decode_cgm_feature(bytes([1, 0, 0, 0x11, 0x00, 0x00]))
    with pytest.raises(DecodeError):
        decode_cgm_feature(plain + b"\x00")


def test_status_run_time() -> None:
    body = bytes.fromhex("3C00 20 01 80")  # offset 60; general fault; time sync; too high
    s = decode_cgm_status(body, crc=False)
    assert s == CgmStatus(
        time_offset=60,
        sensor_status=frozenset(
            {
                CgmSensorStatus.GENERAL_DEVICE_FAULT,
                CgmSensorStatus.TIME_SYNCHRONIZATION_REQUIRED,
                CgmSensorStatus.RESULT_HIGHER_THAN_DEVICE_CAN_PROCESS,
            }
        ),
    )
    assert decode_cgm_status(body + crc(body), crc=True) == s
    assert encode_cgm_status(s, crc=True) == body + crc(body)
    with pytest.raises(DecodeError) as exc:
        decode_cgm_status(body + b"\x00\x00", crc=True)
    assert exc.value.offset == 5
    with pytest.raises(DecodeError):
        decode_cgm_status(body, crc=True)
    assert decode_cgm_session_run_time(bytes.fromhex("A800"), crc=False) == CgmSessionRunTime(
        run_time_hours=168
    )
    rt = bytes.fromhex("A800")
    assert encode_cgm_session_run_time(CgmSessionRunTime(run_time_hours=168), crc=True) == rt + crc(
        rt
    )


def test_session_start_time() -> None:
    body = bytes.fromhex("E807") + bytes([3, 31, 2, 0, 0]) + bytes([4, 4])  # UTC+1, DST +1 h
    s = decode_cgm_session_start_time(body, crc=False)
    assert s.time_zone == 4
    assert s.dst_offset is DstOffset.DAYLIGHT_TIME
    assert s.aware_start_time() == datetime(2024, 3, 31, 2, 0, tzinfo=timezone(timedelta(hours=2)))
    assert encode_cgm_session_start_time(s, crc=True) == body + crc(body)
    half = decode_cgm_session_start_time(body[:7] + bytes([0xEC, 2]), crc=False)  # -5 h, +0.5 h
    assert half.aware_start_time() == datetime(
        2024, 3, 31, 2, 0, tzinfo=timezone(timedelta(hours=-4, minutes=-30))
    )
    unknown = decode_cgm_session_start_time(body[:7] + bytes([0x80, 255]), crc=False)
    assert unknown.time_zone == -128
    assert unknown.aware_start_time() is None
    for bad, offset in ((body[:7] + bytes([4, 3]), 8), (body[:7] + bytes([100, 0]), 7)):
        with pytest.raises(DecodeError) as exc:
            decode_cgm_session_start_time(bad, crc=False)
        assert exc.value.offset == offset
    with pytest.raises(DecodeError) as exc:
        decode_cgm_session_start_time(
            bytes.fromhex("E807") + bytes([2, 30, 0, 0, 0, 0, 0]), crc=False
        )
    assert exc.value.offset == 0


def test_socp() -> None:
    assert encode_socp(
        SocpMessage(op_code=SocpOpCode.SET_CGM_COMMUNICATION_INTERVAL, interval_minutes=5),
        crc=False,
    ) == bytes([1, 5])
    assert encode_socp(SocpMessage(op_code=SocpOpCode.START_THE_SESSION), crc=False) == b"\x1a"
    assert encode_socp(SocpMessage(op_code=SocpOpCode.STOP_THE_SESSION), crc=True) == b"\x1b" + crc(
        b"\x1b"
    )
    resp = decode_socp(bytes([28, 26, 1]), crc=False)
    assert resp == SocpMessage(
        op_code=SocpOpCode.RESPONSE_CODE,
        request_op_code=SocpOpCode.START_THE_SESSION,
        response_code=SocpResponseCode.SUCCESS,
    )
    unknown = decode_socp(bytes([28, 99, 2]), crc=False)
    assert unknown.request_op_code == 99
    level = decode_socp(bytes([13]) + bytes.fromhex("4600"), crc=False)
    assert level.level == Number(70, 0)
    for data, offset in (
        (bytes([0]), 0),
        (bytes([99]), 0),
        (bytes([4, 0]), 0),
        (bytes([28, 1, 9]), 2),
        (bytes([26, 0]), 1),
        (bytes([1]), 1),
    ):
        with pytest.raises(DecodeError) as exc:
            decode_socp(data, crc=False)
        assert exc.value.offset == offset
    with pytest.raises(EncodeError):
        encode_socp(
            SocpMessage(op_code=SocpOpCode.START_THE_SESSION, interval_minutes=1), crc=False
        )


# ------------------------------------------------------------------ properties

sfloats = st.integers(0, 0xFFFF).map(decode_sfloat)
octet_sets = st.frozensets(st.sampled_from(AnnunciationOctet))


@st.composite
def cgm_measurements(draw: st.DrawFn) -> CgmMeasurement:
    octets = draw(octet_sets)
    shift = {
        AnnunciationOctet.STATUS: 0,
        AnnunciationOctet.CAL_TEMP: 8,
        AnnunciationOctet.WARNING: 16,
    }
    raw = 0
    for o in octets:
        raw |= draw(st.integers(0, 255)) << shift[o]
    probe = CgmStatus(time_offset=0, sensor_status=frozenset())
    status = decode_cgm_status(
        encode_cgm_status(probe, crc=False)[:2] + raw.to_bytes(3, "little"), crc=False
    )
    return CgmMeasurement(
        glucose_mg_dl=draw(sfloats),
        time_offset=draw(st.integers(0, 0xFFFF)),
        annunciation_octets=octets,
        sensor_status=status.sensor_status,
        reserved_status=status.reserved_status,
        trend_mg_dl_per_min=draw(st.none() | sfloats),
        quality_percent=draw(st.none() | sfloats),
        reserved_flags=draw(st.sampled_from([0, 0x04, 0x1C])),
    )


@given(st.lists(cgm_measurements(), min_size=1, max_size=4), st.booleans())
def test_measurement_round_trip(ms: list[CgmMeasurement], crc_on: bool) -> None:
    data = b"".join(encode_cgm_measurement(m, crc=crc_on) for m in ms)
    assert decode_cgm_measurements(data, crc=crc_on) == ms


@given(st.integers(0, 0xFFFFFF), st.integers(0, 255))
def test_feature_round_trip(bits: int, tl: int) -> None:
    body = bits.to_bytes(3, "little") + bytes([tl])
    data = body + (crc(body) if bits & (1 << 12) else b"\xff\xff")
    assert encode_cgm_feature(decode_cgm_feature(data)) == data


@given(
    st.builds(
        CgmSessionStartTime,
        session_start_time=st.datetimes(min_value=datetime(1582, 1, 1)).map(DateTime.of),
        time_zone=st.integers(-48, 56) | st.just(-128),
        dst_offset=st.sampled_from(DstOffset),
    ),
    st.booleans(),
)
def test_start_time_round_trip(s: CgmSessionStartTime, crc_on: bool) -> None:
    assert (
        decode_cgm_session_start_time(encode_cgm_session_start_time(s, crc=crc_on), crc=crc_on) == s
    )


@given(st.binary(max_size=8), st.booleans())
def test_socp_decode_encode_is_identity(data: bytes, crc_on: bool) -> None:
    try:
        msg = decode_socp(data, crc=crc_on)
    except DecodeError:
        return
    assert encode_socp(msg, crc=crc_on) == data


DECODERS: list[Callable[[bytes], object]] = [
    partial(f, crc=c)
    for f in (
        decode_cgm_measurements,
        decode_cgm_status,
        decode_cgm_session_start_time,
        decode_cgm_session_run_time,
        decode_socp,
    )
    for c in (False, True)
] + [decode_cgm_feature]


@pytest.mark.parametrize("decode", DECODERS)
@given(data=st.binary(max_size=40))
def test_random_bytes_only_raise_decode_error(
    decode: Callable[[bytes], object], data: bytes
) -> None:
    with contextlib.suppress(DecodeError):
        decode(data)


@given(st.lists(cgm_measurements(), min_size=1, max_size=3), st.booleans(), st.data())
def test_mutated_notifications_only_raise_decode_error(
    ms: list[CgmMeasurement], crc_on: bool, data: st.DataObject
) -> None:
    raw = bytearray(b"".join(encode_cgm_measurement(m, crc=crc_on) for m in ms))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    with contextlib.suppress(DecodeError):
        decode_cgm_measurements(bytes(raw[:cut]), crc=crc_on)
