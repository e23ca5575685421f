"""Agent configuration: the [serial] section, serial.* devices and their virtual simulators.

Facts from edge_agent/config.py: a serial.* device needs its port (a /dev/serial/by-id link or
a path) and may override its line settings with ``line`` ("9600 8N1": baud from a fixed list,
7/8 data bits, parity N/E/O, 1/2 stop bits, optional " rtscts"); port and line belong to
serial.* devices only; a port is bound to one device; ``[serial] backend = "virtual"`` goes with
a [devices.virtual] table on every serial device, and the table needs that backend. Default
line settings: PROTOCOLS.md (OneTouch Ultra 2 9600 8N1; Contour 9600 8N1 on its serial cable)
and firmware-bridges.md (bridge boards 115200 8N1). A dispenser's missed-dose window is
5 min-5 h (DOMAIN.md §4). Errors name the file, line and key (see tests/test_config.py).
"""

from __future__ import annotations

import pytest

from edge_agent.config import SERIAL_KINDS, ConfigError, parse_config

# Line numbers matter: the error tests below refer to them.
VIRTUAL = """\
[agent]
site = "home-0001"
data_dir = "/var/lib/remon"

[serial]
backend = "virtual"

[[devices]]
id = "pef1"
kind = "serial.pef-board"
subject = "p-1"
port = "pef1"
line = "115200 8N1"

[devices.virtual]
sample_rate_hz = 2000

[[devices]]
id = "disp1"
kind = "serial.dispenser"
subject = "p-1"
port = "/dev/serial/by-id/usb-remon_dispenser-if00"

[devices.virtual]
missed_window_s = 1800
"""

SIM_DEVICE = """
[[devices]]
id = "sim1"
kind = "sim.thermometer"
subject = "p-2"
"""

BLE_DEVICE = """
[[devices]]
id = "scale1"
kind = "ble.scale"
subject = "p-2"
address = "F0:12:34:56:78:9A"
"""


def tty_device(kind: str, *, extra: str = "") -> str:
    return f"""\
[agent]
site = "home-0001"

[[devices]]
id = "d1"
kind = "{kind}"
subject = "p-1"
port = "/dev/serial/by-id/usb-d1-if00"
{extra}"""


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="agent.toml")
    return str(info.value)


@pytest.mark.parametrize("kind", sorted(SERIAL_KINDS))
def test_minimal_tty_device_of_each_serial_kind(kind: str) -> None:
    cfg = parse_config(tty_device(kind))
    [dev] = cfg.devices
    assert dev.kind == kind
    assert dev.port == "/dev/serial/by-id/usb-d1-if00"
    assert dev.line is None
    assert dev.virtual is None
    assert cfg.serial.backend == "tty"
    assert cfg.serial.transfer_timeout_s == 30.0  # ASTM E1381 receiver timeout
    assert cfg.serial.reopen_max_s == 10.0


@pytest.mark.parametrize("kind", sorted(SERIAL_KINDS))
def test_minimal_virtual_device_of_each_serial_kind(kind: str) -> None:
    text = (
        tty_device(kind).replace("[[devices]]", '[serial]\nbackend = "virtual"\n\n[[devices]]')
        + "\n[devices.virtual]\n"
    )
    [dev] = parse_config(text).devices
    assert dev.virtual is not None
    assert dev.virtual.missed_window_s == 1800.0
    assert dev.virtual.sample_rate_hz == 1000


def test_virtual_example_parses() -> None:
    cfg = parse_config(VIRTUAL + SIM_DEVICE + BLE_DEVICE, source="agent.toml")
    pef, disp, sim, scale = cfg.devices
    assert pef.virtual is not None
    assert pef.virtual.sample_rate_hz == 2000
    assert disp.virtual is not None
    assert disp.virtual.missed_window_s == 1800.0
    assert (sim.port, sim.virtual, scale.port) == (None, None, None)


@pytest.mark.parametrize(
    ("kind", "line"),
    [
        ("serial.glucose-astm", "9600 8N1"),
        ("serial.glucose-onetouch", "9600 8N1"),
        ("serial.pef-board", "115200 8N1"),
        ("serial.dispenser", "115200 8N1"),
        ("serial.kiosk-peripheral", "115200 8N1"),
    ],
)
def test_line_settings_default_per_kind(kind: str, line: str) -> None:
    [dev] = parse_config(tty_device(kind)).devices
    assert dev.line_settings == line
    [custom] = parse_config(tty_device(kind, extra='line = "19200 7E2 rtscts"\n')).devices
    assert custom.line_settings == "19200 7E2 rtscts"


def test_missing_port_names_the_device_and_line() -> None:
    msg = error_of(VIRTUAL.replace('port = "pef1"\n', ""))
    assert "agent.toml:8: devices[0]" in msg  # line 8: the device's [[devices]] header
    assert "serial.pef-board device needs its port" in msg


@pytest.mark.parametrize(
    "line",
    [
        "",
        "115200",
        "115200 8N",
        "115200 9N1",
        "115200 8X1",
        "115200 8N3",
        "115200 8n1",
        "115200  8N1",
        "115200 8N1 xonxoff",
        "115200 8N1 rtscts ",
        "8N1 115200",
        "115.2k 8N1",
    ],
)
def test_bad_line_text_is_an_error_on_its_line(line: str) -> None:
    msg = error_of(VIRTUAL.replace('"115200 8N1"', f'"{line}"'))
    assert "agent.toml:13: devices[0].line" in msg
    assert 'must look like "9600 8N1"' in msg


@pytest.mark.parametrize("baud", ["100", "9601", "14400", "921600", "1000000"])
def test_baud_rate_not_in_the_list_is_an_error_on_its_line(baud: str) -> None:
    msg = error_of(VIRTUAL.replace('"115200 8N1"', f'"{baud} 8N1"'))
    assert "agent.toml:13: devices[0].line" in msg
    assert f"baud rate {baud} is not one of" in msg
    assert "115200" in msg  # the list is shown


@pytest.mark.parametrize("key", ['port = "/dev/ttyUSB0"', 'line = "9600 8N1"'])
@pytest.mark.parametrize("device", [SIM_DEVICE, BLE_DEVICE], ids=["sim", "ble"])
def test_port_or_line_on_a_non_serial_device_is_an_error(key: str, device: str) -> None:
    msg = error_of(VIRTUAL + device + key + "\n")
    assert "agent.toml:27: devices[2]" in msg  # line 27: that device's [[devices]] header
    assert "port and line are for serial.* devices" in msg


def test_bluetooth_address_on_a_serial_device_is_an_error() -> None:
    msg = error_of(
        VIRTUAL.replace('port = "pef1"\n', 'port = "pef1"\naddress = "F0:12:34:56:78:9A"\n')
    )
    assert "agent.toml:8: devices[0]" in msg
    assert "address is for ble.* devices" in msg


def test_the_same_port_twice_is_an_error() -> None:
    """The whole configuration is checked: the message names the port (no line)."""
    msg = error_of(VIRTUAL.replace("/dev/serial/by-id/usb-remon_dispenser-if00", "pef1"))
    assert "serial port pef1 is bound twice" in msg
    assert msg.startswith("agent.toml")


def test_virtual_table_without_the_virtual_backend_is_an_error() -> None:
    msg = error_of(VIRTUAL.replace('backend = "virtual"', 'backend = "tty"'))
    assert "device 'pef1'" in msg
    assert '[serial] backend = "virtual"' in msg


def test_virtual_backend_needs_a_virtual_table_on_every_serial_device() -> None:
    msg = error_of(VIRTUAL.replace("[devices.virtual]\nmissed_window_s = 1800\n", ""))
    assert "device 'disp1'" in msg
    assert "[devices.virtual]" in msg


@pytest.mark.parametrize("window", [0, 299, 299.9, 18_000.1, 18_001, 86_400])
def test_missed_window_outside_5_min_to_5_h_is_an_error(window: float) -> None:
    msg = error_of(VIRTUAL.replace("missed_window_s = 1800", f"missed_window_s = {window}"))
    assert "agent.toml:25: devices[1].virtual.missed_window_s" in msg


@pytest.mark.parametrize("window", [300, 18_000])
def test_missed_window_limits_are_accepted(window: float) -> None:
    cfg = parse_config(VIRTUAL.replace("missed_window_s = 1800", f"missed_window_s = {window}"))
    virtual = cfg.devices[1].virtual
    assert virtual is not None
    assert virtual.missed_window_s == window


@pytest.mark.parametrize(
    ("setting", "key"),
    [
        ('backend = "usb"', "serial.backend"),
        ("transfer_timeout_s = 0", "serial.transfer_timeout_s"),
        ("reopen_max_s = 0.5", "serial.reopen_max_s"),
        ("reopen_max_s = 601", "serial.reopen_max_s"),
        ("baud = 9600", "serial.baud"),  # unknown keys are errors
    ],
)
def test_serial_section_errors_name_the_key_and_line(setting: str, key: str) -> None:
    msg = error_of(VIRTUAL.replace('backend = "virtual"', setting))
    assert f"agent.toml:6: {key}" in msg


@pytest.mark.parametrize(
    ("port", "path"),
    [
        ("pef1", "/var/lib/remon/virtual-serial/pef1"),
        ("boards/pef1", "/var/lib/remon/virtual-serial/boards/pef1"),
        ("/dev/pts/7", "/dev/pts/7"),
    ],
)
def test_virtual_port_path_is_under_the_data_directory_unless_absolute(
    port: str, path: str
) -> None:
    assert parse_config(VIRTUAL).port_path(port) == path


@pytest.mark.parametrize("port", ["/dev/serial/by-id/usb-x-if00", "ttyUSB0"])
def test_tty_port_path_is_the_port_as_written(port: str) -> None:
    assert parse_config(tty_device("serial.dispenser")).port_path(port) == port
