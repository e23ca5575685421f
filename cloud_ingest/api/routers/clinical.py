"""Clinical settings of teams and patients, their kiosk visits, the devices each subject's data
came from, and the subjects nobody is routed for yet."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from cloud_ingest.api.deps import CareDep, ClinicalDep, PrincipalDep, ServiceDep
from cloud_ingest.api.schemas import (
    AwareDatetime,
    DeviceSubjectOut,
    ErrorOut,
    ObservationOut,
    ParameterOut,
    PefDiaryIn,
    PefDiaryOut,
    PersonalBestIn,
    TeamThresholdIn,
    TeamThresholdOut,
    UnroutedOut,
    VisitOut,
)
from cloud_ingest.care import UnknownEntryError
from cloud_ingest.clinical_settings import PEF_PERSONAL_BEST

router = APIRouter(tags=["clinical settings"])

TeamId = Annotated[str, Path(min_length=1, max_length=64)]
Subject = Annotated[str, Path(min_length=1, max_length=128)]
Condition = Annotated[str, Path(min_length=1, max_length=64)]
_ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorOut},
    404: {"model": ErrorOut},
    422: {"model": ErrorOut},
}


def _now() -> datetime:
    return datetime.now(UTC)


@router.put("/teams/{team_id}/thresholds/{condition}", responses=_ERRORS)
def put_team_threshold(
    team_id: TeamId,
    condition: Condition,
    body: TeamThresholdIn,
    who: PrincipalDep,
    clinical: ClinicalDep,
) -> TeamThresholdOut:
    """A care team's value for a condition: it applies to the team's patients who have no
    value of their own (same unit and safety bounds as a patient's value). The team's clinicians
    and admins; audited."""
    rec = clinical.put_team_threshold(
        who, team_id, condition, value=body.value, unit=body.unit, now=_now()
    )
    return TeamThresholdOut.model_validate(rec)


@router.delete("/teams/{team_id}/thresholds/{condition}", responses=_ERRORS)
def delete_team_threshold(
    team_id: TeamId, condition: Condition, who: PrincipalDep, clinical: ClinicalDep
) -> dict[str, bool]:
    """Remove a team's value: the default applies again to its patients without their own."""
    return {"deleted": clinical.delete_team_threshold(who, team_id, condition, now=_now())}


@router.get("/teams/{team_id}/thresholds", responses=_ERRORS)
def list_team_thresholds(
    team_id: TeamId, who: PrincipalDep, clinical: ClinicalDep
) -> list[TeamThresholdOut]:
    rows = clinical.list_team_thresholds(who, team_id)
    return [TeamThresholdOut.model_validate(r) for r in rows]


@router.put("/patients/{subject}/pef-personal-best", responses=_ERRORS)
def put_pef_personal_best(
    subject: Subject, body: PersonalBestIn, who: PrincipalDep, clinical: ClinicalDep
) -> ParameterOut:
    """The patient's PEF personal best (L/min) that the PEF zone alerts compare against."""
    rec = clinical.put_pef_personal_best(who, subject, value=body.value, now=_now())
    return ParameterOut.model_validate(rec)


@router.get("/patients/{subject}/pef-personal-best", responses=_ERRORS)
def get_pef_personal_best(
    subject: Subject, who: PrincipalDep, care: CareDep, service: ServiceDep
) -> ParameterOut:
    care.require_subject(who, subject)
    rec = service.storage.get_parameter(subject, PEF_PERSONAL_BEST)
    if rec is None:
        raise UnknownEntryError(f"no PEF personal best for {subject!r}")
    return ParameterOut.model_validate(rec)


@router.put("/patients/{subject}/pef-diary", responses=_ERRORS)
def put_pef_diary(
    subject: Subject, body: PefDiaryIn, who: PrincipalDep, clinical: ClinicalDep
) -> PefDiaryOut:
    """The patient's PEF diary period (local days): a session window that ends without a
    reading raises ``pef-session-missed`` for the care team."""
    rec = clinical.put_pef_diary(
        who, subject, first_day=body.first_day, last_day=body.last_day, now=_now()
    )
    return PefDiaryOut.model_validate(rec)


@router.get("/patients/{subject}/pef-diary", responses=_ERRORS)
def get_pef_diary(
    subject: Subject, who: PrincipalDep, care: CareDep, service: ServiceDep
) -> PefDiaryOut:
    care.require_subject(who, subject)
    rec = service.storage.get_pef_diary(subject)
    if rec is None:
        raise UnknownEntryError(f"no PEF diary for {subject!r}")
    return PefDiaryOut.model_validate(rec)


@router.get("/patients/{subject}/visits", responses=_ERRORS)
def list_visits(
    subject: Subject,
    who: PrincipalDep,
    care: CareDep,
    service: ServiceDep,
    since: Annotated[AwareDatetime | None, Query(description="with UTC offset")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[VisitOut]:
    """The patient's kiosk visits, newest first, each with its readings and answers."""
    care.require_subject(who, subject)
    out = []
    for v in service.list_visits(subject=subject, since=since, limit=limit):
        readings = [ObservationOut.of(r) for r in service.visit_observations(v)]
        out.append(
            VisitOut.model_validate(
                {
                    **{f: getattr(v, f) for f in VisitOut.model_fields if f != "observations"},
                    "observations": readings,
                }
            )
        )
    return out


@router.get("/devices", responses=_ERRORS)
def list_devices(
    service: ServiceDep,
    who: PrincipalDep,
    care: CareDep,
    subject: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    device_key: Annotated[str | None, Query(min_length=1, max_length=400)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[DeviceSubjectOut]:
    """Which devices reported for which subject, first and last seen (as the hubs bound them),
    with each device's last known battery, signal strength and link state (device telemetry).
    Staff name a subject of their teams; admins may list all or follow one device."""
    if device_key is not None and subject is None:
        who.require_admin("following a device across subjects")
    else:
        care.require_subject(who, subject)
    rows = service.storage.device_subjects(subject_ref=subject, device_key=device_key, limit=limit)
    return [DeviceSubjectOut.model_validate(r) for r in rows]


@router.get("/unrouted", responses=_ERRORS)
def list_unrouted(
    service: ServiceDep,
    who: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[UnroutedOut]:
    """Subjects whose data arrives but who are in no care team (their alerts reach admins only):
    add them with ``PUT /patients/{ref}`` (admins)."""
    who.require_admin("listing unrouted subjects")
    rows = service.storage.unrouted_subjects(limit=limit, offset=offset)
    return [UnroutedOut.model_validate(r) for r in rows]
