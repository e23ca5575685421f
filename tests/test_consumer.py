"""The ingest consumer against a real Mosquitto: poison messages never stall the stream."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Literal

import pytest

from cloud_ingest.consumer import ISOLATE_AFTER_FAILURES, Consumer, ConsumerConfig
from cloud_ingest.mqtt_link import serve
from cloud_ingest.service import IngestResult, IngestService, RawMessage
from cloud_ingest.storage import open_storage
from remon.brokers import MosquittoProcess
from tests.helpers import envelope, glucose
from tests.test_end_to_end import _publish, wait_until


class RefusesOnePayload(IngestService):
    """The production service, except that the database 'refuses' one particular message.

    Stands in for a value the decoder accepts but a database rejects (the review found NUL
    characters doing this on PostgreSQL before the decoder learned to refuse them).
    """

    bad: bytes = b""

    def ingest_batch(self, batch: Sequence[RawMessage]) -> IngestResult:
        if any(m.payload == self.bad for m in batch):
            raise RuntimeError("simulated: the database refused a value")
        return super().ingest_batch(batch)


def test_a_message_the_database_refuses_is_dead_lettered_and_the_rest_flow(
    sqlite_url: str, fresh_mosquitto: MosquittoProcess
) -> None:
    storage = open_storage(sqlite_url)
    service = RefusesOnePayload(storage)
    good = [envelope([glucose(n, 6.0)], site="poison") for n in range(1, 21)]
    bad = envelope([glucose(99, 6.0)], site="poison")
    service.bad = bad.payload
    consumer = Consumer(
        service,
        ConsumerConfig(
            url=fresh_mosquitto.url, client_id="it-poison", batch_max=50, batch_wait_s=0.2
        ),
    )
    consumer.start()
    try:
        items = [(m.topic, m.payload) for m in good[:10]]
        items += [(bad.topic, bad.payload)]
        items += [(m.topic, m.payload) for m in good[10:]]
        _publish(fresh_mosquitto.port, items)
        wait_until(lambda: service.stats().observations >= 20, 30, "the good readings")
        wait_until(lambda: service.stats().dead_letters >= 1, 10, "the dead letter")
        time.sleep(0.3)
        assert service.stats().observations == 20
        letters = service.list_dead_letters(limit=5)
        assert [d.code for d in letters] == ["store-failed"]
        assert letters[0].payload == bad.payload
        assert "refused" in letters[0].detail
        assert consumer.stats.ingest_failures >= ISOLATE_AFTER_FAILURES
    finally:
        consumer.stop()
        storage.close()


@pytest.mark.parametrize("link", ["process", "thread"])
def test_start_returns_only_once_the_subscription_is_granted(
    sqlite_url: str, fresh_mosquitto: MosquittoProcess, link: Literal["process", "thread"]
) -> None:
    """A message published the moment ``start()`` returns reaches a brand-new session.

    Before the fix, ``start()`` returned on CONNACK; a publish racing the SUBSCRIBE was lost for
    a new session (CI saw exactly one message missing).
    """
    storage = open_storage(sqlite_url)
    service = IngestService(storage)
    try:
        for n in range(1, 11):
            consumer = Consumer(
                service,
                ConsumerConfig(url=fresh_mosquitto.url, client_id=f"it-ready-{n}", link=link),
            )
            consumer.start()
            try:
                assert consumer.stats.connected
                msg = envelope([glucose(n, 6.0)], site="ready")
                _publish(fresh_mosquitto.port, [(msg.topic, msg.payload)])
                wait_until(lambda n=n: service.stats().observations >= n, 10, f"reading {n}")
            finally:
                consumer.stop()
    finally:
        storage.close()


def _link_children(pid: int) -> list[int]:
    """The MQTT link processes started by process ``pid``."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        if ppid == pid and b"cloud_ingest.mqtt_link" in cmd:
            out.append(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    """Running, not a zombie (a container's init may never reap an orphan)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_killed_link_process_is_started_again_and_nothing_is_lost(
    sqlite_url: str, fresh_mosquitto: MosquittoProcess
) -> None:
    """The MQTT link process dies mid-stream: the broker redelivers what it had not acked to
    the new link, and ingest stores every reading exactly once."""
    storage = open_storage(sqlite_url)
    service = IngestService(storage)
    n = 1500
    msgs = [envelope([glucose(i, 6.0)], site="link-kill") for i in range(1, n + 1)]
    consumer = Consumer(
        service,
        ConsumerConfig(url=fresh_mosquitto.url, client_id="it-link-kill", batch_max=50),
    )
    consumer.start()
    try:
        links = _link_children(os.getpid())
        assert len(links) == 1
        publisher = threading.Thread(
            target=_publish, args=(fresh_mosquitto.port, [(m.topic, m.payload) for m in msgs])
        )
        publisher.start()
        wait_until(lambda: service.stats().observations > 200, 30, "some readings stored")
        os.kill(links[0], signal.SIGKILL)
        assert service.stats().observations < n, "the kill happened mid-stream"
        publisher.join(60)
        wait_until(lambda: consumer.stats.link_restarts == 1, 10, "the link started again")
        wait_until(lambda: service.stats().observations >= n, 60, "every reading")
        time.sleep(0.3)
        assert service.stats().observations == n
        assert consumer.stats.connected
        new_links = _link_children(os.getpid())
        assert len(new_links) == 1
        assert new_links != links
    finally:
        consumer.stop()
        storage.close()
    assert not any(_alive(pid) for pid in _link_children(os.getpid())), "stop ends the link"


def _ingest_process(
    db_url: str, broker_url: str, client_id: str, logfile: Path
) -> subprocess.Popen[bytes]:
    """`remon ingest run --no-api` in a session of its own, up and subscribed."""
    cmd = [sys.executable, "-m", "remon.cli", "ingest", "run", "--no-api"]
    cmd += ["--database", db_url, "--broker", broker_url, "--client-id", client_id]
    with logfile.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    try:
        wait_until(lambda: "ingest consumer connected" in logfile.read_text(), 30, "ingest up")
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


def test_the_link_process_leaves_when_its_ingest_is_killed(
    sqlite_url: str, fresh_mosquitto: MosquittoProcess, tmp_path: Path
) -> None:
    """No orphaned MQTT session: a SIGKILLed ingest's link process disconnects and exits."""
    logfile = tmp_path / "ingest.log"
    proc = _ingest_process(sqlite_url, fresh_mosquitto.url, "it-orphan", logfile)
    try:
        links = _link_children(proc.pid)
        assert len(links) == 1
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        wait_until(lambda: not _alive(links[0]), 10, "the link process to leave")
        assert "the ingest process went away" in logfile.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigterm_to_the_whole_process_group_stops_the_ingest_cleanly(
    sqlite_url: str, fresh_mosquitto: MosquittoProcess, tmp_path: Path
) -> None:
    """A service manager signals every process of the group: the link waits for its ingest to
    end it instead of dying first (and being started again by an ingest that is stopping)."""
    logfile = tmp_path / "ingest.log"
    proc = _ingest_process(sqlite_url, fresh_mosquitto.url, "it-group-term", logfile)
    try:
        links = _link_children(proc.pid)
        assert len(links) == 1
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(20) == 0
        wait_until(lambda: not _alive(links[0]), 10, "the link process to leave")
        text = logfile.read_text()
        assert "ingest consumer stopped" in text
        assert "starting it again" not in text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_link_process_refuses_a_first_message_that_is_not_its_settings() -> None:
    ours, theirs = socket.socketpair()
    a, b = Connection(ours.detach()), Connection(theirs.detach())
    try:
        a.send(("a", [(1, 1, 1)]))
        assert serve(b) == 2
    finally:
        a.close()
        b.close()
    ours, theirs = socket.socketpair()
    a, b = Connection(ours.detach()), Connection(theirs.detach())
    a.close()  # the ingest went away before it said anything
    try:
        assert serve(b) == 1
    finally:
        b.close()
    usage = subprocess.run(
        [sys.executable, "-m", "cloud_ingest.mqtt_link"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert usage.returncode == 2
    assert "usage" in usage.stderr
