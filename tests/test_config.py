from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.config import ConfigError, load_config, parse_config

GOOD = """\
[agent]
site = "home-0001"
data_dir = "/tmp/remon"

[mqtt]
url = "mqtt://127.0.0.1:1883"

[[devices]]
id = "gm1"
kind = "sim.glucose-meter"
subject = "p-1"
interval_s = 5

[[devices]]
id = "bp1"
kind = "sim.bp-monitor"
subject = "p-1"
"""


def test_valid_config() -> None:
    cfg = parse_config(GOOD)
    assert cfg.agent.site == "home-0001"
    assert [d.id for d in cfg.devices] == ["gm1", "bp1"]
    assert cfg.devices[0].interval_s == 5
    assert cfg.client_id == "remon-agent-home-0001"
    assert cfg.outbox_path == Path("/tmp/remon/outbox.sqlite")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            GOOD.replace("interval_s = 5", "interval_s = -5"),
            "agent.toml:12: devices[0].interval_s: Input should be greater than 0",
        ),
        (
            GOOD.replace('kind = "sim.bp-monitor"', 'kind = "sim.toaster"'),
            "agent.toml:16: devices[1].kind:",
        ),
        (
            GOOD.replace('site = "home-0001"', 'site = "Home 1"'),
            "agent.toml:2: agent.site: Value error",
        ),
        (
            GOOD.replace('url = "mqtt://127.0.0.1:1883"', 'url = "http://x"'),
            "agent.toml:6: mqtt.url",
        ),
        (
            GOOD.replace("interval_s = 5", "intervall_s = 5"),
            "agent.toml:12: devices[0].intervall_s: Extra inputs are not permitted",
        ),
        (GOOD.replace('id = "bp1"', 'id = "gm1"'), "device id 'gm1' is used twice"),
        (GOOD.replace('site = "home-0001"\n', ""), "agent.toml:1: agent.site: Field required"),
        (GOOD.replace("[mqtt]", "[mqtt"), "agent.toml: not valid TOML: "),
    ],
)
def test_errors_name_file_line_and_key(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="agent.toml")
    assert expected in str(info.value)


def test_toml_syntax_error_has_line(tmp_path: Path) -> None:
    p = tmp_path / "a.toml"
    p.write_text(GOOD.replace("[mqtt]", "[mqtt"))
    with pytest.raises(ConfigError, match=r"line 5"):
        load_config(p)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
