"""Decoded GATT health values → :class:`~device_profiles.observation.Observation` (pure).

Theory of operation: the procedures (:mod:`.glucose_download`, :mod:`.cgm_session`,
:mod:`.vitals_session`) hand out decoded values with the times they worked out; this module turns
each into the observations the wire carries, in the measure's canonical unit with the device's
own value and unit kept in the provenance. Nothing is clamped or invented:

* IEEE 11073 NaN / NRes / ±INF stay absent values with their reason (PROTOCOLS.md).
* A glucose result the meter flags "higher/lower than the device can process" keeps the number
  the meter sent with the comparator ``>`` / ``<`` (DOMAIN.md §2: meters show HI / LO).
* Device status bits become quality flags; a PLX reading the device marks unavailable,
  questionable or invalid is flagged ``questionable`` (PROTOCOLS.md: such readings never raise
  clinical alerts; the rules skip the flag).
* Times: a glucose meter's record time is its base time + time offset on the device's wall
  clock; corrected by the clock offset measured at connection (device minus hub, seconds) and
  read in the hub's time zone. Without a measured offset the time is taken at face value and
  flagged ``device-time-only``; an offset beyond 15 min is flagged ``clock-offset``.

Record keys are content-derived and device-scoped, so a re-read yields the same ids:
``seq:<n>@<device time>`` (glucose), ``cgm:<session start>+<offset>`` (CGM), and
``<uuid>@<device time or receive time>`` (vitals).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Final

from device_profiles.codes import MEASURES
from device_profiles.gatt.cgm import CgmSensorStatus
from device_profiles.gatt.cgm_session import CgmReading
from device_profiles.gatt.glucose import (
    ConcentrationUnit,
    GlucoseMeasurement,
    SensorStatus,
)
from device_profiles.gatt.ieee11073 import Number
from device_profiles.gatt.vitals import (
    BloodPressureMeasurement,
    BodyCompositionMeasurement,
    PlxContinuous,
    PlxSpotCheck,
    Quantity,
    TemperatureMeasurement,
    WeightMeasurement,
)
from device_profiles.gatt.vitals_session import Measurement
from device_profiles.observation import (
    AbsentReason,
    Comparator,
    Observation,
    Provenance,
    QualityFlag,
    clock_quality,
)
from device_profiles.units import convert

__all__ = [
    "UnmappableRecord",
    "cgm_observations",
    "glucose_observations",
    "local_to_utc",
    "vitals_observations",
]


class UnmappableRecord(ValueError):
    """A decoded record that cannot become an observation (kept as a reject, with this reason)."""


# Meter status bits (Glucose 0x2A18, PROTOCOLS.md) and what they say about the value.
_GLUCOSE_FLAGS: Final[dict[SensorStatus, QualityFlag]] = {
    SensorStatus.DEVICE_BATTERY_LOW: QualityFlag.BATTERY_LOW,
    SensorStatus.SENSOR_MALFUNCTION: QualityFlag.SENSOR_MALFUNCTION,
    SensorStatus.TIME_FAULT: QualityFlag.DEVICE_WARNING,
}
#: A meter that says the sample, strip, temperature or read went wrong has no result to trust.
_GLUCOSE_VOIDING: Final = frozenset(
    {
        SensorStatus.SAMPLE_SIZE_INSUFFICIENT,
        SensorStatus.STRIP_INSERTION_ERROR,
        SensorStatus.STRIP_TYPE_INCORRECT,
        SensorStatus.TEMPERATURE_TOO_HIGH,
        SensorStatus.TEMPERATURE_TOO_LOW,
        SensorStatus.READ_INTERRUPTED,
        SensorStatus.GENERAL_DEVICE_FAULT,
        SensorStatus.SENSOR_MALFUNCTION,
    }
)
_CGM_FLAGS: Final[dict[CgmSensorStatus, QualityFlag]] = {
    CgmSensorStatus.DEVICE_BATTERY_LOW: QualityFlag.BATTERY_LOW,
    CgmSensorStatus.SENSOR_MALFUNCTION: QualityFlag.SENSOR_MALFUNCTION,
}
_CGM_QUESTIONABLE: Final = frozenset(
    {
        CgmSensorStatus.SENSOR_TYPE_INCORRECT,
        CgmSensorStatus.GENERAL_DEVICE_FAULT,
        CgmSensorStatus.CALIBRATION_REQUIRED,
        CgmSensorStatus.SENSOR_TEMPERATURE_TOO_HIGH,
        CgmSensorStatus.SENSOR_TEMPERATURE_TOO_LOW,
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Value:
    value: float | None
    reason: AbsentReason | None
    original: tuple[float, str] | None


def local_to_utc(local: datetime, tz: tzinfo) -> datetime:
    """A naive device wall-clock time read in zone ``tz`` (DST: the first of two readings)."""
    if local.tzinfo is not None:
        raise ValueError("device wall-clock times are naive")
    return local.replace(tzinfo=tz).astimezone(UTC)


def _number(n: Number, unit: str, measure: str, scale_exp10: int = 0) -> _Value:
    """``n`` (x 10^scale) in ``unit`` as a value in the measure's canonical unit."""
    if n.special is not None:
        return _Value(value=None, reason=n.special.absent_reason, original=None)
    shown = n.scaled(scale_exp10)
    return _value(shown, unit, measure)


def _value(shown: float, unit: str, measure: str) -> _Value:
    target = MEASURES[measure].unit
    if unit == target:
        return _Value(value=shown, reason=None, original=None)
    return _Value(value=convert(shown, unit, target), reason=None, original=(shown, unit))


def _quantity(q: Quantity, measure: str) -> _Value:
    shown = q.value
    unit = q.unit
    if unit == "m":  # height: metres are not a canonical unit; the decimal shift is exact
        shown, unit = shown * Decimal(100), "cm"
    return _value(float(shown), unit, measure)


def _obs(
    measure: str,
    v: _Value,
    *,
    time: datetime,
    key: str,
    source: str,
    device_time: datetime | None,
    offset_s: float | None,
    quality: frozenset[QualityFlag],
    comparator: Comparator | None = None,
) -> Observation:
    return Observation(
        measure=measure,
        unit=MEASURES[measure].unit,
        effective_time=time,
        record_key=key,
        value=v.value,
        comparator=comparator if v.value is not None else None,
        absent_reason=v.reason,
        device_time=device_time.isoformat(timespec="seconds") if device_time else None,
        clock_offset_s=offset_s,
        quality=quality,
        provenance=Provenance(
            source=source,
            original_value=v.original[0] if v.original else None,
            original_unit=v.original[1] if v.original else None,
        ),
    )


# --------------------------------------------------------------------------- glucose meter


def glucose_observations(
    m: GlucoseMeasurement,
    *,
    clock_offset_s: float | None,
    tz: tzinfo,
    extra_quality: frozenset[QualityFlag] = frozenset(),
) -> list[Observation]:
    """One capillary glucose observation for a meter record (control solution is refused)."""
    if m.is_control_solution:  # by type or by sample location
        raise UnmappableRecord(f"record {m.sequence_number} is a control-solution test")
    base = m.base_time.value
    if base is None:
        raise UnmappableRecord(
            f"record {m.sequence_number} has no date (base time {m.base_time}): "
            "its time cannot be known"
        )
    try:
        device_local = base + timedelta(minutes=m.time_offset or 0)
        # The offset is elapsed time (device clock read in the zone, minus hub UTC): read the
        # record's wall-clock time in the zone first, then correct, so DST changes between the
        # record and the clock read cannot shift it by an hour.
        effective = local_to_utc(device_local, tz) - timedelta(seconds=clock_offset_s or 0.0)
    except (OverflowError, ValueError) as exc:
        raise UnmappableRecord(
            f"record {m.sequence_number}: time {m.base_time} + {m.time_offset} min "
            f"is out of range ({exc})"
        ) from None
    status = m.sensor_status or frozenset()
    quality = clock_quality(clock_offset_s) | extra_quality
    quality |= {flag for bit, flag in _GLUCOSE_FLAGS.items() if bit in status}
    comparator: Comparator | None = None
    if m.concentration is None or status & _GLUCOSE_VOIDING:
        v = _Value(value=None, reason=AbsentReason.ERROR, original=None)
        quality |= {QualityFlag.DEVICE_WARNING}
    else:
        scale = 5 if m.unit is ConcentrationUnit.KG_PER_L else 3  # to mg/dL or mmol/L
        unit = "mg/dL" if m.unit is ConcentrationUnit.KG_PER_L else "mmol/L"
        v = _number(m.concentration, unit, "glucose.capillary", scale)
        if SensorStatus.RESULT_TOO_HIGH in status:
            comparator, quality = ">", quality | {QualityFlag.ABOVE_RANGE}
        elif SensorStatus.RESULT_TOO_LOW in status:
            comparator, quality = "<", quality | {QualityFlag.BELOW_RANGE}
    return [
        _obs(
            "glucose.capillary",
            v,
            time=effective,
            key=f"seq:{m.sequence_number}@{device_local:%Y%m%dT%H%M%S}",
            source="ble:0x2A18",
            device_time=device_local,
            offset_s=clock_offset_s,
            quality=quality,
            comparator=comparator,
        )
    ]


# --------------------------------------------------------------------------- CGM

#: A CGM reading's record key: ``cgm:<session start, UTC minute>+<time offset, min>``.
CGM_KEY_PREFIX: Final = "cgm:"
_CGM_KEY_START: Final = "%Y%m%dT%H%MZ"


def cgm_session_start(record_key: str) -> datetime | None:
    """The sensor session's start (UTC) written into a CGM record key; None for other keys."""
    if not record_key.startswith(CGM_KEY_PREFIX):
        return None
    stamp, plus, _ = record_key.removeprefix(CGM_KEY_PREFIX).partition("+")
    if not plus:
        return None
    try:
        return datetime.strptime(stamp, _CGM_KEY_START).replace(tzinfo=UTC)
    except ValueError:
        return None


def cgm_observations(
    r: CgmReading, *, extra_quality: frozenset[QualityFlag] = frozenset()
) -> list[Observation]:
    """One interstitial glucose observation per CGM record, time anchored by the session."""
    m = r.measurement
    start = r.absolute_time_utc - timedelta(minutes=r.time_offset_min)
    status = m.sensor_status
    quality = extra_quality | {flag for bit, flag in _CGM_FLAGS.items() if bit in status}
    if r.start_time_estimated:
        quality |= {QualityFlag.DEVICE_TIME_ONLY}
    else:  # no measured offset (Status unreadable, or a restarted session): device-time-only
        quality |= clock_quality(r.clock_offset_s)
    if status & _CGM_QUESTIONABLE:
        quality |= {QualityFlag.QUESTIONABLE, QualityFlag.DEVICE_WARNING}
    comparator: Comparator | None = None
    if CgmSensorStatus.RESULT_LOWER_THAN_DEVICE_CAN_PROCESS in status:
        comparator, quality = "<", quality | {QualityFlag.BELOW_RANGE}
    elif CgmSensorStatus.RESULT_HIGHER_THAN_DEVICE_CAN_PROCESS in status:
        comparator, quality = ">", quality | {QualityFlag.ABOVE_RANGE}
    return [
        _obs(
            "glucose.cgm",
            _number(m.glucose_mg_dl, "mg/dL", "glucose.cgm"),
            time=r.absolute_time_utc,
            key=f"{CGM_KEY_PREFIX}{start:{_CGM_KEY_START}}+{r.time_offset_min}",
            source="ble:0x2AA7",
            device_time=None,
            offset_s=r.clock_offset_s,
            quality=frozenset(quality),
            comparator=comparator,
        )
    ]


# --------------------------------------------------------------------------- vitals


def vitals_observations(
    m: Measurement, *, extra_quality: frozenset[QualityFlag] = frozenset()
) -> list[Observation]:
    """The observations of one BP, weight, temperature or pulse-oximetry measurement."""
    value = m.value
    quality = clock_quality(m.offset_s) | extra_quality
    if not m.clinically_usable:
        quality |= {QualityFlag.QUESTIONABLE}
    stamp = m.device_time if m.device_time is not None else m.received_at
    key = f"{m.uuid:#06x}@{stamp:%Y%m%dT%H%M%S}"

    def obs(measure: str, v: _Value, comparator: Comparator | None = None) -> Observation:
        return _obs(
            measure,
            v,
            time=m.corrected_time_utc,
            key=key,
            source=f"ble:{m.uuid:#06X}".replace("0X", "0x"),
            device_time=m.device_time,
            offset_s=m.offset_s,
            quality=quality,
            comparator=comparator,
        )

    if isinstance(value, BloodPressureMeasurement):
        if value.measurement_status:
            quality |= {QualityFlag.DEVICE_WARNING}
        out = [
            obs("bp.systolic", _number(value.systolic, value.unit, "bp.systolic")),
            obs("bp.diastolic", _number(value.diastolic, value.unit, "bp.diastolic")),
        ]
        if value.pulse_rate is not None:
            out.append(obs("pulse.cuff", _number(value.pulse_rate, "/min", "pulse.cuff")))
        return out
    if isinstance(value, WeightMeasurement):
        if value.weight is None:  # 0xFFFF: "measurement unsuccessful", never 327.675 kg
            out = [obs("body.weight", _Value(value=None, reason=AbsentReason.ERROR, original=None))]
        else:
            out = [obs("body.weight", _quantity(value.weight, "body.weight"))]
        if value.height is not None:
            out.append(obs("body.height", _quantity(value.height, "body.height")))
        if value.bmi is not None:
            out.append(obs("bmi", _quantity(value.bmi, "bmi")))
        return out
    if isinstance(value, TemperatureMeasurement):
        return [obs("body.temperature", _number(value.temperature, value.unit, "body.temperature"))]
    if isinstance(value, PlxSpotCheck | PlxContinuous):
        pair = value.reading if isinstance(value, PlxSpotCheck) else value.normal
        return [
            obs("spo2", _number(pair.spo2, pair.spo2_unit, "spo2")),
            obs("pulse.oximeter", _number(pair.pulse_rate, pair.pulse_rate_unit, "pulse.oximeter")),
        ]
    if isinstance(value, BodyCompositionMeasurement):
        # Body fat and the masses have no measure of their own yet; weight and height do.
        out = []
        if value.weight is not None:
            out.append(obs("body.weight", _quantity(value.weight, "body.weight")))
        if value.height is not None:
            out.append(obs("body.height", _quantity(value.height, "body.height")))
        return out
    raise UnmappableRecord(f"no observation mapping for {type(value).__name__}")
