"""The kiosk's local touchscreen, served by the agent on localhost (FastAPI, server-rendered).

One page at ``/`` shows the station's current step (identify, start, measure with guidance,
review with repeat and the health questions, consent, sending); every button is a form that
posts and redirects back (POST/redirect/GET), so a reload never repeats a step. Measuring and
sending pages refresh themselves every few seconds (a meta refresh: no script needed). Large
type, Finnish by default with Swedish and English, labels for screen readers, and a warning with
a "go on" button a minute before any step times out.

What the screen shows is only the open visit's own readings (:meth:`KioskStation.view`); after a
visit ends, the page has nothing of it, and responses are never cached (``no-store``). The
server listens on loopback only; a POST from another site is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import threading
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Final
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from babel.numbers import format_decimal
from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.middleware.trustedhost import TrustedHostMiddleware

from edge_agent.kiosk_identity import IdentificationError, OneTimeCodes
from edge_agent.kiosk_session import KioskError, KioskState
from edge_agent.kiosk_station import KioskStation, bp_progress
from edge_agent.kiosk_ui.words import LANG_NAMES, LANGS, Lang, parse_lang, word

log = logging.getLogger("remon.kiosk.ui")
STATIC = Path(__file__).parent / "static"
LANG_COOKIE: Final = "kiosk_lang"
#: How often the station's timeouts and send confirmation are looked at.
POLL_S: Final = 0.5
_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; style-src 'self'; script-src 'none'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "Cache-Control": "no-store",  # the next patient must find nothing of this one
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_UNITS: Final = {"mm[Hg]": "mmHg", "Cel": "°C", "kg/m2": "kg/m²"}
_DECIMALS: Final = {"Cel": 1, "kg": 1, "cm": 1, "kg/m2": 1}


@dataclass(frozen=True, slots=True)
class Question:
    """A health-check question: ``kind`` yesno, number (``lo``..``hi``) or choice."""

    id: str
    kind: str
    choices: tuple[str, ...] = ()
    lo: int = 0
    hi: int = 0


DEFAULT_QUESTIONS: Final = (
    Question("smoker", "yesno"),
    Question("exercise-days-week", "number", lo=0, hi=7),
    Question("feeling", "choice", choices=("good", "fair", "poor")),
)

_env = Environment(
    loader=PackageLoader("edge_agent.kiosk_ui", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _see_other(url: str = "/") -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=dict(_HEADERS))


def _same_origin(request: Request) -> bool:
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    return origin is None or urlsplit(origin).netloc == request.headers.get("host", "")


def create_kiosk_app(
    station: KioskStation,
    identity: OneTimeCodes,
    *,
    kinds: Mapping[str, str],
    questions: Sequence[Question] = DEFAULT_QUESTIONS,
    tz: str = "Europe/Helsinki",
    poll: bool = True,
) -> FastAPI:
    """``kinds``: each station device's kind (bp, scale, height, oximeter, thermometer), for its
    name and guidance on the screen. ``poll``: run the station's clock in the background."""
    zone = ZoneInfo(tz)
    by_id = {q.id: q for q in questions}

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(_poll(station)) if poll else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = FastAPI(title="remon kiosk", docs_url=None, redoc_url=None, lifespan=lifespan)
    # loopback names only: a page of another site reaching us by DNS rebinding is refused
    app.add_middleware(
        TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost", "[::1]", "testserver"]
    )
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def lang_of(request: Request) -> Lang:
        return parse_lang(request.cookies.get(LANG_COOKIE))

    def page(request: Request, *, error: str | None = None, status: int = 200) -> HTMLResponse:
        lang = lang_of(request)
        view = station.view()

        def t(key: str, **params: object) -> str:
            return word(lang, key, **params)

        def num(value: float | None, unit: str) -> str:
            if value is None or not math.isfinite(value):
                return "—"
            d = _DECIMALS.get(unit, 0)
            pattern = "0" + ("." + "0" * d if d else "")
            text = format_decimal(value, format=pattern, locale=lang)
            return f"{text} {_UNITS.get(unit, unit)}".strip()

        def clock(at: datetime) -> str:
            return at.astimezone(zone).strftime("%H.%M" if lang == "fi" else "%H:%M")

        devices = sorted(station.devices)
        # a page whose step can end by itself reloads by then (the warning a minute ahead,
        # and the wipe: nothing of a visit stays on the screen after it ended)
        refresh = None
        if view.state in (KioskState.MEASURING, KioskState.SENDING):
            refresh = 3
        elif view.deadline is not None:
            due = view.deadline - station.now()
            if view.warning_until is None:
                due -= timedelta(seconds=60)
            refresh = max(1, min(30, math.ceil(due.total_seconds()) + 1))
        html = _env.get_template("kiosk.html").render(
            t=t,
            num=num,
            clock=clock,
            lang=lang,
            langs=[(c, LANG_NAMES[c]) for c in LANGS],
            view=view,
            refresh=refresh,
            bp=bp_progress(view.readings),
            state=view.state.value,
            devices=[(d, kinds.get(d, d)) for d in devices],
            kinds=kinds,
            questions=questions,
            done=request.query_params.get("done"),
            error=error,
        )
        return HTMLResponse(html, status_code=status, headers=dict(_HEADERS))

    def act(request: Request, step: Any) -> Response:
        lang = lang_of(request)
        if not _same_origin(request):
            return page(request, error=word(lang, "error.origin"), status=403)
        try:
            step()
        except IdentificationError as exc:
            return page(request, error=word(lang, f"error.{exc.reason}"), status=422)
        except KioskError as exc:
            log.info("kiosk screen: step refused: %s", exc)
            return page(request, error=word(lang, "error.step"), status=409)
        return _see_other()

    @app.get("/", response_class=HTMLResponse)
    def home(request: Request) -> HTMLResponse:
        return page(request)

    identifying = threading.Lock()  # a double tap must not open two visits or spend twice

    @app.post("/identify")
    def identify(request: Request, code: Annotated[str, Form(max_length=64)] = "") -> Response:
        def step() -> None:
            with identifying:
                if station.view().state is not KioskState.IDLE:
                    raise KioskError("a visit is open")
                who = identity.identify(code, station.now())
                station.identify(who.patient_ref)
                identity.spend(who)

        return act(request, step)

    @app.post("/start")
    def start(request: Request) -> Response:
        return act(request, station.start)

    @app.post("/review")
    def review(request: Request) -> Response:
        return act(request, station.review)

    @app.post("/repeat/{device_id}")
    def repeat(request: Request, device_id: str) -> Response:
        return act(request, lambda: station.repeat(frozenset({device_id})))

    @app.post("/touch")
    def touch(request: Request) -> Response:
        return act(request, station.touch)

    def save_answers(form: Mapping[str, Any]) -> None:
        for qid, raw in form.items():
            q = by_id.get(qid)
            if q is None or not isinstance(raw, str) or not raw:
                continue
            station.answer(qid, _answer_value(q, raw))

    @app.post("/answers")
    async def answers(request: Request) -> Response:
        form = await request.form()
        return act(request, lambda: save_answers(form))

    @app.post("/consent")
    async def consent(request: Request) -> Response:
        form = await request.form()  # the answers chosen with the consent, saved or not

        def step() -> None:
            save_answers(form)
            station.consent()

        return act(request, step)

    @app.post("/cancel")
    def cancel(request: Request) -> Response:
        def step() -> None:
            station.cancel("cancelled by the patient")

        response = act(request, step)
        if isinstance(response, RedirectResponse):
            return _see_other("/?done=wiped")
        return response

    @app.get("/lang/{code}")
    def switch_language(code: str) -> RedirectResponse:
        response = _see_other()
        response.set_cookie(LANG_COOKIE, parse_lang(code), samesite="strict", max_age=3600)
        return response

    return app


def _answer_value(q: Question, raw: str) -> bool | int | str:
    if q.kind == "yesno":
        if raw not in ("yes", "no"):
            raise KioskError(f"{q.id}: answer yes or no")
        return raw == "yes"
    if q.kind == "number":
        if not re.fullmatch(r"[0-9]{1,3}", raw) or not q.lo <= int(raw) <= q.hi:
            raise KioskError(f"{q.id}: a whole number {q.lo}-{q.hi}")
        return int(raw)
    if raw not in q.choices:
        raise KioskError(f"{q.id}: one of {', '.join(q.choices)}")
    return raw


async def _poll(station: KioskStation) -> None:
    """The station's clock: timeouts and send confirmations. An error (a locked outbox file,
    say) is logged and the next tick tries again: a stopped clock would keep a visit open."""
    while True:
        try:
            await asyncio.to_thread(station.poll)
        except Exception:
            log.exception("kiosk screen: the station's clock tick failed; retrying")
        await asyncio.sleep(POLL_S)
