"""The durable outbox: put/lease/ack, cursors atomic with messages, crash consistency, schema."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from gateway.outbox import SCHEMA_VERSION, Outbox, OutboxError
from gateway.wire import OutboundMessage

REPO = Path(__file__).resolve().parents[1]


def msg(i: int, *, topic: str = "remon/v1/s1/d1/obs") -> OutboundMessage:
    mid = f"{i:032x}"
    return OutboundMessage(topic=topic, payload=mid.encode() + b"x" * 40, msg_id=mid)


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    with Outbox(tmp_path / "outbox.db") as ob:
        yield ob


def test_put_lease_ack_oldest_first(outbox: Outbox) -> None:
    assert outbox.put_many([msg(i) for i in range(5)]) == 5
    assert outbox.pending() == 5
    recs = outbox.lease(3)
    assert [r.msg_id for r in recs] == [f"{i:032x}" for i in range(3)]
    assert recs[0].payload.startswith(recs[0].msg_id.encode())
    assert (recs[0].qos, recs[0].retain, recs[0].topic) == (1, False, "remon/v1/s1/d1/obs")
    # a lease locks nothing: leasing again returns the same records
    assert outbox.lease(3) == recs
    assert [r.id for r in outbox.lease(10, after_id=recs[-1].id)] == [
        r.id for r in outbox.lease(10)
    ][3:]
    outbox.ack([r.id for r in recs])
    assert outbox.pending() == 2
    assert [r.msg_id for r in outbox.lease(10)] == [f"{i:032x}" for i in (3, 4)]
    outbox.ack([])
    outbox.ack([recs[0].id])  # acking an id twice is harmless
    assert outbox.pending() == 2


def test_duplicate_msg_id_is_ignored(outbox: Outbox) -> None:
    assert outbox.put_many([msg(1), msg(2)]) == 2
    assert outbox.put_many([msg(2), msg(3), msg(3)]) == 1
    assert [r.msg_id for r in outbox.lease(10)] == [f"{i:032x}" for i in (1, 2, 3)]


def test_ids_are_never_reused(outbox: Outbox) -> None:
    """A relay's lease cursor must never skip a record queued after the newest was deleted."""
    outbox.put_many([msg(1), msg(2)])
    newest = outbox.lease(10)[-1].id
    outbox.ack([newest])
    outbox.put_many([msg(3)])
    assert [r.msg_id for r in outbox.lease(10, after_id=newest)] == [f"{3:032x}"]


def test_cursors_commit_with_their_messages(outbox: Outbox) -> None:
    assert outbox.get_cursor("meter-1") is None
    outbox.put_many([msg(1)], cursors={"meter-1": "seq=1", "meter-2": "x"})
    assert outbox.get_cursor("meter-1") == "seq=1"
    outbox.set_cursor("meter-1", "seq=2")
    assert outbox.get_cursor("meter-1") == "seq=2"
    # a failing cursor write rolls the messages of the same call back
    with pytest.raises(OutboxError, match=r"outbox\.db"):
        outbox.put_many([msg(2), msg(3)], cursors={"meter-1": None})  # type: ignore[dict-item]
    assert outbox.pending() == 1
    assert outbox.get_cursor("meter-1") == "seq=2"


def test_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path, synchronous="NORMAL") as ob:
        ob.put_many([msg(i) for i in range(10)], cursors={"k": "9"})
        ob.ack([r.id for r in ob.lease(4)])
    with Outbox(path) as ob:
        assert ob.pending() == 6
        assert ob.get_cursor("k") == "9"
        assert ob.lease(1)[0].msg_id == f"{4:032x}"


def test_closed_outbox_raises(tmp_path: Path) -> None:
    ob = Outbox(tmp_path / "o.db")
    ob.close()
    with pytest.raises(OutboxError, match="closed"):
        ob.pending()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    Outbox(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(OutboxError, match="newer than this software supports") as info:
        Outbox(path)
    assert info.value.path == path
    assert str(path) in str(info.value)


def test_corrupt_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(OutboxError, match="not a usable") as info:
        Outbox(path)
    assert str(path) in str(info.value)


def test_unopenable_path_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "missing-dir" / "outbox.db"
    with pytest.raises(OutboxError) as info:
        Outbox(path)
    assert str(path) in str(info.value)


def test_writer_and_relay_threads(outbox: Outbox) -> None:
    """The agent writes while the relay leases and acks from another thread."""
    total = 3000
    seen: list[str] = []
    done = threading.Event()

    def relay() -> None:
        after = 0
        deadline = time.monotonic() + 20
        while len(seen) < total and time.monotonic() < deadline:
            recs = outbox.lease(200, after_id=after)
            if recs:
                seen.extend(r.msg_id for r in recs)
                after = recs[-1].id
                outbox.ack([r.id for r in recs])
        done.set()

    t = threading.Thread(target=relay)
    t.start()
    for start in range(0, total, 100):
        outbox.put_many([msg(i) for i in range(start, start + 100)], cursors={"k": str(start)})
    assert done.wait(25)
    t.join()
    assert seen == [f"{i:032x}" for i in range(total)]
    assert outbox.pending() == 0


CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from gateway.outbox import Outbox
    from gateway.wire import OutboundMessage
    ob = Outbox(Path(sys.argv[1]), synchronous=sys.argv[2])
    batch = 50
    i = 0
    print("ready", flush=True)
    while True:
        msgs = [OutboundMessage(topic="remon/v1/s1/d1/obs", payload=b"p" * 200,
                                msg_id=f"{n:032x}") for n in range(i, i + batch)]
        ob.put_many(msgs, cursors={"meter": str(i + batch - 1)})
        i += batch
    """
)


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
def test_sigkill_mid_stream_leaves_a_consistent_outbox(tmp_path: Path, synchronous: str) -> None:
    path = tmp_path / "outbox.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), synchronous],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(0.6)
    finally:
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL, err.decode()
    with Outbox(path) as ob:
        cursor = ob.get_cursor("meter")
        assert cursor is not None
        last = int(cursor)
        n = ob.pending()
        assert n == last + 1 > 0  # every committed batch complete, and nothing beyond the cursor
        assert n % 50 == 0
        ids = [r.msg_id for r in ob.lease(n + 10)]
        assert ids == [f"{i:032x}" for i in range(n)]


class OutboxModel(RuleBasedStateMachine):
    """put/lease/ack sequences against a plain list model."""

    def __init__(self) -> None:
        super().__init__()
        self.model: list[tuple[int, str]] = []  # (id, msg_id), oldest first
        self.known_ids: set[int] = set()

    @initialize(tmp=st.just(None))
    def open(self, tmp: None) -> None:
        import tempfile

        self.dir = tempfile.TemporaryDirectory()
        self.ob = Outbox(Path(self.dir.name) / "o.db", synchronous="NORMAL")

    @rule(keys=st.lists(st.integers(0, 30), max_size=8), cursor=st.none() | st.text(max_size=5))
    def put(self, keys: list[int], cursor: str | None) -> None:
        queued = {m for _, m in self.model}
        expected_new = []
        for k in keys:
            mid = f"{k:032x}"
            if mid not in queued:
                queued.add(mid)
                expected_new.append(mid)
        added = self.ob.put_many(
            [msg(k) for k in keys], cursors=None if cursor is None else {"c": cursor}
        )
        assert added == len(expected_new)
        fresh = self.ob.lease(
            len(expected_new) + 5, after_id=self.model[-1][0] if self.model else 0
        )
        assert [r.msg_id for r in fresh] == expected_new
        self.model.extend((r.id, r.msg_id) for r in fresh)
        if cursor is not None:
            assert self.ob.get_cursor("c") == cursor

    @rule(limit=st.integers(0, 10), skip=st.integers(0, 5))
    def lease(self, limit: int, skip: int) -> None:
        after = self.model[skip - 1][0] if 0 < skip <= len(self.model) else 0
        got = [(r.id, r.msg_id) for r in self.ob.lease(limit, after_id=after)]
        assert got == [e for e in self.model if e[0] > after][:limit]

    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        if not self.model:
            return
        chosen = data.draw(st.lists(st.sampled_from(self.model), max_size=5))
        self.ob.ack([i for i, _ in chosen])
        drop = {i for i, _ in chosen}
        self.model = [e for e in self.model if e[0] not in drop]

    @invariant()
    def pending_matches(self) -> None:
        if hasattr(self, "ob"):
            assert self.ob.pending() == len(self.model)

    def teardown(self) -> None:
        if hasattr(self, "ob"):
            self.ob.close()
            self.dir.cleanup()


TestOutboxModel = OutboxModel.TestCase
