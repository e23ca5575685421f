"""The care team's alert queue: list, detail, acknowledge, assign, snooze, resolve, and the SSE
stream of queue changes. Every list and action is limited to the alerts the caller may see
(:class:`cloud_ingest.care.Principal`); an alert of another team answers 404.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Path, Query, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent

from cloud_ingest.api.deps import CareDep, PrincipalDep, ServiceDep
from cloud_ingest.api.schemas import (
    AlertChangeOut,
    AlertDetailOut,
    AlertEventOut,
    AlertNote,
    AlertOut,
    AlertStateName,
    AssignIn,
    ErrorOut,
    PriorityName,
    SnoozeIn,
)
from cloud_ingest.api.stream import MAX_EVENT_ID, alert_feed, resume_point, start_point

router = APIRouter(prefix="/alerts", tags=["alerts"])

AlertId = Annotated[int, Path(ge=1)]
_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut},
    409: {"model": ErrorOut},
    422: {"model": ErrorOut},
}


@router.get("")
def list_alerts(
    service: ServiceDep,
    who: PrincipalDep,
    state: AlertStateName | None = None,
    subject: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    priority: PriorityName | None = None,
    condition: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    kind: Annotated[str | None, Query(pattern="^(threshold|event|silence|reading)$")] = None,
    assigned_to: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    team: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    include_snoozed: bool = True,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[AlertOut]:
    """The caller's queue, highest priority first, then newest. ``include_snoozed=false`` is the
    working view: alerts snoozed into the future are left out until their snooze ends."""
    rows = service.list_alerts(
        principal=who,
        state=state,
        subject=subject,
        priority=priority,
        condition=condition,
        kind=kind,
        assigned_to=assigned_to,
        team_id=team,
        include_snoozed=include_snoozed,
        limit=limit,
        offset=offset,
    )
    return [AlertOut.of(r) for r in rows]


@router.get("/stream", response_class=EventSourceResponse)
async def stream(
    request: Request,
    service: ServiceDep,
    who: PrincipalDep,
    care: CareDep,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    after: Annotated[int | None, Query(ge=0, le=MAX_EVENT_ID)] = None,
) -> AsyncIterator[ServerSentEvent]:
    """Server-sent events, one per queue change the caller may see (``event: alert``; the data
    is the audit event and the alert as it is now; the id is the audit event's id).

    A reconnecting client sends ``Last-Event-ID`` (browsers do it themselves) and gets what it
    missed; ``after`` does the same for clients that cannot set headers. A new client starts
    with the changes made from now on. The stream ends when its token is revoked.
    """
    token = request.headers.get("authorization", "").partition(" ")[2].strip()
    tokens = request.app.state.settings.api_tokens
    start = await start_point(service, resume_point(last_event_id, after))
    yield ServerSentEvent(event="ready", data={"after": start}, retry=2000)
    feed = alert_feed(
        request, service, who, start, recheck=partial(care.resolve_token, token, tokens)
    )
    async for event, alert in feed:
        change = AlertChangeOut(event=AlertEventOut.model_validate(event), alert=AlertOut.of(alert))
        yield ServerSentEvent(event="alert", id=str(event.id), data=change)


@router.get("/{alert_id}", responses={404: {"model": ErrorOut}})
def get_alert(alert_id: AlertId, service: ServiceDep, who: PrincipalDep) -> AlertDetailOut:
    """One alert with its audit trail."""
    return AlertDetailOut.of_detail(service.get_alert(alert_id, principal=who))


@router.post("/{alert_id}/acknowledge", responses=_ERRORS)
def acknowledge(
    alert_id: AlertId,
    service: ServiceDep,
    who: PrincipalDep,
    body: Annotated[AlertNote | None, Body()] = None,
) -> AlertOut:
    """open -> acknowledged; the caller is recorded. 409 from any other state."""
    return AlertOut.of(
        service.acknowledge(
            alert_id, actor=who.actor, note=body.note if body else None, principal=who
        )
    )


@router.post("/{alert_id}/assign", responses=_ERRORS)
def assign(alert_id: AlertId, body: AssignIn, service: ServiceDep, who: PrincipalDep) -> AlertOut:
    """Name the member of the alert's team who handles it (null unassigns). 422 when the
    assignee is not an active member of the alert's team with the alert's audience role."""
    return AlertOut.of(
        service.assign(
            alert_id, actor=who.actor, assignee=body.assignee, note=body.note, principal=who
        )
    )


@router.post("/{alert_id}/snooze", responses=_ERRORS)
def snooze(alert_id: AlertId, body: SnoozeIn, service: ServiceDep, who: PrincipalDep) -> AlertOut:
    """Hide an acknowledged alert from the working queue for ``minutes`` (bounded per priority:
    high 30 min, medium 4 h, low 24 h by default). 409 for an open or resolved alert or a snooze
    past the bound."""
    return AlertOut.of(
        service.snooze(
            alert_id, actor=who.actor, minutes=body.minutes, note=body.note, principal=who
        )
    )


@router.post("/{alert_id}/resolve", responses=_ERRORS)
def resolve(
    alert_id: AlertId,
    service: ServiceDep,
    who: PrincipalDep,
    body: Annotated[AlertNote | None, Body()] = None,
) -> AlertOut:
    """open/acknowledged -> resolved with an optional note; the caller is recorded. 409 if
    already resolved."""
    return AlertOut.of(
        service.resolve(alert_id, actor=who.actor, note=body.note if body else None, principal=who)
    )
