"""Serial devices end to end: simulators on real ptys ↔ pyserial ↔ the agent ↔ Mosquitto ↔ ingest.

Each simulator speaks the device's real bytes on a pseudo-terminal behind a stable symlink (as
udev's /dev/serial/by-id names an adapter); the agent opens it through its production serial
transport. Faults (line noise, checksum errors, unplug mid-transfer) are the simulators' own.
The cloud side is a real Mosquitto and the ingest service (SQLite and PostgreSQL).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cloud_ingest.service import IngestService
from device_profiles.serial.sim_astm import AstmMeterSim
from device_profiles.serial.sim_onetouch import OneTouchUltra2Sim
from device_profiles.units import convert
from edge_agent.config import parse_config
from edge_agent.virtual_serial import PtyDevice
from edge_agent.virtual_serial_devices import LazyBlows, build_serial_sim
from firmware_bridges.messages import SessionAdvice
from firmware_bridges.sim_boards import DispenserSim, PefBoardSim
from gateway.outbox import Outbox
from remon.brokers import MosquittoProcess
from tests.test_end_to_end import RunningAgent, ingest, wait_until

__all__ = ["ingest"]

pytestmark = pytest.mark.mosquitto


def serial_toml(tmp: Path, broker_url: str, devices: str, *, backend: str = "virtual") -> str:
    return f"""
[agent]
site = "home-0001"
data_dir = "{tmp / "agent"}"
outbox_synchronous = "NORMAL"

[mqtt]
url = "{broker_url}"

[serial]
backend = "{backend}"
reopen_max_s = 2

{devices}
"""


def _obs(service: IngestService, measure: str, subject: str = "p-1") -> list:  # type: ignore[type-arg]
    return service.list_observations(subject=subject, measure=measure, limit=1000)


def _drained(running: RunningAgent) -> Callable[[], bool]:
    def check() -> bool:
        relay = running.agent.relay_stats
        return relay is not None and relay.acked >= running.agent.stats.messages_queued

    return check


def test_astm_meter_with_line_faults_and_an_unplug_lands_each_reading_once(
    ingest: tuple[IngestService, str], mosquitto: MosquittoProcess, tmp_path: Path
) -> None:
    service, _ = ingest
    cfg = parse_config(
        serial_toml(
            tmp_path,
            mosquitto.url,
            """
[[devices]]
id = "contour"
kind = "serial.glucose-astm"
subject = "p-1"
port = "usb-Ascensia_Contour"

[devices.virtual]
records = 60
malformed_every = 5   # a bad checksum on every 5th frame: NAK, then the retransmission
noise_every = 4       # junk between frames
unplug_after = 40     # pulled out 40 frames into the first transfer, plugged back in
replug_after_s = 0.3
seed = 7
""",
        )
    )
    with RunningAgent(cfg) as running:
        wait_until(lambda: len(_obs(service, "glucose.capillary")) >= 60, 60, "60 readings")
        wait_until(_drained(running), 20, "the outbox drained")
        src = running.agent.serial_sources[0]
        pty = running.agent.virtual_serial["contour"]
        sim = pty.sim
        assert isinstance(sim, AstmMeterSim)
        time.sleep(0.5)  # anything in flight would show up now
    stored = _obs(service, "glucose.capillary")
    assert len(stored) == 60  # each reading exactly once, though read in two transfers
    assert pty.unplugs == 1
    assert src.stats.unplugs == 1
    assert src.stats.sessions == 2
    assert src.stats.link_errors > 0  # noise and checksum errors were seen, counted and kept
    want = sorted(
        round(r.value if r.unit == "mmol/L" else convert(r.value, "mg/dL", "mmol/L"), 6)
        for r in sim.readings
    )
    assert sorted(round(o.value, 6) for o in stored) == want
    assert {o.device_serial for o in stored} == {"7390-0000007"}  # the meter's own identity
    assert all("simulated" in o.quality for o in stored)
    with Outbox(cfg.outbox_path) as ob:
        rejects = ob.rejects()
    assert rejects
    assert all(r.source == "serial:astm" for r in rejects)
    assert any("checksum" in r.reason for r in rejects)


def test_onetouch_with_noisy_dumps_gets_every_reading_once(
    ingest: tuple[IngestService, str], mosquitto: MosquittoProcess, tmp_path: Path
) -> None:
    service, _ = ingest
    cfg = parse_config(
        serial_toml(
            tmp_path,
            mosquitto.url,
            """
[[devices]]
id = "ultra2"
kind = "serial.glucose-onetouch"
subject = "p-1"
port = "usb-LifeScan_Ultra2"
poll_interval_s = 3

[devices.virtual]
records = 40
malformed_every = 8   # a bad checksum on every 8th line: that dump is incomplete
noise_every = 7
seed = 3
""",
        )
    )
    with RunningAgent(cfg) as running:
        wait_until(lambda: len(_obs(service, "glucose.capillary")) >= 40, 60, "40 readings")
        wait_until(_drained(running), 20, "the outbox drained")
        src = running.agent.serial_sources[0]
        sim = running.agent.virtual_serial["ultra2"].sim
        assert isinstance(sim, OneTouchUltra2Sim)
        time.sleep(0.5)
    stored = _obs(service, "glucose.capillary")
    assert len(stored) == 40
    assert src.stats.transfers >= 2  # lines lost to checksum errors: the dump was asked again
    assert src.stats.link_errors > 0
    by_key = {o.record_key: o for o in stored}
    assert len(by_key) == 40
    for o in stored:
        assert o.provenance["original_unit"] == "mg/dL"
        assert o.value == pytest.approx(convert(o.provenance["original_value"], "mg/dL", "mmol/L"))
    assert {o.device_model for o in stored} == {"OneTouch Ultra 2"}


def test_missed_dose_reaches_the_cloud_once_through_a_noisy_bridge(
    ingest: tuple[IngestService, str], mosquitto: MosquittoProcess, tmp_path: Path
) -> None:
    """Issue 4's done-when: a client who misses a dose → dose_missed at the cloud."""
    service, _ = ingest
    cfg = parse_config(
        serial_toml(
            tmp_path,
            mosquitto.url,
            """
[[devices]]
id = "dispenser"
kind = "serial.dispenser"
subject = "client-7"
port = "usb-remon_dispenser"

[devices.virtual]
behaviour = "misses"
dose_every_s = 3600
missed_window_s = 300   # the first dose's window closes 15 s after start
noise_every = 3
malformed_every = 4     # CRC errors: the board resends what was not acknowledged
doses_left = 4
""",
        )
    )
    with RunningAgent(cfg) as running:
        wait_until(
            lambda: bool(service.list_events(subject="client-7", kind="dose_missed")),
            60,
            "the missed dose at the cloud",
        )
        wait_until(_drained(running), 20, "the outbox drained")
        sim = running.agent.virtual_serial["dispenser"].sim
        assert isinstance(sim, DispenserSim)
        src = running.agent.serial_sources[0]
        time.sleep(0.5)
        # the board's HELLO: its link state as device telemetry, beside its binding
        (dev,) = service.storage.device_subjects(subject_ref="client-7")
        assert (dev.device_key, dev.link) == (
            "remon|medication dispenser bridge|DSP-00000",
            "connected",
        )
        assert running.agent.stats.telemetry_queued >= 1
    missed = service.list_events(subject="client-7", kind="dose_missed")
    assert len(missed) == 1
    m = missed[0]
    assert m.scheduled_time is not None
    assert m.dose_id is not None
    # missed when the window closed: scheduled + 300 s (the board's clock, corrected)
    assert abs((m.event_time - m.scheduled_time).total_seconds() - 300) < 2
    events = service.list_events(subject="client-7", limit=1000)
    kinds = [e.kind for e in events if e.dose_id == m.dose_id]
    assert sorted(kinds) == ["dose_dispensed", "dose_due", "dose_missed"]  # each exactly once
    assert not any(e.kind == "dose_taken" for e in events)
    assert {e.device_key for e in events} == {"remon|medication dispenser bridge|DSP-00000"}
    assert src.stats.link_errors > 0  # CRC errors and noise happened and were survived


def test_pef_blow_arrives_as_raw_curve_at_the_signal_stage_and_as_pef_at_the_cloud(
    ingest: tuple[IngestService, str], mosquitto: MosquittoProcess, tmp_path: Path
) -> None:
    """Issue 4's done-when: a blow streamed from the board simulator reaches the signal stage."""
    service, _ = ingest
    cfg = parse_config(
        serial_toml(
            tmp_path,
            mosquitto.url,
            """
[[devices]]
id = "pef"
kind = "serial.pef-board"
subject = "p-1"
port = "usb-remon_pef"

[devices.virtual]
blow_every_s = 1.5
pef_l_min = 480
sample_rate_hz = 1000
""",
        )
    )
    with RunningAgent(cfg) as running:
        wait_until(lambda: running.agent.signal.stats.blows >= 3, 60, "three blows")
        wait_until(lambda: len(_obs(service, "pef")) >= 3, 30, "three PEFs at the cloud")
        sim = running.agent.virtual_serial["pef"].sim
        assert isinstance(sim, PefBoardSim)
        blows = list(running.agent.signal.recent)[:3]
        sent = {i: sim.sent_samples[i] for i in (1, 2, 3)}
        # the hub's analysis went back to the board over the pty, blow by blow (BLOW_RESULT)
        wait_until(lambda: len(sim.results) >= 3, 10, "three BLOW_RESULTs at the board")
        results = {r.blow_id: r for r in sim.results}
    for blow in blows:
        # the raw curve, sample for sample as the board measured it (i16 mL/s → L/s)
        assert blow.flow_l_s == tuple(s / 1000 for s in sent[blow.blow_id])
        assert blow.sample_rate_hz == 1000
        assert blow.complete
    lazy = LazyBlows(cfg.devices[0].virtual)  # type: ignore[arg-type]
    stored = {o.record_key.split("@")[0]: o for o in _obs(service, "pef")}
    for blow_id in (1, 2, 3):
        true_pef = lazy[blow_id - 1][1].true_pef_l_min
        got = stored[f"blow:{blow_id}"].value
        assert got is not None
        assert abs(got - true_pef) <= max(0.05 * true_pef, 10.0), (blow_id, got, true_pef)
        assert abs(results[blow_id].pef_l_min - got) <= 1  # whole L/min on the wire
    # 1.5 s apart: one session; the first two blows ask for a third (DOMAIN.md §1: >= 3)
    assert [results[i].session_blows for i in (1, 2)] == [1, 2]
    assert results[1].advice is results[2].advice is SessionAdvice.BLOW_AGAIN


def test_kiosk_height_meter_readings_are_kiosk_session_observations(
    ingest: tuple[IngestService, str], mosquitto: MosquittoProcess, tmp_path: Path
) -> None:
    service, _ = ingest
    cfg = parse_config(
        serial_toml(
            tmp_path,
            mosquitto.url,
            """
[[devices]]
id = "height"
kind = "serial.kiosk-peripheral"
subject = "kiosk-lobby-1"
subject_kind = "kiosk-session"
port = "usb-remon_height"

[devices.virtual]
record_every_s = 0.3
records = 6
unplug_after = 6        # frames: pulled out mid-visit and plugged back in
replug_after_s = 0.5
""",
        )
    )
    with RunningAgent(cfg) as running:
        wait_until(
            lambda: len(_obs(service, "body.height", "kiosk-lobby-1")) >= 6, 60, "six heights"
        )
        src = running.agent.serial_sources[0]
        # connected, disconnected by the unplug, connected again: each as device telemetry
        wait_until(lambda: running.agent.stats.telemetry_queued >= 3, 20, "three link samples")
        wait_until(_drained(running), 20, "the outbox drained")
        assert src.stats.unplugs >= 1
        (dev,) = service.storage.device_subjects(subject_ref="kiosk-lobby-1")
        assert dev.link == "connected"
    stored = _obs(service, "body.height", "kiosk-lobby-1")
    assert len(stored) == 6
    assert {o.subject_kind for o in stored} == {"kiosk-session"}
    assert all(o.unit == "cm" and 150 <= (o.value or 0) <= 195 for o in stored)


class _PtyThread:
    """A virtual device on its own thread and event loop (for ``backend = "tty"`` agents)."""

    def __init__(self, make: Callable[[], PtyDevice]) -> None:
        self._make = make
        self.device: PtyDevice | None = None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def main() -> None:
            self.device = self._make()
            task = asyncio.create_task(self.device.run())
            await self.device.wait_ready()
            self._ready.set()
            await asyncio.gather(task, return_exceptions=True)

        self._main = self._loop.create_task(main())
        try:
            self._loop.run_until_complete(self._main)
        except asyncio.CancelledError:
            pass
        finally:
            self._loop.close()

    def __enter__(self) -> _PtyThread:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._main.cancel)
        self._thread.join(10)


def test_a_device_plugged_in_after_start_is_found_and_a_wrong_board_is_refused(
    ingest: tuple[IngestService, str], mosquitto: MosquittoProcess, tmp_path: Path
) -> None:
    service, _ = ingest
    by_id = tmp_path / "by-id"
    meter_port = by_id / "usb-Ascensia_Contour_7390"
    board_port = by_id / "usb-remon_board"
    cfg = parse_config(
        serial_toml(
            tmp_path,
            mosquitto.url,
            f"""
[[devices]]
id = "contour"
kind = "serial.glucose-astm"
subject = "p-1"
port = "{meter_port}"

[[devices]]
id = "pef"
kind = "serial.pef-board"
subject = "p-1"
port = "{board_port}"
""",
            backend="tty",
        )
    )
    virtual = parse_config(
        serial_toml(
            tmp_path,
            mosquitto.url,
            f"""
[[devices]]
id = "contour"
kind = "serial.glucose-astm"
subject = "p-1"
port = "{meter_port}"
[devices.virtual]
records = 5

[[devices]]
id = "board"
kind = "serial.dispenser"
subject = "p-1"
port = "{board_port}"
[devices.virtual]
dose_every_s = 3600
""",
        )
    )
    now = time.monotonic()
    with RunningAgent(cfg) as running:
        # nothing plugged in yet: the sources find no port and retry with backoff
        wait_until(lambda: running.agent.stats.unavailable >= 2, 20, "ports looked for")
        assert _obs(service, "glucose.capillary") == []
        meter = build_serial_sim(virtual.devices[0], tz=running.agent._tz, now=now)
        board = build_serial_sim(virtual.devices[1], tz=running.agent._tz, now=now)
        with (
            _PtyThread(lambda: PtyDevice(meter, meter_port)),
            _PtyThread(lambda: PtyDevice(board, board_port)),
        ):
            wait_until(lambda: len(_obs(service, "glucose.capillary")) >= 5, 30, "the meter read")
            wait_until(lambda: running.agent.stats.session_errors >= 1, 30, "wrong board refused")
        wait_until(_drained(running), 20, "the outbox drained")
    assert len(_obs(service, "glucose.capillary")) == 5
    assert service.list_events(subject="p-1") == []  # nothing from the wrong board got through
    with Outbox(cfg.outbox_path) as ob:
        reasons = [r.reason for r in ob.rejects() if r.device_id == "pef"]
    assert any("dispenser board" in r and "serial.pef-board" in r for r in reasons), reasons
