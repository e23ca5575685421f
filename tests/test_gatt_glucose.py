"""Glucose 0x1808 codecs against PROTOCOLS.md examples, round trips and hostile bytes."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_profiles.gatt.glucose import (
    Carbohydrate,
    ConcentrationUnit,
    Exercise,
    GlucoseContext,
    GlucoseFeature,
    GlucoseFeatureBit,
    GlucoseMeasurement,
    GlucoseMeasurementFlag,
    GlucoseType,
    Medication,
    MedicationUnit,
    RacpMessage,
    RacpOpCode,
    RacpOperator,
    RacpResponseCode,
    SampleLocation,
    SensorStatus,
    decode_glucose_context,
    decode_glucose_feature,
    decode_glucose_measurement,
    decode_racp,
    encode_glucose_context,
    encode_glucose_feature,
    encode_glucose_measurement,
    encode_racp,
    racp_abort,
    racp_report_all,
    racp_report_count_all,
    racp_report_from_sequence,
)
from device_profiles.gatt.ieee11073 import (
    DateTime,
    DecodeError,
    EncodeError,
    Number,
    Special,
    decode_sfloat,
)

BASE = DateTime(2024, 3, 1, 8, 30, 0)
BASE_BYTES = bytes.fromhex("E807") + bytes([3, 1, 8, 30, 0])


# ------------------------------------------------------------------ measurement


def test_measurement_120_mg_dl_as_kg_per_l() -> None:
    # flags b1 (concentration+type/location) and b0 (time offset); 120 x 10^-5 kg/L = `78 B0`;
    # type/location 0x11: capillary whole blood (low nibble), finger (high nibble).
    data = bytes([0x03]) + bytes.fromhex("0700") + BASE_BYTES + bytes.fromhex("FBFF78B011")
    m = decode_glucose_measurement(data)
    assert m == GlucoseMeasurement(
        sequence_number=7,
        base_time=BASE,
        time_offset=-5,
        concentration=Number(120, -5),
        unit=ConcentrationUnit.KG_PER_L,
        glucose_type=GlucoseType.CAPILLARY_WHOLE_BLOOD,
        sample_location=SampleLocation.FINGER,
    )
    assert m.mg_dl() == 120.0
    assert m.flags == {
        GlucoseMeasurementFlag.TIME_OFFSET_PRESENT,
        GlucoseMeasurementFlag.CONCENTRATION_TYPE_AND_SAMPLE_LOCATION_PRESENT,
    }
    assert encode_glucose_measurement(m) == data
    with pytest.raises(ValueError, match="mg_dl"):
        m.mmol_l()


def test_type_is_low_nibble_location_high_nibble() -> None:
    # 0x4A: location 4 (control solution) high, type 10 (control solution) low; 0x29: type 9,
    # location 2 -- swapping them would give type 2 capillary plasma, location 9 (reserved).
    data = bytes([0x02]) + bytes(2) + BASE_BYTES + bytes.fromhex("78B029")
    m = decode_glucose_measurement(data)
    assert m.glucose_type is GlucoseType.INTERSTITIAL_FLUID
    assert m.sample_location is SampleLocation.ALTERNATE_SITE_TEST
    assert not m.is_control_solution
    data = bytes([0x02]) + bytes(2) + BASE_BYTES + bytes.fromhex("78B04A")
    assert decode_glucose_measurement(data).is_control_solution


def test_mol_per_l_and_status() -> None:
    # 6.5 mmol/L = 65 x 10^-4 mol/L -> exponent -4 (0xC), mantissa 65 (0x041): raw 0xC041.
    # Status: battery low (b0) and time fault (b11) and reserved b15.
    data = bytes([0x0E | 0x80]) + bytes.fromhex("0100") + BASE_BYTES + bytes.fromhex("41C0F1")
    data += (0x8801).to_bytes(2, "little")
    m = decode_glucose_measurement(data)
    assert m.unit is ConcentrationUnit.MOL_PER_L
    assert m.mmol_l() == 6.5
    assert m.sample_location is SampleLocation.NOT_AVAILABLE
    assert m.sensor_status == frozenset({SensorStatus.DEVICE_BATTERY_LOW, SensorStatus.TIME_FAULT})
    assert m.reserved_sensor_status == 0x8000
    assert m.reserved_flags == 0x80
    assert encode_glucose_measurement(m) == data


def test_special_concentration_stays_absent() -> None:
    data = bytes([0x02]) + bytes(2) + BASE_BYTES + bytes.fromhex("FF0711")
    m = decode_glucose_measurement(data)
    assert m.concentration is not None
    assert m.concentration.special is Special.NAN
    assert m.mg_dl() is None
    reserved = bytes([0x02]) + bytes(2) + BASE_BYTES + bytes.fromhex("010811")
    assert decode_glucose_measurement(reserved).concentration == Number(0, 0, Special.RESERVED)


@pytest.mark.parametrize(
    ("data", "offset"),
    [
        (b"", 0),
        (bytes([0x00, 0x01]), 1),
        (bytes([0x00]) + bytes(2) + BASE_BYTES[:5], 3),
        (bytes([0x01]) + bytes(2) + BASE_BYTES + b"\x00", 10),
        (bytes([0x02]) + bytes(2) + BASE_BYTES + bytes.fromhex("78B0"), 12),
        (bytes([0x08]) + bytes(2) + BASE_BYTES + b"\x01", 10),
        (bytes([0x00]) + bytes(2) + BASE_BYTES + b"\x00", 10),  # trailing byte
        (bytes([0x00]) + bytes(2) + bytes.fromhex("E807") + bytes([2, 30, 0, 0, 0]), 3),
    ],
)
def test_measurement_bad_input(data: bytes, offset: int) -> None:
    with pytest.raises(DecodeError) as exc:
        decode_glucose_measurement(data)
    assert exc.value.offset == offset


def test_measurement_encoder_refuses_half_groups() -> None:
    with pytest.raises(EncodeError):
        encode_glucose_measurement(
            GlucoseMeasurement(sequence_number=1, base_time=BASE, concentration=Number(1, 0))
        )
    with pytest.raises(EncodeError):
        encode_glucose_measurement(GlucoseMeasurement(sequence_number=70000, base_time=BASE))
    for bad in (
        DateTime(2023, 2, 29, 0, 0, 0),
        DateTime(1000, 1, 1, 0, 0, 0),
        DateTime(70000, 1, 1, 0, 0, 0),
    ):
        with pytest.raises(EncodeError):
            encode_glucose_measurement(GlucoseMeasurement(sequence_number=1, base_time=bad))


# ------------------------------------------------------------------ context / feature


def test_context_all_fields() -> None:
    data = bytes([0xFF]) + bytes.fromhex("0500") + bytes([0x00])
    data += bytes([1]) + bytes.fromhex("78B0")  # carbohydrate id 1, SFLOAT
    data += bytes([2])  # meal
    data += bytes([0x52])  # tester 2 (low), health 5 (high)
    data += bytes.fromhex("FFFF") + bytes([40])  # exercise overrun, 40 %
    data += bytes([3]) + bytes.fromhex("0100")  # medication 3, 1 L
    data += bytes.fromhex("41F0")  # HbA1c 6.5 %
    ctx = decode_glucose_context(data)
    assert ctx == GlucoseContext(
        sequence_number=5,
        extended_flags=0,
        carbohydrate=Carbohydrate(carbohydrate_id=1, amount=Number(120, -5)),
        meal=2,
        tester=2,
        health=5,
        exercise=Exercise(duration_s=0xFFFF, intensity_percent=40),
        medication=Medication(medication_id=3, amount=Number(1, 0), unit=MedicationUnit.LITERS),
        medication_unit_liters=True,
        hba1c_percent=Number(65, -1),
    )
    assert ctx.exercise is not None
    assert ctx.exercise.overrun
    assert encode_glucose_context(ctx) == data
    for cut in range(len(data)):
        with pytest.raises(DecodeError):
            decode_glucose_context(data[:cut])
    with pytest.raises(DecodeError) as exc:
        decode_glucose_context(data + b"\x00")
    assert exc.value.offset == len(data)


def test_feature() -> None:
    f = decode_glucose_feature(bytes.fromhex("0304"))
    assert f.features == {
        GlucoseFeatureBit.LOW_BATTERY_DETECTION,
        GlucoseFeatureBit.SENSOR_MALFUNCTION_DETECTION,
        GlucoseFeatureBit.MULTIPLE_BOND,
    }
    assert f.reserved_flags == 0
    g = decode_glucose_feature(bytes.fromhex("0080"))
    assert g == GlucoseFeature(features=frozenset(), reserved_flags=0x8000)
    assert encode_glucose_feature(g) == bytes.fromhex("0080")
    with pytest.raises(DecodeError):
        decode_glucose_feature(b"\x01")
    with pytest.raises(DecodeError):
        decode_glucose_feature(b"\x01\x00\x00")


# ------------------------------------------------------------------ RACP


def test_racp_spec_examples() -> None:
    assert encode_racp(racp_report_all()) == bytes.fromhex("0101")
    assert encode_racp(racp_report_count_all()) == bytes.fromhex("0401")
    assert encode_racp(racp_report_from_sequence(0x1234)) == bytes.fromhex("0103013412")
    assert encode_racp(racp_abort()) == bytes.fromhex("0300")
    assert decode_racp(bytes.fromhex("0101")) == racp_report_all()
    assert decode_racp(bytes.fromhex("0401")) == racp_report_count_all()
    assert decode_racp(bytes.fromhex("0103012A00")) == racp_report_from_sequence(42)
    assert decode_racp(bytes.fromhex("05001500")) == RacpMessage(
        op_code=RacpOpCode.NUMBER_OF_STORED_RECORDS_RESPONSE, number_of_records=21
    )
    reply = decode_racp(bytes.fromhex("06000106"))
    assert reply == RacpMessage(
        op_code=RacpOpCode.RESPONSE_CODE,
        request_op_code=RacpOpCode.REPORT_STORED_RECORDS,
        response_code=RacpResponseCode.NO_RECORDS_FOUND,
    )
    rng = RacpMessage(
        op_code=RacpOpCode.DELETE_STORED_RECORDS,
        operator=RacpOperator.WITHIN_RANGE_OF,
        filter_type=1,
        filter_values=(1, 9),
    )
    assert decode_racp(encode_racp(rng)) == rng


@pytest.mark.parametrize(
    ("data", "offset", "field"),
    [
        (bytes.fromhex("0701"), 0, "op code"),
        (bytes.fromhex("0107"), 1, "operator"),
        (bytes.fromhex("0100"), 1, "operator"),  # report needs an operator
        (bytes.fromhex("0301"), 1, "operator"),  # abort takes NULL
        (bytes.fromhex("0103020100"), 2, "filter type"),
        (bytes.fromhex("010301"), 3, "filter value"),
        (bytes.fromhex("06000700"), 2, "request op code"),
        (bytes.fromhex("0600010A"), 3, "response code"),
        (bytes.fromhex("050015"), 2, "number of records"),
        (bytes.fromhex("010100"), 2, ""),
    ],
)
def test_racp_bad_input(data: bytes, offset: int, field: str) -> None:
    with pytest.raises(DecodeError) as exc:
        decode_racp(data)
    assert (exc.value.offset, exc.value.field) == (offset, field)


# ------------------------------------------------------------------ properties

sfloats = st.integers(0, 0xFFFF).map(decode_sfloat)
date_times = st.datetimes(min_value=datetime(1582, 1, 1)).map(DateTime.of) | st.just(
    DateTime(0, 0, 0, 0, 0, 0)
)
nibbles = st.integers(0, 15)


@st.composite
def measurements(draw: st.DrawFn) -> GlucoseMeasurement:
    has_conc = draw(st.booleans())
    has_status = draw(st.booleans())
    return GlucoseMeasurement(
        sequence_number=draw(st.integers(0, 0xFFFF)),
        base_time=draw(date_times),
        time_offset=draw(st.none() | st.integers(-0x8000, 0x7FFF)),
        concentration=draw(sfloats) if has_conc else None,
        unit=draw(st.sampled_from(ConcentrationUnit)),
        glucose_type=draw(nibbles.map(lambda n: GlucoseType(n) if 1 <= n <= 10 else n))
        if has_conc
        else None,
        sample_location=draw(
            nibbles.map(lambda n: SampleLocation(n) if n in {1, 2, 3, 4, 15} else n)
        )
        if has_conc
        else None,
        sensor_status=draw(st.frozensets(st.sampled_from(SensorStatus))) if has_status else None,
        reserved_sensor_status=draw(st.sampled_from([0, 0x1000, 0xF000])) if has_status else 0,
        context_follows=draw(st.booleans()),
        reserved_flags=draw(st.sampled_from([0, 0x20, 0xE0])),
    )


@given(measurements())
def test_measurement_round_trip(m: GlucoseMeasurement) -> None:
    assert decode_glucose_measurement(encode_glucose_measurement(m)) == m


@given(
    st.builds(
        GlucoseContext,
        sequence_number=st.integers(0, 0xFFFF),
        extended_flags=st.none() | st.integers(0, 255),
        carbohydrate=st.none()
        | st.builds(Carbohydrate, carbohydrate_id=st.integers(0, 255), amount=sfloats),
        meal=st.none() | st.integers(0, 255),
        exercise=st.none()
        | st.builds(
            Exercise, duration_s=st.integers(0, 0xFFFF), intensity_percent=st.integers(0, 255)
        ),
        hba1c_percent=st.none() | sfloats,
    ),
    st.none() | st.tuples(nibbles, nibbles),
    st.none() | st.tuples(st.integers(0, 255), sfloats, st.sampled_from(MedicationUnit)),
    st.booleans(),
)
def test_context_round_trip(
    ctx: GlucoseContext,
    th: tuple[int, int] | None,
    med: tuple[int, Number, MedicationUnit] | None,
    liters: bool,
) -> None:
    medication = None
    if med is not None:
        medication = Medication(medication_id=med[0], amount=med[1], unit=med[2])
        liters = med[2] is MedicationUnit.LITERS
    full = GlucoseContext(
        sequence_number=ctx.sequence_number,
        extended_flags=ctx.extended_flags,
        carbohydrate=ctx.carbohydrate,
        meal=ctx.meal,
        tester=th[0] if th else None,
        health=th[1] if th else None,
        exercise=ctx.exercise,
        medication=medication,
        medication_unit_liters=liters,
        hba1c_percent=ctx.hba1c_percent,
    )
    assert decode_glucose_context(encode_glucose_context(full)) == full


@given(st.integers(0, 0xFFFF))
def test_feature_round_trip(raw: int) -> None:
    data = raw.to_bytes(2, "little")
    assert encode_glucose_feature(decode_glucose_feature(data)) == data


@given(st.binary(max_size=6))
def test_racp_decode_encode_is_identity(data: bytes) -> None:
    try:
        msg = decode_racp(data)
    except DecodeError:
        return
    assert encode_racp(msg) == data


DECODERS: list[Callable[[bytes], object]] = [
    decode_glucose_measurement,
    decode_glucose_context,
    decode_glucose_feature,
    decode_racp,
]


@pytest.mark.parametrize("decode", DECODERS)
@given(data=st.binary(max_size=40))
def test_random_bytes_only_raise_decode_error(
    decode: Callable[[bytes], object], data: bytes
) -> None:
    with contextlib.suppress(DecodeError):
        decode(data)


@given(measurements(), st.data())
def test_mutated_measurements_only_raise_decode_error(
    m: GlucoseMeasurement, data: st.DataObject
) -> None:
    raw = bytearray(encode_glucose_measurement(m))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw) + 2))
    mutated = bytes(raw[:cut]) + bytes(max(0, cut - len(raw)))
    with contextlib.suppress(DecodeError):
        decode_glucose_measurement(mutated)
