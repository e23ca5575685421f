"""The web UI's sessions on real SQLite and PostgreSQL: the cookie holds a random id, never the
token; sign-out, token re-issue, deactivation and expiry end a session on the server, whatever
the browser keeps."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from cloud_ingest.care import CareDirectory
from cloud_ingest.service import IngestService
from cloud_ingest.settings import IngestSettings
from cloud_ingest.storage import open_storage
from cloud_ingest.storage import schema as t
from cloud_ingest.web import create_web_app
from cloud_ingest.web.session import SESSION_COOKIE, SESSION_TTL

ADMIN = {"Authorization": "Bearer tok-admin"}
SAME_ORIGIN = {"Origin": "http://testserver"}


@dataclass
class Ui:
    client: TestClient
    care: CareDirectory
    token: str

    def sign_in(self, token: str | None = None) -> str:
        r = self.client.post(
            "/ui/login",
            data={"token": token or self.token, "next": "/ui/queue"},
            headers=SAME_ORIGIN,
            follow_redirects=False,
        )
        assert r.status_code == 303, r.text
        sid = r.cookies.get(SESSION_COOKIE)
        assert sid
        self.client.cookies.clear()  # each call below names its session itself
        return sid

    def queue(self, sid: str) -> int:
        r = self.client.get(
            "/ui/queue", headers={"Cookie": f"{SESSION_COOKIE}={sid}"}, follow_redirects=False
        )
        return r.status_code


@pytest.fixture
def ui(db_url: str) -> Iterator[Ui]:
    storage = open_storage(db_url)
    service = IngestService(storage)
    settings = IngestSettings(api_tokens={"tok-admin": "svc.admin"})
    try:
        with TestClient(create_web_app(service, settings)) as client:
            client.put("/api/v1/teams/north", json={"name": "North"}, headers=ADMIN)
            r = client.put(
                "/api/v1/staff/dr.north",
                json={"name": "Dr North", "role": "clinician", "team_ids": ["north"]},
                headers=ADMIN,
            )
            assert r.status_code == 200, r.text
            client.cookies.clear()
            yield Ui(client, CareDirectory(storage), r.json()["token"])
    finally:
        storage.close()


def test_the_cookie_holds_a_session_id_not_the_token_and_only_its_hash_is_stored(
    ui: Ui,
) -> None:
    sid = ui.sign_in()
    assert sid != ui.token
    assert ui.token not in sid
    assert ui.queue(sid) == 200
    with ui.care.directory.storage._read() as conn:
        rows = list(conn.execute(t.web_sessions.select()))
    assert len(rows) == 1
    assert sid not in rows[0].sid_sha256
    assert ui.token not in rows[0].token_sha256
    # two sign-ins are two sessions
    assert ui.sign_in() != sid
    audit = ui.client.get("/api/v1/audit", params={"object_id": "dr.north"}, headers=ADMIN)
    assert [a["action"] for a in audit.json()].count("session.open") == 2


def test_signing_out_ends_the_session_on_the_server(ui: Ui) -> None:
    sid = ui.sign_in()
    other = ui.sign_in()  # the same nurse on a second device
    r = ui.client.post(
        "/ui/logout",
        headers={"Cookie": f"{SESSION_COOKIE}={sid}", **SAME_ORIGIN},
        follow_redirects=False,
    )
    assert r.status_code == 303
    # a copy of the cookie taken before sign-out no longer opens anything
    assert ui.queue(sid) == 303
    assert ui.queue(other) == 200
    audit = ui.client.get("/api/v1/audit", params={"object_id": "dr.north"}, headers=ADMIN)
    assert "session.close" in [a["action"] for a in audit.json()]


def test_reissuing_the_token_or_deactivating_the_staff_member_ends_their_sessions(
    ui: Ui,
) -> None:
    sid = ui.sign_in()
    r = ui.client.put(
        "/api/v1/staff/dr.north",
        json={"name": "Dr North", "role": "clinician", "team_ids": ["north"], "issue_token": True},
        headers=ADMIN,
    )
    assert r.status_code == 200, r.text
    new_token = r.json()["token"]
    assert new_token
    assert ui.queue(sid) == 303
    fresh = ui.sign_in(new_token)
    assert ui.queue(fresh) == 200
    r = ui.client.put(
        "/api/v1/staff/dr.north",
        json={"name": "Dr North", "role": "clinician", "team_ids": ["north"], "active": False},
        headers=ADMIN,
    )
    assert r.status_code == 200, r.text
    assert ui.queue(fresh) == 303


def test_a_session_expires_on_the_server_after_its_lifetime(ui: Ui) -> None:
    sid = ui.sign_in()
    now = datetime.now(UTC)
    assert ui.care.session_principal(sid, {}, now=now) is not None
    later = now + SESSION_TTL + timedelta(seconds=1)
    assert ui.care.session_principal(sid, {}, now=later) is None
    # and expired rows are dropped at the next sign-in
    with ui.care.directory.storage.write() as tx:
        tx.conn.execute(t.web_sessions.update().values(expires_at=now - timedelta(seconds=1)))
    assert ui.queue(sid) == 303
    ui.sign_in()
    with ui.care.directory.storage._read() as conn:
        assert len(list(conn.execute(t.web_sessions.select()))) == 1


def test_unknown_and_oversized_session_ids_are_signed_out(ui: Ui) -> None:
    assert ui.queue("not-a-session") == 303
    assert ui.queue("x" * 5000) == 303
    assert ui.queue(ui.token) == 303  # the bearer token itself is not a session id


def test_a_service_account_session_ends_when_the_account_is_removed(db_url: str) -> None:
    storage = open_storage(db_url)
    try:
        care = CareDirectory(storage)
        now = datetime.now(UTC)
        opened = care.open_session("tok-svc", {"tok-svc": "svc.ops"}, now=now, ttl=SESSION_TTL)
        assert opened is not None
        sid, who = opened
        assert who.id == "svc.ops"
        assert care.session_principal(sid, {"tok-svc": "svc.ops"}, now=now) == who
        assert care.session_principal(sid, {"tok-other": "svc.ops"}, now=now) is None
        assert care.open_session("wrong", {"tok-svc": "svc.ops"}, now=now, ttl=SESSION_TTL) is None
    finally:
        storage.close()


def test_an_open_stream_ends_with_its_session_or_token(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over a real uvicorn connection: the web queue's stream ends after sign-out, and the
    API's stream ends when its bearer token is re-issued (within the recheck interval)."""
    import httpx

    from cloud_ingest.api import stream
    from tests.test_queue_stream import Listener, Server

    monkeypatch.setattr(stream, "RECHECK_S", 0.3)
    storage = open_storage(db_url)
    service = IngestService(storage)
    settings = IngestSettings(api_tokens={"tok-admin": "svc.admin"})
    try:
        with Server(create_web_app(service, settings)) as srv, httpx.Client(base_url=srv.url) as c:
            c.put("/api/v1/teams/north", json={"name": "North"}, headers=ADMIN)
            body = {"name": "Dr North", "role": "clinician", "team_ids": ["north"]}
            token = c.put("/api/v1/staff/dr.north", json=body, headers=ADMIN).json()["token"]
            r = c.post(
                "/ui/login",
                data={"token": token},
                headers={"Origin": srv.url},
                follow_redirects=False,
            )
            sid = r.cookies[SESSION_COOKIE]
            cookie = {"Cookie": f"{SESSION_COOKIE}={sid}"}
            page = Listener(f"{srv.url}/ui/queue/stream", cookie)
            api = Listener(f"{srv.url}/api/v1/alerts/stream", {"Authorization": f"Bearer {token}"})
            try:
                page.next("ready")
                api.next("ready")
                out = c.post(
                    "/ui/logout", headers={**cookie, "Origin": srv.url}, follow_redirects=False
                )
                assert out.status_code == 303
                page.next("end")
                # the API stream goes on past a few rechecks: its token is still good ...
                time.sleep(1.0)
                assert all(e[0] != "end" for e in list(api.events.queue))
                r = c.put(
                    "/api/v1/staff/dr.north", json={**body, "issue_token": True}, headers=ADMIN
                )
                assert r.status_code == 200
                api.next("end")  # ... until it is re-issued
            finally:
                page.close()
                api.close()
    finally:
        storage.close()


def test_reactivating_a_staff_member_does_not_bring_old_sessions_back(ui: Ui) -> None:
    sid = ui.sign_in()
    body = {"name": "Dr North", "role": "clinician", "team_ids": ["north"]}
    r = ui.client.put("/api/v1/staff/dr.north", json={**body, "active": False}, headers=ADMIN)
    assert r.status_code == 200
    assert ui.queue(sid) == 303
    r = ui.client.put("/api/v1/staff/dr.north", json={**body, "active": True}, headers=ADMIN)
    assert r.status_code == 200
    assert ui.queue(sid) == 303  # the old session stays ended
    assert ui.queue(ui.sign_in()) == 200  # the same token signs in afresh
