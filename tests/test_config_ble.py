"""Agent configuration: the [ble] section, ble.* devices and their virtual peripherals.

Facts from edge_agent/config.py and docs/configuration.md: a ble.* device needs a Bluetooth
address (six hex pairs with colons), stored upper-case and bound to one device only; a
[devices.virtual] table only makes sense with ``[ble] backend = "virtual"``, and that backend
needs one for every BLE device; every CGM keeps its link open and the other BLE devices share
one more, so max_connections must cover that; [agent] timezone is an IANA zone. Errors name the
file, line and key (see tests/test_config.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.config import ConfigError, parse_config

# Line numbers matter: the error tests below refer to them.
VIRTUAL = """\
[agent]
site = "home-0001"
data_dir = "/tmp/remon"

[ble]
backend = "virtual"
max_connections = 2

[[devices]]
id = "gm1"
kind = "ble.glucose-meter"
subject = "p-1"
address = "f0:12:34:56:78:9a"

[devices.virtual]
records = 10

[[devices]]
id = "cgm1"
kind = "ble.cgm"
subject = "p-1"
address = "F0:12:34:56:78:9B"

[devices.virtual]
backlog_min = 30
"""

SIM_DEVICE = """
[[devices]]
id = "sim1"
kind = "sim.thermometer"
subject = "p-2"
"""


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="agent.toml")
    return str(info.value)


def test_valid_virtual_config_parses_with_addresses_upper_cased() -> None:
    cfg = parse_config(VIRTUAL + SIM_DEVICE, source="agent.toml")
    assert cfg.ble.backend == "virtual"
    assert cfg.ble.max_connections == 2
    assert [d.id for d in cfg.devices] == ["gm1", "cgm1", "sim1"]
    assert [d.address for d in cfg.devices] == ["F0:12:34:56:78:9A", "F0:12:34:56:78:9B", None]
    gm, cgm, sim = cfg.devices
    assert gm.virtual is not None
    assert gm.virtual.records == 10
    assert cgm.virtual is not None
    assert cgm.virtual.backlog_min == 30
    assert sim.virtual is None
    assert cfg.agent.timezone == "Europe/Helsinki"  # the default: Finnish care
    assert cfg.registry_path == Path("/tmp/remon/devices.sqlite")


def test_ble_section_defaults_to_bluez_with_one_connection() -> None:
    text = VIRTUAL.replace('backend = "virtual"\nmax_connections = 2\n', "")
    text = text.replace("\n[devices.virtual]\nrecords = 10\n", "")
    text = text.replace("\n[devices.virtual]\nbacklog_min = 30\n", "")
    text = text.replace('kind = "ble.cgm"', 'kind = "ble.scale"')
    cfg = parse_config(text)
    assert cfg.ble.backend == "bluez"
    assert cfg.ble.max_connections == 1  # a meter and a scale share the one link


def test_ble_device_without_address_names_the_device_and_line() -> None:
    msg = error_of(VIRTUAL.replace('address = "f0:12:34:56:78:9a"\n', ""))
    assert "agent.toml:9: devices[0]" in msg  # line 9: the device's [[devices]] header
    assert "ble.glucose-meter" in msg
    assert "address" in msg


@pytest.mark.parametrize(
    "address",
    [
        "F0:12:34:56:78",
        "F0-12-34-56-78-9A",
        "G0:12:34:56:78:9A",
        "F012:34:56:78:9A:",
        "",
        "F0:12:34:56:78:9A:BC",
    ],
)
def test_bad_address_format_is_an_error_on_its_line(address: str) -> None:
    msg = error_of(VIRTUAL.replace('"f0:12:34:56:78:9a"', f'"{address}"'))
    assert "agent.toml:13: devices[0].address" in msg
    assert "Bluetooth address" in msg


def test_address_on_a_sim_device_is_an_error() -> None:
    msg = error_of(VIRTUAL + SIM_DEVICE + 'address = "F0:12:34:56:78:9C"\n')
    assert "devices[2]" in msg
    assert "sim.thermometer" in msg


@pytest.mark.parametrize(
    "spelling", ["F0:12:34:56:78:9A", "f0:12:34:56:78:9a", "F0:12:34:56:78:9a"]
)
def test_same_address_twice_is_an_error_whatever_the_case(spelling: str) -> None:
    msg = error_of(VIRTUAL.replace('"F0:12:34:56:78:9B"', f'"{spelling}"'))
    assert "F0:12:34:56:78:9A" in msg
    assert "twice" in msg


def test_virtual_peripheral_with_bluez_backend_is_an_error() -> None:
    msg = error_of(VIRTUAL.replace('backend = "virtual"', 'backend = "bluez"'))
    assert "'gm1'" in msg
    assert "bluez" in msg
    assert 'backend = "virtual"' in msg


def test_virtual_backend_needs_a_virtual_table_for_every_ble_device() -> None:
    msg = error_of(VIRTUAL.replace("\n[devices.virtual]\nbacklog_min = 30\n", ""))
    assert "'cgm1'" in msg
    assert "[devices.virtual]" in msg


def test_cgm_plus_meter_needs_two_connections() -> None:
    msg = error_of(VIRTUAL.replace("max_connections = 2", "max_connections = 1"))
    assert "max_connections = 1 is too few" in msg
    assert "set max_connections = 2" in msg


def test_each_cgm_needs_its_own_connection() -> None:
    second_cgm = """
[[devices]]
id = "cgm2"
kind = "ble.cgm"
subject = "p-2"
address = "F0:12:34:56:78:9C"

[devices.virtual]
"""
    msg = error_of(VIRTUAL + second_cgm)
    assert "set max_connections = 3" in msg
    cfg = parse_config((VIRTUAL + second_cgm).replace("max_connections = 2", "max_connections = 3"))
    assert [d.kind for d in cfg.devices].count("ble.cgm") == 2


@pytest.mark.parametrize("bad", [0, 9])
def test_max_connections_bounds(bad: int) -> None:
    msg = error_of(VIRTUAL.replace("max_connections = 2", f"max_connections = {bad}"))
    assert "agent.toml:7: ble.max_connections" in msg


@pytest.mark.parametrize("zone", ["Mars/Olympus", "Europe", "", "europe/helsinki "])
def test_unknown_timezone_is_an_error(zone: str) -> None:
    msg = error_of(
        VIRTUAL.replace('site = "home-0001"\n', f'site = "home-0001"\ntimezone = "{zone}"\n')
    )
    assert "agent.toml:3: agent.timezone" in msg
    assert "unknown time zone" in msg


def test_known_timezone_is_accepted() -> None:
    text = VIRTUAL.replace(
        'site = "home-0001"\n', 'site = "home-0001"\ntimezone = "Europe/Stockholm"\n'
    )
    assert parse_config(text).agent.timezone == "Europe/Stockholm"


def test_error_in_virtual_table_names_the_key_line() -> None:
    msg = error_of(VIRTUAL.replace("records = 10", "records = -1"))
    assert "agent.toml:16: devices[0].virtual.records" in msg
