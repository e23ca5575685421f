"""The SSE queue stream: the change cursor (pure, with properties) and the stream itself over a
real uvicorn server and HTTP connection, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_ingest.api import create_app
from cloud_ingest.api.stream import ChangeCursor
from cloud_ingest.service import IngestService
from cloud_ingest.settings import IngestSettings
from cloud_ingest.storage import open_storage
from remon.brokers import free_port
from tests.test_api import batch

DEADLINE_S = 30.0
ADMIN = {"Authorization": "Bearer tok-admin"}


# -- the cursor --------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_cursor_waits_for_an_id_committed_after_a_newer_one() -> None:
    c = ChangeCursor(10)
    assert c.take([11, 13], [(11, "a"), (13, "c")]) == ["a", "c"]
    assert c.after == 13
    assert c.pending() == [12]
    # the late transaction commits: 12 is delivered once, never again
    assert c.take([12], [(12, "b")]) == ["b"]
    assert c.pending() == []
    assert c.take([12, 13], [(12, "b"), (13, "c")]) == []


def test_cursor_forgets_a_gap_that_never_fills() -> None:
    clock = FakeClock()
    c = ChangeCursor(0, gap_s=30.0, clock=clock)
    c.take([1, 3], [])
    assert c.pending() == [2]
    clock.t = 30.0
    assert c.pending() == [2]
    clock.t = 30.1  # a rolled-back transaction: its id never appears
    assert c.pending() == []


def test_cursor_delivers_only_the_rows_it_is_given() -> None:
    """Ids the caller may not see advance the cursor without being delivered."""
    c = ChangeCursor(0)
    assert c.take([1, 2, 3], [(2, "mine")]) == ["mine"]
    assert c.after == 3
    assert c.pending() == []


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=1, max_value=40).flatmap(
        lambda n: st.tuples(
            st.permutations(list(range(1, n + 1))),
            st.lists(st.integers(min_value=1, max_value=8), min_size=1, max_size=40),
        )
    )
)
def test_every_id_is_delivered_once_whatever_the_commit_order(
    data: tuple[list[int], list[int]],
) -> None:
    """Ids commit in any order, in bursts; each poll sees what has committed so far above the
    cursor plus the awaited gaps (as the query does). Every id comes out exactly once."""
    order, bursts = data
    committed: set[int] = set()
    c = ChangeCursor(0)
    delivered: list[int] = []
    pos = 0
    polls = 0
    while pos < len(order) or c.pending():
        step = bursts[polls % len(bursts)]
        committed.update(order[pos : pos + step])
        pos += step
        awaited = set(c.pending())
        visible = sorted(i for i in committed if i > c.after or i in awaited)
        delivered += c.take(visible, [(i, i) for i in visible])
        polls += 1
        assert polls < 1000
    assert sorted(delivered) == sorted(order)
    assert len(delivered) == len(set(delivered))


# -- the stream over HTTP ----------------------------------------------------------------------


class Server:
    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(
            # open streams end within a second of shutdown, as remon's API server does
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=self.port,
                log_level="warning",
                timeout_graceful_shutdown=1,
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + DEADLINE_S
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            assert self.thread.is_alive(), "uvicorn stopped"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(DEADLINE_S)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Listener:
    """Reads an SSE stream on a thread into a queue of (event, id, data)."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.events: queue.Queue[tuple[str, str | None, Any]] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url, headers), daemon=True)
        self._thread.start()

    def _run(self, url: str, headers: dict[str, str]) -> None:
        try:
            self._read(url, headers)
            if not self._stop.is_set():
                self.events.put(("end", None, None))  # the server ended the stream
        except httpx.HTTPError as exc:
            # the server ends open streams when it shuts down: expected once we are closed
            if not self._stop.is_set():
                self.events.put(("error", None, repr(exc)))

    def _read(self, url: str, headers: dict[str, str]) -> None:
        with (
            httpx.Client(timeout=httpx.Timeout(DEADLINE_S, read=None)) as client,
            client.stream("GET", url, headers=headers) as r,
        ):
            self.events.put(("status", None, r.status_code))
            event, eid, data = "message", None, ""
            for line in r.iter_lines():
                if self._stop.is_set():
                    return
                if line == "":
                    if data:
                        self.events.put((event, eid, json.loads(data)))
                    event, eid, data = "message", None, ""
                elif line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("id: "):
                    eid = line[4:]
                elif line.startswith("data: "):
                    data += line[6:]

    def next(self, kind: str = "alert") -> tuple[str | None, Any]:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no {kind} event within {DEADLINE_S} s"
            event, eid, data = self.events.get(timeout=left)
            assert event != "error", data
            if event == kind:
                return eid, data

    def close(self) -> None:
        self._stop.set()


@pytest.fixture
def api(db_url: str) -> Iterator[tuple[IngestService, str, dict[str, str]]]:
    storage = open_storage(db_url)
    service = IngestService(storage)
    app = create_app(service, IngestSettings(api_tokens={"tok-admin": "svc.admin"}))
    with Server(app) as srv, httpx.Client(base_url=srv.url, headers=ADMIN) as c:
        for tid in ("north", "south"):
            assert c.put(f"/api/v1/teams/{tid}", json={"name": tid}).is_success
        r = c.put(
            "/api/v1/staff/dr.north",
            json={"name": "Dr North", "role": "clinician", "team_ids": ["north"]},
        )
        token = r.json()["token"]
        for ref, team in (("p1", "north"), ("p2", "south")):
            assert c.put(f"/api/v1/patients/{ref}", json={"team_id": team}).is_success
        yield service, srv.url, {"Authorization": f"Bearer {token}"}
    storage.close()


def test_the_stream_sends_the_callers_queue_changes_and_resumes(
    api: tuple[IngestService, str, dict[str, str]],
) -> None:
    service, url, north = api
    listener = Listener(f"{url}/api/v1/alerts/stream", north)
    try:
        assert listener.next("status")[1] == 200
        listener.next("ready")
        # p2 (south) first, then p1 (north): the north clinician gets p1's change only
        service.ingest_batch(batch([2.7], subject="p2", start=10))
        service.ingest_batch(batch([2.6], subject="p1"))
        eid, change = listener.next()
        assert change["alert"]["subject_ref"] == "p1"
        assert change["event"]["action"] == "raised"
        assert change["alert"]["team_id"] == "north"
        assert eid == str(change["event"]["id"])
    finally:
        listener.close()
    # while nobody listens, the alert is acknowledged; a client resuming from its last id
    # (Last-Event-ID, as a browser sends it) gets exactly what it missed
    with httpx.Client(base_url=url, headers=north) as c:
        r = c.post(f"/api/v1/alerts/{change['alert']['id']}/acknowledge")
        assert r.is_success
    resumed = Listener(f"{url}/api/v1/alerts/stream", {**north, "Last-Event-ID": str(eid)})
    try:
        _, change2 = resumed.next()
        assert change2["event"]["action"] == "acknowledged"
        assert change2["event"]["actor"] == "dr.north"
        assert change2["alert"]["state"] == "acknowledged"
    finally:
        resumed.close()


def test_the_stream_needs_a_token(api: tuple[IngestService, str, dict[str, str]]) -> None:
    _, url, _ = api
    r = httpx.get(f"{url}/api/v1/alerts/stream", timeout=DEADLINE_S)
    assert r.status_code == 401
