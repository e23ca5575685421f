"""Team threshold values, PEF personal best and diary settings, device bindings, unrouted
subjects and the arrival screening (future times, implausible values), through the HTTP API on
real SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_ingest.api import create_app
from cloud_ingest.screening import FUTURE_LIMIT, PLAUSIBLE, screen_observation
from cloud_ingest.service import IngestService, RawMessage
from cloud_ingest.settings import IngestSettings
from cloud_ingest.storage import open_storage
from device_profiles.codes import MEASURES
from device_profiles.observation import (
    CLOUD_ONLY_FLAGS,
    DeviceIdentity,
    Observation,
    Provenance,
    QualityFlag,
)
from device_profiles.telemetry import DeviceTelemetry, LinkState
from gateway.wire import (
    AgentStatus,
    Subject,
    WireError,
    decode_observations,
    encode_observations,
    encode_status,
    encode_telemetry,
)

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
ADMIN = {"Authorization": "Bearer tok-admin"}


def reading(
    n: int, value: float, *, measure: str = "glucose.capillary", unit: str = "mmol/L", **kw: object
) -> Observation:
    args: dict[str, object] = {
        "measure": measure,
        "unit": unit,
        "effective_time": T0 + timedelta(minutes=n),
        "record_key": f"{measure}:{n}",
        "provenance": Provenance(source="test"),
        "value": value,
    }
    args.update(kw)
    return Observation(**args)  # type: ignore[arg-type]


def raw(
    obs: list[Observation],
    *,
    subject: str,
    serial: str = "SN1",
    received_at: datetime = T0 + timedelta(hours=1),
) -> list[RawMessage]:
    msgs = encode_observations(
        site=f"home-{subject}",
        device_id="meter-1",
        device=DeviceIdentity(manufacturer="Acme", model="G1", serial=serial),
        subject=Subject(kind="patient", ref=subject),
        observations=obs,
        created_at=T0,
    )
    return [RawMessage(topic=m.topic, payload=m.payload, received_at=received_at) for m in msgs]


@dataclass
class World:
    client: TestClient
    service: IngestService
    north: dict[str, str]
    south: dict[str, str]


@pytest.fixture
def w(db_url: str) -> Iterator[World]:
    storage = open_storage(db_url)
    service = IngestService(storage, clock=lambda: T0 + timedelta(hours=1))
    app = create_app(service, IngestSettings(api_tokens={"tok-admin": "svc.admin"}))
    with TestClient(app) as c:
        tokens = {}
        for team in ("north", "south"):
            assert c.put(f"/api/v1/teams/{team}", json={"name": team}, headers=ADMIN).is_success
            r = c.put(
                f"/api/v1/staff/dr.{team}",
                json={"name": team, "role": "clinician", "team_ids": [team]},
                headers=ADMIN,
            )
            tokens[team] = {"Authorization": f"Bearer {r.json()['token']}"}
        for ref, team in (("p1", "north"), ("p2", "north"), ("p3", "south")):
            assert c.put(f"/api/v1/patients/{ref}", json={"team_id": team}, headers=ADMIN)
        yield World(c, service, tokens["north"], tokens["south"])
    storage.close()


def _alerts(w: World, subject: str) -> list[dict[str, object]]:
    r = w.client.get("/api/v1/alerts", params={"subject": subject}, headers=ADMIN)
    rows: list[dict[str, object]] = r.json()
    return rows


# -- team thresholds ---------------------------------------------------------------------------


def test_a_team_value_applies_to_its_patients_unless_a_patient_has_their_own(w: World) -> None:
    path = "/api/v1/teams/north/thresholds/glucose-low-l1"
    r = w.client.put(path, json={"value": 4.5, "unit": "mmol/L"}, headers=w.north)
    assert r.status_code == 200, r.text
    # p2 has a value of its own, below the team's
    own = w.client.put(
        "/api/v1/patients/p2/thresholds/glucose-low-l1",
        json={"value": 3.5, "unit": "mmol/L"},
        headers=w.north,
    )
    assert own.status_code == 200
    view = w.client.get("/api/v1/patients/p1/thresholds/glucose-low-l1", headers=w.north).json()
    assert (view["value"], view["scope"]) == (4.5, "team")
    assert "care team north value set by dr.north" in view["source"]
    assert view["default_value"] == 3.9
    view2 = w.client.get("/api/v1/patients/p2/thresholds/glucose-low-l1", headers=w.north).json()
    assert (view2["value"], view2["scope"]) == (3.5, "patient")
    view3 = w.client.get("/api/v1/patients/p3/thresholds/glucose-low-l1", headers=w.south).json()
    assert (view3["value"], view3["scope"]) == (3.9, "default")
    # 4.2 mmol/L: low for north's p1 (team 4.5), not for p2 (own 3.5) nor south's p3 (3.9)
    w.service.ingest_batch(
        raw([reading(1, 4.2)], subject="p1")
        + raw([reading(1, 4.2)], subject="p2", serial="SN2")
        + raw([reading(1, 4.2)], subject="p3", serial="SN3")
    )
    (a,) = _alerts(w, "p1")
    assert a["condition"] == "glucose-low-l1"
    assert a["threshold_value"] == 4.5
    assert "care team north" in str(a["explanation"])
    assert _alerts(w, "p2") == []
    assert _alerts(w, "p3") == []
    # removed: the default applies again
    r = w.client.delete(path, headers=w.north)
    assert r.json() == {"deleted": True}
    view = w.client.get("/api/v1/patients/p1/thresholds/glucose-low-l1", headers=w.north).json()
    assert view["scope"] == "default"
    audit = w.client.get("/api/v1/audit", params={"object_id": "north"}, headers=ADMIN).json()
    assert [x["action"] for x in audit[:2]] == ["team_threshold.delete", "team_threshold.put"]


@pytest.mark.parametrize(
    ("who", "team", "body", "status", "needle"),
    [
        ("south", "north", {"value": 4.5, "unit": "mmol/L"}, 403, "set by its clinicians"),
        ("north", "north", {"value": 4.5, "unit": "mg/dL"}, 422, "is set in 'mmol/L'"),
        ("north", "north", {"value": 1.0, "unit": "mmol/L"}, 422, "within 3..6"),
        ("admin", "nowhere", {"value": 4.5, "unit": "mmol/L"}, 422, "unknown care team"),
    ],
)
def test_team_values_are_checked(
    w: World, who: str, team: str, body: dict[str, object], status: int, needle: str
) -> None:
    headers = {"admin": ADMIN, "north": w.north, "south": w.south}[who]
    r = w.client.put(f"/api/v1/teams/{team}/thresholds/glucose-low-l1", json=body, headers=headers)
    assert r.status_code == status, r.text
    assert needle in r.json()["detail"]


def test_an_unknown_condition_is_refused_for_a_team(w: World) -> None:
    r = w.client.put(
        "/api/v1/teams/north/thresholds/no-such", json={"value": 1, "unit": "x"}, headers=w.north
    )
    assert r.status_code == 404
    assert "unknown condition 'no-such'" in r.json()["detail"]


# -- PEF settings ------------------------------------------------------------------------------


def test_pef_personal_best_and_diary_are_validated_and_audited(w: World) -> None:
    url = "/api/v1/patients/p1/pef-personal-best"
    for value, needle in ((49.0, "within 50-900 L/min"), (901.0, "not 901")):
        r = w.client.put(url, json={"value": value}, headers=w.north)
        assert r.status_code == 422
        assert needle in r.json()["detail"]
    assert w.client.put(url, json={"value": 450}, headers=w.south).status_code == 403
    r = w.client.put(url, json={"value": 450}, headers=w.north)
    assert r.status_code == 200
    assert (r.json()["value"], r.json()["unit"], r.json()["set_by"]) == (450.0, "L/min", "dr.north")
    assert w.client.get(url, headers=w.north).json()["value"] == 450.0
    assert w.client.get(url, headers=w.south).status_code == 404  # not their patient
    diary = "/api/v1/patients/p1/pef-diary"
    for body, needle in (
        ({"first_day": "2026-03-10", "last_day": "2026-03-09"}, "is before first_day"),
        ({"first_day": "2026-03-01", "last_day": "2026-03-29"}, "more than 28 days"),
    ):
        r = w.client.put(diary, json=body, headers=w.north)
        assert r.status_code == 422
        assert needle in r.json()["detail"]
    ok = {"first_day": "2026-03-02", "last_day": "2026-03-15"}
    assert w.client.put(diary, json=ok, headers=w.north).status_code == 200
    assert w.client.get(diary, headers=w.north).json()["last_day"] == "2026-03-15"
    audit = w.client.get("/api/v1/audit", params={"object_id": "p1"}, headers=ADMIN).json()
    assert [a["action"] for a in audit[:2]] == ["pef_diary.put", "pef_personal_best.put"]


# -- devices and unrouted subjects -------------------------------------------------------------


def test_device_bindings_over_time_and_unrouted_subjects(w: World) -> None:
    w.service.ingest_batch(raw([reading(1, 5.0), reading(9, 5.5)], subject="p1"))
    w.service.ingest_batch(raw([reading(20, 5.0)], subject="p1"))
    # the same meter later reports for another subject, one nobody has entered yet
    w.service.ingest_batch(raw([reading(30, 2.6)], subject="p-new"))
    rows = w.client.get("/api/v1/devices", params={"subject": "p1"}, headers=w.north).json()
    assert [(r["device_key"], r["first_seen"][:16], r["last_seen"][:16]) for r in rows] == [
        ("Acme|G1|SN1", "2026-03-01T08:01", "2026-03-01T08:20")
    ]
    assert w.client.get("/api/v1/devices", headers=w.north).status_code == 403
    r = w.client.get("/api/v1/devices", params={"device_key": "Acme|G1|SN1"}, headers=ADMIN)
    assert [x["subject_ref"] for x in r.json()] == ["p-new", "p1"]  # newest first
    unrouted = w.client.get("/api/v1/unrouted", headers=ADMIN).json()
    assert [(u["subject_ref"], u["devices"], u["active_alerts"]) for u in unrouted] == [
        ("p-new", 1, 1)
    ]
    assert w.client.get("/api/v1/unrouted", headers=w.north).status_code == 403
    # entered: no longer unrouted
    assert w.client.put("/api/v1/patients/p-new", json={"team_id": "north"}, headers=ADMIN)
    assert w.client.get("/api/v1/unrouted", headers=ADMIN).json() == []


def telemetry(samples: list[DeviceTelemetry], *, subject: str = "p1") -> list[RawMessage]:
    msgs = encode_telemetry(
        site=f"home-{subject}",
        device_id="meter-1",
        device=DeviceIdentity(manufacturer="Acme", model="G1", serial="SN1"),
        subject=Subject(kind="patient", ref=subject),
        samples=samples,
        created_at=T0,
    )
    return [RawMessage(topic=m.topic, payload=m.payload, received_at=T0) for m in msgs]


def test_device_telemetry_keeps_the_newest_of_each_value_whatever_the_arrival_order(
    w: World,
) -> None:
    """Battery, signal and link each keep their newest value: a later link-only sample does not
    erase the battery, an older sample arriving late changes nothing, a resent one neither."""
    w.service.ingest_batch(raw([reading(1, 5.0)], subject="p1"))
    t = [T0 + timedelta(minutes=m) for m in range(4)]
    newest = telemetry([DeviceTelemetry(at=t[2], link=LinkState.CONNECTED, battery_pct=41)])
    assert w.service.ingest_batch(newest).telemetry_samples == 1
    w.service.ingest_batch(
        telemetry([DeviceTelemetry(at=t[3], link=LinkState.DISCONNECTED, clock_offset_s=-92.5)])
    )
    late = telemetry(
        [DeviceTelemetry(at=t[0], link=LinkState.CONNECTED, battery_pct=90, rssi_dbm=-80)]
    )
    w.service.ingest_batch(late)  # older: only its RSSI is news
    w.service.ingest_batch(newest)  # redelivered
    (row,) = w.client.get("/api/v1/devices", params={"subject": "p1"}, headers=w.north).json()
    got = {k: row[k] for k in ("battery_pct", "rssi_dbm", "link", "clock_offset_s")}
    assert got == {
        "battery_pct": 41,
        "rssi_dbm": -80,
        "link": "disconnected",
        "clock_offset_s": -92.5,
    }
    assert row["clock_at"][:16] == "2026-03-01T08:03"
    assert row["battery_at"][:16] == "2026-03-01T08:02"
    assert row["rssi_at"][:16] == "2026-03-01T08:00"
    assert row["link_at"][:16] == "2026-03-01T08:03"
    # the other team sees none of it (not even that the patient exists)
    r = w.client.get("/api/v1/devices", params={"subject": "p1"}, headers=w.south)
    assert r.status_code == 404


def test_one_batch_with_telemetry_of_several_devices_in_different_shapes(w: World) -> None:
    """A demo run found it: rows of one batch carry different fields (battery only, link only)."""
    shapes = [
        {"battery_pct": 12},
        {"link": LinkState.DISCONNECTED},
        {"rssi_dbm": -90, "clock_offset_s": 2.5},
    ]
    batch: list[RawMessage] = []
    for i, fields in enumerate(shapes):
        batch += raw([reading(1, 5.0)], subject="p1", serial=f"SN{i}")
        msgs = encode_telemetry(
            site="home-p1",
            device_id=f"meter-{i}",
            device=DeviceIdentity(manufacturer="Acme", model="G1", serial=f"SN{i}"),
            subject=Subject(kind="patient", ref="p1"),
            samples=[DeviceTelemetry(at=T0, **fields)],  # type: ignore[arg-type]
            created_at=T0,
        )
        batch += [RawMessage(topic=m.topic, payload=m.payload, received_at=T0) for m in msgs]
    result = w.service.ingest_batch(batch)
    assert (result.telemetry_samples, result.dead_letters) == (3, 0)
    rows = w.client.get("/api/v1/devices", params={"subject": "p1"}, headers=w.north).json()
    got = {r["device_key"]: (r["battery_pct"], r["link"], r["rssi_dbm"]) for r in rows}
    assert got == {
        "Acme|G1|SN0": (12, None, None),
        "Acme|G1|SN1": (None, "disconnected", None),
        "Acme|G1|SN2": (None, None, -90),
    }


def test_bad_telemetry_is_dead_lettered_with_its_path_and_the_batch_goes_on(w: World) -> None:
    good = telemetry([DeviceTelemetry(at=T0, link=LinkState.CONNECTED, battery_pct=55)])
    body = json.loads(good[0].payload)
    body["samples"][0]["battery_pct"] = 140
    bad = RawMessage(topic=good[0].topic, payload=json.dumps(body).encode(), received_at=T0)
    w.service.ingest_batch(raw([reading(1, 5.0)], subject="p1"))
    result = w.service.ingest_batch([bad, *good])
    assert (result.dead_letters, result.telemetry_samples) == (1, 1)
    (dl,) = w.client.get("/api/v1/dead-letters", headers=ADMIN).json()
    assert (dl["code"], dl["path"]) == ("invalid-value", "samples[0].battery_pct")
    assert dl["topic"] == good[0].topic
    (row,) = w.client.get("/api/v1/devices", params={"subject": "p1"}, headers=w.north).json()
    assert row["battery_pct"] == 55  # never 100, never 140


# -- screening on arrival ----------------------------------------------------------------------


def test_future_and_implausible_readings_are_stored_flagged_and_raise_nothing(w: World) -> None:
    received = T0 + timedelta(hours=1)
    obs = [
        reading(60 + 16, 2.0),  # 16 min after arrival: future
        reading(60 + 15, 2.1),  # exactly the limit: accepted
        reading(1, 2.2, measure="spo2", unit="%"),  # fine
        reading(2, 101.0, measure="spo2", unit="%"),  # implausible
    ]
    w.service.ingest_batch(raw(obs, subject="p1", received_at=received))
    stored = {
        o["record_key"]: o["quality"]
        for o in w.client.get(
            "/api/v1/observations", params={"subject": "p1", "limit": 10}, headers=w.north
        ).json()
    }
    assert stored == {
        "glucose.capillary:76": ["future-time"],
        "glucose.capillary:75": [],
        "spo2:1": [],
        "spo2:2": ["implausible"],
    }
    alerts = {(a["condition"], a["first_value"]) for a in _alerts(w, "p1")}
    # the flagged 2.0 raised no glucose alert but a device clock fault (its time could not be
    # corrected); the accepted 2.1 raised the level 2 low; SpO2 2.2 % is a plausible (if
    # alarming) value and raised; 101 % did not
    assert alerts == {
        ("glucose-low-l2", 2.1),
        ("spo2-low-news2-3", 2.2),
        ("device-clock-fault", None),
    }


def test_a_hub_cannot_send_cloud_only_flags() -> None:
    for flag in CLOUD_ONLY_FLAGS:
        [m] = encode_observations(
            site="h",
            device_id="d",
            device=DeviceIdentity(manufacturer="A", model="B", serial="C"),
            subject=Subject(kind="patient", ref="p"),
            observations=[reading(1, 5.0, quality=frozenset({flag}))],
            created_at=T0,
        )
        with pytest.raises(WireError) as info:
            decode_observations(m.topic, m.payload)
        assert info.value.path == "observations[0].quality[0]"
        assert "set by the cloud only" in info.value.detail
        assert json.loads(m.payload)["observations"][0]["quality"] == [flag.value]


@settings(max_examples=200, deadline=None)
@given(
    measure=st.sampled_from(sorted(PLAUSIBLE)),
    value=st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    comparator=st.sampled_from([None, "<", "<=", ">", ">="]),
    ahead_s=st.integers(min_value=-86_400, max_value=86_400),
)
def test_screening_never_changes_a_value_and_flags_exactly_what_it_should(
    measure: str, value: float, comparator: str | None, ahead_s: int
) -> None:
    lo, hi = PLAUSIBLE[measure]
    received = T0
    o = Observation(
        measure=measure,
        unit=MEASURES[measure].unit,
        effective_time=T0 + timedelta(seconds=ahead_s),
        record_key="k",
        provenance=Provenance(source="t"),
        value=value,
        comparator=comparator,  # type: ignore[arg-type]
        quality=frozenset({QualityFlag.BELOW_RANGE})
        if comparator in ("<", "<=")
        else frozenset({QualityFlag.ABOVE_RANGE})
        if comparator
        else frozenset(),
    )
    s = screen_observation(o, received)
    assert (s.value, s.comparator, s.effective_time) == (o.value, o.comparator, o.effective_time)
    assert (QualityFlag.FUTURE_TIME in s.quality) == (timedelta(seconds=ahead_s) > FUTURE_LIMIT)
    # the set of values the reading stands for lies entirely outside the bounds
    if comparator is None:
        outside = not lo <= value <= hi
    elif comparator == "<":
        outside = value <= lo
    elif comparator == "<=":
        outside = value < lo
    elif comparator == ">":
        outside = value >= hi
    else:
        outside = value > hi
    assert (QualityFlag.IMPLAUSIBLE in s.quality) == outside
    assert o.quality <= s.quality


def test_missed_pef_diary_sessions_raise_one_alert_and_a_later_session_clears_it(
    db_url: str,
) -> None:
    """Helsinki is UTC+2 in March: the morning window 06-11 is 04-09 UTC, evening 16-21 UTC."""
    storage = open_storage(db_url)
    now = [datetime(2026, 3, 3, 12, 0, tzinfo=UTC)]
    service = IngestService(storage, clock=lambda: now[0])
    app = create_app(service, IngestSettings(api_tokens={"tok-admin": "svc.admin"}))
    try:
        with TestClient(app) as c:
            assert c.put("/api/v1/teams/north", json={"name": "n"}, headers=ADMIN).is_success
            assert c.put("/api/v1/patients/p1", json={"team_id": "north"}, headers=ADMIN)
            r = c.put(
                "/api/v1/patients/p1/pef-diary",
                json={"first_day": "2026-03-02", "last_day": "2026-03-04"},
                headers=ADMIN,
            )
            assert r.status_code == 200, r.text

            def pef(at: datetime, key: str) -> list[RawMessage]:
                o = Observation(
                    measure="pef",
                    unit="L/min",
                    effective_time=at,
                    record_key=key,
                    provenance=Provenance(source="t"),
                    value=420.0,
                )
                return raw([o], subject="p1", received_at=at)

            # 2 March: the morning session done at 07:00 local; at 12:00 UTC on 3 March the
            # evening of 2 March (16-21 UTC) and the morning of 3 March (04-09 UTC, judged from
            # 09:30 after the upload grace) are missed: one alert, two pieces of evidence
            service.ingest_batch(pef(datetime(2026, 3, 2, 5, 0, tzinfo=UTC), "b1"))
            assert service.housekeeping() == 1
            (a,) = _alerts_of(c, "p1")
            assert (a["condition"], a["kind"], a["trigger_count"]) == (
                "pef-session-missed",
                "silence",
                2,
            )
            assert (a["team_id"], a["audience"], a["priority"]) == ("north", "clinician", "low")
            assert service.housekeeping() == 0  # each window is judged once
            # 4 March 09:29 UTC: the evening of 3 March missed; the morning of 4 March not judged
            # yet (its grace runs to 09:30)
            now[0] = datetime(2026, 3, 4, 9, 29, tzinfo=UTC)
            service.housekeeping()
            assert _alerts_of(c, "p1")[0]["trigger_count"] == 3
            now[0] = datetime(2026, 3, 4, 9, 30, tzinfo=UTC)
            service.housekeeping()
            assert _alerts_of(c, "p1")[0]["trigger_count"] == 4
            # a session inside the evening window of 4 March: the all-clear
            service.ingest_batch(pef(datetime(2026, 3, 4, 17, 0, tzinfo=UTC), "b2"))
            now[0] = datetime(2026, 3, 4, 22, 0, tzinfo=UTC)
            service.housekeeping()
            (a,) = _alerts_of(c, "p1")
            assert a["trigger_count"] == 4
            assert str(a["cleared_at"]).startswith("2026-03-04T17:00")
            assert a["state"] == "open"  # a person resolves it
    finally:
        storage.close()


def _alerts_of(c: TestClient, subject: str) -> list[dict[str, object]]:
    r = c.get("/api/v1/alerts", params={"subject": subject}, headers=ADMIN)
    rows: list[dict[str, object]] = r.json()
    return rows


def test_pef_zones_against_the_personal_best_and_device_health_from_reading_flags(
    w: World,
) -> None:
    assert w.client.put(
        "/api/v1/patients/p1/pef-personal-best", json={"value": 500}, headers=w.north
    ).is_success

    def blow(n: int, value: float, **kw: object) -> Observation:
        return reading(n, value, measure="pef", unit="L/min", **kw)

    # 240 L/min is 48 % of 500: red; a blow without a personal best (p2) raises nothing
    w.service.ingest_batch(raw([blow(1, 240.0)], subject="p1"))
    w.service.ingest_batch(raw([blow(1, 240.0)], subject="p2", serial="SN2"))
    (red,) = _alerts(w, "p1")
    assert (red["condition"], red["kind"], red["priority"], red["team_id"]) == (
        "pef-zone-red",
        "reading",
        "high",
        "north",
    )
    assert (red["first_value"], red["threshold_value"]) == (None, None)  # evidence in words
    assert "48" in str(red["explanation"])
    assert _alerts(w, "p2") == []
    # a good blow in the green zone (>= 80 %) an hour later: the all-clear
    w.service.ingest_batch(raw([blow(60, 400.0)], subject="p1"))
    (red,) = _alerts(w, "p1")
    assert red["cleared_at"] is not None
    # device health: a meter reading flagged battery-low raises, a clean one from it clears
    low = reading(40, 6.0, quality=frozenset({QualityFlag.BATTERY_LOW}))
    w.service.ingest_batch(raw([low], subject="p3", serial="SN3"))
    (batt,) = _alerts(w, "p3")
    assert (batt["condition"], batt["kind"], batt["team_id"]) == (
        "device-battery-low",
        "reading",
        "south",
    )
    assert batt["cleared_at"] is None
    w.service.ingest_batch(raw([reading(50, 6.1)], subject="p3", serial="SN3"))
    assert _alerts(w, "p3")[0]["cleared_at"] is not None


def test_a_home_hub_offline_reaches_its_patients_team(w: World) -> None:
    """The site-offline alert of a hub serving one patient goes to that patient's care team; a
    kiosk serving several patients goes to no team (admins)."""
    w.service.ingest_batch(raw([reading(1, 5.0)], subject="p1"))  # p1's hub: home-p1
    kiosk = [
        RawMessage(topic=m.topic, payload=m.payload, received_at=T0 + timedelta(hours=1))
        for ref in ("p2", "p3")
        for m in encode_observations(
            site="kiosk-1",
            device_id="cuff",
            device=DeviceIdentity(manufacturer="Acme", model="K", serial=f"K-{ref}"),
            subject=Subject(kind="patient", ref=ref),
            observations=[reading(2, 5.0)],
            created_at=T0,
        )
    ]
    w.service.ingest_batch(kiosk)
    for site in ("home-p1", "kiosk-1"):
        st = encode_status(AgentStatus(site=site, state="offline", at=T0, agent_version="1"))
        w.service.ingest_batch([RawMessage(topic=st.topic, payload=st.payload, received_at=T0)])
    assert w.service.housekeeping() >= 2  # offline for an hour: past the 10 min grace
    hub = _alerts(w, "home-p1")
    assert [(a["condition"], a["team_id"], a["audience"]) for a in hub] == [
        ("site-offline", "north", "clinician")
    ]
    north = w.client.get("/api/v1/alerts", params={"kind": "silence"}, headers=w.north).json()
    assert [a["subject_ref"] for a in north] == ["home-p1"]
    (k,) = _alerts(w, "kiosk-1")
    assert k["team_id"] is None


def test_a_cgm_level_1_low_is_raised_once_it_has_lasted_15_minutes(w: World) -> None:
    """DOMAIN.md §2: a hypoglycaemia event needs >= 15 consecutive minutes; each 5-min CGM
    reading arrives in its own batch, so the run is found in the stored history."""

    def cgm(n: int, value: float) -> Observation:
        return reading(n, value, measure="glucose.cgm")

    for n in (0, 5, 10):
        w.service.ingest_batch(raw([cgm(n, 3.5)], subject="p1", serial="CGM1"))
    assert _alerts(w, "p1") == []  # 10 min below 3.9: not yet
    w.service.ingest_batch(raw([cgm(15, 3.6)], subject="p1", serial="CGM1"))
    (a,) = _alerts(w, "p1")
    assert (a["condition"], a["priority"], a["trigger_count"]) == ("cgm-low-l1", "medium", 4)
    assert "15 min" in str(a["explanation"])
    # a level 2 value is raised at once, whatever the run
    w.service.ingest_batch(raw([cgm(40, 2.9)], subject="p2", serial="CGM2"))
    assert [x["condition"] for x in _alerts(w, "p2")] == ["glucose-low-l2"]
