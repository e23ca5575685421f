"""The MQTT relay: drains the durable outbox to the broker with QoS 1 (the only paho-mqtt importer).

Theory of operation. Two threads. Paho's network thread (``loop_start``) owns the socket: it
sends, receives PUBACKs, keeps the connection alive and reconnects. The relay's worker thread
owns the outbox and the bookkeeping: while connected it leases records (oldest first, by a
moving ``after_id`` cursor), hands them to ``Client.publish`` and remembers ``mid -> record id``;
paho's callbacks only append to a deque and wake the worker, so no SQLite work ever stalls the
network loop. A record is deleted from the outbox only after the broker's PUBACK said success,
in batches (every ``ACK_FLUSH_S`` or ``ACK_FLUSH_COUNT`` acks, one transaction).

Guarantees, in the terms of MQTT 5 §4.3.2 (QoS 1, at least once):

* At most ``window`` records are in flight, so paho's 16-bit packet ids never wrap over an
  unconfirmed message (ARCHITECTURE "Gotchas"); a smaller Receive Maximum from the broker wins.
* On a lost connection paho keeps its in-flight messages and re-sends them itself after the next
  CONNACK (for QoS 1 also with a clean session), so the relay does not publish them again. When
  the relay replaces the paho client (protocol fallback), everything that was in flight is
  forgotten by paho, so the relay rewinds its cursor and leases it again.
* A PUBACK with a failure reason code (MQTT 5, e.g. 0x87 Not authorized) keeps the record; it is
  counted as ``rejected`` and retried with exponential backoff, without blocking other records.
* After a process restart the outbox still holds every unconfirmed record and the relay sends
  it again; ingest dedupes by ``msg_id``.

Status: the last will is a retained ``offline`` status; after each CONNACK the relay publishes a
retained ``online`` status, and a clean :meth:`Relay.stop` publishes ``offline`` itself.

Protocol ``auto`` connects with MQTT 5 and falls back to 3.1.1 when the broker answers CONNACK
0x84 "Unsupported protocol version" (amqtt does). Use MQTT 5 where ACLs matter: on 3.1.1
Mosquitto acknowledges a denied publish with success and drops it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final, Literal, cast
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.client import ConnectFlags, DisconnectFlags
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.outbox import Outbox, OutboxError
from gateway.wire import AgentStatus, EncodeError, OutboundMessage, encode_status

log = logging.getLogger(__name__)

#: Delete confirmed records at least this often (seconds) …
ACK_FLUSH_S: Final = 0.05
#: … or as soon as this many confirmations are waiting.
ACK_FLUSH_COUNT: Final = 500
#: Largest window we accept: paho's packet ids are 16 bits.
MAX_WINDOW: Final = 60_000
#: Records leased per outbox query at least (a rewind skips in-flight ones cheaply).
LEASE_CHUNK: Final = 256

# CONNACK / PUBACK reason codes (MQTT 5 §3.2.2.2, §3.4.2.1; paho maps 3.1.1 return codes onto them).
RC_UNSUPPORTED_PROTOCOL: Final = 0x84
RC_BAD_CREDENTIALS: Final = 0x86
RC_NOT_AUTHORIZED: Final = 0x87


class RelayErrorKind(StrEnum):
    CONFIG = "config"  # bad URL, window or TLS files
    CONNECT_FAILED = "connect-failed"  # no TCP/TLS connection to the broker
    PROTOCOL_UNSUPPORTED = "protocol-unsupported"  # CONNACK 0x84
    NOT_AUTHORIZED = "not-authorized"  # CONNACK 0x86/0x87 (credentials, certificate, ACL)
    CONNECT_REFUSED = "connect-refused"  # any other CONNACK failure
    CONNECTION_LOST = "connection-lost"
    PUBLISH_REJECTED = "publish-rejected"  # PUBACK with a failure reason code
    PUBLISH_FAILED = "publish-failed"  # paho would not take the message
    OUTBOX = "outbox"  # the outbox failed (the record stays; retried)
    TIMEOUT = "timeout"


class RelayError(RuntimeError):
    """A failure at the relay's boundary: ``kind`` says which, ``reason_code`` is MQTT's if any."""

    def __init__(
        self, kind: RelayErrorKind, message: str, *, reason_code: int | None = None
    ) -> None:
        super().__init__(f"{kind.value}: {message}")
        self.kind = kind
        self.reason_code = reason_code
        self.detail = message


def connack_error(reason: ReasonCode) -> RelayError:
    """Translate a failed CONNACK (MQTT 5 reason code, or 3.1.1 code mapped by paho)."""
    value = int(reason.value)
    kind = {
        RC_UNSUPPORTED_PROTOCOL: RelayErrorKind.PROTOCOL_UNSUPPORTED,
        RC_BAD_CREDENTIALS: RelayErrorKind.NOT_AUTHORIZED,
        RC_NOT_AUTHORIZED: RelayErrorKind.NOT_AUTHORIZED,
    }.get(value, RelayErrorKind.CONNECT_REFUSED)
    return RelayError(kind, f"broker refused the connection: {reason}", reason_code=value)


@dataclass(frozen=True, kw_only=True)
class RelayConfig:
    url: str  # mqtt://host:port, or mqtts://host:port for TLS with the files below
    client_id: str
    protocol: Literal["auto", "5", "3.1.1"] = "auto"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    keepalive_s: int = 30
    window: int = 1000
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    #: Backoff for a record the broker rejected (PUBACK failure), first and longest delay.
    reject_retry_min_s: float = 5.0
    reject_retry_max_s: float = 300.0
    #: Look for new records at least this often even without :meth:`Relay.wake`.
    poll_s: float = 1.0
    #: ``auto`` only, before the first session: an MQTT 5 CONNECT left unanswered this long
    #: counts as a refusal (amqtt reads a v5 CONNECT that carries a will as garbage and never
    #: answers it).
    connack_timeout_s: float = 5.0
    #: Publish the retained "online" status again this often, with the outbox's depth (what
    #: support staff check first when a hub's data is late); 0: only after each connect.
    status_every_s: float = 60.0

    def __post_init__(self) -> None:
        def bad(msg: str) -> RelayError:
            return RelayError(RelayErrorKind.CONFIG, msg)

        if self.protocol not in ("auto", "5", "3.1.1"):
            raise bad(f"protocol must be 'auto', '5' or '3.1.1', not {self.protocol!r}")
        if not 1 <= self.window <= MAX_WINDOW:
            raise bad(f"window must be 1..{MAX_WINDOW}, not {self.window}")
        if self.keepalive_s < 1:
            raise bad("keepalive_s must be at least 1")
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            raise bad("need 0 < reconnect_min_s <= reconnect_max_s")
        if not 0 < self.reject_retry_min_s <= self.reject_retry_max_s:
            raise bad("need 0 < reject_retry_min_s <= reject_retry_max_s")
        if self.poll_s <= 0 or self.connack_timeout_s <= 0:
            raise bad("poll_s and connack_timeout_s must be positive")
        if self.status_every_s < 0:
            raise bad("status_every_s must be >= 0 (0: status only after each connect)")
        if not self.client_id:
            raise bad("client_id must not be empty")
        parse_url(self.url)


def parse_url(url: str) -> tuple[str, int, bool]:
    """``mqtt://host[:port]`` or ``mqtts://host[:port]`` -> (host, port, tls)."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise RelayError(RelayErrorKind.CONFIG, f"URL scheme must be mqtt or mqtts: {url!r}")
    try:
        port = parts.port
    except ValueError as exc:
        raise RelayError(RelayErrorKind.CONFIG, f"bad port in {url!r}") from exc
    if not parts.hostname:
        raise RelayError(RelayErrorKind.CONFIG, f"no host in {url!r}")
    tls = parts.scheme == "mqtts"
    return parts.hostname, port or (8883 if tls else 1883), tls


@dataclass(frozen=True, slots=True, kw_only=True)
class RelayStats:
    connected: bool
    protocol: Literal["5", "3.1.1"] | None  # of the current (or last) session
    published: int  # records handed to paho (re-sends by paho itself not counted)
    acked: int  # records confirmed by a successful PUBACK
    rejected: int  # PUBACKs with a failure reason code
    reconnects: int  # successful connections after the first
    in_flight: int
    last_error: RelayError | None


class _Held:
    __slots__ = ("attempts", "due")

    def __init__(self) -> None:
        self.attempts = 0
        self.due = 0.0


class Relay:
    """Publishes the outbox to an MQTT broker; see the module docstring for the guarantees."""

    def __init__(
        self, outbox: Outbox, config: RelayConfig, *, site: str, agent_version: str
    ) -> None:
        self.outbox = outbox
        self.config = config
        self.site = site
        self.agent_version = agent_version
        self._host, self._port, self._tls = parse_url(config.url)
        try:
            self._will = self._status("offline", at=None)
        except EncodeError as exc:
            raise RelayError(RelayErrorKind.CONFIG, str(exc)) from exc
        self._rng = random.Random()  # noqa: S311 - backoff jitter, not security
        self._lock = threading.Lock()
        self._kick = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: mqtt.Client | None = None
        self._gen = 0  # paho client generation: callbacks of a replaced client are ignored
        self._protocol: Literal["5", "3.1.1"] = "3.1.1" if config.protocol == "3.1.1" else "5"
        self._session_protocol: Literal["5", "3.1.1"] | None = None
        self._fallback = False
        self._stop_requested = False
        self._stop_deadline = 0.0
        # shared with paho's thread (under the GIL: deque ops and attribute stores are atomic)
        self._acks: deque[tuple[int, int, ReasonCode]] = deque()
        self._connected = False
        self._ever_connected = False
        self._window = config.window
        self._connect_attempt = 0
        self._connect_started = 0.0  # monotonic time of the CONNECT awaiting its CONNACK
        self._wake_seq = 0
        # owned by the worker thread
        self._inflight: dict[int, int] = {}  # paho mid -> outbox id
        self._inflight_ids: set[int] = set()
        self._confirmed: list[int] = []  # PUBACKed, not yet deleted
        self._confirmed_ids: set[int] = set()
        self._confirmed_since = 0.0
        self._held: dict[int, _Held] = {}  # rejected records waiting for their retry
        self._next_due = float("inf")
        self._next_status = 0.0  # monotonic time of the next periodic status
        self._cursor = 0
        self._more_rows = True
        self._leased_seq = -1
        # counters
        self._published = 0
        self._acked = 0
        self._rejected = 0
        self._reconnects = 0
        self._last_error: RelayError | None = None

    # ----------------------------------------------------------------------------------------
    # public API

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("relay already started")
        self._client = self._new_client()
        self._thread = threading.Thread(target=self._run, name="remon-relay", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Publish a retained offline status, disconnect and join the threads (bounded)."""
        thread = self._thread
        if thread is None:
            return
        self._stop_deadline = time.monotonic() + timeout
        self._stop_requested = True
        self._kick.set()
        thread.join(timeout)
        if thread.is_alive():
            log.warning("relay worker did not stop within %.1f s", timeout)
        self._thread = None

    def wake(self) -> None:
        with self._lock:
            self._wake_seq += 1
        self._kick.set()

    def wait_drained(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if not self._inflight and self.outbox.pending() == 0:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    @property
    def stats(self) -> RelayStats:
        return RelayStats(
            connected=self._connected,
            protocol=self._session_protocol,
            published=self._published,
            acked=self._acked,
            rejected=self._rejected,
            reconnects=self._reconnects,
            in_flight=len(self._inflight),
            last_error=self._last_error,
        )

    # ----------------------------------------------------------------------------------------
    # paho client and its callbacks (paho's thread)

    def _status(self, state: Literal["online", "offline"], at: datetime | None) -> OutboundMessage:
        return encode_status(
            AgentStatus(site=self.site, state=state, at=at, agent_version=self.agent_version)
        )

    def _new_client(self) -> mqtt.Client:
        cfg = self.config
        with self._lock:
            self._gen += 1
            gen = self._gen
            self._connected = False
        v5 = self._protocol == "5"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else True,
            userdata=gen,
        )
        client.max_inflight_messages_set(cfg.window)
        client.max_queued_messages_set(0)
        client.will_set(self._will.topic, self._will.payload, qos=1, retain=True)
        if cfg.username is not None:
            client.username_pw_set(cfg.username, cfg.password)
        if self._tls:
            try:
                client.tls_set(ca_certs=cfg.ca_file, certfile=cfg.cert_file, keyfile=cfg.key_file)
            except (OSError, ValueError) as exc:
                raise RelayError(RelayErrorKind.CONFIG, f"TLS setup failed: {exc}") from exc
        self._set_reconnect_delay(client)
        client.on_pre_connect = self._on_pre_connect
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        if v5:
            client.connect_async(self._host, self._port, cfg.keepalive_s, clean_start=True)
        else:
            client.connect_async(self._host, self._port, cfg.keepalive_s)
        client.loop_start()
        return client

    def _set_reconnect_delay(self, client: mqtt.Client) -> None:
        """Exponential backoff with jitter; paho waits this long before its next attempt."""
        cfg = self.config
        base = min(cfg.reconnect_max_s, cfg.reconnect_min_s * 2 ** min(self._connect_attempt, 30))
        delay = max(cfg.reconnect_min_s, base * self._rng.uniform(0.5, 1.0))
        self._connect_attempt += 1
        # paho annotates int but computes with the value as float seconds
        client.reconnect_delay_set(cast(int, delay), cast(int, delay))

    def _on_pre_connect(self, client: mqtt.Client, gen: Any) -> None:
        if gen == self._gen:
            self._connect_started = time.monotonic()
            self._kick.set()

    def _may_fall_back(self) -> bool:
        return self.config.protocol == "auto" and self._protocol == "5"

    def _on_connect(
        self,
        client: mqtt.Client,
        gen: Any,
        flags: ConnectFlags,
        reason: ReasonCode,
        props: Properties | None,
    ) -> None:
        if gen != self._gen:
            return
        self._connect_started = 0.0
        if reason.is_failure:
            err = connack_error(reason)
            self._last_error = err
            log.warning("MQTT connect to %s refused: %s", self.config.url, reason)
            if err.kind is RelayErrorKind.PROTOCOL_UNSUPPORTED and self._may_fall_back():
                log.info("broker refuses MQTT 5; falling back to MQTT 3.1.1")
                self._fallback = True
                client.disconnect()
                self._kick.set()
            return
        window = self.config.window
        receive_max = getattr(props, "ReceiveMaximum", None) if props is not None else None
        if isinstance(receive_max, int) and 0 < receive_max < window:
            # Our own window keeps paho below the broker's limit (paho refuses to change its
            # in-flight limit on an established connection, and does not read this property).
            window = receive_max
        self._window = window
        self._connect_attempt = 0
        if self._ever_connected:
            self._reconnects += 1
        self._ever_connected = True
        self._session_protocol = self._protocol
        online = self._status("online", at=datetime.now(UTC))
        client.publish(online.topic, online.payload, qos=1, retain=True)
        self._connected = True
        self._next_status = 0.0  # the worker follows with the outbox's depth
        log.info("MQTT connected to %s (MQTT %s)", self.config.url, self._protocol)
        self._kick.set()

    def _on_connect_fail(self, client: mqtt.Client, gen: Any) -> None:
        if gen != self._gen:
            return
        self._connect_started = 0.0
        self._last_error = RelayError(
            RelayErrorKind.CONNECT_FAILED,
            f"cannot open a {'TLS' if self._tls else 'TCP'} connection to "
            f"{self._host}:{self._port}",
        )
        self._set_reconnect_delay(client)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        gen: Any,
        flags: DisconnectFlags,
        reason: ReasonCode,
        props: Properties | None,
    ) -> None:
        if gen != self._gen:
            return
        was = self._connected
        self._connected = False
        self._connect_started = 0.0
        if was and not self._stop_requested:
            self._last_error = RelayError(
                RelayErrorKind.CONNECTION_LOST,
                f"connection lost: {reason}",
                reason_code=int(reason.value),
            )
            log.warning("MQTT connection to %s lost: %s", self.config.url, reason)
        self._set_reconnect_delay(client)
        self._kick.set()

    def _on_publish(
        self, client: mqtt.Client, gen: Any, mid: int, reason: ReasonCode, props: Properties
    ) -> None:
        self._acks.append((gen, mid, reason))
        self._kick.set()

    # ----------------------------------------------------------------------------------------
    # worker thread

    def _run(self) -> None:
        try:
            self._loop()
        except Exception as exc:  # the worker must report, not vanish silently
            log.exception("relay worker failed")
            self._last_error = RelayError(RelayErrorKind.OUTBOX, f"worker failed: {exc!r}")
        finally:
            self._shutdown()

    def _loop(self) -> None:
        timeout = 0.0
        while True:
            if not self._kick.wait(timeout):
                with self._lock:
                    self._wake_seq += 1  # the poll: look for records queued without wake()
            self._kick.clear()
            if self._stop_requested:
                return
            now = time.monotonic()
            self._check_connack_timeout(now)
            if self._fallback:
                self._switch_client()
            self._drain_acks(now)
            self._flush(now, force=False)
            if self._connected:
                self._release_held(now)
                self._fill_window()
                if self.config.status_every_s > 0 and now >= self._next_status:
                    self._publish_status(now)
            timeout = self.config.poll_s
            if self._confirmed:
                timeout = min(timeout, max(0.0, self._confirmed_since + ACK_FLUSH_S - now))
            if self._held:
                timeout = min(timeout, max(0.0, self._next_due - now))
            if self._connect_started and self._may_fall_back() and not self._ever_connected:
                deadline = self._connect_started + self.config.connack_timeout_s
                timeout = min(timeout, max(0.01, deadline - now))

    def _publish_status(self, now: float) -> None:
        """The retained online status with the outbox's depth (worker thread)."""
        client = self._client
        self._next_status = now + self.config.status_every_s
        if client is None:
            return
        try:
            pending = self.outbox.pending()
        except Exception as exc:  # a status must never stop the relay
            log.warning("outbox depth unavailable for the status: %r", exc)
            return
        msg = encode_status(
            AgentStatus(
                site=self.site,
                state="online",
                at=datetime.now(UTC),
                agent_version=self.agent_version,
                outbox_pending=pending,
            )
        )
        client.publish(msg.topic, msg.payload, qos=1, retain=True)

    def _check_connack_timeout(self, now: float) -> None:
        started = self._connect_started
        if (
            started
            and not self._ever_connected
            and self._may_fall_back()
            and now - started >= self.config.connack_timeout_s
        ):
            self._last_error = RelayError(
                RelayErrorKind.PROTOCOL_UNSUPPORTED,
                f"no CONNACK to an MQTT 5 CONNECT within {self.config.connack_timeout_s:.1f} s",
                reason_code=RC_UNSUPPORTED_PROTOCOL,
            )
            log.warning("%s; falling back to MQTT 3.1.1", self._last_error.detail)
            self._fallback = True

    def _switch_client(self) -> None:
        """Replace the paho client with a 3.1.1 one; what the old one held is leased again."""
        self._fallback = False
        old = self._client
        self._drain_acks(time.monotonic())
        self._protocol = "3.1.1"
        if old is not None:
            _dispose(old)
        self._inflight.clear()
        self._inflight_ids.clear()
        self._rewind()
        self._connect_attempt = 0
        try:
            self._client = self._new_client()
        except RelayError as exc:
            self._last_error = exc

    def _rewind(self) -> None:
        self._cursor = 0
        self._more_rows = True

    def _drain_acks(self, now: float) -> None:
        gen = self._gen
        while True:
            try:
                agen, mid, reason = self._acks.popleft()
            except IndexError:
                return
            if agen != gen:
                continue
            rid = self._inflight.pop(mid, None)
            if rid is None:
                continue  # a status message
            self._inflight_ids.discard(rid)
            if reason.is_failure:
                self._rejected += 1
                self._last_error = RelayError(
                    RelayErrorKind.PUBLISH_REJECTED,
                    f"broker rejected outbox record {rid}: {reason}",
                    reason_code=int(reason.value),
                )
                self._hold(rid, now, str(reason))
                continue
            self._held.pop(rid, None)
            self._acked += 1
            if not self._confirmed:
                self._confirmed_since = now
            self._confirmed.append(rid)
            self._confirmed_ids.add(rid)

    def _hold(self, rid: int, now: float, why: str) -> None:
        cfg = self.config
        held = self._held.setdefault(rid, _Held())
        held.attempts += 1
        base = min(cfg.reject_retry_max_s, cfg.reject_retry_min_s * 2 ** min(held.attempts - 1, 30))
        held.due = now + base * self._rng.uniform(0.75, 1.0)
        self._next_due = min(self._next_due, held.due)
        level = logging.WARNING if held.attempts == 1 else logging.DEBUG
        log.log(
            level,
            "outbox record %d not delivered (%s); retry in %.1f s (attempt %d)",
            rid,
            why,
            held.due - now,
            held.attempts,
        )

    def _release_held(self, now: float) -> None:
        if now < self._next_due:
            return
        due = [rid for rid, h in self._held.items() if h.due <= now]
        for rid in due:
            self._held[rid].due = float("inf")  # eligible again; attempts kept
        self._next_due = min((h.due for h in self._held.values()), default=float("inf"))
        if due:
            self._rewind()

    def _flush(self, now: float, *, force: bool) -> None:
        if not self._confirmed:
            return
        if (
            not force
            and len(self._confirmed) < ACK_FLUSH_COUNT
            and (now - self._confirmed_since < ACK_FLUSH_S)
        ):
            return
        ids = self._confirmed
        try:
            self.outbox.ack(ids)
        except OutboxError as exc:
            self._last_error = RelayError(RelayErrorKind.OUTBOX, f"ack failed: {exc}")
            log.warning("cannot delete %d confirmed records: %s", len(ids), exc)
            self._confirmed_since = now  # retry after the next interval
            return
        for rid in ids:
            self._held.pop(rid, None)
        self._confirmed = []
        self._confirmed_ids.clear()

    def _fill_window(self) -> None:
        client = self._client
        if client is None:
            return
        free = self._window - len(self._inflight)
        if free <= 0:
            return
        if self._inflight and free < min(self._window // 4, 100):
            return  # wait for more room: fewer, larger outbox queries
        seq = self._wake_seq
        if not self._more_rows and seq == self._leased_seq:
            return
        limit = max(free, LEASE_CHUNK)
        try:
            records = self.outbox.lease(limit, after_id=self._cursor)
        except OutboxError as exc:
            self._last_error = RelayError(RelayErrorKind.OUTBOX, f"lease failed: {exc}")
            log.warning("cannot lease from the outbox: %s", exc)
            return
        self._leased_seq = seq
        self._more_rows = len(records) == limit
        now = time.monotonic()
        for rec in records:
            if free <= 0:
                self._more_rows = True
                break
            self._cursor = rec.id
            rid = rec.id
            if rid in self._inflight_ids or rid in self._confirmed_ids:
                continue
            held = self._held.get(rid)
            if held is not None and held.due != float("inf"):
                continue
            try:
                info = client.publish(rec.topic, rec.payload, qos=rec.qos, retain=rec.retain)
            except (ValueError, TypeError) as exc:
                self._last_error = RelayError(
                    RelayErrorKind.PUBLISH_FAILED, f"outbox record {rid} cannot be published: {exc}"
                )
                self._hold(rid, now, str(exc))
                continue
            if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                # NO_CONN: paho queued it and sends it after the reconnect
                self._last_error = RelayError(
                    RelayErrorKind.PUBLISH_FAILED,
                    f"paho did not queue outbox record {rid}: {mqtt.error_string(info.rc)}",
                )
                self._hold(rid, now, mqtt.error_string(info.rc))
                continue
            self._inflight[info.mid] = rid
            self._inflight_ids.add(rid)
            self._published += 1
            free -= 1

    def _shutdown(self) -> None:
        client = self._client
        deadline = self._stop_deadline or time.monotonic() + 10.0
        if client is not None:
            # a short grace for in-flight confirmations: fewer duplicates after the restart
            grace_end = min(deadline - 1.0, time.monotonic() + 2.0)
            while self._connected and self._inflight and time.monotonic() < grace_end:
                self._kick.wait(0.02)
                self._kick.clear()
                now = time.monotonic()
                self._drain_acks(now)
                self._flush(now, force=False)
            if self._connected:
                offline = self._status("offline", at=datetime.now(UTC))
                info = client.publish(offline.topic, offline.payload, qos=1, retain=True)
                try:
                    info.wait_for_publish(max(0.1, min(2.0, deadline - time.monotonic())))
                except (RuntimeError, ValueError) as exc:
                    log.warning("offline status not confirmed: %s", exc)
            _dispose(client)
            self._connected = False
        self._drain_acks(time.monotonic())
        self._flush(time.monotonic(), force=True)


def _dispose(client: mqtt.Client) -> None:
    """Disconnect, join paho's thread and close its sockets now rather than at GC."""
    client.disconnect()
    client.loop_stop()
    client.reinitialise()  # closes the socket and the wake-up socket pair
