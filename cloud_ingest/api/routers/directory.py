"""The care directory: teams, staff, patients' care teams, dispenser clients, the audit log.

Changes need the admin role (403 otherwise) and are written to the audit log with the actor.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from cloud_ingest.api.deps import CareDep, PrincipalDep
from cloud_ingest.api.schemas import (
    AuditOut,
    DispenserClientIn,
    DispenserClientOut,
    ErrorOut,
    PatientIn,
    PatientOut,
    StaffIn,
    StaffIssuedOut,
    StaffOut,
    TeamIn,
    TeamOut,
)
from cloud_ingest.care import Role

router = APIRouter(tags=["care directory"])

Id = Annotated[str, Path(min_length=1, max_length=64)]
Subject = Annotated[str, Path(min_length=1, max_length=128)]
_ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorOut},
    404: {"model": ErrorOut},
    422: {"model": ErrorOut},
}


def _now() -> datetime:
    return datetime.now(UTC)


@router.put("/teams/{team_id}", responses=_ERRORS)
def put_team(team_id: Id, body: TeamIn, care: CareDep, who: PrincipalDep) -> TeamOut:
    """Create or rename a care team."""
    return TeamOut.model_validate(care.put_team(who, team_id, body.name, now=_now()))


@router.get("/teams")
def list_teams(care: CareDep, who: PrincipalDep) -> list[TeamOut]:
    """The teams the caller belongs to (admins: all)."""
    return [TeamOut.model_validate(t) for t in care.list_teams(who)]


@router.put("/staff/{staff_id}", responses=_ERRORS)
def put_staff(staff_id: Id, body: StaffIn, care: CareDep, who: PrincipalDep) -> StaffIssuedOut:
    """Create or replace a staff member. A new member, or ``issue_token``, gets a new API token,
    returned this once."""
    issued = care.put_staff(
        who,
        staff_id,
        name=body.name,
        role=Role(body.role),
        team_ids=body.team_ids,
        active=body.active,
        issue_token=body.issue_token,
        now=_now(),
    )
    out = StaffOut.model_validate(issued.staff).model_dump()
    return StaffIssuedOut(**out, token=issued.token)


@router.get("/staff", responses=_ERRORS)
def list_staff(
    care: CareDep,
    who: PrincipalDep,
    team: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
) -> list[StaffOut]:
    return [StaffOut.model_validate(s) for s in care.list_staff(who, team_id=team)]


@router.put("/patients/{subject}", responses=_ERRORS)
def put_patient(subject: Subject, body: PatientIn, care: CareDep, who: PrincipalDep) -> PatientOut:
    """Set a patient's care team (who receives the patient's clinical alerts) and time zone."""
    rec = care.put_patient(who, subject, team_id=body.team_id, time_zone=body.time_zone, now=_now())
    return PatientOut.model_validate(rec)


@router.get("/patients", responses=_ERRORS)
def list_patients(care: CareDep, who: PrincipalDep) -> list[PatientOut]:
    """The patients of the caller's teams (admins: all)."""
    return [PatientOut.model_validate(p) for p in care.list_patients(who)]


@router.get("/patients/{subject}", responses=_ERRORS)
def get_patient(subject: Subject, care: CareDep, who: PrincipalDep) -> PatientOut:
    return PatientOut.model_validate(care.get_patient(who, subject))


@router.put("/patients/{subject}/dispenser", responses=_ERRORS)
def put_dispenser_client(
    subject: Subject, body: DispenserClientIn, care: CareDep, who: PrincipalDep
) -> DispenserClientOut:
    """Make the patient a dispenser client of a home-care team, with the missed-dose window and
    local dose times."""
    rec = care.put_dispenser_client(
        who,
        subject,
        home_care_team_id=body.home_care_team_id,
        missed_dose_window_min=body.missed_dose_window_min,
        dose_times=body.dose_times,
        now=_now(),
    )
    return DispenserClientOut.model_validate(rec)


@router.get("/patients/{subject}/dispenser", responses=_ERRORS)
def get_dispenser_client(subject: Subject, care: CareDep, who: PrincipalDep) -> DispenserClientOut:
    return DispenserClientOut.model_validate(care.get_dispenser_client(who, subject))


@router.get("/audit", responses=_ERRORS)
def list_audit(
    care: CareDep,
    who: PrincipalDep,
    object_kind: Annotated[str | None, Query(min_length=1, max_length=20)] = None,
    object_id: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[AuditOut]:
    """Directory and threshold changes, newest first (admins)."""
    rows = care.list_audit(
        who, object_kind=object_kind, object_id=object_id, limit=limit, offset=offset
    )
    return [AuditOut.model_validate(r) for r in rows]
