from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path

from cloud_ingest.api.deps import CareDep, ClinicalDep, PrincipalDep, ServiceDep
from cloud_ingest.api.schemas import ErrorOut, ThresholdIn, ThresholdOut

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
    clinical: ClinicalDep,
) -> ThresholdOut:
    """Set a patient-specific value (same unit as the default); the caller is recorded on the
    threshold and in the audit log. Clinicians of the patient's team and admins only."""
    care.require_subject(who, subject)  # another team's patient: 404, as for every read
    clinical.require_patient_clinician(who, subject, "a patient's threshold")
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
