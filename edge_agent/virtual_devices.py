"""Virtual peripherals for configured BLE devices (``[ble] backend = "virtual"``).

Builds, from a device's ``[devices.virtual]`` table, the bumble peripheral of its kind at its
address, with plausible readings from the device's simulator profile (seeded, so a restart
serves the same stored records) and the configured faults. Values are what a device of that
kind sends on the wire: glucose in kg/L (mg/dL x 10^-5), CGM in mg/dL, cuff pressures in mmHg.
Imported only when the agent runs virtual peripherals (bumble is the ``virtual`` extra).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal

from device_profiles.gatt.glucose import (
    ConcentrationUnit,
    GlucoseMeasurement,
    GlucoseType,
    SampleLocation,
    SensorStatus,
)
from device_profiles.gatt.ieee11073 import DateTime, Number
from device_profiles.gatt.sim_cgm_sensor import VirtualCgmSensor, cgm_trace_mg_dl
from device_profiles.gatt.sim_glucose_meter import MeterFaults, Record, VirtualGlucoseMeter
from device_profiles.gatt.sim_vitals_device import VirtualVitalsDevice
from device_profiles.gatt.vitals import (
    BloodPressureMeasurement,
    PlxSpotCheck,
    Quantity,
    SpO2PulseRate,
    TemperatureMeasurement,
    WeightMeasurement,
)
from device_profiles.units import GLUCOSE_MG_DL_PER_MMOL_L
from edge_agent.ble_sources import VITALS_KIND
from edge_agent.config import DeviceSection, VirtualDeviceSection
from edge_agent.simulators import PROFILES
from edge_agent.virtual_ble import (
    VirtualCgmPeripheral,
    VirtualGlucoseMeterPeripheral,
    VirtualIdentity,
    VirtualPeripheral,
    VirtualRadio,
    VirtualVitalsPeripheral,
)

#: A meter's measuring range in mg/dL (DOMAIN.md §2: typically 0.6-33.3 mmol/L, per IFU).
_METER_MG_DL = (20, 600)


def _identity(dev: DeviceSection, model: str) -> VirtualIdentity:
    serial = dev.serial or ("V" + (dev.address or "0").replace(":", "")[-8:])
    return VirtualIdentity(manufacturer="remon virtual", model=model, serial=serial)


def _glucose_record(seq: int, when: datetime, true_mg_dl: int) -> Record:
    """A meter record; outside the meter's range it reports its limit with the HI/LO status."""
    lo, hi = _METER_MG_DL
    mg_dl = min(max(true_mg_dl, lo), hi)
    status = None
    if true_mg_dl > hi:
        status = frozenset({SensorStatus.RESULT_TOO_HIGH})
    elif true_mg_dl < lo:
        status = frozenset({SensorStatus.RESULT_TOO_LOW})
    m = GlucoseMeasurement(
        sequence_number=seq,
        base_time=DateTime.of(when),
        time_offset=0,
        concentration=Number(mg_dl, -5),  # kg/L, as meters send it
        unit=ConcentrationUnit.KG_PER_L,
        glucose_type=GlucoseType.CAPILLARY_WHOLE_BLOOD,
        sample_location=SampleLocation.FINGER,
        sensor_status=status,
    )
    return (m, None)


def _meter_mg_dl(seed: int, index: int, profile: str) -> int:
    """The true glucose of the ``index``-th (0-based) measurement, seeded so restarts agree."""
    mean, sd = PROFILES[profile].glucose
    rng = random.Random(f"{seed}|{index}")  # noqa: S311 - simulation, not crypto
    return round(rng.gauss(mean, sd) * GLUCOSE_MG_DL_PER_MMOL_L)


def meter_records(
    v: VirtualDeviceSection, profile: str, *, end_local: datetime, interval: timedelta
) -> list[Record]:
    """``v.records`` records ending at ``end_local`` (device wall clock), seeded values."""
    return [
        _glucose_record(
            i + 1, end_local - (v.records - i) * interval, _meter_mg_dl(v.seed, i, profile)
        )
        for i in range(v.records)
    ]


def _vitals_value(kind: str, profile: str, rng: random.Random, stamp: DateTime) -> object:
    p = PROFILES[profile]
    if kind == "blood_pressure":
        sbp = round(rng.gauss(*p.sbp))
        dbp = round(min(rng.gauss(*p.dbp), sbp - 15))
        return BloodPressureMeasurement(
            unit="mm[Hg]",
            systolic=Number(sbp, 0),
            diastolic=Number(dbp, 0),
            mean_arterial_pressure=Number(round((sbp + 2 * dbp) / 3), 0),
            time_stamp=stamp,
            pulse_rate=Number(round(rng.gauss(*p.pulse)), 0),
        )
    if kind == "weight":
        kg = rng.gauss(78.0, 0.4)
        return WeightMeasurement(
            imperial=False,
            weight=Quantity(raw=round(kg / 0.005), resolution=Decimal("0.005"), unit="kg"),
            time_stamp=stamp,
        )
    if kind == "temperature":
        return TemperatureMeasurement(
            unit="Cel", temperature=Number(round(rng.gauss(*p.temp) * 10), -1), time_stamp=stamp
        )
    spo2 = min(100, round(rng.gauss(*p.spo2)))
    return PlxSpotCheck(
        reading=SpO2PulseRate(
            spo2=Number(spo2, 0), pulse_rate=Number(round(rng.gauss(*p.pulse)), 0)
        ),
        time_stamp=stamp,
    )


def build_peripheral(
    radio: VirtualRadio, dev: DeviceSection, *, tz: tzinfo, now: datetime | None = None
) -> tuple[VirtualPeripheral, Callable[[], asyncio.Task[None] | None]]:
    """The peripheral for ``dev``, and a starter for its background activity (if any)."""
    v = dev.virtual
    assert v is not None
    assert dev.address is not None
    now = now or datetime.now(UTC)
    local_now = now.astimezone(tz)
    utc_offset = local_now.utcoffset() or timedelta(0)
    if dev.kind == "ble.glucose-meter":
        interval = timedelta(seconds=v.record_every_s or dev.interval_s)
        device_end = (local_now + timedelta(seconds=v.clock_offset_s)).replace(tzinfo=None)
        meter = VirtualGlucoseMeter(
            meter_records(
                v, dev.profile, end_local=device_end.replace(microsecond=0), interval=interval
            ),
            faults=MeterFaults(malformed_every=v.malformed_every),
        )
        faults = [
            MeterFaults(disconnect_after=n, malformed_every=v.malformed_every) for n in v.cut_after
        ]
        periph = VirtualGlucoseMeterPeripheral(
            radio,
            meter,
            address=dev.address,
            identity=_identity(dev, "VG-1"),
            clock_offset_s=v.clock_offset_s,
            utc_offset=utc_offset,
            faults_by_connection=faults,
        )

        _battery(periph, v)

        def start() -> asyncio.Task[None] | None:
            if v.record_every_s is None:
                return None
            return asyncio.get_running_loop().create_task(_keep_measuring(periph, v, dev.profile))

        return periph, start
    if dev.kind == "ble.cgm":
        mean, sd = PROFILES[dev.profile].glucose
        values = cgm_trace_mg_dl(
            mean_mmol_l=mean,
            sd_mmol_l=sd,
            n=max(288, v.backlog_min // 5 + 288),
            seed=v.seed,
            fall_to_mmol_l=v.cgm_fall_to_mmol_l,
            fall_at=v.backlog_min // 5 - 1,
        )
        start_at = (now - timedelta(minutes=v.backlog_min)).replace(second=0, microsecond=0)
        sensor = VirtualCgmSensor(start=start_at.astimezone(UTC), crc=v.crc, values_mg_dl=values)
        cgm = VirtualCgmPeripheral(
            radio,
            sensor,
            address=dev.address,
            identity=_identity(dev, "VC-1"),
            minute_s=v.minute_s,
            backlog_min=v.backlog_min,
        )
        _battery(cgm, v)
        return cgm, lambda: None
    kind = VITALS_KIND[dev.kind]
    identity = _identity(dev, f"VV-{kind[:2].upper()}")

    def make_device(n: int) -> VirtualVitalsDevice:
        rng = random.Random(f"{dev.id}|{v.seed}|{n}")  # noqa: S311 - simulation
        # A live value: the device stamps it with its own clock when it sends it.
        stamp = DateTime.of((local_now + timedelta(seconds=v.clock_offset_s)).replace(tzinfo=None))
        value = _vitals_value(kind, dev.profile, rng, stamp)
        return VirtualVitalsDevice(
            kind,
            clock_offset_s=v.clock_offset_s,
            live=[value],  # type: ignore[list-item]
            utc_offset=utc_offset,
            identity=(identity.manufacturer, identity.model, identity.serial, identity.firmware),
        )

    vitals = VirtualVitalsPeripheral(
        radio,
        make_device,
        kind=kind,
        address=dev.address,
        identity=identity,
        clock_offset_s=v.clock_offset_s,
        utc_offset=utc_offset,
    )
    _battery(vitals, v)
    return vitals, lambda: None


def _battery(periph: VirtualPeripheral, v: VirtualDeviceSection) -> None:
    if v.battery_pct is not None:
        periph.add_battery(v.battery_pct, drain_every=v.battery_drain_every)


async def _keep_measuring(
    periph: VirtualGlucoseMeterPeripheral, v: VirtualDeviceSection, profile: str
) -> None:
    """The patient measures again every ``record_every_s``: a new stored record."""
    assert v.record_every_s is not None
    while True:
        await asyncio.sleep(v.record_every_s)
        records = periph.meter.records
        seq = (records[-1][0].sequence_number + 1) if records else 1
        if seq > 0xFFFE:
            return
        clock = periph.device_clock(datetime.now(UTC)).replace(microsecond=0)
        records.append(_glucose_record(seq, clock, _meter_mg_dl(v.seed, seq - 1, profile)))
