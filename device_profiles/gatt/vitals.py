"""Vital-sign GATT characteristics: blood pressure, temperature, weight, body composition, PLX.

Theory of operation (PROTOCOLS.md, "Vital-sign services" and "Device clocks and identity"):
each characteristic value is one flags field followed by fixed fields and then optional fields
in flag-bit order, all little-endian. ``decode_*`` reads one value front to back with a
bounds-checked :class:`Reader` and returns a frozen value type; ``encode_*`` turns a value type
back into bytes for simulators. No BLE stack, no I/O.

Rules applied everywhere:

* Reserved *flag* bits are tolerated (real devices set them) and kept in ``reserved_flags`` /
  ``reserved_*_bits`` so a value re-encodes to the same bytes.
* Reserved *enumeration* values, the reserved SFLOAT/FLOAT value, impossible dates, short and
  over-long values raise :class:`DecodeError` with the byte offset; nothing else escapes.
* IEEE 11073 specials (NaN, NRes, ±INF) stay :class:`Number` specials, never numbers.
* Fixed-point fields (weight, BMI, ...) keep their raw integer beside the exact
  :class:`~decimal.Decimal` value; "measurement unsuccessful" (0xFFFF) is ``None``.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Final, TypedDict, TypeVar

from device_profiles.gatt.ieee11073 import (
    DateTime,
    DecodeError,
    EncodeError,
    Number,
    Reader,
    Special,
    date_time_ok,
    decode_sfloat,
    encode_float,
    encode_sfloat,
    new_date_time,
    slot_setters,
)

__all__ = [
    "UNKNOWN_USER",
    "AdjustReason",
    "BloodPressureMeasurement",
    "BloodPressureStatus",
    "BodyCompositionMeasurement",
    "CurrentTime",
    "PlxContinuous",
    "PlxDeviceSensorStatus",
    "PlxFeatures",
    "PlxMeasurementStatus",
    "PlxSpotCheck",
    "PlxSupportedFeature",
    "PulseRateRange",
    "Quantity",
    "SpO2PulseRate",
    "TemperatureMeasurement",
    "TemperatureType",
    "WeightMeasurement",
    "WeightScaleFeature",
    "WeightScaleFeatureBit",
    "decode_battery_level",
    "decode_blood_pressure",
    "decode_body_composition",
    "decode_current_time",
    "decode_dis_string",
    "decode_intermediate_cuff_pressure",
    "decode_plx_continuous",
    "decode_plx_features",
    "decode_plx_spot_check",
    "decode_temperature",
    "decode_weight",
    "decode_weight_scale_feature",
    "encode_battery_level",
    "encode_blood_pressure",
    "encode_body_composition",
    "encode_current_time",
    "encode_dis_string",
    "encode_intermediate_cuff_pressure",
    "encode_plx_continuous",
    "encode_plx_features",
    "encode_plx_spot_check",
    "encode_temperature",
    "encode_weight",
    "encode_weight_scale_feature",
]

#: User index 0xFF: "unknown user" (Blood Pressure, Weight Scale, Body Composition).
UNKNOWN_USER: Final = 0xFF
#: Weight / body fat 0xFFFF: "measurement unsuccessful".
_UNSUCCESSFUL: Final = 0xFFFF

MMHG: Final = "mm[Hg]"
KPA: Final = "kPa"
CELSIUS: Final = "Cel"
FAHRENHEIT: Final = "[degF]"
KG: Final = "kg"
LB: Final = "[lb_av]"
METRE: Final = "m"
INCH: Final = "[in_i]"
PERCENT: Final = "%"
PER_MINUTE: Final = "/min"
BMI_UNIT: Final = "kg/m2"
OHM: Final = "Ohm"
KJ: Final = "kJ"

_E = TypeVar("_E", bound=StrEnum)


# --- shared helpers ---------------------------------------------------------------------------


def _bits_to_set(value: int, table: Mapping[_E, int]) -> frozenset[_E]:
    return frozenset(member for member, bit in table.items() if value >> bit & 1)


def _set_to_bits(members: frozenset[_E], table: Mapping[_E, int]) -> int:
    out = 0
    for member in members:
        out |= 1 << table[member]
    return out


def _mask(table: Mapping[_E, int]) -> int:
    return _set_to_bits(frozenset(table), table)


def _sfloat(r: Reader, field: str) -> Number:
    start = r.pos
    n = r.sfloat(field)
    if n.special is Special.RESERVED:
        raise DecodeError(start, "an SFLOAT other than the reserved value", field=field)
    return n


def _float32(r: Reader, field: str) -> Number:
    start = r.pos
    n = r.float32(field)
    if n.special is Special.RESERVED:
        raise DecodeError(start, "a FLOAT other than the reserved value", field=field)
    return n


class _Writer:
    """Little-endian writes that refuse values the field cannot carry (:class:`EncodeError`)."""

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def uint(self, value: int, size: int, field: str) -> None:
        if not 0 <= value < 1 << (8 * size):
            raise EncodeError(f"{field}: {value} does not fit {8 * size} unsigned bits")
        self.buf += value.to_bytes(size, "little")

    def sfloat(self, n: Number, field: str) -> None:
        if n.special is Special.RESERVED:
            raise EncodeError(f"{field}: the reserved SFLOAT value is not a measurement")
        self.uint(encode_sfloat(n), 2, field)

    def float32(self, n: Number, field: str) -> None:
        if n.special is Special.RESERVED:
            raise EncodeError(f"{field}: the reserved FLOAT value is not a measurement")
        self.uint(encode_float(n), 4, field)

    def date_time(self, dt: DateTime, field: str) -> None:
        packed = dt.pack() if 0 <= dt.year <= 0xFFFF else b""
        # Validate through the decoder's own rules so we never send what we would refuse.
        try:
            Reader(packed).date_time(field)
        except DecodeError as exc:
            raise EncodeError(f"{field}: {dt} is not a valid date time") from exc
        self.buf += packed

    def bytes(self) -> bytes:
        return bytes(self.buf)


def _reserved(value: int, defined_mask: int, size: int, field: str) -> int:
    if value & defined_mask or not 0 <= value < 1 << (8 * size):
        raise EncodeError(f"{field}: {value:#x} is not made of reserved bits only")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Quantity:
    """A fixed-point field: ``raw`` x ``resolution`` in ``unit``, exactly (70.005 stays 70.005)."""

    raw: int
    resolution: Decimal
    unit: str

    @property
    def value(self) -> Decimal:
        return self.raw * self.resolution


_MASS_RES: Final = {False: (Decimal("0.005"), KG), True: (Decimal("0.01"), LB)}
_HEIGHT_RES: Final = {False: (Decimal("0.001"), METRE), True: (Decimal("0.1"), INCH)}
_BMI_RES: Final = (Decimal("0.1"), BMI_UNIT)
_PERCENT_RES: Final = (Decimal("0.1"), PERCENT)
_IMPEDANCE_RES: Final = (Decimal("0.1"), OHM)
_KJ_RES: Final = (Decimal(1), KJ)


def _quantity(raw: int, res: tuple[Decimal, str]) -> Quantity:
    return Quantity(raw=raw, resolution=res[0], unit=res[1])


def _put_quantity(w: _Writer, q: Quantity, res: tuple[Decimal, str], field: str) -> None:
    if (q.resolution, q.unit) != res:
        raise EncodeError(
            f"{field}: resolution {q.resolution} {q.unit} does not match the flags "
            f"({res[0]} {res[1]})"
        )
    w.uint(q.raw, 2, field)


# --- Blood Pressure 0x2A35 / Intermediate Cuff Pressure 0x2A36 ------------------------------


class BloodPressureStatus(StrEnum):
    BODY_MOVEMENT_DETECTED = "body-movement-detected"
    CUFF_TOO_LOOSE = "cuff-too-loose"
    IRREGULAR_PULSE_DETECTED = "irregular-pulse-detected"
    IMPROPER_MEASUREMENT_POSITION = "improper-measurement-position"


class PulseRateRange(StrEnum):
    WITHIN_RANGE = "within-range"
    EXCEEDS_UPPER_LIMIT = "exceeds-upper-limit"
    BELOW_LOWER_LIMIT = "below-lower-limit"


_BP_STATUS_BITS: Final = {
    BloodPressureStatus.BODY_MOVEMENT_DETECTED: 0,
    BloodPressureStatus.CUFF_TOO_LOOSE: 1,
    BloodPressureStatus.IRREGULAR_PULSE_DETECTED: 2,
    BloodPressureStatus.IMPROPER_MEASUREMENT_POSITION: 5,
}
_PULSE_RANGE: Final = (
    PulseRateRange.WITHIN_RANGE,
    PulseRateRange.EXCEEDS_UPPER_LIMIT,
    PulseRateRange.BELOW_LOWER_LIMIT,
)
_BP_STATUS_DEFINED: Final = _mask(_BP_STATUS_BITS) | 0b11 << 3
_BP_FLAGS_DEFINED: Final = 0x1F


@dataclass(frozen=True, slots=True, kw_only=True)
class BloodPressureMeasurement:
    """0x2A35 / 0x2A36. For intermediate cuff pressure, ``systolic`` is the cuff pressure."""

    unit: str  # "mm[Hg]" or "kPa"
    systolic: Number
    diastolic: Number
    mean_arterial_pressure: Number
    time_stamp: DateTime | None = None
    pulse_rate: Number | None = None  # beats per minute
    user_id: int | None = None  # UNKNOWN_USER = unknown
    measurement_status: frozenset[BloodPressureStatus] | None = None
    pulse_rate_range: PulseRateRange | None = None  # present with measurement_status
    reserved_status_bits: int = 0
    reserved_flags: int = 0

    @property
    def cuff_pressure(self) -> Number:
        return self.systolic


class _BpLayout:
    """Everything a flags octet decides, computed once per raw flags value."""

    __slots__ = (
        "has_pulse",
        "has_status",
        "has_time",
        "has_user",
        "reserved_flags",
        "size",
        "unit",
        "unpack",
    )

    def __init__(self, flags: int) -> None:
        self.unit = KPA if flags & 0x01 else MMHG
        self.has_time = bool(flags & 0x02)
        self.has_pulse = bool(flags & 0x04)
        self.has_user = bool(flags & 0x08)
        self.has_status = bool(flags & 0x10)
        self.reserved_flags = flags & ~_BP_FLAGS_DEFINED
        fmt = (
            "<xHHH"
            + ("HBBBBB" if self.has_time else "")
            + ("H" if self.has_pulse else "")
            + ("B" if self.has_user else "")
            + ("H" if self.has_status else "")
        )
        st = struct.Struct(fmt)
        self.size = st.size
        self.unpack = st.unpack


_BP_LAYOUTS: Final = tuple(_BpLayout(flags) for flags in range(256))
_SFLOAT_RESERVED_RAW: Final = 0x0801  # the only raw SFLOAT that decodes to Special.RESERVED
_BP_STATUS_CACHE: Final[dict[int, tuple[frozenset[BloodPressureStatus], PulseRateRange, int]]] = {}
_new: Final = object.__new__
(
    _bp_unit,
    _bp_systolic,
    _bp_diastolic,
    _bp_mean,
    _bp_time_stamp,
    _bp_pulse_rate,
    _bp_user_id,
    _bp_status,
    _bp_pulse_range,
    _bp_reserved_status,
    _bp_reserved_flags,
) = slot_setters(
    BloodPressureMeasurement,
    (
        "unit",
        "systolic",
        "diastolic",
        "mean_arterial_pressure",
        "time_stamp",
        "pulse_rate",
        "user_id",
        "measurement_status",
        "pulse_rate_range",
        "reserved_status_bits",
        "reserved_flags",
    ),
)


def decode_blood_pressure(data: bytes) -> BloodPressureMeasurement:
    data = bytes(data)
    return _decode_blood_pressure_fast(data) or _decode_blood_pressure_careful(data)


def _decode_blood_pressure_fast(data: bytes) -> BloodPressureMeasurement | None:
    """Well-formed values only, one ``unpack`` per flags layout; None → the careful path."""
    if not data:
        return None
    layout = _BP_LAYOUTS[data[0]]
    if len(data) != layout.size:
        return None
    v = layout.unpack(data)
    if _SFLOAT_RESERVED_RAW in v[0:3]:
        return None
    i = 3
    time_stamp: DateTime | None = None
    if layout.has_time:
        year, month, day, hour, minute, second = v[3:9]
        if not date_time_ok(year, month, day, hour, minute, second):
            return None
        time_stamp = new_date_time(year, month, day, hour, minute, second)
        i = 9
    pulse: Number | None = None
    if layout.has_pulse:
        if v[i] == _SFLOAT_RESERVED_RAW:
            return None
        pulse = decode_sfloat(v[i])
        i += 1
    user: int | None = None
    if layout.has_user:
        user = v[i]
        i += 1
    status: frozenset[BloodPressureStatus] | None = None
    pulse_range: PulseRateRange | None = None
    reserved_status = 0
    if layout.has_status:
        raw = v[i]
        hit = _BP_STATUS_CACHE.get(raw)
        if hit is None:
            range_code = raw >> 3 & 0b11
            if range_code >= len(_PULSE_RANGE):
                return None
            hit = (
                _bits_to_set(raw, _BP_STATUS_BITS),
                _PULSE_RANGE[range_code],
                raw & ~_BP_STATUS_DEFINED,
            )
            _BP_STATUS_CACHE[raw] = hit  # keys are uint16: at most 65 536 entries
        status, pulse_range, reserved_status = hit
    # BloodPressureMeasurement(...) with the same eleven fields, without frozen __setattr__.
    m: BloodPressureMeasurement = _new(BloodPressureMeasurement)
    _bp_unit(m, layout.unit)
    _bp_systolic(m, decode_sfloat(v[0]))
    _bp_diastolic(m, decode_sfloat(v[1]))
    _bp_mean(m, decode_sfloat(v[2]))
    _bp_time_stamp(m, time_stamp)
    _bp_pulse_rate(m, pulse)
    _bp_user_id(m, user)
    _bp_status(m, status)
    _bp_pulse_range(m, pulse_range)
    _bp_reserved_status(m, reserved_status)
    _bp_reserved_flags(m, layout.reserved_flags)
    return m


def _decode_blood_pressure_careful(data: bytes) -> BloodPressureMeasurement:
    """Field by field through :class:`Reader`: the reference, and the source of every error."""
    r = Reader(data)
    flags = r.u8("flags")
    systolic = _sfloat(r, "systolic")
    diastolic = _sfloat(r, "diastolic")
    mean = _sfloat(r, "mean arterial pressure")
    time_stamp = r.date_time("time stamp") if flags & 0x02 else None
    pulse = _sfloat(r, "pulse rate") if flags & 0x04 else None
    user = r.u8("user id") if flags & 0x08 else None
    status: frozenset[BloodPressureStatus] | None = None
    pulse_range: PulseRateRange | None = None
    reserved_status = 0
    if flags & 0x10:
        start = r.pos
        raw = r.u16("measurement status")
        range_code = raw >> 3 & 0b11
        if range_code >= len(_PULSE_RANGE):
            raise DecodeError(
                start,
                f"pulse rate range 0-2, got reserved {range_code}",
                field="measurement status",
            )
        pulse_range = _PULSE_RANGE[range_code]
        status = _bits_to_set(raw, _BP_STATUS_BITS)
        reserved_status = raw & ~_BP_STATUS_DEFINED
    r.end()
    return BloodPressureMeasurement(
        unit=KPA if flags & 0x01 else MMHG,
        systolic=systolic,
        diastolic=diastolic,
        mean_arterial_pressure=mean,
        time_stamp=time_stamp,
        pulse_rate=pulse,
        user_id=user,
        measurement_status=status,
        pulse_rate_range=pulse_range,
        reserved_status_bits=reserved_status,
        reserved_flags=flags & ~_BP_FLAGS_DEFINED,
    )


def encode_blood_pressure(value: BloodPressureMeasurement) -> bytes:
    if value.unit not in (MMHG, KPA):
        raise EncodeError(f"blood pressure unit must be {MMHG!r} or {KPA!r}, not {value.unit!r}")
    if (value.measurement_status is None) != (value.pulse_rate_range is None):
        raise EncodeError("measurement status and pulse rate range go together")
    flags = _reserved(value.reserved_flags, _BP_FLAGS_DEFINED, 1, "reserved flags")
    flags |= (
        (value.unit == KPA)
        | (value.time_stamp is not None) << 1
        | (value.pulse_rate is not None) << 2
        | (value.user_id is not None) << 3
        | (value.measurement_status is not None) << 4
    )
    w = _Writer()
    w.uint(flags, 1, "flags")
    w.sfloat(value.systolic, "systolic")
    w.sfloat(value.diastolic, "diastolic")
    w.sfloat(value.mean_arterial_pressure, "mean arterial pressure")
    if value.time_stamp is not None:
        w.date_time(value.time_stamp, "time stamp")
    if value.pulse_rate is not None:
        w.sfloat(value.pulse_rate, "pulse rate")
    if value.user_id is not None:
        w.uint(value.user_id, 1, "user id")
    if value.measurement_status is not None and value.pulse_rate_range is not None:
        status = _set_to_bits(value.measurement_status, _BP_STATUS_BITS)
        status |= _PULSE_RANGE.index(value.pulse_rate_range) << 3
        status |= _reserved(value.reserved_status_bits, _BP_STATUS_DEFINED, 2, "reserved status")
        w.uint(status, 2, "measurement status")
    elif value.reserved_status_bits:
        raise EncodeError("reserved status bits without a measurement status")
    return w.bytes()


def decode_intermediate_cuff_pressure(data: bytes) -> BloodPressureMeasurement:
    """0x2A36 has the 0x2A35 layout (diastolic and mean are usually NaN)."""
    return decode_blood_pressure(data)


def encode_intermediate_cuff_pressure(value: BloodPressureMeasurement) -> bytes:
    return encode_blood_pressure(value)


# --- Temperature Measurement 0x2A1C -----------------------------------------------------------


class TemperatureType(StrEnum):
    ARMPIT = "armpit"
    BODY = "body"
    EAR = "ear"
    FINGER = "finger"
    GASTROINTESTINAL_TRACT = "gastrointestinal-tract"
    MOUTH = "mouth"
    RECTUM = "rectum"
    TOE = "toe"
    TYMPANUM = "tympanum"  # ear drum


_TEMPERATURE_TYPES: Final = tuple(TemperatureType)  # code = index + 1
_TEMP_FLAGS_DEFINED: Final = 0x07


@dataclass(frozen=True, slots=True, kw_only=True)
class TemperatureMeasurement:
    unit: str  # "Cel" or "[degF]"
    temperature: Number
    time_stamp: DateTime | None = None
    temperature_type: TemperatureType | None = None
    reserved_flags: int = 0


def decode_temperature(data: bytes) -> TemperatureMeasurement:
    r = Reader(data)
    flags = r.u8("flags")
    temperature = _float32(r, "temperature")
    time_stamp = r.date_time("time stamp") if flags & 0x02 else None
    kind: TemperatureType | None = None
    if flags & 0x04:
        start = r.pos
        code = r.u8("temperature type")
        if not 1 <= code <= len(_TEMPERATURE_TYPES):
            raise DecodeError(start, f"temperature type 1-9, got {code}", field="temperature type")
        kind = _TEMPERATURE_TYPES[code - 1]
    r.end()
    return TemperatureMeasurement(
        unit=FAHRENHEIT if flags & 0x01 else CELSIUS,
        temperature=temperature,
        time_stamp=time_stamp,
        temperature_type=kind,
        reserved_flags=flags & ~_TEMP_FLAGS_DEFINED,
    )


def encode_temperature(value: TemperatureMeasurement) -> bytes:
    if value.unit not in (CELSIUS, FAHRENHEIT):
        raise EncodeError(f"temperature unit must be {CELSIUS!r} or {FAHRENHEIT!r}")
    flags = _reserved(value.reserved_flags, _TEMP_FLAGS_DEFINED, 1, "reserved flags")
    flags |= (
        (value.unit == FAHRENHEIT)
        | (value.time_stamp is not None) << 1
        | (value.temperature_type is not None) << 2
    )
    w = _Writer()
    w.uint(flags, 1, "flags")
    w.float32(value.temperature, "temperature")
    if value.time_stamp is not None:
        w.date_time(value.time_stamp, "time stamp")
    if value.temperature_type is not None:
        w.uint(_TEMPERATURE_TYPES.index(value.temperature_type) + 1, 1, "temperature type")
    return w.bytes()


# --- Weight Measurement 0x2A9D / Weight Scale Feature 0x2A9E ----------------------------------

_WEIGHT_FLAGS_DEFINED: Final = 0x0F


@dataclass(frozen=True, slots=True, kw_only=True)
class WeightMeasurement:
    """``weight`` is None when the scale reported "measurement unsuccessful" (0xFFFF)."""

    imperial: bool  # masses in [lb_av] and heights in [in_i], else kg and m
    weight: Quantity | None
    time_stamp: DateTime | None = None
    user_id: int | None = None
    bmi: Quantity | None = None  # present together with height
    height: Quantity | None = None
    reserved_flags: int = 0

    @property
    def measurement_unsuccessful(self) -> bool:
        return self.weight is None


def decode_weight(data: bytes) -> WeightMeasurement:
    r = Reader(data)
    flags = r.u8("flags")
    imperial = bool(flags & 0x01)
    raw_weight = r.u16("weight")
    time_stamp = r.date_time("time stamp") if flags & 0x02 else None
    user = r.u8("user id") if flags & 0x04 else None
    bmi = height = None
    if flags & 0x08:
        bmi = _quantity(r.u16("BMI"), _BMI_RES)
        height = _quantity(r.u16("height"), _HEIGHT_RES[imperial])
    r.end()
    return WeightMeasurement(
        imperial=imperial,
        weight=None if raw_weight == _UNSUCCESSFUL else _quantity(raw_weight, _MASS_RES[imperial]),
        time_stamp=time_stamp,
        user_id=user,
        bmi=bmi,
        height=height,
        reserved_flags=flags & ~_WEIGHT_FLAGS_DEFINED,
    )


def encode_weight(value: WeightMeasurement) -> bytes:
    if (value.bmi is None) != (value.height is None):
        raise EncodeError("BMI and height are sent together")
    flags = _reserved(value.reserved_flags, _WEIGHT_FLAGS_DEFINED, 1, "reserved flags")
    flags |= (
        value.imperial
        | (value.time_stamp is not None) << 1
        | (value.user_id is not None) << 2
        | (value.bmi is not None) << 3
    )
    w = _Writer()
    w.uint(flags, 1, "flags")
    if value.weight is None:
        w.uint(_UNSUCCESSFUL, 2, "weight")
    else:
        if value.weight.raw == _UNSUCCESSFUL:
            raise EncodeError("weight raw 0xFFFF means 'unsuccessful'; use weight=None")
        _put_quantity(w, value.weight, _MASS_RES[value.imperial], "weight")
    if value.time_stamp is not None:
        w.date_time(value.time_stamp, "time stamp")
    if value.user_id is not None:
        w.uint(value.user_id, 1, "user id")
    if value.bmi is not None and value.height is not None:
        _put_quantity(w, value.bmi, _BMI_RES, "BMI")
        _put_quantity(w, value.height, _HEIGHT_RES[value.imperial], "height")
    return w.bytes()


class WeightScaleFeatureBit(StrEnum):
    TIME_STAMP_SUPPORTED = "time-stamp-supported"
    MULTIPLE_USERS_SUPPORTED = "multiple-users-supported"
    BMI_SUPPORTED = "bmi-supported"


_WSF_BITS: Final = {
    WeightScaleFeatureBit.TIME_STAMP_SUPPORTED: 0,
    WeightScaleFeatureBit.MULTIPLE_USERS_SUPPORTED: 1,
    WeightScaleFeatureBit.BMI_SUPPORTED: 2,
}
#: Weight resolution codes 1-7: (kg, lb); 0 = not specified, 8-15 reserved.
_WEIGHT_RESOLUTIONS: Final = (
    (Decimal("0.5"), Decimal(1)),
    (Decimal("0.2"), Decimal("0.5")),
    (Decimal("0.1"), Decimal("0.2")),
    (Decimal("0.05"), Decimal("0.1")),
    (Decimal("0.02"), Decimal("0.05")),
    (Decimal("0.01"), Decimal("0.02")),
    (Decimal("0.005"), Decimal("0.01")),
)
#: Height resolution codes 1-3: (m, in); 0 = not specified, 4-7 reserved.
_HEIGHT_RESOLUTIONS: Final = (
    (Decimal("0.01"), Decimal(1)),
    (Decimal("0.005"), Decimal("0.5")),
    (Decimal("0.001"), Decimal("0.1")),
)
_WSF_DEFINED: Final = 0x3FF


@dataclass(frozen=True, slots=True, kw_only=True)
class WeightScaleFeature:
    """Resolution codes describe the scale's precision, not the encoding (always 0.005 kg)."""

    features: frozenset[WeightScaleFeatureBit]
    weight_resolution: int  # 0 = not specified, 1-7 per spec
    height_resolution: int  # 0 = not specified, 1-3 per spec
    reserved_bits: int = 0

    @property
    def weight_resolution_kg(self) -> Decimal | None:
        return (
            _WEIGHT_RESOLUTIONS[self.weight_resolution - 1][0] if self.weight_resolution else None
        )

    @property
    def weight_resolution_lb(self) -> Decimal | None:
        return (
            _WEIGHT_RESOLUTIONS[self.weight_resolution - 1][1] if self.weight_resolution else None
        )

    @property
    def height_resolution_m(self) -> Decimal | None:
        return (
            _HEIGHT_RESOLUTIONS[self.height_resolution - 1][0] if self.height_resolution else None
        )

    @property
    def height_resolution_in(self) -> Decimal | None:
        return (
            _HEIGHT_RESOLUTIONS[self.height_resolution - 1][1] if self.height_resolution else None
        )


def decode_weight_scale_feature(data: bytes) -> WeightScaleFeature:
    r = Reader(data)
    raw = r.u32("weight scale feature")
    r.end()
    weight_res = raw >> 3 & 0xF
    height_res = raw >> 7 & 0x7
    if weight_res > len(_WEIGHT_RESOLUTIONS):
        raise DecodeError(0, f"weight resolution 0-7, got {weight_res}", field="weight resolution")
    if height_res > len(_HEIGHT_RESOLUTIONS):
        raise DecodeError(0, f"height resolution 0-3, got {height_res}", field="height resolution")
    return WeightScaleFeature(
        features=_bits_to_set(raw, _WSF_BITS),
        weight_resolution=weight_res,
        height_resolution=height_res,
        reserved_bits=raw & ~_WSF_DEFINED,
    )


def encode_weight_scale_feature(value: WeightScaleFeature) -> bytes:
    if not 0 <= value.weight_resolution <= len(_WEIGHT_RESOLUTIONS):
        raise EncodeError(f"weight resolution {value.weight_resolution} is not 0-7")
    if not 0 <= value.height_resolution <= len(_HEIGHT_RESOLUTIONS):
        raise EncodeError(f"height resolution {value.height_resolution} is not 0-3")
    raw = _set_to_bits(value.features, _WSF_BITS)
    raw |= value.weight_resolution << 3 | value.height_resolution << 7
    raw |= _reserved(value.reserved_bits, _WSF_DEFINED, 4, "reserved bits")
    w = _Writer()
    w.uint(raw, 4, "weight scale feature")
    return w.bytes()


# --- Body Composition Measurement 0x2A9C ------------------------------------------------------

_BC_FLAGS_DEFINED: Final = 0x1FFF


@dataclass(frozen=True, slots=True, kw_only=True)
class BodyCompositionMeasurement:
    """``body_fat_percentage`` is None when the device reported "measurement unsuccessful"."""

    imperial: bool
    body_fat_percentage: Quantity | None
    time_stamp: DateTime | None = None
    user_id: int | None = None
    basal_metabolism: Quantity | None = None  # kJ
    muscle_percentage: Quantity | None = None
    muscle_mass: Quantity | None = None
    fat_free_mass: Quantity | None = None
    soft_lean_mass: Quantity | None = None
    body_water_mass: Quantity | None = None
    impedance: Quantity | None = None  # Ohm
    weight: Quantity | None = None
    height: Quantity | None = None
    multiple_packet_measurement: bool = False
    reserved_flags: int = 0


# Optional u16 fields after user id, in flag-bit order: (bit, attribute, resolution by imperial).
_BC_FIELDS: Final[tuple[tuple[int, str, Mapping[bool, tuple[Decimal, str]]], ...]] = (
    (3, "basal_metabolism", {False: _KJ_RES, True: _KJ_RES}),
    (4, "muscle_percentage", {False: _PERCENT_RES, True: _PERCENT_RES}),
    (5, "muscle_mass", _MASS_RES),
    (6, "fat_free_mass", _MASS_RES),
    (7, "soft_lean_mass", _MASS_RES),
    (8, "body_water_mass", _MASS_RES),
    (9, "impedance", {False: _IMPEDANCE_RES, True: _IMPEDANCE_RES}),
    (10, "weight", _MASS_RES),
    (11, "height", _HEIGHT_RES),
)


def decode_body_composition(data: bytes) -> BodyCompositionMeasurement:
    r = Reader(data)
    flags = r.u16("flags")
    imperial = bool(flags & 0x0001)
    raw_fat = r.u16("body fat percentage")
    time_stamp = r.date_time("time stamp") if flags & 0x0002 else None
    user = r.u8("user id") if flags & 0x0004 else None
    optional: dict[str, Quantity] = {}
    for bit, name, res in _BC_FIELDS:
        if flags >> bit & 1:
            optional[name] = _quantity(r.u16(name.replace("_", " ")), res[imperial])
    r.end()
    return BodyCompositionMeasurement(
        imperial=imperial,
        body_fat_percentage=None if raw_fat == _UNSUCCESSFUL else _quantity(raw_fat, _PERCENT_RES),
        time_stamp=time_stamp,
        user_id=user,
        multiple_packet_measurement=bool(flags & 0x1000),
        reserved_flags=flags & ~_BC_FLAGS_DEFINED,
        **optional,
    )


def encode_body_composition(value: BodyCompositionMeasurement) -> bytes:
    flags = _reserved(value.reserved_flags, _BC_FLAGS_DEFINED, 2, "reserved flags")
    flags |= (
        value.imperial
        | (value.time_stamp is not None) << 1
        | (value.user_id is not None) << 2
        | value.multiple_packet_measurement << 12
    )
    present: list[tuple[str, Quantity, tuple[Decimal, str]]] = []
    for bit, name, by_system in _BC_FIELDS:
        q: Quantity | None = getattr(value, name)
        if q is not None:
            flags |= 1 << bit
            present.append((name, q, by_system[value.imperial]))
    w = _Writer()
    w.uint(flags, 2, "flags")
    if value.body_fat_percentage is None:
        w.uint(_UNSUCCESSFUL, 2, "body fat percentage")
    else:
        if value.body_fat_percentage.raw == _UNSUCCESSFUL:
            raise EncodeError("body fat raw 0xFFFF means 'unsuccessful'; use None")
        _put_quantity(w, value.body_fat_percentage, _PERCENT_RES, "body fat percentage")
    if value.time_stamp is not None:
        w.date_time(value.time_stamp, "time stamp")
    if value.user_id is not None:
        w.uint(value.user_id, 1, "user id")
    for name, q, res in present:
        _put_quantity(w, q, res, name)
    return w.bytes()


# --- Pulse oximetry (PLX) 0x2A5E / 0x2A5F / 0x2A60 --------------------------------------------


class PlxMeasurementStatus(StrEnum):
    MEASUREMENT_ONGOING = "measurement-ongoing"
    EARLY_ESTIMATED_DATA = "early-estimated-data"
    VALIDATED_DATA = "validated-data"
    FULLY_QUALIFIED_DATA = "fully-qualified-data"
    DATA_FROM_MEASUREMENT_STORAGE = "data-from-measurement-storage"
    DATA_FOR_DEMONSTRATION = "data-for-demonstration"
    DATA_FOR_TESTING = "data-for-testing"
    CALIBRATION_ONGOING = "calibration-ongoing"
    MEASUREMENT_UNAVAILABLE = "measurement-unavailable"
    QUESTIONABLE_MEASUREMENT_DETECTED = "questionable-measurement-detected"
    INVALID_MEASUREMENT_DETECTED = "invalid-measurement-detected"


class PlxDeviceSensorStatus(StrEnum):
    EXTENDED_DISPLAY_UPDATE_ONGOING = "extended-display-update-ongoing"
    EQUIPMENT_MALFUNCTION_DETECTED = "equipment-malfunction-detected"
    SIGNAL_PROCESSING_IRREGULARITY_DETECTED = "signal-processing-irregularity-detected"
    INADEQUATE_SIGNAL_DETECTED = "inadequate-signal-detected"
    POOR_SIGNAL_DETECTED = "poor-signal-detected"
    LOW_PERFUSION_DETECTED = "low-perfusion-detected"
    ERRATIC_SIGNAL_DETECTED = "erratic-signal-detected"
    NONPULSATILE_SIGNAL_DETECTED = "nonpulsatile-signal-detected"
    QUESTIONABLE_PULSE_DETECTED = "questionable-pulse-detected"
    SIGNAL_ANALYSIS_ONGOING = "signal-analysis-ongoing"
    SENSOR_INTERFERENCE_DETECTED = "sensor-interference-detected"
    SENSOR_UNCONNECTED_TO_USER = "sensor-unconnected-to-user"
    UNKNOWN_SENSOR_CONNECTED = "unknown-sensor-connected"
    SENSOR_DISPLACED = "sensor-displaced"
    SENSOR_MALFUNCTIONING = "sensor-malfunctioning"
    SENSOR_DISCONNECTED = "sensor-disconnected"


class PlxSupportedFeature(StrEnum):
    MEASUREMENT_STATUS_SUPPORT_PRESENT = "measurement-status-support-present"
    DEVICE_AND_SENSOR_STATUS_SUPPORT_PRESENT = "device-and-sensor-status-support-present"
    MEASUREMENT_STORAGE_FOR_SPOT_CHECK_SUPPORTED = "measurement-storage-for-spot-check-supported"
    TIMESTAMP_FOR_SPOT_CHECK_SUPPORTED = "timestamp-for-spot-check-supported"
    SPO2PR_FAST_SUPPORTED = "spo2pr-fast-supported"
    SPO2PR_SLOW_SUPPORTED = "spo2pr-slow-supported"
    PULSE_AMPLITUDE_INDEX_SUPPORTED = "pulse-amplitude-index-supported"
    MULTIPLE_BONDS_SUPPORTED = "multiple-bonds-supported"


_PLX_MS_BITS: Final = {m: i + 5 for i, m in enumerate(PlxMeasurementStatus)}
_PLX_DSS_BITS: Final = {m: i for i, m in enumerate(PlxDeviceSensorStatus)}
_PLX_FEATURE_BITS: Final = {m: i for i, m in enumerate(PlxSupportedFeature)}
_PLX_MS_DEFINED: Final = _mask(_PLX_MS_BITS)
_PLX_DSS_DEFINED: Final = _mask(_PLX_DSS_BITS)
_PLX_FEATURE_DEFINED: Final = _mask(_PLX_FEATURE_BITS)
_NOT_USABLE: Final = frozenset(
    {
        PlxMeasurementStatus.MEASUREMENT_UNAVAILABLE,
        PlxMeasurementStatus.QUESTIONABLE_MEASUREMENT_DETECTED,
        PlxMeasurementStatus.INVALID_MEASUREMENT_DETECTED,
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class SpO2PulseRate:
    spo2: Number  # %
    pulse_rate: Number  # /min
    spo2_unit: str = PERCENT
    pulse_rate_unit: str = PER_MINUTE


@dataclass(frozen=True, slots=True, kw_only=True)
class _PlxStatus:
    """Status fields shared by spot-check and continuous measurements."""

    measurement_status: frozenset[PlxMeasurementStatus] | None = None
    reserved_measurement_status_bits: int = 0
    device_and_sensor_status: frozenset[PlxDeviceSensorStatus] | None = None
    reserved_device_and_sensor_status_bits: int = 0
    pulse_amplitude_index: Number | None = None  # %
    reserved_flags: int = 0

    @property
    def clinically_usable(self) -> bool:
        """False when the device flags the reading unavailable, questionable or invalid."""
        return not (self.measurement_status or frozenset()) & _NOT_USABLE


@dataclass(frozen=True, slots=True, kw_only=True)
class PlxSpotCheck(_PlxStatus):
    reading: SpO2PulseRate
    time_stamp: DateTime | None = None
    device_clock_not_set: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class PlxContinuous(_PlxStatus):
    normal: SpO2PulseRate
    fast: SpO2PulseRate | None = None
    slow: SpO2PulseRate | None = None


def _read_pair(r: Reader, name: str) -> SpO2PulseRate:
    spo2 = _sfloat(r, f"{name} SpO2")
    return SpO2PulseRate(spo2=spo2, pulse_rate=_sfloat(r, f"{name} pulse rate"))


def _write_pair(w: _Writer, pair: SpO2PulseRate, name: str) -> None:
    if (pair.spo2_unit, pair.pulse_rate_unit) != (PERCENT, PER_MINUTE):
        raise EncodeError(f"{name}: SpO2 is in % and pulse rate in /min on the wire")
    w.sfloat(pair.spo2, f"{name} SpO2")
    w.sfloat(pair.pulse_rate, f"{name} pulse rate")


class _PlxTail(TypedDict, total=False):
    measurement_status: frozenset[PlxMeasurementStatus]
    reserved_measurement_status_bits: int
    device_and_sensor_status: frozenset[PlxDeviceSensorStatus]
    reserved_device_and_sensor_status_bits: int
    pulse_amplitude_index: Number


def _read_plx_tail(r: Reader, *, has_ms: bool, has_dss: bool, has_pai: bool) -> _PlxTail:
    out: _PlxTail = {}
    if has_ms:
        raw = r.u16("measurement status")
        out["measurement_status"] = _bits_to_set(raw, _PLX_MS_BITS)
        out["reserved_measurement_status_bits"] = raw & ~_PLX_MS_DEFINED
    if has_dss:
        raw = r.u24("device and sensor status")
        out["device_and_sensor_status"] = _bits_to_set(raw, _PLX_DSS_BITS)
        out["reserved_device_and_sensor_status_bits"] = raw & ~_PLX_DSS_DEFINED
    if has_pai:
        out["pulse_amplitude_index"] = _sfloat(r, "pulse amplitude index")
    r.end()
    return out


def _write_plx_tail(w: _Writer, value: _PlxStatus) -> None:
    if value.measurement_status is not None:
        raw = _set_to_bits(value.measurement_status, _PLX_MS_BITS)
        raw |= _reserved(
            value.reserved_measurement_status_bits, _PLX_MS_DEFINED, 2, "reserved status"
        )
        w.uint(raw, 2, "measurement status")
    elif value.reserved_measurement_status_bits:
        raise EncodeError("reserved measurement status bits without a measurement status")
    if value.device_and_sensor_status is not None:
        raw = _set_to_bits(value.device_and_sensor_status, _PLX_DSS_BITS)
        raw |= _reserved(
            value.reserved_device_and_sensor_status_bits, _PLX_DSS_DEFINED, 3, "reserved status"
        )
        w.uint(raw, 3, "device and sensor status")
    elif value.reserved_device_and_sensor_status_bits:
        raise EncodeError("reserved device status bits without a device and sensor status")
    if value.pulse_amplitude_index is not None:
        w.sfloat(value.pulse_amplitude_index, "pulse amplitude index")


_SPOT_FLAGS_DEFINED: Final = 0x1F
_CONT_FLAGS_DEFINED: Final = 0x1F


def decode_plx_spot_check(data: bytes) -> PlxSpotCheck:
    r = Reader(data)
    flags = r.u8("flags")
    reading = _read_pair(r, "spot-check")
    time_stamp = r.date_time("time stamp") if flags & 0x01 else None
    tail = _read_plx_tail(
        r, has_ms=bool(flags & 0x02), has_dss=bool(flags & 0x04), has_pai=bool(flags & 0x08)
    )
    return PlxSpotCheck(
        reading=reading,
        time_stamp=time_stamp,
        device_clock_not_set=bool(flags & 0x10),
        reserved_flags=flags & ~_SPOT_FLAGS_DEFINED,
        **tail,
    )


def encode_plx_spot_check(value: PlxSpotCheck) -> bytes:
    flags = _reserved(value.reserved_flags, _SPOT_FLAGS_DEFINED, 1, "reserved flags")
    flags |= (
        (value.time_stamp is not None)
        | (value.measurement_status is not None) << 1
        | (value.device_and_sensor_status is not None) << 2
        | (value.pulse_amplitude_index is not None) << 3
        | value.device_clock_not_set << 4
    )
    w = _Writer()
    w.uint(flags, 1, "flags")
    _write_pair(w, value.reading, "spot-check")
    if value.time_stamp is not None:
        w.date_time(value.time_stamp, "time stamp")
    _write_plx_tail(w, value)
    return w.bytes()


def decode_plx_continuous(data: bytes) -> PlxContinuous:
    r = Reader(data)
    flags = r.u8("flags")
    normal = _read_pair(r, "normal")
    fast = _read_pair(r, "fast") if flags & 0x01 else None
    slow = _read_pair(r, "slow") if flags & 0x02 else None
    tail = _read_plx_tail(
        r, has_ms=bool(flags & 0x04), has_dss=bool(flags & 0x08), has_pai=bool(flags & 0x10)
    )
    return PlxContinuous(
        normal=normal,
        fast=fast,
        slow=slow,
        reserved_flags=flags & ~_CONT_FLAGS_DEFINED,
        **tail,
    )


def encode_plx_continuous(value: PlxContinuous) -> bytes:
    flags = _reserved(value.reserved_flags, _CONT_FLAGS_DEFINED, 1, "reserved flags")
    flags |= (
        (value.fast is not None)
        | (value.slow is not None) << 1
        | (value.measurement_status is not None) << 2
        | (value.device_and_sensor_status is not None) << 3
        | (value.pulse_amplitude_index is not None) << 4
    )
    w = _Writer()
    w.uint(flags, 1, "flags")
    _write_pair(w, value.normal, "normal")
    if value.fast is not None:
        _write_pair(w, value.fast, "fast")
    if value.slow is not None:
        _write_pair(w, value.slow, "slow")
    _write_plx_tail(w, value)
    return w.bytes()


@dataclass(frozen=True, slots=True, kw_only=True)
class PlxFeatures:
    supported_features: frozenset[PlxSupportedFeature]
    measurement_status_support: frozenset[PlxMeasurementStatus] | None = None
    device_and_sensor_status_support: frozenset[PlxDeviceSensorStatus] | None = None
    reserved_feature_bits: int = 0
    reserved_measurement_status_support_bits: int = 0
    reserved_device_and_sensor_status_support_bits: int = 0


def decode_plx_features(data: bytes) -> PlxFeatures:
    r = Reader(data)
    raw = r.u16("supported features")
    ms = dss = None
    ms_reserved = dss_reserved = 0
    if raw & 0x01:
        ms_raw = r.u16("measurement status support")
        ms, ms_reserved = _bits_to_set(ms_raw, _PLX_MS_BITS), ms_raw & ~_PLX_MS_DEFINED
    if raw & 0x02:
        dss_raw = r.u24("device and sensor status support")
        dss, dss_reserved = _bits_to_set(dss_raw, _PLX_DSS_BITS), dss_raw & ~_PLX_DSS_DEFINED
    r.end()
    return PlxFeatures(
        supported_features=_bits_to_set(raw, _PLX_FEATURE_BITS),
        measurement_status_support=ms,
        device_and_sensor_status_support=dss,
        reserved_feature_bits=raw & ~_PLX_FEATURE_DEFINED,
        reserved_measurement_status_support_bits=ms_reserved,
        reserved_device_and_sensor_status_support_bits=dss_reserved,
    )


def encode_plx_features(value: PlxFeatures) -> bytes:
    has_ms = PlxSupportedFeature.MEASUREMENT_STATUS_SUPPORT_PRESENT in value.supported_features
    has_dss = (
        PlxSupportedFeature.DEVICE_AND_SENSOR_STATUS_SUPPORT_PRESENT in value.supported_features
    )
    if has_ms != (value.measurement_status_support is not None):
        raise EncodeError("measurement status support is present exactly when announced")
    if has_dss != (value.device_and_sensor_status_support is not None):
        raise EncodeError("device and sensor status support is present exactly when announced")
    w = _Writer()
    raw = _set_to_bits(value.supported_features, _PLX_FEATURE_BITS)
    raw |= _reserved(value.reserved_feature_bits, _PLX_FEATURE_DEFINED, 2, "reserved features")
    w.uint(raw, 2, "supported features")
    if value.measurement_status_support is not None:
        ms = _set_to_bits(value.measurement_status_support, _PLX_MS_BITS)
        ms |= _reserved(
            value.reserved_measurement_status_support_bits, _PLX_MS_DEFINED, 2, "reserved status"
        )
        w.uint(ms, 2, "measurement status support")
    elif value.reserved_measurement_status_support_bits:
        raise EncodeError("reserved measurement status support bits without the field")
    if value.device_and_sensor_status_support is not None:
        dss = _set_to_bits(value.device_and_sensor_status_support, _PLX_DSS_BITS)
        dss |= _reserved(
            value.reserved_device_and_sensor_status_support_bits,
            _PLX_DSS_DEFINED,
            3,
            "reserved status",
        )
        w.uint(dss, 3, "device and sensor status support")
    elif value.reserved_device_and_sensor_status_support_bits:
        raise EncodeError("reserved device status support bits without the field")
    return w.bytes()


# --- Current Time 0x2A2B ----------------------------------------------------------------------


class AdjustReason(StrEnum):
    MANUAL_TIME_UPDATE = "manual-time-update"
    EXTERNAL_REFERENCE_TIME_UPDATE = "external-reference-time-update"
    CHANGE_OF_TIME_ZONE = "change-of-time-zone"
    CHANGE_OF_DST = "change-of-dst"


_ADJUST_BITS: Final = {m: i for i, m in enumerate(AdjustReason)}
_ADJUST_DEFINED: Final = _mask(_ADJUST_BITS)


@dataclass(frozen=True, slots=True, kw_only=True)
class CurrentTime:
    """The device clock (device local time); compare it with the hub's own receive time."""

    date_time: DateTime
    day_of_week: int | None  # 1 = Monday ... 7 = Sunday; None = unknown (0 on the wire)
    fractions256: int  # 1/256 s
    adjust_reason: frozenset[AdjustReason]
    reserved_adjust_reason_bits: int = 0


def decode_current_time(data: bytes) -> CurrentTime:
    r = Reader(data)
    dt = r.date_time("date time")
    start = r.pos
    dow = r.u8("day of week")
    if dow > 7:
        raise DecodeError(start, f"day of week 0-7, got {dow}", field="day of week")
    fractions = r.u8("fractions256")
    adjust = r.u8("adjust reason")
    r.end()
    return CurrentTime(
        date_time=dt,
        day_of_week=dow or None,
        fractions256=fractions,
        adjust_reason=_bits_to_set(adjust, _ADJUST_BITS),
        reserved_adjust_reason_bits=adjust & ~_ADJUST_DEFINED,
    )


def encode_current_time(value: CurrentTime) -> bytes:
    if value.day_of_week is not None and not 1 <= value.day_of_week <= 7:
        raise EncodeError(f"day of week {value.day_of_week} is not 1-7 (or None)")
    w = _Writer()
    w.date_time(value.date_time, "date time")
    w.uint(value.day_of_week or 0, 1, "day of week")
    w.uint(value.fractions256, 1, "fractions256")
    adjust = _set_to_bits(value.adjust_reason, _ADJUST_BITS)
    adjust |= _reserved(value.reserved_adjust_reason_bits, _ADJUST_DEFINED, 1, "reserved bits")
    w.uint(adjust, 1, "adjust reason")
    return w.bytes()


# --- Battery Level 0x2A19 (Battery Service 0x180F) -------------------------------------------


def decode_battery_level(data: bytes) -> int:
    """Battery charge in percent: one uint8, 0-100 (Battery Service 1.0, Battery Level).

    101-255 are not a percentage; they are refused, not clamped to 100.
    """
    r = Reader(data)
    level = r.u8("battery level")
    if level > 100:
        raise DecodeError(0, f"0-100 %, got {level}", field="battery level")
    r.end()
    return level


def encode_battery_level(percent: int) -> bytes:
    if not 0 <= percent <= 100:
        raise EncodeError(f"battery level {percent} is not 0-100")
    return bytes([percent])


# --- Device Information 0x180A strings --------------------------------------------------------


def decode_dis_string(data: bytes) -> str:
    """Manufacturer / model / serial / revision strings: UTF-8, trailing NULs stripped."""
    raw = bytes(data).rstrip(b"\x00")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(exc.start, "UTF-8 text", field="device information string") from None


def encode_dis_string(value: str) -> bytes:
    if value.endswith("\x00"):
        raise EncodeError("a trailing NUL would be stripped by the receiver")
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise EncodeError(f"{value!r} is not encodable as UTF-8") from exc
