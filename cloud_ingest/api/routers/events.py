from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from cloud_ingest.api.deps import CareDep, PrincipalDep, ServiceDep
from cloud_ingest.api.schemas import AwareDatetime, EventOut
from device_profiles.events import EventKind

router = APIRouter(prefix="/events", tags=["device events"])


@router.get("")
def list_events(
    service: ServiceDep,
    who: PrincipalDep,
    care: CareDep,
    subject: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    kind: EventKind | None = None,
    device_id: Annotated[str | None, Query(min_length=1, max_length=63)] = None,
    since: Annotated[AwareDatetime | None, Query(description="inclusive, with UTC offset")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[EventOut]:
    """Device events (e.g. a dispenser's dose_missed), newest first. Staff name a subject of
    their teams; admins may list all."""
    care.require_subject(who, subject)
    rows = service.list_events(
        subject=subject,
        kind=kind.value if kind is not None else None,
        device_id=device_id,
        since=since,
        limit=limit,
        offset=offset,
    )
    return [EventOut.of(r) for r in rows]
