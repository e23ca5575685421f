"""Virtual serial devices: a simulator at the far end of a real pseudo-terminal.

For the demo, the tests and the benchmarks. :class:`PtyDevice` opens a pty pair
(``os.openpty``), puts the slave in raw mode and points a stable symlink at it (the way udev's
``/dev/serial/by-id/…`` names a USB adapter), then runs a sans-I/O
:class:`~device_profiles.serial.sim.SerialSim` on the master side: what the agent writes to the
port goes to the simulator, what the simulator says is written back. The agent opens the symlink
through its production serial transport (pyserial), so everything from the tty layer up is the
code that runs against a real adapter.

Unplugging: when the simulator says it was pulled out, the pty is closed (the agent's reads fail
with EIO, as with a USB adapter yanked out), the symlink disappears, and after ``replug_after_s``
a new pty appears under the same symlink, with the same simulator (memory kept, as a real meter).

The runner sleeps until the simulator's next deadline or until bytes arrive: an idle virtual
device costs no CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import tty
from collections.abc import Callable
from pathlib import Path

from device_profiles.serial.sim import SerialSim

log = logging.getLogger("remon.virtual_serial")


class PtyDevice:
    def __init__(
        self,
        sim: SerialSim,
        link: Path,
        *,
        replug_after_s: float | None = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sim = sim
        self.link = Path(link)
        self.replug_after_s = replug_after_s
        self._clock = clock
        self.unplugs = 0
        self.bytes_to_host = 0
        self.bytes_from_host = 0
        self.bytes_dropped = 0  # written while the host had not drained the pty (device-side loss)
        self._ready = asyncio.Event()
        self._wake = asyncio.Event()

    async def wait_ready(self) -> None:
        """Until the symlink points at a live pty."""
        await self._ready.wait()

    async def run(self) -> None:
        """Serve until cancelled; replug after each simulated unplug (if ``replug_after_s``)."""
        self.link.parent.mkdir(parents=True, exist_ok=True)
        try:
            while True:
                await self._serve_once()
                self.unplugs += 1
                if self.replug_after_s is None:
                    return
                await asyncio.sleep(self.replug_after_s)
                self.sim.replug(self._clock())
        finally:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()

    async def _serve_once(self) -> None:
        loop = asyncio.get_running_loop()
        master, slave = os.openpty()
        try:
            tty.setraw(slave)
            os.set_blocking(master, False)
            tmp = self.link.with_name(self.link.name + ".new")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(os.ttyname(slave))
            tmp.replace(self.link)
            loop.add_reader(master, self._readable, master)
            self._ready.set()
            try:
                await self._pump(master)
            finally:
                loop.remove_reader(master)
                self._ready.clear()
                with contextlib.suppress(FileNotFoundError):
                    self.link.unlink()
        finally:
            os.close(master)
            os.close(slave)
        log.info("virtual serial device %s unplugged", self.link)

    def _readable(self, master: int) -> None:
        try:
            data = os.read(master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return
        if data:
            self.bytes_from_host += len(data)
            self.sim.receive(data, self._clock())
            self._wake.set()

    async def _pump(self, master: int) -> None:
        while True:
            out = self.sim.poll(self._clock())
            if out:
                self._write(master, out)
            if self.sim.unplugged:
                return
            deadline = self.sim.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - self._clock())
            if timeout == 0.0:
                await asyncio.sleep(0)  # a simulator that is due again at once: let others run
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _write(self, master: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(master, view)
            except BlockingIOError:
                # Nobody is draining the port (agent not running, or it stopped reading): the
                # bytes are lost, as they would be on a real line with no listener.
                self.bytes_dropped += len(view)
                return
            self.bytes_to_host += n
            view = view[n:]
