"""The device source interface: what the agent runs for each bound device.

A source runs *sessions* with one bound device. In a session it reads the records the device
holds after the agent's cursor (the last record durably queued), hands them to the sink, and
waits for more. The sink returns only when the observations and the new cursor are committed to
the outbox in one transaction, so a crash anywhere between device and outbox loses nothing and
duplicates nothing that ingest could not recognise (the same record gets the same ids).

Sessions end by returning (device went away; the supervisor starts another after a pause) or
by cancellation (agent stopping). Exceptions are logged and counted by the supervisor, which
restarts the session with backoff: one faulty device never stops the others.

BLE (issue 3) and serial (issue 4) devices implement the same protocol over their transports.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from device_profiles.events import DeviceEvent
from device_profiles.observation import DeviceIdentity, Observation
from device_profiles.telemetry import DeviceTelemetry
from gateway.wire import Subject

log = logging.getLogger("remon.agent.sources")


class DeviceUnavailable(Exception):
    """The device could not be reached this time (not advertising, connection refused).

    Not a fault: battery devices sleep between measurements. The supervisor retries with
    backoff and logs it without a traceback.
    """


@dataclass(frozen=True, slots=True, kw_only=True)
class BoundDevice:
    """A device as configured on this hub: its topic id, identity and the subject it is bound to."""

    device_id: str
    identity: DeviceIdentity
    subject: Subject


#: Durably queue observations of a device with the source's new cursor; returns when committed.
Sink = Callable[[BoundDevice, Sequence[Observation], str | None], Awaitable[None]]
#: Durably queue device events (a dispenser's dose_missed...); returns when committed.
EventSink = Callable[[BoundDevice, Sequence[DeviceEvent]], Awaitable[None]]
#: Durably queue a device's telemetry sample (battery, RSSI, link state); returns when committed.
TelemetrySink = Callable[[BoundDevice, DeviceTelemetry], Awaitable[None]]
#: Keep a reject on the hub: (device_id, source, reason, raw bytes or None).
RejectSink = Callable[[str, str, str, bytes | None], None]


async def queue_telemetry(
    sink: TelemetrySink | None, device: BoundDevice, sample: DeviceTelemetry
) -> None:
    """Hand a telemetry sample to ``sink`` (when wired); a failure is logged only: telemetry
    must never end a session that is reading a patient's data."""
    if sink is None:
        return
    try:
        await sink(device, sample)
    except Exception as exc:
        log.warning("device %s: telemetry not queued: %r", device.device_id, exc)


class DeviceSource(Protocol):
    @property
    def device(self) -> BoundDevice: ...

    async def run_session(self, sink: Sink, cursor: str | None) -> None:
        """Read records after ``cursor`` and hand them to ``sink`` until the session ends."""
        ...
