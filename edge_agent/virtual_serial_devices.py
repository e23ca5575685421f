"""Simulated serial devices for configured ``serial.*`` devices (``[serial] backend = "virtual"``).

Builds, from a device's ``[devices.virtual]`` table, the sans-I/O simulator of its kind (the
device side of the real protocol bytes) with seeded readings and the configured faults;
:class:`~edge_agent.virtual_serial.PtyDevice` puts it on a pseudo-terminal. Meters that take
new readings (``record_every_s``) are wrapped so the reading appears at the right time.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, overload

from device_profiles.serial.sim import SerialSim
from device_profiles.serial.sim_astm import AstmFaults, AstmMeterSim, AstmReading, contour_readings
from device_profiles.serial.sim_onetouch import (
    DEFAULT_SERIAL,
    OneTouchFaults,
    OneTouchReading,
    OneTouchUltra2Sim,
    ultra2_readings,
)
from edge_agent.config import DeviceSection, VirtualDeviceSection
from firmware_bridges.pef_curves import Artefact, PefCurve, pef_flow_curve
from firmware_bridges.sim_boards import (
    Behaviour,
    BoardFaults,
    BoardOptions,
    DispenserSim,
    DoseSlot,
    KioskPeripheralSim,
    PefBoardSim,
)

#: How far apart a simulated meter's stored readings are (a patient measuring ~4 times a day).
_STORED_EVERY = timedelta(hours=6)


class Growing:
    """A meter that takes a new reading every ``every_s`` seconds (the patient measures)."""

    def __init__(
        self, sim: SerialSim, every_s: float, take: Callable[[], None], start: float
    ) -> None:
        self.sim = sim
        self._every = every_s
        self._take = take
        self._next = start + every_s
        self.taken = 0

    def receive(self, data: bytes, now: float) -> None:
        self.sim.receive(data, now)

    def poll(self, now: float) -> bytes:
        if now >= self._next and not self.sim.unplugged:
            self._take()
            self.taken += 1
            self._next = now + self._every
        return self.sim.poll(now)

    def next_deadline(self) -> float | None:
        inner = self.sim.next_deadline()
        return self._next if inner is None else min(inner, self._next)

    def replug(self, now: float) -> None:
        self.sim.replug(now)

    @property
    def unplugged(self) -> bool:
        return self.sim.unplugged


def _local_now(tz: tzinfo) -> Callable[[], datetime]:
    return lambda: datetime.now(UTC).astimezone(tz).replace(tzinfo=None)


def _astm(dev: DeviceSection, v: VirtualDeviceSection, tz: tzinfo, now: float) -> SerialSim:
    local = _local_now(tz)
    first = local() - _STORED_EVERY * v.records
    readings = contour_readings(
        v.records, seed=v.seed, start=first, every=_STORED_EVERY, unit=dev.unit
    )
    sim = AstmMeterSim(
        readings,
        serial=dev.serial or f"7390-{v.seed:07d}",
        clock_offset_s=v.clock_offset_s,
        faults=AstmFaults(
            corrupt_every=v.malformed_every,
            noise_every=v.noise_every,
            drop_byte_every=v.drop_byte_every,
            unplug_after_frames=v.unplug_after,
            seed=v.seed,
        ),
        start=now,
        hub_clock=local,
    )
    if v.record_every_s is None:
        return sim
    rng = random.Random(v.seed + 1)  # noqa: S311 - simulation, not crypto

    def take() -> None:
        mmol = round(rng.uniform(4.5, 11.0), 1)
        value = mmol if dev.unit == "mmol/L" else round(mmol * 18.016)
        t = (local() + timedelta(seconds=v.clock_offset_s)).replace(second=0, microsecond=0)
        sim.add_reading(AstmReading(time=t, value=value, unit=dev.unit))

    return Growing(sim, v.record_every_s, take, now)


def _onetouch(dev: DeviceSection, v: VirtualDeviceSection, tz: tzinfo, now: float) -> SerialSim:
    local = _local_now(tz)
    first = local() - _STORED_EVERY * v.records
    readings = ultra2_readings(v.records, seed=v.seed, start=first, every=_STORED_EVERY)
    sim = OneTouchUltra2Sim(
        readings,
        local_now=local,
        serial=dev.serial or DEFAULT_SERIAL,
        clock_offset_s=v.clock_offset_s,
        faults=OneTouchFaults(
            noise_every=v.noise_every,
            bad_checksum_every=v.malformed_every,
            drop_byte_every=v.drop_byte_every,
            unplug_after_lines=v.unplug_after,
            seed=v.seed,
        ),
    )
    if v.record_every_s is None:
        return sim
    rng = random.Random(v.seed + 1)  # noqa: S311 - simulation, not crypto

    def take() -> None:
        t = (local() + timedelta(seconds=v.clock_offset_s)).replace(microsecond=0)
        sim.add_reading(OneTouchReading(time=t, value_mg_dl=rng.randint(80, 200)))

    return Growing(sim, v.record_every_s, take, now)


def _board_options(v: VirtualDeviceSection, **kw: Any) -> BoardOptions:
    return BoardOptions(
        rtc_offset=timedelta(seconds=v.clock_offset_s),
        faults=BoardFaults(
            noise_every=v.noise_every,
            corrupt_every=v.malformed_every,
            unplug_after_frames=v.unplug_after,
            seed=v.seed,
        ),
        **kw,
    )


def _board_id(dev: DeviceSection, prefix: str, v: VirtualDeviceSection) -> str:
    return dev.serial or f"{prefix}-{v.seed:05d}"


class LazyBlows(Sequence[tuple[float, PefCurve]]):
    """A blow every ``every_s`` seconds for a day, each curve made only when it is streamed."""

    def __init__(self, v: VirtualDeviceSection) -> None:
        self._v = v
        self._n = int(86_400 / v.blow_every_s)
        self._last: tuple[int, tuple[float, PefCurve]] | None = None

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, i: int) -> tuple[float, PefCurve]: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[tuple[float, PefCurve]]: ...
    def __getitem__(
        self, i: int | slice
    ) -> tuple[float, PefCurve] | Sequence[tuple[float, PefCurve]]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._n))]
        if not -self._n <= i < self._n:
            raise IndexError(i)
        i %= self._n
        if self._last is not None and self._last[0] == i:
            return self._last[1]  # the board asks for the next blow at every wake-up
        self._last = (i, self._make(i))
        return self._last[1]

    def _make(self, i: int) -> tuple[float, PefCurve]:
        v = self._v
        rng = random.Random(f"pef|{v.seed}|{i}")  # noqa: S311 - simulation, not crypto
        artefact: Artefact = "none"
        if v.artefact_every is not None and (i + 1) % v.artefact_every == 0:
            artefact = _ARTEFACTS[(i // v.artefact_every) % len(_ARTEFACTS)]
        curve = pef_flow_curve(
            pef_l_min=v.pef_l_min * rng.uniform(0.9, 1.05),
            sample_rate_hz=v.sample_rate_hz,
            time_to_peak_ms=rng.uniform(70, 110),
            fvc_l=rng.uniform(3.0, 4.5),
            artefact=artefact,
            noise_l_s=0.03,
            seed=v.seed * 100_003 + i,
        )
        return ((i + 1) * v.blow_every_s, curve)


_ARTEFACTS: tuple[Artefact, ...] = ("cough", "early_stop", "hesitation")


def _pef_board(dev: DeviceSection, v: VirtualDeviceSection, tz: tzinfo, now: float) -> SerialSim:
    return PefBoardSim(
        _board_id(dev, "PEF", v),
        blows=LazyBlows(v),
        wall_clock=lambda: datetime.now(UTC),
        sample_rate_hz=v.sample_rate_hz,
        options=_board_options(v),
    )


def _dispenser(dev: DeviceSection, v: VirtualDeviceSection, tz: tzinfo, now: float) -> SerialSim:
    """Doses every ``dose_every_s`` for a day; the first one's window closes 15 s from now, so
    what the client did with it (taken, late, missed) is known within the first minute."""
    window = timedelta(seconds=v.missed_window_s)
    first = datetime.now(UTC) - window + timedelta(seconds=15)
    n = max(1, int(86_400 / v.dose_every_s))
    schedule = [
        DoseSlot(
            dose_id=f"{(first + k * timedelta(seconds=v.dose_every_s)):%Y%m%dT%H%M}-{k:04d}",
            scheduled=first + k * timedelta(seconds=v.dose_every_s),
        )
        for k in range(n)
    ]
    cycle: tuple[Behaviour, ...] = ("on_time", "late", "misses")
    behaviour: Behaviour | list[Behaviour] = (
        [cycle[k % 3] for k in range(n)] if v.behaviour == "mixed" else v.behaviour
    )
    return DispenserSim(
        _board_id(dev, "DSP", v),
        schedule=schedule,
        wall_clock=lambda: datetime.now(UTC),
        behaviour=behaviour,
        missed_window=window,
        late_after=window / 3,
        stock=v.doses_left,
        options=_board_options(v, has_battery=True),
    )


def _kiosk_peripheral(
    dev: DeviceSection, v: VirtualDeviceSection, tz: tzinfo, now: float
) -> SerialSim:
    """A height meter (or scale) measuring a visitor every ``record_every_s`` (default 30 s)."""
    every = v.record_every_s or 30.0
    rng = random.Random(f"kiosk|{v.seed}")  # noqa: S311 - simulation, not crypto
    n = min(v.records or 100, 100_000)
    readings = [
        ((k + 1) * every, "body.height", round(rng.uniform(150.0, 195.0), 1)) for k in range(n)
    ]
    return KioskPeripheralSim(
        _board_id(dev, "KSK", v),
        measurements=readings,
        wall_clock=lambda: datetime.now(UTC),
        options=_board_options(v),
    )


def build_serial_sim(dev: DeviceSection, *, tz: tzinfo, now: float) -> SerialSim:
    """The simulator for ``dev`` (which has a ``[devices.virtual]`` table)."""
    assert dev.virtual is not None
    build = _BUILDERS[dev.kind]
    return build(dev, dev.virtual, tz, now)


_BUILDERS: dict[str, Callable[[DeviceSection, VirtualDeviceSection, tzinfo, float], SerialSim]] = {
    "serial.glucose-astm": _astm,
    "serial.glucose-onetouch": _onetouch,
    "serial.pef-board": _pef_board,
    "serial.dispenser": _dispenser,
    "serial.kiosk-peripheral": _kiosk_peripheral,
}
