"""The relay against real brokers: Mosquitto (MQTT 5) and the embedded amqtt (3.1.1 only)."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.outbox import Outbox
from gateway.relay import Relay, RelayConfig, RelayError, RelayErrorKind
from gateway.wire import OutboundMessage, status_topic
from remon.brokers import EmbeddedBroker, MosquittoProcess, free_port, wait_for_port

pytestmark = pytest.mark.mosquitto
REPO = Path(__file__).resolve().parents[1]
SITE = "hub-1"


def msg(i: int, *, device: str = "d1", site: str = SITE) -> OutboundMessage:
    mid = f"{i:032x}"
    return OutboundMessage(
        topic=f"remon/v1/{site}/{device}/obs", payload=mid.encode() + b"x" * 200, msg_id=mid
    )


# How long a test waits for what normally takes well under a second. A deadline only (a test
# returns as soon as the condition holds), never a timing claim: a loaded CI machine once
# needed more than 8 s to drain 3000 records that take 0.7 s here.
DEADLINE_S = 30.0


def wait_until(pred: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


class Collector:
    """A paho subscriber that records what arrives (payload prefix = msg_id)."""

    def __init__(
        self,
        port: int,
        topic: str,
        *,
        client_id: str = "collector",
        v5: bool = False,
        persistent: bool = False,
    ) -> None:
        self.ids: set[str] = set()
        self.count = 0
        self.messages: list[mqtt.MQTTMessage] = []
        self.subscribed = threading.Event()
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else not persistent,
        )
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0, 1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.subscribed.wait(5)

    def _on_message(self, client: mqtt.Client, userdata: object, m: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.count += 1
            self.ids.add(m.payload[:32].decode(errors="replace"))
            self.messages.append(m)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.client.reinitialise()  # closes paho's sockets now, not at GC


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    with Outbox(tmp_path / "outbox.db", synchronous="NORMAL") as ob:
        yield ob


def config(url: str, **kw: object) -> RelayConfig:
    base: dict[str, object] = {
        "url": url,
        "client_id": f"relay-{os.getpid()}-{time.monotonic_ns()}",
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 0.5,
    }
    base.update(kw)
    return RelayConfig(**base)  # type: ignore[arg-type]


@pytest.fixture
def relays() -> Iterator[list[Relay]]:
    started: list[Relay] = []
    yield started
    for r in started:
        r.stop(timeout=5)


def start_relay(relays: list[Relay], outbox: Outbox, cfg: RelayConfig, site: str = SITE) -> Relay:
    relay = Relay(outbox, cfg, site=site, agent_version="0.1.0")
    relays.append(relay)
    relay.start()
    return relay


def test_config_errors_are_relay_errors() -> None:
    with pytest.raises(RelayError) as info:
        RelayConfig(url="http://x", client_id="a")
    assert info.value.kind is RelayErrorKind.CONFIG
    with pytest.raises(RelayError, match="window"):
        RelayConfig(url="mqtt://x", client_id="a", window=70_000)


def test_drains_every_message(
    mosquitto: MosquittoProcess, outbox: Outbox, relays: list[Relay]
) -> None:
    n = 3000
    sub = Collector(mosquitto.port, "remon/v1/hub-1/+/obs", client_id="c-drain")
    try:
        for start in range(0, n, 500):
            outbox.put_many([msg(i) for i in range(start, start + 500)])
        relay = start_relay(relays, outbox, config(mosquitto.url, window=200))
        relay.wake()
        assert relay.wait_drained(DEADLINE_S), (relay.stats, outbox.pending())
        assert wait_until(lambda: len(sub.ids) == n, DEADLINE_S), len(sub.ids)
        assert sub.ids == {f"{i:032x}" for i in range(n)}
        stats = relay.stats
        assert stats.connected
        assert stats.protocol == "5"
        assert stats.acked == n
        assert stats.rejected == 0
        assert stats.in_flight == 0
        # records queued later go out on wake()
        outbox.put_many([msg(n)])
        relay.wake()
        assert wait_until(lambda: f"{n:032x}" in sub.ids, DEADLINE_S)
    finally:
        sub.close()


def test_drains_through_a_broker_with_a_small_receive_maximum(
    tmp_path: Path, outbox: Outbox, relays: list[Relay]
) -> None:
    """Mosquitto's default (max_inflight_messages 20 → MQTT 5 Receive Maximum 20).

    The relay once called paho's max_inflight_messages_set on the established connection, which
    paho refuses: the network thread died and nothing was sent to such a broker.
    """
    with MosquittoProcess(tmp_path / "small", max_inflight=20) as broker:
        sub = Collector(broker.port, "remon/v1/hub-1/+/obs", client_id="c-small")
        try:
            outbox.put_many([msg(i) for i in range(500)])
            relay = start_relay(relays, outbox, config(broker.url, window=200))
            relay.wake()
            assert relay.wait_drained(DEADLINE_S), (relay.stats, outbox.pending())
            assert wait_until(lambda: len(sub.ids) == 500, DEADLINE_S), len(sub.ids)
            assert relay.stats.acked == 500
        finally:
            sub.close()


def test_nothing_deleted_without_puback_and_restart_resends(
    fresh_mosquitto: MosquittoProcess, tmp_path: Path, relays: list[Relay]
) -> None:
    path = tmp_path / "outbox.db"
    fresh_mosquitto.stop()
    with Outbox(path) as ob:
        ob.put_many([msg(i) for i in range(200)])
        relay = start_relay(relays, ob, config(fresh_mosquitto.url))
        time.sleep(1.0)
        s = relay.stats
        assert not s.connected
        assert s.published == 0
        assert s.acked == 0
        assert s.last_error is not None
        assert s.last_error.kind is RelayErrorKind.CONNECT_FAILED
        relay.stop(timeout=3)
        assert ob.pending() == 200
    # a new process (new relay, reopened outbox) sends everything once the broker is back
    fresh_mosquitto.start()
    sub = Collector(fresh_mosquitto.port, "remon/v1/+/+/obs", client_id="c-restart")
    try:
        with Outbox(path) as ob:
            relay = start_relay(relays, ob, config(fresh_mosquitto.url))
            assert relay.wait_drained(DEADLINE_S), (relay.stats, outbox.pending())
            relay.stop()
        assert wait_until(lambda: len(sub.ids) == 200, DEADLINE_S)
    finally:
        sub.close()


def test_broker_restart_mid_drain_loses_nothing(
    fresh_mosquitto: MosquittoProcess, outbox: Outbox, relays: list[Relay]
) -> None:
    n = 6000
    sub = Collector(fresh_mosquitto.port, "remon/v1/+/+/obs", client_id="c-mid", persistent=True)
    try:
        outbox.put_many([msg(i) for i in range(n)])
        relay = start_relay(relays, outbox, config(fresh_mosquitto.url))
        assert wait_until(lambda: relay.stats.acked >= 1000, DEADLINE_S), relay.stats
        fresh_mosquitto.restart()
        assert relay.wait_drained(DEADLINE_S), (relay.stats, outbox.pending())
        assert relay.stats.reconnects >= 1
        assert wait_until(lambda: len(sub.ids) == n, DEADLINE_S), n - len(sub.ids)
    finally:
        sub.close()


# amqtt's broker leaves the asyncio transports of the refused v5 connections unclosed (its
# ResourceWarnings surface as unraisable-exception warnings); the relay's own sockets are covered
# by every Mosquitto test, which run with warnings as errors.
AMQTT_LEAKS = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture
def amqtt_garbage() -> Iterator[None]:
    """Requested first, torn down last: amqtt's leaked transports are collected inside this test."""
    yield
    gc.collect()


@AMQTT_LEAKS
def test_falls_back_to_mqtt_311_on_amqtt(
    amqtt_garbage: None, outbox: Outbox, relays: list[Relay]
) -> None:
    with EmbeddedBroker() as broker:
        sub = Collector(broker.port, "remon/v1/+/+/obs", client_id="c-amqtt")
        try:
            outbox.put_many([msg(i) for i in range(300)])
            relay = start_relay(relays, outbox, config(broker.url, connack_timeout_s=1.5))
            assert relay.wait_drained(DEADLINE_S), (relay.stats, outbox.pending())
            assert relay.stats.protocol == "3.1.1"
            assert wait_until(lambda: len(sub.ids) == 300, DEADLINE_S)
            relay.stop(timeout=3)
        finally:
            sub.close()


@AMQTT_LEAKS
def test_explicit_mqtt5_does_not_fall_back(
    amqtt_garbage: None, outbox: Outbox, relays: list[Relay]
) -> None:
    with EmbeddedBroker() as broker:
        outbox.put_many([msg(1)])
        relay = start_relay(relays, outbox, config(broker.url, protocol="5", connack_timeout_s=0.5))
        time.sleep(1.5)
        assert relay.stats.protocol is None
        assert not relay.stats.connected
        assert outbox.pending() == 1
        relay.stop(timeout=3)


RELAY_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from gateway.outbox import Outbox
    from gateway.relay import Relay, RelayConfig
    ob = Outbox(Path(sys.argv[2]))
    relay = Relay(ob, RelayConfig(url=sys.argv[1], client_id="relay-child", keepalive_s=5),
                  site=sys.argv[3], agent_version="9.9")
    relay.start()
    while not relay.stats.connected:
        time.sleep(0.01)
    print("connected", flush=True)
    time.sleep(60)
    """
)


def _status(m: mqtt.MQTTMessage) -> dict[str, object]:
    doc: dict[str, object] = json.loads(m.payload)
    return doc


def test_status_online_then_offline_by_last_will(
    mosquitto: MosquittoProcess, tmp_path: Path
) -> None:
    site = "kill-site"
    topic = status_topic(site)
    proc = subprocess.Popen(
        [sys.executable, "-c", RELAY_CHILD, mosquitto.url, str(tmp_path / "o.db"), site],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"connected"
        sub = Collector(mosquitto.port, topic, client_id="c-status")
        try:
            assert wait_until(lambda: bool(sub.messages), DEADLINE_S)
            first = sub.messages[0]
            assert first.retain
            assert _status(first)["state"] == "online"
            assert _status(first)["agent_version"] == "9.9"
            proc.send_signal(signal.SIGKILL)
            proc.wait(5)
            # (the relay may have sent its periodic online status, with the outbox's depth)
            assert wait_until(lambda: _status(sub.messages[-1])["state"] == "offline", DEADLINE_S)
        finally:
            sub.close()
        # the will was retained: a newcomer sees "offline"
        late = Collector(mosquitto.port, topic, client_id="c-status-late")
        try:
            assert wait_until(lambda: bool(late.messages), DEADLINE_S)
            assert late.messages[0].retain
            assert _status(late.messages[0])["state"] == "offline"
        finally:
            late.close()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=5)


def test_the_periodic_status_reports_the_outbox_depth(
    mosquitto: MosquittoProcess, outbox: Outbox, relays: list[Relay]
) -> None:
    """Records queued before the relay starts are drained; the retained online status, sent
    every 0.2 s here, carries the outbox's depth, and says 0 once it is drained."""
    site = "depth-site"
    outbox.put_many([msg(i) for i in range(25)])
    sub = Collector(mosquitto.port, status_topic(site), client_id="c-depth")
    try:
        start_relay(relays, outbox, config(mosquitto.url, status_every_s=0.2), site=site)
        assert wait_until(lambda: outbox.pending() == 0, DEADLINE_S)
        depths: list[object] = []

        def drained_reported() -> bool:
            depths[:] = [_status(m).get("outbox_pending") for m in list(sub.messages)]
            return 0 in depths

        assert wait_until(drained_reported, DEADLINE_S), depths
        reported = [d for d in depths if d is not None]
        assert all(isinstance(d, int) and 0 <= d <= 25 for d in reported), reported
        assert all(_status(m)["state"] == "online" for m in sub.messages)
    finally:
        sub.close()


def test_clean_stop_publishes_offline(
    mosquitto: MosquittoProcess, outbox: Outbox, relays: list[Relay]
) -> None:
    site = "stop-site"
    relay = start_relay(relays, outbox, config(mosquitto.url), site=site)
    assert wait_until(lambda: relay.stats.connected, DEADLINE_S)
    relay.stop()
    late = Collector(mosquitto.port, status_topic(site), client_id="c-stop")
    try:
        assert wait_until(lambda: bool(late.messages), DEADLINE_S)
        doc = _status(late.messages[0])
        assert doc["state"] == "offline"
        assert "at" in doc
    finally:
        late.close()


@pytest.fixture
def acl_mosquitto(tmp_path: Path) -> Iterator[tuple[int, Path, subprocess.Popen[bytes]]]:
    """A Mosquitto whose ACL lets anonymous clients publish to d-ok but not to d-denied."""
    binary = MosquittoProcess(tmp_path / "unused").binary
    port = free_port()
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite remon/v1/+/d-ok/#\ntopic readwrite remon/v1/+/_agent/#\n")
    conf = tmp_path / "acl.conf"
    lines = [
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
        f"acl_file {acl}",
        "max_inflight_messages 0",
        "log_dest none",
    ]
    if os.geteuid() == 0:
        lines.append("user root")
    conf.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)
    try:
        wait_for_port("127.0.0.1", port)
        yield port, acl, proc
    finally:
        proc.terminate()
        proc.wait(10)


def test_puback_failure_keeps_the_record(
    acl_mosquitto: tuple[int, Path, subprocess.Popen[bytes]],
    outbox: Outbox,
    relays: list[Relay],
) -> None:
    port, acl, broker = acl_mosquitto
    outbox.put_many([msg(i, device="d-denied") for i in range(5)])
    outbox.put_many([msg(i, device="d-ok") for i in range(5, 10)])
    relay = start_relay(
        relays,
        outbox,
        config(f"mqtt://127.0.0.1:{port}", reject_retry_min_s=0.3, reject_retry_max_s=0.6),
    )
    assert wait_until(lambda: relay.stats.acked == 5 and relay.stats.rejected >= 5, DEADLINE_S)
    assert wait_until(lambda: outbox.pending() == 5, DEADLINE_S)
    assert {r.msg_id for r in outbox.lease(10)} == {f"{i:032x}" for i in range(5)}
    err = relay.stats.last_error
    assert err is not None
    assert err.kind is RelayErrorKind.PUBLISH_REJECTED
    assert err.reason_code == 0x87
    # retried with backoff, still kept
    assert wait_until(lambda: relay.stats.rejected >= 10, DEADLINE_S)
    assert outbox.pending() == 5
    assert not relay.wait_drained(0.1)
    # the operator fixes the ACL; the next retry delivers
    acl.write_text("topic readwrite remon/v1/#\n")
    broker.send_signal(signal.SIGHUP)
    assert relay.wait_drained(DEADLINE_S), (relay.stats, outbox.pending())
