from __future__ import annotations

from fastapi import APIRouter

from cloud_ingest.api.deps import ServiceDep
from cloud_ingest.api.schemas import ErrorOut, Health

router = APIRouter(tags=["health"])


@router.get("/health", responses={503: {"model": ErrorOut}})
def health(service: ServiceDep) -> Health:
    """Liveness and database check; needs no token. 503 when the database is unreachable."""
    service.health()
    return Health(status="ok", database="ok")
