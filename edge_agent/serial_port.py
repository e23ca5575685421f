"""The serial transport: the only module that imports pyserial.

A thin asyncio adapter. :func:`open_port` resolves a port given by stable id
(``/dev/serial/by-id/usb-…``, a symlink udev keeps across replugs and USB port changes) or by
path, opens it exclusively (``flock``; a second agent or a stray ``screen`` gets "busy" instead
of stealing bytes) with the device's line settings, and returns a :class:`SerialLink`. Reads wait
on the file descriptor in the event loop (pyserial-asyncio-fast: ``add_reader``, no polling
thread, no busy loop), so an idle port costs no CPU.

Unplugging a USB adapter (or a simulator closing its pseudo-terminal) ends the link with
:class:`PortLost`; a port that is missing or busy raises :class:`PortUnavailable`, which the
agent's supervisor treats like a sleeping BLE device: retry with backoff until it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import serial
import serial_asyncio_fast

from edge_agent.sources import DeviceUnavailable

READ_CHUNK: Final = 4096
#: A USB-serial adapter's kernel buffer is 4 KiB; reading that much at a time keeps up with a
#: 115200 baud board (11.5 kB/s) at well under 10 wake-ups per second.

Parity = Literal["N", "E", "O"]
_PARITY: Final = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD}


@dataclass(frozen=True, slots=True, kw_only=True)
class LineSettings:
    """Baud rate and framing, e.g. 9600 8N1."""

    baudrate: int = 9600
    bytesize: Literal[7, 8] = 8
    parity: Parity = "N"
    stopbits: Literal[1, 2] = 1
    rtscts: bool = False

    def __str__(self) -> str:
        flow = " rtscts" if self.rtscts else ""
        return f"{self.baudrate} {self.bytesize}{self.parity}{self.stopbits}{flow}"


class PortUnavailable(DeviceUnavailable):
    """The port does not exist (unplugged) or another process holds it."""


class PortLost(ConnectionError):
    """The port went away while open (unplugged, adapter reset)."""


def resolve_port(spec: str) -> Path:
    """The device node behind ``spec`` (a by-id symlink or a path); PortUnavailable if absent."""
    p = Path(spec)
    if not p.exists():
        hint = ""
        if spec.startswith("/dev/serial/by-id/"):
            hint = " (unplugged? `ls -l /dev/serial/by-id/` lists the attached adapters)"
        raise PortUnavailable(f"serial port {spec} is not there{hint}")
    return p.resolve()


class SerialLink:
    """An open port: read what arrived (or wait for it), write bytes."""

    def __init__(
        self,
        spec: str,
        node: Path,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.spec = spec
        self.node = node
        self._reader = reader
        self._writer = writer
        self.bytes_in = 0
        self.bytes_out = 0

    async def read(self, wait_s: float | None) -> bytes:
        """Bytes that arrived, waiting up to ``wait_s`` seconds (b"" when none came)."""
        try:
            if wait_s is None:
                data = await self._reader.read(READ_CHUNK)
            else:
                data = await asyncio.wait_for(self._reader.read(READ_CHUNK), wait_s)
        except TimeoutError:
            return b""
        except (OSError, serial.SerialException) as exc:
            raise PortLost(f"serial port {self.spec}: {exc}") from None
        if not data:
            raise PortLost(f"serial port {self.spec} closed (unplugged?)")
        self.bytes_in += len(data)
        return data

    async def write(self, data: bytes) -> None:
        if not data:
            return
        if self._writer.is_closing():
            raise PortLost(f"serial port {self.spec} closed (unplugged?)")
        try:
            self._writer.write(data)
            await self._writer.drain()
        except (OSError, serial.SerialException) as exc:
            raise PortLost(f"serial port {self.spec}: {exc}") from None
        self.bytes_out += len(data)

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()


async def open_port(spec: str, settings: LineSettings) -> SerialLink:
    """Open ``spec`` exclusively with ``settings``; PortUnavailable when missing or busy."""
    node = resolve_port(spec)
    try:
        reader, writer = await serial_asyncio_fast.open_serial_connection(
            url=str(node),
            baudrate=settings.baudrate,
            bytesize=settings.bytesize,
            parity=_PARITY[settings.parity],
            stopbits=settings.stopbits,
            rtscts=settings.rtscts,
            exclusive=True,
        )
    except (OSError, serial.SerialException) as exc:
        text = str(exc)
        if "lock" in text.lower() or "busy" in text.lower():
            raise PortUnavailable(f"serial port {spec} is in use by another process") from None
        if not node.exists():
            raise PortUnavailable(f"serial port {spec} went away while opening") from None
        raise PortUnavailable(f"serial port {spec}: cannot open: {text}") from None
    return SerialLink(spec, node, reader, writer)
