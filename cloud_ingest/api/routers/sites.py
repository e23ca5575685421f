from __future__ import annotations

from fastapi import APIRouter

from cloud_ingest.api.deps import ActorDep, ServiceDep
from cloud_ingest.api.schemas import SiteOut

router = APIRouter(prefix="/sites", tags=["sites"])


@router.get("")
def list_sites(service: ServiceDep, _actor: ActorDep) -> list[SiteOut]:
    """Hubs and kiosks with their last reported state: online, or offline (last will)."""
    return [SiteOut.of(s) for s in service.list_sites()]
