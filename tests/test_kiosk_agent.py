"""The production agent in kiosk mode (``[kiosk]``): its station devices' readings go to the
visit open at the station's screen, or to nobody. A simulated BP monitor measures every
half second from before a patient arrives to after they leave; only what it took while armed
for the visit reaches the cloud, as that patient's, once."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from cloud_ingest.consumer import Consumer, ConsumerConfig
from cloud_ingest.service import IngestService
from cloud_ingest.storage import open_storage
from edge_agent.config import ConfigError, parse_config
from edge_agent.kiosk_station import QUARANTINE_SOURCE
from gateway.outbox import Outbox
from remon.brokers import MosquittoProcess, free_port
from tests.test_end_to_end import RunningAgent, wait_until

SITE = "kiosk-0042"


@pytest.fixture
def service(tmp_path: Path, fresh_mosquitto: MosquittoProcess) -> Iterator[IngestService]:
    """The cloud: SQLite storage and the real consumer on the test's broker."""
    storage = open_storage(f"sqlite:///{tmp_path / 'cloud.db'}")
    svc = IngestService(storage)
    consumer = Consumer(
        svc, ConsumerConfig(url=fresh_mosquitto.url, client_id=f"c-{uuid.uuid4().hex[:8]}")
    )
    consumer.start()
    try:
        yield svc
    finally:
        consumer.stop()
        storage.close()


def kiosk_toml(tmp: Path, broker: str, port: int) -> str:
    codes = tmp / "codes.toml"
    codes.write_text('[codes]\n"4821-7730" = "p-anna"\n"5500-1234" = "p-bert"\n')
    return f"""
[agent]
site = "{SITE}"
data_dir = "{tmp / "agent"}"

[mqtt]
url = "{broker}"

[kiosk]
ui_port = {port}
codes_file = "{codes}"

[[devices]]
id = "bp"
kind = "sim.bp-monitor"
subject = "{SITE}"
subject_kind = "kiosk-session"
interval_s = 0.5
"""


def test_kiosk_mode_binds_only_what_was_measured_for_the_visit(
    tmp_path: Path, fresh_mosquitto: MosquittoProcess, service: IngestService
) -> None:
    port = free_port()
    cfg = parse_config(kiosk_toml(tmp_path, fresh_mosquitto.url, port))
    base = f"http://127.0.0.1:{port}"
    same = {"Origin": base}
    with RunningAgent(cfg) as running, httpx.Client(base_url=base, timeout=10) as ui:
        wait_until(lambda: _up(ui), 30, "the kiosk screen")
        station = running.agent.station
        assert station is not None
        time.sleep(1.5)  # the monitor measures with nobody at the station
        assert ui.post("/identify", data={"code": "4821-7730"}, headers=same).status_code == 303
        time.sleep(1.0)  # identified, not yet measuring: still nobody's
        assert ui.post("/start", headers=same).status_code == 303
        wait_until(lambda: len(station.view().readings) >= 6, 30, "readings for the visit")
        assert ui.post("/review", headers=same).status_code == 303
        assert "mmHg" in ui.get("/").text
        assert ui.post("/answers", data={"smoker": "no"}, headers=same).status_code == 303
        taken = {o.record_key for _, o in station.view().readings}
        assert ui.post("/consent", headers=same).status_code == 303
        wait_until(lambda: _idle(ui), 30, "the visit to be confirmed and wiped")
        time.sleep(1.0)  # the monitor goes on after the patient left: nobody's
        wait_until(lambda: bool(service.list_visits(subject="p-anna")), 30, "the visit")
    (visit,) = service.list_visits(subject="p-anna")
    readings = service.visit_observations(visit)
    assert {r.record_key for r in readings} == taken
    assert {(r.subject_ref, r.site) for r in readings} == {("p-anna", SITE)}
    assert visit.answers == [{"id": "smoker", "value": False}]
    assert visit.quarantined >= 1  # readings taken before the start reached the station
    # everything the monitor measured outside the visit is kept at the station, nobody's
    with Outbox(cfg.outbox_path) as outbox:
        quarantined = [r for r in outbox.rejects(1000) if r.source == QUARANTINE_SOURCE]
        assert quarantined
        assert {r.reason.split(":")[0] for r in quarantined} >= {"no-open-visit"}
        assert outbox.pending() == 0
        assert all(b"p-anna" not in (r.raw or b"") for r in quarantined)
    # and no reading at the cloud belongs to the station itself or to anyone else
    subjects = {o.subject_ref for o in service.list_observations(limit=10_000)}
    assert subjects == {"p-anna"}


def test_a_spent_code_stays_spent_after_a_restart(
    tmp_path: Path, fresh_mosquitto: MosquittoProcess
) -> None:
    port = free_port()
    cfg = parse_config(kiosk_toml(tmp_path, fresh_mosquitto.url, port))
    base = f"http://127.0.0.1:{port}"
    same = {"Origin": base}
    with RunningAgent(cfg), httpx.Client(base_url=base, timeout=10) as ui:
        wait_until(lambda: _up(ui), 30, "the kiosk screen")
        assert ui.post("/identify", data={"code": "5500-1234"}, headers=same).status_code == 303
        assert ui.post("/cancel", headers=same).status_code == 303
    with RunningAgent(cfg), httpx.Client(base_url=base, timeout=10) as ui:
        wait_until(lambda: _up(ui), 30, "the kiosk screen again")
        r = ui.post("/identify", data={"code": "5500-1234"}, headers=same)
        assert r.status_code == 422
        assert "Koodi ei ole voimassa" in r.text


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("", "subject_kind"),  # no station device
        ('[kiosk.screens]\nnope = "bp"\n', "not a station device"),
        ('ui_host = "0.0.0.0"\n', "ui_host"),  # the screen shows patients' values: loopback
    ],
)
def test_kiosk_configuration_errors_name_the_problem(
    tmp_path: Path, extra: str, message: str
) -> None:
    codes = tmp_path / "codes.toml"
    codes.write_text('[codes]\n"1234" = "p"\n')
    device = (
        '[[devices]]\nid = "bp"\nkind = "sim.bp-monitor"\nsubject = "p-1"\n'
        if not extra
        else '[[devices]]\nid = "bp"\nkind = "sim.bp-monitor"\nsubject = "k"\n'
        'subject_kind = "kiosk-session"\n'
    )
    text = f'[agent]\nsite = "kiosk-1"\n[kiosk]\ncodes_file = "{codes}"\n{extra}{device}'
    with pytest.raises(ConfigError, match=message):
        parse_config(text)


def _up(ui: httpx.Client) -> bool:
    try:
        return ui.get("/").status_code == 200
    except httpx.HTTPError:
        return False


def _idle(ui: httpx.Client) -> bool:
    return 'data-state="idle"' in ui.get("/").text


def test_kiosk_mode_over_the_real_device_paths(
    tmp_path: Path, fresh_mosquitto: MosquittoProcess, service: IngestService
) -> None:
    """A virtual BLE BP monitor (bumble, read through bleak: it hands over its stored
    measurements on every connection) and a height rod behind our bridge board on a pty: what
    either took before the visit armed it stays nobody's; the visit carries only what was
    measured for it."""
    port = free_port()
    codes = tmp_path / "codes.toml"
    codes.write_text('[codes]\n"4821-7730" = "p-anna"\n')
    cfg = parse_config(
        f"""
[agent]
site = "{SITE}"
data_dir = "{tmp_path / "agent"}"
outbox_synchronous = "NORMAL"

[mqtt]
url = "{fresh_mosquitto.url}"

[ble]
backend = "virtual"

[serial]
backend = "virtual"
reopen_max_s = 2

[kiosk]
ui_port = {port}
codes_file = "{codes}"
[kiosk.screens]
height = "height"

[[devices]]
id = "bp"
kind = "ble.bp-monitor"
address = "F1:00:00:00:00:42"
subject = "{SITE}"
subject_kind = "kiosk-session"
poll_interval_s = 0.5
idle_timeout_s = 1.0
[devices.virtual]
seed = 3

[[devices]]
id = "height"
kind = "serial.kiosk-peripheral"
subject = "{SITE}"
subject_kind = "kiosk-session"
port = "usb-remon_height"
[devices.virtual]
record_every_s = 0.5
records = 1000
"""
    )
    base = f"http://127.0.0.1:{port}"
    same = {"Origin": base}
    with RunningAgent(cfg) as running, httpx.Client(base_url=base, timeout=10) as ui:
        wait_until(lambda: _up(ui), 30, "the kiosk screen")
        station = running.agent.station
        assert station is not None
        with Outbox(cfg.outbox_path) as outbox:
            wait_until(  # both devices have handed over readings with nobody there
                lambda: {r.device_id for r in outbox.rejects(1000)} >= {"bp", "height"},
                60,
                "readings before any visit",
            )
        assert ui.post("/identify", data={"code": "4821-7730"}, headers=same).status_code == 303
        before_start = datetime.now(UTC)
        assert ui.post("/start", headers=same).status_code == 303
        wait_until(
            lambda: {d for d, _ in station.view().readings} == {"bp", "height"},
            60,
            "readings from both devices for the visit",
        )
        assert ui.post("/review", headers=same).status_code == 303
        taken = {(d, o.record_key, o.measure) for d, o in station.view().readings}
        assert ui.post("/consent", headers=same).status_code == 303
        wait_until(lambda: _idle(ui), 30, "the visit to be confirmed and wiped")
        wait_until(lambda: bool(service.list_visits(subject="p-anna")), 30, "the visit")
    (visit,) = service.list_visits(subject="p-anna")
    readings = service.visit_observations(visit)
    assert {(r.device_id, r.record_key, r.measure) for r in readings} == taken
    assert {r.device_id for r in readings} == {"bp", "height"}
    # the cuff's memory from before the visit never joined it
    assert all(r.effective_time >= before_start for r in readings)
    assert {r.subject_ref for r in service.list_observations(limit=10_000)} == {"p-anna"}
