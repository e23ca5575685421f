"""HTTP API against a real SQLite file: auth, filters, alert life cycle, 404/409/422."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cloud_ingest.api import create_app
from cloud_ingest.service import IngestService, RawMessage
from cloud_ingest.settings import IngestSettings
from cloud_ingest.storage import open_storage
from device_profiles.observation import DeviceIdentity, Observation, Provenance
from gateway.wire import Subject, encode_observations

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
DEV = DeviceIdentity(manufacturer="Acme", model="GlucoOne", serial="SN1")
NURSE = {"Authorization": "Bearer tok-nurse"}
DOCTOR = {"Authorization": "Bearer tok-doctor"}


def batch(
    values: list[float],
    *,
    subject: str = "p1",
    measure: str = "glucose.capillary",
    unit: str = "mmol/L",
    start: int = 0,
) -> list[RawMessage]:
    obs = [
        Observation(
            measure=measure,
            unit=unit,
            effective_time=T0 + timedelta(minutes=start + i),
            record_key=f"{measure}:{start + i}",
            provenance=Provenance(source="sim"),
            value=v,
        )
        for i, v in enumerate(values)
    ]
    out = encode_observations(
        site="home-1",
        device_id="meter-1",
        device=DEV,
        subject=Subject(kind="patient", ref=subject),
        observations=obs,
        created_at=T0,
    )
    return [RawMessage(topic=m.topic, payload=m.payload, received_at=T0) for m in out]


@pytest.fixture
def svc(sqlite_url: str) -> Iterator[IngestService]:
    storage = open_storage(sqlite_url)
    service = IngestService(storage)
    service.ingest_batch(
        batch([5.0, 2.6])
        + batch([92.0], subject="p2", measure="spo2", unit="%")
        + [RawMessage(topic="remon/v1/home-1/meter-1/obs", payload=b"{oops", received_at=T0)]
    )
    yield service
    storage.close()


@pytest.fixture
def client(svc: IngestService) -> Iterator[TestClient]:
    settings = IngestSettings(api_tokens={"tok-nurse": "nurse.aho", "tok-doctor": "dr.koski"})
    with TestClient(create_app(svc, settings)) as c:
        yield c


def test_health_needs_no_token(client: TestClient) -> None:
    r = client.get("/api/v1/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "database": "ok"}


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic dTpw"}]
)
@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/alerts",
        "/api/v1/observations",
        "/api/v1/stats",
        "/api/v1/dead-letters",
        "/api/v1/patients/p1/thresholds/glucose-low-l1",
    ],
)
def test_auth_required(client: TestClient, headers: dict[str, str], path: str) -> None:
    r = client.get(path, headers=headers)
    assert r.status_code == 401
    assert "token" in r.json()["detail"]
    assert r.headers["www-authenticate"] == "Bearer"


def test_stats(client: TestClient) -> None:
    r = client.get("/api/v1/stats", headers=NURSE)
    assert r.status_code == 200
    assert r.json() == {
        "messages": 2,
        "observations": 3,
        "events": 0,
        "dead_letters": 1,
        "open_alerts": 2,
        "alerts_total": 2,
        "sites_online": 0,
    }


def test_observations_filters(client: TestClient) -> None:
    r = client.get("/api/v1/observations", headers=NURSE, params={"subject": "p1"})
    assert [o["value"] for o in r.json()] == [2.6, 5.0]
    r = client.get(
        "/api/v1/observations",
        headers=NURSE,
        params={"since": "2026-03-01T08:01:00Z", "measure": "glucose.capillary"},
    )
    assert [o["value"] for o in r.json()] == [2.6]
    r = client.get(
        "/api/v1/observations", headers=NURSE, params={"until": "2026-03-01T10:01:00+02:00"}
    )
    assert [o["value"] for o in r.json()] == [92.0, 5.0]
    assert (
        client.get("/api/v1/observations", headers=NURSE, params={"limit": 1})
        .json()[0]["effective_time"]
        .startswith("2026-03-01T08")
    )


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/api/v1/observations", {"since": "yesterday"}, "since"),
        ("/api/v1/observations", {"since": "2026-03-01T08:00:00"}, "since"),  # no offset
        ("/api/v1/observations", {"limit": 0}, "limit"),
        ("/api/v1/alerts", {"state": "closed"}, "state"),
        ("/api/v1/alerts", {"priority": "urgent"}, "priority"),
        ("/api/v1/alerts", {"offset": -1}, "offset"),
    ],
)
def test_validation_errors_name_the_field(
    client: TestClient, path: str, params: dict[str, object], field: str
) -> None:
    r = client.get(path, headers=NURSE, params=params)
    assert r.status_code == 422
    assert any(field in e["loc"] for e in r.json()["detail"])


def test_alert_filters(client: TestClient) -> None:
    all_ = client.get("/api/v1/alerts", headers=NURSE).json()
    assert [(a["subject_ref"], a["priority"]) for a in all_] == [("p1", "high"), ("p2", "medium")]
    assert all(a["explanation"] for a in all_)
    r = client.get(
        "/api/v1/alerts",
        headers=NURSE,
        params={
            "state": "open",
            "subject": "p2",
            "priority": "medium",
            "condition": "spo2-low-news2-2",
        },
    )
    assert [a["subject_ref"] for a in r.json()] == ["p2"]
    assert (
        client.get("/api/v1/alerts", headers=NURSE, params={"limit": 1, "offset": 1}).json()[0][
            "subject_ref"
        ]
        == "p2"
    )


def test_alert_life_cycle(client: TestClient) -> None:
    [a] = client.get("/api/v1/alerts", headers=NURSE, params={"subject": "p1"}).json()
    url = f"/api/v1/alerts/{a['id']}"
    r = client.post(f"{url}/acknowledge", headers=NURSE, json={"note": "phoning"})
    assert r.status_code == 200
    assert (r.json()["state"], r.json()["acknowledged_by"]) == ("acknowledged", "nurse.aho")
    r = client.post(f"{url}/acknowledge", headers=NURSE)
    assert r.status_code == 409
    assert "acknowledged" in r.json()["detail"]
    r = client.post(f"{url}/resolve", headers=DOCTOR)  # no body at all
    assert r.status_code == 200
    assert (r.json()["state"], r.json()["resolved_by"]) == ("resolved", "dr.koski")
    assert client.post(f"{url}/resolve", headers=DOCTOR).status_code == 409
    detail = client.get(url, headers=NURSE).json()
    assert [(e["action"], e["actor"], e["note"]) for e in detail["events"]][1:] == [
        ("acknowledged", "nurse.aho", "phoning"),
        ("resolved", "dr.koski", None),
    ]
    assert detail["events"][0]["action"] == "raised"


def test_actor_comes_from_the_token_not_the_body(client: TestClient) -> None:
    [a] = client.get("/api/v1/alerts", headers=NURSE, params={"subject": "p2"}).json()
    r = client.post(
        f"/api/v1/alerts/{a['id']}/acknowledge",
        headers=NURSE,
        json={"note": "x", "actor": "someone.else"},
    )
    assert r.status_code == 422  # unknown body fields are refused
    r = client.post(f"/api/v1/alerts/{a['id']}/acknowledge", headers=NURSE, json={"note": "x"})
    assert r.json()["acknowledged_by"] == "nurse.aho"


def test_alert_not_found_and_bad_id(client: TestClient) -> None:
    assert client.get("/api/v1/alerts/999", headers=NURSE).status_code == 404
    assert client.post("/api/v1/alerts/999/resolve", headers=NURSE).status_code == 404
    r = client.get("/api/v1/alerts/abc", headers=NURSE)
    assert r.status_code == 422
    assert "alert_id" in r.json()["detail"][0]["loc"]


def test_dead_letters(client: TestClient) -> None:
    [d] = client.get("/api/v1/dead-letters", headers=NURSE).json()
    assert (d["code"], d["payload_text"], d["payload_bytes"]) == ("not-json", "{oops", 5)
    assert d["detail"]


def test_patient_thresholds(client: TestClient, svc: IngestService) -> None:
    url = "/api/v1/patients/p1/thresholds/glucose-low-l1"
    r = client.get(url, headers=NURSE)
    assert (r.status_code, r.json()["value"], r.json()["overridden"]) == (200, 3.9, False)
    r = client.put(url, headers=DOCTOR, json={"value": 4.5, "unit": "mmol/L"})
    assert r.status_code == 200
    assert (r.json()["value"], r.json()["set_by"]) == (4.5, "dr.koski")
    assert client.get(url, headers=NURSE).json()["value"] == 4.5
    r = client.put(url, headers=DOCTOR, json={"value": 80, "unit": "mg/dL"})
    assert r.status_code == 422
    assert "mmol/L" in r.json()["detail"]
    r = client.put(url, headers=DOCTOR, json={"value": "low", "unit": "mmol/L"})
    assert r.status_code == 422
    assert "value" in r.json()["detail"][0]["loc"]
    assert client.get("/api/v1/patients/p1/thresholds/nope", headers=NURSE).status_code == 404
    # the override takes effect on the next readings
    svc.ingest_batch(batch([4.2], start=10))
    alerts = client.get(
        "/api/v1/alerts", headers=NURSE, params={"condition": "glucose-low-l1"}
    ).json()
    assert [a["threshold_value"] for a in alerts] == [4.5]


def test_openapi_docs(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert "/api/v1/alerts/{alert_id}/resolve" in spec["paths"]


def test_database_errors_are_503_without_driver_details(tmp_path: Path) -> None:
    db_dir = tmp_path / "secret-db-dir"
    db_dir.mkdir()
    storage = open_storage(f"sqlite:///{db_dir / 'remon.db'}")
    app = create_app(IngestService(storage), IngestSettings(api_tokens={"t": "x"}))
    shutil.rmtree(db_dir)
    storage.engine.dispose()  # no pooled connection to the deleted file survives
    try:
        with TestClient(app) as c:
            r = c.get("/api/v1/health")
        assert r.status_code == 503
        assert r.json() == {"detail": "database unavailable"}  # nothing of the driver's message
    finally:
        storage.close()


def test_sites_show_the_last_reported_state(svc: IngestService, client: TestClient) -> None:
    from gateway.wire import AgentStatus, encode_status

    for state, minute in (("online", 0), ("offline", 5)):
        m = encode_status(
            AgentStatus(
                site="home-7", state=state, at=T0 + timedelta(minutes=minute), agent_version="0.1.0"
            )
        )
        svc.ingest_batch([RawMessage(topic=m.topic, payload=m.payload, received_at=T0)])
    assert client.get("/api/v1/sites").status_code == 401
    r = client.get("/api/v1/sites", headers=NURSE)
    assert r.status_code == 200
    sites = {s["site"]: s for s in r.json()}
    assert sites["home-7"]["state"] == "offline"
    assert sites["home-7"]["agent_version"] == "0.1.0"
