"""Sans-I/O session for indication-based health devices (PROTOCOLS.md "Vital-sign services").

Twin of :mod:`device_profiles.gatt.cgm_session` in shape (h11 style): the transport calls
:meth:`VitalsSession.start`, :meth:`~VitalsSession.receive` (read answers, notifications,
indications), :meth:`~VitalsSession.read_failed` (a read the device refused or does not have),
:meth:`~VitalsSession.timeout` (when the timer it was asked to start fires) and
:meth:`~VitalsSession.disconnected`. Each call returns ``list[Command | Event]`` in order.

Flow: read Device Information strings (manufacturer 0x2A29, model 0x2A24, serial 0x2A25,
firmware 0x2A26) and Current Time 0x2A2B, one at a time -> :class:`DeviceIdentified` and
:class:`ClockRead` -> subscribe the measurement characteristics of the kind -> one
:class:`Measurement` per measurement value (:class:`CuffPressure` for intermediate cuff pressure).

Decisions (PROTOCOLS.md "Device clocks and identity"):

* ``available`` (the characteristic uuids the transport discovered) restricts reads and
  subscriptions; None means "assume all present". A read that fails, is refused or is not answered
  within ``response_timeout_s`` counts as missing: the field is None and the session goes on.
* Clock offset ``offset_s`` = device Current Time (device local wall clock, with its 1/256 s
  fraction) - hub local wall time of the read (``now`` converted to UTC + ``hub_utc_offset``).
  Positive = device clock ahead. ``flagged`` when ``|offset| > CLOCK_OFFSET_FLAG_LIMIT``.
  Without a (decodable) Current Time, ``ClockRead`` has ``device_time=None, offset_s=None``,
  and record times are taken at face value in the hub's zone (offset 0, unverified).
* Corrected time (UTC) = device time stamp - offset - hub_utc_offset. A measurement with no
  time stamp (or an unknown date) gets the hub receive time and is always live.
* Stored vs live: ``stored`` when the corrected time is older than the connection time (the
  ``now`` given to :meth:`~VitalsSession.start`) by more than ``live_window_s`` (default 60 s:
  covers clock read jitter, the device's whole-second resolution and the time a cuff takes).
* Duplicates: a time-stamped measurement whose exact bytes on the same characteristic were
  already reported in this session (or are in ``known_keys``, e.g. kept by the caller across
  reconnects; see :attr:`~VitalsSession.seen_keys`) is dropped and counted in
  :attr:`~VitalsSession.duplicates`. Values without a time stamp are never deduplicated: two
  identical live readings are two readings.
* PLX readings that are not ``clinically_usable`` are still reported, with
  ``clinically_usable=False``; the caller must not raise clinical alerts on them.
* Undecodable values yield :class:`MalformedData` and the session goes on; a value on a
  characteristic we did not subscribe yields :class:`UnexpectedValue`. Measurements arriving
  before the clock was read are held and processed once it is.
* ``idle_timeout_s``: no measurement for that long after subscribing -> :class:`SessionIdle`
  and the session ends (the transport may then disconnect). :meth:`disconnected` ends it with
  :class:`SessionEnded`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Final, Literal

from device_profiles.gatt.glucose_download import (
    CancelTimer,
    EnableIndications,
    EnableNotifications,
    LocalProtocolError,
    MalformedData,
    StartTimer,
)
from device_profiles.gatt.ieee11073 import DateTime, DecodeError, Number
from device_profiles.gatt.vitals import (
    BloodPressureMeasurement,
    BodyCompositionMeasurement,
    PlxContinuous,
    PlxSpotCheck,
    TemperatureMeasurement,
    WeightMeasurement,
    decode_blood_pressure,
    decode_body_composition,
    decode_current_time,
    decode_dis_string,
    decode_intermediate_cuff_pressure,
    decode_plx_continuous,
    decode_plx_spot_check,
    decode_temperature,
    decode_weight,
)
from device_profiles.observation import CLOCK_OFFSET_FLAG_LIMIT

__all__ = [
    "BATTERY_LEVEL_UUID",
    "BATTERY_SERVICE_UUID",
    "BLOOD_PRESSURE_UUID",
    "BODY_COMPOSITION_UUID",
    "CUFF_PRESSURE_UUID",
    "CURRENT_TIME_UUID",
    "DIS_UUIDS",
    "FIRMWARE_UUID",
    "MANUFACTURER_UUID",
    "MODEL_UUID",
    "PLX_CONTINUOUS_UUID",
    "PLX_SPOT_CHECK_UUID",
    "SERIAL_UUID",
    "TEMPERATURE_UUID",
    "WEIGHT_UUID",
    "CancelTimer",
    "ClockRead",
    "Command",
    "CuffPressure",
    "DeviceIdentified",
    "EnableIndications",
    "EnableNotifications",
    "Event",
    "LocalProtocolError",
    "MalformedData",
    "Measurement",
    "MeasurementValue",
    "Output",
    "ReadCharacteristic",
    "SessionEnded",
    "SessionIdle",
    "StartTimer",
    "UnexpectedValue",
    "VitalsKind",
    "VitalsSession",
    "measurement_uuids",
]

MANUFACTURER_UUID: Final = 0x2A29
MODEL_UUID: Final = 0x2A24
SERIAL_UUID: Final = 0x2A25
FIRMWARE_UUID: Final = 0x2A26
DIS_UUIDS: Final = (MANUFACTURER_UUID, MODEL_UUID, SERIAL_UUID, FIRMWARE_UUID)
CURRENT_TIME_UUID: Final = 0x2A2B
#: Battery Service and its Battery Level (percent), read by every BLE source when present.
BATTERY_SERVICE_UUID: Final = 0x180F
BATTERY_LEVEL_UUID: Final = 0x2A19
BLOOD_PRESSURE_UUID: Final = 0x2A35
CUFF_PRESSURE_UUID: Final = 0x2A36
TEMPERATURE_UUID: Final = 0x2A1C
WEIGHT_UUID: Final = 0x2A9D
BODY_COMPOSITION_UUID: Final = 0x2A9C
PLX_SPOT_CHECK_UUID: Final = 0x2A5E
PLX_CONTINUOUS_UUID: Final = 0x2A5F

VitalsKind = Literal["blood_pressure", "weight", "temperature", "pulse_oximeter"]

MeasurementValue = (
    BloodPressureMeasurement
    | WeightMeasurement
    | BodyCompositionMeasurement
    | TemperatureMeasurement
    | PlxSpotCheck
    | PlxContinuous
)

#: Per kind: (uuid, indicate?, required?) of the characteristics to subscribe.
_SUBSCRIPTIONS: Final[dict[str, tuple[tuple[int, bool, bool], ...]]] = {
    "blood_pressure": ((BLOOD_PRESSURE_UUID, True, True), (CUFF_PRESSURE_UUID, False, False)),
    "weight": ((WEIGHT_UUID, True, True), (BODY_COMPOSITION_UUID, True, False)),
    "temperature": ((TEMPERATURE_UUID, True, True),),
    "pulse_oximeter": ((PLX_SPOT_CHECK_UUID, True, True), (PLX_CONTINUOUS_UUID, False, False)),
}

_DECODERS: Final[dict[int, Callable[[bytes], MeasurementValue]]] = {
    BLOOD_PRESSURE_UUID: decode_blood_pressure,
    WEIGHT_UUID: decode_weight,
    BODY_COMPOSITION_UUID: decode_body_composition,
    TEMPERATURE_UUID: decode_temperature,
    PLX_SPOT_CHECK_UUID: decode_plx_spot_check,
    PLX_CONTINUOUS_UUID: decode_plx_continuous,
}


def measurement_uuids(kind: VitalsKind) -> tuple[int, ...]:
    """All characteristics a session of this kind subscribes to (when present)."""
    return tuple(u for u, _, _ in _SUBSCRIPTIONS[kind])


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadCharacteristic:
    """Read this value; pass the answer to :meth:`VitalsSession.receive` with the same uuid
    (or call :meth:`VitalsSession.read_failed` when the read fails)."""

    uuid: int


Command = ReadCharacteristic | EnableNotifications | EnableIndications | StartTimer | CancelTimer


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceIdentified:
    manufacturer: str | None
    model: str | None
    serial: str | None
    firmware: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ClockRead:
    """``device_time`` is the device's local wall clock; None when it has no usable clock."""

    device_time: datetime | None
    offset_s: float | None
    flagged: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Measurement:
    kind: VitalsKind
    uuid: int
    value: MeasurementValue
    device_time: datetime | None  # the measurement's own time stamp (device local), if any
    corrected_time_utc: datetime
    received_at: datetime
    offset_s: float | None
    stored: bool
    clinically_usable: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class CuffPressure:
    """Intermediate cuff pressure while the cuff inflates/deflates: progress, not a reading."""

    pressure: Number
    unit: str
    received_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class UnexpectedValue:
    uuid: int
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionIdle:
    silent_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionEnded:
    reason: str


Event = (
    DeviceIdentified
    | ClockRead
    | Measurement
    | CuffPressure
    | MalformedData
    | UnexpectedValue
    | SessionIdle
    | SessionEnded
)
Output = Command | Event


# --------------------------------------------------------------------------- state machine


class _State(Enum):
    IDLE = "idle"
    READING = "reading"
    STREAMING = "streaming"
    CLOSED = "closed"


def _aware(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise LocalProtocolError("now must be an aware datetime")
    return now.astimezone(UTC)


def _time_stamp(value: MeasurementValue) -> DateTime | None:
    if isinstance(value, PlxContinuous):
        return None
    return value.time_stamp


class VitalsSession:
    """One connection to a blood pressure monitor, weight scale, thermometer or pulse oximeter."""

    def __init__(
        self,
        kind: VitalsKind,
        *,
        hub_utc_offset: timedelta = timedelta(0),
        available: Iterable[int] | None = None,
        response_timeout_s: float = 10.0,
        idle_timeout_s: float | None = None,
        live_window_s: float = 60.0,
        known_keys: Iterable[tuple[int, bytes]] = (),
    ) -> None:
        if kind not in _SUBSCRIPTIONS:
            raise ValueError(f"unknown kind {kind!r}")
        if not response_timeout_s > 0:
            raise ValueError("response_timeout_s must be positive")
        if idle_timeout_s is not None and not idle_timeout_s > 0:
            raise ValueError("idle_timeout_s must be positive")
        if live_window_s < 0:
            raise ValueError("live_window_s must not be negative")
        self.kind: VitalsKind = kind
        self.hub_utc_offset = hub_utc_offset
        self.available = frozenset(available) if available is not None else None
        self.response_timeout_s = response_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.live_window_s = live_window_s
        self._state = _State.IDLE
        self._reads: list[int] = []
        self._pending_read: int | None = None
        self._read_since: datetime | None = None
        self._dis: dict[int, str] = {}
        self._device_clock: datetime | None = None
        self._offset_s: float | None = None
        self._connected_at: datetime | None = None
        self._subscribed: frozenset[int] = frozenset()
        self._held: list[tuple[int, bytes, datetime]] = []
        self._last_rx: datetime | None = None
        self._seen: set[tuple[int, bytes]] = set(known_keys)
        self.duplicates = 0
        self.malformed_count = 0

    # ------------------------------------------------------------------ public state

    @property
    def finished(self) -> bool:
        return self._state is _State.CLOSED

    @property
    def streaming(self) -> bool:
        return self._state is _State.STREAMING

    @property
    def offset_s(self) -> float | None:
        return self._offset_s

    @property
    def seen_keys(self) -> frozenset[tuple[int, bytes]]:
        """Dedup keys (uuid, bytes) of time-stamped measurements reported so far."""
        return frozenset(self._seen)

    @property
    def subscribed(self) -> frozenset[int]:
        return self._subscribed

    # ------------------------------------------------------------------ inputs

    def start(self, *, now: datetime) -> list[Output]:
        if self._state is not _State.IDLE:
            raise LocalProtocolError("start() called twice")
        now = _aware(now)
        self._state = _State.READING
        self._connected_at = now
        self._reads = [u for u in (*DIS_UUIDS, CURRENT_TIME_UUID) if self._present(u)]
        return self._next_read(now)

    def receive(self, uuid: int, data: bytes, *, now: datetime) -> list[Output]:
        if self._state in (_State.IDLE, _State.CLOSED):
            raise LocalProtocolError(f"receive() in state {self._state.value}")
        now = _aware(now)
        data = bytes(data)
        if uuid == self._pending_read and self._state is _State.READING:
            self._on_read(uuid, data, now)
            return self._next_read(now)
        if uuid in measurement_uuids(self.kind):
            if self._state is _State.READING:
                self._held.append((uuid, data, now))
                return []
            if uuid not in self._subscribed:
                return [UnexpectedValue(uuid=uuid, detail="not subscribed")]
            out = self._on_measurement(uuid, data, now)
            self._last_rx = now
            return [*out, *self._idle_timer()]
        if uuid in (*DIS_UUIDS, CURRENT_TIME_UUID, *_DECODERS, CUFF_PRESSURE_UUID):
            return [UnexpectedValue(uuid=uuid, detail=f"in state {self._state.value}")]
        raise LocalProtocolError(f"characteristic {uuid:#06x} is not part of this procedure")

    def read_failed(self, uuid: int, *, now: datetime) -> list[Output]:
        """The device refused the read of ``uuid`` or does not have it: treated as missing."""
        if self._state is not _State.READING or uuid != self._pending_read:
            raise LocalProtocolError(f"no read of {uuid:#06x} outstanding")
        return self._next_read(_aware(now))

    def timeout(self, now: datetime) -> list[Output]:
        if self._state in (_State.IDLE, _State.CLOSED):
            return []
        now = _aware(now)
        if self._state is _State.READING:
            assert self._read_since is not None
            waited = (now - self._read_since).total_seconds()
            if waited < self.response_timeout_s:
                return [StartTimer(seconds=self.response_timeout_s - waited)]
            return self._next_read(now)  # unanswered read: missing
        if self.idle_timeout_s is None:
            return []
        since = self._last_rx if self._last_rx is not None else now
        silent = (now - since).total_seconds()
        if silent < self.idle_timeout_s:
            return [StartTimer(seconds=self.idle_timeout_s - silent)]
        self._state = _State.CLOSED
        return [CancelTimer(), SessionIdle(silent_s=silent)]

    def disconnected(self) -> list[Output]:
        if self._state in (_State.IDLE, _State.CLOSED):
            self._state = _State.CLOSED
            return []
        self._state = _State.CLOSED
        return [CancelTimer(), SessionEnded(reason="disconnected")]

    # ------------------------------------------------------------------ helpers

    def _present(self, uuid: int) -> bool:
        return self.available is None or uuid in self.available

    def _idle_timer(self) -> list[Output]:
        if self.idle_timeout_s is not None:
            return [StartTimer(seconds=self.idle_timeout_s)]
        return []

    def _next_read(self, now: datetime) -> list[Output]:
        if self._reads:
            uuid = self._reads.pop(0)
            self._pending_read = uuid
            self._read_since = now
            return [ReadCharacteristic(uuid=uuid), StartTimer(seconds=self.response_timeout_s)]
        self._pending_read = None
        self._read_since = None
        return self._subscribe(now)

    def _on_read(self, uuid: int, data: bytes, now: datetime) -> None:
        try:
            if uuid == CURRENT_TIME_UUID:
                clock = decode_current_time(data).date_time
                value = clock.value
                if value is None:
                    return
                frac = decode_current_time(data).fractions256 / 256
                hub_local = (now + self.hub_utc_offset).replace(tzinfo=None)
                self._device_clock = value
                self._offset_s = (value - hub_local).total_seconds() + frac
            else:
                self._dis[uuid] = decode_dis_string(data)
        except DecodeError:
            # Identity and clock are optional: a garbled one is treated as missing.
            self.malformed_count += 1

    def _subscribe(self, now: datetime) -> list[Output]:
        out: list[Output] = [CancelTimer()]
        out.append(
            DeviceIdentified(
                manufacturer=self._dis.get(MANUFACTURER_UUID),
                model=self._dis.get(MODEL_UUID),
                serial=self._dis.get(SERIAL_UUID),
                firmware=self._dis.get(FIRMWARE_UUID),
            )
        )
        flagged = (
            self._offset_s is not None
            and abs(self._offset_s) > CLOCK_OFFSET_FLAG_LIMIT.total_seconds()
        )
        out.append(
            ClockRead(device_time=self._device_clock, offset_s=self._offset_s, flagged=flagged)
        )
        subscribed: set[int] = set()
        for uuid, indicate, required in _SUBSCRIPTIONS[self.kind]:
            if required or self._present(uuid):
                subscribed.add(uuid)
                cmd = EnableIndications(uuid=uuid) if indicate else EnableNotifications(uuid=uuid)
                out.append(cmd)
        self._subscribed = frozenset(subscribed)
        self._state = _State.STREAMING
        self._last_rx = now
        held, self._held = self._held, []
        for uuid, data, at in held:
            if uuid in self._subscribed:
                out.extend(self._on_measurement(uuid, data, at))
        out.extend(self._idle_timer())
        return out

    def _on_measurement(self, uuid: int, data: bytes, now: datetime) -> list[Output]:
        if uuid == CUFF_PRESSURE_UUID:
            try:
                cuff = decode_intermediate_cuff_pressure(data)
            except DecodeError as exc:
                self.malformed_count += 1
                return [MalformedData(uuid=uuid, offset=exc.offset, detail=str(exc))]
            # The current cuff pressure travels in the systolic slot.
            return [CuffPressure(pressure=cuff.systolic, unit=cuff.unit, received_at=now)]
        try:
            value = _DECODERS[uuid](data)
        except DecodeError as exc:
            self.malformed_count += 1
            return [MalformedData(uuid=uuid, offset=exc.offset, detail=str(exc))]
        stamp = _time_stamp(value)
        device_time = stamp.value if stamp is not None else None
        if device_time is not None:
            key = (uuid, data)
            if key in self._seen:
                self.duplicates += 1
                return []
            self._seen.add(key)
            offset = self._offset_s if self._offset_s is not None else 0.0
            corrected = (device_time - timedelta(seconds=offset) - self.hub_utc_offset).replace(
                tzinfo=UTC
            )
            assert self._connected_at is not None
            age = (self._connected_at - corrected).total_seconds()
            stored = age > self.live_window_s
        else:
            corrected, stored = now, False
        usable = (
            value.clinically_usable if isinstance(value, PlxSpotCheck | PlxContinuous) else True
        )
        return [
            Measurement(
                kind=self.kind,
                uuid=uuid,
                value=value,
                device_time=device_time,
                corrected_time_utc=corrected,
                received_at=now,
                offset_s=self._offset_s,
                stored=stored,
                clinically_usable=usable,
            )
        ]
