"""Care teams, staff, routing and the alert life cycle through the HTTP API, on real SQLite and
PostgreSQL: who sees which alerts, assignment, bounded snooze, escalation, the audit log."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from cloud_ingest.api import create_app
from cloud_ingest.care import Principal, Role, token_sha256
from cloud_ingest.rules import LifecyclePolicy
from cloud_ingest.service import IngestService
from cloud_ingest.settings import IngestSettings
from cloud_ingest.storage import open_storage
from tests.test_api import batch

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
ADMIN = {"Authorization": "Bearer tok-admin"}


@dataclass
class Clock:
    now: datetime = field(default=T0 + timedelta(hours=1))

    def __call__(self) -> datetime:
        return self.now


@dataclass
class World:
    client: TestClient
    service: IngestService
    clock: Clock
    tokens: dict[str, str]

    def h(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}


def _staff(client: TestClient, sid: str, role: str, teams: list[str]) -> str:
    r = client.put(
        f"/api/v1/staff/{sid}",
        json={"name": sid.replace(".", " ").title(), "role": role, "team_ids": teams},
        headers=ADMIN,
    )
    assert r.status_code == 200, r.text
    token = r.json()["token"]
    assert isinstance(token, str)
    return token


@pytest.fixture
def world(db_url: str) -> Iterator[World]:
    """Two health-centre teams and a home-care team; p1 (north, dispenser client of home care
    east) and p2 (south) each have an alert; p9 is in no team."""
    storage = open_storage(db_url)
    clock = Clock()
    service = IngestService(storage, clock=clock)
    settings = IngestSettings(api_tokens={"tok-admin": "svc.admin"})
    with TestClient(create_app(service, settings)) as client:
        for tid, name in (
            ("north", "North health centre"),
            ("south", "South health centre"),
            ("hc-east", "Home care east"),
        ):
            assert client.put(f"/api/v1/teams/{tid}", json={"name": name}, headers=ADMIN).is_success
        tokens = {
            "dr.north": _staff(client, "dr.north", "clinician", ["north"]),
            "nurse.north": _staff(client, "nurse.north", "clinician", ["north"]),
            "dr.south": _staff(client, "dr.south", "clinician", ["south"]),
            "hc.east": _staff(client, "hc.east", "home_care", ["hc-east"]),
        }
        for ref, team in (("p1", "north"), ("p2", "south")):
            r = client.put(f"/api/v1/patients/{ref}", json={"team_id": team}, headers=ADMIN)
            assert r.status_code == 200, r.text
        r = client.put(
            "/api/v1/patients/p1/dispenser",
            json={
                "home_care_team_id": "hc-east",
                "missed_dose_window_min": 45,
                "dose_times": ["20:00", "08:00"],
            },
            headers=ADMIN,
        )
        assert r.status_code == 200, r.text
        service.ingest_batch(
            batch([2.6], subject="p1")  # level 2 low: high priority
            + batch([2.7], subject="p2", start=3)
            + batch([2.8], subject="p9", start=6)
        )
        yield World(client, service, clock, tokens)
    storage.close()


def _ids(client: TestClient, headers: dict[str, str], **params: object) -> set[str]:
    r = client.get("/api/v1/alerts", params=params, headers=headers)
    assert r.status_code == 200, r.text
    return {a["subject_ref"] for a in r.json()}


def _alert_of(w: World, subject: str) -> dict[str, object]:
    r = w.client.get("/api/v1/alerts", params={"subject": subject}, headers=ADMIN)
    (alert,) = r.json()
    assert isinstance(alert, dict)
    return alert


# -- directory ---------------------------------------------------------------------------------


def test_a_new_staff_member_gets_a_token_once_and_only_its_hash_is_kept(world: World) -> None:
    r = world.client.get("/api/v1/staff", headers=ADMIN)
    by_id = {s["id"]: s for s in r.json()}
    assert by_id["dr.north"]["has_token"] is True
    assert "token" not in by_id["dr.north"]
    # the token works, and the database holds its SHA-256, not the token
    token = world.tokens["dr.north"]
    rec = world.service.directory.staff_by_token(token_sha256(token))
    assert rec is not None
    assert rec.id == "dr.north"
    # changing the member without issue_token keeps the token; issuing replaces it
    r = world.client.put(
        "/api/v1/staff/dr.north",
        json={"name": "Dr North", "role": "clinician", "team_ids": ["north", "south"]},
        headers=ADMIN,
    )
    assert r.json()["token"] is None
    assert world.client.get("/api/v1/alerts", headers=world.h("dr.north")).status_code == 200
    r = world.client.put(
        "/api/v1/staff/dr.north",
        json={"name": "Dr North", "role": "clinician", "team_ids": ["north"], "issue_token": True},
        headers=ADMIN,
    )
    new = r.json()["token"]
    assert new
    assert new != token
    assert world.client.get("/api/v1/alerts", headers=world.h("dr.north")).status_code == 401
    ok = world.client.get("/api/v1/alerts", headers={"Authorization": f"Bearer {new}"})
    assert ok.status_code == 200


def test_an_inactive_staff_members_token_is_refused(world: World) -> None:
    r = world.client.put(
        "/api/v1/staff/nurse.north",
        json={"name": "N", "role": "clinician", "team_ids": ["north"], "active": False},
        headers=ADMIN,
    )
    assert r.status_code == 200
    r = world.client.get("/api/v1/alerts", headers=world.h("nurse.north"))
    assert r.status_code == 401
    assert "unknown or revoked" in r.json()["detail"]


@pytest.mark.parametrize(
    ("path", "body", "needle"),
    [
        ("/api/v1/teams/bad id", {"name": "x"}, "team id 'bad id'"),
        ("/api/v1/teams/t1", {"name": "  "}, "needs a name"),
        ("/api/v1/staff/s1", {"name": "S", "role": "clinician", "team_ids": []}, "at least one"),
        (
            "/api/v1/staff/s1",
            {"name": "S", "role": "clinician", "team_ids": ["nowhere"]},
            "unknown care team(s): nowhere",
        ),
        ("/api/v1/patients/p5", {"team_id": "nowhere"}, "unknown care team(s): nowhere"),
        ("/api/v1/patients/p5", {"team_id": "north", "time_zone": "Europe"}, "unknown time zone"),
        (
            "/api/v1/patients/p5",
            {"team_id": "north", "time_zone": "Mars/Olympus"},
            "unknown time zone 'Mars/Olympus'",
        ),
        (
            "/api/v1/patients/p9/dispenser",
            {"home_care_team_id": "hc-east"},
            "no patient 'p9': add the patient",
        ),
        (
            "/api/v1/patients/p1/dispenser",
            {"home_care_team_id": "hc-east", "missed_dose_window_min": 4},
            "missed_dose_window_min must be 5-300",
        ),
        (
            "/api/v1/patients/p1/dispenser",
            {"home_care_team_id": "hc-east", "missed_dose_window_min": 301},
            "not 301",
        ),
        (
            "/api/v1/patients/p1/dispenser",
            {"home_care_team_id": "hc-east", "dose_times": ["8:00", "24:00", "07:30"]},
            "not ['8:00', '24:00']",
        ),
    ],
)
def test_directory_changes_are_validated_with_a_message(
    world: World, path: str, body: dict[str, object], needle: str
) -> None:
    r = world.client.put(path, json=body, headers=ADMIN)
    assert r.status_code == 422, r.text
    assert needle in r.json()["detail"]


def test_directory_changes_need_the_admin_role_and_are_audited(world: World) -> None:
    r = world.client.put("/api/v1/teams/x", json={"name": "X"}, headers=world.h("dr.north"))
    assert r.status_code == 403
    assert "needs the admin role" in r.json()["detail"]
    assert world.client.get("/api/v1/audit", headers=world.h("dr.north")).status_code == 403
    assert world.client.get("/api/v1/dead-letters", headers=world.h("dr.north")).status_code == 403
    r = world.client.get("/api/v1/audit", params={"object_id": "p1"}, headers=ADMIN)
    actions = [(a["action"], a["actor"]) for a in r.json()]
    assert actions == [("dispenser_client.put", "svc.admin"), ("patient.put", "svc.admin")]
    detail = r.json()[0]["detail"]
    assert detail["dose_times"] == ["08:00", "20:00"]
    assert detail["missed_dose_window_min"] == 45


# -- routing -----------------------------------------------------------------------------------


def test_staff_see_only_their_teams_alerts_admins_see_all(world: World) -> None:
    assert _ids(world.client, ADMIN) == {"p1", "p2", "p9"}
    assert _ids(world.client, world.h("dr.north")) == {"p1"}
    assert _ids(world.client, world.h("dr.south")) == {"p2"}
    # clinical alerts are not for home-care staff, even for their own dispenser client
    assert _ids(world.client, world.h("hc.east")) == set()
    # p9 is in no team: routed nowhere, so only admins see it (never invisible)
    assert _alert_of(world, "p9")["team_id"] is None
    assert _alert_of(world, "p1")["team_id"] == "north"


def test_another_teams_alert_answers_404_for_every_action(world: World) -> None:
    aid = _alert_of(world, "p2")["id"]
    south = world.client.get(f"/api/v1/alerts/{aid}", headers=world.h("dr.south"))
    assert south.status_code == 200
    for method, path, body in (
        ("GET", f"/api/v1/alerts/{aid}", None),
        ("POST", f"/api/v1/alerts/{aid}/acknowledge", None),
        ("POST", f"/api/v1/alerts/{aid}/resolve", None),
        ("POST", f"/api/v1/alerts/{aid}/assign", {"assignee": "dr.north"}),
        ("POST", f"/api/v1/alerts/{aid}/snooze", {"minutes": 5}),
    ):
        r = world.client.request(method, path, json=body, headers=world.h("dr.north"))
        assert r.status_code == 404, (method, path, r.text)
    assert _alert_of(world, "p2")["state"] == "open"


def test_staff_read_only_their_patients_readings_and_thresholds(world: World) -> None:
    north = world.h("dr.north")
    r = world.client.get("/api/v1/observations", params={"subject": "p1"}, headers=north)
    assert r.status_code == 200
    assert len(r.json()) == 1
    r = world.client.get("/api/v1/observations", params={"subject": "p2"}, headers=north)
    assert r.status_code == 404
    r = world.client.get("/api/v1/observations", headers=north)
    assert r.status_code == 403
    assert "must name a subject" in r.json()["detail"]
    # home care reads its dispenser client's events, not other subjects'
    hc = world.h("hc.east")
    assert world.client.get("/api/v1/events", params={"subject": "p1"}, headers=hc).is_success
    r = world.client.get("/api/v1/events", params={"subject": "p2"}, headers=hc)
    assert r.status_code == 404
    # thresholds: read by the team, set by its clinicians only, audited
    path = "/api/v1/patients/p1/thresholds/glucose-low-l1"
    assert world.client.get(path, headers=hc).status_code == 200
    r = world.client.put(path, json={"value": 4.5, "unit": "mmol/L"}, headers=hc)
    assert r.status_code == 403
    r = world.client.put(path, json={"value": 4.5, "unit": "mmol/L"}, headers=north)
    assert r.status_code == 200
    assert r.json()["set_by"] == "dr.north"
    r = world.client.put(
        "/api/v1/patients/p2/thresholds/glucose-low-l1",
        json={"value": 4.5, "unit": "mmol/L"},
        headers=north,
    )
    assert r.status_code == 404
    audit = world.client.get("/api/v1/audit", params={"object_id": "p1"}, headers=ADMIN).json()
    assert audit[0]["action"] == "threshold.put"
    assert audit[0]["actor"] == "dr.north"
    assert audit[0]["detail"]["value"] == 4.5


# -- life cycle --------------------------------------------------------------------------------


def test_assign_to_a_member_of_the_alerts_team_with_its_role(world: World) -> None:
    aid = _alert_of(world, "p1")["id"]
    north = world.h("dr.north")
    url = f"/api/v1/alerts/{aid}/assign"
    for assignee, needle in (
        ("dr.south", "not in the alert's care team (north)"),
        ("hc.east", "not in the alert's care team"),
        ("nobody", "no active staff member 'nobody'"),
    ):
        r = world.client.post(url, json={"assignee": assignee}, headers=north)
        assert r.status_code == 422, r.text
        assert needle in r.json()["detail"]
    r = world.client.post(url, json={"assignee": "nurse.north", "note": "call"}, headers=north)
    assert r.status_code == 200
    assert r.json()["assigned_to"] == "nurse.north"
    assert r.json()["state"] == "open"  # assignment does not acknowledge
    mine = world.client.get(
        "/api/v1/alerts", params={"assigned_to": "nurse.north"}, headers=north
    ).json()
    assert [a["id"] for a in mine] == [aid]
    r = world.client.post(url, json={"assignee": None}, headers=north)
    assert r.json()["assigned_to"] is None
    trail = world.client.get(f"/api/v1/alerts/{aid}", headers=north).json()["events"]
    assert [(e["action"], e["actor"], e["note"]) for e in trail[-2:]] == [
        ("assigned", "dr.north", "assigned to nurse.north: call"),
        ("assigned", "dr.north", "unassigned"),
    ]


def test_snooze_is_for_acknowledged_alerts_bounded_and_hides_until_it_ends(world: World) -> None:
    aid = _alert_of(world, "p1")["id"]  # high priority
    north = world.h("dr.north")
    url = f"/api/v1/alerts/{aid}/snooze"
    r = world.client.post(url, json={"minutes": 10}, headers=north)
    assert r.status_code == 409
    assert "acknowledge it first" in r.json()["detail"]
    assert world.client.post(f"/api/v1/alerts/{aid}/acknowledge", headers=north).is_success
    r = world.client.post(url, json={"minutes": 31}, headers=north)
    assert r.status_code == 422  # the request is wrong, not the alert's state
    assert "at most 30 min, not 31" in r.json()["detail"]
    r = world.client.post(url, json={"minutes": 1e20}, headers=north)  # no overflow: refused
    assert r.status_code == 422
    assert "at most 30 min" in r.json()["detail"]
    assert world.client.post(url, json={"minutes": 0}, headers=north).status_code == 422
    r = world.client.post(url, json={"minutes": 30}, headers=north)
    assert r.status_code == 200
    until = datetime.fromisoformat(r.json()["snoozed_until"])
    assert until == world.clock.now + timedelta(minutes=30)
    working = {"include_snoozed": "false"}
    assert _ids(world.client, north, **working) == set()
    assert _ids(world.client, north) == {"p1"}  # the full list still shows it
    world.clock.now = until
    assert _ids(world.client, north, **working) == {"p1"}
    r = world.client.post(f"/api/v1/alerts/{aid}/resolve", json={"note": "ok"}, headers=north)
    assert r.json()["snoozed_until"] is None


def test_an_unacknowledged_high_alert_escalates_each_interval_until_acknowledged(
    world: World,
) -> None:
    svc, clock = world.service, world.clock
    p1 = _alert_of(world, "p1")
    raised = datetime.fromisoformat(str(p1["raised_at"]))
    clock.now = raised + timedelta(minutes=4, seconds=59)
    assert svc.escalate_due() == 0
    clock.now = raised + timedelta(minutes=5)
    assert svc.escalate_due() == 3  # p1, p2 and p9: all high, none acknowledged
    assert svc.escalate_due() == 0  # the same level is not raised twice
    assert _alert_of(world, "p1")["escalation_level"] == 1
    north = world.h("dr.north")
    assert world.client.post(f"/api/v1/alerts/{p1['id']}/acknowledge", headers=north).is_success
    clock.now = raised + timedelta(hours=2)  # a worker that was down jumps to the cap
    assert svc.escalate_due() == 2
    assert _alert_of(world, "p1")["escalation_level"] == 1  # acknowledged: stays
    p2 = _alert_of(world, "p2")
    assert p2["escalation_level"] == 3
    trail = world.client.get(f"/api/v1/alerts/{p2['id']}", headers=ADMIN).json()["events"]
    notes = [e["note"] for e in trail if e["action"] == "escalated"]
    assert notes[0].startswith("escalation level 1: high-priority alert not acknowledged 5 min")
    assert notes[1].startswith("escalation level 3")


def test_a_cleared_alert_does_not_escalate_and_low_never_does() -> None:
    from cloud_ingest.rules import escalation_level_due

    def due(**kw: object) -> int | None:
        args: dict[str, object] = {
            "state": "open",
            "priority": "high",
            "raised_at": T0,
            "level": 0,
            "cleared": False,
            "now": T0 + timedelta(minutes=12),
        }
        args.update(kw)
        return escalation_level_due(**args)  # type: ignore[arg-type]

    assert due() == 2
    assert due(cleared=True) is None
    assert due(priority="low") is None
    assert due(state="acknowledged") is None
    assert due(level=2) is None
    assert due(priority="medium") is None  # 12 min < 30 min
    custom = LifecyclePolicy(escalate_every={"low": timedelta(minutes=1)}, max_escalation_level=5)
    assert due(priority="low", policy=custom) == 5


def test_a_lifecycle_policy_refuses_non_positive_spans() -> None:
    with pytest.raises(ValueError, match=r"max_snooze\[high\] must be positive"):
        LifecyclePolicy(max_snooze={"high": timedelta(0)})


def test_principal_scope() -> None:
    admin = Principal(id="a", name="a", role=Role.ADMIN, team_ids=frozenset())
    nurse = Principal(id="n", name="n", role=Role.HOME_CARE, team_ids=frozenset({"hc"}))
    assert admin.scope() == (None, None)
    assert nurse.scope() == (frozenset({"hc"}), frozenset({"home_care"}))
