from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from cloud_ingest.api.deps import ActorDep, ServiceDep
from cloud_ingest.api.schemas import ErrorOut, ThresholdIn, ThresholdOut

router = APIRouter(prefix="/patients", tags=["patient thresholds"])

Subject = Annotated[str, Path(min_length=1, max_length=128)]
Condition = Annotated[str, Path(min_length=1, max_length=64)]


@router.get("/{subject}/thresholds/{condition}", responses={404: {"model": ErrorOut}})
def get_threshold(
    subject: Subject, condition: Condition, service: ServiceDep, _actor: ActorDep
) -> ThresholdOut:
    """The threshold in effect for this patient (the default unless overridden)."""
    return ThresholdOut.of(service.get_threshold(subject, condition))


@router.put(
    "/{subject}/thresholds/{condition}",
    responses={404: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)
def put_threshold(
    subject: Subject, condition: Condition, body: ThresholdIn, service: ServiceDep, actor: ActorDep
) -> ThresholdOut:
    """Set a patient-specific value (same unit as the default); the token's actor is recorded."""
    return ThresholdOut.of(
        service.put_threshold(subject, condition, value=body.value, unit=body.unit, actor=actor)
    )
