"""Agent configuration: a TOML file, validated, with errors that name the file, line and key.

Example (``docs/configuration.md`` documents every key)::

    [agent]
    site = "home-0001"
    data_dir = "/var/lib/remon"

    [mqtt]
    url = "mqtt://broker.example:1883"

    [[devices]]
    id = "gm1"
    kind = "sim.glucose-meter"
    subject = "p-0001"

Unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import re
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Final, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gateway.wire import is_token


class ConfigError(ValueError):
    """The configuration cannot be used. ``str()`` is the message for the operator."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _token(v: str) -> str:
    if not is_token(v):
        raise ValueError(
            "must be 1-63 lowercase letters, digits or '-', starting with a letter or digit"
        )
    return v


class AgentSection(_Strict):
    site: str
    data_dir: Path = Path("/var/lib/remon")
    #: The zone device wall clocks are read in (device clocks carry no zone), e.g. a meter's
    #: record times; the patients' zone in Finnish care.
    timezone: str = "Europe/Helsinki"
    outbox_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    _site = field_validator("site")(_token)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a tzdata directory
            raise ValueError(
                f"unknown time zone {v!r} (an IANA name, e.g. Europe/Helsinki)"
            ) from None
        return v


class MqttSection(_Strict):
    url: str = "mqtt://127.0.0.1:1883"
    protocol: Literal["auto", "5", "3.1.1"] = "auto"
    client_id: str | None = None
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    window: Annotated[int, Field(ge=1, le=10_000)] = 1000
    #: the retained online status, with the outbox's depth, every this many seconds (0: only
    #: after each connect)
    status_every_s: Annotated[float, Field(ge=0, le=86_400)] = 60.0

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^mqtts?://[^/:\s]+(:\d{1,5})?/?$", v):
            raise ValueError("must look like mqtt://host:port or mqtts://host:port")
        return v


class BleSection(_Strict):
    """The hub's Bluetooth adapter. ``virtual``: bumble-backed virtual peripherals (no radio)."""

    backend: Literal["bluez", "virtual"] = "bluez"
    adapter: str | None = None
    scan_timeout_s: Annotated[float, Field(gt=0, le=600)] = 10.0
    connect_attempts: Annotated[int, Field(ge=1, le=10)] = 3
    max_connections: Annotated[int, Field(ge=1, le=8)] = 1


class VirtualDeviceSection(_Strict):
    """A virtual peripheral at the device's address (``[ble] backend = "virtual"`` only)."""

    records: Annotated[int, Field(ge=0, le=0xFFFE)] = 50  # glucose meter: stored records
    record_every_s: Annotated[float, Field(gt=0)] | None = None  # the meter takes a new one
    cut_after: list[Annotated[int, Field(ge=0)]] = Field(default_factory=list)
    malformed_every: Annotated[int, Field(ge=1)] | None = None
    clock_offset_s: float = 0.0
    crc: bool = True  # CGM: E2E-CRC
    backlog_min: Annotated[int, Field(ge=0, le=20_000)] = 120  # CGM: minutes already measured
    minute_s: Annotated[float, Field(gt=0)] = 60.0  # CGM: real seconds per sensor minute
    # CGM: the trace falls to this value (mmol/L) at the end of the backlog (a low in the making)
    cgm_fall_to_mmol_l: Annotated[float, Field(ge=2.2, le=22.2)] | None = None
    seed: int = 0
    # BLE: the Battery Service's level (0x2A19, percent); None: the peripheral has no battery
    # service. It drops one percent every battery_drain_every connections (0: never).
    battery_pct: Annotated[int, Field(ge=0, le=100)] | None = 90
    battery_drain_every: Annotated[int, Field(ge=0)] = 10
    # serial simulators (``[serial] backend = "virtual"``); faults count frames or lines
    noise_every: Annotated[int, Field(ge=1)] | None = None  # junk bytes between frames
    drop_byte_every: Annotated[int, Field(ge=1)] | None = None
    unplug_after: Annotated[int, Field(ge=1)] | None = None  # frames, then unplug and replug
    replug_after_s: Annotated[float, Field(ge=0)] = 2.0
    # PEF sensor board: one blow every blow_every_s, true PEF around pef_l_min
    blow_every_s: Annotated[float, Field(gt=0)] = 20.0
    pef_l_min: Annotated[float, Field(ge=60, le=900)] = 450.0
    sample_rate_hz: Annotated[int, Field(ge=500, le=2000)] = 1000
    artefact_every: Annotated[int, Field(ge=1)] | None = None  # every Nth blow has an artefact
    # medication dispenser: a dose every dose_every_s; what the client does with it
    dose_every_s: Annotated[float, Field(gt=0)] = 28_800.0
    behaviour: Literal["on_time", "late", "misses", "mixed"] = "on_time"
    missed_window_s: Annotated[float, Field(ge=300, le=18_000)] = 1800.0  # DOMAIN.md §4: 5 min-5 h
    doses_left: Annotated[int, Field(ge=0, le=1000)] = 56


SimKind = Literal["sim.glucose-meter", "sim.bp-monitor", "sim.pulse-oximeter", "sim.thermometer"]
BleKind = Literal[
    "ble.glucose-meter",
    "ble.cgm",
    "ble.bp-monitor",
    "ble.scale",
    "ble.thermometer",
    "ble.pulse-oximeter",
]
BLE_KINDS: Final[frozenset[str]] = frozenset(get_args(BleKind))
SerialKind = Literal[
    "serial.glucose-astm",  # Ascensia/Bayer Contour family, ASTM E1381/E1394
    "serial.glucose-onetouch",  # LifeScan OneTouch Ultra 2
    "serial.pef-board",  # firmware bridge: PEF sensor board streaming raw flow
    "serial.dispenser",  # firmware bridge: home-care medication dispenser
    "serial.kiosk-peripheral",  # firmware bridge: height meter, RS-232 scale
]
SERIAL_KINDS: Final[frozenset[str]] = frozenset(get_args(SerialKind))
#: One flat Literal (not a union), so a wrong kind gets one error listing every kind.
DeviceKind = Literal[SimKind, BleKind, SerialKind]
#: Line settings per serial kind (overridable per device with ``line``). Meters: PROTOCOLS.md
#: "Serial meters" (OneTouch 9600 8N1; Contour 9600 8N1 on its serial cable, the USB models are
#: CDC where the rate is ignored); our boards: docs/firmware-bridges.md (115200 8N1).
SERIAL_LINE_DEFAULTS: Final[dict[str, str]] = {
    "serial.glucose-astm": "9600 8N1",
    "serial.glucose-onetouch": "9600 8N1",
    "serial.pef-board": "115200 8N1",
    "serial.dispenser": "115200 8N1",
    "serial.kiosk-peripheral": "115200 8N1",
}
_LINE = re.compile(r"^(\d{3,7}) ([78])([NEO])([12])( rtscts)?$")
_BAUDS: Final = frozenset({1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800})
_ADDRESS = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")


class DeviceSection(_Strict):
    id: str
    kind: DeviceKind
    subject: str = Field(min_length=1, max_length=128)
    subject_kind: Literal["patient", "kiosk-session"] = "patient"
    serial: str | None = Field(default=None, min_length=1, max_length=64)
    # simulator settings
    profile: Literal[
        "normal", "hypo-prone", "hyperglycaemic", "hypertensive", "hypoxic", "febrile"
    ] = "normal"
    interval_s: Annotated[float, Field(gt=0, le=86_400)] = 60.0
    seed: int = 0
    max_records: Annotated[int, Field(ge=1)] | None = None
    start: datetime | None = None
    clock_skew_s: float = 0.0
    unit: Literal["mmol/L", "mg/dL"] = "mmol/L"
    error_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    # BLE devices
    address: str | None = None
    poll_interval_s: Annotated[float, Field(ge=0, le=86_400)] = 60.0
    idle_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    virtual: VirtualDeviceSection | None = None
    # serial devices
    port: str | None = Field(default=None, min_length=1, max_length=255)
    line: str | None = None  # e.g. "9600 8N1"; default per kind (SERIAL_LINE_DEFAULTS)

    _id = field_validator("id")(_token)

    @field_validator("line")
    @classmethod
    def _line(cls, v: str | None) -> str | None:
        if v is None:
            return v
        m = _LINE.match(v)
        if m is None:
            raise ValueError('must look like "9600 8N1" (baud, data bits, parity N/E/O, stop bits)')
        if int(m.group(1)) not in _BAUDS:
            raise ValueError(f"baud rate {m.group(1)} is not one of {sorted(_BAUDS)}")
        return v

    @property
    def line_settings(self) -> str:
        return self.line or SERIAL_LINE_DEFAULTS.get(self.kind, "9600 8N1")

    @field_validator("address")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        if v is not None and not _ADDRESS.match(v):
            raise ValueError("must be a Bluetooth address like F0:12:34:56:78:9A")
        return v.upper() if v is not None else None

    @model_validator(mode="after")
    def _ble_fields(self) -> DeviceSection:
        if self.kind in BLE_KINDS and self.address is None:
            raise ValueError(f"a {self.kind} device needs its Bluetooth address")
        if self.kind in SERIAL_KINDS:
            if self.port is None:
                raise ValueError(
                    f"a {self.kind} device needs its port (/dev/serial/by-id/... or a path)"
                )
        elif self.port is not None or self.line is not None:
            raise ValueError(f"port and line are for serial.* devices, not {self.kind}")
        if self.address is not None and self.kind not in BLE_KINDS:
            raise ValueError(f"address is for ble.* devices, not {self.kind}")
        if self.virtual is not None and self.kind not in BLE_KINDS | SERIAL_KINDS:
            raise ValueError(f"virtual is for ble.* and serial.* devices, not {self.kind}")
        return self

    @field_validator("start")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("must carry a UTC offset, e.g. 2026-11-22T08:00:00Z")
        return v


class SerialSection(_Strict):
    """Serial ports. ``virtual``: each serial device is a simulator on a pseudo-terminal whose
    symlink (``port``, relative paths under the data directory) stands in for /dev/serial/by-id."""

    backend: Literal["tty", "virtual"] = "tty"
    #: No bytes for this long in the middle of a transfer abandons it (ASTM E1381 receiver: 30 s).
    transfer_timeout_s: Annotated[float, Field(gt=0, le=600)] = 30.0
    #: The longest wait between attempts to open a missing or busy port.
    reopen_max_s: Annotated[float, Field(ge=1, le=600)] = 10.0


KioskScreen = Literal["bp", "scale", "height", "oximeter", "thermometer"]
#: What the kiosk screen calls a device of each kind (its name and guidance); a bridge-board
#: peripheral names itself with ``screen``.
KIOSK_SCREENS: Final[dict[str, KioskScreen]] = {
    "ble.bp-monitor": "bp",
    "sim.bp-monitor": "bp",
    "ble.scale": "scale",
    "ble.pulse-oximeter": "oximeter",
    "sim.pulse-oximeter": "oximeter",
    "ble.thermometer": "thermometer",
    "sim.thermometer": "thermometer",
}


class KioskSection(_Strict):
    """Kiosk mode: the devices bound to ``kiosk-session`` serve visits at a local screen."""

    #: the screen's browser runs on the station itself; the screen shows patients' readings,
    #: so it is served on loopback only
    ui_host: Literal["127.0.0.1", "::1", "localhost"] = "127.0.0.1"
    ui_port: Annotated[int, Field(ge=1, le=65_535)] = 8080
    #: TOML with a [codes] table: one-time code = "pseudonymous patient ref"
    codes_file: Path
    #: what the screen calls each device (device id -> bp, scale, height, oximeter,
    #: thermometer); by the device's kind when left out
    screens: dict[str, KioskScreen] = Field(default_factory=dict)


class AgentConfig(_Strict):
    agent: AgentSection
    mqtt: MqttSection = MqttSection()
    ble: BleSection = BleSection()
    serial: SerialSection = SerialSection()
    kiosk: KioskSection | None = None
    devices: list[DeviceSection] = Field(default_factory=list)

    @model_validator(mode="after")
    def _kiosk_devices(self) -> AgentConfig:
        if self.kiosk is None:
            return self
        station = [d for d in self.devices if d.subject_kind == "kiosk-session"]
        if not station:
            raise ValueError(
                '[kiosk] needs devices with subject_kind = "kiosk-session" (the station\'s)'
            )
        ids = {d.id for d in station}
        for device_id in self.kiosk.screens:
            if device_id not in ids:
                raise ValueError(f"[kiosk.screens] names {device_id!r}, not a station device")
        for d in station:
            if d.id not in self.kiosk.screens and d.kind not in KIOSK_SCREENS:
                raise ValueError(
                    f"device {d.id!r} ({d.kind}): say what the screen calls it in "
                    "[kiosk.screens] (bp, scale, height, oximeter or thermometer)"
                )
        return self

    def kiosk_screens(self) -> dict[str, str]:
        """Each station device's screen name (device id -> bp, scale, ...)."""
        if self.kiosk is None:
            return {}
        return {
            d.id: self.kiosk.screens.get(d.id) or KIOSK_SCREENS[d.kind]
            for d in self.devices
            if d.subject_kind == "kiosk-session"
        }

    @model_validator(mode="after")
    def _unique_ids(self) -> AgentConfig:
        seen: set[str] = set()
        addresses: set[str] = set()
        ports: set[str] = set()
        for d in self.devices:
            if d.id in seen:
                raise ValueError(f"device id {d.id!r} is used twice")
            seen.add(d.id)
            if d.address is not None:
                if d.address in addresses:
                    raise ValueError(f"Bluetooth address {d.address} is bound twice")
                addresses.add(d.address)
            if d.kind in SERIAL_KINDS:
                if (d.virtual is not None) != (self.serial.backend == "virtual"):
                    raise ValueError(
                        f"device {d.id!r}: a [devices.virtual] table goes with "
                        '[serial] backend = "virtual", and every serial device needs one there'
                    )
                port = self.port_path(d.port or "")  # "pef1" and <data_dir>/.../pef1 are one
                if port in ports:
                    raise ValueError(f"serial port {d.port} is bound twice")
                ports.add(port)
                continue
            if d.virtual is not None and self.ble.backend != "virtual":
                raise ValueError(
                    f"device {d.id!r} describes a virtual peripheral but [ble] backend is "
                    f'{self.ble.backend!r} (set backend = "virtual")'
                )
            if d.kind in BLE_KINDS and self.ble.backend == "virtual" and d.virtual is None:
                raise ValueError(
                    f'device {d.id!r}: with [ble] backend = "virtual" every BLE device needs '
                    "a [devices.virtual] table (there is no radio to find a real one)"
                )
        cgms = sum(1 for d in self.devices if d.kind == "ble.cgm")
        others = sum(1 for d in self.devices if d.kind in BLE_KINDS and d.kind != "ble.cgm")
        need = cgms + (1 if others else 0)
        if need > self.ble.max_connections:
            raise ValueError(
                f"[ble] max_connections = {self.ble.max_connections} is too few: each of the "
                f"{cgms} CGM(s) keeps its link open, and the other BLE devices need one more "
                f"(set max_connections = {need})"
            )
        return self

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or f"remon-agent-{self.agent.site}"

    @property
    def outbox_path(self) -> Path:
        return self.agent.data_dir / "outbox.sqlite"

    @property
    def registry_path(self) -> Path:
        return self.agent.data_dir / "devices.sqlite"

    def port_path(self, port: str) -> str:
        """A device's port as opened: relative virtual ports live under the data directory."""
        if self.serial.backend == "virtual" and not port.startswith("/"):
            return str(self.agent.data_dir / "virtual-serial" / port)
        return port


def load_config(path: Path) -> AgentConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return parse_config(text, source=str(path))


def parse_config(text: str, *, source: str = "<config>") -> AgentConfig:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    try:
        return AgentConfig.model_validate(doc)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            line = locate(text, loc)
            where = f"{source}:{line}" if line else source
            lines.append(f"{where}: {_dotted(loc)}: {err['msg']}")
        raise ConfigError("\n".join(lines)) from None


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"']+)\s*=")


def locate(text: str, loc: tuple[Any, ...]) -> int | None:
    """Best-effort line number (1-based) of the key at ``loc`` in a TOML document.

    Tracks ``[table]`` and ``[[array]]`` headers; returns the line of the key, or of the table
    header when the key is missing, or None.
    """
    table: tuple[Any, ...] = ()
    counters: dict[str, int] = {}
    best: int | None = None
    want_table = tuple(p for p in loc[:-1])
    for lineno, raw in enumerate(text.splitlines(), start=1):
        m = _HEADER.match(raw)
        if m:
            name = m.group(2).strip().strip("\"'")
            if m.group(1) == "[[":
                counters[name] = counters.get(name, -1) + 1
                table = (*name.split("."), counters[name])
            else:
                parts = name.split(".")
                if parts[0] in counters and len(parts) > 1:  # [devices.virtual]: the last element
                    table = (parts[0], counters[parts[0]], *parts[1:])
                else:
                    table = tuple(parts)
            if table == tuple(loc[: len(table)]) and best is None:
                best = lineno
            continue
        k = _KEY.match(raw)
        if k and (*table, k.group(1).strip("\"'")) == tuple(loc):
            return lineno
        if k and table == want_table and best is None:
            best = lineno
    return best
