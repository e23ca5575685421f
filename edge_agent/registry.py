"""The hub's persisted registry of devices: who each address is and whom it is bound to.

Addresses are BLE addresses, and for serial devices their port paths (the kind, ``serial.*``,
tells which; the stored identity's transport follows from it).

One SQLite file (``devices.sqlite`` in the agent's data directory). A row per peripheral
address: the configured device id and kind, the binding (a patient, or a kiosk), the identity
read from its Device Information service at the first connection (manufacturer, model, serial,
firmware), whether it is bonded, and when it was first seen, last seen and last read.

Why persist the identity: message and reading ids are derived from the device identity
(:mod:`gateway.wire`), so it must never change under a device. The first identity read is kept;
a later session whose Device Information disagrees (a swapped unit reusing an address, a
firmware update) is reported, and the stored identity stays, except for the firmware string.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from device_profiles.observation import DeviceIdentity

SCHEMA_VERSION: Final = 1

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS ble_devices (
    address        TEXT PRIMARY KEY,
    device_id      TEXT NOT NULL,
    kind           TEXT NOT NULL,
    binding_kind   TEXT NOT NULL,
    binding_ref    TEXT NOT NULL,
    manufacturer   TEXT,
    model          TEXT,
    serial         TEXT,
    firmware       TEXT,
    bonded         INTEGER NOT NULL DEFAULT 0,
    first_seen     TEXT NOT NULL,
    last_seen      TEXT NOT NULL,
    last_read      TEXT
) WITHOUT ROWID
"""


class RegistryError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisteredDevice:
    address: str
    device_id: str
    kind: str
    binding_kind: str  # "patient" | "kiosk"
    binding_ref: str
    identity: DeviceIdentity | None
    bonded: bool
    first_seen: str
    last_seen: str
    last_read: str | None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class DeviceRegistry:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode = WAL")
            version = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise RegistryError(
                    f"device registry {self.path}: schema {version} is newer than this software"
                )
            self._conn.execute(_SCHEMA)
            self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise RegistryError(f"device registry {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _exec(self, sql: str, params: tuple[object, ...]) -> list[tuple[object, ...]]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise RegistryError(f"device registry {self.path}: {exc}") from exc

    def bind(
        self, *, address: str, device_id: str, kind: str, binding_kind: str, binding_ref: str
    ) -> None:
        """Record (or update) the configured binding of an address."""
        now = _now()
        self._exec(
            "INSERT INTO ble_devices (address, device_id, kind, binding_kind, binding_ref, "
            "first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (address) DO UPDATE "
            "SET device_id = excluded.device_id, kind = excluded.kind, "
            "binding_kind = excluded.binding_kind, binding_ref = excluded.binding_ref",
            (address.upper(), device_id, kind, binding_kind, binding_ref, now, now),
        )

    def get(self, address: str) -> RegisteredDevice | None:
        rows = self._exec(
            "SELECT address, device_id, kind, binding_kind, binding_ref, manufacturer, model, "
            "serial, firmware, bonded, first_seen, last_seen, last_read FROM ble_devices "
            "WHERE address = ?",
            (address.upper(),),
        )
        return _row(rows[0]) if rows else None

    def all(self) -> list[RegisteredDevice]:
        rows = self._exec(
            "SELECT address, device_id, kind, binding_kind, binding_ref, manufacturer, model, "
            "serial, firmware, bonded, first_seen, last_seen, last_read FROM ble_devices "
            "ORDER BY device_id",
            (),
        )
        return [_row(r) for r in rows]

    def seen(self, address: str, *, read: bool = False) -> None:
        now = _now()
        if read:
            self._exec(
                "UPDATE ble_devices SET last_seen = ?, last_read = ? WHERE address = ?",
                (now, now, address.upper()),
            )
        else:
            self._exec(
                "UPDATE ble_devices SET last_seen = ? WHERE address = ?", (now, address.upper())
            )

    def set_bonded(self, address: str, bonded: bool) -> None:
        self._exec(
            "UPDATE ble_devices SET bonded = ? WHERE address = ?", (int(bonded), address.upper())
        )

    def identify(self, address: str, identity: DeviceIdentity) -> tuple[DeviceIdentity, str | None]:
        """The identity to use for ``address``: the first one stored, else ``identity``.

        Returns it with a warning text when what the device says now disagrees with it.
        """
        current = self.get(address)
        if current is None:
            raise RegistryError(f"{address} is not bound to anything on this hub")
        stored = current.identity
        if stored is None:
            self._exec(
                "UPDATE ble_devices SET manufacturer = ?, model = ?, serial = ?, firmware = ? "
                "WHERE address = ?",
                (
                    identity.manufacturer,
                    identity.model,
                    identity.serial,
                    identity.firmware,
                    address.upper(),
                ),
            )
            return identity, None
        if stored.key != identity.key:
            return stored, (
                f"{address} now identifies as {identity.key!r} but was registered as "
                f"{stored.key!r}; keeping the registered identity "
                "(remove its row from the registry to change it)"
            )
        if identity.firmware is not None and identity.firmware != stored.firmware:
            self._exec(
                "UPDATE ble_devices SET firmware = ? WHERE address = ?",
                (identity.firmware, address.upper()),
            )
            return DeviceIdentity(
                manufacturer=stored.manufacturer,
                model=stored.model,
                serial=stored.serial,
                firmware=identity.firmware,
                transport=stored.transport,
            ), None
        return stored, None


def transport_of(kind: str) -> str:
    """How the hub reads a device of this configured kind (``serial.*``: a port; else BLE)."""
    return "serial" if kind.startswith("serial.") else "ble"


def _row(r: tuple[object, ...]) -> RegisteredDevice:
    manufacturer, model, serial, firmware = (None if v is None else str(v) for v in r[5:9])
    identity = None
    if manufacturer and model and serial:
        identity = DeviceIdentity(
            manufacturer=manufacturer,
            model=model,
            serial=serial,
            firmware=firmware,
            transport=transport_of(str(r[2])),
        )
    return RegisteredDevice(
        address=str(r[0]),
        device_id=str(r[1]),
        kind=str(r[2]),
        binding_kind=str(r[3]),
        binding_ref=str(r[4]),
        identity=identity,
        bonded=bool(r[9]),
        first_seen=str(r[10]),
        last_seen=str(r[11]),
        last_read=None if r[12] is None else str(r[12]),
    )
