"""CGM service 0x181F: measurement, feature, status, session times and SOCP codecs.

Sans-I/O: whole characteristic values in, frozen typed values out, and encoders back to bytes.
Facts: PROTOCOLS.md "CGM service 0x181F". Glucose values are SFLOAT mg/dL, trends mg/dL/min,
quality percent, time offsets minutes since session start. With ``crc=True`` (the sensor's
feature value says E2E-CRC is supported) the trailing E2E-CRC (CRC-16/MCRF4XX over every
preceding byte, low byte first) is required and verified; a mismatch raises
:class:`~device_profiles.gatt.ieee11073.DecodeError` at the CRC's offset.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import IntEnum, StrEnum
from typing import Final

from device_profiles.gatt.glucose import (
    GlucoseType,
    SampleLocation,
    glucose_type_of,
    pack_date_time,
    pack_type_location,
    sample_location_of,
)
from device_profiles.gatt.ieee11073 import (
    DateTime,
    DecodeError,
    EncodeError,
    Number,
    Reader,
    crc16_mcrf4xx,
    decode_sfloat,
    encode_sfloat,
    slot_setters,
)

__all__ = [
    "ANNUNCIATION_OCTET_ORDER",
    "AnnunciationOctet",
    "CgmFeature",
    "CgmFeatureBit",
    "CgmMeasurement",
    "CgmMeasurementFlag",
    "CgmSensorStatus",
    "CgmSessionRunTime",
    "CgmSessionStartTime",
    "CgmStatus",
    "DstOffset",
    "SocpMessage",
    "SocpOpCode",
    "SocpResponseCode",
    "decode_cgm_feature",
    "decode_cgm_measurements",
    "decode_cgm_session_run_time",
    "decode_cgm_session_start_time",
    "decode_cgm_status",
    "decode_socp",
    "encode_cgm_feature",
    "encode_cgm_measurement",
    "encode_cgm_session_run_time",
    "encode_cgm_session_start_time",
    "encode_cgm_status",
    "encode_socp",
]


def _check(value: int, lo: int, hi: int, what: str) -> int:
    if not lo <= value <= hi:
        raise EncodeError(f"{what} {value} is outside {lo}..{hi}")
    return value


def _sfloat(n: Number) -> bytes:
    return encode_sfloat(n).to_bytes(2, "little")


def _crc_bytes(body: bytes) -> bytes:
    return crc16_mcrf4xx(body).to_bytes(2, "little")


def _finish(r: Reader, *, crc: bool, start: int = 0) -> None:
    """Read and verify the E2E-CRC over ``data[start:here]`` (if ``crc``), then require the end."""
    if crc:
        at = r.pos
        got = r.u16("E2E-CRC")
        want = crc16_mcrf4xx(r.data[start:at])
        if got != want:
            raise DecodeError(at, f"E2E-CRC {want:#06x}, got {got:#06x}", field="E2E-CRC")
    r.end()


def _with_crc(body: bytes, *, crc: bool) -> bytes:
    return body + _crc_bytes(body) if crc else body


# --------------------------------------------------------------------------- status bits


class CgmSensorStatus(StrEnum):
    """The 24 Sensor Status Annunciation bits shared by 0x2AA7 and 0x2AA9."""

    SESSION_STOPPED = "session_stopped"
    DEVICE_BATTERY_LOW = "device_battery_low"
    SENSOR_TYPE_INCORRECT = "sensor_type_incorrect_for_device"
    SENSOR_MALFUNCTION = "sensor_malfunction"
    DEVICE_SPECIFIC_ALERT = "device_specific_alert"
    GENERAL_DEVICE_FAULT = "general_device_fault"
    TIME_SYNCHRONIZATION_REQUIRED = "time_synchronization_between_sensor_and_collector_required"
    CALIBRATION_NOT_ALLOWED = "calibration_not_allowed"
    CALIBRATION_RECOMMENDED = "calibration_recommended"
    CALIBRATION_REQUIRED = "calibration_required"
    SENSOR_TEMPERATURE_TOO_HIGH = "sensor_temperature_too_high_for_valid_test_result"
    SENSOR_TEMPERATURE_TOO_LOW = "sensor_temperature_too_low_for_valid_test_result"
    RESULT_LOWER_THAN_PATIENT_LOW = "sensor_result_lower_than_the_patient_low_level"
    RESULT_HIGHER_THAN_PATIENT_HIGH = "sensor_result_higher_than_the_patient_high_level"
    RESULT_LOWER_THAN_HYPO = "sensor_result_lower_than_the_hypo_level"
    RESULT_HIGHER_THAN_HYPER = "sensor_result_higher_than_the_hyper_level"
    RATE_OF_DECREASE_EXCEEDED = "sensor_rate_of_decrease_exceeded"
    RATE_OF_INCREASE_EXCEEDED = "sensor_rate_of_increase_exceeded"
    RESULT_LOWER_THAN_DEVICE_CAN_PROCESS = "sensor_result_lower_than_the_device_can_process"
    RESULT_HIGHER_THAN_DEVICE_CAN_PROCESS = "sensor_result_higher_than_the_device_can_process"


_MEMBERS: Final = list(CgmSensorStatus)
#: Bit positions in the 24-bit value: status 0-5, cal/temp 8-13, warning 16-23.
_STATUS_BITS: Final[dict[CgmSensorStatus, int]] = {
    **{m: i for i, m in enumerate(_MEMBERS[0:6])},
    **{m: 8 + i for i, m in enumerate(_MEMBERS[6:12])},
    **{m: 16 + i for i, m in enumerate(_MEMBERS[12:20])},
}
_KNOWN_STATUS_MASK: Final = sum(1 << b for b in _STATUS_BITS.values())


def _status_of(raw: int) -> tuple[frozenset[CgmSensorStatus], int]:
    members = frozenset(m for m, b in _STATUS_BITS.items() if (raw >> b) & 1)
    return members, raw & ~_KNOWN_STATUS_MASK


def _status_bits(members: frozenset[CgmSensorStatus], reserved: int) -> int:
    if reserved & _KNOWN_STATUS_MASK or not 0 <= reserved <= 0xFFFFFF:
        raise EncodeError(f"reserved status bits {reserved:#x} are not reserved positions")
    return sum(1 << _STATUS_BITS[m] for m in members) | reserved


class AnnunciationOctet(StrEnum):
    STATUS = "status"
    CAL_TEMP = "cal_temp"
    WARNING = "warning"


#: Position of each octet within the 24-bit status value.
_OCTET_SHIFT: Final[dict[AnnunciationOctet, int]] = {
    AnnunciationOctet.STATUS: 0,
    AnnunciationOctet.CAL_TEMP: 8,
    AnnunciationOctet.WARNING: 16,
}

#: Wire order of the present annunciation octets in a CGM Measurement record.
#: UNVERIFIED: implementations disagree (PROTOCOLS.md). We send/expect them in the octet order
#: of the little-endian 24-bit status value of 0x2AA9 (status, cal/temp, warning); if a second
#: source shows warning-first, change only this constant.
ANNUNCIATION_OCTET_ORDER: Final[tuple[AnnunciationOctet, ...]] = (
    AnnunciationOctet.STATUS,
    AnnunciationOctet.CAL_TEMP,
    AnnunciationOctet.WARNING,
)


# --------------------------------------------------------------------------- 0x2AA7


class CgmMeasurementFlag(StrEnum):
    TREND_INFORMATION_PRESENT = "cgm_trend_information_present"
    QUALITY_PRESENT = "cgm_quality_present"
    WARNING_OCTET_PRESENT = "sensor_status_annunciation_field_warning_octet_present"
    CAL_TEMP_OCTET_PRESENT = "sensor_status_annunciation_field_cal_temp_octet_present"
    STATUS_OCTET_PRESENT = "sensor_status_annunciation_field_status_octet_present"


_CGM_FLAG_BITS: Final[dict[CgmMeasurementFlag, int]] = {
    CgmMeasurementFlag.TREND_INFORMATION_PRESENT: 0,
    CgmMeasurementFlag.QUALITY_PRESENT: 1,
    CgmMeasurementFlag.WARNING_OCTET_PRESENT: 5,
    CgmMeasurementFlag.CAL_TEMP_OCTET_PRESENT: 6,
    CgmMeasurementFlag.STATUS_OCTET_PRESENT: 7,
}
_KNOWN_FLAG_MASK: Final = sum(1 << b for b in _CGM_FLAG_BITS.values())
_OCTET_FLAG: Final[dict[AnnunciationOctet, CgmMeasurementFlag]] = {
    AnnunciationOctet.WARNING: CgmMeasurementFlag.WARNING_OCTET_PRESENT,
    AnnunciationOctet.CAL_TEMP: CgmMeasurementFlag.CAL_TEMP_OCTET_PRESENT,
    AnnunciationOctet.STATUS: CgmMeasurementFlag.STATUS_OCTET_PRESENT,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class CgmMeasurement:
    """One CGM Measurement record.

    ``annunciation_octets`` says which status octets were sent; ``sensor_status`` and
    ``reserved_status`` (24-bit positions) only use bits of those octets.
    """

    glucose_mg_dl: Number
    time_offset: int
    annunciation_octets: frozenset[AnnunciationOctet] = frozenset()
    sensor_status: frozenset[CgmSensorStatus] = frozenset()
    reserved_status: int = 0
    trend_mg_dl_per_min: Number | None = None
    quality_percent: Number | None = None
    reserved_flags: int = 0

    @property
    def flags(self) -> frozenset[CgmMeasurementFlag]:
        out = {_OCTET_FLAG[o] for o in self.annunciation_octets}
        if self.trend_mg_dl_per_min is not None:
            out.add(CgmMeasurementFlag.TREND_INFORMATION_PRESENT)
        if self.quality_percent is not None:
            out.add(CgmMeasurementFlag.QUALITY_PRESENT)
        return frozenset(out)


_MIN_RECORD: Final = 6  # size, flags, glucose SFLOAT, time offset u16


class _CgmLayout:
    """Everything a record's flags octet decides, computed once per raw flags value."""

    __slots__ = (
        "has_quality",
        "has_trend",
        "octets",
        "reserved_flags",
        "shifts",
        "size",
        "unpack_from",
    )

    def __init__(self, raw_flags: int) -> None:
        self.octets = frozenset(
            o for o, f in _OCTET_FLAG.items() if (raw_flags >> _CGM_FLAG_BITS[f]) & 1
        )
        self.shifts = tuple(_OCTET_SHIFT[o] for o in ANNUNCIATION_OCTET_ORDER if o in self.octets)
        self.has_trend = bool(raw_flags & 0x01)
        self.has_quality = bool(raw_flags & 0x02)
        self.reserved_flags = raw_flags & ~_KNOWN_FLAG_MASK
        fmt = (
            "<xxHH"  # size and flags octets, glucose SFLOAT, time offset
            + "B" * len(self.shifts)
            + ("H" if self.has_trend else "")
            + ("H" if self.has_quality else "")
        )
        st = struct.Struct(fmt)
        self.size = st.size  # with the size octet, without the E2E-CRC
        self.unpack_from = st.unpack_from


_CGM_LAYOUTS: Final = tuple(_CgmLayout(raw) for raw in range(256))
_STATUS_CACHE: Final[dict[int, tuple[frozenset[CgmSensorStatus], int]]] = {}
_STATUS_CACHE_MAX: Final = 4096


def _cached_status_of(raw: int) -> tuple[frozenset[CgmSensorStatus], int]:
    hit = _STATUS_CACHE.get(raw)
    if hit is None:
        hit = _status_of(raw)
        if len(_STATUS_CACHE) < _STATUS_CACHE_MAX:
            _STATUS_CACHE[raw] = hit
    return hit


_new: Final = object.__new__
(
    _cm_glucose,
    _cm_time_offset,
    _cm_octets,
    _cm_status,
    _cm_reserved_status,
    _cm_trend,
    _cm_quality,
    _cm_reserved_flags,
) = slot_setters(
    CgmMeasurement,
    (
        "glucose_mg_dl",
        "time_offset",
        "annunciation_octets",
        "sensor_status",
        "reserved_status",
        "trend_mg_dl_per_min",
        "quality_percent",
        "reserved_flags",
    ),
)


def _decode_cgm_fast(data: bytes, *, crc: bool) -> list[CgmMeasurement] | None:
    """Well-formed notifications only, one ``unpack_from`` per record; None → careful path."""
    n = len(data)
    if not n:
        return None
    extra = 2 if crc else 0
    out: list[CgmMeasurement] = []
    pos = 0
    while pos < n:
        size = data[pos]
        if pos + 1 >= n:
            return None
        layout = _CGM_LAYOUTS[data[pos + 1]]
        end = pos + size
        if size != layout.size + extra or end > n:
            return None
        if crc:
            body_end = end - 2
            if crc16_mcrf4xx(data[pos:body_end]) != data[body_end] | (data[body_end + 1] << 8):
                return None
        v = layout.unpack_from(data, pos)
        raw_status = 0
        i = 2
        for shift in layout.shifts:
            raw_status |= v[i] << shift
            i += 1
        status, reserved_status = _cached_status_of(raw_status)
        trend: Number | None = None
        if layout.has_trend:
            trend = decode_sfloat(v[i])
            i += 1
        # CgmMeasurement(...) with the same eight fields, without frozen __setattr__.
        m: CgmMeasurement = _new(CgmMeasurement)
        _cm_glucose(m, decode_sfloat(v[0]))
        _cm_time_offset(m, v[1])
        _cm_octets(m, layout.octets)
        _cm_status(m, status)
        _cm_reserved_status(m, reserved_status)
        _cm_trend(m, trend)
        _cm_quality(m, decode_sfloat(v[i]) if layout.has_quality else None)
        _cm_reserved_flags(m, layout.reserved_flags)
        out.append(m)
        pos = end
    return out


def decode_cgm_measurements(data: bytes, *, crc: bool) -> list[CgmMeasurement]:
    """All size-prefixed records of one notification (at least one)."""
    data = bytes(data)
    return _decode_cgm_fast(data, crc=crc) or _decode_cgm_careful(data, crc=crc)


def _decode_cgm_careful(data: bytes, *, crc: bool) -> list[CgmMeasurement]:
    """Record by record through :class:`Reader`: the reference, and the source of every error."""
    if not data:
        raise DecodeError(0, "a CGM measurement record", field="size")
    out: list[CgmMeasurement] = []
    pos = 0
    while pos < len(data):
        size = data[pos]
        least = _MIN_RECORD + (2 if crc else 0)
        if size < least:
            raise DecodeError(pos, f"record size >= {least}, got {size}", field="size")
        end = pos + size
        if end > len(data):
            raise DecodeError(
                pos, f"a record of {size} bytes, only {len(data) - pos} left", field="size"
            )
        body_end = end - 2 if crc else end
        if crc:
            want = crc16_mcrf4xx(data[pos:body_end])
            got = int.from_bytes(data[body_end:end], "little")
            if got != want:
                raise DecodeError(body_end, f"E2E-CRC {want:#06x}, got {got:#06x}", field="E2E-CRC")
        r = Reader(data[:body_end])
        r.pos = pos + 1
        out.append(_decode_record(r))
        r.end()
        pos = end
    return out


def _decode_record(r: Reader) -> CgmMeasurement:
    raw_flags = r.u8("flags")
    glucose = r.sfloat("glucose concentration")
    offset = r.u16("time offset")
    octets = frozenset(o for o, f in _OCTET_FLAG.items() if (raw_flags >> _CGM_FLAG_BITS[f]) & 1)
    raw_status = 0
    for octet in ANNUNCIATION_OCTET_ORDER:
        if octet in octets:
            raw_status |= r.u8(f"sensor status annunciation {octet.value}") << _OCTET_SHIFT[octet]
    status, reserved_status = _status_of(raw_status)
    trend = r.sfloat("trend") if raw_flags & 0x01 else None
    quality = r.sfloat("quality") if raw_flags & 0x02 else None
    return CgmMeasurement(
        glucose_mg_dl=glucose,
        time_offset=offset,
        annunciation_octets=octets,
        sensor_status=status,
        reserved_status=reserved_status,
        trend_mg_dl_per_min=trend,
        quality_percent=quality,
        reserved_flags=raw_flags & ~_KNOWN_FLAG_MASK,
    )


def encode_cgm_measurement(m: CgmMeasurement, *, crc: bool) -> bytes:
    """One record, size byte and (if ``crc``) E2E-CRC included."""
    if m.reserved_flags & _KNOWN_FLAG_MASK or not 0 <= m.reserved_flags <= 0xFF:
        raise EncodeError(f"reserved flags {m.reserved_flags:#x} are not reserved positions")
    status = _status_bits(m.sensor_status, m.reserved_status)
    allowed = sum(0xFF << _OCTET_SHIFT[o] for o in m.annunciation_octets)
    if status & ~allowed:
        raise EncodeError("sensor status bits set in an annunciation octet that is not sent")
    flags = sum(1 << _CGM_FLAG_BITS[f] for f in m.flags) | m.reserved_flags
    body = bytearray([flags])
    body += _sfloat(m.glucose_mg_dl)
    body += _check(m.time_offset, 0, 0xFFFF, "time offset").to_bytes(2, "little")
    for octet in ANNUNCIATION_OCTET_ORDER:
        if octet in m.annunciation_octets:
            body.append((status >> _OCTET_SHIFT[octet]) & 0xFF)
    if m.trend_mg_dl_per_min is not None:
        body += _sfloat(m.trend_mg_dl_per_min)
    if m.quality_percent is not None:
        body += _sfloat(m.quality_percent)
    record = bytes([len(body) + 1 + (2 if crc else 0)]) + body
    return _with_crc(record, crc=crc)


# --------------------------------------------------------------------------- 0x2AA8


class CgmFeatureBit(StrEnum):
    CALIBRATION_SUPPORTED = "calibration_supported"
    PATIENT_HIGH_LOW_ALERTS_SUPPORTED = "patient_high_low_alerts_supported"
    HYPO_ALERTS_SUPPORTED = "hypo_alerts_supported"
    HYPER_ALERTS_SUPPORTED = "hyper_alerts_supported"
    RATE_OF_INCREASE_DECREASE_ALERTS_SUPPORTED = "rate_of_increase_decrease_alerts_supported"
    DEVICE_SPECIFIC_ALERT_SUPPORTED = "device_specific_alert_supported"
    SENSOR_MALFUNCTION_DETECTION_SUPPORTED = "sensor_malfunction_detection_supported"
    SENSOR_TEMPERATURE_HIGH_LOW_DETECTION_SUPPORTED = (
        "sensor_temperature_high_low_detection_supported"
    )
    SENSOR_RESULT_HIGH_LOW_DETECTION_SUPPORTED = "sensor_result_high_low_detection_supported"
    LOW_BATTERY_DETECTION_SUPPORTED = "low_battery_detection_supported"
    SENSOR_TYPE_ERROR_DETECTION_SUPPORTED = "sensor_type_error_detection_supported"
    GENERAL_DEVICE_FAULT_SUPPORTED = "general_device_fault_supported"
    E2E_CRC_SUPPORTED = "e2e_crc_supported"
    MULTIPLE_BOND_SUPPORTED = "multiple_bond_supported"
    MULTIPLE_SESSIONS_SUPPORTED = "multiple_sessions_supported"
    CGM_TREND_INFORMATION_SUPPORTED = "cgm_trend_information_supported"
    CGM_QUALITY_SUPPORTED = "cgm_quality_supported"


_FEATURE_BITS: Final[dict[CgmFeatureBit, int]] = {b: i for i, b in enumerate(CgmFeatureBit)}
_KNOWN_FEATURE_MASK: Final = sum(1 << b for b in _FEATURE_BITS.values())
_CRC_NOT_SUPPORTED: Final = 0xFFFF


@dataclass(frozen=True, slots=True, kw_only=True)
class CgmFeature:
    """CGM Feature 0x2AA8. Type = LOW nibble, sample location = HIGH nibble."""

    features: frozenset[CgmFeatureBit]
    cgm_type: GlucoseType | int
    sample_location: SampleLocation | int
    reserved_features: int = 0

    @property
    def e2e_crc_supported(self) -> bool:
        return CgmFeatureBit.E2E_CRC_SUPPORTED in self.features


def decode_cgm_feature(data: bytes) -> CgmFeature:
    """The CRC field is verified when bit 12 says E2E-CRC is supported, else must be 0xFFFF."""
    r = Reader(data)
    raw = r.u24("CGM feature")
    tl = r.u8("CGM type-sample location")
    features = frozenset(b for b, i in _FEATURE_BITS.items() if (raw >> i) & 1)
    feature = CgmFeature(
        features=features,
        cgm_type=glucose_type_of(tl & 0x0F),
        sample_location=sample_location_of(tl >> 4),
        reserved_features=raw & ~_KNOWN_FEATURE_MASK,
    )
    if feature.e2e_crc_supported:
        _finish(r, crc=True)
    else:
        at = r.pos
        value = r.u16("E2E-CRC")
        if value != _CRC_NOT_SUPPORTED:
            raise DecodeError(
                at, f"0xffff (E2E-CRC not supported), got {value:#06x}", field="E2E-CRC"
            )
        r.end()
    return feature


def encode_cgm_feature(f: CgmFeature) -> bytes:
    if f.reserved_features & _KNOWN_FEATURE_MASK or not 0 <= f.reserved_features <= 0xFFFFFF:
        raise EncodeError(f"reserved feature bits {f.reserved_features:#x} overlap")
    raw = sum(1 << _FEATURE_BITS[b] for b in f.features) | f.reserved_features
    body = raw.to_bytes(3, "little") + pack_type_location(f.cgm_type, f.sample_location)
    if f.e2e_crc_supported:
        return body + _crc_bytes(body)
    return body + _CRC_NOT_SUPPORTED.to_bytes(2, "little")


# --------------------------------------------------------------------------- 0x2AA9


@dataclass(frozen=True, slots=True, kw_only=True)
class CgmStatus:
    time_offset: int  # minutes since session start
    sensor_status: frozenset[CgmSensorStatus]
    reserved_status: int = 0


def decode_cgm_status(data: bytes, *, crc: bool) -> CgmStatus:
    r = Reader(data)
    offset = r.u16("time offset")
    status, reserved = _status_of(r.u24("sensor status"))
    _finish(r, crc=crc)
    return CgmStatus(time_offset=offset, sensor_status=status, reserved_status=reserved)


def encode_cgm_status(s: CgmStatus, *, crc: bool) -> bytes:
    body = _check(s.time_offset, 0, 0xFFFF, "time offset").to_bytes(2, "little")
    body += _status_bits(s.sensor_status, s.reserved_status).to_bytes(3, "little")
    return _with_crc(body, crc=crc)


# --------------------------------------------------------------------------- 0x2AAA


class DstOffset(IntEnum):
    STANDARD_TIME = 0
    HALF_AN_HOUR_DAYLIGHT_TIME = 2
    DAYLIGHT_TIME = 4
    DOUBLE_DAYLIGHT_TIME = 8
    UNKNOWN = 255


_DST_MINUTES: Final[dict[DstOffset, int]] = {
    DstOffset.STANDARD_TIME: 0,
    DstOffset.HALF_AN_HOUR_DAYLIGHT_TIME: 30,
    DstOffset.DAYLIGHT_TIME: 60,
    DstOffset.DOUBLE_DAYLIGHT_TIME: 120,
}
TIME_ZONE_UNKNOWN: Final = -128
#: GATT Time Zone: -48..+56 quarter hours (UTC-12:00..UTC+14:00); other values are reserved.
_TIME_ZONE_RANGE: Final = range(-48, 57)


@dataclass(frozen=True, slots=True, kw_only=True)
class CgmSessionStartTime:
    """``time_zone`` in 15-minute steps from UTC (standard time), -128 = unknown."""

    session_start_time: DateTime
    time_zone: int
    dst_offset: DstOffset

    def aware_start_time(self) -> datetime | None:
        """The start as an aware datetime; None unless date, zone and DST are all known."""
        local = self.session_start_time.value
        if local is None or self.time_zone == TIME_ZONE_UNKNOWN:
            return None
        if self.dst_offset is DstOffset.UNKNOWN:
            return None
        minutes = 15 * self.time_zone + _DST_MINUTES[self.dst_offset]
        return local.replace(tzinfo=timezone(timedelta(minutes=minutes)))


def decode_cgm_session_start_time(data: bytes, *, crc: bool) -> CgmSessionStartTime:
    r = Reader(data)
    start = r.date_time("session start time")
    tz_at = r.pos
    tz = r.u8("time zone")
    tz = tz - 256 if tz >= 128 else tz
    if tz != TIME_ZONE_UNKNOWN and tz not in _TIME_ZONE_RANGE:
        raise DecodeError(tz_at, f"time zone -48..56 or -128, got {tz}", field="time zone")
    dst_at = r.pos
    dst = r.u8("DST offset")
    try:
        dst_offset = DstOffset(dst)
    except ValueError:
        raise DecodeError(
            dst_at, f"DST offset 0/2/4/8/255, got {dst}", field="DST offset"
        ) from None
    _finish(r, crc=crc)
    return CgmSessionStartTime(session_start_time=start, time_zone=tz, dst_offset=dst_offset)


def encode_cgm_session_start_time(s: CgmSessionStartTime, *, crc: bool) -> bytes:
    if s.time_zone != TIME_ZONE_UNKNOWN and s.time_zone not in _TIME_ZONE_RANGE:
        raise EncodeError(f"time zone {s.time_zone} is outside -48..56 and not -128")
    body = pack_date_time(s.session_start_time)
    body += s.time_zone.to_bytes(1, "little", signed=True) + bytes([DstOffset(s.dst_offset)])
    return _with_crc(body, crc=crc)


# --------------------------------------------------------------------------- 0x2AAB


@dataclass(frozen=True, slots=True, kw_only=True)
class CgmSessionRunTime:
    run_time_hours: int


def decode_cgm_session_run_time(data: bytes, *, crc: bool) -> CgmSessionRunTime:
    r = Reader(data)
    hours = r.u16("session run time")
    _finish(r, crc=crc)
    return CgmSessionRunTime(run_time_hours=hours)


def encode_cgm_session_run_time(s: CgmSessionRunTime, *, crc: bool) -> bytes:
    body = _check(s.run_time_hours, 0, 0xFFFF, "run time").to_bytes(2, "little")
    return _with_crc(body, crc=crc)


# --------------------------------------------------------------------------- SOCP 0x2AAC


class SocpOpCode(IntEnum):
    SET_CGM_COMMUNICATION_INTERVAL = 1
    GET_CGM_COMMUNICATION_INTERVAL = 2
    CGM_COMMUNICATION_INTERVAL_RESPONSE = 3
    SET_GLUCOSE_CALIBRATION_VALUE = 4
    GET_GLUCOSE_CALIBRATION_VALUE = 5
    GLUCOSE_CALIBRATION_VALUE_RESPONSE = 6
    SET_PATIENT_HIGH_ALERT_LEVEL = 7
    GET_PATIENT_HIGH_ALERT_LEVEL = 8
    PATIENT_HIGH_ALERT_LEVEL_RESPONSE = 9
    SET_PATIENT_LOW_ALERT_LEVEL = 10
    GET_PATIENT_LOW_ALERT_LEVEL = 11
    PATIENT_LOW_ALERT_LEVEL_RESPONSE = 12
    SET_HYPO_ALERT_LEVEL = 13
    GET_HYPO_ALERT_LEVEL = 14
    HYPO_ALERT_LEVEL_RESPONSE = 15
    SET_HYPER_ALERT_LEVEL = 16
    GET_HYPER_ALERT_LEVEL = 17
    HYPER_ALERT_LEVEL_RESPONSE = 18
    SET_RATE_OF_DECREASE_ALERT_LEVEL = 19
    GET_RATE_OF_DECREASE_ALERT_LEVEL = 20
    RATE_OF_DECREASE_ALERT_LEVEL_RESPONSE = 21
    SET_RATE_OF_INCREASE_ALERT_LEVEL = 22
    GET_RATE_OF_INCREASE_ALERT_LEVEL = 23
    RATE_OF_INCREASE_ALERT_LEVEL_RESPONSE = 24
    RESET_DEVICE_SPECIFIC_ALERT = 25
    START_THE_SESSION = 26
    STOP_THE_SESSION = 27
    RESPONSE_CODE = 28


class SocpResponseCode(IntEnum):
    SUCCESS = 1
    OP_CODE_NOT_SUPPORTED = 2
    INVALID_OPERAND = 3
    PROCEDURE_NOT_COMPLETED = 4
    PARAMETER_OUT_OF_RANGE = 5


_S = SocpOpCode
_INTERVAL_OPS: Final = frozenset(
    {_S.SET_CGM_COMMUNICATION_INTERVAL, _S.CGM_COMMUNICATION_INTERVAL_RESPONSE}
)
#: Set/response of the six alert levels: SFLOAT mg/dL (rates: mg/dL/min).
_LEVEL_OPS: Final = frozenset(_S(base + k) for base in (7, 10, 13, 16, 19, 22) for k in (0, 2))
#: Calibration records (4/5/6): their layout is not in PROTOCOLS.md, so not decoded here.
_CALIBRATION_OPS: Final = frozenset(
    {
        _S.SET_GLUCOSE_CALIBRATION_VALUE,
        _S.GET_GLUCOSE_CALIBRATION_VALUE,
        _S.GLUCOSE_CALIBRATION_VALUE_RESPONSE,
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class SocpMessage:
    """One SOCP value: ``interval_minutes`` for 1/3, ``level`` for the alert levels, and
    ``request_op_code`` (kept as int when the peer asked for an unknown op) + ``response_code``
    for 28. Other op codes carry no operand."""

    op_code: SocpOpCode
    interval_minutes: int | None = None
    level: Number | None = None
    request_op_code: SocpOpCode | int | None = None
    response_code: SocpResponseCode | None = None


def decode_socp(data: bytes, *, crc: bool) -> SocpMessage:
    r = Reader(data)
    raw = r.u8("op code")
    try:
        op = SocpOpCode(raw)
    except ValueError:
        raise DecodeError(0, f"a known op code, got {raw:#04x}", field="op code") from None
    if op in _CALIBRATION_OPS:
        raise DecodeError(0, f"an op code this codec decodes, got {raw:#04x}", field="op code")
    msg: SocpMessage
    if op in _INTERVAL_OPS:
        msg = SocpMessage(op_code=op, interval_minutes=r.u8("communication interval"))
    elif op in _LEVEL_OPS:
        msg = SocpMessage(op_code=op, level=r.sfloat("alert level"))
    elif op is SocpOpCode.RESPONSE_CODE:
        req = r.u8("request op code")
        code_at = r.pos
        code = r.u8("response code")
        try:
            response = SocpResponseCode(code)
        except ValueError:
            raise DecodeError(
                code_at, f"a known response code, got {code:#04x}", field="response code"
            ) from None
        request: SocpOpCode | int
        try:
            request = SocpOpCode(req)
        except ValueError:
            request = req  # the peer may answer "op code not supported" to an unknown op
        msg = SocpMessage(op_code=op, request_op_code=request, response_code=response)
    else:
        msg = SocpMessage(op_code=op)
    _finish(r, crc=crc)
    return msg


def encode_socp(msg: SocpMessage, *, crc: bool) -> bytes:
    op = msg.op_code
    if op in _CALIBRATION_OPS:
        raise EncodeError(f"{op.name} is not supported by this codec")
    body = bytearray([op])
    operands = (msg.interval_minutes, msg.level, msg.request_op_code, msg.response_code)
    if op in _INTERVAL_OPS:
        if msg.interval_minutes is None:
            raise EncodeError(f"{op.name} needs interval_minutes")
        body.append(_check(msg.interval_minutes, 0, 0xFF, "communication interval"))
    elif op in _LEVEL_OPS:
        if msg.level is None:
            raise EncodeError(f"{op.name} needs a level")
        body += _sfloat(msg.level)
    elif op is SocpOpCode.RESPONSE_CODE:
        if msg.request_op_code is None or msg.response_code is None:
            raise EncodeError("a response needs request_op_code and response_code")
        body.append(_check(int(msg.request_op_code), 0, 0xFF, "request op code"))
        body.append(msg.response_code)
    elif any(v is not None for v in operands):
        raise EncodeError(f"{op.name} takes no operand")
    return _with_crc(bytes(body), crc=crc)
