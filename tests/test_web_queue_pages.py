"""The queue's pages beyond its first hundred rows, and the headers of every /ui response
(rendered or not), over HTTP on real SQLite."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from cloud_ingest.service import IngestService, RawMessage
from cloud_ingest.settings import IngestSettings
from cloud_ingest.storage import open_storage
from cloud_ingest.web import create_web_app
from cloud_ingest.web.pages import PAGE_ROWS
from tests.helpers import T0, envelope, glucose

SAME_ORIGIN = {"Origin": "http://testserver"}
PATIENTS = PAGE_ROWS + 5


@pytest.fixture
def client(sqlite_url: str) -> Iterator[TestClient]:
    storage = open_storage(sqlite_url)
    service = IngestService(storage)
    # one level 2 low per patient: PAGE_ROWS + 5 open alerts
    batch = []
    for i in range(PATIENTS):
        msg = envelope([glucose(i, 2.5)], site=f"home-{i}", subject=f"p{i:03d}")
        batch.append(RawMessage(topic=msg.topic, payload=msg.payload, received_at=T0))
    service.ingest_batch(batch)
    settings = IngestSettings(api_tokens={"tok-admin": "svc.admin"})
    try:
        with TestClient(create_web_app(service, settings)) as c:
            r = c.post("/ui/login", data={"token": "tok-admin"}, headers=SAME_ORIGIN)
            assert r.status_code == 200, r.text
            yield c
    finally:
        storage.close()


def _ids(html: str) -> list[str]:
    return re.findall(r'data-alert="(\d+)"', html)


def test_the_queue_pages_through_every_alert_once(client: TestClient) -> None:
    first = client.get("/ui/queue", params={"state": "open"})
    assert first.status_code == 200
    ids1 = _ids(first.text)
    assert len(ids1) == PAGE_ROWS
    assert f"1-{PAGE_ROWS}" in first.text
    nxt = re.search(r'href="([^"]+)" rel="next"', first.text)
    assert nxt is not None
    assert 'rel="prev"' not in first.text
    second = client.get(nxt.group(1).replace("&amp;", "&"))
    ids2 = _ids(second.text)
    assert len(ids2) == PATIENTS - PAGE_ROWS
    assert set(ids1).isdisjoint(ids2)
    assert len(set(ids1) | set(ids2)) == PATIENTS
    assert 'rel="prev"' in second.text
    assert 'rel="next"' not in second.text
    # the live refresh of page 2 fetches page 2's rows
    rows = client.get("/ui/queue/rows", params={"state": "open", "page": 2})
    assert _ids(rows.text) == ids2
    # out of range: refused with the field named, not a silent empty page
    bad = client.get("/ui/queue", params={"page": 0})
    assert bad.status_code == 422
    assert "page" in bad.text


def test_every_ui_response_carries_the_security_headers(client: TestClient) -> None:
    client.cookies.clear()
    for path in ("/ui/queue", "/ui/static/app.css", "/ui/login", "/ui/lang/sv"):
        r = client.get(path, follow_redirects=False)
        assert r.status_code in (200, 303), path
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"], path
        assert r.headers["cache-control"] == "no-store", path
        assert r.headers["x-content-type-options"] == "nosniff", path
