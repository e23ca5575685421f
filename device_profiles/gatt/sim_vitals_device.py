"""Virtual vital-signs device: the device side of :mod:`device_profiles.gatt.vitals_session`.

:meth:`VirtualVitalsDevice.read` answers Device Information and Current Time reads (its clock
is the hub's local time + ``clock_offset_s``), :meth:`~VirtualVitalsDevice.subscribe` records a
CCCD write, and once the main measurement characteristic is subscribed
:meth:`~VirtualVitalsDevice.pending` yields the stored measurements (as given, with their own
time stamps) then the live ones (time stamps, when the value has one, replaced by the device
clock at ``pending`` time), as ``(uuid, value)`` pairs, each once.

Faults (:class:`VitalsFaults`): ``malformed_before`` inserts a truncated value before those
measurements (0-based index over stored + live); ``nan_unused_slots`` sends NaN as the mean
arterial pressure of blood pressure values; ``reserved_flags`` sets a reserved flag bit;
``duplicate_stored`` re-indicates every stored measurement after the first pass (as after a
reconnect); ``no_current_time`` / ``no_dis`` remove those characteristics. A wrong clock is
just a ``clock_offset_s`` beyond 15 minutes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

from device_profiles.gatt.ieee11073 import DateTime, Number, Special
from device_profiles.gatt.vitals import (
    BloodPressureMeasurement,
    BodyCompositionMeasurement,
    CurrentTime,
    PlxContinuous,
    PlxSpotCheck,
    TemperatureMeasurement,
    WeightMeasurement,
    encode_blood_pressure,
    encode_body_composition,
    encode_current_time,
    encode_dis_string,
    encode_plx_continuous,
    encode_plx_spot_check,
    encode_temperature,
    encode_weight,
)
from device_profiles.gatt.vitals_session import (
    BLOOD_PRESSURE_UUID,
    BODY_COMPOSITION_UUID,
    CURRENT_TIME_UUID,
    FIRMWARE_UUID,
    MANUFACTURER_UUID,
    MODEL_UUID,
    PLX_CONTINUOUS_UUID,
    PLX_SPOT_CHECK_UUID,
    SERIAL_UUID,
    TEMPERATURE_UUID,
    WEIGHT_UUID,
    MeasurementValue,
    VitalsKind,
    measurement_uuids,
)

__all__ = ["VirtualVitalsDevice", "VitalsFaults", "encode_value", "uuid_of"]

_MAIN: Final[dict[str, int]] = {
    "blood_pressure": BLOOD_PRESSURE_UUID,
    "weight": WEIGHT_UUID,
    "temperature": TEMPERATURE_UUID,
    "pulse_oximeter": PLX_SPOT_CHECK_UUID,
}


def uuid_of(value: MeasurementValue) -> int:
    if isinstance(value, BloodPressureMeasurement):
        return BLOOD_PRESSURE_UUID
    if isinstance(value, WeightMeasurement):
        return WEIGHT_UUID
    if isinstance(value, BodyCompositionMeasurement):
        return BODY_COMPOSITION_UUID
    if isinstance(value, TemperatureMeasurement):
        return TEMPERATURE_UUID
    if isinstance(value, PlxSpotCheck):
        return PLX_SPOT_CHECK_UUID
    return PLX_CONTINUOUS_UUID


def encode_value(value: MeasurementValue) -> bytes:
    if isinstance(value, BloodPressureMeasurement):
        return encode_blood_pressure(value)
    if isinstance(value, WeightMeasurement):
        return encode_weight(value)
    if isinstance(value, BodyCompositionMeasurement):
        return encode_body_composition(value)
    if isinstance(value, TemperatureMeasurement):
        return encode_temperature(value)
    if isinstance(value, PlxSpotCheck):
        return encode_plx_spot_check(value)
    return encode_plx_continuous(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class VitalsFaults:
    malformed_before: frozenset[int] = field(default_factory=frozenset)
    nan_unused_slots: bool = False
    reserved_flags: bool = False
    duplicate_stored: bool = False
    no_current_time: bool = False
    no_dis: bool = False


def _with_faults(value: MeasurementValue, faults: VitalsFaults) -> MeasurementValue:
    if faults.nan_unused_slots and isinstance(value, BloodPressureMeasurement):
        value = dataclasses.replace(value, mean_arterial_pressure=Number(0, 0, Special.NAN))
    if faults.reserved_flags:
        if isinstance(value, BodyCompositionMeasurement):
            value = dataclasses.replace(value, reserved_flags=0x8000)
        elif isinstance(
            value, BloodPressureMeasurement | WeightMeasurement | TemperatureMeasurement
        ):
            value = dataclasses.replace(value, reserved_flags=0x80)
    return value


class VirtualVitalsDevice:
    def __init__(
        self,
        kind: VitalsKind,
        *,
        clock_offset_s: float,
        stored: Sequence[MeasurementValue] = (),
        live: Sequence[MeasurementValue] = (),
        faults: VitalsFaults | None = None,
        utc_offset: timedelta = timedelta(0),
        identity: tuple[str, str, str, str] = ("Acme Medical", "VX-1", "SN0001", "1.2.3"),
    ) -> None:
        allowed = set(measurement_uuids(kind))
        for v in (*stored, *live):
            if uuid_of(v) not in allowed:
                raise ValueError(f"{type(v).__name__} does not belong to a {kind} device")
        self.kind = kind
        self.clock_offset_s = clock_offset_s
        self.stored = list(stored)
        self.live = list(live)
        self.faults = faults if faults is not None else VitalsFaults()
        self.utc_offset = utc_offset
        self.identity = identity
        self.subscriptions: set[int] = set()
        self.sent = False

    @property
    def characteristics(self) -> frozenset[int]:
        uuids = set(measurement_uuids(self.kind))
        if not self.faults.no_dis:
            uuids |= {MANUFACTURER_UUID, MODEL_UUID, SERIAL_UUID, FIRMWARE_UUID}
        if not self.faults.no_current_time:
            uuids.add(CURRENT_TIME_UUID)
        return frozenset(uuids)

    def clock(self, now: datetime) -> datetime:
        """The device's local wall clock (naive) at hub time ``now``."""
        local = now.astimezone(UTC) + self.utc_offset + timedelta(seconds=self.clock_offset_s)
        return local.replace(tzinfo=None)

    def read(self, uuid: int, *, now: datetime) -> bytes:
        if uuid not in self.characteristics or uuid in measurement_uuids(self.kind):
            raise KeyError(f"{uuid:#06x} is not readable on this device")
        if uuid == CURRENT_TIME_UUID:
            clock = self.clock(now)
            return encode_current_time(
                CurrentTime(
                    date_time=DateTime.of(clock),
                    day_of_week=clock.isoweekday(),
                    fractions256=clock.microsecond * 256 // 1_000_000,
                    adjust_reason=frozenset(),
                )
            )
        index = (MANUFACTURER_UUID, MODEL_UUID, SERIAL_UUID, FIRMWARE_UUID).index(uuid)
        return encode_dis_string(self.identity[index])

    def subscribe(self, uuid: int) -> None:
        if uuid not in self.characteristics:
            raise KeyError(f"{uuid:#06x} is not on this device")
        self.subscriptions.add(uuid)

    def pending(self, *, now: datetime) -> list[tuple[int, bytes]]:
        if self.sent or _MAIN[self.kind] not in self.subscriptions:
            return []
        self.sent = True
        clock = DateTime.of(self.clock(now))
        out: list[tuple[int, bytes]] = []
        stored_msgs: list[tuple[int, bytes]] = []
        values: list[tuple[MeasurementValue, bool]] = [(v, True) for v in self.stored]
        values += [(v, False) for v in self.live]
        for i, (given, is_stored) in enumerate(values):
            value = given
            uuid = uuid_of(value)
            if uuid not in self.subscriptions:
                continue
            if i in self.faults.malformed_before:
                out.append((uuid, b"\x02"))  # flags say "time stamp", nothing follows
            if (
                not is_stored
                and not isinstance(value, PlxContinuous)
                and value.time_stamp is not None
            ):
                value = dataclasses.replace(value, time_stamp=clock)
            msg = (uuid, encode_value(_with_faults(value, self.faults)))
            out.append(msg)
            if is_stored:
                stored_msgs.append(msg)
        if self.faults.duplicate_stored:
            out.extend(stored_msgs)
        return out
