"""`remon demo` as a user runs it: a subprocess, its printed token, alerts through the HTTP API."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from remon.brokers import MosquittoProcess, free_port

pytestmark = pytest.mark.slow


Serial = dict[str, list[dict[str, object]]]


def kiosk_visit(out: Path) -> None:
    """Patient 1 at the demo's station: code, measure, review, send; the screen is wiped."""
    m = re.search(r"kiosk\s+(http://\S+?)/\s", out.read_text())
    code = re.search(r"one-time codes (\S+) \(patient 1\)", out.read_text())
    assert m, out.read_text()
    assert code, out.read_text()
    url = m.group(1)
    same = {"Origin": url}
    with httpx.Client(base_url=url, timeout=10) as ui:
        deadline = time.monotonic() + 20  # the station's agent starts its screen with the fleet
        while time.monotonic() < deadline:
            try:
                if ui.get("/").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        assert ui.post("/identify", data={"code": code.group(1)}, headers=same).status_code == 303
        assert ui.post("/start", headers=same).status_code == 303
        deadline = time.monotonic() + 20
        while "mmHg" not in ui.get("/").text and time.monotonic() < deadline:
            time.sleep(0.3)
        assert "mmHg" in ui.get("/").text, "a BP reading for the visit"
        assert ui.post("/review", headers=same).status_code == 303
        assert ui.post("/consent", headers=same).status_code == 303
        deadline = time.monotonic() + 20
        while 'id="sent"' not in ui.get("/").text and time.monotonic() < deadline:
            time.sleep(0.3)
        page = ui.get("/").text
        assert 'id="sent"' in page, page
        assert "mmHg" not in page  # wiped once the broker confirmed it


def run_demo_and_query(tmp_path: Path, *extra: str) -> tuple[list[dict[str, object]], str, Serial]:
    port = free_port()
    out = tmp_path / "demo.out"
    cmd = [
        sys.executable,
        "-m",
        "remon.cli",
        "demo",
        "--duration",
        "25",
        "--interval",
        "0.25",
        "--port",
        str(port),
        "--data-dir",
        str(tmp_path / "demo"),
        # the live path alone: the 14-day history has its own end-to-end test
        # (tests/test_demo_history.py) and would answer these queries on its own
        "--no-history",
        *extra,
    ]
    with out.open("wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
    try:
        token = None
        deadline = time.monotonic() + 20
        while token is None and time.monotonic() < deadline:
            m = re.search(r"token\s+(\S+)", out.read_text())
            token = m.group(1) if m else None
            time.sleep(0.1)
        assert token, out.read_text()
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {token}"}
        kiosk_visit(out)  # first: the station's simulated devices measure every few seconds
        assert httpx.get(f"{base}/api/v1/alerts").status_code == 401
        alerts: list[dict[str, object]] = []
        deadline = time.monotonic() + 20
        while not alerts and time.monotonic() < deadline:
            alerts = httpx.get(f"{base}/api/v1/alerts", headers=headers).json()
            time.sleep(0.3)
        assert httpx.get(f"{base}/api/v1/health").status_code == 200
        stats = httpx.get(f"{base}/api/v1/stats", headers=headers).json()
        assert stats["observations"] > 0
        # the demo's faulty hub: its malformed reading is kept with the reason, not lost
        letters: list[dict[str, object]] = []
        deadline = time.monotonic() + 15
        while not letters and time.monotonic() < deadline:
            letters = httpx.get(f"{base}/api/v1/dead-letters", headers=headers).json()
            time.sleep(0.3)
        assert letters, "the faulty hub's reading reached the dead letters"
        assert letters[0]["code"] == "wrong-type"
        assert letters[0]["path"] == "observations[0].value"
        # the serial devices: a PEF board's blows and a dispenser client's missed dose
        serial: Serial = {"pef": [], "missed": []}
        deadline = time.monotonic() + 25
        while not all(serial.values()) and time.monotonic() < deadline:
            serial["pef"] = httpx.get(
                f"{base}/api/v1/observations", params={"measure": "pef"}, headers=headers
            ).json()
            serial["missed"] = httpx.get(
                f"{base}/api/v1/events", params={"kind": "dose_missed"}, headers=headers
            ).json()
            time.sleep(0.5)
        # routing: the demo's home-care nurse sees the dispenser clients' alerts only
        m = re.search(r"home care (\S+)", out.read_text())
        assert m, out.read_text()
        nurse = {"Authorization": f"Bearer {m.group(1)}"}
        routed: list[dict[str, object]] = []
        deadline = time.monotonic() + 25
        while not routed and time.monotonic() < deadline:
            routed = httpx.get(f"{base}/api/v1/alerts", headers=nurse).json()
            time.sleep(0.5)
        serial["home_care_alerts"] = routed
        # the kiosk visit reached the patient's record, with what the station measured
        visits: list[dict[str, object]] = []
        deadline = time.monotonic() + 25
        while not visits and time.monotonic() < deadline:
            visits = httpx.get(
                f"{base}/api/v1/patients/demo-patient-0001/visits", headers=headers
            ).json()
            time.sleep(0.5)
        serial["kiosk_visits"] = visits
        proc.send_signal(signal.SIGINT)  # Ctrl-C: a clean stop with a final summary
        try:
            code = proc.wait(90)  # a guard, not a timing assertion: CI machines are shared
        except subprocess.TimeoutExpired:
            pytest.fail(f"the demo did not stop within 90 s of Ctrl-C:\n{out.read_text()}")
        assert code == 0, out.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return alerts, out.read_text(), serial


def test_demo_raises_alerts_visible_through_the_api(tmp_path: Path) -> None:
    alerts, output, serial = run_demo_and_query(tmp_path)
    assert alerts
    # serial devices on ptys, through pyserial and the protocol codecs, reached the cloud
    assert serial["pef"], "a PEF board's blow"
    assert all(o["unit"] == "L/min" and "simulated" in o["quality"] for o in serial["pef"])
    assert serial["missed"], "the dispenser client who misses doses"
    assert serial["missed"][0]["subject"] == {"kind": "patient", "ref": "demo-patient-0002"}
    assert "missed doses" in output
    routed = serial["home_care_alerts"]
    assert routed, "the home-care nurse sees the dispenser clients' alerts"
    assert {(a["audience"], a["team_id"], a["kind"]) for a in routed} == {
        ("home_care", "demo-home-care", "event")
    }
    (visit,) = serial["kiosk_visits"]  # the one visit at the demo's station, patient 1's
    assert visit["site"] == "kiosk-0001"
    readings = visit["observations"]
    assert isinstance(readings, list)
    assert readings
    assert {o["subject_ref"] for o in readings} == {"demo-patient-0001"}
    for a in alerts:
        assert a["state"] in ("open", "acknowledged")
        assert a["priority"] in ("high", "medium", "low")
        assert "DOMAIN.md" in str(a["explanation"])
        assert str(a["subject_ref"]).startswith("demo-patient-")
    assert "private Mosquitto" in output
    assert "open alerts" in output
    # device telemetry from the virtual BLE peripherals: battery, signal and link at the cloud
    assert re.search(
        r"\[device\] \S+ \(demo-patient-\d+\): battery \d+ %, RSSI -?\d+ dBm, "
        r"link (connected|disconnected)",
        output,
    ), output
    assert re.search(r"\[device\] \S+/ble-bp \(\S+\): battery \d+ %", output), output
    assert "Traceback" not in output


def test_demo_on_the_embedded_broker(tmp_path: Path) -> None:
    alerts, output, _ = run_demo_and_query(tmp_path, "--broker", "embedded", "--patients", "3")
    assert alerts
    assert "embedded amqtt" in output
    assert "Traceback" not in output


def test_demo_against_mosquitto_and_postgresql(
    tmp_path: Path, pg_url: str, fresh_mosquitto: MosquittoProcess
) -> None:
    alerts, output, _ = run_demo_and_query(
        tmp_path, "--broker", fresh_mosquitto.url, "--database", pg_url, "--patients", "3"
    )
    assert alerts
    assert fresh_mosquitto.url in output
    assert "Traceback" not in output
