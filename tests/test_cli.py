"""The `remon` command's configuration handling, as an operator meets it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.test_config import GOOD


def remon(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "remon.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_config_accepts_a_good_file(tmp_path: Path) -> None:
    p = tmp_path / "agent.toml"
    p.write_text(GOOD)
    r = remon("agent", "check-config", str(p))
    assert r.returncode == 0, r.stderr
    assert "site home-0001, 2 devices" in r.stdout


def test_check_config_names_line_and_key(tmp_path: Path) -> None:
    p = tmp_path / "agent.toml"
    p.write_text(GOOD.replace("interval_s = 5", "interval_s = 0"))
    r = remon("agent", "check-config", str(p))
    assert r.returncode == 2
    assert f"{p}:12: devices[0].interval_s: Input should be greater than 0" in r.stderr
    assert "Traceback" not in r.stderr


def test_agent_run_refuses_a_bad_config_before_starting(tmp_path: Path) -> None:
    p = tmp_path / "agent.toml"
    p.write_text(GOOD.replace('kind = "sim.bp-monitor"', 'kind = "sim.toaster"'))
    r = remon("agent", "run", "--config", str(p))
    assert r.returncode == 2
    assert "devices[1].kind" in r.stderr
    assert "Traceback" not in r.stderr


def test_shared_workers_need_their_own_client_id() -> None:
    r = remon("ingest", "run", "--shared", "--no-api", "--database", "sqlite:///:memory:")
    assert r.returncode == 2
    assert "stable client id" in r.stderr
