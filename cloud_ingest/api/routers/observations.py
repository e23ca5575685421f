from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from cloud_ingest.api.deps import CareDep, PrincipalDep, ServiceDep
from cloud_ingest.api.schemas import AwareDatetime, ObservationOut

router = APIRouter(prefix="/observations", tags=["observations"])


@router.get("")
def list_observations(
    service: ServiceDep,
    who: PrincipalDep,
    care: CareDep,
    subject: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    since: Annotated[AwareDatetime | None, Query(description="inclusive, with UTC offset")] = None,
    until: Annotated[AwareDatetime | None, Query(description="exclusive, with UTC offset")] = None,
    measure: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[ObservationOut]:
    """Stored readings, newest first. Staff name a subject of their teams; admins may list all."""
    care.require_subject(who, subject)
    rows = service.list_observations(
        subject=subject, since=since, until=until, measure=measure, limit=limit
    )
    return [ObservationOut.of(r) for r in rows]
