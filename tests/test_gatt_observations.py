"""Decoded GATT values → Observation (device_profiles/gatt/observations.py).

Expected values come from the spec facts, not from the code's output:

* PROTOCOLS.md: kg/L x 100 000 = mg/dL, mol/L x 1000 = mmol/L; SFLOAT ``78 B0`` is 120 x 10^-5;
  NaN/NRes/±INF are never numbers; type 10 / location 4 are control solution; year 0 = unknown;
  weight 0xFFFF is "measurement unsuccessful"; PLX questionable/invalid readings never alert.
* DOMAIN.md: 1 mmol/L = 18.016 mg/dL; meters show HI/LO, carried as comparators.
* units.py: 1 lb = 0.45359237 kg, 1 mmHg = 133.322387415 Pa, °F → °C = (F - 32) x 5/9.
* observation.py: clock offsets beyond 15 min are flagged, no measured offset = device-time-only.
* Clock offset = device clock minus hub clock, so a device 600 s fast has its record times
  moved 600 s earlier; the wall time is read in the hub's zone (Europe/Helsinki: UTC+2 in
  winter, UTC+3 in summer).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_profiles.gatt.cgm import AnnunciationOctet, CgmMeasurement, CgmSensorStatus
from device_profiles.gatt.cgm_session import CgmReading
from device_profiles.gatt.glucose import (
    ConcentrationUnit,
    GlucoseMeasurement,
    GlucoseType,
    SampleLocation,
    SensorStatus,
    decode_glucose_measurement,
)
from device_profiles.gatt.ieee11073 import DateTime, Number, Special, decode_sfloat
from device_profiles.gatt.observations import (
    UnmappableRecord,
    cgm_observations,
    glucose_observations,
    vitals_observations,
)
from device_profiles.gatt.vitals import (
    BloodPressureMeasurement,
    PlxMeasurementStatus,
    PlxSpotCheck,
    Quantity,
    SpO2PulseRate,
    TemperatureMeasurement,
    WeightMeasurement,
)
from device_profiles.gatt.vitals_session import Measurement, MeasurementValue, VitalsKind
from device_profiles.observation import AbsentReason, Observation, QualityFlag

HELSINKI = ZoneInfo("Europe/Helsinki")
MG_DL_PER_MMOL_L = 18.016  # DOMAIN.md
NAN = Number(0, 0, Special.NAN)
MG_DL_120 = Number(120, -5)  # SFLOAT 78 B0: 0.0012 kg/L = 120 mg/dL
CGM_100 = Number(100, 0)

#: PROTOCOLS.md: every special is "no value, reason"; reserved is a device error.
SPECIAL_REASONS = {
    Special.NAN: AbsentReason.NOT_A_NUMBER,
    Special.NRES: AbsentReason.NOT_AT_THIS_RESOLUTION,
    Special.POSITIVE_INFINITY: AbsentReason.POSITIVE_INFINITY,
    Special.NEGATIVE_INFINITY: AbsentReason.NEGATIVE_INFINITY,
}


# --------------------------------------------------------------------------- glucose meter


def meter(
    *,
    seq: int = 1,
    when: datetime = datetime(2026, 11, 22, 8, 30),
    time_offset: int | None = None,
    concentration: Number | None = MG_DL_120,
    unit: ConcentrationUnit = ConcentrationUnit.KG_PER_L,
    glucose_type: GlucoseType | int = GlucoseType.CAPILLARY_WHOLE_BLOOD,
    location: SampleLocation | int = SampleLocation.FINGER,
    status: frozenset[SensorStatus] | None = None,
    base_time: DateTime | None = None,
) -> GlucoseMeasurement:
    return GlucoseMeasurement(
        sequence_number=seq,
        base_time=base_time or DateTime.of(when),
        time_offset=time_offset,
        concentration=concentration,
        unit=unit,
        glucose_type=glucose_type if concentration is not None else None,
        sample_location=location if concentration is not None else None,
        sensor_status=status,
    )


def one_glucose(m: GlucoseMeasurement, clock_offset_s: float | None = 0.0) -> Observation:
    out = glucose_observations(m, clock_offset_s=clock_offset_s, tz=HELSINKI)
    assert len(out) == 1
    return out[0]


def test_glucose_from_spec_bytes_kg_per_l_is_mmol_with_mg_dl_kept() -> None:
    data = (
        bytes([0x02])  # flags: concentration + type/location present, unit kg/L
        + bytes.fromhex("0100")  # sequence 1
        + bytes.fromhex("EA07 0B 16 08 1E 00")  # base time 2026-11-22 08:30:00
        + bytes.fromhex("78B0")  # SFLOAT e=-5 m=120: 0.0012 kg/L = 120 mg/dL
        + bytes([0x11])  # location finger (high nibble), type capillary whole blood (low)
    )
    obs = one_glucose(decode_glucose_measurement(data))
    assert obs.measure == "glucose.capillary"
    assert obs.unit == "mmol/L"
    assert obs.value == pytest.approx(120 / MG_DL_PER_MMOL_L)
    assert obs.absent_reason is None
    assert obs.comparator is None
    assert obs.provenance.original_value == 120
    assert obs.provenance.original_unit == "mg/dL"
    assert obs.provenance.source == "ble:0x2A18"


@pytest.mark.parametrize(
    ("mantissa", "exponent", "mmol_l"),
    [(55, -4, 5.5), (72, -4, 7.2), (111, -4, 11.1), (6, -4, 0.6)],
)
def test_glucose_mol_per_l_is_exactly_times_1000(
    mantissa: int, exponent: int, mmol_l: float
) -> None:
    obs = one_glucose(
        meter(concentration=Number(mantissa, exponent), unit=ConcentrationUnit.MOL_PER_L)
    )
    assert obs.unit == "mmol/L"
    assert obs.value == mmol_l  # exact: a decimal shift, no float drift
    assert obs.provenance.original_unit != "mg/dL"


@pytest.mark.parametrize("unit", list(ConcentrationUnit))
@pytest.mark.parametrize("special", list(SPECIAL_REASONS))
def test_glucose_ieee_special_is_absent_with_reason(
    special: Special, unit: ConcentrationUnit
) -> None:
    obs = one_glucose(meter(concentration=Number(0, 0, special), unit=unit))
    assert obs.value is None
    assert obs.absent_reason is SPECIAL_REASONS[special]
    assert obs.comparator is None
    assert obs.provenance.original_value is None


def test_glucose_reserved_special_is_absent() -> None:
    obs = one_glucose(meter(concentration=decode_sfloat(0x0801)))  # the reserved SFLOAT
    assert obs.value is None
    assert obs.absent_reason is not None


def test_glucose_hi_keeps_the_number_with_greater_than() -> None:
    obs = one_glucose(
        meter(concentration=Number(600, -5), status=frozenset({SensorStatus.RESULT_TOO_HIGH}))
    )
    assert obs.value == pytest.approx(600 / MG_DL_PER_MMOL_L)
    assert obs.comparator == ">"
    assert QualityFlag.ABOVE_RANGE in obs.quality
    assert QualityFlag.BELOW_RANGE not in obs.quality


def test_glucose_lo_keeps_the_number_with_less_than() -> None:
    obs = one_glucose(
        meter(concentration=Number(20, -5), status=frozenset({SensorStatus.RESULT_TOO_LOW}))
    )
    assert obs.value == pytest.approx(20 / MG_DL_PER_MMOL_L)
    assert obs.comparator == "<"
    assert QualityFlag.BELOW_RANGE in obs.quality
    assert QualityFlag.ABOVE_RANGE not in obs.quality


def test_glucose_hi_with_a_special_has_no_comparator_and_no_value() -> None:
    obs = one_glucose(
        meter(
            concentration=Number(0, 0, Special.POSITIVE_INFINITY),
            status=frozenset({SensorStatus.RESULT_TOO_HIGH}),
        )
    )
    assert obs.value is None
    assert obs.comparator is None
    assert obs.absent_reason is AbsentReason.POSITIVE_INFINITY


@pytest.mark.parametrize(
    "status",
    [
        SensorStatus.SAMPLE_SIZE_INSUFFICIENT,
        SensorStatus.STRIP_INSERTION_ERROR,
        SensorStatus.STRIP_TYPE_INCORRECT,
        SensorStatus.TEMPERATURE_TOO_HIGH,
        SensorStatus.TEMPERATURE_TOO_LOW,
        SensorStatus.READ_INTERRUPTED,
        SensorStatus.GENERAL_DEVICE_FAULT,
        SensorStatus.SENSOR_MALFUNCTION,
    ],
)
def test_glucose_voiding_status_is_absent_error(status: SensorStatus) -> None:
    obs = one_glucose(meter(concentration=Number(120, -5), status=frozenset({status})))
    assert obs.value is None
    assert obs.absent_reason is AbsentReason.ERROR
    assert QualityFlag.DEVICE_WARNING in obs.quality


def test_glucose_without_concentration_is_absent_error() -> None:
    obs = one_glucose(meter(concentration=None))
    assert obs.value is None
    assert obs.absent_reason is AbsentReason.ERROR


def test_glucose_battery_low_keeps_value_and_flags() -> None:
    obs = one_glucose(
        meter(concentration=Number(99, -5), status=frozenset({SensorStatus.DEVICE_BATTERY_LOW}))
    )
    assert obs.value == pytest.approx(99 / MG_DL_PER_MMOL_L)
    assert QualityFlag.BATTERY_LOW in obs.quality


def test_glucose_control_solution_is_refused() -> None:
    with pytest.raises(UnmappableRecord, match="control"):
        glucose_observations(
            meter(glucose_type=GlucoseType.CONTROL_SOLUTION), clock_offset_s=0.0, tz=HELSINKI
        )


def test_glucose_control_solution_location_is_refused() -> None:
    m = meter(location=SampleLocation.CONTROL_SOLUTION)
    assert m.is_control_solution
    with pytest.raises(UnmappableRecord):
        glucose_observations(m, clock_offset_s=0.0, tz=HELSINKI)


@pytest.mark.parametrize(
    "base",
    [
        DateTime(0, 11, 22, 8, 30, 0),
        DateTime(2026, 0, 22, 8, 30, 0),
        DateTime(2026, 11, 0, 8, 30, 0),
    ],
)
def test_glucose_unknown_date_is_refused(base: DateTime) -> None:
    with pytest.raises(UnmappableRecord):
        glucose_observations(meter(base_time=base), clock_offset_s=0.0, tz=HELSINKI)


@pytest.mark.parametrize(
    ("device_local", "time_offset", "expected_utc"),
    [
        # summer (EEST, UTC+3): 12:00 on a clock 10 min fast is 11:50 local = 08:50 UTC
        (datetime(2026, 7, 15, 12, 0), None, datetime(2026, 7, 15, 8, 50, tzinfo=UTC)),
        # winter (EET, UTC+2): 12:00 on a clock 10 min fast is 11:50 local = 09:50 UTC
        (datetime(2026, 1, 15, 12, 0), None, datetime(2026, 1, 15, 9, 50, tzinfo=UTC)),
        # base time 11:30 + time offset 30 min = 12:00 on the device's clock
        (datetime(2026, 7, 15, 11, 30), 30, datetime(2026, 7, 15, 8, 50, tzinfo=UTC)),
    ],
)
def test_glucose_time_is_corrected_by_clock_offset_in_hub_zone(
    device_local: datetime, time_offset: int | None, expected_utc: datetime
) -> None:
    obs = one_glucose(meter(when=device_local, time_offset=time_offset), clock_offset_s=600.0)
    assert obs.effective_time == expected_utc
    assert obs.effective_time.utcoffset() == timedelta(0)
    shown = device_local + timedelta(minutes=time_offset or 0)
    assert obs.device_time is not None
    assert datetime.fromisoformat(obs.device_time) == shown  # the device's own, uncorrected
    assert obs.clock_offset_s == 600.0
    assert QualityFlag.CLOCK_OFFSET not in obs.quality
    assert QualityFlag.DEVICE_TIME_ONLY not in obs.quality


@pytest.mark.parametrize(
    ("device_local", "expected_utc"),
    [
        # spring forward: 03:00 EET -> 04:00 EEST; 04:05 EEST = 01:05 UTC
        (datetime(2026, 3, 29, 4, 5), datetime(2026, 3, 29, 0, 55, tzinfo=UTC)),
        # fall back: 04:00 EEST -> 03:00 EET; 04:05 EET = 02:05 UTC
        (datetime(2026, 10, 25, 4, 5), datetime(2026, 10, 25, 1, 55, tzinfo=UTC)),
    ],
)
def test_glucose_correction_across_dst_change_is_the_offset(
    device_local: datetime, expected_utc: datetime
) -> None:
    face_value = one_glucose(meter(when=device_local), clock_offset_s=0.0).effective_time
    corrected = one_glucose(meter(when=device_local), clock_offset_s=600.0).effective_time
    assert face_value - corrected == timedelta(seconds=600)
    assert corrected == expected_utc


def test_glucose_without_clock_offset_is_device_time_only_at_face_value() -> None:
    obs = one_glucose(meter(when=datetime(2026, 1, 15, 12, 0)), clock_offset_s=None)
    assert QualityFlag.DEVICE_TIME_ONLY in obs.quality
    assert obs.effective_time == datetime(2026, 1, 15, 10, 0, tzinfo=UTC)  # 12:00 EET
    assert obs.clock_offset_s is None


@pytest.mark.parametrize(
    ("offset_s", "flagged"),
    [(0.0, False), (900.0, False), (-900.0, False), (901.0, True), (-901.0, True), (7200.0, True)],
)
def test_glucose_clock_offset_beyond_15_min_is_flagged(offset_s: float, flagged: bool) -> None:
    obs = one_glucose(meter(), clock_offset_s=offset_s)
    assert (QualityFlag.CLOCK_OFFSET in obs.quality) is flagged
    assert QualityFlag.DEVICE_TIME_ONLY not in obs.quality


def test_glucose_record_key_is_stable_and_per_record() -> None:
    first = one_glucose(meter(seq=42), clock_offset_s=0.0)
    again = one_glucose(meter(seq=42), clock_offset_s=0.0)
    # a re-read with a different measured offset is still the same record
    reread = one_glucose(meter(seq=42), clock_offset_s=1234.0)
    other = one_glucose(meter(seq=43), clock_offset_s=0.0)
    assert first.record_key == again.record_key == reread.record_key
    assert first.record_key.startswith("seq:42@")
    assert other.record_key != first.record_key
    later = one_glucose(meter(seq=42, when=datetime(2026, 11, 23, 8, 30)), clock_offset_s=0.0)
    assert later.record_key != first.record_key  # sequence numbers restart after a reset


# Years up to 9998: the year-9999 overflow has its own test below.
_base_times = st.one_of(
    st.datetimes(min_value=datetime(1583, 1, 1), max_value=datetime(9998, 12, 31)).map(DateTime.of),
    st.builds(
        DateTime,
        st.just(0),
        st.integers(0, 12),
        st.integers(0, 28),
        st.just(0),
        st.just(0),
        st.just(0),
    ),
)


@given(
    seq=st.integers(0, 0xFFFF),
    concentration=st.none() | st.integers(0, 0xFFFF).map(decode_sfloat),  # every SFLOAT
    unit=st.sampled_from(ConcentrationUnit),
    base=_base_times,
    time_offset=st.none() | st.integers(-0x8000, 0x7FFF),
    glucose_type=st.sampled_from(GlucoseType) | st.integers(0, 15),
    location=st.sampled_from(SampleLocation) | st.integers(0, 15),
    status=st.none() | st.frozensets(st.sampled_from(SensorStatus)),
    clock_offset_s=st.none() | st.floats(-86_400, 86_400, allow_nan=False),
)
def test_glucose_mapping_never_yields_a_non_finite_value(
    seq: int,
    concentration: Number | None,
    unit: ConcentrationUnit,
    base: DateTime,
    time_offset: int | None,
    glucose_type: GlucoseType | int,
    location: SampleLocation | int,
    status: frozenset[SensorStatus] | None,
    clock_offset_s: float | None,
) -> None:
    m = meter(
        seq=seq,
        base_time=base,
        time_offset=time_offset,
        concentration=concentration,
        unit=unit,
        glucose_type=glucose_type,
        location=location,
        status=status,
    )
    # control solution by type (10) or by sample location (4): never patient data
    control = m.glucose_type == GlucoseType.CONTROL_SOLUTION or m.sample_location == 4
    try:
        out = glucose_observations(m, clock_offset_s=clock_offset_s, tz=HELSINKI)
    except UnmappableRecord:
        assert control or base.value is None
        return
    assert not control
    assert base.value is not None
    assert len(out) == 1
    (obs,) = out
    if obs.value is None:
        assert obs.absent_reason is not None
        assert obs.comparator is None
    else:
        assert math.isfinite(obs.value)
        assert obs.absent_reason is None
    if concentration is None or concentration.special is not None:
        assert obs.value is None
    if obs.provenance.original_value is not None:
        assert math.isfinite(obs.provenance.original_value)


def test_glucose_date_beyond_datetime_range_is_unmappable() -> None:
    m = meter(when=datetime(9999, 12, 31, 23, 59), time_offset=5)
    with pytest.raises(UnmappableRecord):
        glucose_observations(m, clock_offset_s=0.0, tz=HELSINKI)


# --------------------------------------------------------------------------- CGM

SESSION_START = datetime(2026, 11, 22, 6, 0, tzinfo=UTC)


def cgm(
    *,
    mg_dl: Number = CGM_100,
    offset_min: int = 30,
    start: datetime = SESSION_START,
    status: frozenset[CgmSensorStatus] = frozenset(),
    clock_offset_s: float | None = 12.0,
    estimated: bool = False,
) -> CgmReading:
    return CgmReading(
        measurement=CgmMeasurement(
            glucose_mg_dl=mg_dl,
            time_offset=offset_min,
            annunciation_octets=frozenset(AnnunciationOctet) if status else frozenset(),
            sensor_status=status,
        ),
        absolute_time_utc=start + timedelta(minutes=offset_min),
        time_offset_min=offset_min,
        clock_offset_s=clock_offset_s,
        start_time_estimated=estimated,
    )


def one_cgm(r: CgmReading) -> Observation:
    out = cgm_observations(r)
    assert len(out) == 1
    return out[0]


def test_cgm_mg_dl_becomes_mmol_l_at_session_time() -> None:
    obs = one_cgm(cgm(mg_dl=Number(100, 0), offset_min=30))
    assert obs.measure == "glucose.cgm"
    assert obs.unit == "mmol/L"
    assert obs.value == pytest.approx(100 / MG_DL_PER_MMOL_L)
    assert obs.provenance.original_value == 100
    assert obs.provenance.original_unit == "mg/dL"
    assert obs.effective_time == datetime(2026, 11, 22, 6, 30, tzinfo=UTC)
    assert obs.quality == frozenset()


def test_cgm_special_is_absent() -> None:
    obs = one_cgm(cgm(mg_dl=NAN))
    assert obs.value is None
    assert obs.absent_reason is AbsentReason.NOT_A_NUMBER


def test_cgm_record_key_from_session_start_and_offset() -> None:
    a = one_cgm(cgm(offset_min=30)).record_key
    assert one_cgm(cgm(offset_min=30)).record_key == a
    b = one_cgm(cgm(offset_min=35)).record_key
    assert a != b
    assert a.startswith("cgm:")
    assert a.endswith("+30")
    assert b.endswith("+35")
    assert a.removesuffix("+30") == b.removesuffix("+35")  # same session, same prefix
    # same instant, but a different session (started 5 min later, offset 30): another record
    c = one_cgm(cgm(offset_min=30, start=SESSION_START + timedelta(minutes=5))).record_key
    assert c != a
    assert c != b


def test_cgm_lower_than_device_can_process_is_less_than() -> None:
    obs = one_cgm(
        cgm(
            mg_dl=Number(40, 0),
            status=frozenset({CgmSensorStatus.RESULT_LOWER_THAN_DEVICE_CAN_PROCESS}),
        )
    )
    assert obs.comparator == "<"
    assert obs.value == pytest.approx(40 / MG_DL_PER_MMOL_L)
    assert QualityFlag.BELOW_RANGE in obs.quality


def test_cgm_higher_than_device_can_process_is_greater_than() -> None:
    obs = one_cgm(
        cgm(
            mg_dl=Number(400, 0),
            status=frozenset({CgmSensorStatus.RESULT_HIGHER_THAN_DEVICE_CAN_PROCESS}),
        )
    )
    assert obs.comparator == ">"
    assert QualityFlag.ABOVE_RANGE in obs.quality


@pytest.mark.parametrize(
    "status",
    [
        CgmSensorStatus.SENSOR_TYPE_INCORRECT,
        CgmSensorStatus.GENERAL_DEVICE_FAULT,
        CgmSensorStatus.CALIBRATION_REQUIRED,
        CgmSensorStatus.SENSOR_TEMPERATURE_TOO_HIGH,
        CgmSensorStatus.SENSOR_TEMPERATURE_TOO_LOW,
    ],
)
def test_cgm_questionable_status_is_flagged(status: CgmSensorStatus) -> None:
    obs = one_cgm(cgm(status=frozenset({status})))
    assert QualityFlag.QUESTIONABLE in obs.quality
    assert obs.value is not None  # stored and shown, just never alerted on


def test_cgm_plain_reading_is_not_questionable() -> None:
    obs = one_cgm(cgm(status=frozenset({CgmSensorStatus.RATE_OF_INCREASE_EXCEEDED})))
    assert QualityFlag.QUESTIONABLE not in obs.quality


def test_cgm_battery_low_is_flagged() -> None:
    obs = one_cgm(cgm(status=frozenset({CgmSensorStatus.DEVICE_BATTERY_LOW})))
    assert QualityFlag.BATTERY_LOW in obs.quality


def test_cgm_estimated_start_is_device_time_only() -> None:
    obs = one_cgm(cgm(estimated=True, clock_offset_s=None))
    assert QualityFlag.DEVICE_TIME_ONLY in obs.quality


def test_cgm_clock_offset_beyond_15_min_is_flagged() -> None:
    assert QualityFlag.CLOCK_OFFSET in one_cgm(cgm(clock_offset_s=1200.0)).quality
    assert QualityFlag.CLOCK_OFFSET not in one_cgm(cgm(clock_offset_s=60.0)).quality


def test_cgm_unmeasured_clock_offset_is_device_time_only() -> None:
    obs = one_cgm(cgm(estimated=False, clock_offset_s=None))
    assert QualityFlag.DEVICE_TIME_ONLY in obs.quality


# --------------------------------------------------------------------------- vitals

DEVICE_TIME = datetime(2026, 11, 22, 8, 30)
CORRECTED = datetime(2026, 11, 22, 6, 29, 55, tzinfo=UTC)
RECEIVED = datetime(2026, 11, 22, 6, 31, tzinfo=UTC)

_UUIDS: dict[VitalsKind, int] = {
    "blood_pressure": 0x2A35,
    "weight": 0x2A9D,
    "temperature": 0x2A1C,
    "pulse_oximeter": 0x2A5E,
}


def vitals(
    kind: VitalsKind,
    value: MeasurementValue,
    *,
    device_time: datetime | None = DEVICE_TIME,
    offset_s: float | None = 5.0,
    clinically_usable: bool = True,
) -> list[Observation]:
    return vitals_observations(
        Measurement(
            kind=kind,
            uuid=_UUIDS[kind],
            value=value,
            device_time=device_time,
            corrected_time_utc=CORRECTED,
            received_at=RECEIVED,
            offset_s=offset_s,
            stored=False,
            clinically_usable=clinically_usable,
        )
    )


def by_measure(obs: list[Observation]) -> dict[str, Observation]:
    out = {o.measure: o for o in obs}
    assert len(out) == len(obs), "one observation per measure"
    return out


def bp(
    unit: str, systolic: Number, diastolic: Number, pulse: Number | None = None
) -> list[Observation]:
    return vitals(
        "blood_pressure",
        BloodPressureMeasurement(
            unit=unit,
            systolic=systolic,
            diastolic=diastolic,
            mean_arterial_pressure=NAN,  # real cuffs send NaN in unused slots
            pulse_rate=pulse,
        ),
    )


def test_bp_mmhg_values_pass_through() -> None:
    got = by_measure(bp("mm[Hg]", Number(120, 0), Number(80, 0), Number(72, 0)))
    assert set(got) == {"bp.systolic", "bp.diastolic", "pulse.cuff"}
    assert got["bp.systolic"].value == 120
    assert got["bp.diastolic"].value == 80
    assert got["pulse.cuff"].value == 72
    assert got["bp.systolic"].unit == "mm[Hg]"
    assert got["pulse.cuff"].unit == "/min"
    for o in got.values():
        assert o.absent_reason is None
        assert o.effective_time == CORRECTED
        assert o.provenance.original_value is None
        assert o.provenance.source == "ble:0x2A35"


def test_bp_kpa_is_converted_with_original_kept() -> None:
    got = by_measure(bp("kPa", Number(160, -1), Number(107, -1)))
    sys_, dia = got["bp.systolic"], got["bp.diastolic"]
    assert sys_.unit == "mm[Hg]"
    assert sys_.value == pytest.approx(16_000 / 133.322387415)  # 16.0 kPa ≈ 120.0 mmHg
    assert dia.value == pytest.approx(10_700 / 133.322387415)
    assert (sys_.provenance.original_value, sys_.provenance.original_unit) == (16.0, "kPa")
    assert (dia.provenance.original_value, dia.provenance.original_unit) == (10.7, "kPa")
    assert "pulse.cuff" not in got


def test_bp_nan_systolic_is_absent_and_diastolic_kept() -> None:
    got = by_measure(bp("mm[Hg]", NAN, Number(80, 0)))
    assert got["bp.systolic"].value is None
    assert got["bp.systolic"].absent_reason is AbsentReason.NOT_A_NUMBER
    assert got["bp.diastolic"].value == 80


def test_weight_unsuccessful_is_absent_error_never_327_675() -> None:
    got = by_measure(vitals("weight", WeightMeasurement(imperial=False, weight=None)))
    w = got["body.weight"]
    assert w.value is None
    assert w.absent_reason is AbsentReason.ERROR
    assert w.provenance.original_value is None


def test_weight_in_pounds_becomes_kg_with_original_kept() -> None:
    weight = Quantity(raw=15432, resolution=Decimal("0.01"), unit="[lb_av]")  # 154.32 lb
    got = by_measure(vitals("weight", WeightMeasurement(imperial=True, weight=weight)))
    w = got["body.weight"]
    assert w.unit == "kg"
    assert w.value == pytest.approx(154.32 * 0.45359237)
    assert (w.provenance.original_value, w.provenance.original_unit) == (154.32, "[lb_av]")


def test_weight_kg_and_height_in_metres_become_kg_and_cm() -> None:
    m = WeightMeasurement(
        imperial=False,
        weight=Quantity(raw=14001, resolution=Decimal("0.005"), unit="kg"),  # 70.005 kg
        height=Quantity(raw=1753, resolution=Decimal("0.001"), unit="m"),  # 1.753 m
        bmi=Quantity(raw=228, resolution=Decimal("0.1"), unit="kg/m2"),
    )
    got = by_measure(vitals("weight", m))
    assert got["body.weight"].value == 70.005  # fixed point stays exact
    assert got["body.height"].unit == "cm"
    assert got["body.height"].value == 175.3
    assert got["bmi"].value == pytest.approx(22.8)


def test_temperature_fahrenheit_becomes_celsius() -> None:
    got = by_measure(
        vitals("temperature", TemperatureMeasurement(unit="[degF]", temperature=Number(986, -1)))
    )
    t = got["body.temperature"]
    assert t.unit == "Cel"
    assert t.value == pytest.approx(37.0)
    assert (t.provenance.original_value, t.provenance.original_unit) == (98.6, "[degF]")


def test_temperature_special_is_absent() -> None:
    got = by_measure(
        vitals(
            "temperature",
            TemperatureMeasurement(unit="Cel", temperature=Number(0, 0, Special.NRES)),
        )
    )
    assert got["body.temperature"].absent_reason is AbsentReason.NOT_AT_THIS_RESOLUTION


def plx(status: frozenset[PlxMeasurementStatus]) -> PlxSpotCheck:
    return PlxSpotCheck(
        reading=SpO2PulseRate(spo2=Number(97, 0), pulse_rate=Number(64, 0)),
        measurement_status=status,
    )


@pytest.mark.parametrize(
    "status",
    [
        PlxMeasurementStatus.MEASUREMENT_UNAVAILABLE,
        PlxMeasurementStatus.QUESTIONABLE_MEASUREMENT_DETECTED,
        PlxMeasurementStatus.INVALID_MEASUREMENT_DETECTED,
    ],
)
def test_plx_not_clinically_usable_is_questionable(status: PlxMeasurementStatus) -> None:
    value = plx(frozenset({status}))
    assert not value.clinically_usable
    got = by_measure(vitals("pulse_oximeter", value, clinically_usable=value.clinically_usable))
    assert set(got) == {"spo2", "pulse.oximeter"}
    for o in got.values():
        assert QualityFlag.QUESTIONABLE in o.quality
    assert got["spo2"].value == 97
    assert got["pulse.oximeter"].value == 64


def test_plx_validated_reading_is_not_questionable() -> None:
    value = plx(frozenset({PlxMeasurementStatus.VALIDATED_DATA}))
    got = vitals("pulse_oximeter", value, clinically_usable=value.clinically_usable)
    assert all(QualityFlag.QUESTIONABLE not in o.quality for o in got)


def test_vitals_without_clock_offset_is_device_time_only() -> None:
    got = bp("mm[Hg]", Number(120, 0), Number(80, 0))
    assert all(QualityFlag.DEVICE_TIME_ONLY not in o.quality for o in got)
    unmeasured = vitals(
        "blood_pressure",
        BloodPressureMeasurement(
            unit="mm[Hg]",
            systolic=Number(120, 0),
            diastolic=Number(80, 0),
            mean_arterial_pressure=NAN,
        ),
        offset_s=None,
    )
    assert all(QualityFlag.DEVICE_TIME_ONLY in o.quality for o in unmeasured)
    far = vitals(
        "temperature",
        TemperatureMeasurement(unit="Cel", temperature=Number(370, -1)),
        offset_s=-3600.0,
    )
    assert QualityFlag.CLOCK_OFFSET in far[0].quality


def test_vitals_record_key_is_stable_per_reading() -> None:
    value = TemperatureMeasurement(unit="Cel", temperature=Number(370, -1))
    a = vitals("temperature", value)[0].record_key
    assert vitals("temperature", value)[0].record_key == a
    later = vitals("temperature", value, device_time=DEVICE_TIME + timedelta(minutes=1))
    assert later[0].record_key != a
    # without a device time stamp the key falls back to the receive time, still deterministic
    live = vitals("temperature", value, device_time=None)
    assert live[0].record_key == vitals("temperature", value, device_time=None)[0].record_key
    assert live[0].record_key != a
