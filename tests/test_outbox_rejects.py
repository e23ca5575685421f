"""The outbox's rejects store (put_reject / rejects) and the schema v1 → v2 upgrade.

Facts from gateway/outbox.py's contract: device data the agent could not use is kept with its
reason and raw bytes, newest first, at most REJECTS_KEPT of them (the oldest go); schema v2 adds
the rejects table, and a v1 file (outbox + source_cursor, user_version 1) opens as v2 with its
queued messages and cursors intact.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

import gateway.outbox
from gateway.outbox import Outbox
from gateway.wire import OutboundMessage


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    with Outbox(tmp_path / "outbox.db") as ob:
        yield ob


def reject(ob: Outbox, n: int, raw: bytes | None = b"\x01\x02") -> None:
    ob.put_reject(
        at=f"2026-11-22T08:{n:02d}:00+00:00",
        device_id="gm1",
        source="ble:0x2A18",
        reason=f"reason {n}",
        raw=raw,
    )


def test_rejects_newest_first_with_raw_bytes_kept(outbox: Outbox) -> None:
    assert outbox.rejects() == []
    raws: list[bytes | None] = [bytes(range(256)), None, b"\x00\xff\x00", b""]
    for i, raw in enumerate(raws):
        reject(outbox, i, raw)
    got = outbox.rejects()
    assert [r.reason for r in got] == ["reason 3", "reason 2", "reason 1", "reason 0"]
    assert [r.raw for r in got] == list(reversed(raws))
    assert got[-1].raw == bytes(range(256))  # every byte value survives, NUL included
    assert got[0].at == "2026-11-22T08:03:00+00:00"
    assert (got[0].device_id, got[0].source) == ("gm1", "ble:0x2A18")
    assert got[0].id > got[1].id
    assert [r.reason for r in outbox.rejects(limit=2)] == ["reason 3", "reason 2"]


def test_rejects_do_not_touch_the_queue_or_cursors(outbox: Outbox) -> None:
    outbox.put_many(
        [OutboundMessage(topic="remon/v1/s1/d1/obs", payload=b"x", msg_id="a" * 32)],
        cursors={"gm1": "seq:7"},
    )
    reject(outbox, 1)
    assert outbox.pending() == 1
    assert outbox.get_cursor("gm1") == "seq:7"


def test_rejects_persist_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path) as ob:
        reject(ob, 1, b"\xde\xad")
    with Outbox(path) as ob:
        (r,) = ob.rejects()
        assert (r.reason, r.raw) == ("reason 1", b"\xde\xad")


def test_only_the_newest_rejects_are_kept(outbox: Outbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway.outbox, "REJECTS_KEPT", 5)
    for i in range(12):
        reject(outbox, i)
        assert len(outbox.rejects(100)) == min(i + 1, 5)
    assert [r.reason for r in outbox.rejects(100)] == [f"reason {i}" for i in (11, 10, 9, 8, 7)]


# A v1 outbox as the previous release wrote it: the two tables, user_version 1.
V1_SCHEMA = (
    """
    CREATE TABLE outbox (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        msg_id  TEXT    NOT NULL UNIQUE,
        topic   TEXT    NOT NULL,
        payload BLOB    NOT NULL,
        qos     INTEGER NOT NULL,
        retain  INTEGER NOT NULL
    )
    """,
    """
    CREATE TABLE source_cursor (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID
    """,
)


def make_v1(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        for stmt in V1_SCHEMA:
            conn.execute(stmt)
        conn.execute(
            "INSERT INTO outbox (msg_id, topic, payload, qos, retain) VALUES (?, ?, ?, ?, ?)",
            ("f" * 32, "remon/v1/home-1/gm1/obs", b"\x00payload\xff", 1, 0),
        )
        conn.execute("INSERT INTO source_cursor (key, value) VALUES (?, ?)", ("gm1", "seq:41"))
        conn.execute("PRAGMA user_version = 1")
        conn.commit()
    finally:
        conn.close()


def user_version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def test_v1_file_upgrades_to_v2_keeping_records_and_cursors(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    make_v1(path)
    assert user_version(path) == 1
    with Outbox(path) as ob:
        (rec,) = ob.lease(10)
        assert (rec.msg_id, rec.topic) == ("f" * 32, "remon/v1/home-1/gm1/obs")
        assert (rec.payload, rec.qos, rec.retain) == (b"\x00payload\xff", 1, False)
        assert ob.get_cursor("gm1") == "seq:41"
        assert ob.rejects() == []
        reject(ob, 1, b"\x42")
        # the upgraded file goes on working as an outbox: ids continue after the old record
        ob.put_many(
            [OutboundMessage(topic="remon/v1/home-1/gm1/obs", payload=b"y", msg_id="e" * 32)]
        )
        assert [r.msg_id for r in ob.lease(10)] == ["f" * 32, "e" * 32]
        assert ob.lease(10)[1].id > rec.id
    assert user_version(path) == 2
    with Outbox(path) as ob:  # reopening a v2 file changes nothing
        assert ob.pending() == 2
        assert ob.get_cursor("gm1") == "seq:41"
        assert [(r.reason, r.raw) for r in ob.rejects()] == [("reason 1", b"\x42")]
