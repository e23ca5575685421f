"""Runs a sans-I/O GATT procedure over a live GATT link (the only place the two meet).

The procedures in :mod:`device_profiles.gatt` (glucose download, CGM session, vitals session)
return *commands* (subscribe, read, write a control point, start/cancel the one timer) and
*events*. :func:`drive` executes the commands on a :class:`GattLink`, feeds every notification,
indication, read answer, timer expiry and disconnect back into the procedure in arrival order,
and hands each event to the caller. It knows nothing of bleak: the link is an interface that
:mod:`edge_agent.ble` implements over bleak, and tests may implement over anything.

:class:`ClockedProcedure` binds each procedure to the clock it expects (:class:`GlucoseProcedure`:
a monotonic float; :class:`CgmProcedure`, :class:`VitalsProcedure`: aware UTC datetimes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, Protocol, TypeVar

from device_profiles.gatt.cgm_session import CgmSession
from device_profiles.gatt.cgm_session import ReadCharacteristic as CgmRead
from device_profiles.gatt.glucose_download import (
    CancelTimer,
    EnableIndications,
    EnableNotifications,
    GlucoseDownload,
    LocalProtocolError,
    StartTimer,
    WriteControlPoint,
)
from device_profiles.gatt.vitals_session import ReadCharacteristic as VitalsRead
from device_profiles.gatt.vitals_session import VitalsSession

log = logging.getLogger("remon.agent.gatt")


class LinkError(Exception):
    """A GATT operation failed on a link that is still up (refused, not found, timed out)."""


class LinkLost(Exception):
    """The link went down during an operation."""


ValueHandler = Callable[[int, bytes], None]


class GattLink(Protocol):
    """One connected peripheral, characteristics named by their 16-bit UUID."""

    @property
    def available(self) -> frozenset[int]:
        """16-bit UUIDs of the characteristics the peripheral has (from service discovery)."""
        ...

    def set_handlers(self, on_value: ValueHandler, on_disconnect: Callable[[], None]) -> None:
        """Route notifications/indications and the link's loss (each called on the loop)."""
        ...

    async def read(self, uuid: int) -> bytes: ...

    async def write(self, uuid: int, data: bytes) -> None:
        """Write with response (control points)."""
        ...

    async def subscribe(self, uuid: int, *, indicate: bool) -> None: ...

    async def disconnect(self) -> None: ...

    @property
    def rssi(self) -> int | None:
        """Signal strength (dBm) the peripheral was found with; None when not known."""
        ...


class Procedure(Protocol):
    @property
    def finished(self) -> bool: ...

    def start(self) -> list[object]: ...

    def receive(self, uuid: int, data: bytes) -> list[object]: ...

    def read_failed(self, uuid: int) -> list[object] | None:
        """Outputs for a failed read, or None when the procedure relies on its timer."""
        ...

    def timeout(self) -> list[object]: ...

    def disconnected(self) -> list[object]: ...


def _utcnow() -> datetime:
    return datetime.now(UTC)


T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)


class _Timed(Protocol[T_contra]):
    """What the three sans-I/O procedures share: inputs stamped with a clock of type ``T``."""

    @property
    def finished(self) -> bool: ...

    def start(self, *, now: T_contra) -> Sequence[object]: ...

    def receive(self, uuid: int, data: bytes, *, now: T_contra) -> Sequence[object]: ...

    def timeout(self, now: T_contra) -> Sequence[object]: ...

    def disconnected(self) -> Sequence[object]: ...


class ClockedProcedure(Generic[T]):
    """A procedure bound to its clock; a failed read is left to the procedure's timer."""

    def __init__(self, proc: _Timed[T], clock: Callable[[], T]) -> None:
        self._proc = proc
        self._clock = clock

    @property
    def finished(self) -> bool:
        return self._proc.finished

    def start(self) -> list[object]:
        return list(self._proc.start(now=self._clock()))

    def receive(self, uuid: int, data: bytes) -> list[object]:
        return list(self._proc.receive(uuid, data, now=self._clock()))

    def read_failed(self, uuid: int) -> list[object] | None:
        return None

    def timeout(self) -> list[object]:
        return list(self._proc.timeout(self._clock()))

    def disconnected(self) -> list[object]:
        return list(self._proc.disconnected())


class GlucoseProcedure(ClockedProcedure[float]):
    """The RACP download on a monotonic clock (it only measures idle time)."""

    def __init__(self, proc: GlucoseDownload, clock: Callable[[], float] = time.monotonic):
        super().__init__(proc, clock)


class CgmProcedure(ClockedProcedure[datetime]):
    """The CGM session on aware-UTC time (it anchors record times)."""

    def __init__(self, proc: CgmSession, clock: Callable[[], datetime] = _utcnow):
        super().__init__(proc, clock)


class VitalsProcedure(ClockedProcedure[datetime]):
    """The vitals session: a failed read counts as a missing characteristic."""

    def __init__(self, proc: VitalsSession, clock: Callable[[], datetime] = _utcnow):
        super().__init__(proc, clock)
        self._vitals = proc

    def read_failed(self, uuid: int) -> list[object] | None:
        return list(self._vitals.read_failed(uuid, now=self._clock()))


@dataclass(frozen=True, slots=True)
class _Value:
    uuid: int
    data: bytes


@dataclass(frozen=True, slots=True)
class _Timer:
    token: int


class _Lost:
    pass


_LOST = _Lost()
_Item = _Value | _Timer | _Lost


EventHandler = Callable[[object, bytes | None], Awaitable[None]]


async def drive(link: GattLink, procedure: Procedure, on_event: EventHandler) -> None:
    """Run ``procedure`` on ``link`` until it finishes; every event goes to ``on_event``.

    ``on_event(event, raw)`` also gets the bytes whose arrival produced the event (None for
    events of a timer or a disconnect), so a rejected value can be kept as it was received.
    A lost link is fed to the procedure as a disconnect (its final events still reach
    ``on_event``). Errors raised by ``on_event`` propagate (the caller's sink failed: nothing
    more may be read from the device in this session).
    """
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[_Item] = asyncio.Queue()
    timer: asyncio.TimerHandle | None = None
    token = 0
    link.set_handlers(
        lambda uuid, data: inbox.put_nowait(_Value(uuid, bytes(data))),
        lambda: inbox.put_nowait(_LOST),
    )

    def cancel_timer() -> None:
        nonlocal timer
        if timer is not None:
            timer.cancel()
            timer = None

    async def execute(outputs: list[object], raw: bytes | None = None) -> bool:
        """Run commands and deliver events in order; False once the link is lost."""
        nonlocal timer, token
        todo: deque[tuple[object, bytes | None]] = deque((o, raw) for o in outputs)
        while todo:
            item, item_raw = todo.popleft()
            try:
                if isinstance(item, EnableNotifications | EnableIndications):
                    if item.uuid in link.available:
                        await link.subscribe(
                            item.uuid, indicate=isinstance(item, EnableIndications)
                        )
                    else:
                        log.debug("characteristic %#06x absent: not subscribed", item.uuid)
                elif isinstance(item, WriteControlPoint):
                    await link.write(item.uuid, item.data)
                elif isinstance(item, CgmRead | VitalsRead):
                    try:
                        data = await link.read(item.uuid)
                    except LinkError as exc:
                        log.debug("read of %#06x failed: %s", item.uuid, exc)
                        more = procedure.read_failed(item.uuid) or []
                        todo.extendleft(reversed([(o, None) for o in more]))
                    else:
                        more = procedure.receive(item.uuid, data)
                        todo.extendleft(reversed([(o, data) for o in more]))
                elif isinstance(item, StartTimer):
                    cancel_timer()
                    token += 1
                    timer = loop.call_later(item.seconds, inbox.put_nowait, _Timer(token))
                elif isinstance(item, CancelTimer):
                    cancel_timer()
                else:
                    await on_event(item, item_raw)
            except LinkLost:
                return False
            except LinkError as exc:
                # A subscribe or control-point write the device refused: the procedure's timer
                # (every procedure arms one with such a command) ends it cleanly.
                log.warning("GATT operation %s failed: %s", type(item).__name__, exc)
        return True

    try:
        up = await execute(procedure.start())
        while not procedure.finished:
            if not up:
                await execute(procedure.disconnected())
                break
            got = await inbox.get()
            if isinstance(got, _Lost):
                up = False
            elif isinstance(got, _Timer):
                if got.token == token:
                    up = await execute(procedure.timeout())
            else:
                try:
                    outputs = procedure.receive(got.uuid, got.data)
                except LocalProtocolError as exc:  # a value on a characteristic it never asked for
                    log.warning("ignored a value on %#06x: %s", got.uuid, exc)
                    continue
                up = await execute(outputs, got.data)
    finally:
        cancel_timer()
        with contextlib.suppress(Exception):
            link.set_handlers(lambda _u, _d: None, lambda: None)
