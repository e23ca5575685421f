"""Regenerate ``docs/screenshots/*.png`` from a live ``remon demo``.

    .venv/bin/python -m remon.screenshots [--out docs/screenshots] [--warmup 20]

Starts the demo (its private Mosquitto, SQLite, 14 days of history, the live fleet) on a free
port, waits ``--warmup`` seconds of live data, signs in with the staff tokens the demo prints,
and photographs the queue, an alert, a patient, the fleet and both printable reports in Debian's
Chromium (``/usr/bin/chromium``, driven by Playwright: a development dependency). The pictures
show simulated data only.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Playwright

#: Debian's Chromium, the browser the tests and the screenshots use (``apt install chromium``).
CHROMIUM: Final = os.environ.get("REMON_CHROMIUM", "/usr/bin/chromium")
VIEWPORT: Final = {"width": 1280, "height": 900}
#: Keeps a PEF diary and wears a CGM, hyperglycaemic profile (FLEET_PROFILES[3] of remon.demo):
#: every chart of the patient page has something to show.
DIARY_PATIENT: Final = "demo-patient-0004"
_URL = re.compile(r"web UI\s+(http://\S+?)/ui/")
_CLINICIAN = re.compile(r"staff\s+clinician\s+(\S+)")
_HOME_CARE = re.compile(r"home care\s+(\S+)")
_KIOSK = re.compile(r"kiosk\s+(http://\S+?)/\s")
_KIOSK_CODE = re.compile(r"one-time codes (\S+) \(patient 1\)")


def launch_chromium(pw: Playwright) -> Browser:
    """Headless Debian Chromium; its sandbox needs user namespaces a root session lacks."""
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    return pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)


@dataclass(frozen=True)
class Demo:
    base: str
    clinician: str
    home_care: str
    kiosk: str
    kiosk_code: str


def _start_demo(data_dir: Path, duration: float) -> tuple[subprocess.Popen[str], Demo]:
    cmd = [
        sys.executable,
        "-m",
        "remon.cli",
        "demo",
        "--port",
        "0",
        "--data-dir",
        str(data_dir),
        "--duration",
        str(duration),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(  # noqa: S603 -- our own interpreter and fixed arguments
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    assert proc.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        text = "".join(seen)
        url, clin, home = _URL.search(text), _CLINICIAN.search(text), _HOME_CARE.search(text)
        kiosk, code = _KIOSK.search(text), _KIOSK_CODE.search(text)
        if url and clin and home and kiosk and code:
            # keep reading its progress lines, or a full pipe would stall the demo
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, Demo(
                url.group(1), clin.group(1), home.group(1), kiosk.group(1), code.group(1)
            )
    proc.kill()
    raise SystemExit("the demo did not print its web UI and staff tokens:\n" + "".join(seen))


def _sign_in(page: Page, base: str, token: str) -> None:
    page.goto(f"{base}/ui/login")
    page.fill("#token", token)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/ui/queue")


def _save(page: Page, out: Path, name: str) -> Path:
    path = out / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"  {path}")
    return path


def take(demo: Demo, out: Path, pw: Playwright, patient: str = DIARY_PATIENT) -> list[Path]:
    """Every page worth showing, as the clinician and as the home-care nurse."""
    browser = launch_chromium(pw)
    saved: list[Path] = []
    try:
        page = browser.new_page(viewport=VIEWPORT)  # type: ignore[arg-type]
        _sign_in(page, demo.base, demo.clinician)
        page.wait_for_selector("body[data-stream=ready]")
        saved.append(_save(page, out, "queue"))
        first = page.locator("#queue-rows a.alert-link").first
        first.click()
        page.wait_for_selector("#alert-state")
        saved.append(_save(page, out, "alert"))
        page.goto(f"{demo.base}/ui/patients/{patient}")
        saved.append(_save(page, out, "patient"))
        page.goto(f"{demo.base}/ui/patients/{patient}/reports/pef")
        saved.append(_save(page, out, "report-pef"))
        page.goto(f"{demo.base}/ui/patients/{patient}/reports/agp")
        saved.append(_save(page, out, "report-agp"))
        page.goto(f"{demo.base}/ui/fleet")
        saved.append(_save(page, out, "fleet"))
        tablet = browser.new_page(viewport={"width": 800, "height": 1100})
        _sign_in(tablet, demo.base, demo.home_care)
        saved.append(_save(tablet, out, "queue-home-care-tablet"))
        # the kiosk station's screen: a visit measured by its simulated devices, at review
        screen = browser.new_page(viewport={"width": 800, "height": 1280})
        screen.goto(demo.kiosk)
        saved.append(_save(screen, out, "kiosk-welcome"))
        screen.fill("#code", demo.kiosk_code)
        screen.keyboard.press("Enter")
        screen.click("#start")
        screen.wait_for_selector("table#readings", timeout=60_000)
        screen.wait_for_timeout(6_000)  # a few more readings
        screen.click("#review")
        screen.wait_for_selector("#consent")
        saved.append(_save(screen, out, "kiosk-review"))
        screen.click("#cancel")
    finally:
        browser.close()
    return saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m remon.screenshots", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds of live data first")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="remon-shots-") as tmp:
        proc, demo = _start_demo(Path(tmp), duration=args.warmup + 120)
        try:
            time.sleep(args.warmup)
            with sync_playwright() as pw:
                take(demo, args.out, pw)
        finally:
            proc.terminate()
            proc.wait(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
