from __future__ import annotations

from fastapi import APIRouter

from cloud_ingest.api.deps import ActorDep, ServiceDep
from cloud_ingest.api.schemas import StatsOut

router = APIRouter(prefix="/stats", tags=["stats"])


@router.get("")
def stats(service: ServiceDep, _actor: ActorDep) -> StatsOut:
    return StatsOut.of(service.stats())
