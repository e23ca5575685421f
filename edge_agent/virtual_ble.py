"""Virtual BLE health peripherals on Google's bumble stack, reached through bleak.

There is no Bluetooth controller on the development and CI machines (ARCHITECTURE.md). Instead:

* :class:`VirtualRadio` is one in-process bumble ``LocalLink`` with a *central* bumble device
  (the hub's "hci0"). :meth:`VirtualRadio.backends` returns bleak client and scanner backend
  classes over that central, injected into :class:`edge_agent.ble.BleConnector` through bleak's
  ``backend=`` hook. Everything above the backend — bleak's ``BleakClient``,
  bleak-retry-connector, the link, the driver, the sans-I/O procedures, the sources — is the
  production code path, over a real ATT/GATT stack (MTU exchange, discovery, CCCD writes,
  notifications, indications with confirmations, disconnects).
* Each peripheral is a bumble device on the same link that advertises its service and serves
  the standard GATT database of its profile. Its behaviour is the sans-I/O twin from
  :mod:`device_profiles.gatt` (:class:`VirtualGlucoseMeter`, :class:`VirtualCgmSensor`,
  :class:`VirtualVitalsDevice`), so faults (disconnect mid-transfer, malformed notifications,
  CRC errors, wrong clocks, slow indications) are the ones those twins inject.

This module is for the demo and the tests; a hub with a real radio never imports it (bumble is
the ``virtual`` extra).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Final

from bleak.assigned_numbers import CHARACTERISTIC_PROPERTIES
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakError
from bleak.uuids import normalize_uuid_str
from bumble import att, data_types, hci
from bumble import core as bumble_core
from bumble.controller import Controller
from bumble.core import UUID as BumbleUUID
from bumble.core import AdvertisingData
from bumble.device import Advertisement, Connection, Device, Peer
from bumble.gatt import Characteristic, CharacteristicValue, Service
from bumble.hci import Address
from bumble.host import Host
from bumble.link import LocalLink
from bumble.transport.common import AsyncPipeSink

from device_profiles.gatt.glucose import GlucoseFeature, encode_glucose_feature
from device_profiles.gatt.ieee11073 import DateTime
from device_profiles.gatt.sim_cgm_sensor import VirtualCgmSensor
from device_profiles.gatt.sim_glucose_meter import Disconnected, MeterFaults, VirtualGlucoseMeter
from device_profiles.gatt.sim_vitals_device import VirtualVitalsDevice
from device_profiles.gatt.vitals import (
    CurrentTime,
    encode_battery_level,
    encode_current_time,
    encode_dis_string,
)
from device_profiles.gatt.vitals_session import (
    BATTERY_LEVEL_UUID as BATTERY_LEVEL,
)
from device_profiles.gatt.vitals_session import (
    BATTERY_SERVICE_UUID as BATTERY_SERVICE,
)
from device_profiles.gatt.vitals_session import measurement_uuids

log = logging.getLogger("remon.virtual_ble")

GLUCOSE_SERVICE: Final = 0x1808
CGM_SERVICE: Final = 0x181F
DIS_SERVICE: Final = 0x180A
CTS_SERVICE: Final = 0x1805
VITALS_SERVICE: Final[dict[str, int]] = {
    "blood_pressure": 0x1810,
    "weight": 0x181D,
    "temperature": 0x1809,
    "pulse_oximeter": 0x1822,
}
_NOTIFY_ONLY: Final = frozenset({0x2A18, 0x2A34, 0x2A36, 0x2A5F, 0x2AA7})
_DIS: Final = (0x2A29, 0x2A24, 0x2A25, 0x2A26)  # manufacturer, model, serial, firmware
_CURRENT_TIME: Final = 0x2A2B
_HUB_ADDRESS: Final = "C0:00:00:00:00:01"


def _short(uuid: BumbleUUID) -> str:
    """bleak's normalized (128-bit, lower case) string for a bumble UUID."""
    return normalize_uuid_str(uuid.to_hex_str("-"))


class _Controller(Controller):
    """bumble's virtual controller, reporting a cancelled connection attempt as failed.

    bumble 0.0.236 acknowledges LE_Create_Connection_Cancel but neither clears the pending
    connection nor sends LE Connection Complete, so a connect to an absent peripheral hangs and
    every later connect is refused. A real controller answers with status 0x02; so do we.
    """

    def on_hci_le_create_connection_cancel_command(
        self, command: hci.HCI_LE_Create_Connection_Cancel_Command
    ) -> hci.HCI_StatusReturnParameters:
        pending, self.pending_le_connection = self.pending_le_connection, None
        if pending is not None:
            event = hci.HCI_LE_Connection_Complete_Event(
                status=hci.HCI_ErrorCode.UNKNOWN_CONNECTION_IDENTIFIER_ERROR,
                connection_handle=0,
                role=hci.Role.CENTRAL,
                peer_address_type=pending.peer_address_type,
                peer_address=pending.peer_address,
                connection_interval=0,
                peripheral_latency=0,
                supervision_timeout=0,
                central_clock_accuracy=0,
            )
            asyncio.get_running_loop().call_soon(self.send_hci_packet, event)
        return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.SUCCESS)


class _HubDevice(Device):
    """The hub's bumble central, tolerant of a connection that completes after its connect gave up.

    On a busy machine the link can complete a connection just after :meth:`Device.connect` timed
    out and cleared ``connect_own_address_type``; bumble 0.0.236 then fails an assertion inside
    its event handler (a traceback, and the peripheral stays connected to nobody). A real host
    sees the same race and drops the late connection: so do we, through the normal disconnect.
    """

    def on_le_connection(self, connection_handle: int, peer_address: Address, *rest: Any) -> None:
        role = rest[2]
        late = role == hci.Role.CENTRAL and self.connect_own_address_type is None
        if late:
            self.connect_own_address_type = hci.OwnAddressType.PUBLIC
        try:
            super().on_le_connection(connection_handle, peer_address, *rest)
        finally:
            if late:
                self.connect_own_address_type = None
        if late and (connection := self.connections.get(connection_handle)) is not None:
            log.info("dropping a late connection to %s (its connect had timed out)", peer_address)
            task = asyncio.get_running_loop().create_task(_disconnect(connection))
            self._drops.add(task)
            task.add_done_callback(self._drops.discard)

    _drops: ClassVar[set[asyncio.Task[None]]] = set()  # the loop keeps only weak references


#: bumble waits for a disconnection event without a time limit; a link whose peer is already
#: gone (or a connection bumble lost track of) would hold a shutdown for ever.
DISCONNECT_TIMEOUT_S: Final = 5.0


async def _disconnect(connection: Connection) -> None:
    """Disconnect, bounded; a failure or a missing answer means the link is gone anyway."""
    try:
        async with asyncio.timeout(DISCONNECT_TIMEOUT_S):
            await connection.disconnect()
    except TimeoutError:
        log.warning(
            "no disconnection event from %s in %.0f s",
            connection.peer_address,
            DISCONNECT_TIMEOUT_S,
        )
    except Exception as exc:  # the link went down some other way
        log.debug("disconnect from %s: %r", connection.peer_address, exc)


def _refused(uuid: int) -> att.ATT_Error:
    """What a peripheral answers a read it will not serve: an ATT Error Response.

    (Any other exception in a bumble read handler sends no response at all, and the client
    waits out the 30 s GATT timeout.)
    """
    return att.ATT_Error(att.ATT_READ_NOT_PERMITTED_ERROR, message=f"{uuid:#06x} not readable")


def _bumble_device(link: LocalLink, name: str, address: str, hub: bool = False) -> Device:
    controller = _Controller(name, link=link, public_address=address)
    return (_HubDevice if hub else Device)(
        name=name, address=Address(address), host=Host(controller, AsyncPipeSink(controller))
    )


# --------------------------------------------------------------------------- the hub side


_FILTERED: Final[weakref.WeakSet[asyncio.AbstractEventLoop]] = weakref.WeakSet()


def _from_bumble_gatt_client(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith("bumble/gatt_client.py"):
            return True
        tb = tb.tb_next
    return False


def _ignore_late_gatt_responses(loop: asyncio.AbstractEventLoop) -> None:
    """bumble's GATT client answers a response that arrives after its request was given up (our
    timeout or a disconnect cancelled the wait) with ``set_result`` on the cancelled future, and
    the InvalidStateError escapes to the event loop as a traceback. A real radio's late response
    is simply dropped by the OS stack; so is this one, with a warning. Every other error goes
    to the loop's handler as before."""
    previous = loop.get_exception_handler()

    def handler(lp: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, asyncio.InvalidStateError) and _from_bumble_gatt_client(exc):
            log.warning("virtual BLE: a GATT response after its request was given up; dropped")
            return
        if previous is not None:
            previous(lp, context)
        else:
            lp.default_exception_handler(context)

    if loop not in _FILTERED:
        _FILTERED.add(loop)
        loop.set_exception_handler(handler)


class VirtualRadio:
    """An in-process radio: the hub's central and any number of virtual peripherals."""

    def __init__(self) -> None:
        # Packets still on the virtual air when a link drops are reported by bumble's controller
        # as warnings; a real radio loses them silently, and so do we.
        logging.getLogger("bumble.controller").setLevel(logging.ERROR)
        self.link = LocalLink()  # type: ignore[no-untyped-call]
        self.central = _bumble_device(self.link, "remon-hub", _HUB_ADDRESS, hub=True)
        self._power = asyncio.Lock()
        self.peripherals: list[VirtualPeripheral] = []

    async def central_on(self) -> Device:
        async with self._power:
            if not self.central.powered_on:
                _ignore_late_gatt_responses(asyncio.get_running_loop())
                await self.central.power_on()
        return self.central

    def backends(self) -> tuple[type[BaseBleakClient], type[BaseBleakScanner]]:
        """bleak backend classes bound to this radio (bleak wants classes, not instances)."""
        client = type("VirtualClientBackend", (_ClientBackend,), {"radio": self})
        scanner = type("VirtualScannerBackend", (_ScannerBackend,), {"radio": self})
        return client, scanner

    async def close(self) -> None:
        for p in list(self.peripherals):
            await p.close()
        for conn in list(self.central.connections.values()):
            await _disconnect(conn)
        if self.central.powered_on:
            with contextlib.suppress(Exception):
                await self.central.power_off()


class _ClientBackend(BaseBleakClient):
    radio: ClassVar[VirtualRadio]
    MTU: ClassVar[int] = 247  # what BlueZ asks for
    #: bleak-retry-connector always asks for 20 s; on a virtual link an answer takes ms.
    max_connect_timeout_s: ClassVar[float] = 2.0

    def __init__(self, address_or_ble_device: BLEDevice | str, **kwargs: Any) -> None:
        super().__init__(
            address_or_ble_device,
            disconnected_callback=kwargs.pop("disconnected_callback", None),
            timeout=kwargs.pop("timeout", 10.0),
        )
        self._requested = kwargs.get("services")
        self._connection: Connection | None = None
        self._subscribers: dict[int, Callable[[bytes], None]] = {}

    @property
    def name(self) -> str:
        return self.address

    @property
    def mtu_size(self) -> int:
        return self._connection.att_mtu if self._connection is not None else 23

    @property
    def is_connected(self) -> bool:
        return self._connection is not None

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        central = await self.radio.central_on()
        timeout = kwargs.get("timeout", self._timeout)
        timeout = min(timeout, self.max_connect_timeout_s)
        try:
            connection = await central.connect(Address(self.address), timeout=timeout)
        except bumble_core.TimeoutError as exc:  # not the builtin TimeoutError: map it like BlueZ
            raise TimeoutError(f"{self.address}: connect timed out after {timeout} s") from exc
        except bumble_core.BaseBumbleError as exc:
            raise BleakError(f"{self.address}: virtual connect failed: {exc!r}") from exc
        self._connection = connection
        connection.on(connection.EVENT_DISCONNECTION, self._on_disconnection)
        try:
            peer = Peer(connection)
            await peer.request_mtu(self.MTU)
            self.services = await self._discover(peer)
        except BaseException:
            await self.disconnect()
            raise

    async def _discover(self, peer: Peer) -> BleakGATTServiceCollection:
        await peer.discover_services([BumbleUUID(u) for u in self._requested or ()])
        coll = BleakGATTServiceCollection()
        for svc in peer.services:
            await svc.discover_characteristics()
            bsvc = BleakGATTService(svc, svc.handle, _short(svc.uuid))
            coll.add_service(bsvc)
            for char in svc.characteristics:
                await char.discover_descriptors()
                props = [n for bit, n in CHARACTERISTIC_PROPERTIES.items() if char.properties & bit]
                bchar = BleakGATTCharacteristic(
                    char, char.handle, _short(char.uuid), props, lambda: self.mtu_size - 3, bsvc
                )
                coll.add_characteristic(bchar)
                for desc in char.descriptors:
                    coll.add_descriptor(
                        BleakGATTDescriptor(desc, desc.handle, _short(desc.type), bchar)
                    )
        return coll

    def _on_disconnection(self, reason: int) -> None:
        self._connection = None
        self._subscribers.clear()
        if self._disconnected_callback is not None:
            self._disconnected_callback()

    async def disconnect(self) -> None:
        if self._connection is not None:
            await _disconnect(self._connection)

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        raise BleakError("the virtual radio does not pair")

    async def unpair(self) -> None:
        raise BleakError("the virtual radio does not pair")

    def _require(self) -> None:
        if self._connection is None:
            raise BleakError("Not connected")

    async def read_gatt_char(
        self, characteristic: BleakGATTCharacteristic, **kwargs: Any
    ) -> bytearray:
        self._require()
        try:
            return bytearray(await characteristic.obj.read_value())
        except Exception as exc:
            raise BleakError(f"read failed: {exc!r}") from exc

    async def read_gatt_descriptor(
        self, descriptor: BleakGATTDescriptor, **kwargs: Any
    ) -> bytearray:
        self._require()
        return bytearray(await descriptor.obj.read_value())

    async def write_gatt_char(
        self, characteristic: BleakGATTCharacteristic, data: Any, response: bool
    ) -> None:
        self._require()
        try:
            await characteristic.obj.write_value(bytes(data), with_response=response)
        except Exception as exc:
            raise BleakError(f"write failed: {exc!r}") from exc

    async def write_gatt_descriptor(self, descriptor: BleakGATTDescriptor, data: Any) -> None:
        self._require()
        await descriptor.obj.write_value(bytes(data), with_response=True)

    async def start_notify(
        self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback, **kwargs: Any
    ) -> None:
        self._require()

        def on_value(value: bytes) -> None:
            callback(bytearray(value))

        self._subscribers[characteristic.handle] = on_value
        await characteristic.obj.subscribe(on_value, prefer_notify=True)

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        self._require()
        await characteristic.obj.unsubscribe(self._subscribers.pop(characteristic.handle, None))


_UUID_LISTS: Final = (
    AdvertisingData.Type.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
    AdvertisingData.Type.INCOMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
)


class _ScannerBackend(BaseBleakScanner):
    radio: ClassVar[VirtualRadio]

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: str = "active",
        **kwargs: Any,
    ) -> None:
        super().__init__(detection_callback, service_uuids)
        self._device: Device | None = None

    def _on_advertisement(self, adv: Advertisement) -> None:
        d = adv.data
        uuids = [_short(u) for t in _UUID_LISTS for lst in d.get_all(t) for u in lst]
        if not self.is_allowed_uuid(uuids):
            return
        name = d.get(AdvertisingData.Type.COMPLETE_LOCAL_NAME)
        ad = AdvertisementData(
            local_name=str(name) if name else None,
            manufacturer_data={},
            service_data={},
            service_uuids=uuids,
            tx_power=None,
            rssi=adv.rssi,
            platform_data=(adv,),
        )
        address = adv.address.to_string(False)
        # "details" without a BlueZ "path": bleak-retry-connector then skips its D-Bus paths.
        device = self.create_or_update_device(
            address, address, ad.local_name, {"virtual": True}, ad
        )
        self.call_detection_callbacks(device, ad)

    async def start(self) -> None:
        self.seen_devices = {}
        self._device = await self.radio.central_on()
        self._device.on(Device.EVENT_ADVERTISEMENT, self._on_advertisement)
        await self._device.start_scanning(active=True, filter_duplicates=False)

    async def stop(self) -> None:
        if self._device is None:
            return
        self._device.remove_listener(Device.EVENT_ADVERTISEMENT, self._on_advertisement)
        with contextlib.suppress(Exception):
            await self._device.stop_scanning()
        self._device = None


# --------------------------------------------------------------------------- peripherals


@dataclass(frozen=True, slots=True, kw_only=True)
class VirtualIdentity:
    manufacturer: str = "remon virtual"
    model: str = "VX-1"
    serial: str = "SN0001"
    firmware: str = "1.0.0"


class VirtualPeripheral:
    """A bumble peripheral on the radio: advertises ``service``, serves ``services``."""

    def __init__(
        self,
        radio: VirtualRadio,
        *,
        address: str,
        name: str,
        service: int,
        identity: VirtualIdentity,
        clock_offset_s: float | None,
        utc_offset: timedelta,
        indication_delay_s: float = 0.0,
    ) -> None:
        self.radio = radio
        self.address = address
        self.identity = identity
        self.clock_offset_s = clock_offset_s
        self.utc_offset = utc_offset
        self.indication_delay_s = indication_delay_s
        self.device = _bumble_device(radio.link, name, address)
        self.connection: Connection | None = None
        self.connections = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._chars: dict[int, Characteristic[Any]] = {}
        self._services: list[Service] = []
        self.battery_pct: int | None = None
        self.battery_drain_every = 0
        self.device.on(Device.EVENT_CONNECTION, self._on_connection)
        self.device.advertising_data = bytes(
            AdvertisingData(
                [
                    data_types.Flags(
                        AdvertisingData.Flags.LE_GENERAL_DISCOVERABLE_MODE
                        | AdvertisingData.Flags.BR_EDR_NOT_SUPPORTED
                    ),
                    data_types.CompleteLocalName(name),
                    data_types.CompleteListOf16BitServiceUUIDs([BumbleUUID.from_16_bits(service)]),
                ]
            )
        )
        self._add_service(DIS_SERVICE, [(u, "read") for u in _DIS])
        if clock_offset_s is not None:
            self._add_service(CTS_SERVICE, [(_CURRENT_TIME, "read")])
        radio.peripherals.append(self)

    # -- GATT database -------------------------------------------------------------------------

    def _add_service(self, uuid: int, chars: Sequence[tuple[int, str]]) -> None:
        """A service of ``(characteristic uuid, "read" / "notify" / "indicate" / "write,…")``."""
        built = []
        for cuuid, kind in chars:
            props = Characteristic.Properties(0)
            perms = Characteristic.READABLE
            if "read" in kind:
                props |= Characteristic.Properties.READ
            if "notify" in kind:
                props |= Characteristic.Properties.NOTIFY
            if "indicate" in kind:
                props |= Characteristic.Properties.INDICATE
            if "write" in kind:
                props |= Characteristic.Properties.WRITE
                perms = Characteristic.READABLE | Characteristic.WRITEABLE

            def reader(_conn: Connection | None, u: int = cuuid) -> bytes:
                return self.read(u)

            def writer(conn: Connection, value: bytes, u: int = cuuid) -> None:
                self._spawn(self._on_write(conn, u, bytes(value)))

            value = CharacteristicValue(read=reader, write=writer if "write" in kind else None)
            char: Characteristic[Any] = Characteristic(
                BumbleUUID.from_16_bits(cuuid), props, perms, value
            )
            if "notify" in kind or "indicate" in kind:
                char.on(
                    Characteristic.EVENT_SUBSCRIPTION,
                    lambda _bearer, notify, indicate, u=cuuid: self._spawn(
                        self.subscribed(u, notify or indicate)
                    ),
                )
            self._chars[cuuid] = char
            built.append(char)
        service = Service(BumbleUUID.from_16_bits(uuid), built)
        self._services.append(service)

    def add_battery(self, percent: int, *, drain_every: int = 0) -> None:
        """Serve the Battery Service (0x180F) with its level ``percent``; before :meth:`start`.

        The level drops by one every ``drain_every`` connections (0: it stays), down to 0.
        """
        if not 0 <= percent <= 100:
            raise ValueError(f"battery level {percent} is not 0-100")
        self.battery_pct = percent
        self.battery_drain_every = drain_every
        self._add_service(BATTERY_SERVICE, [(BATTERY_LEVEL, "read")])

    def device_clock(self, now: datetime) -> datetime:
        """The device's local wall clock (naive) at hub time ``now``."""
        local = now.astimezone(UTC) + self.utc_offset + timedelta(seconds=self.clock_offset_s or 0)
        return local.replace(tzinfo=None)

    def read(self, uuid: int) -> bytes:
        if uuid in _DIS:
            i = self.identity
            return encode_dis_string(
                (i.manufacturer, i.model, i.serial, i.firmware)[_DIS.index(uuid)]
            )
        if uuid == BATTERY_LEVEL and self.battery_pct is not None:
            if self.battery_pct > 100:  # a fault set by a test: a device breaking the rules
                return bytes([self.battery_pct])
            return encode_battery_level(self.battery_pct)
        if uuid == _CURRENT_TIME:
            clock = self.device_clock(datetime.now(UTC))
            return encode_current_time(
                CurrentTime(
                    date_time=DateTime.of(clock),
                    day_of_week=clock.isoweekday(),
                    fractions256=clock.microsecond * 256 // 1_000_000,
                    adjust_reason=frozenset(),
                )
            )
        return self.read_profile(uuid)

    def read_profile(self, uuid: int) -> bytes:
        raise _refused(uuid)

    async def _on_write(self, conn: Connection, uuid: int, value: bytes) -> None:
        await self.send(conn, self.write(uuid, value))

    def write(self, uuid: int, value: bytes) -> list[tuple[int, bytes] | Disconnected]:
        return []

    async def subscribed(self, uuid: int, enabled: bool) -> None:
        """A client enabled or disabled notifications/indications on ``uuid``."""

    # -- sending -------------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def send(
        self, conn: Connection | None, outputs: Sequence[tuple[int, bytes] | Disconnected]
    ) -> None:
        """Notify or indicate each value in order; a :class:`Disconnected` drops the link."""
        for item in outputs:
            if conn is None or conn is not self.connection:
                return  # the link is gone: a real device would lose these too
            if isinstance(item, Disconnected):
                await self.drop()
                return
            uuid, data = item
            char = self._chars[uuid]
            try:
                if uuid in _NOTIFY_ONLY:
                    await self.device.notify_subscriber(conn, char, data)
                else:
                    if self.indication_delay_s:
                        await asyncio.sleep(self.indication_delay_s)
                    await self.device.indicate_subscriber(conn, char, data)
            except Exception as exc:  # the link went down under us
                log.debug("%s: send on %#06x failed: %r", self.address, uuid, exc)
                return

    async def drop(self) -> None:
        """Disconnect from the peripheral side (a meter going to sleep, out of range...)."""
        conn = self.connection
        if conn is not None:
            await _disconnect(conn)

    def _on_connection(self, connection: Connection) -> None:
        self.connection = connection
        self.connections += 1
        every = self.battery_drain_every
        if self.battery_pct and every and self.connections % every == 0:
            self.battery_pct -= 1
        self.connected(self.connections)

        def gone(*_: object) -> None:
            if self.connection is connection:
                self.connection = None

        connection.on(connection.EVENT_DISCONNECTION, gone)

    def connected(self, n: int) -> None:
        """Hook: the ``n``-th connection (1-based) was made."""

    async def start(self) -> None:
        self.device.add_services(self._services)
        await self.device.power_on()
        await self.device.start_advertising(
            auto_restart=True, advertising_interval_min=100, advertising_interval_max=100
        )

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        with contextlib.suppress(Exception):
            await self.device.stop_advertising()
        await self.drop()
        with contextlib.suppress(Exception):
            await self.device.power_off()
        if self in self.radio.peripherals:
            self.radio.peripherals.remove(self)


class VirtualGlucoseMeterPeripheral(VirtualPeripheral):
    """A glucose meter (0x1808) answering RACP from :class:`VirtualGlucoseMeter`.

    ``faults_by_connection[i]`` applies to the (i+1)-th connection; later ones get the faults the
    meter was built with.
    """

    def __init__(
        self,
        radio: VirtualRadio,
        meter: VirtualGlucoseMeter,
        *,
        address: str,
        identity: VirtualIdentity | None = None,
        clock_offset_s: float | None = 0.0,
        utc_offset: timedelta = timedelta(0),
        faults_by_connection: Sequence[MeterFaults] = (),
        indication_delay_s: float = 0.0,
    ) -> None:
        super().__init__(
            radio,
            address=address,
            name="remon glucose meter",
            service=GLUCOSE_SERVICE,
            identity=identity or VirtualIdentity(model="VG-1"),
            clock_offset_s=clock_offset_s,
            utc_offset=utc_offset,
            indication_delay_s=indication_delay_s,
        )
        self.meter = meter
        self.base_faults = meter.faults
        self.faults_by_connection = list(faults_by_connection)
        self._add_service(
            GLUCOSE_SERVICE,
            [
                (0x2A18, "notify"),
                (0x2A34, "notify"),
                (0x2A51, "read"),
                (0x2A52, "write,indicate"),
            ],
        )

    def connected(self, n: int) -> None:
        i = n - 1
        self.meter.faults = (
            self.faults_by_connection[i] if i < len(self.faults_by_connection) else self.base_faults
        )

    def read_profile(self, uuid: int) -> bytes:
        if uuid == 0x2A51:
            return encode_glucose_feature(GlucoseFeature(features=frozenset()))
        return super().read_profile(uuid)

    def write(self, uuid: int, value: bytes) -> list[tuple[int, bytes] | Disconnected]:
        return list(self.meter.handle(uuid, value))


class VirtualCgmPeripheral(VirtualPeripheral):
    """A CGM sensor (0x181F) whose clock advances one sensor minute every ``minute_s``."""

    def __init__(
        self,
        radio: VirtualRadio,
        sensor: VirtualCgmSensor,
        *,
        address: str,
        identity: VirtualIdentity | None = None,
        minute_s: float = 60.0,
        backlog_min: int = 0,
    ) -> None:
        super().__init__(
            radio,
            address=address,
            name="remon cgm",
            service=CGM_SERVICE,
            identity=identity or VirtualIdentity(model="VC-1"),
            clock_offset_s=None,
            utc_offset=timedelta(0),
        )
        self.sensor = sensor
        self.minute_s = minute_s
        self._held: list[tuple[int, bytes]] = list(sensor.tick(backlog_min)) if backlog_min else []
        self._streaming = False
        self._add_service(
            CGM_SERVICE,
            [
                (0x2AA7, "notify"),
                (0x2AA8, "read"),
                (0x2AA9, "read"),
                (0x2AAA, "read"),
                (0x2AAB, "read"),
                (0x2AAC, "write,indicate"),
            ],
        )

    def read_profile(self, uuid: int) -> bytes:
        return self.sensor.read(uuid)

    def write(self, uuid: int, value: bytes) -> list[tuple[int, bytes] | Disconnected]:
        return list(self.sensor.write(uuid, value))

    async def subscribed(self, uuid: int, enabled: bool) -> None:
        if uuid == 0x2AA7:
            self._streaming = enabled
            if enabled and self._held:
                held, self._held = self._held, []
                await self.send(self.connection, held)

    def connected(self, n: int) -> None:
        self._streaming = False

    async def _clock(self) -> None:
        while True:
            await asyncio.sleep(self.minute_s)
            out = self.sensor.tick(1)
            if self._streaming and self.connection is not None:
                await self.send(self.connection, out)
            else:
                self._held.extend(out)  # a sensor keeps what it could not send

    async def start(self) -> None:
        await super().start()
        self._spawn(self._clock())


class VirtualVitalsPeripheral(VirtualPeripheral):
    """A BP monitor, scale, thermometer or oximeter; ``make_device(n)`` serves connection n."""

    def __init__(
        self,
        radio: VirtualRadio,
        make_device: Callable[[int], VirtualVitalsDevice],
        *,
        kind: str,
        address: str,
        identity: VirtualIdentity | None = None,
        clock_offset_s: float | None = 0.0,
        utc_offset: timedelta = timedelta(0),
        indication_delay_s: float = 0.0,
    ) -> None:
        super().__init__(
            radio,
            address=address,
            name=f"remon {kind.replace('_', ' ')}",
            service=VITALS_SERVICE[kind],
            identity=identity or VirtualIdentity(model=f"VV-{kind[:2].upper()}"),
            clock_offset_s=clock_offset_s,
            utc_offset=utc_offset,
            indication_delay_s=indication_delay_s,
        )
        self.kind = kind
        self.make_device = make_device
        self.current: VirtualVitalsDevice | None = None
        self._add_service(
            VITALS_SERVICE[kind],
            [
                (u, "notify" if u in _NOTIFY_ONLY else "indicate")
                for u in measurement_uuids(kind)  # type: ignore[arg-type]
            ],
        )

    def connected(self, n: int) -> None:
        self.current = self.make_device(n)

    def read(self, uuid: int) -> bytes:
        if uuid == BATTERY_LEVEL:
            return super().read(uuid)  # the peripheral's battery, not the session's device
        dev = self.current
        if dev is None:
            raise _refused(uuid)
        try:
            return dev.read(uuid, now=datetime.now(UTC))
        except KeyError:  # a characteristic this device model lacks (fault injection)
            raise _refused(uuid) from None

    async def subscribed(self, uuid: int, enabled: bool) -> None:
        dev = self.current
        if dev is None or not enabled:
            return
        dev.subscribe(uuid)
        await self.send(self.connection, dev.pending(now=datetime.now(UTC)))
