"""Simulated Ascensia (Bayer) Contour meter: the sender's side of :mod:`.astm` (sans-I/O).

Implements :class:`~device_profiles.serial.sim.SerialSim`. A meter holding readings it has not
delivered sends ENQ, again every ``enq_retry_s`` until a host answers ACK (the host may open the
port late; a NAK means "busy, later"). Then it sends its whole memory as one message, Contour
style (:func:`~device_profiles.serial.astm.message_chunks`): H, P, one R per reading in memory
order, L; each frame waits for ACK, a NAK sends the same frame again (at most
:data:`~device_profiles.serial.astm.MAX_TRANSMISSIONS` transmissions, then EOT), no answer
within 15 s sends EOT. A transfer that ended early is tried again from ENQ after ``enq_retry_s``.
After a complete transfer (EOT) the meter is quiet until :meth:`AstmMeterSim.add_reading` (a new
test) or :meth:`AstmMeterSim.retransmit` (the patient asks again): it then sends everything again.

Header: ``H|\\^&||<access code>|Bayer<model>^<firmware>\\01.04\\04.02.19^<serial>^7396-|<config>|
<count>||||||1|<meter time>``, the meter time being ``hub_clock()`` + ``clock_offset_s`` to the
second; without ``hub_clock`` the field is left empty (the host then has no offset to measure).

Faults (:class:`AstmFaults`, "every N-th" counted over first transmissions of frames since the
meter was made): ``corrupt_every`` sends the frame with a wrong checksum (its repeat is good);
``noise_every`` puts 1-12 random bytes (never STX, ENQ, EOT) before the frame; ``drop_byte_every``
loses one random byte of the frame; ``skip_frame_number_at`` sends that frame once with the next
frame number; ``unplug_after_frames`` pulls the cable after that many frames were sent (once;
:meth:`AstmMeterSim.replug` plugs it in again).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum, auto
from typing import Final

from device_profiles.serial.astm import (
    ACK,
    ENQ,
    EOT,
    MAX_TRANSMISSIONS,
    NAK,
    SENDER_ACK_TIMEOUT_S,
    STX,
    checksum,
    escape,
    frame,
    message_chunks,
)
from device_profiles.units import GLUCOSE_MG_DL_PER_MMOL_L

__all__ = [
    "AstmFaults",
    "AstmMeterSim",
    "AstmReading",
    "contour_readings",
    "header_record",
    "result_record",
]

#: Contour meter range (IFU: 0.6-33.3 mmol/L, 10-600 mg/dL; header ``V=10600``).
RANGE_MMOL_L: Final = (0.6, 33.3)
RANGE_MG_DL: Final = (10, 600)
_NOISE_BYTES: Final = bytes(b for b in range(256) if b not in (STX, ENQ, EOT))
_UNITS: Final = ("mmol/L", "mg/dL")


@dataclass(frozen=True, slots=True, kw_only=True)
class AstmFaults:
    corrupt_every: int | None = None
    noise_every: int | None = None
    drop_byte_every: int | None = None
    skip_frame_number_at: int | None = None
    unplug_after_frames: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in (
            "corrupt_every",
            "noise_every",
            "drop_byte_every",
            "skip_frame_number_at",
            "unplug_after_frames",
        ):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be >= 1")


@dataclass(frozen=True, slots=True)
class AstmReading:
    time: datetime  # naive, the meter's clock
    value: float
    unit: str  # "mmol/L" or "mg/dL"
    markers: str = ""  # the R record's marker field as sent, e.g. "B", "A/Z1", "<", "C"

    def __post_init__(self) -> None:
        if self.unit not in _UNITS:
            raise ValueError(f"unit must be one of {_UNITS}, got {self.unit!r}")
        if not 0 <= self.value < 1e6:
            raise ValueError(f"value {self.value} is not a glucose reading")


def _number(value: float) -> str:
    return f"{value:.4f}".rstrip("0").rstrip(".")


def _stamp(t: datetime) -> str:
    return f"{t:%Y%m%d%H%M}" + (f"{t.second:02d}" if t.second else "")


def result_record(seq: int, r: AstmReading) -> str:
    """``R|seq|^^^Glucose|value|unit^P||markers||YYYYMMDDhhmm[ss]``."""
    return (
        f"R|{seq}|^^^Glucose|{_number(r.value)}|{escape(r.unit)}^P||{escape(r.markers)}"
        f"||{_stamp(r.time)}"
    )


def header_record(
    *,
    model: str,
    serial: str,
    firmware: str,
    count: int,
    unit: str,
    meter_time: datetime | None,
    access_code: str = "000000",  # E1394 H field 4, "access password"; meters send a random one
) -> str:
    units_flag = "1" if unit == "mmol/L" else "0"  # U=1 mmol/L, U=0 mg/dL
    sender = f"Bayer{escape(model)}^{escape(firmware)}\\01.04\\04.02.19^{escape(serial)}^7396-"
    config = f"A=1^C=63^G=1^I=0200^R=0^S=1^U={units_flag}^V=10600^Z=1"
    when = f"{meter_time:%Y%m%d%H%M%S}" if meter_time is not None else ""
    return f"H|\\^&||{access_code}|{sender}|{config}|{count}||||||1|{when}"


class _State(Enum):
    IDLE = auto()  # nothing to deliver
    CONTEND = auto()  # sending ENQ until ACKed
    SEND = auto()  # a transfer is under way
    END = auto()  # every frame ACKed: EOT next
    ABORT = auto()  # giving up: EOT next, then ENQ again


class AstmMeterSim:
    def __init__(
        self,
        readings: Sequence[AstmReading],
        *,
        model: str = "7390",
        serial: str = "7390-0000001",
        firmware: str = "01.24",
        clock_offset_s: float = 0.0,
        faults: AstmFaults | None = None,
        enq_retry_s: float = 1.0,
        start: float = 0.0,
        hub_clock: Callable[[], datetime] | None = None,
        patient_id: str = "",
    ) -> None:
        self.readings = list(readings)
        self.model, self.serial, self.firmware = model, serial, firmware
        self.clock_offset_s = clock_offset_s
        self.faults = faults or AstmFaults()
        self.enq_retry_s = enq_retry_s
        self.hub_clock = hub_clock
        self.patient_id = patient_id
        self.frames_sent = 0
        self.retransmissions = 0
        self.transfers_completed = 0
        self.transfers_aborted = 0
        self._rng = random.Random(self.faults.seed)  # noqa: S311 - fault injection, not crypto
        self._state = _State.CONTEND if self.readings else _State.IDLE
        self._timer: float | None = start if self.readings else None
        self._now = start
        self._dirty = bool(self.readings)  # memory changed since the last transfer began
        self._chunks: list[tuple[str, bool]] = []
        self._index = 0
        self._failures = 0  # NAKs for the current frame
        self._awaiting = False
        self._first_tx = 0  # first transmissions of frames, for the "every N-th" faults
        self._out = bytearray()
        self._unplugged = False

    # ------------------------------------------------------------------ patient actions

    def add_reading(self, reading: AstmReading) -> None:
        """The meter took a reading: it will send its memory again."""
        self.readings.append(reading)
        self.retransmit()

    def retransmit(self) -> None:
        """The patient asks the meter to send its memory again."""
        self._dirty = True
        if self._state is _State.IDLE:
            self._state, self._timer = _State.CONTEND, self._now

    # ------------------------------------------------------------------ SerialSim

    @property
    def unplugged(self) -> bool:
        return self._unplugged

    def replug(self, now: float) -> None:
        """Plugged in again: a transfer in progress is gone; memory, clock and counters stay (so
        ``unplug_after_frames`` acts once). Connecting the cable starts a transfer of the whole
        memory, as it does on Contour meters."""
        self._unplugged = False
        self._now = max(self._now, now)
        self._out.clear()
        self._awaiting = False
        self._dirty = True
        self._state, self._timer = _State.CONTEND, now

    def next_deadline(self) -> float | None:
        return None if self._unplugged else self._timer

    def receive(self, data: bytes, now: float) -> None:
        self._now = max(self._now, now)
        if self._unplugged:
            return
        for b in data:
            if self._state is _State.CONTEND and b == ACK:
                self._begin(now)
            elif self._state is _State.CONTEND and b == NAK:
                self._timer = now + self.enq_retry_s  # host busy
            elif self._state is _State.SEND and self._awaiting and b in (ACK, NAK):
                self._awaiting = False
                self._timer = now
                if b == ACK:
                    self._index, self._failures = self._index + 1, 0
                    if self._index == len(self._chunks):
                        self._state = _State.END
                else:
                    self._failures += 1
                    if self._failures >= MAX_TRANSMISSIONS:
                        self._state = _State.ABORT

    def poll(self, now: float) -> bytes:
        self._now = max(self._now, now)
        if self._unplugged:
            return b""
        if self._timer is not None and now >= self._timer:
            self._timer = None
            self._fire(now)
        data = bytes(self._out)
        self._out.clear()
        return data

    # ------------------------------------------------------------------ internals

    def _fire(self, now: float) -> None:
        if self._state is _State.CONTEND:
            self._out.append(ENQ)
            self._timer = now + self.enq_retry_s
        elif self._state is _State.END:
            self._out.append(EOT)
            self.transfers_completed += 1
            self._state = _State.CONTEND if self._dirty else _State.IDLE
            self._timer = now + self.enq_retry_s if self._dirty else None
        elif self._state is _State.ABORT or self._awaiting:  # NAKed too often, or no answer
            self._out.append(EOT)
            self.transfers_aborted += 1
            self._dirty = True  # the memory was not delivered
            self._awaiting = False
            self._state, self._timer = _State.CONTEND, now + self.enq_retry_s
        else:
            self._send_frame(now)

    def _begin(self, now: float) -> None:
        self._dirty = False
        records = [self._header(), f"P|1||{escape(self.patient_id)}" if self.patient_id else "P|1"]
        records += [result_record(i, r) for i, r in enumerate(self.readings, start=1)]
        records.append("L|1||N")
        self._chunks = message_chunks(records)
        self._index, self._failures, self._awaiting = 0, 0, False
        self._state, self._timer = _State.SEND, now

    def _header(self) -> str:
        meter_time = None
        if self.hub_clock is not None:
            meter_time = self.hub_clock() + timedelta(seconds=self.clock_offset_s)
        return header_record(
            model=self.model,
            serial=self.serial,
            firmware=self.firmware,
            count=len(self.readings),
            unit=self.readings[0].unit if self.readings else "mmol/L",
            meter_time=meter_time,
            access_code=f"{self._rng.randrange(16**6):06x}",
        )

    def _send_frame(self, now: float) -> None:
        text, final = self._chunks[self._index]
        number = (1 + self._index) % 8
        data = frame(number, text, final)
        if self._failures:
            self.retransmissions += 1
        else:
            data = self._faulty(number, text, final, data)
        self._out += data
        self.frames_sent += 1
        self._awaiting, self._timer = True, now + SENDER_ACK_TIMEOUT_S
        limit = self.faults.unplug_after_frames  # counted since the meter was made: acts once
        if self.frames_sent == limit:
            self._unplugged = True

    def _faulty(self, number: int, text: str, final: bool, data: bytes) -> bytes:
        f, rng = self.faults, self._rng
        self._first_tx += 1
        n = self._first_tx

        def every(k: int | None) -> bool:
            return k is not None and n % k == 0

        if n == f.skip_frame_number_at:
            data = frame((number + 1) % 8, text, final)
        if every(f.corrupt_every):
            good = int(checksum(data[1:-4]), 16)
            data = data[:-4] + f"{good ^ 0x5A:02X}".encode("ascii") + data[-2:]
        if every(f.drop_byte_every):
            i = rng.randrange(len(data))
            data = data[:i] + data[i + 1 :]
        if every(f.noise_every):
            data = bytes(rng.choice(_NOISE_BYTES) for _ in range(rng.randint(1, 12))) + data
        return data


def contour_readings(
    n: int,
    *,
    seed: int,
    start: datetime,
    every: timedelta,
    unit: str = "mmol/L",
    control_solution: bool = False,
    out_of_range: bool = True,
) -> list[AstmReading]:
    """``n`` plausible capillary glucose readings, oldest first: mostly 4-12 mmol/L, about 40 %
    before-meal and 30 % after-meal markers; with ``out_of_range`` about 3 % LO and 3 % HI (the
    meter's range limit with ``<`` / ``>``); with ``control_solution`` the middle reading is a
    control-solution test (marker ``C``)."""
    if unit not in _UNITS:
        raise ValueError(f"unit must be one of {_UNITS}")
    rng = random.Random(seed)  # noqa: S311 - test data, not crypto
    lo, hi = RANGE_MMOL_L if unit == "mmol/L" else RANGE_MG_DL
    out: list[AstmReading] = []
    for i in range(n):
        when = start + every * i
        u = rng.random()
        markers = "B" if u < 0.4 else "A" if u < 0.7 else ""
        v = rng.random()
        if control_solution and i == n // 2:
            value, markers = (6.1 if unit == "mmol/L" else 110.0), "C"
        elif out_of_range and v < 0.03:
            value, markers = float(lo), "<"
        elif out_of_range and v < 0.06:
            value, markers = float(hi), ">"
        else:
            mmol = min(12.0, max(4.0, rng.gauss(7.0, 2.0)))
            value = (
                round(mmol, 1)
                if unit == "mmol/L"
                else float(round(mmol * GLUCOSE_MG_DL_PER_MMOL_L))
            )
        out.append(AstmReading(time=when, value=value, unit=unit, markers=markers))
    return out
