"""Simulated devices for the demo and the tests, until the protocol simulators of issues 3/4.

Each simulated device behaves like a meter with memory: record ``n`` (1, 2, ...) is taken at
``start + n * interval`` and its values depend only on (seed, n), so a restarted agent re-reads
exactly the same records and ids. Records that "happened" while the agent was down are waiting
for it when it comes back, as on a real meter. Values come from a patient profile; a small
share of readings can be device errors (absent value with a reason) and glucose meters report
LO/HI outside their range as comparators, never as invented numbers.

Every observation carries the ``simulated`` quality flag: simulated data is never patient data.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from device_profiles.codes import MEASURES
from device_profiles.observation import (
    AbsentReason,
    Comparator,
    DeviceIdentity,
    Observation,
    Provenance,
    QualityFlag,
    clock_quality,
)
from device_profiles.units import convert
from edge_agent.sources import BoundDevice, Sink

#: Meter measuring range (DOMAIN.md §2: meters typically 0.6-33.3 mmol/L with LO/HI, per IFU).
#: The simulated meter uses 1.1-33.3 mmol/L, a common IFU range.
SIM_METER_RANGE_MMOL: Final = (1.1, 33.3)
BATCH_MAX: Final = 100


@dataclass(frozen=True, slots=True)
class _Profile:
    glucose: tuple[float, float]  # mean, sd (mmol/L)
    sbp: tuple[float, float]
    dbp: tuple[float, float]
    pulse: tuple[float, float]
    spo2: tuple[float, float]
    temp: tuple[float, float]


_NORMAL = _Profile((6.3, 1.2), (124, 9), (79, 6), (72, 8), (97.2, 1.0), (36.8, 0.25))
PROFILES: Final[dict[str, _Profile]] = {
    "normal": _NORMAL,
    "hypo-prone": _Profile((4.6, 1.4), (120, 9), (76, 6), (78, 9), (97, 1.0), (36.7, 0.25)),
    "hyperglycaemic": _Profile((12.5, 3.0), (132, 10), (82, 7), (80, 8), (96.8, 1.0), (36.9, 0.3)),
    "hypertensive": _Profile((7.0, 1.4), (166, 14), (101, 8), (84, 12), (96.5, 1.0), (36.8, 0.3)),
    "hypoxic": _Profile((6.8, 1.3), (128, 10), (80, 7), (104, 14), (91.8, 1.8), (37.4, 0.5)),
    "febrile": _Profile((7.2, 1.5), (118, 10), (72, 7), (112, 12), (95.0, 1.4), (38.7, 0.6)),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class SimSettings:
    profile: str = "normal"
    interval_s: float = 60.0
    seed: int = 0
    max_records: int | None = None
    start: datetime | None = None
    clock_skew_s: float = 0.0
    unit: str = "mmol/L"
    error_rate: float = 0.0


def _round(v: float, nd: int) -> float:
    return float(round(v, nd))


@dataclass(frozen=True, slots=True, kw_only=True)
class _Record:
    """One record being made: its number, times, random stream and the flags every value shares."""

    n: int
    t: datetime
    rng: random.Random
    skew: float
    device_time: str
    quality: frozenset[QualityFlag]
    source: str
    error_rate: float
    key: str  # the device's own id of the record

    def failed(self) -> bool:
        """Draw whether the device reports this measurement as an error."""
        return self.error_rate > 0 and self.rng.random() < self.error_rate

    def obs(
        self,
        measure: str,
        value: float | None,
        *,
        original: tuple[float, str] | None = None,
        comparator: Comparator | None = None,
        extra_quality: frozenset[QualityFlag] = frozenset(),
    ) -> Observation:
        """An observation of this record; ``value=None`` is a device error (absent, reason)."""
        return Observation(
            measure=measure,
            unit=MEASURES[measure].unit,
            effective_time=self.t,
            record_key=self.key,
            value=value,
            comparator=comparator if value is not None else None,
            absent_reason=AbsentReason.ERROR if value is None else None,
            device_time=self.device_time,
            clock_offset_s=self.skew,
            quality=self.quality | extra_quality,
            provenance=Provenance(
                source=self.source,
                original_value=original[0] if original and value is not None else None,
                original_unit=original[1] if original and value is not None else None,
            ),
        )


class SimulatedDevice:
    """A simulated device holding records 1..N (a :class:`~edge_agent.sources.DeviceSource`)."""

    model: str = "sim"
    manufacturer: str = "remon simulator"

    def __init__(
        self,
        device: BoundDevice,
        settings: SimSettings,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._device = device
        self.settings = settings
        self._clock = clock or (lambda: datetime.now(UTC))
        self.profile = PROFILES[settings.profile]
        self.start = settings.start or self._clock()

    @property
    def device(self) -> BoundDevice:
        return self._device

    # -- records -------------------------------------------------------------------------------

    def record_time(self, n: int) -> datetime:
        return self.start + timedelta(seconds=n * self.settings.interval_s)

    def available(self, now: datetime) -> int:
        """Number of the newest record the device holds at ``now``."""
        n = int((now - self.start).total_seconds() // self.settings.interval_s)
        if self.settings.max_records is not None:
            n = min(n, self.settings.max_records)
        return max(n, 0)

    def rng(self, n: int) -> random.Random:
        return random.Random(f"{self._device.identity.key}|{self.settings.seed}|{n}")  # noqa: S311 - simulation, not crypto

    def record(self, n: int) -> list[Observation]:
        skew = self.settings.clock_skew_s
        t = self.record_time(n)
        return self.make(
            _Record(
                n=n,
                t=t,
                rng=self.rng(n),
                skew=skew,
                device_time=(t + timedelta(seconds=skew))
                .replace(tzinfo=None)
                .isoformat(timespec="seconds"),
                quality=clock_quality(skew) | {QualityFlag.SIMULATED},
                source=f"sim:{self.model}",
                error_rate=self.settings.error_rate,
                # The number alone would repeat if the meter's memory were reset; like a real
                # meter's record, it is qualified by when this memory began.
                key=f"seq:{n}@{int(self.start.timestamp())}",
            )
        )

    def make(self, r: _Record) -> list[Observation]:
        raise NotImplementedError

    # -- session -------------------------------------------------------------------------------

    async def run_session(self, sink: Sink, cursor: str | None) -> None:
        last = _parse_cursor(cursor)
        while True:
            newest = self.available(self._clock())
            while last < newest:
                upto = min(newest, last + BATCH_MAX)
                batch: list[Observation] = []
                for n in range(last + 1, upto + 1):
                    batch.extend(self.record(n))
                await sink(self._device, batch, f"seq:{upto}")
                last = upto
            if self.settings.max_records is not None and last >= self.settings.max_records:
                await asyncio.sleep(3600)  # the device holds nothing more; stay connected
                continue
            wait = (self.record_time(last + 1) - self._clock()).total_seconds()
            await asyncio.sleep(min(max(wait, 0.01), 5.0))


def _parse_cursor(cursor: str | None) -> int:
    if cursor is None:
        return 0
    if not cursor.startswith("seq:") or not cursor[4:].isdigit():
        raise ValueError(f"unreadable cursor {cursor!r}")
    return int(cursor[4:])


class SimGlucoseMeter(SimulatedDevice):
    model = "SimGluco 1"

    def make(self, r: _Record) -> list[Observation]:
        true_mmol = r.rng.gauss(*self.profile.glucose)
        if r.failed():
            return [r.obs("glucose.capillary", None)]
        lo, hi = SIM_METER_RANGE_MMOL
        comparator: Comparator | None = None
        extra: frozenset[QualityFlag] = frozenset()
        if true_mmol < lo:
            shown_mmol, comparator, extra = lo, "<", frozenset({QualityFlag.BELOW_RANGE})
        elif true_mmol > hi:
            shown_mmol, comparator, extra = hi, ">", frozenset({QualityFlag.ABOVE_RANGE})
        else:
            shown_mmol = _round(true_mmol, 1)
        original: tuple[float, str] | None = None
        value = shown_mmol
        if self.settings.unit == "mg/dL":
            # The meter displays whole mg/dL; the edge converts once and keeps the original.
            shown = float(round(convert(shown_mmol, "mmol/L", "mg/dL")))
            value, original = convert(shown, "mg/dL", "mmol/L"), (shown, "mg/dL")
        return [
            r.obs(
                "glucose.capillary",
                value,
                original=original,
                comparator=comparator,
                extra_quality=extra,
            )
        ]


class SimBloodPressureMonitor(SimulatedDevice):
    model = "SimBP 1"

    def make(self, r: _Record) -> list[Observation]:
        p = self.profile
        sbp = round(r.rng.gauss(*p.sbp))
        dbp = round(min(r.rng.gauss(*p.dbp), sbp - 15))
        pulse = round(r.rng.gauss(*p.pulse))
        if r.failed():  # a cuff error voids the whole reading
            return [r.obs("bp.systolic", None), r.obs("bp.diastolic", None)]
        return [
            r.obs("bp.systolic", float(sbp)),
            r.obs("bp.diastolic", float(dbp)),
            r.obs("pulse.cuff", float(pulse)),
        ]


class SimPulseOximeter(SimulatedDevice):
    model = "SimOx 1"

    def make(self, r: _Record) -> list[Observation]:
        # the simulated physiology never produces a saturation above 100 %
        spo2 = min(100.0, float(round(r.rng.gauss(*self.profile.spo2))))
        pulse = float(round(r.rng.gauss(*self.profile.pulse)))
        if r.failed():  # no plethysmogram: neither value
            return [r.obs("spo2", None), r.obs("pulse.oximeter", None)]
        return [r.obs("spo2", spo2), r.obs("pulse.oximeter", pulse)]


class SimThermometer(SimulatedDevice):
    model = "SimTherm 1"

    def make(self, r: _Record) -> list[Observation]:
        temp = _round(r.rng.gauss(*self.profile.temp), 1)
        return [r.obs("body.temperature", None if r.failed() else temp)]


SIMULATORS: Final[dict[str, type[SimulatedDevice]]] = {
    "sim.glucose-meter": SimGlucoseMeter,
    "sim.bp-monitor": SimBloodPressureMonitor,
    "sim.pulse-oximeter": SimPulseOximeter,
    "sim.thermometer": SimThermometer,
}


def sim_identity(kind: str, serial: str) -> DeviceIdentity:
    cls = SIMULATORS[kind]
    return DeviceIdentity(
        manufacturer=cls.manufacturer,
        model=cls.model,
        serial=serial,
        firmware="sim-1.0",
        transport="sim",
    )
