"""Virtual CGM sensor: the device side of CGM service 0x181F (PROTOCOLS.md), sans-I/O.

Twin of :mod:`device_profiles.gatt.cgm_session`. :meth:`VirtualCgmSensor.read` answers the
Feature / Status / Session Start Time / Session Run Time reads, :meth:`~VirtualCgmSensor.write`
takes one SOCP write and returns its indications, :meth:`~VirtualCgmSensor.tick` advances the
sensor clock and returns the measurement notifications due, as ``(uuid, value)`` pairs.

Model: while a session runs, one record is taken every ``interval_min`` minutes of sensor time
(time offsets interval, 2 x interval, ...; the communication interval set by SOCP op 1 is used
as that cadence), values cycle through ``values_mg_dl``. At the end of a tick the backlog is sent
in notifications of at most ``records_per_notification`` records. "Start session" (op 26) is
accepted only when stopped and restarts the offsets at the sensor's current time; "stop" (27)
always succeeds.

Faults (:class:`CgmFaults`): ``crc_error_on`` corrupts the E2E-CRC of those records (1-based
count of records sent); ``malformed_notifications`` inserts a garbage notification before those
notifications (1-based); ``clock_shift`` shifts the reported session start time;
``start_time_unknown`` reports the date as unknown; ``silent_until_min`` sends nothing before
that sensor minute (the backlog follows in one go); ``duplicate_every`` re-sends every k-th record
in the next notification.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Final

from device_profiles.gatt.cgm import (
    CgmFeature,
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
    decode_socp,
    encode_cgm_feature,
    encode_cgm_measurement,
    encode_cgm_session_run_time,
    encode_cgm_session_start_time,
    encode_cgm_status,
    encode_socp,
)
from device_profiles.gatt.glucose import GlucoseType
from device_profiles.gatt.ieee11073 import DateTime, DecodeError, Number
from device_profiles.units import GLUCOSE_MG_DL_PER_MMOL_L

__all__ = [
    "GARBAGE_NOTIFICATION",
    "CgmFaults",
    "VirtualCgmSensor",
    "cgm_trace_mg_dl",
    "sfloat_of",
]

MEASUREMENT_UUID: Final = 0x2AA7
FEATURE_UUID: Final = 0x2AA8
STATUS_UUID: Final = 0x2AA9
START_TIME_UUID: Final = 0x2AAA
RUN_TIME_UUID: Final = 0x2AAB
SOCP_UUID: Final = 0x2AAC
#: Size byte says 12 bytes, only 3 follow.
GARBAGE_NOTIFICATION: Final = b"\x0c\x00\x01"
#: CGM sample location nibble "subcutaneous tissue" (not in the glucose SampleLocation enum).
_SUBCUTANEOUS_TISSUE: Final = 5
_DST_MIN: Final = {
    DstOffset.STANDARD_TIME: 0,
    DstOffset.HALF_AN_HOUR_DAYLIGHT_TIME: 30,
    DstOffset.DAYLIGHT_TIME: 60,
    DstOffset.DOUBLE_DAYLIGHT_TIME: 120,
}


#: Simulated traces stay inside the sensor's range 40-400 mg/dL (DOMAIN.md §2), as a real
#: sensor's numeric readings do (outside it a sensor reports LOW/HIGH, not a number).
_TRACE_RANGE_MG_DL: Final = (40.0, 400.0)
#: How long the simulated glucose "remembers" its past (min): an AR(1) process with this time
#: constant is smooth over a 15-min trend window, as interstitial glucose is.
_TRACE_MEMORY_MIN: Final = 60.0


def cgm_trace_mg_dl(
    *,
    mean_mmol_l: float,
    sd_mmol_l: float,
    n: int,
    seed: int,
    interval_min: int = 5,
    fall_to_mmol_l: float | None = None,
    fall_at: int | None = None,
    fall_rate_mg_dl_min: float = 2.0,
) -> list[float]:
    """A smooth simulated CGM trace in whole mg/dL: an AR(1) process around ``mean`` with
    standard deviation ``sd``. With ``fall_to_mmol_l``, the trace falls steadily at
    ``fall_rate_mg_dl_min`` to reach that value at reading ``fall_at`` (a low in the making:
    what the edge's urgent-low-soon prediction is for), then drifts back. A simulation."""
    if n < 1 or interval_min < 1 or sd_mmol_l < 0 or not math.isfinite(mean_mmol_l):
        raise ValueError("n >= 1, interval >= 1, sd >= 0 and a finite mean are needed")
    rng = random.Random(f"cgm-trace|{seed}")  # noqa: S311 - simulation
    phi = math.exp(-interval_min / _TRACE_MEMORY_MIN)
    step_sd = sd_mmol_l * math.sqrt(1 - phi * phi)
    mmol = [mean_mmol_l + rng.gauss(0.0, sd_mmol_l)]
    for _ in range(n - 1):
        mmol.append(mean_mmol_l + phi * (mmol[-1] - mean_mmol_l) + rng.gauss(0.0, step_sd))
    if fall_to_mmol_l is not None and fall_at is not None and 0 <= fall_at < n:
        step = fall_rate_mg_dl_min * interval_min / GLUCOSE_MG_DL_PER_MMOL_L  # mmol/L a reading
        # start the fall where the line from the low meets the trace (at least 4 readings back)
        k = max(4, round((mmol[max(0, fall_at - 8)] - fall_to_mmol_l) / step))
        for j in range(max(0, fall_at - k), fall_at + 1):
            mmol[j] = fall_to_mmol_l + step * (fall_at - j)
        for j in range(fall_at + 1, n):  # recovery: the AR process restarts from the low
            mmol[j] = mean_mmol_l + phi * (mmol[j - 1] - mean_mmol_l) + rng.gauss(0.0, step_sd)
    lo, hi = _TRACE_RANGE_MG_DL
    return [float(round(min(max(v * GLUCOSE_MG_DL_PER_MMOL_L, lo), hi))) for v in mmol]


def sfloat_of(value: float) -> Number:
    """``value`` as an SFLOAT with one decimal when it fits, else rounded to an integer."""
    d = Decimal(str(value)).quantize(Decimal("0.1"))
    tenths = int(d * 10)
    if -2000 <= tenths <= 2000:
        return Number(tenths, -1)
    return Number(round(value), 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class CgmFaults:
    crc_error_on: frozenset[int] = field(default_factory=frozenset)
    malformed_notifications: frozenset[int] = field(default_factory=frozenset)
    clock_shift: timedelta = timedelta(0)
    start_time_unknown: bool = False
    silent_until_min: int = 0
    duplicate_every: int | None = None

    def __post_init__(self) -> None:
        if self.duplicate_every is not None and self.duplicate_every < 1:
            raise ValueError("duplicate_every must be >= 1")


class VirtualCgmSensor:
    def __init__(
        self,
        *,
        start: datetime,
        crc: bool,
        interval_min: int = 5,
        values_mg_dl: Sequence[float],
        faults: CgmFaults | None = None,
        dst: DstOffset = DstOffset.STANDARD_TIME,
        records_per_notification: int = 1,
    ) -> None:
        offset = start.utcoffset()
        if offset is None:
            raise ValueError("start must be an aware datetime")
        if dst is DstOffset.UNKNOWN:
            raise ValueError("dst must be known")
        zone_min = offset.total_seconds() / 60 - _DST_MIN[dst]
        if zone_min % 15 or start.second or start.microsecond:
            raise ValueError("start must be whole minutes in a quarter-hour zone")
        if not 1 <= interval_min <= 0xFF or records_per_notification < 1 or not values_mg_dl:
            raise ValueError("interval 1..255, records_per_notification >= 1, some values")
        self.crc = crc
        self.interval_min = interval_min
        self.values = [sfloat_of(v) for v in values_mg_dl]
        self.faults = faults if faults is not None else CgmFaults()
        self.dst = dst
        self.time_zone = int(zone_min // 15)
        self.records_per_notification = records_per_notification
        self.session_start = start  # sensor local wall clock with its zone
        self.clock_min = 0  # minutes since power-up
        self.session_began_min = 0
        self.running = True
        self.backlog: list[CgmMeasurement] = []
        self.records_sent = 0
        self.notifications_sent = 0
        self.records_taken = 0
        self.writes: list[SocpMessage] = []

    # ------------------------------------------------------------------ reads

    @property
    def time_offset(self) -> int:
        return self.clock_min - self.session_began_min

    def read(self, uuid: int) -> bytes:
        if uuid == FEATURE_UUID:
            features = {CgmFeatureBit.MULTIPLE_SESSIONS_SUPPORTED}
            if self.crc:
                features.add(CgmFeatureBit.E2E_CRC_SUPPORTED)
            return encode_cgm_feature(
                CgmFeature(
                    features=frozenset(features),
                    cgm_type=GlucoseType.INTERSTITIAL_FLUID,
                    sample_location=_SUBCUTANEOUS_TISSUE,
                )
            )
        if uuid == STATUS_UUID:
            stopped = {CgmSensorStatus.SESSION_STOPPED} if not self.running else set()
            status = CgmStatus(time_offset=self.time_offset, sensor_status=frozenset(stopped))
            return encode_cgm_status(status, crc=self.crc)
        if uuid == START_TIME_UUID:
            local = (self.session_start + self.faults.clock_shift).replace(tzinfo=None)
            dt = (
                DateTime(0, 0, 0, 0, 0, 0) if self.faults.start_time_unknown else DateTime.of(local)
            )
            value = CgmSessionStartTime(
                session_start_time=dt, time_zone=self.time_zone, dst_offset=self.dst
            )
            return encode_cgm_session_start_time(value, crc=self.crc)
        if uuid == RUN_TIME_UUID:
            return encode_cgm_session_run_time(CgmSessionRunTime(run_time_hours=336), crc=self.crc)
        raise ValueError(f"{uuid:#06x} is not readable")

    # ------------------------------------------------------------------ SOCP

    def _response(
        self, request: SocpOpCode | int, code: SocpResponseCode
    ) -> list[tuple[int, bytes]]:
        msg = SocpMessage(
            op_code=SocpOpCode.RESPONSE_CODE, request_op_code=request, response_code=code
        )
        return [(SOCP_UUID, encode_socp(msg, crc=self.crc))]

    def write(self, uuid: int, data: bytes) -> list[tuple[int, bytes]]:
        if uuid != SOCP_UUID:
            raise ValueError(f"only the SOCP {SOCP_UUID:#06x} is writable, not {uuid:#06x}")
        try:
            msg = decode_socp(data, crc=self.crc)
        except DecodeError:
            return self._response(data[0] if data else 0, SocpResponseCode.INVALID_OPERAND)
        self.writes.append(msg)
        op = msg.op_code
        if op is SocpOpCode.SET_CGM_COMMUNICATION_INTERVAL:
            assert msg.interval_minutes is not None
            if not 1 <= msg.interval_minutes <= 60:
                return self._response(op, SocpResponseCode.PARAMETER_OUT_OF_RANGE)
            self.interval_min = msg.interval_minutes
            return self._response(op, SocpResponseCode.SUCCESS)
        if op is SocpOpCode.GET_CGM_COMMUNICATION_INTERVAL:
            reply = SocpMessage(
                op_code=SocpOpCode.CGM_COMMUNICATION_INTERVAL_RESPONSE,
                interval_minutes=self.interval_min,
            )
            return [(SOCP_UUID, encode_socp(reply, crc=self.crc))]
        if op is SocpOpCode.START_THE_SESSION:
            if self.running:
                return self._response(op, SocpResponseCode.PROCEDURE_NOT_COMPLETED)
            self.session_start += timedelta(minutes=self.time_offset)
            self.session_began_min = self.clock_min
            self.running = True
            return self._response(op, SocpResponseCode.SUCCESS)
        if op is SocpOpCode.STOP_THE_SESSION:
            self.running = False
            self.backlog.clear()
            return self._response(op, SocpResponseCode.SUCCESS)
        return self._response(op, SocpResponseCode.OP_CODE_NOT_SUPPORTED)

    # ------------------------------------------------------------------ measurements

    def tick(self, minutes: int) -> list[tuple[int, bytes]]:
        if minutes < 0:
            raise ValueError("time does not run backwards")
        for _ in range(minutes):
            self.clock_min += 1
            off = self.time_offset
            if self.running and off % self.interval_min == 0 and off <= 0xFFFF:
                value = self.values[self.records_taken % len(self.values)]
                self.records_taken += 1
                self.backlog.append(CgmMeasurement(glucose_mg_dl=value, time_offset=off))
        if self.clock_min < self.faults.silent_until_min:
            return []
        out: list[tuple[int, bytes]] = []
        k = self.records_per_notification
        while self.backlog:
            batch, self.backlog = self.backlog[:k], self.backlog[k:]
            self.notifications_sent += 1
            if self.notifications_sent in self.faults.malformed_notifications:
                out.append((MEASUREMENT_UUID, GARBAGE_NOTIFICATION))
            payload = b""
            for m in batch:
                self.records_sent += 1
                record = encode_cgm_measurement(m, crc=self.crc)
                if self.crc and self.records_sent in self.faults.crc_error_on:
                    record = record[:-1] + bytes([record[-1] ^ 0xFF])
                payload += record
                every = self.faults.duplicate_every
                if every is not None and self.records_sent % every == 0:
                    payload += encode_cgm_measurement(m, crc=self.crc)
            out.append((MEASUREMENT_UUID, payload))
        return out
