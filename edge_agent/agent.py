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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from device_profiles.observation import Observation
from edge_agent.config import AgentConfig, DeviceSection
from edge_agent.simulators import SIMULATORS, SimSettings, SimulatedDevice, sim_identity
from edge_agent.sources import BoundDevice, DeviceSource
from gateway.outbox import Outbox
from gateway.relay import Relay, RelayConfig, RelayStats
from gateway.wire import Subject, encode_observations

log = logging.getLogger("remon.agent")

AGENT_VERSION = "0.1.0"
SESSION_BACKOFF_MIN_S = 1.0
SESSION_BACKOFF_MAX_S = 60.0


@dataclass(slots=True)
class AgentStats:
    observations_queued: int = 0
    messages_queued: int = 0
    session_errors: int = 0


def cursor_key(device_id: str) -> str:
    return f"device:{device_id}"


class Agent:
    def __init__(self, config: AgentConfig, *, clock: Callable[[], datetime] | None = None) -> None:
        self.config = config
        self._clock = clock or (lambda: datetime.now(UTC))
        self.stats = AgentStats()
        self._outbox: Outbox | None = None
        self._relay: Relay | None = None

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
        )

    def build_source(self, dev: DeviceSection, outbox: Outbox) -> DeviceSource:
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

    async def run(self, stop: asyncio.Event) -> None:
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
            sources = [self.build_source(d, outbox) for d in cfg.devices]
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
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            await asyncio.to_thread(relay.stop)
            outbox.close()
            log.info("agent stopped: site=%s", cfg.agent.site)

    async def _supervise(self, source: DeviceSource) -> None:
        assert self._outbox is not None
        outbox = self._outbox
        device_id = source.device.device_id
        backoff = SESSION_BACKOFF_MIN_S
        while True:
            cursor = await asyncio.to_thread(outbox.get_cursor, cursor_key(device_id))
            try:
                await source.run_session(self._sink, cursor)
                backoff = SESSION_BACKOFF_MIN_S
            except asyncio.CancelledError:
                raise
            except Exception:
                self.stats.session_errors += 1
                log.exception(
                    "session with device %s failed; retrying in %.0f s", device_id, backoff
                )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, SESSION_BACKOFF_MAX_S)

    async def _sink(
        self, device: BoundDevice, observations: Sequence[Observation], cursor: str | None
    ) -> None:
        assert self._outbox is not None
        assert self._relay is not None
        msgs = encode_observations(
            site=self.config.agent.site,
            device_id=device.device_id,
            device=device.identity,
            subject=device.subject,
            observations=observations,
            created_at=self._clock(),
        )
        cursors = {cursor_key(device.device_id): cursor} if cursor is not None else None
        await asyncio.to_thread(self._outbox.put_many, msgs, cursors=cursors)
        self.stats.observations_queued += len(observations)
        self.stats.messages_queued += len(msgs)
        self._relay.wake()
