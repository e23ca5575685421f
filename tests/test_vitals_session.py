"""VitalsSession paired with VirtualVitalsDevice over an in-memory link."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TypeVar

from hypothesis import given, settings
from hypothesis import strategies as st

from device_profiles.gatt.ieee11073 import DateTime, Number
from device_profiles.gatt.sim_vitals_device import VirtualVitalsDevice, VitalsFaults
from device_profiles.gatt.vitals import (
    MMHG,
    BloodPressureMeasurement,
    PlxContinuous,
    PlxMeasurementStatus,
    PlxSpotCheck,
    Quantity,
    SpO2PulseRate,
    TemperatureMeasurement,
    WeightMeasurement,
    encode_intermediate_cuff_pressure,
)
from device_profiles.gatt.vitals_session import (
    CUFF_PRESSURE_UUID,
    ClockRead,
    CuffPressure,
    DeviceIdentified,
    EnableIndications,
    EnableNotifications,
    MalformedData,
    Measurement,
    MeasurementValue,
    Output,
    ReadCharacteristic,
    SessionEnded,
    SessionIdle,
    VitalsKind,
    VitalsSession,
)

T = TypeVar("T")

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
HUB_TZ = timedelta(hours=1)


def stamp(dt: datetime) -> DateTime:
    return DateTime.of(dt)


def bp(ts: DateTime | None, sys: int = 120) -> BloodPressureMeasurement:
    return BloodPressureMeasurement(
        unit=MMHG,
        systolic=Number(sys, 0),
        diastolic=Number(80, 0),
        mean_arterial_pressure=Number(93, 0),
        time_stamp=ts,
    )


def weight(ts: DateTime | None, raw: int = 14000) -> WeightMeasurement:
    return WeightMeasurement(
        imperial=False,
        weight=Quantity(raw=raw, resolution=Decimal("0.005"), unit="kg"),
        time_stamp=ts,
    )


def temp(ts: DateTime | None, t: int = 372) -> TemperatureMeasurement:
    return TemperatureMeasurement(unit="Cel", temperature=Number(t, -1), time_stamp=ts)


def spot(ts: DateTime | None, usable: bool = True, pulse: int = 70) -> PlxSpotCheck:
    status = None if usable else frozenset({PlxMeasurementStatus.QUESTIONABLE_MEASUREMENT_DETECTED})
    return PlxSpotCheck(
        reading=SpO2PulseRate(spo2=Number(97, 0), pulse_rate=Number(pulse, 0)),
        time_stamp=ts,
        measurement_status=status,
    )


def run(device: VirtualVitalsDevice, session: VitalsSession, now: datetime = NOW) -> list[Output]:
    """Drive the pair to completion: reads, subscriptions, then everything pending."""
    out: list[Output] = []
    todo = list(session.start(now=now))
    while todo:
        item = todo.pop(0)
        out.append(item)
        if isinstance(item, ReadCharacteristic):
            try:
                data = device.read(item.uuid, now=now)
            except KeyError:
                todo = session.read_failed(item.uuid, now=now) + todo
            else:
                todo = session.receive(item.uuid, data, now=now) + todo
        elif isinstance(item, EnableIndications | EnableNotifications):
            device.subscribe(item.uuid)
    for uuid, data in device.pending(now=now):
        out.extend(session.receive(uuid, data, now=now))
    return out


def pair(
    kind: VitalsKind,
    *,
    offset: float = 0.0,
    stored: list[MeasurementValue] | None = None,
    live: list[MeasurementValue] | None = None,
    faults: VitalsFaults | None = None,
) -> tuple[VitalsSession, list[Output]]:
    device = VirtualVitalsDevice(
        kind,
        clock_offset_s=offset,
        stored=stored or [],
        live=live or [],
        faults=faults,
        utc_offset=HUB_TZ,
    )
    session = VitalsSession(kind, hub_utc_offset=HUB_TZ, available=device.characteristics)
    return session, run(device, session)


def of(out: list[Output], cls: type[T]) -> list[T]:
    return [o for o in out if isinstance(o, cls)]


def device_local(hub: datetime, offset_s: float = 0.0) -> datetime:
    return (hub + HUB_TZ + timedelta(seconds=offset_s)).replace(tzinfo=None)


def test_blood_pressure_end_to_end() -> None:
    old = stamp(device_local(NOW - timedelta(hours=2)))
    _session, out = pair("blood_pressure", stored=[bp(old)], live=[bp(old, 130)])
    (ident,) = of(out, DeviceIdentified)
    assert ident.manufacturer == "Acme Medical"
    assert ident.firmware == "1.2.3"
    (clock,) = of(out, ClockRead)
    assert clock.offset_s is not None
    assert abs(clock.offset_s) < 1
    assert not clock.flagged
    ms = of(out, Measurement)
    assert [m.stored for m in ms] == [True, False]
    assert ms[0].corrected_time_utc == NOW - timedelta(hours=2)
    assert EnableNotifications(uuid=CUFF_PRESSURE_UUID) in out


def test_each_kind_end_to_end() -> None:
    ts = stamp(device_local(NOW))
    cases: list[tuple[VitalsKind, MeasurementValue]] = [
        ("weight", weight(ts)),
        ("temperature", temp(ts)),
        ("pulse_oximeter", spot(ts)),
    ]
    for kind, value in cases:
        _, out = pair(kind, live=[value])
        (m,) = of(out, Measurement)
        assert m.kind == kind
        assert m.value == value
        assert not m.stored


def test_clock_offset_flagged_and_times_corrected() -> None:
    offset = 3600.0
    old = stamp(device_local(NOW - timedelta(days=1), offset))
    _, out = pair("temperature", offset=offset, stored=[temp(old)])
    (clock,) = of(out, ClockRead)
    assert clock.flagged
    assert clock.offset_s is not None
    assert abs(clock.offset_s - offset) < 1
    (m,) = of(out, Measurement)
    assert abs((m.corrected_time_utc - (NOW - timedelta(days=1))).total_seconds()) < 1
    assert m.stored
    assert m.offset_s == clock.offset_s


def test_small_offset_not_flagged() -> None:
    _, out = pair("temperature", offset=-600.0)
    (clock,) = of(out, ClockRead)
    assert not clock.flagged


def test_cuff_pressure_is_progress_only() -> None:
    session = VitalsSession("blood_pressure")
    out = session.start(now=NOW)
    for uuid in (0x2A29, 0x2A24, 0x2A25, 0x2A26, 0x2A2B):
        out = session.read_failed(uuid, now=NOW)
    assert session.streaming
    data = encode_intermediate_cuff_pressure(bp(None, 150))
    out = session.receive(CUFF_PRESSURE_UUID, data, now=NOW)
    assert of(out, CuffPressure) == [
        CuffPressure(pressure=Number(150, 0), unit=MMHG, received_at=NOW)
    ]
    assert not of(out, Measurement)


def test_malformed_skipped_and_faults_tolerated() -> None:
    ts = stamp(device_local(NOW))
    faults = VitalsFaults(
        malformed_before=frozenset({0}), nan_unused_slots=True, reserved_flags=True
    )
    _, out = pair("blood_pressure", live=[bp(ts), bp(None, 140)], faults=faults)
    assert len(of(out, MalformedData)) == 1
    ms = of(out, Measurement)
    assert len(ms) == 2
    assert isinstance(ms[0].value, BloodPressureMeasurement)
    assert ms[0].value.reserved_flags == 0x80
    assert ms[0].value.mean_arterial_pressure.special is not None


def test_duplicates_reported_once() -> None:
    old = [stamp(device_local(NOW - timedelta(hours=h))) for h in (3, 2)]
    session, out = pair(
        "weight", stored=[weight(t) for t in old], faults=VitalsFaults(duplicate_stored=True)
    )
    assert len(of(out, Measurement)) == 2
    assert session.duplicates == 2


def test_missing_dis_and_current_time_tolerated() -> None:
    ts = stamp(device_local(NOW - timedelta(hours=5)))
    faults = VitalsFaults(no_dis=True, no_current_time=True)
    _, out = pair("pulse_oximeter", stored=[spot(ts, usable=False)], faults=faults)
    assert of(out, DeviceIdentified) == [
        DeviceIdentified(manufacturer=None, model=None, serial=None, firmware=None)
    ]
    assert of(out, ClockRead) == [ClockRead(device_time=None, offset_s=None, flagged=False)]
    (m,) = of(out, Measurement)
    assert m.stored
    assert not m.clinically_usable
    assert m.offset_s is None
    assert m.corrected_time_utc == NOW - timedelta(hours=5)


def test_untimestamped_continuous_is_live_at_receive_time() -> None:
    cont = PlxContinuous(normal=SpO2PulseRate(spo2=Number(98, 0), pulse_rate=Number(60, 0)))
    _, out = pair("pulse_oximeter", live=[cont, cont])
    ms = of(out, Measurement)
    assert len(ms) == 2
    assert all(m.corrected_time_utc == NOW and not m.stored for m in ms)


def test_disconnect_and_idle() -> None:
    session = VitalsSession("temperature", available=[0x2A1C], idle_timeout_s=30)
    session.start(now=NOW)
    assert session.streaming
    assert session.timeout(NOW + timedelta(seconds=10)) != []
    out = session.timeout(NOW + timedelta(seconds=31))
    assert of(out, SessionIdle)
    assert session.finished
    other = VitalsSession("temperature", available=[0x2A1C])
    other.start(now=NOW)
    assert of(other.disconnected(), SessionEnded)


_KINDS: list[VitalsKind] = ["blood_pressure", "weight", "temperature", "pulse_oximeter"]


def _value(kind: VitalsKind, ts: DateTime | None, n: int) -> MeasurementValue:
    if kind == "blood_pressure":
        return bp(ts, 100 + n)
    if kind == "weight":
        return weight(ts, 10000 + n)
    if kind == "temperature":
        return temp(ts, 350 + n)
    return spot(ts, usable=n % 2 == 0, pulse=40 + n)


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(_KINDS),
    offset=st.floats(-7200, 7200, allow_nan=False),
    stored_hours=st.lists(st.integers(1, 1000), max_size=6, unique=True),
    live_n=st.integers(0, 4),
    malformed=st.frozensets(st.integers(0, 10), max_size=3),
    nan=st.booleans(),
    reserved=st.booleans(),
    dup=st.booleans(),
    no_ct=st.booleans(),
    no_dis=st.booleans(),
)
def test_random_sessions_report_each_measurement_once(
    kind: VitalsKind,
    offset: float,
    stored_hours: list[int],
    live_n: int,
    malformed: frozenset[int],
    nan: bool,
    reserved: bool,
    dup: bool,
    no_ct: bool,
    no_dis: bool,
) -> None:
    stored = [
        _value(kind, stamp(device_local(NOW - timedelta(hours=h), offset)), i)
        for i, h in enumerate(stored_hours)
    ]
    live = [_value(kind, stamp(device_local(NOW)), 50 + i) for i in range(live_n)]
    faults = VitalsFaults(
        malformed_before=malformed,
        nan_unused_slots=nan,
        reserved_flags=reserved,
        duplicate_stored=dup,
        no_current_time=no_ct,
        no_dis=no_dis,
    )
    _, out = pair(kind, offset=offset, stored=stored, live=live, faults=faults)
    ms = of(out, Measurement)
    assert len(ms) == len(stored) + live_n
    if not no_ct:
        assert [m.stored for m in ms] == [True] * len(stored) + [False] * live_n
