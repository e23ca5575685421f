from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path

from cloud_ingest.api.deps import CareDep, PrincipalDep, ServiceDep
from cloud_ingest.api.schemas import ErrorOut, ThresholdIn, ThresholdOut
from cloud_ingest.care import ForbiddenError, Principal, Role

router = APIRouter(prefix="/patients", tags=["patient thresholds"])

Subject = Annotated[str, Path(min_length=1, max_length=128)]
Condition = Annotated[str, Path(min_length=1, max_length=64)]


@router.get("/{subject}/thresholds/{condition}", responses={404: {"model": ErrorOut}})
def get_threshold(
    subject: Subject, condition: Condition, service: ServiceDep, who: PrincipalDep, care: CareDep
) -> ThresholdOut:
    """The threshold in effect for this patient (the default unless overridden)."""
    care.require_subject(who, subject)
    return ThresholdOut.of(service.get_threshold(subject, condition))


@router.put(
    "/{subject}/thresholds/{condition}",
    responses={404: {"model": ErrorOut}, 422: {"model": ErrorOut}},
)
def put_threshold(
    subject: Subject,
    condition: Condition,
    body: ThresholdIn,
    service: ServiceDep,
    who: PrincipalDep,
    care: CareDep,
) -> ThresholdOut:
    """Set a patient-specific value (same unit as the default); the caller is recorded on the
    threshold and in the audit log. Clinicians of the patient's team and admins only."""
    _may_set_thresholds(who, care, subject)
    view = service.put_threshold(
        subject, condition, value=body.value, unit=body.unit, actor=who.actor
    )
    care.record(
        who,
        "threshold.put",
        "patient",
        subject,
        now=datetime.now(UTC),
        condition=condition,
        value=body.value,
        unit=body.unit,
    )
    return ThresholdOut.of(view)


def _may_set_thresholds(who: Principal, care: CareDep, subject: str) -> None:
    care.require_subject(who, subject)
    if who.role not in (Role.CLINICIAN, Role.ADMIN):
        raise ForbiddenError(f"thresholds are set by clinicians; {who.id} is {who.role.value}")
