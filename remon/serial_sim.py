"""``remon serial-sim CONFIG``: an agent configuration's virtual serial devices, in a process of
their own.

Every ``serial.*`` device of CONFIG that has a ``[devices.virtual]`` table (CONFIG has
``[serial] backend = "virtual"``) gets the simulator of its kind
(:func:`~edge_agent.virtual_serial_devices.build_serial_sim`) on a pseudo-terminal behind a
symlink at its ``port`` (:class:`~edge_agent.virtual_serial.PtyDevice`): a relative port lives
under ``<data_dir>/virtual-serial/`` (as :meth:`~edge_agent.config.AgentConfig.port_path` says),
an absolute one where it says. An agent whose configuration has ``[serial] backend = "tty"``
and the same absolute ports then reads them through its production serial path, in another
process, as it would read USB adapters.

Output on stdout: once every port is up, one line per device, ``<id>  <kind>  <port path>``.
On Ctrl-C or SIGTERM the ports go away and one JSON line of per-device counters follows,
``{"devices": {"<id>": {...}}, "run_s": ...}``: bytes each way, unplugs, the simulator's own
counters (frames sent, resends, readings taken, ...) and, for firmware bridge boards,
``events_sent`` (distinct event ids that went onto the wire, per message type: ``blow_end``,
``dispenser_event``, ``measurement``) and ``events_acked`` (those the host acknowledged).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TextIO
from zoneinfo import ZoneInfo

from device_profiles.serial.sim import SerialSim
from edge_agent.config import SERIAL_KINDS, AgentConfig, DeviceSection
from edge_agent.virtual_serial import PtyDevice
from edge_agent.virtual_serial_devices import Growing, build_serial_sim
from firmware_bridges import messages as m
from firmware_bridges.framing import Frame, FrameDecoder
from firmware_bridges.sim_boards import DispenserSim, KioskPeripheralSim, PefBoardSim

#: How long the ports may take to come up (s).
READY_TIMEOUT_S: Final = 10.0
#: Public counters of the simulators, reported when a simulator has them.
_SIM_COUNTERS: Final = (
    "frames_sent",
    "frames_dropped",
    "resends",
    "retransmissions",
    "transfers_completed",
    "transfers_aborted",
    "lines_sent",
    "dumps",
)
_BOARDS: Final = (PefBoardSim, DispenserSim, KioskPeripheralSim)


class SerialSimError(RuntimeError):
    """The configuration gives nothing to simulate, or a port path cannot be used."""


class BoardTap:
    """A bridge board simulator whose outgoing frames are read on the way out, to count the
    distinct events (BLOW_END, DISPENSER_EVENT, MEASUREMENT ids) it put on the wire."""

    def __init__(self, sim: SerialSim) -> None:
        self.sim = sim
        self._decoder = FrameDecoder()
        self.sent: dict[m.MsgType, set[int]] = {}

    def receive(self, data: bytes, now: float) -> None:
        self.sim.receive(data, now)

    def poll(self, now: float) -> bytes:
        out = self.sim.poll(now)
        for item in self._decoder.feed(out) if out else ():
            if not (isinstance(item, Frame) and item.msg_type in m.ACKED_TYPES):
                continue
            match m.decode_message(item.msg_type, item.payload):
                case (
                    m.BlowEnd(blow_id=ident)
                    | m.DispenserEvent(event_seq=ident)
                    | m.Measurement(seq=ident)
                ):
                    self.sent.setdefault(m.MsgType(item.msg_type), set()).add(ident)
        return out

    def next_deadline(self) -> float | None:
        return self.sim.next_deadline()

    def replug(self, now: float) -> None:
        self._decoder = FrameDecoder()  # a frame cut by the unplug is not counted
        self.sim.replug(now)

    @property
    def unplugged(self) -> bool:
        return self.sim.unplugged


@dataclass(slots=True)
class VirtualPort:
    device: DeviceSection
    path: Path
    pty: PtyDevice
    tap: BoardTap | None = None

    def counters(self) -> dict[str, Any]:
        pty = self.pty
        c: dict[str, Any] = {
            "kind": self.device.kind,
            "port": str(self.path),
            "bytes_to_host": pty.bytes_to_host,
            "bytes_from_host": pty.bytes_from_host,
            "bytes_dropped": pty.bytes_dropped,
            "unplugs": pty.unplugs,
        }
        sim = self.tap.sim if self.tap is not None else pty.sim
        if isinstance(sim, Growing):
            c["readings_taken"] = sim.taken
            sim = sim.sim
        c.update({k: v for k in _SIM_COUNTERS if isinstance(v := getattr(sim, k, None), int)})
        if self.tap is not None and isinstance(sim, _BOARDS):
            c["events_sent"] = {t.name.lower(): len(ids) for t, ids in self.tap.sent.items()}
            c["events_acked"] = {t.name.lower(): n for t, n in sim.acked_by_type.items()}
        return c


def virtual_ports(cfg: AgentConfig, *, now: float) -> list[VirtualPort]:
    """A simulator on a (not yet opened) pty for each serial device with a virtual table."""
    tz = ZoneInfo(cfg.agent.timezone)
    ports: list[VirtualPort] = []
    for dev in cfg.devices:
        if dev.kind not in SERIAL_KINDS or dev.virtual is None or dev.port is None:
            continue
        path = Path(cfg.port_path(dev.port))
        if path.exists() and not path.is_symlink():
            raise SerialSimError(
                f"device {dev.id}: {path} exists and is not a symlink; not replacing it"
            )
        sim = build_serial_sim(dev, tz=tz, now=now)
        tap = BoardTap(sim) if isinstance(sim, _BOARDS) else None
        pty = PtyDevice(tap or sim, path, replug_after_s=dev.virtual.replug_after_s)
        ports.append(VirtualPort(dev, path, pty, tap))
    if not ports:
        raise SerialSimError(
            'no serial device with a [devices.virtual] table (needs [serial] backend = "virtual")'
        )
    return ports


async def serve(ports: list[VirtualPort], stop: asyncio.Event, out: TextIO) -> None:
    """Run ``ports`` until ``stop`` is set (or a simulator fails); print as the module says."""
    started = time.monotonic()
    failed: list[BaseException] = []

    def done(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            failed.append(exc)
            stop.set()

    tasks = [asyncio.create_task(p.pty.run(), name=f"serial-sim-{p.device.id}") for p in ports]
    for t in tasks:
        t.add_done_callback(done)
    try:
        ready = asyncio.ensure_future(asyncio.gather(*(p.pty.wait_ready() for p in ports)))
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait(
            (ready, stopped), timeout=READY_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
        )
        stopped.cancel()
        if not ready.done():
            ready.cancel()
            if not stop.is_set():
                raise SerialSimError(f"the ports were not up within {READY_TIMEOUT_S:g} s")
        else:
            for p in ports:
                print(f"{p.device.id}  {p.device.kind}  {p.path}", file=out, flush=True)
            await stop.wait()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        doc = {
            "devices": {p.device.id: p.counters() for p in ports},
            "run_s": round(time.monotonic() - started, 3),
        }
        print(json.dumps(doc, sort_keys=True), file=out, flush=True)
    if failed:
        raise failed[0]


def run_serial_sim(cfg: AgentConfig, out: TextIO) -> None:
    """``remon serial-sim``: serve until SIGINT / SIGTERM."""

    async def main() -> None:
        ports = virtual_ports(cfg, now=time.monotonic())
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(ports, stop, out)

    asyncio.run(main())
