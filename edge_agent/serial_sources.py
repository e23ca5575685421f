"""Device sources for serial devices: a session = open the port, speak the protocol, until unplug.

Each source is a :class:`~edge_agent.sources.DeviceSource` for one configured port:

- ``serial.glucose-astm``: Contour-family meters push their memory (ASTM E1381 link, E1394
  records) when connected or when the patient starts a transfer; we answer ACK/NAK.
- ``serial.glucose-onetouch``: we ask an OneTouch Ultra 2 for its serial number, clock and
  memory, then again every ``poll_interval_s`` while it stays connected.
- ``serial.pef-board``, ``serial.dispenser``, ``serial.kiosk-peripheral``: our firmware bridge
  boards (``docs/firmware-bridges.md``); their events are acknowledged only after the agent
  committed them to its outbox, so a board resends whatever a crash or an unplug cut off.

The port is opened through :mod:`edge_agent.serial_port` (exclusive; by stable id). A port that
is missing or busy makes the session end as "unavailable" (the supervisor retries with backoff
capped at ``[serial] reopen_max_s``); an unplug mid-transfer ends it as well, and whatever was
not committed is read again next time: record ids are derived from content, so the cloud never
counts a reading twice. Everything a device sends that cannot be used (line noise, checksum
errors, a record that does not parse) is kept as a reject with its reason and raw bytes; the
rest of the stream keeps flowing.

Device identity: as for BLE, records are mapped only under the identity the device itself
stated in this session (ASTM header, ``DM@``, the board's HELLO), kept in the device registry.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

from device_profiles.events import DeviceEvent, EventKind
from device_profiles.observation import (
    DeviceIdentity,
    Observation,
    Provenance,
    QualityFlag,
    clock_quality,
)
from device_profiles.serial import astm, onetouch
from device_profiles.telemetry import DeviceTelemetry, LinkState
from edge_agent.pef_blow import BlowQuality
from edge_agent.registry import DeviceRegistry
from edge_agent.serial_port import LineSettings, PortLost, SerialLink, open_port
from edge_agent.signal import Blow, BlowOutcome, BlowRejected, SignalStage
from edge_agent.sources import (
    BoundDevice,
    DeviceUnavailable,
    EventSink,
    RejectSink,
    Sink,
    TelemetrySink,
    queue_telemetry,
)
from firmware_bridges import host as bridge
from firmware_bridges import messages as bridge_messages

log = logging.getLogger("remon.agent.serial")

#: Observations per sink call (one outbox transaction).
BATCH_MAX: Final = 200


class WrongDevice(Exception):
    """The device on the port is not the kind configured for it (e.g. a dispenser board on a
    port configured for a PEF board). The session stops; the supervisor retries with backoff."""


@dataclass(slots=True)
class SerialStats:
    sessions: int = 0
    unplugs: int = 0
    transfers: int = 0  # complete transfers / dumps / board sessions
    observations: int = 0
    events: int = 0
    rejects: int = 0
    control_results: int = 0  # control-solution tests: counted, kept aside, never patient data
    link_errors: int = 0  # checksum errors, noise, frame-number skips


@dataclass(frozen=True, slots=True, kw_only=True)
class SerialDeviceSpec:
    device_id: str
    kind: str
    port: str  # as opened: a by-id symlink or a device path
    line: LineSettings
    bound: BoundDevice  # provisional identity until the device states its own
    poll_interval_s: float = 60.0
    transfer_timeout_s: float = 30.0
    reopen_max_s: float = 10.0
    simulated: bool = False


def parse_line(text: str) -> LineSettings:
    """ "9600 8N1" (validated by the configuration) → LineSettings."""
    parts = text.split()
    frame = parts[1]
    return LineSettings(
        baudrate=int(parts[0]),
        bytesize=8 if frame[0] == "8" else 7,
        parity={"N": "N", "E": "E", "O": "O"}[frame[1]],  # type: ignore[arg-type]
        stopbits=2 if frame[2] == "2" else 1,
        rtscts="rtscts" in parts[2:],
    )


class SerialSource:
    """What every serial kind shares: the port, the registry, rejects and the session loop."""

    SOURCE: str = "serial"

    def __init__(
        self,
        spec: SerialDeviceSpec,
        *,
        registry: DeviceRegistry,
        reject: RejectSink,
        tz: ZoneInfo,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.spec = spec
        self.stats = SerialStats()
        self._bound = spec.bound
        self._registry = registry
        self._reject_sink = reject
        self._tz = tz
        self._clock = clock or (lambda: datetime.now(UTC))
        self.backoff_max_s = spec.reopen_max_s
        stored = registry.get(spec.port)
        if stored is not None and stored.identity is not None:
            self._bound = BoundDevice(
                device_id=spec.device_id, identity=stored.identity, subject=spec.bound.subject
            )

    @property
    def device(self) -> BoundDevice:
        return self._bound

    def _reject(self, reason: str, raw: bytes | None) -> None:
        self.stats.rejects += 1
        self._reject_sink(self.spec.device_id, self.SOURCE, reason, raw)

    def _control(self, raw: str) -> None:
        """A control-solution test: counted and kept aside, never sent as patient data."""
        self.stats.control_results += 1
        self._reject("control-solution result (kept aside, not patient data)", raw.encode())

    def _identify(self, identity: DeviceIdentity) -> BoundDevice:
        """Register the identity the device stated; the first one ever seen is kept."""
        kept, warning = self._registry.identify(self.spec.port, identity)
        if warning:
            log.warning("device %s: %s", self.spec.device_id, warning)
        self._bound = BoundDevice(
            device_id=self.spec.device_id, identity=kept, subject=self.spec.bound.subject
        )
        return self._bound

    def _quality(self) -> frozenset[QualityFlag]:
        return frozenset({QualityFlag.SIMULATED}) if self.spec.simulated else frozenset()

    async def run_session(self, sink: Sink, cursor: str | None) -> None:
        link = await open_port(self.spec.port, self.spec.line)
        self.stats.sessions += 1
        self._registry.seen(self.spec.port)
        log.info("device %s: %s open (%s)", self.spec.device_id, self.spec.port, self.spec.line)
        try:
            await self._converse(link, sink, cursor)
        except PortLost as exc:
            self.stats.unplugs += 1
            log.warning("device %s: %s", self.spec.device_id, exc)
        except asyncio.CancelledError:
            await link.close()
            raise  # the agent is stopping: its own status says so
        except BaseException:
            await link.close()
            await self._ended()
            raise
        await link.close()
        await self._ended()

    async def _ended(self) -> None:
        """Hook: the session ended (not by the agent stopping)."""

    async def _converse(self, link: SerialLink, sink: Sink, cursor: str | None) -> None:
        raise NotImplementedError

    async def _deliver(
        self, sink: Sink, observations: Sequence[Observation], cursor: str | None
    ) -> None:
        for i in range(0, len(observations), BATCH_MAX):
            part = observations[i : i + BATCH_MAX]
            last = i + BATCH_MAX >= len(observations)
            await sink(self._bound, part, cursor if last else None)
            self.stats.observations += len(part)


def _newer(
    observations: list[Observation], cursor: str | None
) -> tuple[list[Observation], str | None]:
    """Meters without sequence numbers send their whole memory each time: keep what is newer
    than the cursor. The cursor is the latest device time queued and the record keys queued at
    that time (a meter's clock has minutes or seconds: two readings can share a time stamp).
    Device times, not corrected times: they do not move when the measured offset jitters.
    """
    since, seen = "", set[str]()
    if cursor:
        try:
            doc = json.loads(cursor)
            since, seen = str(doc["device_time"]), set(doc["keys"])
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable meter cursor %r: reading the whole memory again", cursor)
    keep = [
        o
        for o in observations
        if (o.device_time or "") > since or (o.device_time == since and o.record_key not in seen)
    ]
    if not keep:
        return [], cursor
    latest = max(o.device_time or "" for o in keep)
    keys = sorted(o.record_key for o in keep if o.device_time == latest)
    if latest == since:
        keys = sorted(seen | set(keys))
    return keep, json.dumps({"device_time": latest, "keys": keys}, separators=(",", ":"))


class AstmMeterSource(SerialSource):
    SOURCE = "serial:astm"

    async def _converse(self, link: SerialLink, sink: Sink, cursor: str | None) -> None:
        rx = astm.AstmReceiver()
        assembler = astm.AstmMessageAssembler()
        header_at: datetime | None = None
        while True:
            in_transfer = rx.in_transfer
            data = await link.read(self.spec.transfer_timeout_s if in_transfer else None)
            events = rx.feed(data) if data else rx.timeout()
            for ev in events:
                if isinstance(ev, astm.Transmit):
                    await link.write(ev.data)
                elif isinstance(ev, astm.TransferStarted):
                    header_at = self._clock()
                    assembler = astm.AstmMessageAssembler()
                elif isinstance(ev, astm.RecordReceived):
                    assembler.add(ev.text)
                elif isinstance(ev, astm.LinkError):
                    self.stats.link_errors += 1
                    self._reject(f"ASTM link: {ev.reason}", ev.raw)
                elif isinstance(ev, astm.TransferEnded):
                    message = assembler.end(ev.complete)
                    if message is not None:
                        cursor = await self._message(
                            message, header_at or self._clock(), sink, cursor
                        )

    async def _message(
        self, message: astm.AstmMessage, header_at: datetime, sink: Sink, cursor: str | None
    ) -> str | None:
        for text, error in message.errors:
            self._reject(f"ASTM record: {error}", text.encode("latin-1", "replace"))
        sender = message.header.sender
        if sender is None:
            self._reject("ASTM header without the meter's model and serial", None)
            return cursor
        self._identify(
            DeviceIdentity(
                manufacturer="Ascensia",
                model=sender.model,
                serial=sender.serial,
                firmware=sender.firmware,
                transport="serial",
            )
        )
        offset = astm.clock_offset(message.header, hub_now=header_at, tz=self._tz)
        observations: list[Observation] = []
        for r in message.results:
            try:
                o = astm.result_to_observation(
                    r, tz=self._tz, clock_offset_s=offset, simulated=self.spec.simulated
                )
            except astm.AstmRecordError as exc:
                self._reject(f"ASTM result: {exc}", r.raw.encode("latin-1", "replace"))
                continue
            if o is None:
                self._control(r.raw)
                continue
            observations.append(o)
        keep, new_cursor = _newer(observations, cursor)
        if not message.terminated:
            new_cursor = cursor  # cut off: the next transfer re-reads what was missed
        await self._deliver(sink, keep, new_cursor)
        self.stats.transfers += 1
        log.info(
            "device %s: ASTM transfer of %d results (%d new), complete=%s",
            self.spec.device_id,
            len(message.results),
            len(keep),
            message.terminated,
        )
        return new_cursor


#: After an incomplete dump (lines lost to noise), ask again this soon instead of waiting for
#: the poll interval (s).
RETRY_INCOMPLETE_S: Final = 5.0


class OneTouchSource(SerialSource):
    SOURCE = onetouch.SOURCE

    async def _converse(self, link: SerialLink, sink: Sink, cursor: str | None) -> None:
        while True:
            complete, cursor = await self._dump(link, sink, cursor)
            await asyncio.sleep(self.spec.poll_interval_s if complete else RETRY_INCOMPLETE_S)

    async def _dump(
        self, link: SerialLink, sink: Sink, cursor: str | None
    ) -> tuple[bool, str | None]:
        session = onetouch.OneTouchSession()
        await link.write(session.start(time.monotonic()))
        readings: list[onetouch.Reading] = []
        offset: float | None = None
        serial: str | None = None
        while True:
            deadline = session.next_deadline()
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                data = await link.read(wait)
            except PortLost:
                for ev in session.connection_lost(time.monotonic()):
                    if isinstance(ev, onetouch.SessionFailed):
                        log.warning("device %s: %s", self.spec.device_id, ev.reason)
                raise
            now = time.monotonic()
            for ev in session.feed(data, now) if data else session.poll(now):
                if isinstance(ev, onetouch.Transmit):
                    await link.write(ev.data)
                elif isinstance(ev, onetouch.Identified):
                    serial = ev.serial
                    self._identify(
                        DeviceIdentity(
                            manufacturer="LifeScan",
                            model="OneTouch Ultra 2",
                            serial=ev.serial,
                            firmware=ev.version,
                            transport="serial",
                        )
                    )
                elif isinstance(ev, onetouch.ClockRead):
                    offset = onetouch.clock_offset_s(
                        ev.device_time, hub_time=self._clock(), tz=self._tz
                    )
                elif isinstance(ev, onetouch.ReadingParsed):
                    readings.append(ev.reading)
                elif isinstance(ev, onetouch.LineRejected):
                    self.stats.link_errors += 1
                    self._reject(f"OneTouch line: {ev.reason}", ev.raw)
                elif isinstance(ev, onetouch.SessionFailed):
                    raise DeviceUnavailable(f"OneTouch meter: {ev.reason}")
                elif isinstance(ev, onetouch.DumpComplete):
                    assert serial is not None  # the session identifies before it dumps
                    return ev.complete, await self._readings(
                        readings, ev, serial, offset, sink, cursor
                    )

    async def _readings(
        self,
        readings: list[onetouch.Reading],
        done: onetouch.DumpComplete,
        serial: str,
        offset: float | None,
        sink: Sink,
        cursor: str | None,
    ) -> str | None:
        observations: list[Observation] = []
        for r in readings:
            o = onetouch.reading_to_observation(
                r, serial=serial, tz=self._tz, clock_offset_s=offset, simulated=self.spec.simulated
            )
            if o is None:
                self._control(r.raw)
                continue
            observations.append(o)
        keep, new_cursor = _newer(observations, cursor)
        # A dump with lost lines must not move the cursor past them: the next dump re-reads.
        await self._deliver(sink, keep, new_cursor if done.complete else cursor)
        self.stats.transfers += 1
        log.info(
            "device %s: OneTouch dump %d/%d records (%d new)%s",
            self.spec.device_id,
            done.received,
            done.expected,
            len(keep),
            "" if done.complete else ", incomplete: asking again soon",
        )
        return new_cursor if done.complete else cursor


def build_serial_source(
    spec: SerialDeviceSpec,
    *,
    registry: DeviceRegistry,
    reject: RejectSink,
    events: EventSink,
    signal: SignalStage,
    tz: ZoneInfo,
    clock: Callable[[], datetime] | None = None,
    telemetry: TelemetrySink | None = None,
) -> SerialSource:
    if spec.kind == "serial.glucose-astm":
        return AstmMeterSource(spec, registry=registry, reject=reject, tz=tz, clock=clock)
    if spec.kind == "serial.glucose-onetouch":
        return OneTouchSource(spec, registry=registry, reject=reject, tz=tz, clock=clock)
    return BridgeSource(
        spec,
        registry=registry,
        reject=reject,
        events=events,
        signal=signal,
        tz=tz,
        clock=clock,
        telemetry=telemetry,
    )


_BOARD_KIND: Final[dict[str, bridge_messages.BoardKind]] = {
    "serial.pef-board": bridge_messages.BoardKind.PEF_SENSOR,
    "serial.dispenser": bridge_messages.BoardKind.DISPENSER,
    "serial.kiosk-peripheral": bridge_messages.BoardKind.KIOSK_PERIPHERAL,
}
_BOARD_MODEL: Final[dict[bridge_messages.BoardKind, str]] = {
    bridge_messages.BoardKind.PEF_SENSOR: "PEF sensor board",
    bridge_messages.BoardKind.DISPENSER: "medication dispenser bridge",
    bridge_messages.BoardKind.KIOSK_PERIPHERAL: "kiosk peripheral bridge",
}

Pending = Observation | DeviceEvent | DeviceTelemetry


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


_QUALITY_BITS: Final[dict[BlowQuality, bridge_messages.BlowQualityBits]] = {
    BlowQuality.SLOW_RISE: bridge_messages.BlowQualityBits.SLOW_RISE,
    BlowQuality.COUGH: bridge_messages.BlowQualityBits.COUGH,
    BlowQuality.EARLY_STOP: bridge_messages.BlowQualityBits.EARLY_STOP,
    BlowQuality.HESITATION: bridge_messages.BlowQualityBits.HESITATION,
    BlowQuality.LARGE_BEV: bridge_messages.BlowQualityBits.LARGE_BEV,
}


def blow_result(blow_id: int, outcome: BlowOutcome | None) -> bridge_messages.BlowResult:
    """The BLOW_RESULT for a blow: its analysis and session advice, or "not usable"."""
    advice = bridge_messages.SessionAdvice
    if outcome is None:
        return bridge_messages.BlowResult(
            blow_id=blow_id,
            pef_l_min=0,
            quality=bridge_messages.BlowQualityBits(0),
            advice=advice.BLOW_NOT_USABLE,
            session_best_l_min=0,
            session_blows=0,
        )
    a, s = outcome.analysis, outcome.session
    bits = bridge_messages.BlowQualityBits(0)
    for flag in a.flags:
        bits |= _QUALITY_BITS[flag]
    if s.blow_again:
        what = advice.BLOW_AGAIN
    elif s.reproducible:
        what = advice.SESSION_COMPLETE
    else:
        what = advice.SESSION_NOT_REPRODUCIBLE
    best = s.best_l_min if s.best_l_min is not None else 0.0
    return bridge_messages.BlowResult(
        blow_id=blow_id,
        pef_l_min=round(a.pef_l_min),  # <= 1200 L/min: the sensor range is +-20 L/s
        quality=bits,
        advice=what,
        session_best_l_min=round(best),
        session_blows=s.blows,  # a session ends by its 5th blow at the latest
    )


def _corrected(board_time: datetime | None, offset_ms: int | None, fallback: datetime) -> datetime:
    """Board clock → hub clock (minus the measured offset); the hub's receive time if unset."""
    if board_time is None:
        return fallback
    return board_time - timedelta(milliseconds=offset_ms or 0)


class BridgeSource(SerialSource):
    """A firmware bridge board: PEF sensor, medication dispenser or kiosk peripheral."""

    SOURCE = "serial:bridge"

    def __init__(
        self,
        spec: SerialDeviceSpec,
        *,
        registry: DeviceRegistry,
        reject: RejectSink,
        events: EventSink,
        signal: SignalStage,
        tz: ZoneInfo,
        clock: Callable[[], datetime] | None = None,
        telemetry: TelemetrySink | None = None,
    ) -> None:
        super().__init__(spec, registry=registry, reject=reject, tz=tz, clock=clock)
        self._events = events
        self._telemetry = telemetry
        self._signal = signal
        self._kind = _BOARD_KIND[spec.kind]
        self._offset_ms: int | None = None
        self._identified = False
        #: BLOW_RESULTs to send after the blows they describe are committed
        self._results: deque[bridge_messages.BlowResult] = deque()

    def _now_ms(self) -> int:
        return _ms(self._clock())

    async def _converse(self, link: SerialLink, sink: Sink, cursor: str | None) -> None:
        host = bridge.BridgeHost(expected_kind=self._kind)
        self._identified = False
        while True:
            deadline = host.next_deadline_ms()
            wait = None if deadline is None else max(0.0, (deadline - self._now_ms()) / 1000)
            data = await link.read(wait)
            now = self._now_ms()
            events = host.feed(data, now) if data else host.poll(now)
            pending: list[Pending] = []
            for ev in events:
                if isinstance(ev, bridge.Transmit):
                    # the ACK in these bytes may acknowledge what is pending: commit it first
                    await self._commit(sink, pending)
                    await link.write(ev.data)
                else:
                    pending += self._handle(ev)
            await self._commit(sink, pending)
            # what the hub made of a blow goes back to the board only once the blow is stored
            while self._results:
                await link.write(host.blow_result(self._results.popleft()).data)

    def _handle(self, ev: bridge.HostEvent) -> list[Pending]:
        if isinstance(ev, bridge.BoardHello):
            return self._hello(ev)
        if isinstance(ev, bridge.BridgeProblem):
            self.stats.link_errors += 1
            self._reject(f"bridge {ev.kind.value}: {ev.reason}", ev.raw)
        elif isinstance(ev, bridge.Heartbeat):
            self._offset_ms = ev.rtc_offset_ms
            self._registry.seen(self.spec.port)
        elif isinstance(ev, bridge.BoardError):
            log.warning("device %s: board error %s: %s", self.spec.device_id, ev.code, ev.text)
        elif isinstance(ev, bridge.BoardSilent | bridge.BoardBack):
            return self._link_state(ev)
        elif not self._identified:
            # the host only passes data after an accepted HELLO; never map under a guess
            self._reject("board data before its identity was known", None)
        elif isinstance(ev, bridge.BlowCurve):
            return self._blow(ev)
        elif isinstance(ev, bridge.DispenserReport):
            return [self._dispenser_event(ev)]
        elif isinstance(ev, bridge.PeripheralMeasurement):
            return [self._measurement(ev)]
        return []

    def _hello(self, ev: bridge.BoardHello) -> list[Pending]:
        if not ev.accepted:
            self._reject(
                f"board {ev.board_id} is a {ev.kind.name.lower()} board, this port is "
                f"configured for {self.spec.kind}",
                None,
            )
            raise WrongDevice(f"{self.spec.port}: board {ev.board_id} is a {ev.kind.name}")
        self._offset_ms = ev.rtc_offset_ms
        self._identify(
            DeviceIdentity(
                manufacturer="remon",
                model=_BOARD_MODEL[ev.kind],
                serial=ev.board_id,
                firmware=ev.firmware,
                transport="serial",
            )
        )
        self._identified = True
        telemetry = self._link(
            LinkState.CONNECTED,
            clock_offset_s=None if ev.rtc_offset_ms is None else ev.rtc_offset_ms / 1000,
        )
        log.info(
            "device %s: board %s firmware %s, clock offset %s ms",
            self.spec.device_id,
            ev.board_id,
            ev.firmware,
            ev.rtc_offset_ms,
        )
        return list(telemetry)

    def _link(
        self, state: LinkState, *, clock_offset_s: float | None = None
    ) -> list[DeviceTelemetry]:
        """A telemetry sample of the board's link (and clock), when telemetry is wired."""
        if self._telemetry is None:
            return []
        return [DeviceTelemetry(at=self._clock(), link=state, clock_offset_s=clock_offset_s)]

    async def _ended(self) -> None:
        if self._identified:
            self._identified = False
            for sample in self._link(LinkState.DISCONNECTED):
                await queue_telemetry(self._telemetry, self._bound, sample)

    def _link_state(self, ev: bridge.BoardSilent | bridge.BoardBack) -> list[Pending]:
        """The hub noticed the board go silent / come back: an offline / online event."""
        now = self._clock()
        if not self._identified:
            return []
        kind = EventKind.OFFLINE if isinstance(ev, bridge.BoardSilent) else EventKind.ONLINE
        log.warning("device %s: board %s", self.spec.device_id, kind.value)
        state = LinkState.DISCONNECTED if kind is EventKind.OFFLINE else LinkState.CONNECTED
        return [
            *self._link(state),
            DeviceEvent(
                kind=kind,
                event_time=now,
                record_key=f"hub:{kind.value}@{_ms(now)}",
                provenance=Provenance(source=f"{self.SOURCE}:hub"),
                quality=self._quality(),
            ),
        ]

    def _blow(self, ev: bridge.BlowCurve) -> list[Pending]:
        started = _corrected(ev.board_time, ev.rtc_offset_ms, ev.received_at)
        # the board's clock at sample 0 makes the key stable across re-sends of the blow
        when = _ms(ev.board_time) if ev.board_time is not None else _ms(ev.received_at)
        blow = Blow(
            device_id=self.spec.device_id,
            blow_id=ev.blow_id,
            record_key=f"blow:{ev.blow_id}@{when}",
            sample_rate_hz=ev.sample_rate_hz,
            flow_l_s=ev.flow_l_s,
            started_at=started,
            complete=ev.end_reason is bridge_messages.EndReason.COMPLETE and not ev.sensor_fault,
            board_peak_l_s=ev.board_peak_l_s,
            device_time=ev.board_time.isoformat() if ev.board_time is not None else None,
            clock_offset_s=ev.rtc_offset_ms / 1000 if ev.rtc_offset_ms is not None else None,
        )
        try:
            observations = self._signal.on_blow(
                blow, source="serial:bridge-pef", simulated=self.spec.simulated
            )
        except BlowRejected as exc:
            self._reject(f"PEF blow: {exc}", None)
            self._results.append(blow_result(ev.blow_id, None))
            return []
        outcome = self._signal.outcome(self.spec.device_id)
        if outcome is not None and outcome.blow_id == ev.blow_id:
            self._results.append(blow_result(ev.blow_id, outcome))
            log.info(
                "device %s: blow %s PEF %.0f L/min%s; %s",
                self.spec.device_id,
                ev.blow_id,
                outcome.analysis.pef_l_min,
                "".join(f", {f.value}" for f in sorted(outcome.analysis.flags)),
                outcome.session.reason,
            )
        if ev.saturated:
            # Clipped at the sensor's limit: the PEF is above the highest flow it could report.
            # The value is that limit (a comparator's value is the range limit), never the
            # filter's reading of a clipped plateau, whose corners overshoot it.
            limit = round(max(ev.flow_l_s) * 60, 1)
            observations = [
                replace(
                    o,
                    value=limit,
                    comparator=">",
                    quality=o.quality | {QualityFlag.ABOVE_RANGE},
                )
                for o in observations
            ]
        return list(observations)

    def _dispenser_event(self, ev: bridge.DispenserReport) -> DeviceEvent:
        when = _corrected(ev.actual, ev.rtc_offset_ms, ev.received_at)
        offset_s = ev.rtc_offset_ms / 1000 if ev.rtc_offset_ms is not None else None
        quality = set(self._quality())
        quality |= (
            clock_quality(offset_s) if ev.actual is not None else {QualityFlag.DEVICE_TIME_ONLY}
        )
        # A dose event is unique by kind and dose: a re-sent or re-numbered one keeps its id.
        if ev.dose_id is not None:
            key = f"{ev.kind.value}:{ev.dose_id}"
        else:
            key = f"{ev.kind.value}@{_ms(ev.actual) if ev.actual else f'seq{ev.seq}'}"
        return DeviceEvent(
            kind=ev.kind,
            event_time=when,
            record_key=key,
            dose_id=ev.dose_id,
            scheduled_time=ev.scheduled,
            device_time=ev.actual.isoformat() if ev.actual is not None else None,
            clock_offset_s=offset_s,
            details=dict(ev.details),
            quality=frozenset(quality),
            provenance=Provenance(source="serial:bridge-dispenser"),
        )

    def _measurement(self, ev: bridge.PeripheralMeasurement) -> Observation:
        when = _corrected(ev.at, ev.rtc_offset_ms, ev.received_at)
        offset_s = ev.rtc_offset_ms / 1000 if ev.rtc_offset_ms is not None else None
        quality = set(self._quality())
        if ev.at is None:
            quality.add(QualityFlag.DEVICE_TIME_ONLY)
        else:
            quality |= clock_quality(offset_s)
        if ev.unstable:
            quality.add(QualityFlag.QUESTIONABLE)
        if ev.comparator == ">":
            quality.add(QualityFlag.ABOVE_RANGE)
        elif ev.comparator == "<":
            quality.add(QualityFlag.BELOW_RANGE)
        stamp = _ms(ev.at) if ev.at is not None else f"seq{ev.seq}"
        return Observation(
            measure=ev.measure,
            unit=ev.unit,
            value=ev.value,
            comparator=ev.comparator,
            absent_reason=ev.absent_reason,
            effective_time=when,
            record_key=f"m:{ev.seq}@{stamp}",
            device_time=ev.at.isoformat() if ev.at is not None else None,
            clock_offset_s=offset_s,
            quality=frozenset(quality),
            provenance=Provenance(source="serial:bridge-peripheral"),
        )

    async def _commit(self, sink: Sink, pending: list[Pending]) -> None:
        """Durably queue what the board sent before any ACK for it goes out."""
        if not pending:
            return
        observations = [p for p in pending if isinstance(p, Observation)]
        events = [p for p in pending if isinstance(p, DeviceEvent)]
        if observations:
            await self._deliver(sink, observations, None)
        if events:
            await self._events(self._bound, events)
            self.stats.events += len(events)
        samples = [p for p in pending if isinstance(p, DeviceTelemetry)]
        for sample in samples:
            await queue_telemetry(self._telemetry, self._bound, sample)
        pending.clear()
