"""The serial transport against real pseudo-terminals (edge_agent.serial_port + virtual_serial)."""

from __future__ import annotations

import asyncio
import os
import termios
from pathlib import Path

import pytest

from edge_agent.serial_port import LineSettings, PortLost, PortUnavailable, open_port
from edge_agent.virtual_serial import PtyDevice


class UpperEcho:
    """A tiny device: answers each byte upper-cased; b"!" pulls its plug."""

    def __init__(self) -> None:
        self._out = b""
        self.unplugged = False
        self.received = b""
        self.replugs = 0

    def receive(self, data: bytes, now: float) -> None:
        self.received += data
        self._out += data.upper()
        if b"!" in data:
            self.unplugged = True

    def poll(self, now: float) -> bytes:
        out, self._out = self._out, b""
        return out

    def next_deadline(self) -> float | None:
        return None

    def replug(self, now: float) -> None:
        self.unplugged = False
        self.replugs += 1


async def _read_exactly(link_read, n: int) -> bytes:  # type: ignore[no-untyped-def]
    got = b""
    while len(got) < n:
        chunk = await link_read(5.0)
        assert chunk, "the device said nothing for 5 s"
        got += chunk
    return got


def test_port_lifecycle_on_a_real_pty(tmp_path: Path) -> None:
    async def scenario() -> None:
        sim = UpperEcho()
        link_path = tmp_path / "by-id" / "usb-remon-echo"
        dev = PtyDevice(sim, link_path, replug_after_s=0.1)
        task = asyncio.create_task(dev.run())
        try:
            await asyncio.wait_for(dev.wait_ready(), 5)
            link = await open_port(str(link_path), LineSettings(baudrate=115200))
            # the stable id resolves to the pty's device node
            assert link.node == link_path.resolve()
            assert str(link.node).startswith("/dev/pts/")
            # line settings reach the tty
            fd = os.open(link.node, os.O_RDWR | os.O_NOCTTY)
            try:
                assert termios.tcgetattr(fd)[4] == termios.B115200
            finally:
                os.close(fd)
            # exclusive: a second opener is told the port is busy
            with pytest.raises(PortUnavailable, match="in use"):
                await open_port(str(link_path), LineSettings())
            await link.write(b"abc")
            assert await _read_exactly(link.read, 3) == b"ABC"
            assert await link.read(0.05) == b""  # nothing more: a timeout, not an error
            # unplug mid-conversation: the read fails with PortLost, not a hang
            await link.write(b"!")
            with pytest.raises(PortLost):  # noqa: PT012 - the loop is the single statement
                for _ in range(10):
                    await link.read(5.0)
            await link.close()
            # replugged under the same stable id, with the same device behind it
            for _ in range(100):
                if link_path.exists() and sim.replugs:
                    break
                await asyncio.sleep(0.05)
            await asyncio.wait_for(dev.wait_ready(), 5)
            link = await open_port(str(link_path), LineSettings())
            await link.write(b"z")
            assert await _read_exactly(link.read, 1) == b"Z"
            await link.close()
            assert dev.unplugs == 1
            assert sim.received == b"abc!z"
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert not link_path.exists()  # the runner removes its symlink when it stops

    asyncio.run(scenario())


def test_missing_port_is_unavailable_with_a_hint(tmp_path: Path) -> None:
    async def scenario() -> None:
        with pytest.raises(PortUnavailable, match="not there"):
            await open_port(str(tmp_path / "nothing"), LineSettings())
        with pytest.raises(PortUnavailable, match="by-id"):
            await open_port("/dev/serial/by-id/usb-no-such-adapter", LineSettings())

    asyncio.run(scenario())


def test_line_settings_text() -> None:
    assert str(LineSettings()) == "9600 8N1"
    assert str(LineSettings(baudrate=115200, parity="E", stopbits=2, rtscts=True)) == (
        "115200 8E2 rtscts"
    )
