"""The ingest's MQTT link: the cloud side's only importer of paho-mqtt.

:class:`MqttLink` holds one paho client on a *persistent* session with *manual acks*: it
connects (MQTT 5, or 3.1.1 for a broker that refuses or never answers 5), subscribes once the
broker has answered, hands every message to a callback and acks a message only when told to,
after the ingest has committed it. Acks carry the connection ``generation`` a message arrived
on: an ack for an earlier connection is void (the broker redelivers that message on the new
session and ingest dedupes it).

The link runs either inside the ingest process or, by default, in a process of its own
(:func:`serve`, started by :class:`cloud_ingest.consumer.Consumer`): paho's network loop costs
about as much per message as the whole ingest, and in one process both share one interpreter
lock. That process imports paho and the standard library only (an import contract keeps it so),
so it starts in a fraction of a second; it talks to the ingest over a socket pair with pickled
tuples (our own two processes, nothing else can reach the socket):

- link → ingest: ``("m", [(topic, payload, mid, qos, generation, received_ts), ...])``
  (messages, a chunk at a time) and ``("s", connected, protocol)`` (state changes);
- ingest → link: ``("c", {LinkSettings fields})`` once, then
  ``("a", [(mid, qos, generation), ...])`` (acks after commit) and ``("x",)`` (disconnect and
  exit). When the ingest process goes away
  the socket closes and the link disconnects and exits without acking anything more.
"""

from __future__ import annotations

import gc
import logging
import signal
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Final
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

log = logging.getLogger("remon.ingest.mqtt")

#: How many unacknowledged QoS 1 messages the broker may have in flight to us (MQTT 5).
RECEIVE_MAXIMUM: Final = 4000
#: In "auto" mode, a broker that has not answered an MQTT 5 CONNECT by then gets MQTT 3.1.1
#: (amqtt, for one, never answers a v5 CONNECT that carries properties).
V5_ANSWER_TIMEOUT_S: Final = 5.0
#: Broker keeps our session (subscriptions + queued messages) this long while we are away.
SESSION_EXPIRY_S: Final = 7 * 24 * 3600
SHARE_GROUP: Final = "remon-ingest"
#: The link process sends messages on in chunks of at most this many ...
CHUNK_MAX: Final = 250
#: ... and holds a message at most this long to fill a chunk.
CHUNK_WAIT_S: Final = 0.002

#: One received message: topic, payload, packet id, QoS, connection generation, receive time
#: (seconds since the epoch).
Inbound = tuple[str, bytes, int, int, int, float]
#: One ack: packet id, QoS, connection generation.
Ack = tuple[int, int, int]


@dataclass(frozen=True, kw_only=True)
class LinkSettings:
    url: str
    client_id: str
    protocol: str = "auto"  # "auto" | "5" | "3.1.1"
    shared: bool = False
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    #: topic filters subscribed at QoS 1; ``shared`` puts the first ``shared_count`` of them in
    #: the share group (MQTT 5), the others (e.g. retained statuses) every worker reads
    topics: tuple[str, ...] = ()
    shared_count: int = 0
    log_level: int = logging.INFO
    #: the first connection's generation is one above this (a restarted link process gets a
    #: higher base, so acks meant for its predecessor can never match its messages)
    generation_base: int = 0


def parse_broker_url(url: str) -> tuple[str, int, bool]:
    """``mqtt://host:port`` or ``mqtts://host:port`` → (host, port, tls)."""
    u = urlparse(url)
    if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
        raise ValueError(f"broker URL must be mqtt://host:port or mqtts://host:port, got {url!r}")
    return u.hostname, u.port or (8883 if u.scheme == "mqtts" else 1883), u.scheme == "mqtts"


class MqttLink:
    """One paho client: connect, subscribe, deliver, ack (see the module docstring)."""

    def __init__(
        self,
        settings: LinkSettings,
        deliver: Callable[[Inbound], None],
        on_state: Callable[[bool, str | None], None],
    ) -> None:
        self.settings = settings
        self._deliver = deliver
        self._on_state = on_state
        self._host, self._port, self._tls = parse_broker_url(settings.url)
        self._protocol = settings.protocol
        self._client: mqtt.Client | None = None
        self._lock = threading.Lock()
        self.generation = settings.generation_base
        self.protocol: str | None = None
        self.connected = False
        self._stopping = False

    def start(self) -> None:
        self._connect(self._protocol if self._protocol != "auto" else "5")

    def stop(self) -> None:
        self._stopping = True
        client = self._client
        if client is not None:
            client.disconnect()
            client.loop_stop()

    def ack(self, acks: Sequence[Ack]) -> None:
        """Ack these messages if they came on the current connection (others are void)."""
        client = self._client
        if client is None:
            return
        gen = self.generation
        for mid, qos, generation in acks:
            if qos > 0 and generation == gen:
                client.ack(mid, qos)

    def _connect(self, protocol: str) -> None:
        s = self.settings
        v5 = protocol == "5"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else False,
            manual_ack=True,
        )
        if s.username:
            client.username_pw_set(s.username, s.password)
        if self._tls:
            client.tls_set(ca_certs=s.ca_file, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.reconnect_delay_set(1, 30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        self._client = client
        self.protocol = "5" if v5 else "3.1.1"
        props = None
        if v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = SESSION_EXPIRY_S
            props.ReceiveMaximum = RECEIVE_MAXIMUM
        client.connect_async(
            self._host,
            self._port,
            keepalive=30,
            clean_start=False if v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            properties=props,
        )
        client.loop_start()
        if v5 and self._protocol == "auto":
            timer = threading.Timer(V5_ANSWER_TIMEOUT_S, self._fallback_if_silent, args=(client,))
            timer.daemon = True
            timer.start()

    def _fallback_if_silent(self, client: mqtt.Client) -> None:
        if self._client is client and self._protocol == "auto" and not self.connected:
            log.info("no answer to MQTT 5 within %.0f s; trying MQTT 3.1.1", V5_ANSWER_TIMEOUT_S)
            self._fallback(client)

    def _fallback(self, old: mqtt.Client) -> None:
        old.disconnect()
        old.loop_stop()
        if self._stopping:
            return
        self._protocol = "3.1.1"
        self._connect("3.1.1")

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            if self._protocol == "auto" and self.protocol == "5" and reason.value in (1, 132):
                log.info("broker refused MQTT 5 (%s); falling back to MQTT 3.1.1", reason)
                threading.Thread(target=self._fallback, args=(client,), daemon=True).start()
                return
            log.error("broker refused the connection: %s", reason)
            return
        with self._lock:
            self.generation += 1
        s = self.settings
        topics = list(s.topics)
        if s.shared and self.protocol == "5":
            topics[: s.shared_count] = [
                f"$share/{SHARE_GROUP}/{topic}" for topic in topics[: s.shared_count]
            ]
        elif s.shared:
            log.warning(
                "shared subscriptions need MQTT 5; on %s every worker gets every message "
                "(ingest dedupes, so the effect stays exactly-once, but the work is repeated)",
                self.protocol,
            )
        # Ready only when the broker has granted the subscriptions (one SUBACK for all of them):
        # on a new session, a message published before the SUBSCRIBE is processed is not ours.
        client.subscribe([(topic, 1) for topic in topics])
        log.info(
            "ingest consumer connected (MQTT %s, session present=%s)",
            self.protocol,
            flags.session_present,
        )

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            # Stay "not connected": an ingest that receives nothing must not look healthy.
            log.error("broker refused the ingest subscriptions: %s", ", ".join(refused))
            return
        self.connected = True
        self._on_state(True, self.protocol)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.connected = False
        self._on_state(False, self.protocol)
        if not self._stopping:
            log.warning("ingest consumer disconnected: %s; reconnecting", reason)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        payload = msg.payload
        self._deliver(
            (
                msg.topic,
                payload if type(payload) is bytes else bytes(payload),
                msg.mid,
                msg.qos,
                self.generation,
                time.time(),
            )
        )


# -- the link process ----------------------------------------------------------------------------


class _Relay:
    """In the link process: chunks of messages out to the ingest, acks in from it."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._send_lock = threading.Lock()
        self._buf: list[Inbound] = []
        self._buf_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = threading.Event()

    def deliver(self, item: Inbound) -> None:
        with self._buf_lock:
            self._buf.append(item)
            n = len(self._buf)
        if n == 1 or n >= CHUNK_MAX:
            self._wake.set()

    def state(self, connected: bool, protocol: str | None) -> None:
        self._send(("s", connected, protocol))

    def _send(self, obj: object) -> None:
        with self._send_lock:
            try:
                self._conn.send(obj)
            except OSError:  # the ingest went away: the main loop sees EOF and exits
                self._closed.set()

    def pump(self) -> None:
        """Send buffered messages on, a chunk at a time (its own thread)."""
        while not self._closed.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            with self._buf_lock:
                n = len(self._buf)
            if n and n < CHUNK_MAX:
                time.sleep(CHUNK_WAIT_S)  # let a burst fill the chunk
            while True:
                with self._buf_lock:
                    chunk, self._buf = self._buf[:CHUNK_MAX], self._buf[CHUNK_MAX:]
                if not chunk:
                    break
                self._send(("m", chunk))

    def close(self) -> None:
        self._closed.set()
        self._wake.set()


def serve(conn: Connection) -> int:
    """Run a link for the ingest process at the other end of ``conn`` until it says stop or
    goes away. Returns the process exit status."""
    try:
        first = conn.recv()
    except (EOFError, OSError):
        return 1
    if not (isinstance(first, tuple) and first[:1] == ("c",) and len(first) == 2):
        print(f"remon ingest MQTT link: unexpected first message {first!r}", file=sys.stderr)
        return 2
    settings = LinkSettings(**first[1])
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # the link allocates only short-lived tuples: cyclic collections would be pure overhead
    gc.set_threshold(10_000, 50, 100)
    relay = _Relay(conn)
    link = MqttLink(settings, relay.deliver, relay.state)
    pump = threading.Thread(target=relay.pump, name="link-pump", daemon=True)
    pump.start()
    link.start()
    try:
        while True:
            try:
                msg: Any = conn.recv()
            except (EOFError, OSError):
                log.info("the ingest process went away; the MQTT link disconnects")
                return 0
            if msg[0] == "a":
                link.ack(msg[1])
            elif msg[0] == "x":
                return 0
    finally:
        relay.close()
        link.stop()


def _main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python -m cloud_ingest.mqtt_link <socket fd>", file=sys.stderr)
        return 2
    # The ingest process decides when the link ends ("x", or its socket closing): Ctrl-C in a
    # terminal and a service manager's SIGTERM reach the whole process group, and a link that
    # died first would be started again by an ingest that is shutting down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    conn = Connection(int(argv[0]))
    try:
        return serve(conn)
    finally:
        conn.close()


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
