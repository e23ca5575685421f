"""Vital-sign GATT codecs against byte layouts built by hand from PROTOCOLS.md, round trips, fuzz.

Every hand-built vector below is derived from the field layout in PROTOCOLS.md ("Vital-sign
services", "IEEE 11073 numbers"); the comment beside each byte group says which field it is.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_profiles.gatt import vitals as v
from device_profiles.gatt.ieee11073 import (
    DateTime,
    DecodeError,
    EncodeError,
    Number,
    Special,
    encode_float,
    encode_sfloat,
)
from device_profiles.observation import AbsentReason

TS = DateTime(2026, 11, 22, 8, 30, 0)
TS_BYTES = bytes.fromhex("EA07 0B 16 08 1E 00")  # 2026-11-22 08:30:00
NAN = Number(0, 0, Special.NAN)

# --- spec-derived examples --------------------------------------------------------------------


def test_blood_pressure_all_fields_kpa() -> None:
    data = (
        bytes([0x1F])  # flags: kPa, time stamp, pulse, user, status
        + bytes.fromhex("A0F0")  # systolic 160e-1 = 16.0 kPa
        + bytes.fromhex("6BF0")  # diastolic 107e-1 = 10.7 kPa
        + bytes.fromhex("FF07")  # mean: NaN (unused slot)
        + TS_BYTES
        + bytes.fromhex("4800")  # pulse 72
        + bytes([0x01])  # user 1
        + bytes.fromhex("0D00")  # body movement (b0), irregular pulse (b2), range 1 = high
    )
    bp = v.decode_blood_pressure(data)
    assert bp == v.BloodPressureMeasurement(
        unit="kPa",
        systolic=Number(160, -1),
        diastolic=Number(107, -1),
        mean_arterial_pressure=NAN,
        time_stamp=TS,
        pulse_rate=Number(72, 0),
        user_id=1,
        measurement_status=frozenset(
            {
                v.BloodPressureStatus.BODY_MOVEMENT_DETECTED,
                v.BloodPressureStatus.IRREGULAR_PULSE_DETECTED,
            }
        ),
        pulse_rate_range=v.PulseRateRange.EXCEEDS_UPPER_LIMIT,
    )
    assert bp.systolic.value == 16.0
    assert bp.mean_arterial_pressure.special is Special.NAN
    assert bp.mean_arterial_pressure.special.absent_reason is AbsentReason.NOT_A_NUMBER
    assert v.encode_blood_pressure(bp) == data


def test_blood_pressure_minimal_mmhg_with_reserved_flag_bits() -> None:
    data = bytes([0xE0]) + bytes.fromhex("7800 5000 5D00")  # 120/80 MAP 93, reserved b5-b7
    bp = v.decode_blood_pressure(data)
    assert bp.unit == "mm[Hg]"
    assert (bp.systolic.value, bp.diastolic.value, bp.mean_arterial_pressure.value) == (
        120.0,
        80.0,
        93.0,
    )
    assert bp.time_stamp is None
    assert bp.pulse_rate is None
    assert bp.user_id is None
    assert bp.measurement_status is None
    assert bp.reserved_flags == 0xE0
    assert v.encode_blood_pressure(bp) == data


def test_blood_pressure_unknown_user_and_reserved_status_bits() -> None:
    data = bytes([0x18]) + bytes.fromhex("7800 5000 5D00") + bytes([0xFF]) + bytes.fromhex("3040")
    bp = v.decode_blood_pressure(data)
    assert bp.user_id == v.UNKNOWN_USER
    assert bp.measurement_status == frozenset({v.BloodPressureStatus.IMPROPER_MEASUREMENT_POSITION})
    assert bp.pulse_rate_range is v.PulseRateRange.BELOW_LOWER_LIMIT
    assert bp.reserved_status_bits == 0x4000
    assert v.encode_blood_pressure(bp) == data


def test_intermediate_cuff_pressure() -> None:
    data = bytes([0x00]) + bytes.fromhex("9600 FF07 FF07")  # cuff 150 mmHg, NaN, NaN
    icp = v.decode_intermediate_cuff_pressure(data)
    assert icp.cuff_pressure == Number(150, 0)
    assert icp.diastolic.special is Special.NAN
    assert v.encode_intermediate_cuff_pressure(icp) == data


def test_blood_pressure_pulse_range_reserved_is_an_error() -> None:
    data = bytes([0x10]) + bytes.fromhex("7800 5000 5D00") + bytes.fromhex("1800")
    with pytest.raises(DecodeError) as exc:
        v.decode_blood_pressure(data)
    assert exc.value.offset == 7
    assert exc.value.field == "measurement status"


def test_blood_pressure_reserved_sfloat_is_an_error() -> None:
    with pytest.raises(DecodeError) as exc:
        v.decode_blood_pressure(bytes([0x00]) + bytes.fromhex("7800 0108 5D00"))
    assert (exc.value.offset, exc.value.field) == (3, "diastolic")


def test_blood_pressure_truncated_and_trailing() -> None:
    good = bytes([0x02]) + bytes.fromhex("7800 5000 5D00") + TS_BYTES
    with pytest.raises(DecodeError) as exc:
        v.decode_blood_pressure(good[:-1])
    assert (exc.value.offset, exc.value.field) == (7, "time stamp")
    with pytest.raises(DecodeError) as exc:
        v.decode_blood_pressure(good + b"\x00")
    assert exc.value.offset == len(good)
    with pytest.raises(DecodeError) as exc:
        v.decode_blood_pressure(b"")
    assert exc.value.offset == 0


def test_blood_pressure_impossible_date() -> None:
    data = bytes([0x02]) + bytes.fromhex("7800 5000 5D00") + bytes.fromhex("EA07 02 1F 08 1E 00")
    with pytest.raises(DecodeError) as exc:  # 31 February
        v.decode_blood_pressure(data)
    assert exc.value.offset == 7


def test_temperature_spec_example() -> None:
    data = bytes([0x06]) + bytes.fromhex("B00E00FE") + TS_BYTES + bytes([9])
    t = v.decode_temperature(data)
    assert t == v.TemperatureMeasurement(
        unit="Cel",
        temperature=Number(3760, -2),
        time_stamp=TS,
        temperature_type=v.TemperatureType.TYMPANUM,
    )
    assert t.temperature.value == pytest.approx(37.6)
    assert v.encode_temperature(t) == data


def test_temperature_fahrenheit_types() -> None:
    t = v.decode_temperature(bytes([0x05]) + bytes.fromhex("D0030000") + bytes([1]))
    assert t.unit == "[degF]"
    assert t.temperature == Number(976, 0)
    assert t.temperature_type is v.TemperatureType.ARMPIT
    names = [v.decode_temperature(bytes([0x04, 0, 0, 0, 0, c])).temperature_type for c in (5, 6)]
    assert names == [v.TemperatureType.GASTROINTESTINAL_TRACT, v.TemperatureType.MOUTH]


@pytest.mark.parametrize("code", [0, 10, 255])
def test_temperature_unknown_type(code: int) -> None:
    with pytest.raises(DecodeError) as exc:
        v.decode_temperature(bytes([0x04]) + bytes.fromhex("B00E00FE") + bytes([code]))
    assert (exc.value.offset, exc.value.field) == (5, "temperature type")
    assert str(code) in str(exc.value)


def test_temperature_reserved_float() -> None:
    with pytest.raises(DecodeError) as exc:
        v.decode_temperature(bytes([0x00]) + bytes.fromhex("01008000"))
    assert exc.value.offset == 1


def test_weight_metric_exact() -> None:
    data = (
        bytes([0x0E])  # time, user, BMI + height
        + bytes.fromhex("B136")  # 14001 x 0.005 kg = 70.005 kg
        + TS_BYTES
        + bytes([3])  # user 3
        + bytes.fromhex("E500")  # BMI 229 x 0.1 = 22.9
        + bytes.fromhex("D606")  # 1750 x 0.001 m = 1.750 m
    )
    w = v.decode_weight(data)
    assert w.weight is not None
    assert w.weight.raw == 14001
    assert w.weight.value == Decimal("70.005")
    assert str(w.weight.value) == "70.005"
    assert w.weight.unit == "kg"
    assert w.bmi is not None
    assert w.bmi.value == Decimal("22.9")
    assert w.height is not None
    assert (w.height.value, w.height.unit) == (Decimal("1.750"), "m")
    assert w.user_id == 3
    assert w.time_stamp == TS
    assert v.encode_weight(w) == data


def test_weight_imperial() -> None:
    data = bytes([0x09]) + bytes.fromhex("5A3C") + bytes.fromhex("E500") + bytes.fromhex("BD02")
    w = v.decode_weight(data)
    assert w.imperial
    assert w.weight is not None
    assert (w.weight.value, w.weight.unit) == (Decimal("154.50"), "[lb_av]")
    assert w.height is not None
    assert (w.height.value, w.height.unit) == (Decimal("70.1"), "[in_i]")
    assert v.encode_weight(w) == data


def test_weight_unsuccessful_is_absent() -> None:
    w = v.decode_weight(bytes([0x00, 0xFF, 0xFF]))
    assert w.weight is None
    assert w.measurement_unsuccessful
    assert v.encode_weight(w) == bytes([0x00, 0xFF, 0xFF])
    bogus = v.Quantity(raw=0xFFFF, resolution=Decimal("0.005"), unit="kg")
    with pytest.raises(EncodeError):
        v.encode_weight(v.WeightMeasurement(imperial=False, weight=bogus))


def test_weight_encoder_refuses_mismatched_units() -> None:
    kg = v.Quantity(raw=100, resolution=Decimal("0.005"), unit="kg")
    with pytest.raises(EncodeError):
        v.encode_weight(v.WeightMeasurement(imperial=True, weight=kg))


def test_weight_scale_feature() -> None:
    # time stamp, BMI, weight resolution 7 (0.005 kg), height resolution 3 (0.001 m)
    raw = 0b1 | 0b100 | 7 << 3 | 3 << 7
    f = v.decode_weight_scale_feature(raw.to_bytes(4, "little"))
    assert f.features == frozenset(
        {v.WeightScaleFeatureBit.TIME_STAMP_SUPPORTED, v.WeightScaleFeatureBit.BMI_SUPPORTED}
    )
    assert f.weight_resolution_kg == Decimal("0.005")
    assert f.weight_resolution_lb == Decimal("0.01")
    assert f.height_resolution_m == Decimal("0.001")
    assert f.height_resolution_in == Decimal("0.1")
    assert v.encode_weight_scale_feature(f) == raw.to_bytes(4, "little")
    unspecified = v.decode_weight_scale_feature(bytes(4))
    assert unspecified.weight_resolution_kg is None
    assert unspecified.height_resolution_m is None


@pytest.mark.parametrize("raw", [8 << 3, 15 << 3, 4 << 7, 7 << 7])
def test_weight_scale_feature_reserved_resolution(raw: int) -> None:
    with pytest.raises(DecodeError) as exc:
        v.decode_weight_scale_feature(raw.to_bytes(4, "little"))
    assert exc.value.offset == 0


def test_body_composition() -> None:
    data = (
        (0x0614).to_bytes(2, "little")  # user (b2), muscle % (b4), impedance (b9), weight (b10)
        + bytes.fromhex("EA00")  # body fat 234 x 0.1 = 23.4 %
        + bytes([2])  # user 2
        + bytes.fromhex("9101")  # muscle 401 x 0.1 = 40.1 %
        + bytes.fromhex("0314")  # impedance 5123 x 0.1 = 512.3 Ohm
        + bytes.fromhex("B136")  # weight 70.005 kg
    )
    bc = v.decode_body_composition(data)
    assert bc.body_fat_percentage is not None
    assert (bc.body_fat_percentage.value, bc.body_fat_percentage.unit) == (Decimal("23.4"), "%")
    assert bc.user_id == 2
    assert bc.muscle_percentage is not None
    assert bc.muscle_percentage.value == Decimal("40.1")
    assert bc.impedance is not None
    assert (bc.impedance.value, bc.impedance.unit) == (Decimal("512.3"), "Ohm")
    assert bc.weight is not None
    assert bc.weight.value == Decimal("70.005")
    assert bc.muscle_mass is None
    assert bc.height is None
    assert v.encode_body_composition(bc) == data


def test_body_composition_all_fields_imperial_in_bit_order() -> None:
    data = (0x1FFF).to_bytes(2, "little") + bytes.fromhex("FFFF") + TS_BYTES + bytes([1])
    data += b"".join((i + 1).to_bytes(2, "little") for i in range(9))
    bc = v.decode_body_composition(data)
    assert bc.body_fat_percentage is None  # measurement unsuccessful
    assert bc.multiple_packet_measurement
    assert bc.basal_metabolism == v.Quantity(raw=1, resolution=Decimal(1), unit="kJ")
    assert bc.muscle_mass is not None
    assert (bc.muscle_mass.raw, bc.muscle_mass.unit) == (3, "[lb_av]")
    assert bc.body_water_mass is not None
    assert bc.body_water_mass.raw == 6
    assert bc.height is not None
    assert (bc.height.raw, bc.height.value, bc.height.unit) == (9, Decimal("0.9"), "[in_i]")
    assert v.encode_body_composition(bc) == data
    with pytest.raises(DecodeError) as exc:
        v.decode_body_composition(data[:-1])
    assert (exc.value.offset, exc.value.field) == (len(data) - 2, "height")


def test_plx_spot_check_questionable_is_not_clinically_usable() -> None:
    data = (
        bytes([0x06])  # measurement status, device and sensor status
        + bytes.fromhex("6100 4000")  # SpO2 97 %, pulse 64 /min
        + bytes.fromhex("0040")  # questionable measurement detected (b14)
        + bytes.fromhex("200000")  # low perfusion (b5)
    )
    s = v.decode_plx_spot_check(data)
    assert s.reading == v.SpO2PulseRate(spo2=Number(97, 0), pulse_rate=Number(64, 0))
    assert s.measurement_status == frozenset(
        {v.PlxMeasurementStatus.QUESTIONABLE_MEASUREMENT_DETECTED}
    )
    assert s.device_and_sensor_status == frozenset({v.PlxDeviceSensorStatus.LOW_PERFUSION_DETECTED})
    assert not s.clinically_usable
    assert v.encode_plx_spot_check(s) == data


@pytest.mark.parametrize(
    ("status", "usable"),
    [(0x0000, True), (0x0080, True), (0x2000, False), (0x4000, False), (0x8000, False)],
)
def test_plx_clinically_usable(status: int, usable: bool) -> None:
    s = v.decode_plx_spot_check(
        bytes([0x02]) + bytes.fromhex("6100 4000") + status.to_bytes(2, "little")
    )
    assert s.clinically_usable is usable


def test_plx_spot_check_all_fields() -> None:
    data = (
        bytes([0x1F])
        + bytes.fromhex("6100 4000")
        + TS_BYTES
        + bytes.fromhex("A100")  # validated data (b7) + reserved b0, b5 ongoing
        + bytes.fromhex("008001")  # sensor disconnected (b15), reserved b16
        + bytes.fromhex("2DF0")  # PAI 45e-1 = 4.5 %
    )
    s = v.decode_plx_spot_check(data)
    assert s.time_stamp == TS
    assert s.device_clock_not_set
    assert s.measurement_status == frozenset(
        {v.PlxMeasurementStatus.VALIDATED_DATA, v.PlxMeasurementStatus.MEASUREMENT_ONGOING}
    )
    assert s.reserved_measurement_status_bits == 0x01
    assert s.device_and_sensor_status == frozenset({v.PlxDeviceSensorStatus.SENSOR_DISCONNECTED})
    assert s.reserved_device_and_sensor_status_bits == 0x010000
    assert s.pulse_amplitude_index == Number(45, -1)
    assert s.clinically_usable
    assert v.encode_plx_spot_check(s) == data


def test_plx_continuous() -> None:
    data = (
        bytes([0x13])  # fast, slow, PAI
        + bytes.fromhex("6100 4000")  # normal 97 / 64
        + bytes.fromhex("6000 4200")  # fast 96 / 66
        + bytes.fromhex("FF07 FF07")  # slow NaN / NaN
        + bytes.fromhex("2DF0")
    )
    c = v.decode_plx_continuous(data)
    assert c.normal.spo2 == Number(97, 0)
    assert c.fast == v.SpO2PulseRate(spo2=Number(96, 0), pulse_rate=Number(66, 0))
    assert c.slow == v.SpO2PulseRate(spo2=NAN, pulse_rate=NAN)
    assert c.measurement_status is None
    assert c.clinically_usable
    assert v.encode_plx_continuous(c) == data
    with pytest.raises(DecodeError) as exc:
        v.decode_plx_continuous(data[:5] + bytes.fromhex("0108") + data[7:])
    assert (exc.value.offset, exc.value.field) == (5, "fast SpO2")


def test_plx_features() -> None:
    data = bytes.fromhex("4300") + bytes.fromhex("0060") + bytes.fromhex("2A0000")
    f = v.decode_plx_features(data)
    assert f.supported_features == frozenset(
        {
            v.PlxSupportedFeature.MEASUREMENT_STATUS_SUPPORT_PRESENT,
            v.PlxSupportedFeature.DEVICE_AND_SENSOR_STATUS_SUPPORT_PRESENT,
            v.PlxSupportedFeature.PULSE_AMPLITUDE_INDEX_SUPPORTED,
        }
    )
    assert f.measurement_status_support == frozenset(
        {
            v.PlxMeasurementStatus.QUESTIONABLE_MEASUREMENT_DETECTED,
            v.PlxMeasurementStatus.MEASUREMENT_UNAVAILABLE,
        }
    )
    assert f.device_and_sensor_status_support == frozenset(
        {
            v.PlxDeviceSensorStatus.EQUIPMENT_MALFUNCTION_DETECTED,
            v.PlxDeviceSensorStatus.INADEQUATE_SIGNAL_DETECTED,
            v.PlxDeviceSensorStatus.LOW_PERFUSION_DETECTED,
        }
    )
    assert v.encode_plx_features(f) == data
    assert v.decode_plx_features(bytes.fromhex("0000")).measurement_status_support is None


def test_current_time() -> None:
    data = TS_BYTES + bytes([7, 0x80, 0x02])
    ct = v.decode_current_time(data)
    assert ct == v.CurrentTime(
        date_time=TS,
        day_of_week=7,
        fractions256=128,
        adjust_reason=frozenset({v.AdjustReason.EXTERNAL_REFERENCE_TIME_UPDATE}),
    )
    assert ct.date_time.value == datetime(2026, 11, 22, 8, 30)
    assert v.encode_current_time(ct) == data
    assert v.decode_current_time(TS_BYTES + bytes([0, 0, 0])).day_of_week is None


def test_current_time_bad_day_of_week() -> None:
    with pytest.raises(DecodeError) as exc:
        v.decode_current_time(TS_BYTES + bytes([8, 0, 0]))
    assert (exc.value.offset, exc.value.field) == (7, "day of week")


def test_dis_strings() -> None:
    assert v.decode_dis_string(b"Acme Medical\x00\x00") == "Acme Medical"
    assert v.decode_dis_string("Ärzte-Waage".encode()) == "Ärzte-Waage"
    assert v.decode_dis_string(b"") == ""
    with pytest.raises(DecodeError) as exc:
        v.decode_dis_string(b"SN\xff123")
    assert exc.value.offset == 2
    with pytest.raises(DecodeError) as exc:
        v.decode_dis_string(b"ab\xe2\x82")  # truncated multi-byte sequence
    assert exc.value.offset == 2
    assert v.encode_dis_string("FW 1.2.3") == b"FW 1.2.3"
    with pytest.raises(EncodeError):
        v.encode_dis_string("x\x00")


def test_encoders_refuse_what_decoders_refuse() -> None:
    base = v.BloodPressureMeasurement(
        unit="mm[Hg]", systolic=Number(120, 0), diastolic=Number(80, 0), mean_arterial_pressure=NAN
    )
    bad: list[Any] = [
        v.BloodPressureMeasurement(
            unit="mmHg", systolic=NAN, diastolic=NAN, mean_arterial_pressure=NAN
        ),
        v.BloodPressureMeasurement(
            unit="kPa",
            systolic=Number(0, 0, Special.RESERVED),
            diastolic=NAN,
            mean_arterial_pressure=NAN,
        ),
        v.BloodPressureMeasurement(
            unit="kPa", systolic=NAN, diastolic=NAN, mean_arterial_pressure=NAN, user_id=256
        ),
        v.BloodPressureMeasurement(
            unit="kPa",
            systolic=NAN,
            diastolic=NAN,
            mean_arterial_pressure=NAN,
            measurement_status=frozenset(),
        ),
        v.BloodPressureMeasurement(
            unit="kPa", systolic=NAN, diastolic=NAN, mean_arterial_pressure=NAN, reserved_flags=1
        ),
        v.BloodPressureMeasurement(
            unit="kPa",
            systolic=NAN,
            diastolic=NAN,
            mean_arterial_pressure=NAN,
            time_stamp=DateTime(2026, 2, 31, 0, 0, 0),
        ),
    ]
    assert v.decode_blood_pressure(v.encode_blood_pressure(base)) == base
    for value in bad:
        with pytest.raises(EncodeError):
            v.encode_blood_pressure(value)
    with pytest.raises(EncodeError):
        v.encode_current_time(
            v.CurrentTime(date_time=TS, day_of_week=8, fractions256=0, adjust_reason=frozenset())
        )
    with pytest.raises(EncodeError):
        v.encode_plx_features(v.PlxFeatures(supported_features=frozenset(v.PlxSupportedFeature)))


# --- generated round trips --------------------------------------------------------------------


def _fits(encode: Callable[[Number], int], n: Number) -> bool:
    try:
        encode(n)
    except EncodeError:
        return False
    return True


_specials = st.sampled_from(
    [Special.NAN, Special.NRES, Special.POSITIVE_INFINITY, Special.NEGATIVE_INFINITY]
).map(lambda s: Number(0, 0, s))
sfloats = st.one_of(
    _specials,
    st.builds(Number, st.integers(-2048, 2047), st.integers(-8, 7)).filter(
        lambda n: _fits(encode_sfloat, n)
    ),
)
floats32 = st.one_of(
    _specials,
    st.builds(Number, st.integers(-(1 << 23), (1 << 23) - 1), st.integers(-128, 127)).filter(
        lambda n: _fits(encode_float, n)
    ),
)
date_times = st.one_of(
    st.datetimes(min_value=datetime(1582, 1, 1), max_value=datetime(9999, 12, 31)).map(DateTime.of),
    st.just(DateTime(0, 0, 0, 0, 0, 0)),
)
u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFE)
opt = st.none


def _sets(enum: Any) -> st.SearchStrategy[frozenset[Any]]:
    return st.frozensets(st.sampled_from(list(enum)))


@st.composite
def blood_pressures(draw: st.DrawFn) -> v.BloodPressureMeasurement:
    has_status = draw(st.booleans())
    return v.BloodPressureMeasurement(
        unit=draw(st.sampled_from(["mm[Hg]", "kPa"])),
        systolic=draw(sfloats),
        diastolic=draw(sfloats),
        mean_arterial_pressure=draw(sfloats),
        time_stamp=draw(opt() | date_times),
        pulse_rate=draw(opt() | sfloats),
        user_id=draw(opt() | u8),
        measurement_status=draw(_sets(v.BloodPressureStatus)) if has_status else None,
        pulse_rate_range=draw(st.sampled_from(list(v.PulseRateRange))) if has_status else None,
        reserved_status_bits=draw(st.integers(0, 0x3FF)) << 6 if has_status else 0,
        reserved_flags=draw(st.integers(0, 7)) << 5,
    )


temperatures = st.builds(
    v.TemperatureMeasurement,
    unit=st.sampled_from(["Cel", "[degF]"]),
    temperature=floats32,
    time_stamp=opt() | date_times,
    temperature_type=opt() | st.sampled_from(list(v.TemperatureType)),
    reserved_flags=st.integers(0, 0x1F).map(lambda b: b << 3),
)


def _q(raw: st.SearchStrategy[int], res: tuple[str, str]) -> st.SearchStrategy[v.Quantity]:
    return raw.map(lambda r: v.Quantity(raw=r, resolution=Decimal(res[0]), unit=res[1]))


@st.composite
def weights(draw: st.DrawFn) -> v.WeightMeasurement:
    imperial = draw(st.booleans())
    mass = ("0.01", "[lb_av]") if imperial else ("0.005", "kg")
    height = ("0.1", "[in_i]") if imperial else ("0.001", "m")
    with_bmi = draw(st.booleans())
    return v.WeightMeasurement(
        imperial=imperial,
        weight=draw(opt() | _q(u16, mass)),
        time_stamp=draw(opt() | date_times),
        user_id=draw(opt() | u8),
        bmi=draw(_q(u16, ("0.1", "kg/m2"))) if with_bmi else None,
        height=draw(_q(u16, height)) if with_bmi else None,
        reserved_flags=draw(st.integers(0, 0xF)) << 4,
    )


@st.composite
def body_compositions(draw: st.DrawFn) -> v.BodyCompositionMeasurement:
    imperial = draw(st.booleans())
    mass = ("0.01", "[lb_av]") if imperial else ("0.005", "kg")
    height = ("0.1", "[in_i]") if imperial else ("0.001", "m")
    raw16 = st.integers(0, 0xFFFF)
    return v.BodyCompositionMeasurement(
        imperial=imperial,
        body_fat_percentage=draw(opt() | _q(u16, ("0.1", "%"))),
        time_stamp=draw(opt() | date_times),
        user_id=draw(opt() | u8),
        basal_metabolism=draw(opt() | _q(raw16, ("1", "kJ"))),
        muscle_percentage=draw(opt() | _q(raw16, ("0.1", "%"))),
        muscle_mass=draw(opt() | _q(raw16, mass)),
        fat_free_mass=draw(opt() | _q(raw16, mass)),
        soft_lean_mass=draw(opt() | _q(raw16, mass)),
        body_water_mass=draw(opt() | _q(raw16, mass)),
        impedance=draw(opt() | _q(raw16, ("0.1", "Ohm"))),
        weight=draw(opt() | _q(raw16, mass)),
        height=draw(opt() | _q(raw16, height)),
        multiple_packet_measurement=draw(st.booleans()),
        reserved_flags=draw(st.integers(0, 7)) << 13,
    )


pairs = st.builds(v.SpO2PulseRate, spo2=sfloats, pulse_rate=sfloats)


@st.composite
def plx_status(draw: st.DrawFn) -> dict[str, Any]:
    ms = draw(opt() | _sets(v.PlxMeasurementStatus))
    dss = draw(opt() | _sets(v.PlxDeviceSensorStatus))
    return {
        "measurement_status": ms,
        "reserved_measurement_status_bits": draw(st.integers(0, 0x1F)) if ms is not None else 0,
        "device_and_sensor_status": dss,
        "reserved_device_and_sensor_status_bits": (
            draw(st.integers(0, 0xFF)) << 16 if dss is not None else 0
        ),
        "pulse_amplitude_index": draw(opt() | sfloats),
        "reserved_flags": draw(st.integers(0, 7)) << 5,
    }


@st.composite
def plx_spot_checks(draw: st.DrawFn) -> v.PlxSpotCheck:
    return v.PlxSpotCheck(
        reading=draw(pairs),
        time_stamp=draw(opt() | date_times),
        device_clock_not_set=draw(st.booleans()),
        **draw(plx_status()),
    )


@st.composite
def plx_continuous(draw: st.DrawFn) -> v.PlxContinuous:
    return v.PlxContinuous(
        normal=draw(pairs), fast=draw(opt() | pairs), slow=draw(opt() | pairs), **draw(plx_status())
    )


@st.composite
def plx_features(draw: st.DrawFn) -> v.PlxFeatures:
    features = draw(_sets(v.PlxSupportedFeature))
    has_ms = v.PlxSupportedFeature.MEASUREMENT_STATUS_SUPPORT_PRESENT in features
    has_dss = v.PlxSupportedFeature.DEVICE_AND_SENSOR_STATUS_SUPPORT_PRESENT in features
    return v.PlxFeatures(
        supported_features=features,
        measurement_status_support=draw(_sets(v.PlxMeasurementStatus)) if has_ms else None,
        device_and_sensor_status_support=(
            draw(_sets(v.PlxDeviceSensorStatus)) if has_dss else None
        ),
        reserved_feature_bits=draw(st.integers(0, 0xFF)) << 8,
        reserved_measurement_status_support_bits=draw(st.integers(0, 0x1F)) if has_ms else 0,
        reserved_device_and_sensor_status_support_bits=(
            draw(st.integers(0, 0xFF)) << 16 if has_dss else 0
        ),
    )


weight_scale_features = st.builds(
    v.WeightScaleFeature,
    features=_sets(v.WeightScaleFeatureBit),
    weight_resolution=st.integers(0, 7),
    height_resolution=st.integers(0, 3),
    reserved_bits=st.integers(0, (1 << 22) - 1).map(lambda b: b << 10),
)
current_times = st.builds(
    v.CurrentTime,
    date_time=date_times,
    day_of_week=opt() | st.integers(1, 7),
    fractions256=u8,
    adjust_reason=_sets(v.AdjustReason),
    reserved_adjust_reason_bits=st.integers(0, 0xF).map(lambda b: b << 4),
)

CODECS: dict[str, tuple[Callable[[bytes], Any], Callable[[Any], bytes], Any]] = {
    "blood_pressure": (v.decode_blood_pressure, v.encode_blood_pressure, blood_pressures()),
    "intermediate_cuff_pressure": (
        v.decode_intermediate_cuff_pressure,
        v.encode_intermediate_cuff_pressure,
        blood_pressures(),
    ),
    "temperature": (v.decode_temperature, v.encode_temperature, temperatures),
    "weight": (v.decode_weight, v.encode_weight, weights()),
    "weight_scale_feature": (
        v.decode_weight_scale_feature,
        v.encode_weight_scale_feature,
        weight_scale_features,
    ),
    "body_composition": (v.decode_body_composition, v.encode_body_composition, body_compositions()),
    "plx_spot_check": (v.decode_plx_spot_check, v.encode_plx_spot_check, plx_spot_checks()),
    "plx_continuous": (v.decode_plx_continuous, v.encode_plx_continuous, plx_continuous()),
    "plx_features": (v.decode_plx_features, v.encode_plx_features, plx_features()),
    "current_time": (v.decode_current_time, v.encode_current_time, current_times),
}


@pytest.mark.parametrize("name", sorted(CODECS))
@given(data=st.data())
def test_value_round_trip(name: str, data: st.DataObject) -> None:
    decode, encode, values = CODECS[name]
    value = data.draw(values)
    assert decode(encode(value)) == value


def _attempt(decode: Callable[[bytes], Any], raw: bytes) -> tuple[Any, DecodeError | None]:
    """Decode; anything but a value or a DecodeError propagates and fails the test."""
    try:
        return decode(raw), None
    except DecodeError as exc:
        return None, exc


@pytest.mark.parametrize("name", sorted(CODECS))
@given(raw=st.binary(max_size=48))
def test_random_bytes_only_raise_decode_error(name: str, raw: bytes) -> None:
    decode, encode, _ = CODECS[name]
    value, error = _attempt(decode, raw)
    if error is not None:
        assert 0 <= error.offset <= len(raw)
        return
    # Whatever decodes re-encodes to the very same bytes (nothing dropped or made up).
    assert encode(value) == raw


@pytest.mark.parametrize("name", sorted(CODECS))
@given(data=st.data())
def test_mutated_values_only_raise_decode_error(name: str, data: st.DataObject) -> None:
    decode, encode, values = CODECS[name]
    raw = bytearray(encode(data.draw(values)))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "append"]))
        if op == "flip" and raw:
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] ^= data.draw(st.integers(1, 255))
        elif op == "cut" and raw:
            del raw[data.draw(st.integers(0, len(raw) - 1)) :]
        else:
            raw += data.draw(st.binary(min_size=1, max_size=3))
    value, error = _attempt(decode, bytes(raw))
    if error is not None:
        assert 0 <= error.offset <= len(raw)
        return
    assert encode(value) == bytes(raw)


@given(text=st.text().filter(lambda s: not s.endswith("\x00")))
def test_dis_string_round_trip(text: str) -> None:
    assert v.decode_dis_string(v.encode_dis_string(text)) == text


@given(raw=st.binary(max_size=64))
def test_dis_string_random_bytes(raw: bytes) -> None:
    text, error = _attempt(v.decode_dis_string, raw)
    if error is not None:
        assert 0 <= error.offset < len(raw)
        return
    assert v.encode_dis_string(text) == raw.rstrip(b"\x00")
