"""The care team's web UI end to end in a real headless Chromium (Debian's ``chromium`` driven by
Playwright): readings and dispenser events published to a real Mosquitto, ingested by the real
consumer into PostgreSQL, served by uvicorn, seen and worked on through the pages.

Screenshots of every page visited are saved as test artefacts under ``$REMON_TEST_ARTIFACTS``
(default ``test-artifacts/`` in the checkout).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote
from zoneinfo import ZoneInfo

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from cloud_ingest.consumer import Consumer, ConsumerConfig
from cloud_ingest.service import IngestService
from cloud_ingest.settings import IngestSettings
from cloud_ingest.storage import open_storage
from cloud_ingest.web import create_web_app
from cloud_ingest.web.i18n import Translator
from remon.brokers import MosquittoProcess
from tests.helpers import T0, envelope, glucose, missed_dose
from tests.test_end_to_end import _publish
from tests.test_queue_stream import Server

TIMEOUT_MS = 30_000
ADMIN = {"Authorization": "Bearer tok-admin"}
FI = Translator("fi", ZoneInfo("Europe/Helsinki"))
ARTIFACTS = Path(
    os.environ.get("REMON_TEST_ARTIFACTS", Path(__file__).parent.parent / "test-artifacts")
)


@dataclass
class Site:
    url: str
    port: int  # the broker's
    tokens: dict[str, str]
    browser: Browser
    contexts: list[BrowserContext] = field(default_factory=list)

    def page(self) -> Page:
        """A page in a browser context of its own (its own cookies: one person's session)."""
        ctx = self.browser.new_context(viewport={"width": 1280, "height": 900}, locale="fi-FI")
        ctx.set_default_timeout(TIMEOUT_MS)
        self.contexts.append(ctx)
        return ctx.new_page()

    def close(self) -> None:
        """Close the pages (and their event streams) before the server stops."""
        for ctx in self.contexts:
            ctx.close()

    def sign_in(self, page: Page, who: str, path: str = "/ui/queue") -> None:
        page.goto(self.url + path)
        expect(page).to_have_url(f"{self.url}/ui/login?next={quote(path, safe='')}")
        page.fill("#token", self.tokens[who])
        page.keyboard.press("Enter")  # keyboard use: the form submits without a mouse
        expect(page).to_have_url(self.url + path)


def shot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"e2e-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 5_000, f"{name}: an empty screenshot"
    return path


@pytest.fixture
def site(pg_url: str, fresh_mosquitto: MosquittoProcess, browser: Browser) -> Iterator[Site]:
    storage = open_storage(pg_url)
    service = IngestService(storage)
    consumer = Consumer(
        service,
        ConsumerConfig(
            url=fresh_mosquitto.url,
            client_id=f"web-{os.getpid()}-{uuid.uuid4().hex[:12]}",
            housekeeping_s=0.5,
        ),
    )
    consumer.start()
    settings = IngestSettings(api_tokens={"tok-admin": "svc.admin"})
    try:
        with Server(create_web_app(service, settings)) as server:
            tokens = _directory(server.url)
            s = Site(server.url, fresh_mosquitto.port, tokens, browser)
            try:
                yield s
            finally:
                s.close()
    finally:
        consumer.stop()
        storage.close()


def _directory(url: str) -> dict[str, str]:
    """Teams north (clinicians) and hc-east / hc-west (home care); p1 and p2 are north's
    patients, p1 a dispenser client of hc-east and p2 of hc-west."""
    tokens: dict[str, str] = {}
    with httpx.Client(base_url=url, headers=ADMIN) as c:
        for tid in ("north", "hc-east", "hc-west"):
            c.put(f"/api/v1/teams/{tid}", json={"name": tid}).raise_for_status()
        for sid, role, team in (
            ("dr.north", "clinician", "north"),
            ("hc.east", "home_care", "hc-east"),
            ("hc.west", "home_care", "hc-west"),
        ):
            r = c.put(f"/api/v1/staff/{sid}", json={"name": sid, "role": role, "team_ids": [team]})
            r.raise_for_status()
            tokens[sid] = r.json()["token"]
        for pid, hc in (("p1", "hc-east"), ("p2", "hc-west")):
            c.put(f"/api/v1/patients/{pid}", json={"team_id": "north"}).raise_for_status()
            c.put(
                f"/api/v1/patients/{pid}/dispenser",
                json={"home_care_team_id": hc, "dose_times": ["08:00", "20:00"]},
            ).raise_for_status()
    return tokens


def publish_missed_dose(s: Site, patient: str, n: int) -> None:
    msg = missed_dose(patient, at=T0 + timedelta(hours=n), dose_id=f"dose-{patient}-{n}")
    _publish(s.port, [(msg.topic, msg.payload)])


def test_a_clinician_sees_an_alert_arrive_live_acknowledges_it_and_it_leaves_the_open_list(
    site: Site,
) -> None:
    s = site
    queue = s.page()
    s.sign_in(queue, "dr.north", "/ui/queue?state=open")
    expect(queue.locator("html")).to_have_attribute("lang", "fi")
    expect(queue.locator("tr.empty")).to_have_text(FI("queue.empty"))
    expect(queue.locator("body")).to_have_attribute("data-stream", "ready")
    shot(queue, "queue-empty")

    # a level 2 low arrives over MQTT while the page is open: the row appears without a reload
    low = envelope([glucose(1, 2.6)], site="home-p1", subject="p1")
    _publish(s.port, [(low.topic, low.payload)])
    row = queue.locator("#queue-rows tr[data-alert]")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("p1")
    expect(row).to_contain_text("2,6")  # Finnish decimal comma
    expect(row).to_contain_text("!!!")  # priority told by text, not colour alone
    expect(queue.locator("#announce")).not_to_be_empty()  # told to screen readers too
    alert_id = row.get_attribute("data-alert")
    shot(queue, "queue-live-alert")

    # a second tab opens the alert: explanation, threshold source, and acknowledges it
    detail = queue.context.new_page()
    detail.goto(f"{s.url}/ui/alerts/{alert_id}")
    expect(detail.locator("#alert-state")).to_have_text(FI("state.open"))
    expect(detail.locator(".explanation")).to_contain_text("DOMAIN.md")
    shot(detail, "alert-open")
    detail.fill("#ack-note", "soitettu potilaalle")
    detail.click("#acknowledge")
    expect(detail).to_have_url(f"{s.url}/ui/alerts/{alert_id}?done=true")
    expect(detail.locator("#alert-state")).to_have_text(FI("state.acknowledged"))
    expect(detail.locator("body")).to_contain_text("soitettu potilaalle")  # the audit trail
    shot(detail, "alert-acknowledged")

    # the first tab's open list loses the row live; the active list still shows it, acknowledged
    expect(queue.locator("#queue-rows tr[data-alert]")).to_have_count(0)
    shot(queue, "queue-after-acknowledge")
    queue.goto(f"{s.url}/ui/queue")
    acked = queue.locator(f'#queue-rows tr[data-alert="{alert_id}"]')
    expect(acked).to_contain_text(FI("state.acknowledged"))

    # and through the API the alert is acknowledged by the clinician
    r = httpx.get(f"{s.url}/api/v1/alerts/{alert_id}", headers=ADMIN)
    assert r.json()["state"] == "acknowledged"
    assert r.json()["acknowledged_by"] == "dr.north"


def test_a_home_care_nurse_sees_only_the_dispenser_alerts_of_own_clients(site: Site) -> None:
    s = site
    nurse = s.page()
    s.sign_in(nurse, "hc.east")
    expect(nurse.locator("body")).to_have_attribute("data-stream", "ready")
    # evidence for three audiences: p1's clinician, p1's home care (hc-east), p2's (hc-west)
    low = envelope([glucose(1, 2.6)], site="home-p1", subject="p1")
    _publish(s.port, [(low.topic, low.payload)])
    publish_missed_dose(s, "p2", 1)
    publish_missed_dose(s, "p1", 2)
    rows = nurse.locator("#queue-rows tr[data-alert]")
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text("p1")
    expect(rows).to_contain_text(FI.condition("dose-missed", "dose-missed"))
    # all three alerts exist: the others are routed elsewhere, not lost
    every = httpx.get(f"{s.url}/api/v1/alerts", headers=ADMIN).json()
    assert sorted((a["subject_ref"], a["team_id"]) for a in every) == [
        ("p1", "hc-east"),
        ("p1", "north"),
        ("p2", "hc-west"),
    ]
    # the state/kind filters and a reload give the same one row
    nurse.goto(f"{s.url}/ui/queue?state=all")
    expect(rows).to_have_count(1)
    shot(nurse, "queue-home-care")
    # hc-west's alert is not reachable by address either
    other = next(a["id"] for a in every if a["team_id"] == "hc-west")
    response = nurse.goto(f"{s.url}/ui/alerts/{other}")
    assert response is not None
    assert response.status == 404
    # and the west nurse sees p2's only
    west = s.page()
    s.sign_in(west, "hc.west")
    expect(west.locator("#queue-rows tr[data-alert]")).to_have_count(1)
    expect(west.locator("#queue-rows tr[data-alert]")).to_contain_text("p2")


#: WCAG 2.1 contrast (1.4.3 AA) of every visible text node outside the charts, against the
#: first opaque background behind it: 4.5:1, 3:1 for large text (24 px, or 18.66 px bold).
_CONTRAST_JS = """
() => {
  const parse = (c) => {
    const m = c.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return null;
    const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
  };
  const lum = ({ r, g, b }) => {
    const f = (v) => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const behind = (el) => {
    for (; el; el = el.parentElement) {
      const c = parse(getComputedStyle(el).backgroundColor);
      if (c && c.a > 0.99) return c;
    }
    return { r: 255, g: 255, b: 255, a: 1 };
  };
  const found = [];
  let checked = 0;
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walk.nextNode()) {
    const node = walk.currentNode;
    const el = node.parentElement;
    if (!node.textContent.trim() || !el || el.closest("svg")) continue;
    const st = getComputedStyle(el);
    const box = el.getBoundingClientRect();
    if (st.visibility === "hidden" || box.width <= 1 || box.height <= 1) continue;
    const fg = parse(st.color), bg = behind(el);
    const hi = Math.max(lum(fg), lum(bg)), lo = Math.min(lum(fg), lum(bg));
    const ratio = (hi + 0.05) / (lo + 0.05);
    const size = parseFloat(st.fontSize), bold = parseInt(st.fontWeight, 10) >= 700;
    const need = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    checked += 1;
    if (ratio < need) {
      const text = node.textContent.trim().slice(0, 40);
      const on = `rgb(${bg.r},${bg.g},${bg.b})`;
      found.push(`${text}: ${ratio.toFixed(2)} < ${need} (${st.color} on ${on})`);
    }
  }
  return { checked, found };
}
"""


def test_the_pages_are_keyboard_usable_legible_and_fit_a_tablet(site: Site) -> None:
    s = site
    low = envelope(
        [glucose(1, 2.6), glucose(20, 3.1), glucose(40, 5.8)], site="home-p1", subject="p1"
    )
    _publish(s.port, [(low.topic, low.payload)])
    publish_missed_dose(s, "p1", 1)
    ctx = s.browser.new_context(viewport={"width": 800, "height": 1100}, locale="fi-FI")
    ctx.set_default_timeout(TIMEOUT_MS)
    s.contexts.append(ctx)
    page = ctx.new_page()
    s.sign_in(page, "dr.north")
    expect(page.locator("#queue-rows tr[data-alert]").first).to_be_visible()
    # keyboard: the first Tab reaches the skip link, shown with a focus ring; Enter follows it
    page.keyboard.press("Tab")
    skip = page.locator("a.skip")
    expect(skip).to_be_focused()
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
    # the alert opens from the keyboard too
    page.locator("#queue-rows a.alert-link").first.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#alert-state")).to_be_visible()
    pages = {
        "queue": "/ui/queue",
        "alert": page.url.removeprefix(s.url),
        "patients": "/ui/patients",
        "patient": "/ui/patients/p1",
        "fleet": "/ui/fleet",
        "report-pef": "/ui/patients/p1/reports/pef",
        "report-agp": "/ui/patients/p1/reports/agp",
        "login-sv": "/ui/lang/sv?next=/ui/queue",
    }
    for name, path in pages.items():
        response = page.goto(s.url + path)
        assert response is not None
        assert response.status == 200, name
        # tablet width: nothing makes the page itself scroll sideways
        width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], f"{name}: {width[0]} px wide in an {width[1]} px window"
        result = page.evaluate(_CONTRAST_JS)
        assert result["checked"] > 10, name
        assert result["found"] == [], f"{name}: {result['found']}"
        shot(page, f"tablet-{name}")
    expect(page.locator("html")).to_have_attribute("lang", "sv")  # the last page, in Swedish
