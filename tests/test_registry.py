"""The hub's persisted BLE device registry (edge_agent/registry.py).

Facts from the module's contract: one row per peripheral address (addresses compare
case-insensitively, stored upper-case); the first identity read is kept for good because message
ids derive from it; a later, different identity is reported with a warning and ignored, except
that a new firmware string is recorded; everything survives closing and reopening the file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from device_profiles.observation import DeviceIdentity
from edge_agent.registry import DeviceRegistry, RegistryError

ADDR = "F0:12:34:56:78:9A"
METER = DeviceIdentity(
    manufacturer="Acme", model="Gluco 1", serial="SN-1", firmware="1.2", transport="ble"
)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "devices.sqlite"


@pytest.fixture
def reg(path: Path) -> Iterator[DeviceRegistry]:
    r = DeviceRegistry(path)
    yield r
    r.close()


def bind(reg: DeviceRegistry, address: str = ADDR, device_id: str = "gm1", **kw: str) -> None:
    args = {
        "kind": "ble.glucose-meter",
        "binding_kind": "patient",
        "binding_ref": "p-0001",
    }
    args.update(kw)
    reg.bind(address=address, device_id=device_id, **args)


def test_bind_get_and_all(reg: DeviceRegistry) -> None:
    assert reg.get(ADDR) is None
    assert reg.all() == []
    bind(reg)
    bind(reg, "F0:12:34:56:78:9B", "bp1", kind="ble.bp-monitor", binding_kind="kiosk")
    got = reg.get(ADDR)
    assert got is not None
    assert (got.address, got.device_id, got.kind) == (ADDR, "gm1", "ble.glucose-meter")
    assert (got.binding_kind, got.binding_ref) == ("patient", "p-0001")
    assert got.identity is None  # not connected yet
    assert got.bonded is False
    assert got.last_read is None
    assert got.first_seen
    assert [d.device_id for d in reg.all()] == ["bp1", "gm1"]  # ordered by device id
    assert reg.get("F0:12:34:56:78:9B").kind == "ble.bp-monitor"  # type: ignore[union-attr]


def test_rebind_updates_the_binding_not_the_row_count(reg: DeviceRegistry) -> None:
    bind(reg)
    reg.identify(ADDR, METER)
    bind(reg, binding_ref="p-0002")
    assert len(reg.all()) == 1
    got = reg.get(ADDR)
    assert got is not None
    assert got.binding_ref == "p-0002"
    assert got.identity is not None
    assert got.identity.key == METER.key  # a binding change does not touch the identity


def test_address_is_case_insensitive(reg: DeviceRegistry) -> None:
    bind(reg, ADDR.lower())
    got = reg.get(ADDR)
    assert got is not None
    assert got.address == ADDR
    assert reg.get(ADDR.lower()) == got
    bind(reg, ADDR, binding_ref="p-0002")  # same device, other spelling: no second row
    assert len(reg.all()) == 1
    identity, warning = reg.identify(ADDR.lower(), METER)
    assert warning is None
    assert identity == METER
    stored = reg.get(ADDR)
    assert stored is not None
    assert stored.identity is not None
    assert stored.identity.key == METER.key


def test_first_identity_is_stored(reg: DeviceRegistry) -> None:
    bind(reg)
    identity, warning = reg.identify(ADDR, METER)
    assert (identity, warning) == (METER, None)
    stored = reg.get(ADDR)
    assert stored is not None
    assert stored.identity is not None
    assert (stored.identity.manufacturer, stored.identity.model) == ("Acme", "Gluco 1")
    assert (stored.identity.serial, stored.identity.firmware) == ("SN-1", "1.2")
    assert stored.identity.transport == "ble"


def test_different_serial_keeps_the_first_identity_with_a_warning(reg: DeviceRegistry) -> None:
    bind(reg)
    reg.identify(ADDR, METER)
    swapped = DeviceIdentity(
        manufacturer="Acme", model="Gluco 1", serial="SN-2", firmware="1.2", transport="ble"
    )
    identity, warning = reg.identify(ADDR, swapped)
    assert identity.serial == "SN-1"
    assert identity.key == METER.key
    assert warning is not None
    assert "SN-2" in warning
    assert "SN-1" in warning
    stored = reg.get(ADDR)
    assert stored is not None
    assert stored.identity is not None
    assert stored.identity.serial == "SN-1"  # nothing was overwritten
    # and the warning repeats while the device keeps saying so
    assert reg.identify(ADDR, swapped)[1] is not None


def test_firmware_update_is_recorded_without_warning(reg: DeviceRegistry) -> None:
    bind(reg)
    reg.identify(ADDR, METER)
    updated = DeviceIdentity(
        manufacturer="Acme", model="Gluco 1", serial="SN-1", firmware="2.0", transport="ble"
    )
    identity, warning = reg.identify(ADDR, updated)
    assert warning is None
    assert identity.firmware == "2.0"
    assert identity.key == METER.key
    stored = reg.get(ADDR)
    assert stored is not None
    assert stored.identity is not None
    assert stored.identity.firmware == "2.0"


def test_identity_and_state_persist_across_reopen(path: Path) -> None:
    first = DeviceRegistry(path)
    bind(first)
    first.identify(ADDR, METER)
    first.set_bonded(ADDR, True)
    first.seen(ADDR, read=True)
    first.close()

    second = DeviceRegistry(path)
    try:
        got = second.get(ADDR)
        assert got is not None
        assert got.device_id == "gm1"
        assert got.identity is not None
        assert got.identity.key == METER.key
        assert got.identity.firmware == "1.2"
        assert got.bonded is True
        assert got.last_read is not None
        other = DeviceIdentity(
            manufacturer="Other", model="X", serial="SN-9", firmware=None, transport="ble"
        )
        identity, warning = second.identify(ADDR, other)
        assert identity.key == METER.key
        assert warning is not None
    finally:
        second.close()


def test_identify_unbound_address_is_an_error(reg: DeviceRegistry) -> None:
    with pytest.raises(RegistryError, match=ADDR):
        reg.identify(ADDR, METER)
    bind(reg, "F0:12:34:56:78:9B")
    with pytest.raises(RegistryError):
        reg.identify(ADDR, METER)


def test_newer_schema_is_refused(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(RegistryError, match="newer"):
        DeviceRegistry(path)


def test_a_serial_device_keeps_its_transport_across_sessions(path: Path) -> None:
    """Serial ports share the registry (keyed by port path): the identity read back on the next
    session (or after a restart) says serial, not BLE."""
    port = "/dev/serial/by-id/usb-LifeScan_OneTouch-if00"
    meter = DeviceIdentity(
        manufacturer="LifeScan",
        model="OneTouch Ultra 2",
        serial="ZNF00001Y",
        firmware="P02.00.00",
        transport="serial",
    )
    reg = DeviceRegistry(path)
    reg.bind(
        address=port,
        device_id="ultra2",
        kind="serial.glucose-onetouch",
        binding_kind="patient",
        binding_ref="p1",
    )
    assert reg.identify(port, meter) == (meter, None)
    assert reg.identify(port, meter) == (meter, None)  # the second session
    reg.close()
    again = DeviceRegistry(path)
    try:
        stored = again.get(port)
        assert stored is not None
        assert stored.identity == meter
    finally:
        again.close()
