"""Device sources for BLE health devices: a session = connect, identify, run the procedure.

Each source is a :class:`~edge_agent.sources.DeviceSource` for one bound peripheral:

1. connect through :class:`~edge_agent.ble.BleConnector` (scan by address + service UUID);
2. identify: read the Device Information strings; the registry keeps the first identity for
   good (ids derive from it), a device without them is known by its configured serial or its
   address;
3. run the sans-I/O procedure over the link (:func:`~edge_agent.gatt_driver.drive`) and turn
   its events into observations (:mod:`device_profiles.gatt.observations`), handed to the sink
   with the cursor in one durable commit;
4. everything a device sent that cannot be used (malformed bytes, a record without a date, a
   protocol violation) is kept as a reject on the hub with the reason, counted, and the
   session goes on.

Glucose meters: the cursor is the last sequence number durably queued; each session downloads
"≥ cursor + 1" (RACP), so a cut-off download resumes without loss or duplicates. The device clock
(Current Time, when the meter has it) is read first and record times are corrected by it.
CGM sensors: the session streams until the link drops; times are anchored by the session start
time. Indication devices (cuff, scale, thermometer, oximeter): stored and live values until the
device goes quiet (``idle_timeout_s``), then the session ends.

After a session that ended normally, the source waits ``poll_interval_s`` before the agent's
supervisor starts the next one (a meter is read when it is next seen).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Final

from device_profiles.gatt.cgm_session import CgmReading, CgmSession, SessionFailed
from device_profiles.gatt.cgm_session import PeerProtocolViolation as CgmViolation
from device_profiles.gatt.glucose_download import (
    ControlSolutionSkipped,
    DownloadComplete,
    DownloadFailed,
    GlucoseDownload,
    MalformedData,
    PeerProtocolViolation,
    RecordReceived,
)
from device_profiles.gatt.ieee11073 import DecodeError
from device_profiles.gatt.observations import (
    UnmappableRecord,
    cgm_observations,
    glucose_observations,
    local_to_utc,
)
from device_profiles.gatt.observations import vitals_observations as vitals_obs
from device_profiles.gatt.vitals import (
    decode_battery_level,
    decode_current_time,
    decode_dis_string,
)
from device_profiles.gatt.vitals_session import (
    BATTERY_LEVEL_UUID,
    DIS_UUIDS,
    Measurement,
    SessionEnded,
    SessionIdle,
    UnexpectedValue,
    VitalsKind,
    VitalsSession,
)
from device_profiles.observation import DeviceIdentity, Observation, QualityFlag
from device_profiles.telemetry import DeviceTelemetry, LinkState
from edge_agent.ble import BleConnector
from edge_agent.config import BleKind
from edge_agent.gatt_driver import (
    CgmProcedure,
    GattLink,
    GlucoseProcedure,
    LinkError,
    VitalsProcedure,
    drive,
)
from edge_agent.registry import DeviceRegistry
from edge_agent.sources import BoundDevice, RejectSink, Sink, TelemetrySink, queue_telemetry

log = logging.getLogger("remon.agent.ble")

#: The service each kind advertises and is scanned for.
SERVICE: Final[dict[str, int]] = {
    "ble.glucose-meter": 0x1808,
    "ble.cgm": 0x181F,
    "ble.bp-monitor": 0x1810,
    "ble.scale": 0x181D,
    "ble.thermometer": 0x1809,
    "ble.pulse-oximeter": 0x1822,
}
VITALS_KIND: Final[dict[str, VitalsKind]] = {
    "ble.bp-monitor": "blood_pressure",
    "ble.scale": "weight",
    "ble.thermometer": "temperature",
    "ble.pulse-oximeter": "pulse_oximeter",
}
_CURRENT_TIME: Final = 0x2A2B
BATCH_MAX: Final = 100


class IdentityUnknown(Exception):
    """The device's Device Information could not be read and none is registered yet."""


@dataclass(slots=True)
class BleStats:
    sessions: int = 0
    observations: int = 0
    rejects: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class BleDeviceSpec:
    device_id: str
    kind: BleKind
    address: str
    bound: BoundDevice  # identity here is the provisional one (configured serial or address)
    poll_interval_s: float = 60.0
    idle_timeout_s: float = 30.0
    timeout_s: float = 30.0
    #: A virtual peripheral: every observation carries the ``simulated`` quality flag.
    simulated: bool = False


class BleSource:
    def __init__(
        self,
        spec: BleDeviceSpec,
        *,
        connector: BleConnector,
        registry: DeviceRegistry,
        reject: RejectSink,
        tz: tzinfo,
        clock: Callable[[], datetime] | None = None,
        telemetry: TelemetrySink | None = None,
    ) -> None:
        self.spec = spec
        self._telemetry = telemetry
        self.connector = connector
        self.registry = registry
        self._reject = reject
        self.tz = tz
        self._clock = clock or (lambda: datetime.now(UTC))
        self.stats = BleStats()
        reg = registry.get(spec.address)
        known = reg.identity if reg is not None else None
        self._device = replace(spec.bound, identity=known) if known else spec.bound
        self._seen_keys: frozenset[tuple[int, bytes]] = frozenset()
        self.extra_quality: frozenset[QualityFlag] = (
            frozenset({QualityFlag.SIMULATED}) if spec.simulated else frozenset()
        )

    @property
    def device(self) -> BoundDevice:
        return self._device

    def reject(self, source: str, reason: str, raw: bytes | None) -> None:
        self.stats.rejects += 1
        log.warning("device %s: rejected %s data: %s", self.spec.device_id, source, reason)
        self._reject(self.spec.device_id, source, reason, raw)

    def reject_malformed(self, ev: MalformedData, raw: bytes | None) -> None:
        self.reject(f"ble:0x{ev.uuid:04X}", f"byte {ev.offset}: {ev.detail}", raw)

    async def run_session(self, sink: Sink, cursor: str | None) -> None:
        spec = self.spec
        connected = False
        try:
            async with self.connector.connect(
                spec.address, service_uuid=SERVICE[spec.kind]
            ) as link:
                self.stats.sessions += 1
                self.registry.seen(spec.address)
                await self._identify(link)
                connected = True
                await self._report(
                    link=LinkState.CONNECTED,
                    battery_pct=await self._battery(link),
                    rssi_dbm=link.rssi,
                )
                finished = await self.session(link, sink, cursor)
                self.registry.seen(spec.address, read=finished)
        except asyncio.CancelledError:
            raise  # the agent is stopping: its own status says so
        except BaseException:
            if connected:
                await self._report(link=LinkState.DISCONNECTED)
            raise
        await self._report(link=LinkState.DISCONNECTED)
        if finished:
            await asyncio.sleep(spec.poll_interval_s)

    async def _battery(self, link: GattLink) -> int | None:
        """Battery Level (percent) when the device has the Battery Service; None otherwise."""
        if BATTERY_LEVEL_UUID not in link.available:
            return None
        try:
            raw = await link.read(BATTERY_LEVEL_UUID)
        except LinkError as exc:
            log.info("device %s: battery level unreadable: %s", self.spec.device_id, exc)
            return None
        try:
            return decode_battery_level(raw)
        except DecodeError as exc:
            self.reject("ble:0x2A19", f"Battery Level: {exc}", raw)
            return None

    async def _report(
        self,
        *,
        link: LinkState,
        battery_pct: int | None = None,
        rssi_dbm: int | None = None,
    ) -> None:
        """Queue a telemetry sample on the hub's clock (:func:`queue_telemetry`)."""
        if self._telemetry is None:
            return
        sample = DeviceTelemetry(
            at=self._clock(), link=link, battery_pct=battery_pct, rssi_dbm=rssi_dbm
        )
        await queue_telemetry(self._telemetry, self._device, sample)

    async def session(self, link: GattLink, sink: Sink, cursor: str | None) -> bool:
        """One connection's work; True when it ended normally (not cut off)."""
        raise NotImplementedError

    async def _identify(self, link: GattLink) -> None:
        strings: list[str | None] = []
        failed: list[int] = []
        for uuid in DIS_UUIDS:  # manufacturer, model, serial, firmware
            value: str | None = None
            if uuid in link.available:
                try:
                    value = decode_dis_string(await link.read(uuid)) or None
                except (LinkError, DecodeError) as exc:
                    log.info("device %s: DIS %#06x unreadable: %s", self.spec.device_id, uuid, exc)
                    failed.append(uuid)
            strings.append(value)
        if any(u in failed for u in DIS_UUIDS[:3]):
            # The device has an identity but would not tell it this time. Ids derive from the
            # identity, so nothing is read under a guessed one: keep the registered identity,
            # or, before the first successful read, give up this session.
            registered = self.registry.get(self.spec.address)
            if registered is None or registered.identity is None:
                raise IdentityUnknown(
                    f"{self.spec.address}: Device Information present but unreadable "
                    f"({', '.join(f'{u:#06x}' for u in failed)}); not reading records under a "
                    "provisional identity"
                )
            self._device = replace(self._device, identity=registered.identity)
            return
        manufacturer, model, serial, firmware = strings
        prov = self.spec.bound.identity
        said = DeviceIdentity(
            manufacturer=manufacturer or prov.manufacturer,
            model=model or prov.model,
            serial=serial or prov.serial,
            firmware=firmware,
            transport="ble",
        )
        identity, warning = self.registry.identify(self.spec.address, said)
        if warning:
            log.warning("device %s: %s", self.spec.device_id, warning)
        self._device = replace(self._device, identity=identity)

    async def _clock_offset(self, link: GattLink) -> float | None:
        """Device wall clock minus hub wall clock (seconds), from Current Time; None without."""
        if _CURRENT_TIME not in link.available:
            return None
        try:
            raw = await link.read(_CURRENT_TIME)
        except LinkError as exc:
            log.info("device %s: no readable clock: %s", self.spec.device_id, exc)
            return None
        try:
            ct = decode_current_time(raw)
        except DecodeError as exc:
            self.reject("ble:0x2A2B", f"Current Time: {exc}", raw)
            return None
        device_local = ct.date_time.value
        if device_local is None:
            return None
        now = self._clock()
        device_utc = local_to_utc(device_local, self.tz)
        return round((device_utc - now).total_seconds() + ct.fractions256 / 256, 3)


class GlucoseMeterSource(BleSource):
    async def session(self, link: GattLink, sink: Sink, cursor: str | None) -> bool:
        last = _parse_seq(cursor)
        offset = await self._clock_offset(link)
        proc = GlucoseDownload(last, timeout_s=self.spec.timeout_s)
        batch: list[Observation] = []
        flushed = last  # the sequence number the outbox's cursor holds
        outcome: list[object] = []

        async def flush() -> None:
            nonlocal flushed
            seq = proc.last_sequence
            if batch or (seq is not None and seq != flushed):
                await sink(self.device, list(batch), f"seq:{seq}" if seq is not None else None)
                self.stats.observations += len(batch)
                batch.clear()
                flushed = seq

        async def on_event(ev: object, raw: bytes | None) -> None:
            if isinstance(ev, RecordReceived):
                try:
                    batch.extend(
                        glucose_observations(
                            ev.measurement,
                            clock_offset_s=offset,
                            tz=self.tz,
                            extra_quality=self.extra_quality,
                        )
                    )
                except UnmappableRecord as exc:
                    self.reject("ble:0x2A18", str(exc), raw)
                if len(batch) >= BATCH_MAX:
                    await flush()
            elif isinstance(ev, ControlSolutionSkipped):
                log.info(
                    "device %s: control-solution record %d skipped",
                    self.spec.device_id,
                    ev.sequence,
                )
            elif isinstance(ev, MalformedData):
                self.reject_malformed(ev, raw)
            elif isinstance(ev, PeerProtocolViolation):
                self.reject("ble:0x2A52", f"{ev.kind.value}: {ev.detail}", raw)
            elif isinstance(ev, DownloadComplete | DownloadFailed):
                outcome.append(ev)

        try:
            await drive(link, GlucoseProcedure(proc), on_event)
        finally:
            await flush()  # what was read is queued even when the link dropped
        done = outcome[-1] if outcome else None
        if isinstance(done, DownloadFailed):
            log.info("device %s: download ended early: %s", self.spec.device_id, done.reason)
            return False
        if isinstance(done, DownloadComplete):
            log.info(
                "device %s: download complete: %d records (%d expected, %d malformed)",
                self.spec.device_id,
                done.received,
                done.expected,
                done.malformed,
            )
            await link.disconnect()
            return True
        return False


def _parse_seq(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    if not cursor.startswith("seq:") or not cursor[4:].isdigit():
        raise ValueError(f"unreadable glucose cursor {cursor!r}")
    return int(cursor[4:])


class CgmSource(BleSource):
    async def session(self, link: GattLink, sink: Sink, cursor: str | None) -> bool:
        proc = CgmSession(response_timeout_s=self.spec.timeout_s)
        failed: list[SessionFailed] = []

        async def on_event(ev: object, raw: bytes | None) -> None:
            if isinstance(ev, CgmReading):
                obs = cgm_observations(ev, extra_quality=self.extra_quality)
                await sink(self.device, obs, f"cgm:{obs[0].record_key}")
                self.stats.observations += len(obs)
            elif isinstance(ev, MalformedData):
                self.reject_malformed(ev, raw)
            elif isinstance(ev, SessionFailed):
                failed.append(ev)
            elif isinstance(ev, CgmViolation):
                self.reject("ble:0x2AA7", f"{ev.kind.value}: {ev.detail}", raw)

        await drive(link, CgmProcedure(proc), on_event)
        log.info(
            "device %s: CGM link ended after %d observations (E2E-CRC %s, %d duplicates)",
            self.spec.device_id,
            self.stats.observations,
            "on" if proc.e2e_crc else "off",
            proc.duplicates,
        )
        if failed:
            log.info("device %s: CGM session ended: %s", self.spec.device_id, failed[-1].reason)
        return False  # a CGM stream ends only when the link drops: reconnect soon


class VitalsSource(BleSource):
    async def session(self, link: GattLink, sink: Sink, cursor: str | None) -> bool:
        proc = VitalsSession(
            VITALS_KIND[self.spec.kind],
            hub_utc_offset=self._clock().astimezone(self.tz).utcoffset() or timedelta(0),
            available=link.available - set(DIS_UUIDS),  # identity was read already
            idle_timeout_s=self.spec.idle_timeout_s,
            known_keys=self._seen_keys,
        )
        ended: list[object] = []

        async def on_event(ev: object, raw: bytes | None) -> None:
            if isinstance(ev, Measurement):
                try:
                    obs = vitals_obs(ev, extra_quality=self.extra_quality)
                except UnmappableRecord as exc:
                    self.reject(f"ble:0x{ev.uuid:04X}", str(exc), raw)
                    return
                await sink(self.device, obs, None)
                self.stats.observations += len(obs)
            elif isinstance(ev, MalformedData):
                self.reject_malformed(ev, raw)
            elif isinstance(ev, UnexpectedValue):
                self.reject(f"ble:0x{ev.uuid:04X}", ev.detail, raw)
            elif isinstance(ev, SessionIdle | SessionEnded):
                ended.append(ev)

        try:
            await drive(link, VitalsProcedure(proc), on_event)
        finally:
            self._seen_keys = proc.seen_keys
        log.info(
            "device %s: session ended (%s): %d observations so far, clock offset %s s",
            self.spec.device_id,
            type(ended[-1]).__name__ if ended else "link lost",
            self.stats.observations,
            proc.offset_s,
        )
        if ended and isinstance(ended[-1], SessionIdle):
            await link.disconnect()
            return True
        return False


def build_ble_source(
    spec: BleDeviceSpec,
    *,
    connector: BleConnector,
    registry: DeviceRegistry,
    reject: RejectSink,
    tz: tzinfo,
    telemetry: TelemetrySink | None = None,
) -> BleSource:
    cls: type[BleSource]
    if spec.kind == "ble.glucose-meter":
        cls = GlucoseMeterSource
    elif spec.kind == "ble.cgm":
        cls = CgmSource
    else:
        cls = VitalsSource
    return cls(
        spec, connector=connector, registry=registry, reject=reject, tz=tz, telemetry=telemetry
    )
