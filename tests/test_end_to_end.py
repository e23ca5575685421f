"""The whole path against real components: agent → Mosquitto → ingest → storage → alerts.

Storage runs on SQLite and PostgreSQL; the broker is a real Mosquitto; the agent is the
production agent (in-process, or as a `remon agent run` subprocess that gets SIGKILLed).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import sqlalchemy as sa
from paho.mqtt.enums import CallbackAPIVersion

from cloud_ingest.consumer import Consumer, ConsumerConfig
from cloud_ingest.service import IngestService
from cloud_ingest.storage import open_storage
from edge_agent.agent import Agent
from edge_agent.config import AgentConfig, parse_config
from edge_agent.simulators import SIMULATORS, SimSettings, sim_identity
from edge_agent.sources import BoundDevice
from gateway.wire import Subject, observation_id
from remon.brokers import MosquittoProcess
from tests.helpers import envelope, glucose

pytestmark = pytest.mark.mosquitto


def wait_until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def agent_toml(tmp: Path, broker_url: str, *, site: str = "home-0001", devices: str) -> str:
    return f"""
[agent]
site = "{site}"
data_dir = "{tmp / "agent"}"
outbox_synchronous = "FULL"

[mqtt]
url = "{broker_url}"

{devices}
"""


def device_block(
    dev_id: str,
    kind: str,
    *,
    subject: str,
    profile: str = "normal",
    interval: float,
    max_records: int,
    start: datetime | None = None,
    seed: int = 0,
) -> str:
    s = f'start = "{start.isoformat()}"\n' if start else ""
    return f"""[[devices]]
id = "{dev_id}"
kind = "{kind}"
subject = "{subject}"
profile = "{profile}"
interval_s = {interval}
max_records = {max_records}
seed = {seed}
{s}"""


def expected_obs_ids(cfg: AgentConfig) -> set[str]:
    """Every reading the configured simulated devices hold, by content-derived id."""
    ids: set[str] = set()
    for d in cfg.devices:
        serial = d.serial or f"{cfg.agent.site}-{d.id}"
        ident = sim_identity(d.kind, serial)
        bound = BoundDevice(
            device_id=d.id, identity=ident, subject=Subject(kind="patient", ref=d.subject)
        )
        assert d.max_records is not None
        assert d.start is not None
        sim = SIMULATORS[d.kind](
            bound,
            SimSettings(start=d.start, seed=d.seed, profile=d.profile, interval_s=d.interval_s),
        )
        for n in range(1, d.max_records + 1):
            ids.update(observation_id(ident, o.record_key, o.measure) for o in sim.record(n))
    return ids


def _rows(url: str, sql: str) -> list[sa.Row[Any]]:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as c:
            return list(c.execute(sa.text(sql)))
    finally:
        engine.dispose()


def stored_obs_ids(url: str) -> list[str]:
    return [r[0] for r in _rows(url, "SELECT obs_id FROM observations")]


def orphan_readings(url: str) -> int:
    """Readings whose message row is missing (no foreign key holds this on PostgreSQL)."""
    sql = (
        "SELECT count(*) FROM observations o WHERE NOT EXISTS "
        "(SELECT 1 FROM messages m WHERE m.msg_id = o.msg_id)"
    )
    return int(_rows(url, sql)[0][0])


class RunningAgent:
    """The production Agent on its own thread and event loop."""

    def __init__(self, cfg: AgentConfig) -> None:
        self.agent = Agent(cfg)
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self.agent.run(self._stop))
        finally:
            self._loop.close()

    def __enter__(self) -> RunningAgent:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(20)


@pytest.fixture
def ingest(db_url: str, mosquitto: MosquittoProcess) -> Iterator[tuple[IngestService, str]]:
    storage = open_storage(db_url)
    service = IngestService(storage)
    consumer = Consumer(
        # a client id never used before on the shared broker: a reused one would inherit the
        # persistent session (and queued messages) of an earlier test's consumer
        service,
        ConsumerConfig(
            url=mosquitto.url,
            client_id=f"it-{os.getpid()}-{uuid.uuid4().hex[:12]}",
            # no time-driven rules: the shared broker holds other tests' retained agent
            # statuses, whose site-offline alerts would mix in (tests/test_queue_e2e.py runs
            # them on a broker of its own)
            housekeeping_s=None,
        ),
    )
    consumer.start()
    yield service, db_url
    consumer.stop()
    storage.close()


def test_agent_to_alert_end_to_end(
    ingest: tuple[IngestService, str], mosquitto: MosquittoProcess, tmp_path: Path
) -> None:
    service, url = ingest
    start = datetime.now(UTC) - timedelta(hours=2)
    devices = "\n".join(
        [
            device_block(
                "gm1",
                "sim.glucose-meter",
                subject="p-hypo",
                profile="hypo-prone",
                interval=60,
                max_records=120,
                start=start,
            ),
            device_block(
                "bp1",
                "sim.bp-monitor",
                subject="p-hypo",
                profile="hypertensive",
                interval=60,
                max_records=120,
                start=start,
            ),
        ]
    )
    cfg = parse_config(agent_toml(tmp_path, mosquitto.url, devices=devices))
    want = expected_obs_ids(cfg)
    with RunningAgent(cfg):
        wait_until(lambda: service.stats().observations >= len(want), 30, "all readings stored")
    assert sorted(stored_obs_ids(url)) == sorted(want)
    alerts = service.list_alerts(subject="p-hypo", limit=50)
    conditions = {a.condition for a in alerts}
    assert any("glucose" in c for c in conditions), conditions
    assert any("bp" in c or "sbp" in c for c in conditions), conditions
    # one open alert per patient+condition, however many readings crossed the threshold
    assert len(conditions) == len(alerts)
    assert any(a.trigger_count > 1 for a in alerts)


def test_agent_sigkilled_mid_stream_loses_and_duplicates_nothing(
    ingest: tuple[IngestService, str],
    mosquitto: MosquittoProcess,
    tmp_path: Path,
) -> None:
    service, url = ingest
    # 1500 glucose records produced live at 300/s: the agent is killed twice while reading
    start = datetime.now(UTC) + timedelta(seconds=1)
    devices = device_block(
        "gm1", "sim.glucose-meter", subject="p-1", interval=0.004, max_records=1500, start=start
    )
    text = agent_toml(tmp_path, mosquitto.url, devices=devices)
    conf = tmp_path / "agent.toml"
    conf.write_text(text)
    want = expected_obs_ids(parse_config(text))
    cmd = [sys.executable, "-m", "remon.cli", "agent", "run", "--config", str(conf)]
    logfile = tmp_path / "agent.log"
    for delay in (2.0, 1.5):
        with logfile.open("ab") as log:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
            time.sleep(delay)
            assert proc.poll() is None, logfile.read_text()
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
    assert service.stats().observations < len(want), "the kills happened mid-stream"
    with logfile.open("ab") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
    try:
        wait_until(lambda: service.stats().observations >= len(want), 60, "all readings stored")
        time.sleep(0.5)  # anything extra would show up now
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    got = stored_obs_ids(url)
    assert len(got) == len(set(got)) == len(want)
    assert set(got) == want


def test_broker_restart_mid_stream_loses_nothing(
    db_url: str, fresh_mosquitto: MosquittoProcess, tmp_path: Path
) -> None:
    storage = open_storage(db_url)
    service = IngestService(storage)
    consumer = Consumer(service, ConsumerConfig(url=fresh_mosquitto.url, client_id="it-restart"))
    consumer.start()
    try:
        start = datetime.now(UTC)
        devices = device_block(
            "gm1", "sim.glucose-meter", subject="p-1", interval=0.01, max_records=800, start=start
        )
        cfg = parse_config(agent_toml(tmp_path, fresh_mosquitto.url, devices=devices))
        want = expected_obs_ids(cfg)
        with RunningAgent(cfg):
            wait_until(lambda: service.stats().observations > 100, 20, "the stream to start")
            fresh_mosquitto.restart()
            wait_until(lambda: service.stats().observations >= len(want), 60, "all readings stored")
        assert sorted(stored_obs_ids(db_url)) == sorted(want)
    finally:
        consumer.stop()
        storage.close()


def _publish(url_port: int, items: list[tuple[str, bytes]]) -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", url_port)
    c.loop_start()
    try:
        for topic, payload in items:
            info = c.publish(topic, payload, qos=1)
            info.wait_for_publish(5)
            assert info.is_published(), f"the broker did not acknowledge a publish on {topic}"
    finally:
        c.disconnect()
        c.loop_stop()


def test_same_message_twice_is_stored_once(
    ingest: tuple[IngestService, str], mosquitto: MosquittoProcess
) -> None:
    service, url = ingest
    msg = envelope([glucose(1, 5.0), glucose(2, 5.2)], site="dup-site")
    _publish(mosquitto.port, [(msg.topic, msg.payload), (msg.topic, msg.payload)])
    # and the same reading again inside a different envelope
    other = envelope([glucose(2, 5.2), glucose(3, 5.4)], site="dup-site")
    _publish(mosquitto.port, [(other.topic, other.payload)])
    wait_until(lambda: service.stats().observations >= 3, 10, "3 readings")
    time.sleep(0.3)
    assert service.stats().observations == 3
    assert service.stats().messages == 2
    assert len(stored_obs_ids(url)) == 3


def test_malformed_payloads_are_dead_lettered_and_the_stream_flows(
    ingest: tuple[IngestService, str],
    mosquitto: MosquittoProcess,
) -> None:
    service, _ = ingest
    good = [envelope([glucose(n, 6.0)], site="dl-site") for n in range(1, 6)]
    bad = [
        (good[0].topic, b"\x00\xffgarbage"),
        (good[0].topic, b'{"schema": "remon.obs/0"}'),
        (good[0].topic, good[1].payload.replace(b'"value":6.0', b'"value":"6.0"')),
        ("remon/v1/dl-site/other/obs", good[2].payload),
    ]
    items: list[tuple[str, bytes]] = []
    for g, b in zip(good, [*bad, None], strict=True):
        items.append((g.topic, g.payload))
        if b is not None:
            items.append(b)
    _publish(mosquitto.port, items)
    wait_until(
        lambda: service.stats().dead_letters >= 4 and service.stats().observations >= 5,
        10,
        "4 dead letters and 5 readings",
    )
    letters = service.list_dead_letters(limit=10)
    codes = sorted(d.code for d in letters)
    assert codes == sorted(["not-utf8", "unknown-schema", "wrong-type", "topic-mismatch"])
    for d in letters:
        assert d.detail  # the reason is kept ...
        assert d.payload  # ... with the payload, for inspection


def test_ingest_sigkilled_mid_stream_loses_and_duplicates_nothing(
    db_url: str, fresh_mosquitto: MosquittoProcess, tmp_path: Path
) -> None:
    """The broker keeps what the killed ingest had not acknowledged; the restarted one takes it."""
    n = 3000
    msgs = [envelope([glucose(i, 5.0 + (i % 40) / 10)], site="kill-site") for i in range(1, n + 1)]
    cmd = [
        sys.executable,
        "-m",
        "remon.cli",
        "ingest",
        "run",
        "--no-api",
        "--database",
        db_url,
        "--broker",
        fresh_mosquitto.url,
    ]
    env = {**os.environ, "REMON_CLIENT_ID": "it-ingest-kill", "REMON_BATCH_MAX": "50"}
    logfile = tmp_path / "ingest.log"

    def start() -> subprocess.Popen[bytes]:
        with logfile.open("ab") as log:
            return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)

    def stored() -> int:
        return len(stored_obs_ids(db_url))

    proc = start()
    try:
        # connected implies migrated: the schema exists before the consumer starts
        wait_until(lambda: "ingest consumer connected" in logfile.read_text(), 20, "ingest up")
        publisher = threading.Thread(
            target=_publish, args=(fresh_mosquitto.port, [(m.topic, m.payload) for m in msgs])
        )
        publisher.start()
        wait_until(lambda: stored() > 300, 30, "ingest to store some")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        partial = stored()
        assert partial < n, "the kill happened mid-stream"
        proc = start()
        publisher.join(60)
        wait_until(lambda: stored() >= n, 60, "every reading stored")
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    got = stored_obs_ids(db_url)
    assert len(got) == len(set(got)) == n
    assert orphan_readings(db_url) == 0


def test_two_shared_subscription_workers_store_every_reading_once(
    pg_url: str, fresh_mosquitto: MosquittoProcess, tmp_path: Path
) -> None:
    """Scale-out as documented: `remon ingest run --workers 2`, one broker, one database."""
    n = 2000
    msgs = [
        envelope([glucose(i, 2.5 + (i % 50) / 10)], site="shared-site") for i in range(1, n + 1)
    ]
    logfile = tmp_path / "ingest.log"
    with logfile.open("wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "remon.cli",
                "ingest",
                "run",
                "--no-api",
                "--workers",
                "2",
                "--client-id",
                "it-worker",
                "--database",
                pg_url,
                "--broker",
                fresh_mosquitto.url,
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        wait_until(
            lambda: logfile.read_text().count("ingest consumer connected") >= 2,
            30,
            "both workers up",
        )
        time.sleep(0.5)  # both shared subscriptions granted
        _publish(fresh_mosquitto.port, [(m.topic, m.payload) for m in msgs])
        wait_until(lambda: len(stored_obs_ids(pg_url)) >= n, 60, "every reading stored")
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    got = stored_obs_ids(pg_url)
    assert len(got) == len(set(got)) == n
    # the alert dedupe held across workers: one open alert per patient and condition however
    # the readings were split
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as c:
            dup = c.execute(
                sa.text(
                    "SELECT subject_ref, condition, count(*) FROM alerts "
                    "WHERE state IN ('open', 'acknowledged') GROUP BY 1, 2 HAVING count(*) > 1"
                )
            ).all()
            received = c.execute(sa.text("SELECT count(DISTINCT msg_id) FROM messages")).scalar()
            fks = c.execute(
                sa.text(
                    "SELECT count(*) FROM pg_constraint "
                    "WHERE conrelid = 'observations'::regclass AND contype = 'f'"
                )
            ).scalar()
    finally:
        engine.dispose()
    assert dup == []
    assert received == n
    assert orphan_readings(pg_url) == 0
    assert fks == 0  # migration 0008
    text = logfile.read_text()
    assert "Traceback" not in text
    shares = [int(x) for x in re.findall(r"ingest consumer stopped: received=(\d+)", text)]
    assert len(shares) == 2, text  # both workers stopped cleanly with the parent
    assert all(s > 0 for s in shares), shares  # both took a share
    assert sum(shares) >= n
