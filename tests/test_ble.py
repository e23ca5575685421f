"""BLE end to end over a real ATT/GATT stack: bumble virtual peripherals ↔ bleak ↔ our code.

Nothing here mocks the path from the procedure down to bleak: the virtual radio enters through
bleak's injectable backend (the one boundary no machine here can reach, a Bluetooth
controller), and bleak-retry-connector, the link, the driver, the sans-I/O procedures and the
device sources are the production code. The cloud side is a real Mosquitto and the ingest.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import pytest
from bumble import hci

from cloud_ingest.service import IngestService
from device_profiles.gatt.glucose_download import (
    DownloadComplete,
    DownloadFailed,
    GlucoseDownload,
    RecordReceived,
)
from device_profiles.gatt.sim_cgm_sensor import CgmFaults, VirtualCgmSensor
from device_profiles.gatt.sim_glucose_meter import MeterFaults, VirtualGlucoseMeter, make_records
from device_profiles.gatt.sim_vitals_device import VirtualVitalsDevice, VitalsFaults
from device_profiles.observation import DeviceIdentity, Observation, QualityFlag
from device_profiles.telemetry import RSSI_MAX_DBM, RSSI_MIN_DBM, DeviceTelemetry, LinkState
from edge_agent.ble import BleConnector, BleSettings, DeviceNotFound, usable_rssi
from edge_agent.ble_sources import (
    BleDeviceSpec,
    CgmSource,
    GlucoseMeterSource,
    IdentityUnknown,
    VitalsSource,
)
from edge_agent.config import parse_config
from edge_agent.gatt_driver import GlucoseProcedure, drive
from edge_agent.registry import DeviceRegistry
from edge_agent.sources import BoundDevice
from edge_agent.virtual_ble import (
    VirtualCgmPeripheral,
    VirtualGlucoseMeterPeripheral,
    VirtualRadio,
    VirtualVitalsPeripheral,
)
from gateway.outbox import Outbox
from gateway.wire import Subject
from remon.brokers import MosquittoProcess
from tests.test_end_to_end import RunningAgent, agent_toml, ingest, stored_obs_ids, wait_until
from tests.test_vitals_session import bp

__all__ = ["ingest"]  # the fixture, shared with the end-to-end tests

T = TypeVar("T")
HELSINKI = ZoneInfo("Europe/Helsinki")
METER = "F0:00:00:00:00:01"
CGM = "F0:00:00:00:00:02"


def run(coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def connector(radio: VirtualRadio, **kw: Any) -> BleConnector:
    client, scanner = radio.backends()
    settings = BleSettings(scan_timeout_s=kw.pop("scan_timeout_s", 3.0), **kw)
    return BleConnector(settings, client_backend=client, scanner_backend=scanner)


class Captured:
    """A sink that keeps what a source hands over (the outbox's role in the agent)."""

    def __init__(self) -> None:
        self.observations: list[Observation] = []
        self.cursors: list[str | None] = []
        self.rejects: list[tuple[str, str, str, bytes | None]] = []
        self.telemetry: list[DeviceTelemetry] = []

    async def sink(
        self, device: BoundDevice, observations: Sequence[Observation], cursor: str | None
    ) -> None:
        self.observations.extend(observations)
        self.cursors.append(cursor)

    def reject(self, device_id: str, source: str, reason: str, raw: bytes | None) -> None:
        self.rejects.append((device_id, source, reason, raw))

    async def telemetry_sink(self, device: BoundDevice, sample: DeviceTelemetry) -> None:
        self.telemetry.append(sample)


def spec(kind: str, address: str, **kw: Any) -> BleDeviceSpec:
    bound = BoundDevice(
        device_id=kw.pop("device_id", "d1"),
        identity=DeviceIdentity(
            manufacturer="unknown", model=kind, serial=address.replace(":", ""), transport="ble"
        ),
        subject=Subject(kind="patient", ref="p-1"),
    )
    return BleDeviceSpec(device_id=bound.device_id, kind=kind, address=address, bound=bound, **kw)  # type: ignore[arg-type]


def registry_for(tmp_path: Path, s: BleDeviceSpec) -> DeviceRegistry:
    reg = DeviceRegistry(tmp_path / "devices.sqlite")
    reg.bind(
        address=s.address,
        device_id=s.device_id,
        kind=s.kind,
        binding_kind="patient",
        binding_ref="p-1",
    )
    return reg


# --------------------------------------------------------------------------- transport


def test_scan_finds_peripherals_by_service_and_an_absent_one_is_not_found() -> None:
    async def scenario() -> None:
        radio = VirtualRadio()
        try:
            meter = VirtualGlucoseMeterPeripheral(
                radio, VirtualGlucoseMeter(make_records(3)), address=METER
            )
            sensor = VirtualCgmSensor(
                start=datetime(2026, 11, 30, 8, 0, tzinfo=UTC), crc=True, values_mg_dl=[100.0]
            )
            cgm = VirtualCgmPeripheral(radio, sensor, address=CGM)
            await meter.start()
            await cgm.start()
            conn = connector(radio, scan_timeout_s=1.0)
            seen = await conn.scan(service_uuids=(0x1808,), timeout_s=0.5)
            assert [s.address for s in seen] == [METER]
            assert seen[0].service_uuids == (0x1808,)
            both = await conn.scan(timeout_s=0.5)
            assert {s.address for s in both} == {METER, CGM}
            with pytest.raises(DeviceNotFound, match="F0:00:00:00:00:09"):
                await conn.find("F0:00:00:00:00:09")
            # the meter does not advertise the CGM service: not found under that filter
            with pytest.raises(DeviceNotFound):
                await conn.find(METER, service_uuid=0x181F)
        finally:
            await radio.close()

    run(scenario())


def test_a_connection_completing_after_its_connect_gave_up_is_dropped_not_a_crash() -> None:
    """The race a busy machine hits: the link completes a connection nobody waits for any more.

    Sent here as a bare LE Create Connection (no Device.connect waiting), which is what the
    host sees after a connect timed out just before the completion arrived.
    """

    async def scenario() -> tuple[list[object], int, int]:
        loop = asyncio.get_running_loop()
        errors: list[object] = []
        loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx.get("exception")))
        radio = VirtualRadio()
        try:
            periph = VirtualGlucoseMeterPeripheral(
                radio, VirtualGlucoseMeter(make_records(3)), address=METER
            )
            await periph.start()
            central = await radio.central_on()
            await central.host.send_command(
                hci.HCI_LE_Create_Connection_Command(
                    le_scan_interval=96,
                    le_scan_window=96,
                    initiator_filter_policy=0,
                    peer_address_type=hci.Address.RANDOM_DEVICE_ADDRESS,
                    peer_address=hci.Address(METER, hci.Address.RANDOM_DEVICE_ADDRESS),
                    own_address_type=hci.OwnAddressType.PUBLIC,
                    connection_interval_min=24,
                    connection_interval_max=40,
                    max_latency=0,
                    supervision_timeout=72,
                    min_ce_length=0,
                    max_ce_length=0,
                )
            )
            await wait_for_async(lambda: periph.connections == 1)
            await wait_for_async(lambda: not central.connections)  # dropped by the hub
            late = len(central.connections)
            # the peripheral advertises again and the next ordinary connect works
            async with connector(radio).connect(METER, service_uuid=0x1808) as link:
                assert link is not None
            return errors, late, periph.connections
        finally:
            await radio.close()

    errors, late, connections = run(scenario())
    assert errors == []
    assert late == 0
    assert connections == 2


async def wait_for_async(cond: Callable[[], bool]) -> None:
    for _ in range(1000):  # 10 s
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in 10 s")


def test_download_cut_twice_over_gatt_resumes_to_exactly_the_stored_records() -> None:
    """The procedure over a real GATT stack: two link losses, no loss, no duplicate."""

    async def scenario() -> tuple[list[int], int, int]:
        radio = VirtualRadio()
        try:
            periph = VirtualGlucoseMeterPeripheral(
                radio,
                VirtualGlucoseMeter(make_records(500)),
                address=METER,
                faults_by_connection=[
                    MeterFaults(disconnect_after=180),
                    MeterFaults(disconnect_after=150),
                ],
            )
            await periph.start()
            conn = connector(radio)
            seqs: list[int] = []
            last: int | None = None
            failures = 0
            for _ in range(5):
                async with conn.connect(METER, service_uuid=0x1808) as link:
                    proc = GlucoseDownload(last, timeout_s=10)
                    ends: list[object] = []

                    async def on_event(
                        ev: object, raw: bytes | None, ends: list[object] = ends
                    ) -> None:
                        if isinstance(ev, RecordReceived):
                            seqs.append(ev.measurement.sequence_number)
                        elif isinstance(ev, DownloadComplete | DownloadFailed):
                            ends.append(ev)

                    await drive(link, GlucoseProcedure(proc), on_event)
                    last = proc.last_sequence
                if isinstance(ends[-1], DownloadComplete):
                    break
                failures += 1
            return seqs, failures, periph.connections
        finally:
            await radio.close()

    seqs, failures, connections = run(scenario())
    assert failures == 2
    assert connections == 3
    assert seqs == list(range(1, 501))


def read_meter_once(
    tmp_path: Path,
    meter: VirtualGlucoseMeter,
    cap: Captured,
    *,
    battery: int | None = None,
    **periph: Any,
) -> GlucoseMeterSource:
    """One production session of a GlucoseMeterSource against a virtual meter."""
    s = spec("ble.glucose-meter", METER, poll_interval_s=0)

    async def scenario() -> GlucoseMeterSource:
        radio = VirtualRadio()
        try:
            p = VirtualGlucoseMeterPeripheral(radio, meter, address=METER, **periph)
            if battery is not None:
                p.add_battery(min(battery, 100))
                p.battery_pct = battery  # past 100: a device breaking the Battery Level rules
            await p.start()
            reg = registry_for(tmp_path, s)
            try:
                src = GlucoseMeterSource(
                    s,
                    connector=connector(radio),
                    registry=reg,
                    reject=cap.reject,
                    tz=HELSINKI,
                    telemetry=cap.telemetry_sink,
                )
                await src.run_session(cap.sink, None)
                return src
            finally:
                reg.close()
        finally:
            await radio.close()

    return run(scenario())


def test_meter_clock_offset_is_measured_flagged_and_corrected(tmp_path: Path) -> None:
    """A meter 20 min fast: its record times are corrected and flagged (> 15 min)."""
    cap = Captured()
    read_meter_once(
        tmp_path,
        VirtualGlucoseMeter(make_records(5, context_every=None)),
        cap,
        clock_offset_s=1200.0,
        utc_offset=timedelta(hours=2),  # Helsinki in January
    )
    assert len(cap.observations) == 5
    assert cap.cursors[-1] == "seq:5"
    first = cap.observations[0]
    # make_records: record 1 at 2026-01-01 07:00 on the meter's clock (Helsinki, UTC+2)
    assert first.device_time == "2026-01-01T07:00:00"
    assert first.clock_offset_s is not None
    assert abs(first.clock_offset_s - 1200.0) < 2.0
    want = datetime(2026, 1, 1, 5, 0, tzinfo=UTC) - timedelta(seconds=first.clock_offset_s)
    assert first.effective_time == want
    assert QualityFlag.CLOCK_OFFSET in first.quality
    # the identity came from Device Information and is kept in the registry
    reg = DeviceRegistry(tmp_path / "devices.sqlite")
    stored = reg.get(METER)
    reg.close()
    assert stored is not None
    assert stored.identity is not None
    assert stored.identity.manufacturer == "remon virtual"
    assert stored.last_read is not None


def test_a_session_reports_battery_signal_and_link_state_as_telemetry(tmp_path: Path) -> None:
    """Battery Level (0x2A19) and the advertisement's RSSI when connected; the link state at
    both ends of the session, on the hub's clock."""
    cap = Captured()
    before = datetime.now(UTC)
    read_meter_once(tmp_path, VirtualGlucoseMeter(make_records(3)), cap, battery=57)
    after = datetime.now(UTC)
    assert [t.link for t in cap.telemetry] == [LinkState.CONNECTED, LinkState.DISCONNECTED]
    up, down = cap.telemetry
    assert up.battery_pct == 57
    assert up.rssi_dbm is not None
    assert RSSI_MIN_DBM <= up.rssi_dbm <= RSSI_MAX_DBM
    assert (down.battery_pct, down.rssi_dbm) == (None, None)
    assert before <= up.at <= down.at <= after
    assert len(cap.observations) == 3  # telemetry is beside the readings, not instead of them
    assert cap.rejects == []


@pytest.mark.parametrize(
    ("said", "kept"),
    [(None, None), (127, None), (21, None), (-128, None), (20, 20), (-127, -127), (-60, -60)],
)
def test_rssi_outside_bluetooths_range_is_unknown_not_clamped(
    said: int | None, kept: int | None
) -> None:
    assert usable_rssi(said) == kept


def test_a_battery_level_past_100_is_kept_as_a_reject_not_clamped(tmp_path: Path) -> None:
    cap = Captured()
    read_meter_once(tmp_path, VirtualGlucoseMeter(make_records(2)), cap, battery=180)
    up = cap.telemetry[0]
    assert up.link is LinkState.CONNECTED
    assert up.battery_pct is None  # unknown, never 100
    ((device_id, source, reason, raw),) = cap.rejects
    assert (device_id, source, raw) == ("d1", "ble:0x2A19", bytes([180]))
    assert "battery level expected 0-100 %, got 180" in reason
    assert len(cap.observations) == 2


def test_a_device_without_a_battery_service_reports_link_and_signal_only(tmp_path: Path) -> None:
    cap = Captured()
    read_meter_once(tmp_path, VirtualGlucoseMeter(make_records(1)), cap)
    assert [t.battery_pct for t in cap.telemetry] == [None, None]
    assert cap.telemetry[0].rssi_dbm is not None


def test_malformed_notifications_are_kept_as_rejects_and_the_download_completes(
    tmp_path: Path,
) -> None:
    cap = Captured()
    meter = VirtualGlucoseMeter(
        make_records(60, context_every=None), faults=MeterFaults(malformed_every=20)
    )
    src = read_meter_once(tmp_path, meter, cap)
    assert src.stats.rejects == 3
    assert len(cap.observations) == 60
    assert len(cap.rejects) == 3
    for device_id, source, reason, raw in cap.rejects:
        assert device_id == "d1"
        assert source == "ble:0x2A18"
        assert "byte" in reason
        assert raw is not None
        assert raw  # the bytes as the device sent them, for inspection


def test_cgm_stream_checks_crc_and_anchors_times(tmp_path: Path) -> None:
    cap = Captured()
    s = spec("ble.cgm", CGM)
    start = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)

    async def scenario() -> None:
        radio = VirtualRadio()
        try:
            sensor = VirtualCgmSensor(
                start=start,
                crc=True,
                values_mg_dl=[90.0, 100.0, 110.0, 120.0],
                faults=CgmFaults(crc_error_on=frozenset({3})),
            )
            periph = VirtualCgmPeripheral(radio, sensor, address=CGM, minute_s=0.02, backlog_min=30)
            await periph.start()
            reg = registry_for(tmp_path, s)
            src = CgmSource(
                s, connector=connector(radio), registry=reg, reject=cap.reject, tz=HELSINKI
            )
            task = asyncio.create_task(src.run_session(cap.sink, None))
            for _ in range(400):
                if len(cap.observations) >= 10:
                    break
                await asyncio.sleep(0.02)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            reg.close()
        finally:
            await radio.close()

    run(scenario())
    assert len(cap.observations) >= 10
    # record 3 had its CRC broken: rejected with its bytes, never turned into a reading
    assert any(src == "ble:0x2AA7" and "CRC" in reason.upper() for _, src, reason, _ in cap.rejects)
    offsets = []
    for o in cap.observations:
        assert o.measure == "glucose.cgm"
        minutes = round((o.effective_time - start).total_seconds() / 60)
        assert o.effective_time == start + timedelta(minutes=minutes)
        assert o.record_key == f"cgm:{start:%Y%m%dT%H%MZ}+{minutes}"
        offsets.append(minutes)
    assert offsets == sorted(offsets)
    assert len(set(offsets)) == len(offsets)
    assert 15 not in offsets  # the third record (offset 15 min at a 5 min interval) was bad
    assert cap.observations[0].value == pytest.approx(90.0 / 18.016)


def test_unreadable_device_information_never_yields_readings_under_a_guessed_identity(
    tmp_path: Path,
) -> None:
    """Ids derive from the identity: a cuff whose DIS reads fail is not read until it has one."""
    cuff = "F0:00:00:00:00:03"
    cap = Captured()
    s = spec("ble.bp-monitor", cuff, poll_interval_s=0, idle_timeout_s=0.5)
    no_dis = [True]

    def make_device(n: int) -> VirtualVitalsDevice:
        return VirtualVitalsDevice(
            "blood_pressure",
            clock_offset_s=0.0,
            live=[bp(None, 120 + n)],
            faults=VitalsFaults(no_dis=no_dis[0]),
            utc_offset=datetime.now(HELSINKI).utcoffset() or timedelta(0),
        )

    async def scenario() -> tuple[object, object, object]:
        radio = VirtualRadio()
        reg = registry_for(tmp_path, s)
        try:
            await VirtualVitalsPeripheral(
                radio, make_device, kind="blood_pressure", address=cuff
            ).start()
            conn = connector(radio)
            src = VitalsSource(s, connector=conn, registry=reg, reject=cap.reject, tz=HELSINKI)
            with pytest.raises(IdentityUnknown, match="unreadable"):
                await src.run_session(cap.sink, None)
            before = (len(cap.observations), reg.get(cuff))
            no_dis[0] = False  # it answers: identity registered, readings flow
            await src.run_session(cap.sink, None)
            first = src.device.identity
            no_dis[0] = True  # unreadable again: the registered identity is kept
            await src.run_session(cap.sink, None)
            return before, first, src.device.identity
        finally:
            reg.close()
            await radio.close()

    (count, row), first, again = run(scenario())
    assert count == 0
    assert row is not None
    assert row.identity is None
    assert first.manufacturer == "Acme Medical"  # VirtualVitalsDevice's DIS strings
    assert again == first
    # two sessions read one cuff reading each (systolic + diastolic; bp() carries no pulse)
    assert len(cap.observations) == 4
    assert {o.value for o in cap.observations if o.measure == "bp.systolic"} == {122.0, 123.0}


# --------------------------------------------------------------------------- the whole path


def ble_agent_toml(tmp_path: Path, broker_url: str) -> str:
    devices = f"""
[ble]
backend = "virtual"
scan_timeout_s = 3

[[devices]]
id = "gm1"
kind = "ble.glucose-meter"
address = "{METER}"
subject = "p-ble"
poll_interval_s = 3600

[devices.virtual]
records = 500
cut_after = [180, 150]
"""
    return agent_toml(tmp_path, broker_url, site="home-ble", devices=devices)


@pytest.mark.mosquitto
def test_virtual_meter_cut_twice_lands_exactly_500_readings_at_the_cloud(
    ingest: tuple[IngestService, str], mosquitto: MosquittoProcess, tmp_path: Path
) -> None:
    """Issue 3's done-when: 500 stored records, two cut-offs, exactly 500 in cloud storage."""
    service, url = ingest
    cfg = parse_config(ble_agent_toml(tmp_path, mosquitto.url))
    with RunningAgent(cfg) as running:
        wait_until(lambda: service.stats().observations >= 500, 60, "500 readings stored")
        wait_until(lambda: bool(running.agent.ble_sources), 5, "the BLE source")
        src = running.agent.ble_sources[0]
        assert src.stats.sessions == 3  # two cut-offs, then the complete download
        assert running.agent.stats.rejects == 0

        def telemetry_landed() -> bool:
            devs = service.storage.device_subjects(subject_ref="p-ble")
            return bool(devs) and devs[0].link == "disconnected"

        # each session: "connected" with battery and RSSI, then "disconnected"
        wait_until(lambda: running.agent.stats.telemetry_queued == 6, 20, "6 telemetry samples")
        wait_until(telemetry_landed, 20, "the meter's telemetry at the cloud")
    (dev,) = service.storage.device_subjects(subject_ref="p-ble")
    assert dev.battery_pct == 90  # the virtual meter's level: it drains 1 % per 10 connections
    assert dev.rssi_dbm is not None
    assert dev.battery_at is not None
    assert dev.link_at is not None
    assert dev.link_at > dev.battery_at  # the link state of the last session's end
    ids = stored_obs_ids(url)
    assert len(ids) == len(set(ids)) == 500
    with Outbox(cfg.outbox_path) as ob:
        assert ob.get_cursor("device:gm1") == "seq:500"
        assert ob.rejects() == []
    stats = service.stats()
    assert stats.observations == 500


def test_a_late_gatt_response_from_bumble_is_dropped_and_other_loop_errors_are_not() -> None:
    """bumble sets the result of a GATT request our timeout already gave up; that error is
    dropped with a warning, any other error still reaches the loop's handler."""
    from edge_agent.virtual_ble import _ignore_late_gatt_responses

    seen: list[object] = []
    loop = asyncio.new_event_loop()
    try:
        loop.set_exception_handler(lambda _lp, ctx: seen.append(ctx.get("exception")))
        _ignore_late_gatt_responses(loop)
        _ignore_late_gatt_responses(loop)  # twice: still one filter in front of the handler
        code = compile(
            "raise asyncio.InvalidStateError('invalid state')", "x/bumble/gatt_client.py", "exec"
        )
        try:
            exec(code, {"asyncio": asyncio})  # a frame in a file named as bumble's
        except asyncio.InvalidStateError as exc:
            late = exc
        loop.call_exception_handler({"message": "late", "exception": late})
        other = asyncio.InvalidStateError("ours")
        loop.call_exception_handler({"message": "other", "exception": other})
        boom = RuntimeError("boom")
        loop.call_exception_handler({"message": "boom", "exception": boom})
        assert seen == [other, boom]
    finally:
        loop.close()
