from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from cloud_ingest.api.deps import PrincipalDep, ServiceDep
from cloud_ingest.api.schemas import DeadLetterOut

router = APIRouter(prefix="/dead-letters", tags=["dead letters"])


@router.get("")
def list_dead_letters(
    service: ServiceDep,
    who: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[DeadLetterOut]:
    """Payloads that broke the wire contract, newest first, with the reason (admins: a dead
    letter may hold any patient's data)."""
    who.require_admin("reading dead letters")
    return [DeadLetterOut.of(r) for r in service.list_dead_letters(limit=limit, offset=offset)]
