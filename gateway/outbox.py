"""The edge's durable outbox: messages wait in SQLite until the broker has confirmed them.

Theory of operation. The agent encodes readings into :class:`~gateway.wire.OutboundMessage`
values and calls :meth:`Outbox.put_many` with them *and* the source cursors that say how far each
device has been read, in one transaction: after a crash either both the messages and the cursor
advance are on disk or neither is, so a reading is never skipped and never queued twice (a
re-read produces the same ``msg_id``, which the outbox ignores). The relay leases records oldest
first, publishes them and calls :meth:`Outbox.ack` only after the broker's PUBACK; anything left
in the file after a power cut is published again and ingest drops the duplicates by ``msg_id``.

Storage: one SQLite file in WAL mode. ``synchronous=FULL`` (default) fsyncs the WAL on every
commit, so a committed batch survives power loss; ``NORMAL`` survives a process crash but may lose
the last commits on power loss. Commits are the cost (one fsync each), so callers batch: one
transaction per batch of messages, one per batch of acks. Ids come from ``AUTOINCREMENT`` and are
never reused, so a lease cursor (``after_id``) never skips a record queued later.

Threads: each thread gets its own connection (WAL lets the relay's reads run beside the agent's
write transaction); writers are serialised by SQLite's lock with a busy timeout.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from gateway.wire import OutboundMessage

#: The schema this code reads and writes (``PRAGMA user_version``).
SCHEMA_VERSION: Final = 2
BUSY_TIMEOUT_MS: Final = 10_000
#: Rejected device data kept on the hub for inspection; the oldest go beyond this many.
REJECTS_KEPT: Final = 10_000

_SCHEMA: Final = (
    """
    CREATE TABLE IF NOT EXISTS outbox (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        msg_id  TEXT    NOT NULL UNIQUE,
        topic   TEXT    NOT NULL,
        payload BLOB    NOT NULL,
        qos     INTEGER NOT NULL,
        retain  INTEGER NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS source_cursor (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID
    """,
    # v2: device data the agent could not use (malformed bytes, records it cannot map), kept
    # with the reason so nothing a device sent is silently lost (the hub's dead-letter store).
    """
    CREATE TABLE IF NOT EXISTS rejects (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        at        TEXT    NOT NULL,
        device_id TEXT    NOT NULL,
        source    TEXT    NOT NULL,
        reason    TEXT    NOT NULL,
        raw       BLOB
    )
    """,
)


class OutboxError(RuntimeError):
    """The outbox file cannot be used (corrupt, newer schema, closed, I/O failure)."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(f"outbox {path}: {message}")
        self.path = path
        self.detail = message


@dataclass(frozen=True, slots=True)
class RejectRecord:
    id: int
    at: str  # ISO 8601 UTC, when the agent rejected it
    device_id: str
    source: str  # e.g. "ble:0x2A18"
    reason: str
    raw: bytes | None


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    id: int
    topic: str
    payload: bytes
    msg_id: str
    qos: int
    retain: bool


class Outbox:
    """A durable FIFO of outbound MQTT messages plus the source cursors that produced them."""

    def __init__(self, path: Path, *, synchronous: Literal["NORMAL", "FULL"] = "FULL") -> None:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be 'NORMAL' or 'FULL', not {synchronous!r}")
        self.path = Path(path)
        self.synchronous = synchronous
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: list[sqlite3.Connection] = []
        self._closed = False
        conn = self._conn()
        try:
            self._migrate(conn)
        except BaseException:
            self.close()
            raise

    # ----------------------------------------------------------------------------------------
    # connections

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path,
                isolation_level=None,
                check_same_thread=False,
                timeout=BUSY_TIMEOUT_MS / 1000,
            )
        except sqlite3.Error as exc:
            raise OutboxError(self.path, f"cannot open: {exc}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise OutboxError(self.path, f"cannot switch to WAL journal mode (got {mode!r})")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        except sqlite3.Error as exc:
            conn.close()
            raise OutboxError(self.path, f"not a usable SQLite database: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and not self._closed:
            return conn
        with self._lock:
            if self._closed:
                raise OutboxError(self.path, "the outbox is closed")
            conn = self._connect()
            self._conns.append(conn)
        self._local.conn = conn
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                version = int(conn.execute("PRAGMA user_version").fetchone()[0])
                if version > SCHEMA_VERSION:
                    raise OutboxError(
                        self.path,
                        f"schema version {version} is newer than this software supports "
                        f"({SCHEMA_VERSION}); upgrade remon or move the file aside",
                    )
                if version < SCHEMA_VERSION:
                    for stmt in _SCHEMA:
                        conn.execute(stmt)
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise OutboxError(self.path, f"not a usable outbox database: {exc}") from exc

    def _write(self, conn: sqlite3.Connection, what: str) -> _WriteTx:
        return _WriteTx(self, conn, what)

    # ----------------------------------------------------------------------------------------
    # public API

    def put_many(
        self, messages: Sequence[OutboundMessage], *, cursors: Mapping[str, str] | None = None
    ) -> int:
        """Queue ``messages`` and upsert ``cursors`` in one transaction; return how many are new.

        A message whose ``msg_id`` is already queued is ignored (the queued copy keeps its place).
        """
        rows = [
            (m.msg_id, m.topic, bytes(m.payload), int(m.qos), 1 if m.retain else 0)
            for m in messages
        ]
        if not rows and not cursors:
            return 0
        conn = self._conn()
        with self._write(conn, "put"):
            before = conn.total_changes
            if rows:
                conn.executemany(
                    "INSERT OR IGNORE INTO outbox (msg_id, topic, payload, qos, retain) "
                    "VALUES (?, ?, ?, ?, ?)",
                    rows,
                )
            added = conn.total_changes - before
            if cursors:
                conn.executemany(
                    "INSERT INTO source_cursor (key, value) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    list(cursors.items()),
                )
        return added

    def get_cursor(self, key: str) -> str | None:
        row = self._read("SELECT value FROM source_cursor WHERE key = ?", (key,))
        return None if not row else str(row[0][0])

    def set_cursor(self, key: str, value: str) -> None:
        self.put_many((), cursors={key: value})

    def lease(self, limit: int, *, after_id: int = 0) -> list[OutboxRecord]:
        """Up to ``limit`` records with ``id > after_id``, oldest first. Nothing is locked."""
        if limit <= 0:
            return []
        rows = self._read(
            "SELECT id, topic, payload, msg_id, qos, retain FROM outbox "
            "WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, limit),
        )
        return [
            OutboxRecord(
                id=r[0], topic=r[1], payload=bytes(r[2]), msg_id=r[3], qos=r[4], retain=bool(r[5])
            )
            for r in rows
        ]

    def ack(self, ids: Sequence[int]) -> None:
        """Delete the records the broker has confirmed, in one transaction."""
        if not ids:
            return
        conn = self._conn()
        with self._write(conn, "ack"):
            conn.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])

    def put_reject(
        self, *, at: str, device_id: str, source: str, reason: str, raw: bytes | None
    ) -> None:
        """Keep data a device sent that could not be used; the oldest beyond REJECTS_KEPT go."""
        conn = self._conn()
        with self._write(conn, "put_reject"):
            cur = conn.execute(
                "INSERT INTO rejects (at, device_id, source, reason, raw) VALUES (?, ?, ?, ?, ?)",
                (at, device_id, source, reason, raw),
            )
            if cur.lastrowid is not None and cur.lastrowid > REJECTS_KEPT:
                conn.execute("DELETE FROM rejects WHERE id <= ?", (cur.lastrowid - REJECTS_KEPT,))

    def expire_rejects(self, *, source: str, before: str) -> int:
        """Delete one source's rejects kept before ``before`` (ISO text, as ``at`` is stored);
        returns how many went."""
        conn = self._conn()
        with self._write(conn, "expire_rejects"):
            cur = conn.execute("DELETE FROM rejects WHERE source = ? AND at < ?", (source, before))
        return int(cur.rowcount)

    def rejects(self, limit: int = 100) -> list[RejectRecord]:
        """The newest rejects first."""
        rows = self._read(
            "SELECT id, at, device_id, source, reason, raw FROM rejects ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [
            RejectRecord(
                id=r[0],
                at=r[1],
                device_id=r[2],
                source=r[3],
                reason=r[4],
                raw=bytes(r[5]) if r[5] is not None else None,
            )
            for r in rows
        ]

    def has(self, msg_id: str) -> bool:
        """Whether a message is still queued (the relay deletes it only after its PUBACK)."""
        return bool(self._read("SELECT 1 FROM outbox WHERE msg_id = ? LIMIT 1", (msg_id,)))

    def pending(self) -> int:
        return int(self._read("SELECT count(*) FROM outbox", ())[0][0])

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self, sql: str, params: tuple[object, ...]) -> list[tuple[Any, ...]]:
        conn = self._conn()
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise OutboxError(self.path, f"read failed: {exc}") from exc


class _WriteTx:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (or ``ROLLBACK``), translating sqlite3 errors."""

    __slots__ = ("conn", "outbox", "what")

    def __init__(self, outbox: Outbox, conn: sqlite3.Connection, what: str) -> None:
        self.outbox = outbox
        self.conn = conn
        self.what = what

    def __enter__(self) -> None:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise OutboxError(self.outbox.path, f"{self.what}: cannot begin: {exc}") from exc

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            try:
                self.conn.execute("COMMIT")
            except sqlite3.Error as err:
                self._rollback()
                raise OutboxError(self.outbox.path, f"{self.what}: commit failed: {err}") from err
            return
        self._rollback()
        if isinstance(exc, sqlite3.Error):
            raise OutboxError(self.outbox.path, f"{self.what} failed: {exc}") from exc

    def _rollback(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
