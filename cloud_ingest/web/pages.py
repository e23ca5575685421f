"""The care team's pages: sign-in, the live queue, an alert, patients, the fleet, reports.

Thin handlers: read through :class:`IngestService` / :class:`CareDirectory` with the viewer's
:class:`Principal` (so a page shows exactly what the API would return to the same token), ask
:mod:`cloud_ingest.web.views` for derived pictures, render a template. Forms post back and
redirect (POST/redirect/GET) so a reload never repeats an action.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from jinja2 import Environment, PackageLoader, select_autoescape

from cloud_ingest.api.deps import CareDep, ClinicalDep, ServiceDep
from cloud_ingest.api.stream import alert_feed, resume_point, start_point
from cloud_ingest.care import DirectoryError, ForbiddenError, Principal, UnknownEntryError
from cloud_ingest.clinical_settings import SettingsError
from cloud_ingest.rules.lifecycle import DEFAULT_POLICY
from cloud_ingest.service import (
    AlertNotFoundError,
    AssignmentError,
    ConflictError,
    InvalidTransitionError,
    RuleError,
    SnoozeRefusedError,
    UnknownConditionError,
)
from cloud_ingest.storage.records import AlertRecord
from cloud_ingest.web import views
from cloud_ingest.web.charts import TIR_TARGETS
from cloud_ingest.web.i18n import (
    DEFAULT_TZ,
    LANG_NAMES,
    LANGS,
    Translator,
    parse_lang,
    unit,
    value_text,
)
from cloud_ingest.web.session import (
    LANG_COOKIE,
    SESSION_COOKIE,
    SESSION_MAX_AGE_S,
    SESSION_TTL,
    UI_PREFIX,
    PostingViewerDep,
    Viewer,
    ViewerDep,
    check_same_origin,
    safe_next,
    translator,
)
from device_profiles.clinical import CGM_CV_TARGET_PERCENT

router = APIRouter(prefix=UI_PREFIX, include_in_schema=False)

_env = Environment(
    loader=PackageLoader("cloud_ingest.web", "templates"),
    autoescape=select_autoescape(["html", "svg"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
#: IEC 60601-1-8 visual alarm markers: priority is told by text and marks, not colour alone.
PRIORITY_MARK: Final = {"high": "!!!", "medium": "!!", "low": "!"}
KINDS: Final = ("threshold", "event", "silence", "reading")
STATES: Final = ("active", "open", "acknowledged", "resolved", "all")
PRIORITIES: Final = ("high", "medium", "low")
#: Queue rows per page (the working queue rarely holds more; further pages by ``page``).
PAGE_ROWS: Final = 100
MAX_PAGE: Final = 1000
#: A note is kept in the audit log: bounded as the API's (AlertNote).
NOTE_MAX: Final = 2000
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: under no-referrer a browser without Fetch Metadata sends
    # "Origin: null" on our own form posts, which check_same_origin must refuse
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",  # patient data: never kept by a shared browser's cache
}


def render(
    request: Request,
    name: str,
    *,
    t: Translator,
    viewer: Viewer | None = None,
    status_code: int = 200,
    **ctx: Any,
) -> HTMLResponse:
    template = _env.get_template(name)
    html = template.render(
        request=request,
        t=t,
        viewer=viewer,
        langs=[(code, LANG_NAMES[code]) for code in LANGS],
        here=request.url.path + (f"?{request.url.query}" if request.url.query else ""),
        prefix=UI_PREFIX,
        kiosk_prefix=views.KIOSK_SITE_PREFIX,
        mark=PRIORITY_MARK,
        unit=unit,
        val=value_text,
        now=datetime.now(UTC),
        **ctx,
    )
    return HTMLResponse(html, status_code=status_code)  # headers: web.__init__'s middleware


def error_page(
    request: Request, t: Translator, viewer: Viewer | None, status_code: int, message: str
) -> HTMLResponse:
    return render(
        request, "error.html", t=t, viewer=viewer, status_code=status_code, message=message
    )


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


# -- sign-in, sign-out, language -----------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
def home() -> RedirectResponse:
    return _see_other(f"{UI_PREFIX}/queue")


@router.get("/login", response_class=HTMLResponse)
def login_form(
    request: Request, next: Annotated[str | None, Query(max_length=2000)] = None
) -> HTMLResponse:
    t = translator(request)
    return render(request, "login.html", t=t, next=safe_next(next), failed=False)


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    care: CareDep,
    token: Annotated[str, Form(max_length=512)] = "",
    next: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    check_same_origin(request)
    t = translator(request)
    settings = request.app.state.settings
    opened = None
    if token.strip():
        opened = care.open_session(
            token.strip(), settings.api_tokens, now=datetime.now(UTC), ttl=SESSION_TTL
        )
    if opened is None:
        return render(
            request, "login.html", t=t, next=safe_next(next), failed=True, status_code=401
        )
    sid, _ = opened
    response = _see_other(safe_next(next))
    response.set_cookie(
        SESSION_COOKIE,
        sid,
        max_age=SESSION_MAX_AGE_S,
        path=UI_PREFIX,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
def logout(request: Request, care: CareDep) -> RedirectResponse:
    check_same_origin(request)
    sid = request.cookies.get(SESSION_COOKIE)
    if sid and len(sid) <= 128:
        now = datetime.now(UTC)
        settings = request.app.state.settings
        care.close_session(sid, care.session_principal(sid, settings.api_tokens, now=now), now=now)
    response = _see_other(f"{UI_PREFIX}/login")
    response.delete_cookie(SESSION_COOKIE, path=UI_PREFIX)
    return response


@router.get("/lang/{code}")
def switch_language(
    code: Annotated[str, Path(pattern="^(fi|sv|en)$")],
    next: Annotated[str | None, Query(max_length=2000)] = None,
) -> RedirectResponse:
    response = _see_other(safe_next(next))
    response.set_cookie(
        LANG_COOKIE, parse_lang(code), max_age=365 * 86400, path=UI_PREFIX, samesite="lax"
    )
    return response


# -- the queue -----------------------------------------------------------------------------------


def _queue_filters(
    state: str | None,
    kind: str | None,
    priority: str | None,
    team: str | None,
    page: int = 1,
) -> dict[str, str]:
    """The queue's filters as given, each checked against its choices (anything else: all)."""
    out = {"state": state if state in STATES else "active"}
    if kind in KINDS:
        out["kind"] = kind
    if priority in PRIORITIES:
        out["priority"] = priority
    if team:
        out["team"] = team[:64]
    if page > 1:
        out["page"] = str(page)
    return out


def _queue_rows(
    viewer: Viewer, service: Any, flt: Mapping[str, str]
) -> tuple[list[AlertRecord], bool]:
    """One page of the queue, and whether another page follows."""
    state = flt["state"]
    page = int(flt.get("page", "1"))
    rows = list(
        service.list_alerts(
            principal=viewer.principal,
            state=state if state in ("open", "acknowledged", "resolved") else None,
            active_only=state == "active",
            kind=flt.get("kind"),
            priority=flt.get("priority"),
            team_id=flt.get("team"),
            include_snoozed=state not in ("active",),
            limit=PAGE_ROWS + 1,
            offset=(page - 1) * PAGE_ROWS,
        )
    )
    return rows[:PAGE_ROWS], len(rows) > PAGE_ROWS


def _page_links(flt: Mapping[str, str], more: bool) -> dict[str, str | int | None]:
    page = int(flt.get("page", "1"))

    def at(n: int) -> str:
        return f"{UI_PREFIX}/queue?" + urlencode(
            {**flt, "page": str(n)} if n > 1 else {k: v for k, v in flt.items() if k != "page"}
        )

    return {
        "page": page,
        "first_row": (page - 1) * PAGE_ROWS + 1,
        "prev": at(page - 1) if page > 1 else None,
        "next": at(page + 1) if more and page < MAX_PAGE else None,
    }


FilterQ = Annotated[str | None, Query(max_length=64)]
PageQ = Annotated[int, Query(ge=1, le=MAX_PAGE)]


def queue_filters(
    state: FilterQ = None,
    kind: FilterQ = None,
    priority: FilterQ = None,
    team: FilterQ = None,
    page: PageQ = 1,
) -> dict[str, str]:
    """The queue page's and its rows fragment's query parameters, checked."""
    return _queue_filters(state, kind, priority, team, page)


QueueFilters = Annotated[dict[str, str], Depends(queue_filters)]


@router.get("/queue", response_class=HTMLResponse)
def queue(
    request: Request,
    viewer: ViewerDep,
    service: ServiceDep,
    care: CareDep,
    flt: QueueFilters,
) -> HTMLResponse:
    rows, more = _queue_rows(viewer, service, flt)
    teams = (
        [tm.id for tm in care.directory.list_teams()]
        if viewer.principal.is_admin
        else sorted(viewer.principal.team_ids)
    )
    return render(
        request,
        "queue.html",
        t=viewer.t,
        viewer=viewer,
        rows=rows,
        flt=flt,
        teams=teams,
        kinds=KINDS,
        states=STATES,
        priorities=PRIORITIES,
        query=urlencode(flt),
        pager=_page_links(flt, more),
        shown=len(rows),
    )


@router.get("/queue/rows", response_class=HTMLResponse)
def queue_rows(
    request: Request,
    viewer: ViewerDep,
    service: ServiceDep,
    flt: QueueFilters,
) -> HTMLResponse:
    """The queue table's body alone: what the page's script swaps in when the queue changed."""
    rows, _ = _queue_rows(viewer, service, flt)
    return render(request, "_queue_rows.html", t=viewer.t, viewer=viewer, rows=rows)


@router.get("/queue/stream", response_class=EventSourceResponse)
async def queue_stream(
    request: Request, viewer: ViewerDep, service: ServiceDep, care: CareDep
) -> AsyncIterator[ServerSentEvent]:
    """Server-sent events for the page: one ``change`` per queue change the viewer may see,
    carrying the alert's id, priority and a short text for the page to announce. The stream
    ends when the session does (sign-out, expiry, a revoked token)."""
    start = await start_point(service, resume_point(request.headers.get("last-event-id")))
    t = viewer.t
    sid = request.cookies.get(SESSION_COOKIE, "")
    tokens = request.app.state.settings.api_tokens

    def recheck() -> Principal | None:
        return care.session_principal(sid, tokens, now=datetime.now(UTC))

    yield ServerSentEvent(event="ready", data={"after": start}, retry=2000)
    async for event, alert in alert_feed(
        request, service, viewer.principal, start, recheck=recheck
    ):
        title = t.condition(alert.condition, alert.condition)
        yield ServerSentEvent(
            event="change",
            id=str(event.id),
            data={
                "alert": alert.id,
                "action": event.action,
                "priority": alert.priority,
                "text": f"{t('priority.' + alert.priority)}: {title}, {alert.subject_ref}",
            },
        )


# -- one alert -----------------------------------------------------------------------------------


def _alert_page(
    request: Request,
    viewer: Viewer,
    service: Any,
    care: Any,
    alert_id: int,
    *,
    error: str | None = None,
    status_code: int = 200,
    done: bool = False,
) -> HTMLResponse:
    try:
        detail = service.get_alert(alert_id, principal=viewer.principal)
    except AlertNotFoundError:
        return error_page(request, viewer.t, viewer, 404, viewer.t("error.not_found"))
    alert: AlertRecord = detail.alert
    patient = care.directory.get_patient(alert.subject_ref)
    t = viewer.in_zone(patient.time_zone if patient else None)
    readings = []
    if alert.measure:
        readings = service.list_observations(
            subject=alert.subject_ref,
            measure=alert.measure,
            since=alert.first_time - timedelta(hours=6),
            until=alert.last_time + timedelta(hours=1, microseconds=1),
            limit=200,
        )
    trigger_ids = {alert.first_obs_id, alert.last_obs_id} - {None}
    staff = [
        s
        for s in (care.directory.list_staff(team_id=alert.team_id) if alert.team_id else [])
        if s.active and s.role == alert.audience
    ]
    bound = DEFAULT_POLICY.max_snooze.get(alert.priority)
    max_snooze = int(bound.total_seconds() // 60) if bound is not None else 0
    return render(
        request,
        "alert.html",
        t=t,
        viewer=viewer,
        alert=alert,
        events=detail.events,
        readings=readings,
        trigger_ids=trigger_ids,
        staff=staff,
        max_snooze=max_snooze,
        can_see_patient=care.can_see_subject(viewer.principal, alert.subject_ref),
        error=error,
        done=done,
        status_code=status_code,
    )


AlertId = Annotated[int, Path(ge=1, le=2**62)]


@router.get("/alerts/{alert_id}", response_class=HTMLResponse)
def alert_detail(
    request: Request,
    alert_id: AlertId,
    viewer: ViewerDep,
    service: ServiceDep,
    care: CareDep,
    done: bool = False,
) -> HTMLResponse:
    return _alert_page(request, viewer, service, care, alert_id, done=done)


def _note(note: str) -> str | None:
    text = note.strip()
    return text[:NOTE_MAX] if text else None


@router.post("/alerts/{alert_id}/{action}", response_class=HTMLResponse)
def alert_action(
    request: Request,
    alert_id: AlertId,
    action: Annotated[str, Path(pattern="^(acknowledge|assign|snooze|resolve)$")],
    viewer: PostingViewerDep,
    service: ServiceDep,
    care: CareDep,
    note: Annotated[str, Form(max_length=NOTE_MAX)] = "",
    assignee: Annotated[str, Form(max_length=64)] = "",
    minutes: Annotated[str, Form(max_length=16)] = "",
) -> Response:
    who = viewer.principal
    t = viewer.t
    try:
        if action == "acknowledge":
            service.acknowledge(alert_id, actor=who.actor, note=_note(note), principal=who)
        elif action == "resolve":
            service.resolve(alert_id, actor=who.actor, note=_note(note), principal=who)
        elif action == "assign":
            service.assign(
                alert_id,
                actor=who.actor,
                assignee=assignee or None,
                note=_note(note),
                principal=who,
            )
        else:
            try:
                span = float(minutes.replace(",", "."))
            except ValueError:
                span = math.nan
            if not math.isfinite(span):
                msg = f"{t('error.invalid')}: {t('alert.snooze_minutes')} {minutes!r}"
                return _alert_page(
                    request, viewer, service, care, alert_id, error=msg, status_code=422
                )
            service.snooze(alert_id, actor=who.actor, minutes=span, note=_note(note), principal=who)
    except AlertNotFoundError:
        return error_page(request, t, viewer, 404, t("error.not_found"))
    except SnoozeRefusedError as exc:
        msg = f"{t('error.invalid')}: {t('alert.snooze_minutes')} {minutes!r} ({exc})"
        return _alert_page(request, viewer, service, care, alert_id, error=msg, status_code=422)
    except (InvalidTransitionError, ConflictError) as exc:
        return _alert_page(
            request,
            viewer,
            service,
            care,
            alert_id,
            error=f"{t('error.conflict')}: {exc}",
            status_code=409,
        )
    except AssignmentError as exc:
        return _alert_page(
            request, viewer, service, care, alert_id, error=str(exc), status_code=422
        )
    return _see_other(f"{UI_PREFIX}/alerts/{alert_id}?done=true")


# -- patients ------------------------------------------------------------------------------------


@router.get("/patients", response_class=HTMLResponse)
def patients(
    request: Request, viewer: ViewerDep, service: ServiceDep, care: CareDep
) -> HTMLResponse:
    who = viewer.principal
    own = {p.subject_ref: p for p in care.list_patients(who)}
    clients = {c.subject_ref: c for c in care.list_dispenser_clients(who)}
    refs = sorted(set(own) | set(clients))
    open_by_subject: dict[str, list[AlertRecord]] = {}
    for a in service.list_alerts(principal=who, active_only=True, limit=1000):
        open_by_subject.setdefault(a.subject_ref, []).append(a)
    return render(
        request,
        "patients.html",
        t=viewer.t,
        viewer=viewer,
        refs=refs,
        patients=own,
        clients=clients,
        open_by_subject=open_by_subject,
    )


Subject = Annotated[str, Path(min_length=1, max_length=128)]


def _patient_zone(care: Any, subject: str) -> ZoneInfo:
    patient = care.directory.get_patient(subject)
    try:
        return ZoneInfo(patient.time_zone) if patient else ZoneInfo(DEFAULT_TZ)
    except (KeyError, ValueError):
        return ZoneInfo(DEFAULT_TZ)


@router.get("/patients/{subject}", response_class=HTMLResponse)
def patient(
    request: Request,
    subject: Subject,
    viewer: ViewerDep,
    service: ServiceDep,
    care: CareDep,
    clinical: ClinicalDep,
    saved: str | None = None,
) -> HTMLResponse:
    who = viewer.principal
    if not care.can_see_subject(who, subject):
        return error_page(request, viewer.t, viewer, 404, viewer.t("error.not_found"))
    return _patient_page(request, viewer, service, care, clinical, subject, saved=saved)


def _patient_page(
    request: Request,
    viewer: Viewer,
    service: Any,
    care: Any,
    clinical: Any,
    subject: str,
    *,
    saved: str | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    who = viewer.principal
    tz = _patient_zone(care, subject)
    t = viewer.in_zone(tz.key)
    now = datetime.now(UTC)
    is_client = care.directory.get_dispenser_client(subject) is not None
    patient_rec = care.directory.get_patient(subject)
    clinical_view = who.is_admin or (
        patient_rec is not None and patient_rec.team_id in who.team_ids
    )
    try:
        clinical.require_patient_clinician(who, subject, "a patient's threshold")
        can_edit = True
    except (ForbiddenError, UnknownEntryError):
        can_edit = False
    ctx: dict[str, Any] = {
        "subject": subject,
        "tz": tz.key,
        "is_client": is_client,
        "clinical_view": clinical_view,
        "alerts": views.open_alerts(service, who, subject),
        "can_edit": can_edit,
        "saved": saved,
        "error": error,
    }
    if clinical_view:
        ctx |= {
            "latest": views.latest_readings(service, subject, t),
            "thresholds": views.thresholds(service, subject),
            "pef": views.pef_view(service, subject, tz, now, t),
            "cgm": views.cgm_view(service, subject, tz, now, t),
            "bp": views.bp_view(service, subject, tz, now, t),
            "visits": views.kiosk_visits(service, subject, now),
        }
    if is_client:
        ctx["doses"] = views.dose_view(service, subject, tz, now, t)
    return render(request, "patient.html", t=t, viewer=viewer, status_code=status_code, **ctx)


@router.post("/patients/{subject}/thresholds/{condition}", response_class=HTMLResponse)
def set_threshold(
    request: Request,
    subject: Subject,
    condition: Annotated[str, Path(min_length=1, max_length=64)],
    viewer: PostingViewerDep,
    service: ServiceDep,
    care: CareDep,
    clinical: ClinicalDep,
    value: Annotated[str, Form(max_length=32)] = "",
    reset: Annotated[str, Form(max_length=8)] = "",
) -> Response:
    """A clinician sets (or resets) the patient's own value for a condition; the value goes
    through the same checks as the API's (unit, safety bounds), and the change is audited."""
    who = viewer.principal
    t = viewer.t
    if not care.can_see_subject(who, subject):
        return error_page(request, t, viewer, 404, t("error.not_found"))
    try:
        clinical.require_patient_clinician(who, subject, "a patient's threshold")
        current = service.get_threshold(subject, condition)
        now = datetime.now(UTC)
        if reset:
            service.reset_threshold(subject, condition)
            care.record(who, "threshold.reset", "patient", subject, now=now, condition=condition)
        else:
            try:
                number = float(value.strip().replace(",", "."))
            except ValueError:
                number = math.nan
            if not math.isfinite(number):
                raise RuleError(f"{condition}: {value!r} is not a number")
            if math.isclose(number, current.value, rel_tol=0.0, abs_tol=1e-6):
                # Save pressed on the unchanged field (t.exact: 6 decimals): no patient
                # override, no audit entry
                return _see_other(f"{UI_PREFIX}/patients/{subject}#th-{condition}")
            service.put_threshold(
                subject, condition, value=number, unit=current.unit, actor=who.actor
            )
            care.record(
                who,
                "threshold.put",
                "patient",
                subject,
                now=now,
                condition=condition,
                value=number,
                unit=current.unit,
            )
    except (ForbiddenError, UnknownEntryError):
        return error_page(request, t, viewer, 403, t("error.forbidden"))
    except UnknownConditionError:
        return error_page(request, t, viewer, 404, t("error.not_found"))
    except (RuleError, SettingsError, DirectoryError) as exc:
        return _patient_page(
            request,
            viewer,
            service,
            care,
            clinical,
            subject,
            error=f"{t('error.invalid')}: {exc}",
            status_code=422,
        )
    return _see_other(f"{UI_PREFIX}/patients/{subject}?saved={condition}#thresholds")


# -- reports -------------------------------------------------------------------------------------


@router.get("/patients/{subject}/reports/{report}", response_class=HTMLResponse)
def report(
    request: Request,
    subject: Subject,
    report: Annotated[str, Path(pattern="^(pef|agp)$")],
    viewer: ViewerDep,
    service: ServiceDep,
    care: CareDep,
) -> HTMLResponse:
    who = viewer.principal
    patient_rec = care.directory.get_patient(subject)
    if patient_rec is None or not (who.is_admin or patient_rec.team_id in who.team_ids):
        return error_page(request, viewer.t, viewer, 404, viewer.t("error.not_found"))
    tz = _patient_zone(care, subject)
    t = viewer.in_zone(tz.key)
    now = datetime.now(UTC)
    data = (
        views.pef_view(service, subject, tz, now, t)
        if report == "pef"
        else views.cgm_view(service, subject, tz, now, t)
    )
    return render(
        request,
        f"report_{report}.html",
        t=t,
        viewer=viewer,
        subject=subject,
        tz=tz.key,
        data=data,
        printed=now,
        cv_target=CGM_CV_TARGET_PERCENT,
        tir_targets=TIR_TARGETS,
    )


# -- fleet ---------------------------------------------------------------------------------------


@router.get("/fleet", response_class=HTMLResponse)
def fleet(request: Request, viewer: ViewerDep, service: ServiceDep, care: CareDep) -> HTMLResponse:
    who = viewer.principal
    subjects: list[str] | None = None
    if not who.is_admin:
        subjects = sorted(
            {p.subject_ref for p in care.list_patients(who)}
            | {c.subject_ref for c in care.list_dispenser_clients(who)}
        )
    sites = views.fleet(service, subjects)
    return render(
        request,
        "fleet.html",
        t=viewer.t,
        viewer=viewer,
        sites=sites,
        clock_fault_s=views.CLOCK_FAULT_S,
    )
