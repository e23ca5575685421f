"""MQTT consumer: the cloud side's only importer of paho-mqtt.

It subscribes to observation, device-event and status topics on a *persistent* session with
*manual acks*: a message is acknowledged to the broker only after the ingest service has committed
the batch it was in. If ingest fails or the process dies, the broker still holds the
unacknowledged messages and delivers them again; ingest is idempotent (message, reading and event
ids), so the effect is exactly-once.

paho's network loop runs on its own thread and only appends to a queue; a worker thread batches
(up to ``batch_max`` messages or ``batch_wait_s``), calls the service and acks. With MQTT 5,
``shared=True`` subscribes through ``$share/<group>/...`` so several workers split the load.
"""

from __future__ import annotations

import gc
import logging
import queue
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from cloud_ingest.service import ConflictError, IngestResult, IngestService, RawMessage
from gateway.wire import (
    EVENT_SUBSCRIPTION,
    OBS_SUBSCRIPTION,
    STATUS_SUBSCRIPTION,
    TELEMETRY_SUBSCRIPTION,
    VISIT_SUBSCRIPTION,
)

log = logging.getLogger("remon.ingest.consumer")

#: How many unacknowledged QoS 1 messages the broker may have in flight to us (MQTT 5).
RECEIVE_MAXIMUM = 4000
#: In "auto" mode, a broker that has not answered an MQTT 5 CONNECT by then gets MQTT 3.1.1
#: (amqtt, for one, never answers a v5 CONNECT that carries properties).
V5_ANSWER_TIMEOUT_S = 5.0
#: Broker keeps our session (subscriptions + queued messages) this long while we are away.
SESSION_EXPIRY_S = 7 * 24 * 3600
SHARE_GROUP = "remon-ingest"
#: A batch that failed this many times in a row is ingested message by message.
ISOLATE_AFTER_FAILURES = 3
#: The interpreter's cyclic-GC thresholds while a consumer runs (see ``ConsumerConfig``).
INGEST_GC_THRESHOLD = (10_000, 50, 100)


@dataclass(frozen=True, kw_only=True)
class ConsumerConfig:
    url: str
    client_id: str = "remon-ingest"
    protocol: str = "auto"  # "auto" | "5" | "3.1.1"
    shared: bool = False
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    batch_max: int = 500
    batch_wait_s: float = 0.05
    #: how often the worker runs the time-driven rules (escalation of unacknowledged alerts);
    #: None: never (another process does it)
    housekeeping_s: float | None = 15.0
    #: cyclic-GC thresholds while the consumer runs (raised, never lowered; restored by
    #: ``stop``); None leaves them alone. A batch allocates hundreds of thousands of short-lived
    #: objects, nearly all freed by reference counting; with Python's default (700, 10, 10)
    #: about a seventh of a worker's time went into cyclic collections.
    gc_threshold: tuple[int, int, int] | None = INGEST_GC_THRESHOLD


@dataclass(slots=True)
class ConsumerStats:
    received: int = 0
    batches: int = 0
    ingest_failures: int = 0
    connected: bool = False
    protocol: str | None = None
    totals: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Inbound:
    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int
    received_at: datetime


class Consumer:
    def __init__(
        self,
        service: IngestService,
        config: ConsumerConfig,
        *,
        on_result: Callable[[IngestResult], None] | None = None,
    ) -> None:
        self.service = service
        self.config = config
        self.stats = ConsumerStats()
        self._on_result = on_result
        self._queue: queue.Queue[_Inbound] = queue.Queue()
        self._stop = threading.Event()
        self._generation = 0
        self._lock = threading.Lock()
        self._client: mqtt.Client | None = None
        self._worker: threading.Thread | None = None
        self._protocol = config.protocol
        self._connected = threading.Event()
        self._gc_before: tuple[int, int, int] | None = None
        u = urlparse(config.url)
        if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
            raise ValueError(
                f"broker URL must be mqtt://host:port or mqtts://host:port, got {config.url!r}"
            )
        self._host = u.hostname
        self._port = u.port or (8883 if u.scheme == "mqtts" else 1883)
        self._tls = u.scheme == "mqtts"

    # -- life cycle ----------------------------------------------------------------------------

    def start(self, *, wait_connected: float | None = 20.0) -> None:
        want = self.config.gc_threshold
        if want is not None and self._gc_before is None:
            before = gc.get_threshold()
            raised = (max(before[0], want[0]), max(before[1], want[1]), max(before[2], want[2]))
            if raised != before:
                self._gc_before = before
                gc.set_threshold(*raised)
        self._worker = threading.Thread(target=self._work, name="ingest-worker", daemon=True)
        self._worker.start()
        self._connect(self._protocol if self._protocol != "auto" else "5")
        if wait_connected is not None and not self._connected.wait(wait_connected):
            raise ConnectionError(
                f"could not connect and subscribe to the broker at {self.config.url}"
            )

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout)
        client = self._client
        if client is not None:
            client.disconnect()
            client.loop_stop()
        if self._gc_before is not None:
            gc.set_threshold(*self._gc_before)
            self._gc_before = None
        log.info(
            "ingest consumer stopped: received=%d batches=%d observations=%d events=%d "
            "dead_letters=%d",
            self.stats.received,
            self.stats.batches,
            self.stats.totals.get("observations", 0),
            self.stats.totals.get("events_stored", 0),
            self.stats.totals.get("dead_letters", 0),
        )

    # -- MQTT ----------------------------------------------------------------------------------

    def _connect(self, protocol: str) -> None:
        v5 = protocol == "5"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.config.client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else False,
            manual_ack=True,
        )
        if self.config.username:
            client.username_pw_set(self.config.username, self.config.password)
        if self._tls:
            client.tls_set(ca_certs=self.config.ca_file, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.reconnect_delay_set(1, 30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        self._client = client
        self.stats.protocol = "5" if v5 else "3.1.1"
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
        if self._client is client and self._protocol == "auto" and not self._connected.is_set():
            log.info("no answer to MQTT 5 within %.0f s; trying MQTT 3.1.1", V5_ANSWER_TIMEOUT_S)
            self._fallback(client)

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            if self._protocol == "auto" and self.stats.protocol == "5" and reason.value in (1, 132):
                log.info("broker refused MQTT 5 (%s); falling back to MQTT 3.1.1", reason)
                threading.Thread(target=self._fallback, args=(client,), daemon=True).start()
                return
            log.error("broker refused the connection: %s", reason)
            return
        with self._lock:
            self._generation += 1
        data = [OBS_SUBSCRIPTION, EVENT_SUBSCRIPTION, TELEMETRY_SUBSCRIPTION, VISIT_SUBSCRIPTION]
        if self.config.shared and self.stats.protocol == "5":
            data = [f"$share/{SHARE_GROUP}/{topic}" for topic in data]
        elif self.config.shared:
            log.warning(
                "shared subscriptions need MQTT 5; on %s every worker gets every message "
                "(ingest dedupes, so the effect stays exactly-once, but the work is repeated)",
                self.stats.protocol,
            )
        # Ready (``start`` returns) only when the broker has granted the subscriptions (one
        # SUBACK for all of them): on a new session, a message published before the SUBSCRIBE is
        # processed is not ours to get.
        client.subscribe([*((topic, 1) for topic in data), (STATUS_SUBSCRIPTION, 1)])
        log.info(
            "ingest consumer connected (MQTT %s, session present=%s)",
            self.stats.protocol,
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
        self.stats.connected = True
        self._connected.set()

    def _fallback(self, old: mqtt.Client) -> None:
        old.disconnect()
        old.loop_stop()
        self._protocol = "3.1.1"
        self._connect("3.1.1")

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.stats.connected = False
        self._connected.clear()
        if not self._stop.is_set():
            log.warning("ingest consumer disconnected: %s; reconnecting", reason)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        self.stats.received += 1
        payload = msg.payload if isinstance(msg.payload, bytes) else bytes(msg.payload)
        self._queue.put(
            _Inbound(msg.topic, payload, msg.mid, msg.qos, self._generation, datetime.now(UTC))
        )

    # -- worker --------------------------------------------------------------------------------

    def _housekeeping(self, now: float) -> float:
        """Run the time-driven rules when due; return when they are due next. A failure is
        logged and retried at the next interval: it never stops ingest."""
        every = self.config.housekeeping_s
        if every is None:
            return float("inf")
        try:
            self.service.housekeeping()
        except ConflictError as exc:
            # another worker changed the same alert at the same moment: its change stands
            log.info(
                "housekeeping lost a race with another worker (%s); next in %.0f s", exc, every
            )
        except Exception:
            log.exception("housekeeping (time-driven rules) failed; retrying in %.0f s", every)
        return now + every

    def _work(self) -> None:
        backoff = 0.2
        failures = 0
        pending: list[_Inbound] = []
        next_housekeeping = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_housekeeping:
                next_housekeeping = self._housekeeping(now)
            if not pending:
                pending = self._collect()
                failures = 0
                if not pending:
                    continue
            try:
                if failures >= ISOLATE_AFTER_FAILURES:
                    pending = self._one_by_one(pending)
                    if pending:
                        raise RuntimeError("the database is refusing even dead letters")
                else:
                    self._done(pending, self.service.ingest_batch([_raw(m) for m in pending]))
                    pending = []
                backoff = 0.2
            except Exception:
                # Nothing unprocessed is acknowledged: the batch is retried here, and the broker
                # still holds it should this process die. Ingest is idempotent, so retries are
                # harmless. After a few failures the batch is taken apart so that one message the
                # database refuses cannot hold up the others.
                failures += 1
                self.stats.ingest_failures += 1
                log.exception(
                    "ingest of %d messages failed (%d in a row); retrying in %.1f s",
                    len(pending),
                    failures,
                    backoff,
                )
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def _one_by_one(self, pending: list[_Inbound]) -> list[_Inbound]:
        """Ingest each message alone; dead-letter one that fails alone. Returns what is left."""
        for i, m in enumerate(pending):
            raw = _raw(m)
            try:
                result = self.service.ingest_batch([raw])
            except Exception as exc:
                try:
                    self.service.quarantine(raw, f"ingest failed: {exc!r}")
                except Exception:
                    log.exception("cannot even dead-letter a message; keeping it")
                    return pending[i:]
                log.error("message on %s dead-lettered: the database refused it (%r)", m.topic, exc)
                result = IngestResult(
                    messages=0,
                    duplicate_messages=0,
                    observations=0,
                    duplicate_observations=0,
                    dead_letters=1,
                    alerts_raised=0,
                    alerts_updated=0,
                )
            self._done([m], result)
        return []

    def _done(self, batch: list[_Inbound], result: IngestResult) -> None:
        self._ack(batch)
        self.stats.batches += 1
        for k, v in asdict(result).items():
            self.stats.totals[k] = self.stats.totals.get(k, 0) + int(v)
        if self._on_result is not None:
            self._on_result(result)

    def _collect(self) -> list[_Inbound]:
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.config.batch_wait_s
        while len(batch) < self.config.batch_max:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except queue.Empty:
                pass
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                batch.append(self._queue.get(timeout=left))
            except queue.Empty:
                break
        return batch

    def _ack(self, batch: list[_Inbound]) -> None:
        client = self._client
        if client is None:
            return
        gen = self._generation
        for m in batch:
            # Acks for a previous connection are void: the broker redelivers those messages
            # on the new session and we dedupe them.
            if m.qos > 0 and m.generation == gen:
                client.ack(m.mid, m.qos)


def _raw(m: _Inbound) -> RawMessage:
    return RawMessage(topic=m.topic, payload=m.payload, received_at=m.received_at)
