"""The care team's pages (cloud_ingest.web) over HTTP with FastAPI's TestClient, on real SQLite:
sign-in and its guards (open redirects, cross-site posts), routing (staff see only their teams'
patients and alerts), the alert actions and the threshold form changing what the API then
returns, the language switch, the security headers of every page, and the patient view, reports
and fleet drawn from 14 days of the demo's history ingested through the production decoder and
rules.

Alerts are raised the way production raises them: wire envelopes (gateway.wire) ingested by
IngestService.ingest_batch, the consumer's path without the broker in between.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.etree import ElementTree as ET

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response

from cloud_ingest.care import CareDirectory, Principal, Role
from cloud_ingest.rules.thresholds import OVERRIDE_RANGES
from cloud_ingest.service import IngestService, RawMessage
from cloud_ingest.settings import IngestSettings
from cloud_ingest.storage import Storage, open_storage
from cloud_ingest.web import create_web_app
from device_profiles.observation import DeviceIdentity, Observation, Provenance
from gateway.wire import Subject, VisitEnvelope, decode_visit, encode_observations
from remon.demo_history import (
    HISTORY_DAYS,
    PERSONAL_BEST_L_MIN,
    history_plan,
    seed_pef_diaries,
    seed_personal_bests,
)
from tests.helpers import missed_dose as missed_dose_message

ADMIN_TOKEN = "tok-admin"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SAME_ORIGIN = {"Origin": "http://testserver"}
METER = DeviceIdentity(
    manufacturer="Acme", model="Gluco 1", serial="SN-1", firmware="1.2", transport="ble"
)
LOW_L2 = "glucose-low-l2"
DOSE_MISSED = "dose-missed"


# -- builders ------------------------------------------------------------------------------------


def glucose_reading(subject: str, value: float, *, at: datetime, now: datetime) -> RawMessage:
    obs = Observation(
        measure="glucose.capillary",
        unit="mmol/L",
        effective_time=at,
        record_key=f"seq:{at.timestamp():.0f}",
        provenance=Provenance(source="test"),
        value=value,
    )
    (msg,) = encode_observations(
        site=f"home-{subject}",
        device_id=f"meter-{subject}",
        device=METER,
        subject=Subject(kind="patient", ref=subject),
        observations=[obs],
        created_at=now,
    )
    return RawMessage(topic=msg.topic, payload=msg.payload, received_at=now)


def missed_dose(subject: str, *, at: datetime, now: datetime) -> RawMessage:
    msg = missed_dose_message(subject, at=at, dose_id=f"dose-{at:%H%M}", created_at=now)
    return RawMessage(topic=msg.topic, payload=msg.payload, received_at=now)


# -- reading the pages ---------------------------------------------------------------------------


def alert_ids(page: str) -> set[int]:
    return {int(x) for x in re.findall(r'data-alert="(\d+)"', page)}


def patient_links(page: str) -> set[str]:
    return set(re.findall(r'href="/ui/patients/([^"/?#]+)"', page))


def error_notice(page: str) -> str:
    m = re.search(r'<p class="notice error" role="alert"[^>]*>(.*?)</p>', page, re.S)
    assert m is not None, "no error notice on the page"
    return html.unescape(m.group(1)).strip()


def html_lang(page: str) -> str | None:
    m = re.search(r'<html lang="([^"]*)"', page)
    return m.group(1) if m else None


def svgs(page: str) -> dict[str, ET.Element]:
    """Every inline SVG of a page by its id, parsed (so each one is well-formed XML)."""
    out: dict[str, ET.Element] = {}
    for source in re.findall(r"<svg\b.*?</svg>", page, re.S):
        root = ET.fromstring(source)
        out[root.attrib["id"]] = root
    return out


def drawn(chart: ET.Element) -> bool:
    return chart.attrib.get("data-empty") != "true"


# -- a small care organisation -------------------------------------------------------------------


@dataclass
class World:
    app: FastAPI
    service: IngestService
    storage: Storage
    api: TestClient
    tokens: dict[str, str]
    alerts: dict[tuple[str, str], int]  # (subject, condition) -> alert id
    now: datetime
    clients: list[TestClient] = field(default_factory=list)

    def h(self, who: str) -> dict[str, str]:
        return ADMIN if who == "admin" else {"Authorization": f"Bearer {self.tokens[who]}"}

    def anonymous(self) -> TestClient:
        client = TestClient(self.app)
        self.clients.append(client)
        return client

    def sign_in(self, who: str) -> TestClient:
        client = self.anonymous()
        token = ADMIN_TOKEN if who == "admin" else self.tokens[who]
        r = client.post(
            "/ui/login",
            data={"token": token, "next": "/ui/queue"},
            headers=SAME_ORIGIN,
            follow_redirects=False,
        )
        assert r.status_code == 303, r.text
        return client

    def alert(self, key: tuple[str, str]) -> dict[str, Any]:
        r = self.api.get(f"/api/v1/alerts/{self.alerts[key]}", headers=ADMIN)
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out

    def threshold(self, subject: str, condition: str) -> dict[str, Any]:
        r = self.api.get(f"/api/v1/patients/{subject}/thresholds/{condition}", headers=ADMIN)
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out

    def audit(self, subject: str) -> list[dict[str, Any]]:
        r = self.api.get(
            "/api/v1/audit", params={"object_kind": "patient", "object_id": subject}, headers=ADMIN
        )
        assert r.status_code == 200, r.text
        out: list[dict[str, Any]] = r.json()
        return out


@pytest.fixture
def world(sqlite_url: str) -> Iterator[World]:
    """Health-centre teams north (p1, p3) and south (p2); home-care teams east (p1's dispenser)
    and west (p3's). Open alerts: a level 2 low of p1 and of p2 (for clinicians), a missed dose
    of p1 and of p3 (for home care)."""
    storage = open_storage(sqlite_url)
    service = IngestService(storage)
    app = create_web_app(service, IngestSettings(api_tokens={ADMIN_TOKEN: "svc.admin"}))
    api = TestClient(app)
    try:
        for team in ("north", "south", "hc-east", "hc-west"):
            r = api.put(f"/api/v1/teams/{team}", json={"name": team.title()}, headers=ADMIN)
            assert r.status_code == 200, r.text
        tokens: dict[str, str] = {}
        for sid, name, role, team in (
            ("dr.north", "Dr North", "clinician", "north"),
            ("nurse.north", "Nurse North", "clinician", "north"),
            ("dr.south", "Dr South", "clinician", "south"),
            ("hc.east", "Home Care East", "home_care", "hc-east"),
            ("hc.west", "Home Care West", "home_care", "hc-west"),
        ):
            r = api.put(
                f"/api/v1/staff/{sid}",
                json={"name": name, "role": role, "team_ids": [team]},
                headers=ADMIN,
            )
            assert r.status_code == 200, r.text
            tokens[sid] = r.json()["token"]
        for ref, team in (("p1", "north"), ("p2", "south"), ("p3", "north")):
            r = api.put(f"/api/v1/patients/{ref}", json={"team_id": team}, headers=ADMIN)
            assert r.status_code == 200, r.text
        for ref, team in (("p1", "hc-east"), ("p3", "hc-west")):
            r = api.put(
                f"/api/v1/patients/{ref}/dispenser",
                json={"home_care_team_id": team, "dose_times": ["08:00", "20:00"]},
                headers=ADMIN,
            )
            assert r.status_code == 200, r.text
        now = datetime.now(UTC)
        result = service.ingest_batch(
            [
                glucose_reading("p1", 2.6, at=now - timedelta(minutes=30), now=now),
                glucose_reading("p2", 2.7, at=now - timedelta(minutes=20), now=now),
                missed_dose("p1", at=now - timedelta(hours=1), now=now),
                missed_dose("p3", at=now - timedelta(hours=2), now=now),
            ]
        )
        assert (result.alerts_raised, result.dead_letters) == (4, 0)
        alerts = {(a.subject_ref, a.condition): a.id for a in service.list_alerts(limit=100)}
        assert set(alerts) == {
            ("p1", LOW_L2),
            ("p2", LOW_L2),
            ("p1", DOSE_MISSED),
            ("p3", DOSE_MISSED),
        }
        w = World(app, service, storage, api, tokens, alerts, now)
        yield w
        for client in w.clients:
            client.close()
    finally:
        api.close()
        storage.close()


# -- sign-in -------------------------------------------------------------------------------------


def test_a_page_without_a_session_redirects_to_sign_in_with_the_way_back(world: World) -> None:
    anon = world.anonymous()
    for path in ("/ui/queue?state=all&kind=event", "/ui/patients/p1", "/ui/fleet"):
        r = anon.get(path, follow_redirects=False)
        assert r.status_code == 303
        target = urlsplit(r.headers["location"])
        assert target.path == "/ui/login"
        assert parse_qs(target.query) == {"next": [path]}
        assert "p1" not in r.text
    # the sign-in form carries the way back
    form = anon.get("/ui/login", params={"next": "/ui/patients/p1"})
    assert form.status_code == 200
    assert '<input type="hidden" name="next" value="/ui/patients/p1">' in form.text
    # the site's root leads to the queue (and from there to sign-in)
    r = anon.get("/", follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/ui/queue")
    # a form posted without a session does nothing and asks to sign in
    key = ("p1", LOW_L2)
    r = anon.post(
        f"/ui/alerts/{world.alerts[key]}/acknowledge", headers=SAME_ORIGIN, follow_redirects=False
    )
    assert r.status_code == 303
    assert urlsplit(r.headers["location"]).path == "/ui/login"
    assert world.alert(key)["state"] == "open"


def test_a_wrong_token_shows_an_error_and_sets_no_session(world: World) -> None:
    for token in ("not-a-token", "", "   ", "tok-admin-x", world.tokens["dr.north"] + "x"):
        anon = world.anonymous()
        r = anon.post(
            "/ui/login",
            data={"token": token, "next": "/ui/patients"},
            headers=SAME_ORIGIN,
            follow_redirects=False,
        )
        assert r.status_code == 401, token
        assert 'id="login-error"' in r.text
        assert "Tunnistetta ei tunneta tai se on peruttu." in r.text
        assert "set-cookie" not in r.headers, token
        assert "remon_session" not in anon.cookies
        assert anon.get("/ui/patients", follow_redirects=False).status_code == 303


def test_the_right_token_sets_an_httponly_session_cookie_and_goes_on(world: World) -> None:
    anon = world.anonymous()
    r = anon.post(
        "/ui/login",
        data={"token": world.tokens["dr.north"], "next": "/ui/patients"},
        headers=SAME_ORIGIN,
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert r.headers["location"] == "/ui/patients"
    cookie = r.headers["set-cookie"]
    attrs = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
    assert cookie.startswith("remon_session=")
    assert "httponly" in attrs
    assert "path=/ui" in cookie.lower()
    assert "samesite=strict" in cookie.lower()
    page = anon.get("/ui/patients")
    assert page.status_code == 200
    assert "Dr North" in page.text
    assert patient_links(page.text) == {"p1", "p3"}
    # the cookie is scoped to the UI: the API does not take it in place of a bearer token
    assert anon.get("/api/v1/alerts").status_code == 401
    # signing out ends the session
    out = anon.post("/ui/logout", headers=SAME_ORIGIN, follow_redirects=False)
    assert (out.status_code, out.headers["location"]) == (303, "/ui/login")
    assert anon.get("/ui/patients", follow_redirects=False).status_code == 303


def test_a_new_token_for_the_staff_member_signs_the_old_session_out(world: World) -> None:
    dr = world.sign_in("dr.north")
    assert dr.get("/ui/queue").status_code == 200
    r = world.api.put(
        "/api/v1/staff/dr.north",
        json={"name": "Dr North", "role": "clinician", "team_ids": ["north"], "issue_token": True},
        headers=ADMIN,
    )
    assert r.status_code == 200
    r = dr.get("/ui/queue", follow_redirects=False)
    assert r.status_code == 303
    assert urlsplit(r.headers["location"]).path == "/ui/login"


OFF_SITE = [
    "https://evil.example",
    "https://evil.example/ui/queue",
    "//evil.example",
    "//evil.example/ui/queue",
    "///evil.example",
    " //evil.example",
    "/\\evil.example",
    "/ui/\\\\evil.example",
    "javascript:alert(1)",
    "http:/ui/patients",
    "/api/v1/alerts",
    "ui/patients",
]


def test_no_open_redirect_after_sign_in_or_a_language_switch(world: World) -> None:
    anon = world.anonymous()
    for target in OFF_SITE:
        form = anon.get("/ui/login", params={"next": target})
        assert 'name="next" value="/ui/queue"' in form.text, target
        r = anon.post(
            "/ui/login",
            data={"token": world.tokens["dr.north"], "next": target},
            headers=SAME_ORIGIN,
            follow_redirects=False,
        )
        assert (r.status_code, r.headers["location"]) == (303, "/ui/queue"), target
        r = anon.get("/ui/lang/sv", params={"next": target}, follow_redirects=False)
        assert (r.status_code, r.headers["location"]) == (303, "/ui/queue"), target


def test_a_path_of_the_ui_is_followed_after_sign_in(world: World) -> None:
    anon = world.anonymous()
    r = anon.post(
        "/ui/login",
        data={"token": world.tokens["dr.north"], "next": "/ui/queue?state=all"},
        headers=SAME_ORIGIN,
        follow_redirects=False,
    )
    assert r.headers["location"] == "/ui/queue?state=all"


# -- cross-site posts ----------------------------------------------------------------------------

CROSS_SITE = [
    {"Origin": "https://evil.example"},
    {"Origin": "http://testserver.evil.example"},
    {"Origin": "null"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
    {"Sec-Fetch-Site": "cross-site", "Origin": "http://testserver"},
]


def test_a_post_from_another_site_is_refused_and_changes_nothing(world: World) -> None:
    dr = world.sign_in("dr.north")
    key = ("p1", LOW_L2)
    for headers in CROSS_SITE:
        for action, data in (
            ("acknowledge", {"note": "forged"}),
            ("resolve", {"note": "forged"}),
            ("assign", {"assignee": "nurse.north"}),
        ):
            r = dr.post(
                f"/ui/alerts/{world.alerts[key]}/{action}",
                data=data,
                headers=headers,
                follow_redirects=False,
            )
            assert r.status_code == 403, (headers, action, r.status_code)
            assert "toiselta sivustolta; toimintoa ei tehty" in error_notice(r.text)
        after = world.alert(key)
        assert (after["state"], after["assigned_to"], after["resolved_note"]) == (
            "open",
            None,
            None,
        )
        assert [e["action"] for e in after["events"]] == ["raised"]
        # the threshold form
        r = dr.post(
            "/ui/patients/p1/thresholds/glucose-low-l2",
            data={"value": "3.5"},
            headers=headers,
            follow_redirects=False,
        )
        assert r.status_code == 403, headers
        assert world.threshold("p1", LOW_L2)["scope"] == "default"
        # signing out (a forced sign-out is a nuisance) and signing in (login CSRF)
        r = dr.post("/ui/logout", headers=headers, follow_redirects=False)
        assert r.status_code == 403
        assert dr.get("/ui/queue", follow_redirects=False).status_code == 200
        anon = world.anonymous()
        r = anon.post(
            "/ui/login",
            data={"token": world.tokens["dr.south"]},
            headers=headers,
            follow_redirects=False,
        )
        assert r.status_code == 403
        assert "set-cookie" not in r.headers


def test_a_same_origin_form_under_no_referrer_is_accepted(world: World) -> None:
    """A browser sends Origin: null for a form under Referrer-Policy: no-referrer (the UI's own
    policy); its Sec-Fetch-Site says same-origin, and that is what counts."""
    dr = world.sign_in("dr.north")
    key = ("p1", LOW_L2)
    r = dr.post(
        f"/ui/alerts/{world.alerts[key]}/acknowledge",
        headers={"Origin": "null", "Sec-Fetch-Site": "same-origin"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert world.alert(key)["state"] == "acknowledged"


# -- routing -------------------------------------------------------------------------------------


def test_a_clinician_sees_only_their_teams_patients_and_alerts(world: World) -> None:
    north, south = world.sign_in("dr.north"), world.sign_in("dr.south")
    p2_alert = world.alerts[("p2", LOW_L2)]
    assert patient_links(north.get("/ui/patients").text) == {"p1", "p3"}
    assert patient_links(south.get("/ui/patients").text) == {"p2"}
    for path in (
        "/ui/patients/p2",
        "/ui/patients/p2/reports/pef",
        "/ui/patients/p2/reports/agp",
        f"/ui/alerts/{p2_alert}",
        "/ui/patients/nobody",
    ):
        r = north.get(path)
        assert r.status_code == 404, path
        assert "Ei löytynyt, tai ei näy tiimeillesi." in error_notice(r.text)
        assert "2,7" not in r.text
    assert north.get("/ui/patients/p1").status_code == 200
    assert south.get("/ui/patients/p2").status_code == 200
    # the queue, the page and its live rows
    for path in ("/ui/queue", "/ui/queue/rows", "/ui/queue?state=all", "/ui/queue/rows?state=all"):
        assert alert_ids(north.get(path).text) == {world.alerts[("p1", LOW_L2)]}, path
        assert alert_ids(south.get(path).text) == {p2_alert}, path
    # another team's alert cannot be acted on either
    r = north.post(
        f"/ui/alerts/{p2_alert}/acknowledge", headers=SAME_ORIGIN, follow_redirects=False
    )
    assert r.status_code == 404
    assert world.alert(("p2", LOW_L2))["state"] == "open"
    # an admin sees every alert
    admin = world.sign_in("admin")
    assert alert_ids(admin.get("/ui/queue").text) == set(world.alerts.values())


def test_home_care_sees_only_their_own_dispenser_clients(world: World) -> None:
    east, west = world.sign_in("hc.east"), world.sign_in("hc.west")
    p1_dose, p3_dose = world.alerts[("p1", DOSE_MISSED)], world.alerts[("p3", DOSE_MISSED)]
    for path in ("/ui/queue", "/ui/queue/rows", "/ui/queue?state=all", "/ui/queue/rows?state=all"):
        assert alert_ids(east.get(path).text) == {p1_dose}, path
        assert alert_ids(west.get(path).text) == {p3_dose}, path
    assert patient_links(east.get("/ui/patients").text) == {"p1"}
    assert patient_links(west.get("/ui/patients").text) == {"p3"}
    # the client's clinical alert is not the nurse's, nor the other home-care team's client
    for path in (
        f"/ui/alerts/{world.alerts[('p1', LOW_L2)]}",
        f"/ui/alerts/{p3_dose}",
        "/ui/patients/p3",
        "/ui/patients/p2",
        "/ui/patients/p1/reports/pef",
    ):
        assert east.get(path).status_code == 404, path
    # the client's page: the doses, no clinical view and no threshold form
    page = east.get("/ui/patients/p1")
    assert page.status_code == 200
    charts = svgs(page.text)
    assert "doses" in charts
    assert not {"agp", "pef-diary", "bp"} & set(charts)
    assert "/thresholds/" not in page.text
    assert f'href="/ui/alerts/{p1_dose}"' in page.text
    assert f'href="/ui/alerts/{world.alerts[("p1", LOW_L2)]}"' not in page.text


# -- alert actions -------------------------------------------------------------------------------


def test_alert_actions_change_the_alert_and_redirect_to_a_page(world: World) -> None:
    dr = world.sign_in("dr.north")
    key = ("p1", LOW_L2)
    aid = world.alerts[key]
    done = f"/ui/alerts/{aid}?done=true"

    r = dr.post(
        f"/ui/alerts/{aid}/acknowledge",
        data={"note": "called the patient"},
        headers=SAME_ORIGIN,
        follow_redirects=False,
    )
    assert (r.status_code, r.headers["location"]) == (303, done)
    a = world.alert(key)
    assert (a["state"], a["acknowledged_by"]) == ("acknowledged", "dr.north")
    assert a["events"][-1]["note"] == "called the patient"
    page = dr.get(done).text  # the redirect's target: a reload repeats nothing
    assert 'id="alert-state">Kuitattu<' in page
    assert "Tallennettu" in page
    assert "called the patient" in page
    assert world.alert(key)["events"][-1]["action"] == "acknowledged"

    page = dr.get(done).text  # every action's form takes a note
    for form in ("assign-note", "snooze-note", "resolve-note"):
        assert f'id="{form}"' in page, form
    r = dr.post(
        f"/ui/alerts/{aid}/assign",
        data={"assignee": "nurse.north", "note": "home visit today"},
        headers=SAME_ORIGIN,
        follow_redirects=False,
    )
    assert (r.status_code, r.headers["location"]) == (303, done)
    assert world.alert(key)["assigned_to"] == "nurse.north"
    assert "home visit today" in world.alert(key)["events"][-1]["note"]
    # someone outside the alert's team or audience cannot be assigned
    for wrong in ("hc.east", "dr.south", "nobody"):
        r = dr.post(
            f"/ui/alerts/{aid}/assign",
            data={"assignee": wrong},
            headers=SAME_ORIGIN,
            follow_redirects=False,
        )
        assert r.status_code == 422, wrong
        assert wrong in error_notice(r.text)
    assert world.alert(key)["assigned_to"] == "nurse.north"

    before = datetime.now(UTC)
    r = dr.post(
        f"/ui/alerts/{aid}/snooze",
        data={"minutes": "20", "note": "waiting for the lab"},
        headers=SAME_ORIGIN,
        follow_redirects=False,
    )
    assert (r.status_code, r.headers["location"]) == (303, done)
    assert "waiting for the lab" in world.alert(key)["events"][-1]["note"]
    until = datetime.fromisoformat(world.alert(key)["snoozed_until"])
    assert before + timedelta(minutes=20) <= until <= datetime.now(UTC) + timedelta(minutes=20)
    # snoozed: out of the working queue, still listed under "all"
    assert aid not in alert_ids(dr.get("/ui/queue").text)
    assert aid in alert_ids(dr.get("/ui/queue?state=all").text)

    r = dr.post(
        f"/ui/alerts/{aid}/resolve",
        data={"note": "  glucose 6.1 after juice  "},
        headers=SAME_ORIGIN,
        follow_redirects=False,
    )
    assert (r.status_code, r.headers["location"]) == (303, done)
    a = world.alert(key)
    assert (a["state"], a["resolved_by"], a["resolved_note"]) == (
        "resolved",
        "dr.north",
        "glucose 6.1 after juice",
    )
    assert [e["action"] for e in a["events"]] == [
        "raised",
        "acknowledged",
        "assigned",
        "snoozed",
        "resolved",
    ]
    page = dr.get(done).text
    assert "glucose 6.1 after juice" in page
    assert 'action="/ui/alerts/' not in page  # a resolved alert offers no more actions
    # resolving again is a conflict, and the note stays the first one
    r = dr.post(
        f"/ui/alerts/{aid}/resolve",
        data={"note": "again"},
        headers=SAME_ORIGIN,
        follow_redirects=False,
    )
    assert r.status_code == 409
    assert "Hälytyksen tila on jo muuttunut" in error_notice(r.text)
    assert world.alert(key)["resolved_note"] == "glucose 6.1 after juice"


def test_a_snooze_the_rules_do_not_allow_is_refused(world: World) -> None:
    """Minutes that are not a number, not positive, or beyond the high-priority bound."""
    dr = world.sign_in("dr.north")
    key = ("p1", LOW_L2)
    aid = world.alerts[key]
    r = dr.post(f"/ui/alerts/{aid}/acknowledge", headers=SAME_ORIGIN, follow_redirects=False)
    assert r.status_code == 303
    for minutes in ("abc", "", "nan", "inf", "0", "-5", "45", "30.5", "1e20"):
        r = dr.post(
            f"/ui/alerts/{aid}/snooze",
            data={"minutes": minutes},
            headers=SAME_ORIGIN,
            follow_redirects=False,
        )
        assert r.status_code == 422, (minutes, r.status_code)
        assert error_notice(r.text)
        a = world.alert(key)
        assert (a["state"], a["snoozed_until"]) == ("acknowledged", None)
        assert aid in alert_ids(dr.get("/ui/queue").text)


def test_home_care_cannot_act_on_a_clinicians_alert(world: World) -> None:
    east = world.sign_in("hc.east")
    key = ("p1", LOW_L2)
    r = east.post(
        f"/ui/alerts/{world.alerts[key]}/acknowledge", headers=SAME_ORIGIN, follow_redirects=False
    )
    assert r.status_code == 404
    assert world.alert(key)["state"] == "open"
    # their own client's alert they can
    own = ("p1", DOSE_MISSED)
    r = east.post(
        f"/ui/alerts/{world.alerts[own]}/acknowledge", headers=SAME_ORIGIN, follow_redirects=False
    )
    assert r.status_code == 303
    assert world.alert(own)["acknowledged_by"] == "hc.east"


# -- thresholds ----------------------------------------------------------------------------------


def _threshold_input(page: str, condition: str) -> str:
    m = re.search(rf'<input id="v-{re.escape(condition)}"[^>]*\bvalue="([^"]*)"', page)
    assert m is not None, f"no threshold input for {condition}"
    return m.group(1)


def test_a_clinician_changes_a_patients_threshold_and_it_is_audited(world: World) -> None:
    dr = world.sign_in("dr.north")
    page = dr.get("/ui/patients/p3").text
    assert _threshold_input(page, LOW_L2) == "3,0"
    r = dr.post(
        f"/ui/patients/p3/thresholds/{LOW_L2}",
        data={"value": "3,5"},  # as a Finnish clinician types it
        headers=SAME_ORIGIN,
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert r.headers["location"] == f"/ui/patients/p3?saved={LOW_L2}#thresholds"
    th = world.threshold("p3", LOW_L2)
    assert (th["value"], th["scope"], th["set_by"], th["overridden"]) == (
        3.5,
        "patient",
        "dr.north",
        True,
    )
    # the clinician's own API view agrees
    r = world.api.get(f"/api/v1/patients/p3/thresholds/{LOW_L2}", headers=world.h("dr.north"))
    assert r.json()["value"] == 3.5
    page = dr.get("/ui/patients/p3", params={"saved": LOW_L2}).text
    assert _threshold_input(page, LOW_L2) == "3,5"
    assert 'role="status"' in page
    entries = [e for e in world.audit("p3") if e["action"] == "threshold.put"]
    assert len(entries) == 1
    assert entries[0]["actor"] == "dr.north"
    assert entries[0]["detail"] == {"condition": LOW_L2, "value": 3.5, "unit": "mmol/L"}
    # the rules use it: 3.3 mmol/L is no level 2 low by default, but it is for p3 now
    now = datetime.now(UTC)
    world.service.ingest_batch([glucose_reading("p3", 3.3, at=now, now=now)])
    (raised,) = world.service.list_alerts(subject="p3", condition=LOW_L2)
    assert (raised.threshold_value, raised.last_value) == (3.5, 3.3)
    # and the reset button brings the default back, audited too
    r = dr.post(
        f"/ui/patients/p3/thresholds/{LOW_L2}",
        data={"value": "3,5", "reset": "1"},
        headers=SAME_ORIGIN,
        follow_redirects=False,
    )
    assert r.status_code == 303
    th = world.threshold("p3", LOW_L2)
    assert (th["value"], th["scope"]) == (th["default_value"], "default")
    assert [e["action"] for e in world.audit("p3")][:2] == ["threshold.reset", "threshold.put"]


def test_home_care_and_other_teams_cannot_change_a_threshold(world: World) -> None:
    audit_before = world.audit("p1")
    east = world.sign_in("hc.east")  # sees p1, as p1's home-care team
    r = east.post(
        f"/ui/patients/p1/thresholds/{LOW_L2}",
        data={"value": "3.5"},
        headers=SAME_ORIGIN,
        follow_redirects=False,
    )
    assert r.status_code == 403
    assert "Ei oikeutta tähän toimintoon." in error_notice(r.text)
    south = world.sign_in("dr.south")
    r = south.post(
        f"/ui/patients/p1/thresholds/{LOW_L2}",
        data={"value": "3.5"},
        headers=SAME_ORIGIN,
        follow_redirects=False,
    )
    assert r.status_code == 404
    assert world.threshold("p1", LOW_L2)["scope"] == "default"
    assert world.audit("p1") == audit_before


INVALID_THRESHOLDS = [
    ("abc", "not a number"),
    ("", "not a number"),
    ("3.0.1", "not a number"),
    ("nan", "not a number"),
    ("inf", "not a number"),
    ("-3", "bounds"),
    ("0", "bounds"),
    ("1e9", "bounds"),
    ("39", "bounds"),  # mg/dL typed into a mmol/L field
]


def test_an_invalid_threshold_is_rejected_with_a_message(world: World) -> None:
    dr = world.sign_in("dr.north")
    audit_before = world.audit("p1")
    for value, why in INVALID_THRESHOLDS:
        r = dr.post(
            f"/ui/patients/p1/thresholds/{LOW_L2}",
            data={"value": value},
            headers=SAME_ORIGIN,
            follow_redirects=False,
        )
        assert r.status_code == 422, value
        message = error_notice(r.text)
        assert message.startswith("Tarkista arvo")
        if why == "not a number":
            assert repr(value) in message
        else:
            lo, hi = OVERRIDE_RANGES[LOW_L2]
            assert f"{lo:g}..{hi:g}" in message
        assert _threshold_input(r.text, LOW_L2) == "3,0"  # the page shows the value in effect
        th = world.threshold("p1", LOW_L2)
        assert (th["value"], th["scope"]) == (3.0, "default")
        assert world.audit("p1") == audit_before


def test_an_unknown_condition_is_not_found(world: World) -> None:
    dr = world.sign_in("dr.north")
    audit_before = world.audit("p1")
    r = dr.post(
        "/ui/patients/p1/thresholds/no-such-condition",
        data={"value": "3"},
        headers=SAME_ORIGIN,
        follow_redirects=False,
    )
    assert r.status_code == 404
    assert "Ei löytynyt" in error_notice(r.text)
    assert world.audit("p1") == audit_before


# -- language ------------------------------------------------------------------------------------


def test_the_language_switch_sets_a_cookie_and_the_next_page_speaks_it(world: World) -> None:
    dr = world.sign_in("dr.north")
    page = dr.get("/ui/patients").text
    assert html_lang(page) == "fi"
    assert "<h1>Potilaat</h1>" in page
    r = dr.get("/ui/lang/sv", params={"next": "/ui/patients"}, follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/ui/patients")
    assert r.headers["set-cookie"].startswith("remon_lang=sv;")
    assert "path=/ui" in r.headers["set-cookie"].lower()
    page = dr.get("/ui/patients").text
    assert html_lang(page) == "sv"
    assert "<h1>Patienter</h1>" in page
    assert "Larmkö" in page  # the navigation too
    assert "Potilaat" not in page
    alert = dr.get(f"/ui/alerts/{world.alerts[('p1', LOW_L2)]}").text
    assert 'id="alert-state">Öppen<' in alert
    dr.get("/ui/lang/en")
    page = dr.get("/ui/patients").text
    assert (html_lang(page), "<h1>Patients</h1>" in page) == ("en", True)
    # a language the UI does not have is refused, and the choice stays
    assert dr.get("/ui/lang/de", follow_redirects=False).status_code == 422
    assert html_lang(dr.get("/ui/patients").text) == "en"


def test_an_unknown_language_cookie_falls_back_to_finnish(world: World) -> None:
    dr = world.sign_in("dr.north")
    dr.cookies.set("remon_lang", "de", path="/ui")
    page = dr.get("/ui/patients").text
    assert html_lang(page) == "fi"
    assert "<h1>Potilaat</h1>" in page


# -- security headers ----------------------------------------------------------------------------


def assert_secure(r: Response, *, full_page: bool = True) -> None:
    csp = r.headers.get("content-security-policy", "")
    directives = {d.split()[0]: d.split()[1:] for d in csp.split(";") if d.strip()}
    assert directives.get("default-src") == ["'self'"], csp
    assert directives.get("script-src") == ["'self'"], csp
    assert directives.get("frame-ancestors") == ["'none'"], csp
    assert "unsafe-inline" not in csp
    assert "no-store" in r.headers.get("cache-control", "")
    assert r.headers.get("x-content-type-options") == "nosniff"
    assert r.headers["content-type"].startswith("text/html")
    if full_page:
        assert html_lang(r.text) in ("fi", "sv", "en")
    # what the policy would block must not be on the page: inline scripts, styles, handlers
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", r.text)
    assert "<style" not in r.text
    assert not re.search(r"\sstyle=\"", r.text)
    assert not re.search(r"\son[a-z]+=\"", r.text)


def test_every_page_sends_the_security_headers(world: World) -> None:
    anon = world.anonymous()
    assert_secure(anon.get("/ui/login"))
    assert_secure(
        anon.post("/ui/login", data={"token": "wrong"}, headers=SAME_ORIGIN, follow_redirects=False)
    )
    dr = world.sign_in("dr.north")
    aid = world.alerts[("p1", LOW_L2)]
    for path in (
        "/ui/queue",
        f"/ui/alerts/{aid}",
        "/ui/patients",
        "/ui/patients/p1",
        "/ui/patients/p1/reports/pef",
        "/ui/patients/p1/reports/agp",
        "/ui/fleet",
    ):
        r = dr.get(path)
        assert r.status_code == 200, path
        assert_secure(r)
    assert_secure(dr.get("/ui/queue/rows"), full_page=False)
    for status, r in (
        (404, dr.get("/ui/patients/p2")),
        (403, dr.post(f"/ui/alerts/{aid}/acknowledge", headers={"Origin": "https://evil.example"})),
        (
            422,
            dr.post(
                f"/ui/patients/p1/thresholds/{LOW_L2}", data={"value": "x"}, headers=SAME_ORIGIN
            ),
        ),
    ):
        assert r.status_code == status
        assert_secure(r)
    # redirects carry no cached copy either
    r = dr.post(f"/ui/alerts/{aid}/acknowledge", headers=SAME_ORIGIN, follow_redirects=False)
    assert r.status_code == 303
    assert "no-store" in r.headers["cache-control"]


# -- 14 days of the demo's history ---------------------------------------------------------------

CGM_PEF = "demo-patient-0001"  # i = 0: CGM, PEF diary (meeting its criteria), home BP, kiosk
DISPENSER_CLIENT = "demo-patient-0002"  # i = 1: home BP, kiosk and a dispenser; no CGM, no PEF


@dataclass
class History:
    app: FastAPI
    tokens: dict[str, str]
    #: (site, device id) -> the device's model, from the messages the history sent
    devices: dict[tuple[str, str], str]
    clients: list[TestClient] = field(default_factory=list)
    #: the kiosk visit messages the history sent
    visits: list[VisitEnvelope] = field(default_factory=list)

    def sign_in(self, who: str) -> TestClient:
        client = TestClient(self.app)
        self.clients.append(client)
        token = ADMIN_TOKEN if who == "admin" else self.tokens[who]
        r = client.post(
            "/ui/login", data={"token": token}, headers=SAME_ORIGIN, follow_redirects=False
        )
        assert r.status_code == 303
        return client


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    """The demo's first two patients with 14 days of history, ingested as remon.demo_history's
    load_history does it (personal bests, every message, then the diary periods), without the
    broker: the messages go to IngestService.ingest_batch as the consumer hands them over."""
    path = tmp_path_factory.mktemp("history") / "remon.db"
    storage = open_storage(f"sqlite:///{path}")
    try:
        service = IngestService(storage)
        care = CareDirectory(storage)
        admin = Principal(id="setup", name="setup", role=Role.ADMIN, team_ids=frozenset())
        now = datetime.now(UTC)
        for team in ("demo", "demo-hc", "other"):
            care.put_team(admin, team, team, now=now)
        tokens = {}
        for sid, role, team in (
            ("dr.demo", Role.CLINICIAN, "demo"),
            ("hc.demo", Role.HOME_CARE, "demo-hc"),
            ("dr.other", Role.CLINICIAN, "other"),
        ):
            issued = care.put_staff(
                admin, sid, name=sid, role=role, team_ids=[team], issue_token=True, now=now
            )
            assert issued.token is not None
            tokens[sid] = issued.token
        for ref in (CGM_PEF, DISPENSER_CLIENT):
            care.put_patient(admin, ref, team_id="demo", time_zone="Europe/Helsinki", now=now)
        care.put_dispenser_client(
            admin,
            DISPENSER_CLIENT,
            home_care_team_id="demo-hc",
            missed_dose_window_min=5,
            dose_times=["08:00", "14:00", "20:00"],
            now=now,
        )
        plan = history_plan(patients=2, now=now)
        seed_personal_bests(storage, patients=2, now=now)
        devices: dict[tuple[str, str], str] = {}
        for site, msgs in plan.messages.items():
            result = service.ingest_batch([RawMessage(m.topic, m.payload, now) for m in msgs])
            assert result.dead_letters == 0
            for m in msgs:
                body = json.loads(m.payload)
                for part in body.get("parts", [body]):  # a kiosk visit: each device's envelope
                    devices[(site, part["device_id"])] = part["device"]["model"]
        seed_pef_diaries(storage, patients=2, now=now)
        app = create_web_app(service, IngestSettings(api_tokens={ADMIN_TOKEN: "svc.admin"}))
        visits = [
            decode_visit(m.topic, m.payload)
            for msgs in plan.messages.values()
            for m in msgs
            if m.topic.endswith("/_kiosk/visit")
        ]
        h = History(app, tokens, devices, visits=visits)
        yield h
        for client in h.clients:
            client.close()
    finally:
        storage.close()


def test_the_patient_page_draws_every_chart_of_two_weeks(history: History) -> None:
    dr = history.sign_in("dr.demo")
    r = dr.get(f"/ui/patients/{CGM_PEF}")
    assert r.status_code == 200
    charts = svgs(r.text)
    for chart in ("pef-diary", "agp", "tir", "bp"):
        assert chart in charts, chart
        assert drawn(charts[chart]), chart
    assert "doses" not in charts  # not a dispenser client
    assert f'href="/ui/patients/{CGM_PEF}/reports/pef"' in r.text
    assert f'href="/ui/patients/{CGM_PEF}/reports/agp"' in r.text
    # the dispenser client without a CGM: the AGP is drawn empty, the doses are drawn
    r = dr.get(f"/ui/patients/{DISPENSER_CLIENT}")
    assert r.status_code == 200
    charts = svgs(r.text)
    assert not drawn(charts["agp"])
    assert drawn(charts["bp"])
    assert drawn(charts["doses"])
    assert f"/ui/patients/{DISPENSER_CLIENT}/reports/agp" not in r.text


def test_the_pef_report_covers_the_diary(history: History) -> None:
    dr = history.sign_in("dr.demo")
    r = dr.get(f"/ui/patients/{CGM_PEF}/reports/pef")
    assert r.status_code == 200
    assert drawn(svgs(r.text)["pef-diary"])
    table = r.text[r.text.index('<table class="report-table">') :]
    table = table[: table.index("</table>")]
    days = re.findall(r'<th scope="row">(\d{1,2}\.\d{1,2}\.\d{4})</th>', table)
    assert len(days) == len(set(days)) == HISTORY_DAYS
    assert f"PB {PERSONAL_BEST_L_MIN:.0f} l/min" in r.text
    # the first demo patient's dip mornings meet both diary criteria (remon.demo_history)
    assert r.text.count('<li class="met">') == 2
    assert "Tiedot eivät riitä raporttiin." not in r.text
    # a patient without a diary gets a report that says so
    r = dr.get(f"/ui/patients/{DISPENSER_CLIENT}/reports/pef")
    assert r.status_code == 200
    assert "Tiedot eivät riitä raporttiin." in r.text


def test_the_agp_report_has_the_profile_and_the_time_in_ranges(history: History) -> None:
    dr = history.sign_in("dr.demo")
    r = dr.get(f"/ui/patients/{CGM_PEF}/reports/agp")
    assert r.status_code == 200
    charts = svgs(r.text)
    assert drawn(charts["agp"])
    assert drawn(charts["tir"])
    mean = re.search(r"<dd>(\d+),(\d) mmol/l</dd>", r.text)  # a Finnish decimal comma
    assert mean is not None
    assert 3.0 < float(f"{mean.group(1)}.{mean.group(2)}") < 15.0
    assert "Tiedot eivät riitä raporttiin." not in r.text
    r = dr.get(f"/ui/patients/{DISPENSER_CLIENT}/reports/agp")
    assert r.status_code == 200
    assert "Tiedot eivät riitä raporttiin." in r.text
    assert "<svg" not in r.text


@pytest.mark.parametrize("report", ["pef", "agp"])
def test_a_report_for_an_unknown_or_unseen_patient_is_not_found(
    history: History, report: str
) -> None:
    dr = history.sign_in("dr.demo")
    r = dr.get(f"/ui/patients/demo-patient-9999/reports/{report}")
    assert r.status_code == 404
    assert "<svg" not in r.text
    assert (
        history.sign_in("dr.other").get(f"/ui/patients/{CGM_PEF}/reports/{report}").status_code
        == 404
    )
    # reports are clinical: the dispenser client's home-care nurse gets none
    hc = history.sign_in("hc.demo")
    assert hc.get(f"/ui/patients/{DISPENSER_CLIENT}/reports/{report}").status_code == 404


def test_the_fleet_lists_every_device_of_the_history_with_its_model(history: History) -> None:
    for who in ("admin", "dr.demo"):
        page = history.sign_in(who).get("/ui/fleet")
        assert page.status_code == 200
        for (site, device_id), model in history.devices.items():
            start = page.text.index(f'<section class="card" id="site-{site}"')
            section = page.text[start : page.text.index("</section>", start)]
            rows = [row for row in section.split("<tr>") if f">{device_id}</th>" in row]
            assert len(rows) == 1, (who, site, device_id)
            assert html.escape(model) in rows[0], (who, site, device_id, model)
    # a clinician of a team without these patients sees none of their devices
    other = history.sign_in("dr.other").get("/ui/fleet")
    assert other.status_code == 200
    assert not any(device_id in other.text for _, device_id in history.devices)


def test_saving_a_threshold_unchanged_changes_nothing(world: World) -> None:
    """The field shows the stored value exactly (a rounded one, saved back, would be a new
    patient value): pressing Save on it stores no override and writes no audit entry."""
    dr = world.sign_in("dr.north")
    before = world.threshold("p3", "cgm-falling-fast")
    shown = _threshold_input(dr.get("/ui/patients/p3").text, "cgm-falling-fast")
    assert float(shown.replace(",", ".")) == pytest.approx(before["value"], abs=1e-6)
    r = dr.post(
        "/ui/patients/p3/thresholds/cgm-falling-fast",
        data={"value": shown},
        headers=SAME_ORIGIN,
        follow_redirects=False,
    )
    assert r.status_code == 303
    after = world.threshold("p3", "cgm-falling-fast")
    assert (after["value"], after["scope"]) == (before["value"], before["scope"])
    assert [e for e in world.audit("p3") if e["action"] == "threshold.put"] == []


def test_the_patient_page_shows_each_kiosk_visit_with_its_bp_result_and_answers(
    history: History,
) -> None:
    """Each visit message is one visit on the page: its readings, the BP result by the kiosk
    protocol (the mean of the last two of three, DOMAIN.md §3) and the questionnaire."""
    dr = history.sign_in("dr.demo")
    page = dr.get(f"/ui/patients/{CGM_PEF}").text
    mine = [v for v in history.visits if v.subject.ref == CGM_PEF]
    assert len(mine) == 2
    for v in mine:
        block = re.search(rf'data-visit="{re.escape(v.visit_ref)}".*?</details>', page, re.S)
        assert block is not None, v.visit_ref
        text = block.group(0)
        cuff = next(p for p in v.parts if p.device_id == "kiosk-bp-history")
        by_time = sorted(cuff.observations, key=lambda w: w.observation.effective_time)
        sys_ = [w.observation.value for w in by_time if w.observation.measure == "bp.systolic"]
        dia = [w.observation.value for w in by_time if w.observation.measure == "bp.diastolic"]
        assert len(sys_) == len(dia) == 3
        expected = f"{round((sys_[1] + sys_[2]) / 2)}/{round((dia[1] + dia[2]) / 2)} mmHg"
        assert expected in text, (expected, text)
        assert f"{v.observation_count} mittausta" in text
        assert "Tupakoi" in text
        assert "Liikuntapäiviä viikossa" in text
        assert "ilman käyntiviestiä" not in text
