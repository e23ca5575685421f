"""Glucose service 0x1808: measurement, context, feature and Record Access Control Point codecs.

Sans-I/O: whole characteristic values in, frozen typed values out, and encoders back to bytes.
Facts: PROTOCOLS.md "Glucose service 0x1808". Every malformed value raises
:class:`~device_profiles.gatt.ieee11073.DecodeError` naming the byte offset; asking an encoder
for something the format cannot carry raises :class:`~device_profiles.gatt.ieee11073.EncodeError`.

Reserved flag and status bits are tolerated (real meters set them) and kept in ``reserved_*``
fields so that a value re-encodes to the same bytes. Glucose type is the LOW nibble and sample
location the HIGH nibble of the type/location octet.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Final, TypeVar

from device_profiles.gatt.ieee11073 import (
    DateTime,
    DecodeError,
    EncodeError,
    Number,
    Reader,
    date_time_ok,
    decode_sfloat,
    encode_sfloat,
    new_date_time,
    slot_setters,
)

__all__ = [
    "Carbohydrate",
    "ConcentrationUnit",
    "ContextFlag",
    "Exercise",
    "GlucoseContext",
    "GlucoseFeature",
    "GlucoseFeatureBit",
    "GlucoseMeasurement",
    "GlucoseMeasurementFlag",
    "GlucoseType",
    "Medication",
    "MedicationUnit",
    "RacpMessage",
    "RacpOpCode",
    "RacpOperator",
    "RacpResponseCode",
    "SampleLocation",
    "SensorStatus",
    "decode_glucose_context",
    "decode_glucose_feature",
    "decode_glucose_measurement",
    "decode_racp",
    "encode_glucose_context",
    "encode_glucose_feature",
    "encode_glucose_measurement",
    "encode_racp",
    "racp_abort",
    "racp_report_all",
    "racp_report_count_all",
    "racp_report_from_sequence",
]

_E = TypeVar("_E", bound=StrEnum)


def _decode_bits(raw: int, bits: Mapping[_E, int]) -> tuple[frozenset[_E], int]:
    """Known bits as enum members, plus the remaining (reserved) bits as an int."""
    members = frozenset(m for m, b in bits.items() if (raw >> b) & 1)
    known = sum(1 << b for b in bits.values())
    return members, raw & ~known


def _encode_bits(members: frozenset[_E], bits: Mapping[_E, int], reserved: int) -> int:
    known = sum(1 << b for b in bits.values())
    if reserved & known:
        raise EncodeError(f"reserved bits {reserved:#x} overlap defined bits")
    return sum(1 << bits[m] for m in members) | reserved


def _check(value: int, lo: int, hi: int, what: str) -> int:
    if not lo <= value <= hi:
        raise EncodeError(f"{what} {value} is outside {lo}..{hi}")
    return value


def _u8(value: int, what: str) -> bytes:
    return _check(value, 0, 0xFF, what).to_bytes(1, "little")


def _u16(value: int, what: str) -> bytes:
    return _check(value, 0, 0xFFFF, what).to_bytes(2, "little")


def _s16(value: int, what: str) -> bytes:
    return _check(value, -0x8000, 0x7FFF, what).to_bytes(2, "little", signed=True)


def _sfloat(n: Number) -> bytes:
    return encode_sfloat(n).to_bytes(2, "little")


def pack_date_time(dt: DateTime) -> bytes:
    """Refuses what `Reader.date_time` would refuse (the encoder's half of the contract)."""
    try:
        Reader(dt.pack()).date_time()
        ok = dt.year == 0 or 1582 <= dt.year <= 9999
    except (ValueError, OverflowError, struct.error):
        ok = False
    if not ok:
        raise EncodeError(f"{dt} is not a valid GATT date time")
    return dt.pack()


# --------------------------------------------------------------------------- shared enums


class GlucoseType(IntEnum):
    """Type nibble (LOW nibble of the type/location octet). Other values are reserved."""

    CAPILLARY_WHOLE_BLOOD = 1
    CAPILLARY_PLASMA = 2
    VENOUS_WHOLE_BLOOD = 3
    VENOUS_PLASMA = 4
    ARTERIAL_WHOLE_BLOOD = 5
    ARTERIAL_PLASMA = 6
    UNDETERMINED_WHOLE_BLOOD = 7
    UNDETERMINED_PLASMA = 8
    INTERSTITIAL_FLUID = 9
    CONTROL_SOLUTION = 10


class SampleLocation(IntEnum):
    """Sample location nibble (HIGH nibble of the type/location octet)."""

    FINGER = 1
    ALTERNATE_SITE_TEST = 2
    EARLOBE = 3
    CONTROL_SOLUTION = 4
    NOT_AVAILABLE = 15


def glucose_type_of(nibble: int) -> GlucoseType | int:
    """The type for a nibble; reserved nibbles stay plain ints (tolerated, never guessed)."""
    try:
        return GlucoseType(nibble)
    except ValueError:
        return nibble


def sample_location_of(nibble: int) -> SampleLocation | int:
    try:
        return SampleLocation(nibble)
    except ValueError:
        return nibble


def pack_type_location(glucose_type: int, location: int) -> bytes:
    """Type in the LOW nibble, location in the HIGH nibble."""
    _check(int(glucose_type), 0, 15, "glucose type")
    _check(int(location), 0, 15, "sample location")
    return bytes([(int(location) << 4) | int(glucose_type)])


# --------------------------------------------------------------------------- 0x2A18


class GlucoseMeasurementFlag(StrEnum):
    TIME_OFFSET_PRESENT = "time_offset_present"
    CONCENTRATION_TYPE_AND_SAMPLE_LOCATION_PRESENT = (
        "glucose_concentration_type_and_sample_location_present"
    )
    CONCENTRATION_UNITS_MOL_PER_L = "glucose_concentration_units_mol_per_l"
    SENSOR_STATUS_ANNUNCIATION_PRESENT = "sensor_status_annunciation_present"
    CONTEXT_INFORMATION_FOLLOWS = "context_information_follows"


_MEASUREMENT_FLAG_BITS: Final[dict[GlucoseMeasurementFlag, int]] = {
    GlucoseMeasurementFlag.TIME_OFFSET_PRESENT: 0,
    GlucoseMeasurementFlag.CONCENTRATION_TYPE_AND_SAMPLE_LOCATION_PRESENT: 1,
    GlucoseMeasurementFlag.CONCENTRATION_UNITS_MOL_PER_L: 2,
    GlucoseMeasurementFlag.SENSOR_STATUS_ANNUNCIATION_PRESENT: 3,
    GlucoseMeasurementFlag.CONTEXT_INFORMATION_FOLLOWS: 4,
}


class ConcentrationUnit(StrEnum):
    KG_PER_L = "kg/L"
    MOL_PER_L = "mol/L"


class SensorStatus(StrEnum):
    """Sensor Status Annunciation bits 0-11."""

    DEVICE_BATTERY_LOW = "device_battery_low"
    SENSOR_MALFUNCTION = "sensor_malfunction"
    SAMPLE_SIZE_INSUFFICIENT = "sample_size_insufficient"
    STRIP_INSERTION_ERROR = "strip_insertion_error"
    STRIP_TYPE_INCORRECT = "strip_type_incorrect"
    RESULT_TOO_HIGH = "sensor_result_higher_than_device_can_process"
    RESULT_TOO_LOW = "sensor_result_lower_than_device_can_process"
    TEMPERATURE_TOO_HIGH = "sensor_temperature_too_high"
    TEMPERATURE_TOO_LOW = "sensor_temperature_too_low"
    READ_INTERRUPTED = "sensor_read_interrupted"
    GENERAL_DEVICE_FAULT = "general_device_fault"
    TIME_FAULT = "time_fault"


_SENSOR_STATUS_BITS: Final[dict[SensorStatus, int]] = {s: i for i, s in enumerate(SensorStatus)}


@dataclass(frozen=True, slots=True, kw_only=True)
class GlucoseMeasurement:
    """Glucose Measurement 0x2A18.

    ``concentration``, ``glucose_type`` and ``sample_location`` are present together (flag b1).
    ``unit`` is flag b2 and is kept even when no concentration is present.
    ``time_offset`` is in minutes; ``sensor_status`` is None when the field is absent.
    """

    sequence_number: int
    base_time: DateTime
    time_offset: int | None = None
    concentration: Number | None = None
    unit: ConcentrationUnit = ConcentrationUnit.KG_PER_L
    glucose_type: GlucoseType | int | None = None
    sample_location: SampleLocation | int | None = None
    sensor_status: frozenset[SensorStatus] | None = None
    reserved_sensor_status: int = 0
    context_follows: bool = False
    reserved_flags: int = 0

    @property
    def flags(self) -> frozenset[GlucoseMeasurementFlag]:
        f = GlucoseMeasurementFlag
        out: set[GlucoseMeasurementFlag] = set()
        if self.time_offset is not None:
            out.add(f.TIME_OFFSET_PRESENT)
        if self.concentration is not None:
            out.add(f.CONCENTRATION_TYPE_AND_SAMPLE_LOCATION_PRESENT)
        if self.unit is ConcentrationUnit.MOL_PER_L:
            out.add(f.CONCENTRATION_UNITS_MOL_PER_L)
        if self.sensor_status is not None:
            out.add(f.SENSOR_STATUS_ANNUNCIATION_PRESENT)
        if self.context_follows:
            out.add(f.CONTEXT_INFORMATION_FOLLOWS)
        return frozenset(out)

    @property
    def is_control_solution(self) -> bool:
        """Control-solution results are never patient data."""
        return (
            self.glucose_type == GlucoseType.CONTROL_SOLUTION
            or self.sample_location == SampleLocation.CONTROL_SOLUTION
        )

    def mg_dl(self) -> float | None:
        """kg/L x 10^5, exactly; None when there is no number (absent or special).

        Raises ValueError for a mol/L reading (converting needs a molar mass: not exact).
        """
        if self.concentration is None or not self.concentration.is_number:
            return None
        if self.unit is not ConcentrationUnit.KG_PER_L:
            raise ValueError("concentration is in mol/L; use mmol_l()")
        return self.concentration.scaled(5)

    def mmol_l(self) -> float | None:
        """mol/L x 10^3, exactly; None when there is no number (absent or special)."""
        if self.concentration is None or not self.concentration.is_number:
            return None
        if self.unit is not ConcentrationUnit.MOL_PER_L:
            raise ValueError("concentration is in kg/L; use mg_dl()")
        return self.concentration.scaled(3)


class _GlucoseLayout:
    """Everything a flags octet decides, computed once per raw flags value."""

    __slots__ = (
        "context_follows",
        "flags",
        "has_concentration",
        "has_offset",
        "has_status",
        "reserved",
        "size",
        "unit",
        "unpack",
    )

    def __init__(self, raw_flags: int) -> None:
        f = GlucoseMeasurementFlag
        self.flags, self.reserved = _decode_bits(raw_flags, _MEASUREMENT_FLAG_BITS)
        self.has_offset = f.TIME_OFFSET_PRESENT in self.flags
        self.has_concentration = f.CONCENTRATION_TYPE_AND_SAMPLE_LOCATION_PRESENT in self.flags
        self.has_status = f.SENSOR_STATUS_ANNUNCIATION_PRESENT in self.flags
        self.context_follows = f.CONTEXT_INFORMATION_FOLLOWS in self.flags
        self.unit = (
            ConcentrationUnit.MOL_PER_L
            if f.CONCENTRATION_UNITS_MOL_PER_L in self.flags
            else ConcentrationUnit.KG_PER_L
        )
        fmt = (
            "<xHHBBBBB"
            + ("h" if self.has_offset else "")
            + ("HB" if self.has_concentration else "")
            + ("H" if self.has_status else "")
        )
        st = struct.Struct(fmt)
        self.size = st.size
        self.unpack = st.unpack


_GLUCOSE_LAYOUTS: Final = tuple(_GlucoseLayout(raw) for raw in range(256))
#: Type/location octet → (type, location), reserved nibbles kept as ints.
_TYPE_LOCATION: Final = tuple(
    (glucose_type_of(tl & 0x0F), sample_location_of(tl >> 4)) for tl in range(256)
)
_STATUS_CACHE: Final[dict[int, tuple[frozenset[SensorStatus], int]]] = {}


def _sensor_status_of(raw: int) -> tuple[frozenset[SensorStatus], int]:
    hit = _STATUS_CACHE.get(raw)
    if hit is None:
        hit = _decode_bits(raw, _SENSOR_STATUS_BITS)
        _STATUS_CACHE[raw] = hit  # keys are uint16: at most 65 536 entries
    return hit


(
    _gm_sequence_number,
    _gm_base_time,
    _gm_time_offset,
    _gm_concentration,
    _gm_unit,
    _gm_glucose_type,
    _gm_sample_location,
    _gm_sensor_status,
    _gm_reserved_sensor_status,
    _gm_context_follows,
    _gm_reserved_flags,
) = slot_setters(
    GlucoseMeasurement,
    (
        "sequence_number",
        "base_time",
        "time_offset",
        "concentration",
        "unit",
        "glucose_type",
        "sample_location",
        "sensor_status",
        "reserved_sensor_status",
        "context_follows",
        "reserved_flags",
    ),
)
_new: Final = object.__new__


def decode_glucose_measurement(data: bytes) -> GlucoseMeasurement:
    data = bytes(data)
    return _decode_glucose_measurement_fast(data) or _decode_glucose_measurement_careful(data)


def _decode_glucose_measurement_fast(data: bytes) -> GlucoseMeasurement | None:
    """Well-formed values only, one ``unpack`` per flags layout; None → the careful path."""
    if not data:
        return None
    layout = _GLUCOSE_LAYOUTS[data[0]]
    if len(data) != layout.size:
        return None
    v = layout.unpack(data)
    year, month, day, hour, minute, second = v[1:7]
    if not date_time_ok(year, month, day, hour, minute, second):
        return None
    i = 7
    time_offset: int | None = None
    if layout.has_offset:
        time_offset = v[7]
        i = 8
    concentration: Number | None = None
    glucose_type: GlucoseType | int | None = None
    location: SampleLocation | int | None = None
    if layout.has_concentration:
        concentration = decode_sfloat(v[i])
        glucose_type, location = _TYPE_LOCATION[v[i + 1]]
        i += 2
    status: frozenset[SensorStatus] | None = None
    reserved_status = 0
    if layout.has_status:
        status, reserved_status = _sensor_status_of(v[i])
    # GlucoseMeasurement(...) with the same eleven fields, without frozen __setattr__.
    m: GlucoseMeasurement = _new(GlucoseMeasurement)
    _gm_sequence_number(m, v[0])
    _gm_base_time(m, new_date_time(year, month, day, hour, minute, second))
    _gm_time_offset(m, time_offset)
    _gm_concentration(m, concentration)
    _gm_unit(m, layout.unit)
    _gm_glucose_type(m, glucose_type)
    _gm_sample_location(m, location)
    _gm_sensor_status(m, status)
    _gm_reserved_sensor_status(m, reserved_status)
    _gm_context_follows(m, layout.context_follows)
    _gm_reserved_flags(m, layout.reserved)
    return m


def _decode_glucose_measurement_careful(data: bytes) -> GlucoseMeasurement:
    """Field by field through :class:`Reader`: the reference, and the source of every error."""
    r = Reader(data)
    raw_flags = r.u8("flags")
    flags, reserved_flags = _decode_bits(raw_flags, _MEASUREMENT_FLAG_BITS)
    f = GlucoseMeasurementFlag
    sequence = r.u16("sequence number")
    base_time = r.date_time("base time")
    time_offset = r.s16("time offset") if f.TIME_OFFSET_PRESENT in flags else None
    concentration: Number | None = None
    glucose_type: GlucoseType | int | None = None
    location: SampleLocation | int | None = None
    if f.CONCENTRATION_TYPE_AND_SAMPLE_LOCATION_PRESENT in flags:
        concentration = r.sfloat("glucose concentration")
        tl = r.u8("type-sample location")
        glucose_type = glucose_type_of(tl & 0x0F)
        location = sample_location_of(tl >> 4)
    status: frozenset[SensorStatus] | None = None
    reserved_status = 0
    if f.SENSOR_STATUS_ANNUNCIATION_PRESENT in flags:
        status, reserved_status = _decode_bits(
            r.u16("sensor status annunciation"), _SENSOR_STATUS_BITS
        )
    r.end()
    return GlucoseMeasurement(
        sequence_number=sequence,
        base_time=base_time,
        time_offset=time_offset,
        concentration=concentration,
        unit=(
            ConcentrationUnit.MOL_PER_L
            if f.CONCENTRATION_UNITS_MOL_PER_L in flags
            else ConcentrationUnit.KG_PER_L
        ),
        glucose_type=glucose_type,
        sample_location=location,
        sensor_status=status,
        reserved_sensor_status=reserved_status,
        context_follows=f.CONTEXT_INFORMATION_FOLLOWS in flags,
        reserved_flags=reserved_flags,
    )


def encode_glucose_measurement(m: GlucoseMeasurement) -> bytes:
    grouped = (m.concentration, m.glucose_type, m.sample_location)
    if any(v is None for v in grouped) and any(v is not None for v in grouped):
        raise EncodeError("concentration, glucose_type and sample_location go together")
    if m.sensor_status is None and m.reserved_sensor_status:
        raise EncodeError("reserved sensor status bits without a sensor status field")
    flags = _encode_bits(
        m.flags, _MEASUREMENT_FLAG_BITS, _check(m.reserved_flags, 0, 0xFF, "flags")
    )
    out = bytearray([flags])
    out += _u16(m.sequence_number, "sequence number")
    out += pack_date_time(m.base_time)
    if m.time_offset is not None:
        out += _s16(m.time_offset, "time offset")
    if m.concentration is not None:
        assert m.glucose_type is not None  # checked above
        assert m.sample_location is not None
        out += _sfloat(m.concentration)
        out += pack_type_location(m.glucose_type, m.sample_location)
    if m.sensor_status is not None:
        bits = _encode_bits(m.sensor_status, _SENSOR_STATUS_BITS, m.reserved_sensor_status)
        out += _u16(bits, "sensor status")
    return bytes(out)


# --------------------------------------------------------------------------- 0x2A34


class ContextFlag(StrEnum):
    CARBOHYDRATE_PRESENT = "carbohydrate_id_and_carbohydrate_present"
    MEAL_PRESENT = "meal_present"
    TESTER_HEALTH_PRESENT = "tester_health_present"
    EXERCISE_PRESENT = "exercise_duration_and_exercise_intensity_present"
    MEDICATION_PRESENT = "medication_id_and_medication_present"
    MEDICATION_UNITS_LITERS = "medication_value_units_liters"
    HBA1C_PRESENT = "hba1c_present"
    EXTENDED_FLAGS_PRESENT = "extended_flags_present"


_CONTEXT_FLAG_BITS: Final[dict[ContextFlag, int]] = {c: i for i, c in enumerate(ContextFlag)}


class MedicationUnit(StrEnum):
    KILOGRAMS = "kg"
    LITERS = "L"


@dataclass(frozen=True, slots=True, kw_only=True)
class Carbohydrate:
    carbohydrate_id: int
    amount: Number  # kilograms


@dataclass(frozen=True, slots=True, kw_only=True)
class Exercise:
    duration_s: int  # 0xFFFF = overrun
    intensity_percent: int

    @property
    def overrun(self) -> bool:
        return self.duration_s == 0xFFFF


@dataclass(frozen=True, slots=True, kw_only=True)
class Medication:
    medication_id: int
    amount: Number
    unit: MedicationUnit


@dataclass(frozen=True, slots=True, kw_only=True)
class GlucoseContext:
    """Glucose Measurement Context 0x2A34. Absent optional fields are None.

    ``tester`` is the LOW nibble and ``health`` the HIGH nibble of their shared octet. IDs are
    kept as raw ints (their code tables are not in PROTOCOLS.md). ``medication_unit_liters``
    is flag b5, kept even when no medication field is present.
    """

    sequence_number: int
    extended_flags: int | None = None
    carbohydrate: Carbohydrate | None = None
    meal: int | None = None
    tester: int | None = None
    health: int | None = None
    exercise: Exercise | None = None
    medication: Medication | None = None
    medication_unit_liters: bool = False
    hba1c_percent: Number | None = None

    @property
    def flags(self) -> frozenset[ContextFlag]:
        c = ContextFlag
        present = {
            c.CARBOHYDRATE_PRESENT: self.carbohydrate is not None,
            c.MEAL_PRESENT: self.meal is not None,
            c.TESTER_HEALTH_PRESENT: self.tester is not None,
            c.EXERCISE_PRESENT: self.exercise is not None,
            c.MEDICATION_PRESENT: self.medication is not None,
            c.MEDICATION_UNITS_LITERS: self._liters,
            c.HBA1C_PRESENT: self.hba1c_percent is not None,
            c.EXTENDED_FLAGS_PRESENT: self.extended_flags is not None,
        }
        return frozenset(k for k, v in present.items() if v)

    @property
    def _liters(self) -> bool:
        if self.medication is not None:
            return self.medication.unit is MedicationUnit.LITERS
        return self.medication_unit_liters


def decode_glucose_context(data: bytes) -> GlucoseContext:
    r = Reader(data)
    flags, _ = _decode_bits(r.u8("flags"), _CONTEXT_FLAG_BITS)  # all 8 bits are defined
    c = ContextFlag
    sequence = r.u16("sequence number")
    extended = r.u8("extended flags") if c.EXTENDED_FLAGS_PRESENT in flags else None
    carbohydrate = None
    if c.CARBOHYDRATE_PRESENT in flags:
        cid = r.u8("carbohydrate id")
        carbohydrate = Carbohydrate(carbohydrate_id=cid, amount=r.sfloat("carbohydrate"))
    meal = r.u8("meal") if c.MEAL_PRESENT in flags else None
    tester = health = None
    if c.TESTER_HEALTH_PRESENT in flags:
        th = r.u8("tester-health")
        tester, health = th & 0x0F, th >> 4
    exercise = None
    if c.EXERCISE_PRESENT in flags:
        duration = r.u16("exercise duration")
        exercise = Exercise(duration_s=duration, intensity_percent=r.u8("exercise intensity"))
    liters = c.MEDICATION_UNITS_LITERS in flags
    medication = None
    if c.MEDICATION_PRESENT in flags:
        mid = r.u8("medication id")
        medication = Medication(
            medication_id=mid,
            amount=r.sfloat("medication"),
            unit=MedicationUnit.LITERS if liters else MedicationUnit.KILOGRAMS,
        )
    hba1c = r.sfloat("HbA1c") if c.HBA1C_PRESENT in flags else None
    r.end()
    return GlucoseContext(
        sequence_number=sequence,
        extended_flags=extended,
        carbohydrate=carbohydrate,
        meal=meal,
        tester=tester,
        health=health,
        exercise=exercise,
        medication=medication,
        medication_unit_liters=liters,
        hba1c_percent=hba1c,
    )


def encode_glucose_context(ctx: GlucoseContext) -> bytes:
    if (ctx.tester is None) != (ctx.health is None):
        raise EncodeError("tester and health go together")
    out = bytearray([_encode_bits(ctx.flags, _CONTEXT_FLAG_BITS, 0)])
    out += _u16(ctx.sequence_number, "sequence number")
    if ctx.extended_flags is not None:
        out += _u8(ctx.extended_flags, "extended flags")
    if ctx.carbohydrate is not None:
        out += _u8(ctx.carbohydrate.carbohydrate_id, "carbohydrate id")
        out += _sfloat(ctx.carbohydrate.amount)
    if ctx.meal is not None:
        out += _u8(ctx.meal, "meal")
    if ctx.tester is not None and ctx.health is not None:
        _check(ctx.tester, 0, 15, "tester")
        _check(ctx.health, 0, 15, "health")
        out.append((ctx.health << 4) | ctx.tester)
    if ctx.exercise is not None:
        out += _u16(ctx.exercise.duration_s, "exercise duration")
        out += _u8(ctx.exercise.intensity_percent, "exercise intensity")
    if ctx.medication is not None:
        out += _u8(ctx.medication.medication_id, "medication id")
        out += _sfloat(ctx.medication.amount)
    if ctx.hba1c_percent is not None:
        out += _sfloat(ctx.hba1c_percent)
    return bytes(out)


# --------------------------------------------------------------------------- 0x2A51


class GlucoseFeatureBit(StrEnum):
    LOW_BATTERY_DETECTION = "low_battery_detection_during_measurement"
    SENSOR_MALFUNCTION_DETECTION = "sensor_malfunction_detection"
    SENSOR_SAMPLE_SIZE = "sensor_sample_size"
    SENSOR_STRIP_INSERTION_ERROR_DETECTION = "sensor_strip_insertion_error_detection"
    SENSOR_STRIP_TYPE_ERROR_DETECTION = "sensor_strip_type_error_detection"
    SENSOR_RESULT_HIGH_LOW_DETECTION = "sensor_result_high_low_detection"
    SENSOR_TEMPERATURE_HIGH_LOW_DETECTION = "sensor_temperature_high_low_detection"
    SENSOR_READ_INTERRUPT_DETECTION = "sensor_read_interrupt_detection"
    GENERAL_DEVICE_FAULT = "general_device_fault"
    TIME_FAULT = "time_fault"
    MULTIPLE_BOND = "multiple_bond"


_FEATURE_BITS: Final[dict[GlucoseFeatureBit, int]] = {b: i for i, b in enumerate(GlucoseFeatureBit)}


@dataclass(frozen=True, slots=True, kw_only=True)
class GlucoseFeature:
    features: frozenset[GlucoseFeatureBit]
    reserved_flags: int = 0


def decode_glucose_feature(data: bytes) -> GlucoseFeature:
    r = Reader(data)
    features, reserved = _decode_bits(r.u16("glucose feature"), _FEATURE_BITS)
    r.end()
    return GlucoseFeature(features=features, reserved_flags=reserved)


def encode_glucose_feature(f: GlucoseFeature) -> bytes:
    return _u16(_encode_bits(f.features, _FEATURE_BITS, f.reserved_flags), "feature bits")


# --------------------------------------------------------------------------- RACP 0x2A52


class RacpOpCode(IntEnum):
    REPORT_STORED_RECORDS = 1
    DELETE_STORED_RECORDS = 2
    ABORT_OPERATION = 3
    REPORT_NUMBER_OF_STORED_RECORDS = 4
    NUMBER_OF_STORED_RECORDS_RESPONSE = 5
    RESPONSE_CODE = 6


class RacpOperator(IntEnum):
    NULL = 0
    ALL_RECORDS = 1
    LESS_THAN_OR_EQUAL_TO = 2
    GREATER_THAN_OR_EQUAL_TO = 3
    WITHIN_RANGE_OF = 4
    FIRST_RECORD = 5
    LAST_RECORD = 6


class RacpResponseCode(IntEnum):
    SUCCESS = 1
    OP_CODE_NOT_SUPPORTED = 2
    INVALID_OPERATOR = 3
    OPERATOR_NOT_SUPPORTED = 4
    INVALID_OPERAND = 5
    NO_RECORDS_FOUND = 6
    ABORT_UNSUCCESSFUL = 7
    PROCEDURE_NOT_COMPLETED = 8
    OPERAND_NOT_SUPPORTED = 9


#: Filter type 0x01: sequence number (glucose) / time offset (CGM), both uint16.
RACP_FILTER_SEQUENCE_NUMBER: Final = 0x01

_RECORD_REQUESTS: Final = frozenset(
    {
        RacpOpCode.REPORT_STORED_RECORDS,
        RacpOpCode.DELETE_STORED_RECORDS,
        RacpOpCode.REPORT_NUMBER_OF_STORED_RECORDS,
    }
)
_OPERAND_COUNT: Final[dict[RacpOperator, int]] = {
    RacpOperator.ALL_RECORDS: 0,
    RacpOperator.LESS_THAN_OR_EQUAL_TO: 1,
    RacpOperator.GREATER_THAN_OR_EQUAL_TO: 1,
    RacpOperator.WITHIN_RANGE_OF: 2,
    RacpOperator.FIRST_RECORD: 0,
    RacpOperator.LAST_RECORD: 0,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class RacpMessage:
    """One RACP value, request or response.

    Requests 1/2/4: ``operator`` (not NULL) and, for ≤/≥/range, ``filter_type`` with one or two
    uint16 ``filter_values``. Abort 3: operator NULL, no operand. Number-of-records response 5:
    ``number_of_records``. Response code 6: ``request_op_code`` and ``response_code``.
    """

    op_code: RacpOpCode
    operator: RacpOperator = RacpOperator.NULL
    filter_type: int | None = None
    filter_values: tuple[int, ...] = ()
    number_of_records: int | None = None
    request_op_code: RacpOpCode | None = None
    response_code: RacpResponseCode | None = None


def _enum_at(r: Reader, enum: type[IntEnum], field: str) -> int:
    offset = r.pos
    raw = r.u8(field)
    try:
        enum(raw)
    except ValueError:
        raise DecodeError(offset, f"a known {field}, got {raw:#04x}", field=field) from None
    return raw


def decode_racp(data: bytes) -> RacpMessage:
    r = Reader(data)
    op = RacpOpCode(_enum_at(r, RacpOpCode, "op code"))
    operator_at = r.pos
    operator = RacpOperator(_enum_at(r, RacpOperator, "operator"))
    if op in _RECORD_REQUESTS:
        if operator is RacpOperator.NULL:
            raise DecodeError(operator_at, "an operator other than NULL", field="operator")
        count = _OPERAND_COUNT[operator]
        filter_type = None
        values: tuple[int, ...] = ()
        if count:
            ft_at = r.pos
            filter_type = r.u8("filter type")
            if filter_type != RACP_FILTER_SEQUENCE_NUMBER:
                raise DecodeError(
                    ft_at, f"filter type 0x01, got {filter_type:#04x}", field="filter type"
                )
            values = tuple(r.u16("filter value") for _ in range(count))
        r.end()
        return RacpMessage(
            op_code=op, operator=operator, filter_type=filter_type, filter_values=values
        )
    if operator is not RacpOperator.NULL:
        raise DecodeError(operator_at, f"operator NULL, got {operator:#04x}", field="operator")
    if op is RacpOpCode.ABORT_OPERATION:
        r.end()
        return RacpMessage(op_code=op)
    if op is RacpOpCode.NUMBER_OF_STORED_RECORDS_RESPONSE:
        n = r.u16("number of records")
        r.end()
        return RacpMessage(op_code=op, number_of_records=n)
    request = RacpOpCode(_enum_at(r, RacpOpCode, "request op code"))
    code = RacpResponseCode(_enum_at(r, RacpResponseCode, "response code"))
    r.end()
    return RacpMessage(op_code=op, request_op_code=request, response_code=code)


def encode_racp(msg: RacpMessage) -> bytes:
    op = msg.op_code
    out = bytearray([op, msg.operator])
    if op in _RECORD_REQUESTS:
        if msg.operator is RacpOperator.NULL:
            raise EncodeError(f"{op.name} needs an operator")
        count = _OPERAND_COUNT[msg.operator]
        if len(msg.filter_values) != count:
            raise EncodeError(f"{msg.operator.name} takes {count} filter values")
        if count:
            if msg.filter_type != RACP_FILTER_SEQUENCE_NUMBER:
                raise EncodeError("only filter type 0x01 (uint16) is supported")
            out.append(msg.filter_type)
            for v in msg.filter_values:
                out += _u16(v, "filter value")
        elif msg.filter_type is not None:
            raise EncodeError(f"{msg.operator.name} takes no filter")
        return bytes(out)
    if msg.operator is not RacpOperator.NULL or msg.filter_values:
        raise EncodeError(f"{op.name} takes operator NULL and no filter")
    if op is RacpOpCode.NUMBER_OF_STORED_RECORDS_RESPONSE:
        if msg.number_of_records is None:
            raise EncodeError("number_of_records is required")
        out += _u16(msg.number_of_records, "number of records")
    elif op is RacpOpCode.RESPONSE_CODE:
        if msg.request_op_code is None or msg.response_code is None:
            raise EncodeError("request_op_code and response_code are required")
        out += bytes([msg.request_op_code, msg.response_code])
    return bytes(out)


def racp_report_all() -> RacpMessage:
    """``01 01``: report all stored records."""
    return RacpMessage(op_code=RacpOpCode.REPORT_STORED_RECORDS, operator=RacpOperator.ALL_RECORDS)


def racp_report_count_all() -> RacpMessage:
    """``04 01``: report the number of all stored records."""
    return RacpMessage(
        op_code=RacpOpCode.REPORT_NUMBER_OF_STORED_RECORDS, operator=RacpOperator.ALL_RECORDS
    )


def racp_report_from_sequence(n: int) -> RacpMessage:
    """``01 03 01 <n u16>``: records with sequence number ≥ n (incremental download)."""
    return RacpMessage(
        op_code=RacpOpCode.REPORT_STORED_RECORDS,
        operator=RacpOperator.GREATER_THAN_OR_EQUAL_TO,
        filter_type=RACP_FILTER_SEQUENCE_NUMBER,
        filter_values=(_check(n, 0, 0xFFFF, "sequence number"),),
    )


def racp_abort() -> RacpMessage:
    """``03 00``: abort the operation in progress."""
    return RacpMessage(op_code=RacpOpCode.ABORT_OPERATION)
