"""The edge agent process: device sources → outbox → relay.

One supervisor task per bound device runs that device's sessions, restarting a failed session
with capped exponential backoff so that one faulty device never stops the others. Observations
are encoded into wire envelopes at the edge and committed to the outbox together with the
source's cursor (one transaction), then the relay is woken to publish them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from device_profiles.events import DeviceEvent
from device_profiles.observation import DeviceIdentity, Observation
from device_profiles.telemetry import DeviceTelemetry
from edge_agent.ble import BleConnector, BleSettings
from edge_agent.ble_sources import BleDeviceSpec, BleSource, build_ble_source
from edge_agent.config import BLE_KINDS, SERIAL_KINDS, AgentConfig, DeviceSection
from edge_agent.derived import CgmDerivation
from edge_agent.kiosk_identity import code_digest
from edge_agent.kiosk_station import KioskStation
from edge_agent.registry import DeviceRegistry
from edge_agent.serial_sources import (
    SerialDeviceSpec,
    SerialSource,
    build_serial_source,
    parse_line,
)
from edge_agent.signal import SignalStage
from edge_agent.simulators import SIMULATORS, SimSettings, SimulatedDevice, sim_identity
from edge_agent.sources import BoundDevice, DeviceSource, DeviceUnavailable
from gateway.outbox import Outbox
from gateway.relay import Relay, RelayConfig, RelayStats
from gateway.wire import (
    OutboundMessage,
    Subject,
    encode_events,
    encode_observations,
    encode_telemetry,
)

log = logging.getLogger("remon.agent")

AGENT_VERSION = "0.1.0"
SESSION_BACKOFF_MIN_S = 1.0
SESSION_BACKOFF_MAX_S = 60.0
#: How long a stopping agent waits for its device sessions to end before it goes on regardless.
SHUTDOWN_GRACE_S = 10.0


@dataclass(slots=True)
class AgentStats:
    observations_queued: int = 0
    events_queued: int = 0
    telemetry_queued: int = 0  # device telemetry samples (battery, RSSI, link state)
    messages_queued: int = 0
    session_errors: int = 0
    rejects: int = 0  # device data kept aside (malformed, unmappable), see Outbox.rejects()
    unavailable: int = 0  # sessions that found no device (asleep, out of range)


def cursor_key(device_id: str) -> str:
    return f"device:{device_id}"


class Agent:
    def __init__(self, config: AgentConfig, *, clock: Callable[[], datetime] | None = None) -> None:
        self.config = config
        self._clock = clock or (lambda: datetime.now(UTC))
        self._tz = ZoneInfo(config.agent.timezone)  # validated by the configuration
        self.stats = AgentStats()
        self._outbox: Outbox | None = None
        self._relay: Relay | None = None
        self._registry: DeviceRegistry | None = None
        self._connector: BleConnector | None = None
        self.ble_sources: list[BleSource] = []
        self.serial_sources: list[SerialSource] = []
        self.signal = SignalStage()
        #: CGM streams: trend, 20-min prediction and cleaning flags for each CGM reading.
        self.derived = CgmDerivation(clock=self._clock)
        #: Virtual serial devices (``[serial] backend = "virtual"``), by device id.
        self.virtual_serial: dict[str, Any] = {}
        #: Kiosk mode (``[kiosk]``): the station its kiosk-session devices measure for.
        self.station: KioskStation | None = None

    @property
    def relay_stats(self) -> RelayStats | None:
        return self._relay.stats if self._relay is not None else None

    def relay_config(self) -> RelayConfig:
        m = self.config.mqtt
        return RelayConfig(
            url=m.url,
            client_id=self.config.client_id,
            protocol=m.protocol,
            username=m.username,
            password=m.password,
            ca_file=str(m.ca_file) if m.ca_file else None,
            cert_file=str(m.cert_file) if m.cert_file else None,
            key_file=str(m.key_file) if m.key_file else None,
            keepalive_s=m.keepalive_s,
            window=m.window,
            status_every_s=m.status_every_s,
        )

    def build_source(self, dev: DeviceSection, outbox: Outbox) -> DeviceSource:
        if dev.kind in BLE_KINDS:
            return self._build_ble_source(dev)
        if dev.kind in SERIAL_KINDS:
            return self._build_serial_source(dev)
        serial = dev.serial or f"{self.config.agent.site}-{dev.id}"
        bound = BoundDevice(
            device_id=dev.id,
            identity=sim_identity(dev.kind, serial),
            subject=Subject(kind=dev.subject_kind, ref=dev.subject),
        )
        start = dev.start
        if start is None:
            # A simulated meter's memory starts when it is first seen, and keeps that start
            # across agent restarts so its records (and their ids) stay the same.
            key = f"sim-start:{dev.id}"
            saved = outbox.get_cursor(key)
            if saved is None:
                start = self._clock()
                outbox.set_cursor(key, start.isoformat())
            else:
                start = datetime.fromisoformat(saved)
        settings = SimSettings(
            profile=dev.profile,
            interval_s=dev.interval_s,
            seed=dev.seed,
            max_records=dev.max_records,
            start=start,
            clock_skew_s=dev.clock_skew_s,
            unit=dev.unit,
            error_rate=dev.error_rate,
        )
        sim: SimulatedDevice = SIMULATORS[dev.kind](bound, settings, clock=self._clock)
        return sim

    def _build_ble_source(self, dev: DeviceSection) -> BleSource:
        assert dev.address is not None
        assert self._connector is not None
        assert self._registry is not None
        subject = Subject(kind=dev.subject_kind, ref=dev.subject)
        # Until the device has told us who it is (Device Information, kept in the registry),
        # it is known by its configured serial or its address.
        provisional = DeviceIdentity(
            manufacturer="unknown",
            model=dev.kind,
            serial=dev.serial or dev.address.replace(":", ""),
            transport="ble",
        )
        self._registry.bind(
            address=dev.address,
            device_id=dev.id,
            kind=dev.kind,
            binding_kind="kiosk" if dev.subject_kind == "kiosk-session" else "patient",
            binding_ref=dev.subject,
        )
        spec = BleDeviceSpec(
            device_id=dev.id,
            kind=dev.kind,  # type: ignore[arg-type]
            address=dev.address,
            bound=BoundDevice(device_id=dev.id, identity=provisional, subject=subject),
            poll_interval_s=dev.poll_interval_s,
            idle_timeout_s=dev.idle_timeout_s,
            simulated=dev.virtual is not None,
        )
        src = build_ble_source(
            spec,
            connector=self._connector,
            registry=self._registry,
            reject=self._reject,
            tz=self._tz,
            telemetry=self._telemetry_sink,
        )
        self.ble_sources.append(src)
        return src

    def _build_serial_source(self, dev: DeviceSection) -> SerialSource:
        assert dev.port is not None
        assert self._registry is not None
        port = self.config.port_path(dev.port)
        subject = Subject(kind=dev.subject_kind, ref=dev.subject)
        provisional = DeviceIdentity(
            manufacturer="unknown",
            model=dev.kind,
            serial=dev.serial or dev.port.rsplit("/", 1)[-1],
            transport="serial",
        )
        self._registry.bind(
            address=port,
            device_id=dev.id,
            kind=dev.kind,
            binding_kind="kiosk" if dev.subject_kind == "kiosk-session" else "patient",
            binding_ref=dev.subject,
        )
        spec = SerialDeviceSpec(
            device_id=dev.id,
            kind=dev.kind,
            port=port,
            line=parse_line(dev.line_settings),
            bound=BoundDevice(device_id=dev.id, identity=provisional, subject=subject),
            poll_interval_s=dev.poll_interval_s,
            transfer_timeout_s=self.config.serial.transfer_timeout_s,
            reopen_max_s=self.config.serial.reopen_max_s,
            simulated=dev.virtual is not None,
        )
        src = build_serial_source(
            spec,
            registry=self._registry,
            reject=self._reject,
            events=self._event_sink,
            signal=self.signal,
            tz=self._tz,
            clock=self._clock,
            telemetry=self._telemetry_sink,
        )
        self.serial_sources.append(src)
        return src

    def _reject(self, device_id: str, source: str, reason: str, raw: bytes | None) -> None:
        assert self._outbox is not None
        self.stats.rejects += 1
        self._outbox.put_reject(
            at=self._clock().isoformat(timespec="milliseconds"),
            device_id=device_id,
            source=source,
            reason=reason,
            raw=raw,
        )

    def _open_registry(self, stack: contextlib.AsyncExitStack) -> None:
        if self._registry is None and any(
            d.kind in BLE_KINDS or d.kind in SERIAL_KINDS for d in self.config.devices
        ):
            registry = DeviceRegistry(self.config.registry_path)
            stack.callback(registry.close)
            self._registry = registry

    async def _start_serial(self, stack: contextlib.AsyncExitStack) -> None:
        """For ``[serial] backend = "virtual"``: a simulator on a pty for each serial device."""
        cfg = self.config
        if cfg.serial.backend != "virtual":
            return
        from edge_agent.virtual_serial import PtyDevice
        from edge_agent.virtual_serial_devices import build_serial_sim

        for dev in cfg.devices:
            if dev.kind not in SERIAL_KINDS or dev.virtual is None or dev.port is None:
                continue
            sim = build_serial_sim(dev, tz=self._tz, now=time.monotonic())
            pty = PtyDevice(
                sim, Path(cfg.port_path(dev.port)), replug_after_s=dev.virtual.replug_after_s
            )
            task = asyncio.create_task(pty.run(), name=f"virtual-serial-{dev.id}")
            stack.push_async_callback(_cancel, task)
            await asyncio.wait_for(pty.wait_ready(), 10)
            self.virtual_serial[dev.id] = pty

    async def _start_ble(self, stack: contextlib.AsyncExitStack) -> None:
        """The adapter and, for ``backend = "virtual"``, the peripherals."""
        cfg = self.config
        if not any(d.kind in BLE_KINDS for d in cfg.devices):
            return
        b = cfg.ble
        settings = BleSettings(
            adapter=b.adapter,
            scan_timeout_s=b.scan_timeout_s,
            connect_attempts=b.connect_attempts,
            max_connections=b.max_connections,
        )
        if b.backend == "bluez":
            self._connector = BleConnector(settings)
            return
        # Virtual peripherals (demo, tests): imported only here, bumble is an optional extra.
        from edge_agent.virtual_ble import VirtualRadio
        from edge_agent.virtual_devices import build_peripheral

        radio = VirtualRadio()
        stack.push_async_callback(radio.close)
        for dev in cfg.devices:
            if dev.virtual is None or dev.kind not in BLE_KINDS:
                continue
            periph, activity = build_peripheral(radio, dev, tz=self._tz)
            await periph.start()
            task = activity()
            if task is not None:
                stack.callback(task.cancel)
        client, scanner = radio.backends()
        self._connector = BleConnector(settings, client_backend=client, scanner_backend=scanner)

    async def run(self, stop: asyncio.Event) -> None:
        async with contextlib.AsyncExitStack() as stack:
            await self._run(stop, stack)

    async def _run(self, stop: asyncio.Event, stack: contextlib.AsyncExitStack) -> None:
        cfg = self.config
        cfg.agent.data_dir.mkdir(parents=True, exist_ok=True)
        outbox = Outbox(cfg.outbox_path, synchronous=cfg.agent.outbox_synchronous)
        self._outbox = outbox
        relay = Relay(outbox, self.relay_config(), site=cfg.agent.site, agent_version=AGENT_VERSION)
        self._relay = relay
        relay.start()
        tasks: list[asyncio.Task[None]] = []
        try:
            # Built inside the try: a source that cannot be built (an unreadable cursor, say)
            # must not leave the relay thread running and the outbox open.
            self._open_registry(stack)
            await self._start_ble(stack)
            await self._start_serial(stack)
            sources = [self.build_source(d, outbox) for d in cfg.devices]
            if cfg.kiosk is not None:
                await self._start_kiosk(stack, outbox, sources, relay)
            log.info(
                "agent started: site=%s devices=%d outbox=%s pending=%d broker=%s",
                cfg.agent.site,
                len(cfg.devices),
                cfg.outbox_path,
                outbox.pending(),
                cfg.mqtt.url,
            )
            tasks = [
                asyncio.create_task(self._supervise(src), name=f"source-{src.device.device_id}")
                for src in sources
            ]
            await stop.wait()
        finally:
            for t in tasks:
                t.cancel()
            if tasks:
                # bounded: a driver stuck in a transport's close must not hold the shutdown (the
                # outbox is consistent at every commit, so what it leaves is resent next time)
                done, stuck = await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE_S)
                for t in done:
                    if not t.cancelled() and (exc := t.exception()) is not None:
                        log.error("%s failed while stopping: %r", t.get_name(), exc)
                for t in stuck:
                    log.warning("%s did not stop within %.0f s", t.get_name(), SHUTDOWN_GRACE_S)
            await asyncio.to_thread(relay.stop)
            outbox.close()
            log.info("agent stopped: site=%s", cfg.agent.site)

    async def _supervise(self, source: DeviceSource) -> None:
        assert self._outbox is not None
        outbox = self._outbox
        device_id = source.device.device_id
        backoff = SESSION_BACKOFF_MIN_S
        # a serial port is cheap to look for: a replugged meter is found within seconds
        backoff_max = getattr(source, "backoff_max_s", SESSION_BACKOFF_MAX_S)
        while True:
            cursor = await asyncio.to_thread(outbox.get_cursor, cursor_key(device_id))
            try:
                await source.run_session(self._sink, cursor)
                backoff = SESSION_BACKOFF_MIN_S
            except asyncio.CancelledError:
                raise
            except DeviceUnavailable as exc:
                # Normal for battery devices: asleep, out of range, or in use by a phone.
                self.stats.unavailable += 1
                log.info(
                    "device %s not available (%s); retrying in %.0f s", device_id, exc, backoff
                )
            except Exception:
                self.stats.session_errors += 1
                log.exception(
                    "session with device %s failed; retrying in %.0f s", device_id, backoff
                )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, backoff_max)

    async def _start_kiosk(
        self,
        stack: contextlib.AsyncExitStack,
        outbox: Outbox,
        sources: Sequence[DeviceSource],
        relay: Relay,
    ) -> None:
        """The station, its identification source and its screen (on loopback by default)."""
        import uvicorn  # the kiosk's screen server: only a station needs it

        from edge_agent.kiosk_identity import OneTimeCodes, load_codes
        from edge_agent.kiosk_ui import create_kiosk_app

        kiosk = self.config.kiosk
        assert kiosk is not None
        ids = {
            src.device.device_id: src.device.identity
            for src in sources
            if src.device.subject.kind == "kiosk-session"
        }
        self.station = KioskStation(
            site=self.config.agent.site,
            devices=ids,
            outbox=outbox,
            clock=self._clock,
            on_queued=lambda _msg_id: relay.wake(),  # a consented visit goes out at once
        )
        spent_prefix = "kiosk-code-spent:"
        codes = load_codes(kiosk.codes_file)
        spent = {
            d
            for d in (code_digest(c) for c in codes)
            if outbox.get_cursor(f"{spent_prefix}{d}") is not None
        }
        identity = OneTimeCodes(
            codes,
            spent=spent,
            on_spend=lambda d: outbox.set_cursor(f"{spent_prefix}{d}", "spent"),
        )
        app = create_kiosk_app(self.station, identity, kinds=self.config.kiosk_screens())
        server = uvicorn.Server(
            uvicorn.Config(
                app, host=kiosk.ui_host, port=kiosk.ui_port, log_level="warning", lifespan="on"
            )
        )
        task = asyncio.create_task(server.serve(), name="kiosk-screen")

        async def stop() -> None:
            server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, SHUTDOWN_GRACE_S)

        stack.push_async_callback(stop)
        log.info(
            "kiosk mode: %d station device(s), screen on http://%s:%d/",
            len(ids),
            kiosk.ui_host,
            kiosk.ui_port,
        )

    async def _sink(
        self, device: BoundDevice, observations: Sequence[Observation], cursor: str | None
    ) -> None:
        if self.station is not None and device.subject.kind == "kiosk-session":
            # a station's reading belongs to the open visit or to nobody (kiosk_session)
            taken = await asyncio.to_thread(
                self.station.measured, device.device_id, observations, device.identity
            )
            self.stats.observations_queued += taken
            if cursor is not None:
                await asyncio.to_thread(
                    self._outbox_required().set_cursor, cursor_key(device.device_id), cursor
                )
            return
        observations = self.derived.process(device.device_id, observations)
        msgs = encode_observations(
            site=self.config.agent.site,
            device_id=device.device_id,
            device=device.identity,
            subject=device.subject,
            observations=observations,
            created_at=self._clock(),
        )
        cursors = {cursor_key(device.device_id): cursor} if cursor is not None else None
        await self._queue(msgs, cursors)
        self.stats.observations_queued += len(observations)

    async def _event_sink(self, device: BoundDevice, events: Sequence[DeviceEvent]) -> None:
        msgs = encode_events(
            site=self.config.agent.site,
            device_id=device.device_id,
            device=device.identity,
            subject=device.subject,
            events=events,
            created_at=self._clock(),
        )
        await self._queue(msgs)
        self.stats.events_queued += len(events)

    async def _telemetry_sink(self, device: BoundDevice, sample: DeviceTelemetry) -> None:
        msgs = encode_telemetry(
            site=self.config.agent.site,
            device_id=device.device_id,
            device=device.identity,
            subject=device.subject,
            samples=[sample],
            created_at=self._clock(),
        )
        await self._queue(msgs)
        self.stats.telemetry_queued += 1

    def _outbox_required(self) -> Outbox:
        assert self._outbox is not None
        return self._outbox

    async def _queue(
        self, msgs: Sequence[OutboundMessage], cursors: dict[str, str] | None = None
    ) -> None:
        """Commit messages (and a source's cursor) to the outbox, then wake the relay."""
        assert self._outbox is not None
        assert self._relay is not None
        await asyncio.to_thread(self._outbox.put_many, msgs, cursors=cursors)
        self.stats.messages_queued += len(msgs)
        self._relay.wake()


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
