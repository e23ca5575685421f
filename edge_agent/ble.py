"""BLE transport: the product's only importer of bleak and bleak-retry-connector.

:class:`BleConnector` finds a peripheral by address (scanning, optionally filtered by service
UUID), connects through :func:`bleak_retry_connector.establish_connection` (bounded attempts,
backoff on transient errors, the stale-GATT-cache recovery it knows for BlueZ) and yields a
:class:`BleakLink`, the :class:`~edge_agent.gatt_driver.GattLink` the procedures run on.
Per adapter, scanning and connecting happen one device at a time (BlueZ misbehaves under
concurrent connection attempts), and at most ``max_connections`` links are open at once (default
1: download-style devices — meters, cuffs, scales — take turns, each session holding its slot
until it disconnects). A CGM keeps its link for the whole sensor session, so a hub with CGMs
needs one slot per CGM plus one for the rest (the agent's configuration checks this).

bleak errors are translated here, at the boundary: an operation on a link that went down raises
:class:`~edge_agent.gatt_driver.LinkLost`, any other GATT failure
:class:`~edge_agent.gatt_driver.LinkError`, a peripheral not seen in the scan
:class:`DeviceNotFound`, a connection that could not be made :class:`ConnectFailed`.

``client_backend`` / ``scanner_backend`` inject bleak backends (bleak's documented hook): the
virtual peripherals of :mod:`edge_agent.virtual_ble` come in that way, so the code above the
backend is the production code path. ``None`` means the platform's backend (BlueZ on a Pi).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Final

from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError
from bleak_retry_connector import BleakClientWithServiceCache, establish_connection

from device_profiles.telemetry import RSSI_MAX_DBM, RSSI_MIN_DBM
from edge_agent.gatt_driver import LinkError, LinkLost, ValueHandler
from edge_agent.sources import DeviceUnavailable

log = logging.getLogger("remon.agent.ble")

_BASE_SUFFIX: Final = "-0000-1000-8000-00805f9b34fb"


class DeviceNotFound(DeviceUnavailable):
    """The peripheral did not advertise within the scan timeout (off, out of range, asleep)."""


class ConnectFailed(DeviceUnavailable):
    """The peripheral was seen but no connection could be made within the attempts."""


def uuid16(uuid: int) -> str:
    """The 128-bit string bleak uses for a 16-bit SIG UUID."""
    return f"0000{uuid:04x}{_BASE_SUFFIX}"


def short_uuid(uuid: str) -> int | None:
    """The 16-bit UUID of a SIG base UUID string, or None for a vendor UUID."""
    u = uuid.lower()
    if len(u) == 36 and u.startswith("0000") and u.endswith(_BASE_SUFFIX):
        return int(u[4:8], 16)
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class BleSettings:
    adapter: str | None = None  # e.g. "hci0"; None: the system default
    scan_timeout_s: float = 10.0
    connect_attempts: int = 3
    max_connections: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Seen:
    """One advertising peripheral found by :meth:`BleConnector.scan`."""

    address: str
    name: str | None
    service_uuids: tuple[int, ...]
    rssi: int | None


def usable_rssi(value: int | None) -> int | None:
    """An RSSI as telemetry: Bluetooth reports -127..+20 dBm and 127 for "not available";
    anything else is not a measurement and becomes None (never clamped)."""
    if value is None or not RSSI_MIN_DBM <= value <= RSSI_MAX_DBM:
        return None
    return value


class BleakLink:
    """A connected bleak client as a :class:`~edge_agent.gatt_driver.GattLink`."""

    def __init__(self, client: BleakClient, *, rssi: int | None = None) -> None:
        self._client = client
        #: Signal strength (dBm) of the advertisement the link was made from; None: unknown.
        self.rssi = rssi
        self._chars: dict[int, BleakGATTCharacteristic] = {}
        for service in client.services:
            for char in service.characteristics:
                short = short_uuid(char.uuid)
                if short is not None and short not in self._chars:
                    self._chars[short] = char
        self._on_value: ValueHandler = lambda _u, _d: None
        self._on_disconnect: Callable[[], None] = lambda: None
        self._lost = False

    @property
    def address(self) -> str:
        return str(self._client.address)

    @property
    def available(self) -> frozenset[int]:
        return frozenset(self._chars)

    @property
    def is_connected(self) -> bool:
        return not self._lost and bool(self._client.is_connected)

    def set_handlers(self, on_value: ValueHandler, on_disconnect: Callable[[], None]) -> None:
        self._on_value = on_value
        self._on_disconnect = on_disconnect
        if self._lost:
            on_disconnect()

    def lost(self) -> None:
        """bleak's disconnected callback."""
        if not self._lost:
            self._lost = True
            self._on_disconnect()

    def _char(self, uuid: int) -> BleakGATTCharacteristic:
        char = self._chars.get(uuid)
        if char is None:
            raise LinkError(f"characteristic {uuid:#06x} is not on this device")
        return char

    def _translate(self, what: str, exc: Exception) -> Exception:
        if not self.is_connected:
            return LinkLost(f"{what}: link lost ({exc!r})")
        return LinkError(f"{what}: {exc!r}")

    async def read(self, uuid: int) -> bytes:
        char = self._char(uuid)
        try:
            return bytes(await self._client.read_gatt_char(char))
        except (BleakError, TimeoutError, EOFError, OSError) as exc:
            raise self._translate(f"read {uuid:#06x}", exc) from exc

    async def write(self, uuid: int, data: bytes) -> None:
        char = self._char(uuid)
        try:
            await self._client.write_gatt_char(char, data, response=True)
        except (BleakError, TimeoutError, EOFError, OSError) as exc:
            raise self._translate(f"write {uuid:#06x}", exc) from exc

    async def subscribe(self, uuid: int, *, indicate: bool) -> None:
        # bleak enables notify or indicate by the characteristic's properties.
        char = self._char(uuid)
        props = set(char.properties)
        if ("indicate" if indicate else "notify") not in props:
            log.debug("%#06x offers %s; subscribing to what it has", uuid, sorted(props))

        def on_value(_char: BleakGATTCharacteristic, data: bytearray) -> None:
            self._on_value(uuid, bytes(data))

        try:
            await self._client.start_notify(char, on_value)
        except (BleakError, TimeoutError, EOFError, OSError) as exc:
            raise self._translate(f"subscribe {uuid:#06x}", exc) from exc

    async def disconnect(self) -> None:
        with contextlib.suppress(BleakError, TimeoutError, EOFError, OSError):
            await self._client.disconnect()


class BleConnector:
    """Scans and connects on one adapter; at most ``max_connections`` links at a time."""

    def __init__(
        self,
        settings: BleSettings | None = None,
        *,
        client_backend: type[Any] | None = None,
        scanner_backend: type[Any] | None = None,
    ) -> None:
        self.settings = settings or BleSettings()
        self._client_backend = client_backend
        self._scanner_backend = scanner_backend
        self._slots = asyncio.Semaphore(self.settings.max_connections)
        self._establishing = asyncio.Lock()

    def _scanner_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {}
        if self._scanner_backend is not None:
            kw["backend"] = self._scanner_backend
        if self.settings.adapter is not None:
            kw["bluez"] = {"adapter": self.settings.adapter}
        return kw

    async def scan(
        self, *, service_uuids: tuple[int, ...] = (), timeout_s: float | None = None
    ) -> list[Seen]:
        """Peripherals advertising any of ``service_uuids`` (all when empty), for ``timeout_s``."""
        found: dict[str, Seen] = {}

        def seen(device: BLEDevice, ad: AdvertisementData) -> None:
            shorts = tuple(dict.fromkeys(s for s in map(short_uuid, ad.service_uuids) if s))
            found[device.address] = Seen(
                address=device.address, name=ad.local_name, service_uuids=shorts, rssi=ad.rssi
            )

        filter_uuids = [uuid16(u) for u in service_uuids] or None
        async with BleakScanner(seen, service_uuids=filter_uuids, **self._scanner_kwargs()):
            await asyncio.sleep(
                timeout_s if timeout_s is not None else self.settings.scan_timeout_s
            )
        return sorted(found.values(), key=lambda s: s.address)

    async def find(self, address: str, *, service_uuid: int | None = None) -> BLEDevice:
        return (await self._find(address, service_uuid))[0]

    async def _find(self, address: str, service_uuid: int | None) -> tuple[BLEDevice, int | None]:
        """The advertising device and the RSSI (dBm) of the advertisement that matched."""
        want = address.upper()
        rssi: list[int | None] = [None]

        def match(device: BLEDevice, ad: AdvertisementData) -> bool:
            if device.address.upper() != want:
                return False
            if service_uuid is not None and uuid16(service_uuid) not in ad.service_uuids:
                return False
            rssi[0] = ad.rssi
            return True

        device = await BleakScanner.find_device_by_filter(
            match, timeout=self.settings.scan_timeout_s, **self._scanner_kwargs()
        )
        if device is None:
            raise DeviceNotFound(
                f"{address} did not advertise"
                + (f" service {service_uuid:#06x}" if service_uuid is not None else "")
                + f" within {self.settings.scan_timeout_s:g} s"
            )
        return device, usable_rssi(rssi[0])

    @contextlib.asynccontextmanager
    async def connect(
        self, address: str, *, service_uuid: int | None = None
    ) -> AsyncIterator[BleakLink]:
        """Find, connect and discover; disconnects when the block ends."""
        async with self._slots:
            async with self._establishing:
                client, link = await self._establish(address, service_uuid)
            if not client.is_connected:
                link.lost()
            try:
                yield link
            finally:
                await link.disconnect()

    async def _establish(
        self, address: str, service_uuid: int | None
    ) -> tuple[BleakClient, BleakLink]:
        device, rssi = await self._find(address, service_uuid)
        holder: list[BleakLink] = []

        def on_disconnect(_client: BleakClient) -> None:
            if holder:
                holder[0].lost()

        kwargs: dict[str, Any] = {}
        if self._client_backend is not None:
            kwargs["backend"] = self._client_backend
        try:
            client = await establish_connection(
                BleakClientWithServiceCache,
                device,
                device.name or address,
                disconnected_callback=on_disconnect,
                max_attempts=self.settings.connect_attempts,
                **kwargs,
            )
        except (BleakError, TimeoutError, EOFError, OSError) as exc:
            raise ConnectFailed(f"{address}: {exc}") from exc
        link = BleakLink(client, rssi=rssi)
        holder.append(link)
        return client, link
