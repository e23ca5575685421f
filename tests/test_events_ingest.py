"""Device events through ingest: storage on SQLite and PostgreSQL, dead letters, the API, and one
run from the edge's outbox and relay through a real Mosquitto into the production consumer."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from cloud_ingest.api import create_app
from cloud_ingest.consumer import Consumer, ConsumerConfig
from cloud_ingest.service import IngestResult, IngestService, RawMessage, StorageError
from cloud_ingest.settings import IngestSettings
from cloud_ingest.storage import Storage, open_storage
from device_profiles.events import DeviceEvent, EventKind
from device_profiles.observation import DeviceIdentity, Provenance, QualityFlag
from gateway.outbox import Outbox
from gateway.relay import Relay, RelayConfig
from gateway.wire import OutboundMessage, Subject, encode_events, event_id
from remon.brokers import MosquittoProcess
from tests.helpers import envelope, glucose

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
RECEIVED = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
DISPENSER = DeviceIdentity(
    manufacturer="Acme", model="MedRoll 2", serial="MR-1", transport="serial"
)
NURSE = {"Authorization": "Bearer tok-nurse"}


def wait_until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll (the edge agent's tests have the same helper; importing them pulls in the agent)."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def ev(n: int, kind: EventKind = EventKind.DOSE_MISSED, **kw: Any) -> DeviceEvent:
    args: dict[str, Any] = {
        "kind": kind,
        "event_time": T0 + timedelta(minutes=n),
        "record_key": f"evt:{n}",
        "provenance": Provenance(source="serial:test"),
        "dose_id": f"dose-{n}",
        "scheduled_time": T0 + timedelta(minutes=n - 30),
    }
    args.update(kw)
    return DeviceEvent(**args)


def stock(n: int) -> DeviceEvent:
    return ev(n, EventKind.LOW_STOCK, dose_id=None, scheduled_time=None, details={"doses_left": 3})


def encode(
    events: list[DeviceEvent],
    *,
    subject: str = "p1",
    device_id: str = "disp-1",
    site: str = "home-1",
) -> OutboundMessage:
    [msg] = encode_events(
        site=site,
        device_id=device_id,
        device=DISPENSER,
        subject=Subject(kind="patient", ref=subject),
        events=events,
        created_at=T0,
    )
    return msg


def raw(events: list[DeviceEvent], **kw: str) -> list[RawMessage]:
    m = encode(events, **kw)
    return [RawMessage(topic=m.topic, payload=m.payload, received_at=RECEIVED)]


@pytest.fixture
def storage(db_url: str) -> Iterator[Storage]:
    s = open_storage(db_url)
    yield s
    s.close()


@pytest.fixture
def svc(storage: Storage) -> IngestService:
    return IngestService(storage, clock=lambda: RECEIVED)


def test_migration_creates_the_events_table(storage: Storage) -> None:
    insp = sa.inspect(storage.engine)
    idx = {i["name"]: i["column_names"] for i in insp.get_indexes("device_events")}
    assert idx["ix_device_events_subject_time"] == ["subject_ref", "event_time"]
    assert idx["ix_device_events_kind_time"] == ["kind", "event_time"]
    unique = [u["column_names"] for u in insp.get_unique_constraints("device_events")]
    assert ["event_id"] in unique


def test_events_are_stored_and_listed(svc: IngestService) -> None:
    missed = ev(
        2,
        device_time="2026-03-01T10:02:00",
        clock_offset_s=-1.5,
        details={"window_min": 30, "locked": True, "slot": "A3"},
        quality=frozenset({QualityFlag.SIMULATED}),
    )
    p1 = raw([ev(1, EventKind.DOSE_DUE), missed, stock(3)])
    r = svc.ingest_batch(p1 + raw([ev(4)], subject="p2", device_id="disp-2"))
    assert r == IngestResult(
        messages=0,
        duplicate_messages=0,
        observations=0,
        duplicate_observations=0,
        dead_letters=0,
        alerts_raised=3,
        alerts_updated=0,
        events_stored=4,
        events_duplicate=0,
    )
    rows = svc.list_events(subject="p1")
    assert [e.kind for e in rows] == ["low_stock", "dose_missed", "dose_due"]  # newest first
    m = rows[1]
    assert m.event_id == event_id(DISPENSER, "evt:2", EventKind.DOSE_MISSED)
    assert m.msg_id == json.loads(p1[0].payload)["msg_id"]
    assert (m.site, m.device_id, m.device_key) == ("home-1", "disp-1", "Acme|MedRoll 2|MR-1")
    assert (m.subject_kind, m.subject_ref) == ("patient", "p1")
    assert (m.dose_id, m.scheduled_time, m.event_time) == (
        "dose-2",
        T0 - timedelta(minutes=28),
        T0 + timedelta(minutes=2),
    )
    assert m.event_time.tzinfo == UTC
    assert (m.device_time, m.clock_offset_s) == ("2026-03-01T10:02:00", -1.5)
    assert m.details == {"window_min": 30, "locked": True, "slot": "A3"}
    assert (m.quality, m.provenance_source, m.received_at) == (
        ["simulated"],
        "serial:test",
        RECEIVED,
    )
    low = rows[0]
    assert (low.dose_id, low.scheduled_time, low.details, low.quality) == (
        None,
        None,
        {"doses_left": 3},
        [],
    )
    s = svc.stats()
    assert (s.events, s.messages, s.observations, s.dead_letters) == (4, 0, 0, 0)
    # the dispenser rules raised one alert per subject + condition, for home-care staff; no
    # directory entries here, so they are routed to no team (admins see them)
    alerts = {(a.subject_ref, a.condition): a for a in svc.list_alerts()}
    assert set(alerts) == {("p1", "dose-missed"), ("p1", "low-stock"), ("p2", "dose-missed")}
    missed1 = alerts[("p1", "dose-missed")]
    assert (missed1.kind, missed1.audience, missed1.team_id) == ("event", "home_care", None)
    assert (missed1.priority, missed1.simulated) == ("high", True)
    assert (missed1.threshold_value, missed1.first_value) == (None, None)  # nothing invented
    assert "dose-2" in missed1.explanation
    assert alerts[("p1", "low-stock")].priority == "low"
    # filters
    assert [e.dose_id for e in svc.list_events(kind="dose_missed")] == ["dose-4", "dose-2"]
    assert [e.subject_ref for e in svc.list_events(device_id="disp-2")] == ["p2"]
    since = svc.list_events(since=T0 + timedelta(minutes=3))
    assert [e.kind for e in since] == ["dose_missed", "low_stock"]
    assert [e.kind for e in svc.list_events(subject="p1", limit=1, offset=1)] == ["dose_missed"]
    assert svc.list_events(subject="nobody") == []


def test_redelivered_events_are_ignored(svc: IngestService) -> None:
    batch = raw([ev(1), ev(2)])
    first = svc.ingest_batch(batch + batch)  # twice in one batch
    assert (first.events_stored, first.events_duplicate, first.dead_letters) == (2, 2, 0)
    again = svc.ingest_batch(batch)  # redelivery
    assert (again.events_stored, again.events_duplicate, again.dead_letters) == (0, 2, 0)
    # the same event re-read into another envelope (another msg_id) is stored once too
    overlap = raw([ev(2), ev(3)])
    assert overlap[0].payload != batch[0].payload
    r = svc.ingest_batch(overlap)
    assert (r.events_stored, r.events_duplicate) == (1, 1)
    assert [e.dose_id for e in svc.list_events()] == ["dose-3", "dose-2", "dose-1"]
    assert (svc.stats().events, svc.stats().dead_letters) == (3, 0)


def test_a_reused_event_id_with_other_facts_is_a_dead_letter_not_a_duplicate(
    svc: IngestService,
) -> None:
    svc.ingest_batch(raw([ev(1)]))
    # a dispenser whose event numbering restarted: same record key and kind, another dose
    restarted = raw([ev(1, event_time=T0 + timedelta(days=1), dose_id="dose-99")])
    r = svc.ingest_batch(restarted)
    assert (r.events_stored, r.events_duplicate, r.dead_letters) == (0, 1, 1)
    [d] = svc.list_dead_letters()
    assert (d.code, d.path, d.payload) == ("id-conflict", "events[0]", restarted[0].payload)
    assert "dose-99" in d.detail
    assert "dose-1" in d.detail
    assert [e.dose_id for e in svc.list_events()] == ["dose-1"]


def _doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(encode([ev(1)]).payload)
    return doc


def _bad(fn: Any) -> bytes:
    doc = _doc()
    fn(doc)
    return json.dumps(doc).encode()


def test_bad_event_payloads_are_dead_lettered_and_the_rest_stored(svc: IngestService) -> None:
    good = raw([ev(1)])[0]
    obs = envelope([glucose(1, 6.0)], site="home-1", device_id="disp-1")
    cases = [
        (b"{", "not-json", ""),
        (
            _bad(lambda d: d["events"][0].update(kind="dose_exploded")),
            "invalid-value",
            "events[0].kind",
        ),
        (_bad(lambda d: d["events"][0].pop("dose_id")), "missing-field", "events[0].dose_id"),
        (
            _bad(lambda d: d["events"][0].update(details={"x": {"y": 1}})),
            "wrong-type",
            "events[0].details.x",
        ),
        (_bad(lambda d: d.update(msg_id="0" * 32)), "id-mismatch", "msg_id"),
        (obs.payload, "unknown-schema", "schema"),  # an observation envelope on an event topic
    ]
    batch = [RawMessage(topic=good.topic, payload=p, received_at=RECEIVED) for p, _, _ in cases]
    batch.append(
        RawMessage(topic="remon/v1/BAD/x/event", payload=good.payload, received_at=RECEIVED)
    )
    batch += [good, RawMessage(topic=obs.topic, payload=obs.payload, received_at=RECEIVED)]
    r = svc.ingest_batch(batch)
    assert (r.dead_letters, r.events_stored, r.observations) == (len(cases) + 1, 1, 1)
    dead = svc.list_dead_letters()
    assert {(d.payload, d.code, d.path) for d in dead} == {
        *cases,
        (good.payload, "bad-topic", "topic"),
    }
    assert all(d.detail and d.received_at == RECEIVED for d in dead)
    assert [e.dose_id for e in svc.list_events()] == ["dose-1"]


def test_events_commit_with_their_batch_or_not_at_all(db_url: str) -> None:
    storage = open_storage(db_url)
    svc = IngestService(storage)
    storage.engine.dispose()
    with storage.write() as tx:  # break the events table under the service's feet
        tx.conn.exec_driver_sql("DROP TABLE device_events")
    obs = envelope([glucose(1, 6.0)])
    batch = [RawMessage(topic=obs.topic, payload=obs.payload, received_at=RECEIVED), *raw([ev(1)])]
    with pytest.raises(StorageError):
        svc.ingest_batch(batch)
    assert svc.list_observations() == []  # the readings of the failed batch were not committed
    storage.close()


# --------------------------------------------------------------------------------------------
# API


@pytest.fixture
def client(sqlite_url: str) -> Iterator[TestClient]:
    storage = open_storage(sqlite_url)
    service = IngestService(storage, clock=lambda: RECEIVED)
    service.ingest_batch(
        raw([ev(1, EventKind.DOSE_DUE), ev(2), stock(3)])
        + raw([ev(4)], subject="p2", device_id="disp-2")
    )
    settings = IngestSettings(api_tokens={"tok-nurse": "nurse.aho"})
    with TestClient(create_app(service, settings)) as c:
        yield c
    storage.close()


def test_api_lists_events_newest_first_with_filters(client: TestClient) -> None:
    assert client.get("/api/v1/events").status_code == 401
    assert client.get("/api/v1/events", headers={"Authorization": "Bearer x"}).status_code == 401
    r = client.get("/api/v1/events", headers=NURSE, params={"subject": "p1"})
    assert r.status_code == 200
    body = r.json()
    assert [e["kind"] for e in body] == ["low_stock", "dose_missed", "dose_due"]
    assert body[1] == {
        "event_id": event_id(DISPENSER, "evt:2", EventKind.DOSE_MISSED),
        "kind": "dose_missed",
        "event_time": "2026-03-01T08:02:00Z",
        "dose_id": "dose-2",
        "scheduled_time": "2026-03-01T07:32:00Z",
        "device_id": "disp-1",
        "site": "home-1",
        "subject": {"kind": "patient", "ref": "p1"},
        "details": {},
        "quality": [],
        "received_at": "2026-03-01T09:00:00Z",
    }
    assert body[0]["details"] == {"doses_left": 3}

    def kinds(**params: object) -> list[tuple[str, str]]:
        got = client.get("/api/v1/events", headers=NURSE, params=params)
        assert got.status_code == 200
        return [(e["subject"]["ref"], e["kind"]) for e in got.json()]

    assert kinds(kind="dose_missed") == [("p2", "dose_missed"), ("p1", "dose_missed")]
    assert kinds(device_id="disp-2") == [("p2", "dose_missed")]
    assert kinds(since="2026-03-01T10:03:00+02:00") == [("p2", "dose_missed"), ("p1", "low_stock")]
    assert kinds(limit=2, offset=1) == [("p1", "low_stock"), ("p1", "dose_missed")]
    assert client.get("/api/v1/stats", headers=NURSE).json()["events"] == 4


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"kind": "dose_exploded"}, "kind"),
        ({"since": "2026-03-01T08:00:00"}, "since"),  # no UTC offset
        ({"limit": 0}, "limit"),
        ({"offset": -1}, "offset"),
        ({"subject": ""}, "subject"),
    ],
)
def test_api_validation_errors_name_the_field(
    client: TestClient, params: dict[str, object], field: str
) -> None:
    r = client.get("/api/v1/events", headers=NURSE, params=params)
    assert r.status_code == 422
    assert any(field in e["loc"] for e in r.json()["detail"])


# --------------------------------------------------------------------------------------------
# end to end: edge outbox -> relay -> Mosquitto -> consumer -> storage -> API


@pytest.mark.mosquitto
def test_dose_missed_from_the_edge_is_listed_once_though_published_twice(
    db_url: str, mosquitto: MosquittoProcess, tmp_path: Path
) -> None:
    storage = open_storage(db_url)
    service = IngestService(storage)
    unique = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    consumer = Consumer(
        # no time-driven rules on the shared broker (see tests/test_end_to_end.py's ingest)
        service,
        ConsumerConfig(url=mosquitto.url, client_id=f"it-ev-{unique}", housekeeping_s=None),
    )
    consumer.start()  # returns once the broker granted the subscriptions
    msg = encode([ev(1)], site="ev-site", subject="p-dispenser")
    relay_cfg = RelayConfig(url=mosquitto.url, client_id=f"relay-ev-{unique}", poll_s=0.1)
    try:
        with Outbox(tmp_path / "outbox.db", synchronous="NORMAL") as outbox:
            relay = Relay(outbox, relay_cfg, site="ev-site", agent_version="test")
            relay.start()
            try:
                for _ in range(2):  # the second time: a re-read after the agent restarted
                    assert outbox.put_many([msg]) == 1
                    relay.wake()
                    assert relay.wait_drained(20), "the relay did not publish the event"
                assert relay.stats.acked >= 2
            finally:
                relay.stop(timeout=5)
        wait_until(
            lambda: consumer.stats.totals.get("events_duplicate", 0) >= 1, 20, "the redelivery"
        )
        assert consumer.stats.totals["events_stored"] == 1
        settings = IngestSettings(api_tokens={"tok-nurse": "nurse.aho"})
        with TestClient(create_app(service, settings)) as c:
            got = c.get("/api/v1/events", headers=NURSE, params={"subject": "p-dispenser"}).json()
        assert [(e["kind"], e["dose_id"], e["site"]) for e in got] == [
            ("dose_missed", "dose-1", "ev-site")
        ]
    finally:
        consumer.stop()
        storage.close()
