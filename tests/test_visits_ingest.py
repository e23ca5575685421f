"""Kiosk visits (``remon.visit/1``) at the cloud, on real SQLite and PostgreSQL and through a real
Mosquitto: stored whole and once, their readings ordinary observations that the rules see,
a defective visit kept as a dead letter with nothing of it stored."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from cloud_ingest.consumer import Consumer, ConsumerConfig
from cloud_ingest.service import IngestService, RawMessage
from cloud_ingest.storage import Storage, open_storage
from gateway.wire import OutboundMessage, decode_visit
from remon.brokers import MosquittoProcess
from tests.test_end_to_end import _publish, wait_until
from tests.test_wire_visit import END, PATIENT, visit

RECEIVED = END + timedelta(seconds=5)


def raw(msg: OutboundMessage, payload: bytes | None = None) -> RawMessage:
    return RawMessage(topic=msg.topic, payload=payload or msg.payload, received_at=RECEIVED)


@pytest.fixture
def storage(db_url: str) -> Iterator[Storage]:
    s = open_storage(db_url)
    yield s
    s.close()


def test_a_visit_is_stored_whole_once_and_its_readings_are_ordinary(storage: Storage) -> None:
    svc = IngestService(storage, clock=lambda: RECEIVED)
    msg = visit()
    first = svc.ingest_batch([raw(msg)])
    assert (first.visits, first.messages, first.observations, first.dead_letters) == (1, 3, 11, 0)
    # the kiosk resends after a power loss: nothing new, nothing lost
    again = svc.ingest_batch([raw(msg), raw(msg)])
    assert (again.visits, again.observations, again.dead_letters) == (0, 0, 0)
    (v,) = svc.list_visits(subject=PATIENT.ref)
    env = decode_visit(msg.topic, msg.payload)
    assert (v.msg_id, v.visit_ref, v.site, v.quarantined, v.observations) == (
        msg.msg_id,
        "v-20261204-0001",
        "kiosk-0001",
        1,
        11,
    )
    assert v.part_msg_ids == [p.msg_id for p in env.parts]
    assert v.answers == [
        {"id": "smoker", "value": False},
        {"id": "alcohol-units-week", "value": 4},
        {"id": "feeling", "value": "hyvä"},
    ]
    readings = svc.visit_observations(v)
    assert len(readings) == 11
    assert {(r.site, r.subject_ref) for r in readings} == {("kiosk-0001", PATIENT.ref)}
    assert {r.device_id for r in readings} == {"bp", "scale", "rod"}
    # the same readings through the ordinary observation queries
    assert len(svc.list_observations(subject=PATIENT.ref, limit=100)) == 11
    # each kiosk device is bound to the patient it measured
    bindings = svc.storage.device_subjects(subject_ref=PATIENT.ref)
    assert sorted(b.device_id for b in bindings) == ["bp", "rod", "scale"]
    assert svc.list_visits(subject="p-other") == []


def test_a_visits_readings_raise_the_patients_alerts(storage: Storage) -> None:
    """A BP grade 3 reading at the kiosk is the patient's, and raises the patient's alert."""
    from tests.test_wire_visit import CUFF, START, VisitPart, bp

    svc = IngestService(storage, clock=lambda: RECEIVED)
    cuff = VisitPart(device_id="bp", device=CUFF, observations=bp(1, 186, 96, 80, 4))
    result = svc.ingest_batch([raw(visit(parts=[cuff], answers=[]))])
    assert result.alerts_raised >= 1
    (alert,) = svc.list_alerts(subject=PATIENT.ref, condition="bp-systolic-grade3")
    assert alert.last_value == 186
    assert alert.first_time == START + timedelta(minutes=4)


def test_a_defective_visit_is_a_dead_letter_and_nothing_of_it_is_stored(storage: Storage) -> None:
    svc = IngestService(storage, clock=lambda: RECEIVED)
    msg = visit()
    body = json.loads(msg.payload)
    # the last part's reading moved an hour before the visit: not the patient's, per the kiosk
    body["parts"][2]["observations"][0]["effective_time"] = "2026-12-04T08:00:00Z"
    result = svc.ingest_batch([raw(msg, json.dumps(body).encode())])
    assert (result.visits, result.observations, result.dead_letters) == (0, 0, 1)
    (dead,) = svc.list_dead_letters()
    assert (dead.code, dead.path) == ("invalid-value", "parts[2].observations[0].effective_time")
    assert svc.list_observations(subject=PATIENT.ref) == []
    assert svc.list_visits(subject=PATIENT.ref) == []


def test_a_visit_through_mosquitto_and_the_consumer(
    sqlite_url: str, fresh_mosquitto: MosquittoProcess
) -> None:
    storage = open_storage(sqlite_url)
    svc = IngestService(storage)
    consumer = Consumer(
        svc,
        ConsumerConfig(
            url=fresh_mosquitto.url, client_id=f"visit-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        ),
    )
    consumer.start()
    try:
        msg = visit(created_at=datetime.now(UTC))
        _publish(fresh_mosquitto.port, [(msg.topic, msg.payload), (msg.topic, msg.payload)])
        # both copies taken: the second's three parts are duplicates
        wait_until(
            lambda: consumer.stats.totals.get("duplicate_messages", 0) >= 3, 30, "both copies"
        )
        assert consumer.stats.totals["visits"] == 1
        assert len(svc.list_visits(subject=PATIENT.ref)) == 1
        assert len(svc.list_observations(subject=PATIENT.ref, limit=100)) == 11
    finally:
        consumer.stop()
        storage.close()


def test_the_api_lists_a_patients_visits_to_their_care_team_only(storage: Storage) -> None:
    from fastapi.testclient import TestClient

    from cloud_ingest.api import create_app
    from cloud_ingest.settings import IngestSettings

    svc = IngestService(storage, clock=lambda: RECEIVED)
    msg = visit()
    svc.ingest_batch([raw(msg)])
    admin = {"Authorization": "Bearer tok-admin"}
    app = create_app(svc, IngestSettings(api_tokens={"tok-admin": "svc.admin"}))
    with TestClient(app) as c:
        tokens = {}
        for team in ("north", "south"):
            c.put(f"/api/v1/teams/{team}", json={"name": team}, headers=admin)
            body = {"name": team, "role": "clinician", "team_ids": [team]}
            tokens[team] = c.put(f"/api/v1/staff/dr.{team}", json=body, headers=admin).json()[
                "token"
            ]
        c.put(f"/api/v1/patients/{PATIENT.ref}", json={"team_id": "north"}, headers=admin)
        url = f"/api/v1/patients/{PATIENT.ref}/visits"
        r = c.get(url, headers={"Authorization": f"Bearer {tokens['north']}"})
        assert r.status_code == 200, r.text
        (v,) = r.json()
        assert (v["msg_id"], v["visit_ref"], v["quarantined"]) == (msg.msg_id, "v-20261204-0001", 1)
        assert len(v["observations"]) == 11
        assert {o["subject_ref"] for o in v["observations"]} == {PATIENT.ref}
        assert v["answers"][0] == {"id": "smoker", "value": False}
        r = c.get(url, headers={"Authorization": f"Bearer {tokens['south']}"})
        assert r.status_code in (403, 404)
