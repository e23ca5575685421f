"""The care team's queue end to end: readings and dispenser events published to a real
Mosquitto, ingested by the real consumer into PostgreSQL, alerts raised, deduplicated,
escalated by the consumer's housekeeping and cleared, and seen through the HTTP API only by the
staff they are routed to."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cloud_ingest.api import create_app
from cloud_ingest.consumer import Consumer, ConsumerConfig
from cloud_ingest.service import IngestService
from cloud_ingest.settings import IngestSettings
from cloud_ingest.storage import open_storage
from device_profiles.events import DeviceEvent, EventKind
from device_profiles.observation import DeviceIdentity, Provenance
from gateway.wire import Subject, encode_events
from remon.brokers import MosquittoProcess
from tests.helpers import T0, envelope, glucose
from tests.test_end_to_end import _publish, wait_until

DEADLINE_S = 30.0
ADMIN = {"Authorization": "Bearer tok-admin"}
DISPENSER = DeviceIdentity(manufacturer="Acme", model="MedRoll 2", serial="MR-9")


@dataclass
class Clock:
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Queue:
    client: TestClient
    service: IngestService
    clock: Clock
    port: int
    tokens: dict[str, str]

    def h(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def alerts(self, who: str, **params: Any) -> list[dict[str, Any]]:
        headers = ADMIN if who == "admin" else self.h(who)
        r = self.client.get("/api/v1/alerts", params=params, headers=headers)
        assert r.status_code == 200, r.text
        out: list[dict[str, Any]] = r.json()
        return out

    def one(self, condition: str) -> dict[str, Any]:
        rows = self.alerts("admin", condition=condition)
        assert len(rows) == 1, rows
        return rows[0]


@pytest.fixture
def queue(pg_url: str, fresh_mosquitto: MosquittoProcess) -> Iterator[Queue]:
    """A broker of its own: retained agent statuses of other tests would add site alerts."""
    mosquitto = fresh_mosquitto
    storage = open_storage(pg_url)
    clock = Clock()
    service = IngestService(storage, clock=clock)
    consumer = Consumer(
        service,
        ConsumerConfig(
            url=mosquitto.url,
            client_id=f"q-{os.getpid()}-{uuid.uuid4().hex[:12]}",
            housekeeping_s=0.1,
        ),
    )
    consumer.start()
    settings = IngestSettings(api_tokens={"tok-admin": "svc.admin"})
    try:
        with TestClient(create_app(service, settings)) as client:
            tokens: dict[str, str] = {}
            for tid in ("north", "hc-east", "hc-west"):
                assert client.put(f"/api/v1/teams/{tid}", json={"name": tid}, headers=ADMIN)
            for sid, role, team in (
                ("dr.north", "clinician", "north"),
                ("hc.east", "home_care", "hc-east"),
                ("hc.west", "home_care", "hc-west"),
            ):
                r = client.put(
                    f"/api/v1/staff/{sid}",
                    json={"name": sid, "role": role, "team_ids": [team]},
                    headers=ADMIN,
                )
                tokens[sid] = r.json()["token"]
            assert client.put("/api/v1/patients/p1", json={"team_id": "north"}, headers=ADMIN)
            r = client.put(
                "/api/v1/patients/p1/dispenser",
                json={"home_care_team_id": "hc-east", "dose_times": ["08:00", "20:00"]},
                headers=ADMIN,
            )
            assert r.status_code == 200, r.text
            yield Queue(client, service, clock, mosquitto.port, tokens)
    finally:
        consumer.stop()
        storage.close()


def dose_missed(n: int) -> DeviceEvent:
    return DeviceEvent(
        kind=EventKind.DOSE_MISSED,
        event_time=T0 + timedelta(hours=n),
        record_key=f"evt:{n}",
        provenance=Provenance(source="serial:test"),
        dose_id=f"dose-{n}",
        scheduled_time=T0 + timedelta(hours=n, minutes=-45),
    )


def publish_events(q: Queue, events: list[DeviceEvent]) -> None:
    msgs = encode_events(
        site="home-p1",
        device_id="disp-1",
        device=DISPENSER,
        subject=Subject(kind="patient", ref="p1"),
        events=events,
        created_at=T0,
    )
    _publish(q.port, [(m.topic, m.payload) for m in msgs])


def test_a_glucose_alert_is_raised_deduplicated_escalated_and_cleared(queue: Queue) -> None:
    q = queue
    low = envelope([glucose(1, 2.6)], site="home-p1", subject="p1")
    _publish(q.port, [(low.topic, low.payload)])
    wait_until(lambda: bool(q.alerts("admin", condition="glucose-low-l2")), DEADLINE_S, "alert")
    alert = q.one("glucose-low-l2")
    assert (alert["priority"], alert["team_id"], alert["audience"]) == (
        "high",
        "north",
        "clinician",
    )
    # repeat evidence, and the same message again: one alert, two triggers
    lower = envelope([glucose(2, 2.5)], site="home-p1", subject="p1")
    _publish(q.port, [(lower.topic, lower.payload), (low.topic, low.payload)])
    wait_until(
        lambda: q.one("glucose-low-l2")["trigger_count"] == 2, DEADLINE_S, "the repeat trigger"
    )
    # routed: the clinician of p1's team sees it, home care does not
    assert [a["id"] for a in q.alerts("dr.north")] == [alert["id"]]
    assert q.alerts("hc.east") == []
    # nobody acknowledges it for 5 minutes: the consumer's housekeeping escalates it
    q.clock.now = datetime.fromisoformat(alert["raised_at"]) + timedelta(minutes=5, seconds=1)
    wait_until(
        lambda: q.one("glucose-low-l2")["escalation_level"] == 1, DEADLINE_S, "the escalation"
    )
    # the glucose comes back up past the threshold and its hysteresis: the all-clear
    ok = envelope([glucose(3, 5.0)], site="home-p1", subject="p1")
    _publish(q.port, [(ok.topic, ok.payload)])
    wait_until(lambda: q.one("glucose-low-l2")["cleared_at"] is not None, DEADLINE_S, "clear")
    final = q.one("glucose-low-l2")
    assert final["state"] == "open"  # cleared is a fact; a person resolves it
    assert final["trigger_count"] == 2
    trail = q.client.get(f"/api/v1/alerts/{alert['id']}", headers=q.h("dr.north")).json()
    assert [e["action"] for e in trail["events"]] == ["raised", "updated", "escalated", "cleared"]
    # a cleared alert escalates no further
    q.clock.now += timedelta(hours=1)
    q.service.housekeeping()
    assert q.one("glucose-low-l2")["escalation_level"] == 1


def test_a_missed_dose_reaches_only_the_clients_home_care_team(queue: Queue) -> None:
    q = queue
    publish_events(q, [dose_missed(1)])
    wait_until(lambda: bool(q.alerts("admin", condition="dose-missed")), DEADLINE_S, "alert")
    alert = q.one("dose-missed")
    assert (alert["kind"], alert["priority"], alert["audience"], alert["team_id"]) == (
        "event",
        "high",
        "home_care",
        "hc-east",
    )
    assert "dose-1" in alert["explanation"]
    assert [a["id"] for a in q.alerts("hc.east")] == [alert["id"]]
    assert q.alerts("hc.west") == []
    assert q.alerts("dr.north") == []
    r = q.client.get(f"/api/v1/alerts/{alert['id']}", headers=q.h("hc.west"))
    assert r.status_code == 404
    # the next missed dose attaches to the open alert; the home-care nurse acknowledges it
    publish_events(q, [dose_missed(2)])
    wait_until(lambda: q.one("dose-missed")["trigger_count"] == 2, DEADLINE_S, "the 2nd dose")
    assert "dose-2" in q.one("dose-missed")["explanation"]
    r = q.client.post(f"/api/v1/alerts/{alert['id']}/acknowledge", headers=q.h("hc.east"))
    assert r.status_code == 200
    assert r.json()["acknowledged_by"] == "hc.east"
