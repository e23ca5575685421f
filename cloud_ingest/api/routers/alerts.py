from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query

from cloud_ingest.api.deps import ActorDep, ServiceDep
from cloud_ingest.api.schemas import (
    AlertDetailOut,
    AlertNote,
    AlertOut,
    AlertStateName,
    ErrorOut,
    PriorityName,
)

router = APIRouter(prefix="/alerts", tags=["alerts"])

AlertId = Annotated[int, Path(ge=1)]
_ERRORS: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut}, 409: {"model": ErrorOut}}


@router.get("")
def list_alerts(
    service: ServiceDep,
    _actor: ActorDep,
    state: AlertStateName | None = None,
    subject: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    priority: PriorityName | None = None,
    condition: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[AlertOut]:
    """Alerts, highest priority first, then newest."""
    rows = service.list_alerts(
        state=state,
        subject=subject,
        priority=priority,
        condition=condition,
        limit=limit,
        offset=offset,
    )
    return [AlertOut.of(r) for r in rows]


@router.get("/{alert_id}", responses={404: {"model": ErrorOut}})
def get_alert(alert_id: AlertId, service: ServiceDep, _actor: ActorDep) -> AlertDetailOut:
    """One alert with its audit trail."""
    return AlertDetailOut.of_detail(service.get_alert(alert_id))


@router.post("/{alert_id}/acknowledge", responses=_ERRORS)
def acknowledge(
    alert_id: AlertId,
    service: ServiceDep,
    actor: ActorDep,
    body: Annotated[AlertNote | None, Body()] = None,
) -> AlertOut:
    """open -> acknowledged; the token's actor is recorded. 409 from any other state."""
    return AlertOut.of(service.acknowledge(alert_id, actor=actor, note=body.note if body else None))


@router.post("/{alert_id}/resolve", responses=_ERRORS)
def resolve(
    alert_id: AlertId,
    service: ServiceDep,
    actor: ActorDep,
    body: Annotated[AlertNote | None, Body()] = None,
) -> AlertOut:
    """open/acknowledged -> resolved; the token's actor is recorded. 409 if already resolved."""
    return AlertOut.of(service.resolve(alert_id, actor=actor, note=body.note if body else None))
