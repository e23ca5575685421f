"""MQTT consumer: the ingest's worker loop between the MQTT link and the ingest service.

It subscribes to observation, device-event, telemetry, visit and status topics on a
*persistent* session with *manual acks* (:mod:`cloud_ingest.mqtt_link`): a message is
acknowledged to the broker only after the ingest service has committed the batch it was in. If
ingest fails or the process dies, the broker still holds the unacknowledged messages and
delivers them again; ingest is idempotent (message, reading and event ids), so the effect is
exactly-once.

The link runs in a process of its own by default (``link="process"``): paho's network loop
costs about as much per message as the ingest itself and would otherwise share this process's
interpreter lock with it. The worker thread batches what arrives (up to ``batch_max`` messages
or ``batch_wait_s``), calls the service and sends the acks back. A link process that dies is
started again (its unacknowledged messages come again on the new connection); when this process
dies, the link process sees its socket close and disconnects. ``link="thread"`` keeps the link
in this process (one process, one interpreter lock). With MQTT 5, ``shared=True`` subscribes
through ``$share/<group>/...`` so several workers split the load.
"""

from __future__ import annotations

import gc
import logging
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from typing import Any, Literal

from cloud_ingest.mqtt_link import (
    RECEIVE_MAXIMUM,
    SESSION_EXPIRY_S,
    SHARE_GROUP,
    V5_ANSWER_TIMEOUT_S,
    Ack,
    Inbound,
    LinkSettings,
    MqttLink,
    parse_broker_url,
)
from cloud_ingest.service import ConflictError, IngestResult, IngestService, RawMessage
from gateway.wire import (
    EVENT_SUBSCRIPTION,
    OBS_SUBSCRIPTION,
    STATUS_SUBSCRIPTION,
    TELEMETRY_SUBSCRIPTION,
    VISIT_SUBSCRIPTION,
)

__all__ = [
    "INGEST_GC_THRESHOLD",
    "ISOLATE_AFTER_FAILURES",
    "RECEIVE_MAXIMUM",
    "SESSION_EXPIRY_S",
    "SHARE_GROUP",
    "V5_ANSWER_TIMEOUT_S",
    "Consumer",
    "ConsumerConfig",
    "ConsumerStats",
]

log = logging.getLogger("remon.ingest.consumer")

#: A batch that failed this many times in a row is ingested message by message.
ISOLATE_AFTER_FAILURES = 3
#: The interpreter's cyclic-GC thresholds while a consumer runs (see ``ConsumerConfig``).
INGEST_GC_THRESHOLD = (10_000, 50, 100)
#: A link process that died is started again after this long.
LINK_RESTART_S = 1.0
#: ... and after up to this long when starting it fails again and again.
LINK_RESTART_MAX_S = 30.0
#: Connection generations of successive link processes never overlap: each starts this much
#: above the previous one, so an ack for a message of a dead link can never match a live one.
GENERATION_STRIDE = 1_000_000
#: The topics the ingest reads: the first five in the share group when ``shared``.
_SHARED_TOPICS = (OBS_SUBSCRIPTION, EVENT_SUBSCRIPTION, TELEMETRY_SUBSCRIPTION, VISIT_SUBSCRIPTION)


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
    #: where the MQTT link runs: its own process (default) or a thread of this one
    link: Literal["process", "thread"] = "process"


@dataclass(slots=True)
class ConsumerStats:
    received: int = 0
    batches: int = 0
    ingest_failures: int = 0
    connected: bool = False
    protocol: str | None = None
    totals: dict[str, int] = field(default_factory=dict)
    #: link processes started again after they died
    link_restarts: int = 0


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
        # Unbounded on purpose: the reader must never block, or the link process would block
        # sending and stop answering the broker. The broker's Receive Maximum (4000 unacked
        # messages) bounds what can be here.
        self._inbox: queue.SimpleQueue[list[Inbound]] = queue.SimpleQueue()
        self._carry: list[Inbound] = []
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._worker: threading.Thread | None = None
        self._gc_before: tuple[int, int, int] | None = None
        parse_broker_url(config.url)  # a bad URL fails here, in the caller
        # thread link
        self._link: MqttLink | None = None
        # process link
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._send_lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self._generation_base = 0
        self._life = threading.Lock()  # stop() against a link restart

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
        if self.config.link == "thread":
            self._link = MqttLink(self._settings(), self._deliver, self._state)
            self._link.start()
        else:
            self._start_link_process()
            self._reader = threading.Thread(target=self._read, name="ingest-link", daemon=True)
            self._reader.start()
        if wait_connected is not None and not self._connected.wait(wait_connected):
            self.stop()  # no link process or thread left behind by a failed start
            raise ConnectionError(
                f"could not connect and subscribe to the broker at {self.config.url}"
            )

    def stop(self, timeout: float = 10.0) -> None:
        with self._life:
            self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout)
        if self._link is not None:
            self._link.stop()
        self._stop_link_process(timeout)
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

    # -- the MQTT link -------------------------------------------------------------------------

    def _settings(self) -> LinkSettings:
        c = self.config
        return LinkSettings(
            url=c.url,
            client_id=c.client_id,
            protocol=c.protocol,
            shared=c.shared,
            username=c.username,
            password=c.password,
            ca_file=c.ca_file,
            topics=(*_SHARED_TOPICS, STATUS_SUBSCRIPTION),
            shared_count=len(_SHARED_TOPICS),
            log_level=logging.getLogger("remon").getEffectiveLevel(),
            generation_base=self._generation_base,
        )

    def _deliver(self, item: Inbound) -> None:
        self._inbox.put([item])

    def _state(self, connected: bool, protocol: str | None) -> None:
        self.stats.protocol = protocol
        self.stats.connected = connected
        if connected:
            self._connected.set()
        else:
            self._connected.clear()

    def _start_link_process(self) -> None:
        ours, theirs = socket.socketpair()
        try:
            # -P: the link imports the installed code, never a module of the working directory
            self._proc = subprocess.Popen(  # noqa: S603 - our own module, no shell
                [sys.executable, "-P", "-m", "cloud_ingest.mqtt_link", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._conn = Connection(ours.detach())
        # the settings (with any broker password) go over the socket, never on the command line
        self._send(("c", asdict(self._settings())))

    def _stop_link_process(self, timeout: float) -> None:
        proc, conn = self._proc, self._conn
        if proc is None or conn is None:
            return
        self._send(("x",))
        self._reap_link(timeout)
        if self._reader is not None:
            self._reader.join(timeout)  # it sees the socket close and returns
        self._close_conn()

    def _close_conn(self) -> None:
        """Close the link's socket; never while a send on it is under way."""
        with self._send_lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

    def _send(self, obj: object) -> None:
        with self._send_lock:
            conn = self._conn
            if conn is None:
                return
            try:
                conn.send(obj)
            except OSError:  # the link died: the reader restarts it, the broker redelivers
                log.warning("the MQTT link process is gone; its messages come again")

    def _read(self) -> None:
        """Take what the link process sends; start it again if it dies."""
        while True:
            conn = self._conn
            if conn is None:
                return
            try:
                msg: Any = conn.recv()
            except (EOFError, OSError, TypeError):  # TypeError: closed under us by stop()
                self._state(False, self.stats.protocol)
                if self._stop.is_set():
                    return
                log.error(
                    "the MQTT link process exited (status %s); starting it again in %.0f s",
                    self._reap_link(5.0),
                    LINK_RESTART_S,
                )
                self._close_conn()
                delay = LINK_RESTART_S
                while not self._stop.wait(delay):
                    with self._life:  # never a new link once stop() has begun
                        if self._stop.is_set():
                            return
                        self._generation_base += GENERATION_STRIDE
                        try:
                            self._start_link_process()
                        except OSError:
                            delay = min(delay * 2, LINK_RESTART_MAX_S)
                            log.exception(
                                "could not start the MQTT link process; next try in %.0f s",
                                delay,
                            )
                            continue
                        self.stats.link_restarts += 1
                        break
                else:
                    return
                continue
            if msg[0] == "m":
                self._inbox.put(msg[1])
            elif msg[0] == "s":
                self._state(msg[1], msg[2])

    def _reap_link(self, timeout: float) -> int | None:
        """The link process's exit status once it has ended (killed if it lingers)."""
        proc = self._proc
        if proc is None:
            return None
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("the MQTT link process did not stop in %.0f s; killing it", timeout)
            proc.kill()
            return proc.wait()

    def _ack(self, batch: list[Inbound]) -> None:
        acks: list[Ack] = [(m[2], m[3], m[4]) for m in batch if m[3] > 0]
        if not acks:
            return
        if self._link is not None:
            self._link.ack(acks)
        else:
            self._send(("a", acks))

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
        pending: list[Inbound] = []
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

    def _one_by_one(self, pending: list[Inbound]) -> list[Inbound]:
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
                log.error("message on %s dead-lettered: the database refused it (%r)", m[0], exc)
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

    def _done(self, batch: list[Inbound], result: IngestResult) -> None:
        self._ack(batch)
        self.stats.batches += 1
        for k, v in asdict(result).items():
            self.stats.totals[k] = self.stats.totals.get(k, 0) + int(v)
        if self._on_result is not None:
            self._on_result(result)

    def _collect(self) -> list[Inbound]:
        batch = self._carry
        self._carry = []
        if not batch:
            try:
                batch = self._inbox.get(timeout=0.2)
            except queue.Empty:
                return []
        deadline = time.monotonic() + self.config.batch_wait_s
        limit = self.config.batch_max
        while len(batch) < limit:
            try:
                batch += self._inbox.get_nowait()
                continue
            except queue.Empty:
                pass
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                batch += self._inbox.get(timeout=left)
            except queue.Empty:
                break
        if len(batch) > limit:
            batch, self._carry = batch[:limit], batch[limit:]
        self.stats.received += len(batch)
        return batch


def _raw(m: Inbound) -> RawMessage:
    return RawMessage(topic=m[0], payload=m[1], received_at=datetime.fromtimestamp(m[5], UTC))
