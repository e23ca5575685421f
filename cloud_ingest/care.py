"""The care directory as the API sees it: who is asking (:class:`Principal`), what they may see,
and the validated, audited administration of teams, staff, patients and dispenser clients.

Routing (DOMAIN.md §5; issue 6): clinical alerts go to the patient's care team and are seen by
its clinicians; dispenser alerts go to the client's home-care team and are seen by its home-care
staff. Admins see every alert, including those of subjects the directory does not know yet (so
an unrouted alert is never invisible). A principal asking for an alert it may not see gets the
same answer as for an alert that does not exist.

Tokens: a staff member's API token is random (``secrets.token_urlsafe``), shown once when it is
issued and stored only as its SHA-256. The tokens in the settings (``REMON_INGEST_API_TOKENS``)
are service accounts with the admin role.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cloud_ingest.storage import (
    AlertRecord,
    AuditIn,
    AuditRecord,
    Directory,
    DispenserClientRecord,
    PatientRecord,
    StaffRecord,
    Storage,
    TeamRecord,
)

#: Ids of teams and staff: short, URL-safe, stable.
_ID_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_DOSE_TIME_RE: Final = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
#: DOMAIN.md §4: devices allow a missed-dose window of 5 min to 5 h.
MISSED_DOSE_WINDOW_MIN: Final = (5, 300)
MAX_DOSE_TIMES: Final = 12


class Role(StrEnum):
    CLINICIAN = "clinician"
    HOME_CARE = "home_care"
    ADMIN = "admin"


class Audience(StrEnum):
    """Who an alert is for."""

    CLINICIAN = "clinician"
    HOME_CARE = "home_care"


class DirectoryError(ValueError):
    """A directory change that cannot be made; the message says what and why."""


class UnknownEntryError(LookupError):
    """No team, staff member or patient has this id."""


class ForbiddenError(PermissionError):
    """The principal's role does not allow this action."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """Who is asking: a staff member, or a service account from the settings (admin)."""

    id: str
    name: str
    role: Role
    team_ids: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def actor(self) -> str:
        """The name recorded in audit trails."""
        return self.id

    def scope(self) -> tuple[frozenset[str] | None, frozenset[str] | None]:
        """(teams, audiences) whose alerts this principal sees; None = no restriction."""
        if self.is_admin:
            return None, None
        return self.team_ids, frozenset({self.role.value})

    def can_see(self, alert: AlertRecord) -> bool:
        if self.is_admin:
            return True
        return alert.team_id in self.team_ids and alert.audience == self.role.value

    def require_admin(self, what: str) -> None:
        if not self.is_admin:
            raise ForbiddenError(f"{what} needs the admin role; {self.id} is {self.role.value}")


def audit_entry(
    who: Principal, now: datetime, action: str, kind: str, obj: str, **detail: object
) -> AuditIn:
    """One audit-log row: who did what to which object, with the details of the change."""
    return AuditIn(
        at=now, actor=who.actor, action=action, object_kind=kind, object_id=obj, detail=detail
    )


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def _check_id(kind: str, value: str) -> None:
    if not _ID_RE.match(value):
        raise DirectoryError(
            f"{kind} id {value!r} must be 1-64 characters of letters, digits, '.', '_' or '-'"
            " and start with a letter or digit"
        )


def check_time_zone(name: str) -> None:
    # "Europe" is a directory of zones, not a zone: zoneinfo refuses it with OSError.
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise DirectoryError(
            f"unknown time zone {name!r} (an IANA name, e.g. Europe/Helsinki)"
        ) from None


@dataclass(frozen=True, slots=True, kw_only=True)
class IssuedStaff:
    staff: StaffRecord
    token: str | None  # shown once, when issued


class CareDirectory:
    """Validated, audited changes to the directory. Every change needs an admin principal."""

    def __init__(self, storage: Storage) -> None:
        self.directory = Directory(storage)

    def _require_teams(self, team_ids: Sequence[str]) -> None:
        missing = self.directory.missing_teams(team_ids)
        if missing:
            raise DirectoryError(f"unknown care team(s): {', '.join(missing)}")

    # -- teams ---------------------------------------------------------------------------------

    def put_team(self, who: Principal, team_id: str, name: str, *, now: datetime) -> TeamRecord:
        who.require_admin("changing a care team")
        _check_id("team", team_id)
        if not name.strip():
            raise DirectoryError("a care team needs a name")
        audit = audit_entry(who, now, "team.put", "team", team_id, name=name)
        return self.directory.put_team(team_id, name.strip(), audit=audit)

    def list_teams(self, who: Principal) -> list[TeamRecord]:
        teams = self.directory.list_teams()
        return teams if who.is_admin else [t for t in teams if t.id in who.team_ids]

    # -- staff ---------------------------------------------------------------------------------

    def put_staff(
        self,
        who: Principal,
        staff_id: str,
        *,
        name: str,
        role: Role,
        team_ids: Sequence[str],
        active: bool = True,
        issue_token: bool = False,
        now: datetime,
    ) -> IssuedStaff:
        """Create or replace a staff member; ``issue_token`` makes a new token (shown once)."""
        who.require_admin("changing staff")
        _check_id("staff", staff_id)
        if not name.strip():
            raise DirectoryError("a staff member needs a name")
        if role is not Role.ADMIN and not team_ids:
            raise DirectoryError(f"a {role.value} must belong to at least one care team")
        self._require_teams(team_ids)
        existing = self.directory.get_staff(staff_id)
        token = new_token() if issue_token or existing is None else None
        audit = audit_entry(
            who,
            now,
            "staff.put",
            "staff",
            staff_id,
            role=role.value,
            teams=sorted(set(team_ids)),
            active=active,
            token_issued=token is not None,
        )
        rec = self.directory.put_staff(
            staff_id,
            name=name.strip(),
            role=role.value,
            active=active,
            team_ids=team_ids,
            token_sha256=token_sha256(token) if token is not None else None,
            audit=audit,
        )
        return IssuedStaff(staff=rec, token=token)

    def list_staff(self, who: Principal, *, team_id: str | None = None) -> list[StaffRecord]:
        who.require_admin("listing staff")
        return self.directory.list_staff(team_id=team_id)

    def resolve_token(self, token: str, service_tokens: Mapping[str, str]) -> Principal | None:
        """Who a bearer token belongs to: a service account from the settings (admin role;
        compared in constant time) or an active staff member; None for an unknown token. The API
        (``Authorization: Bearer``) and the web UI (its session cookie) both ask here."""
        raw = token.encode()
        service_account: str | None = None
        for known, name in service_tokens.items():
            if hmac.compare_digest(known.encode(), raw):
                service_account = name
        if service_account is not None:
            return Principal(
                id=service_account, name=service_account, role=Role.ADMIN, team_ids=frozenset()
            )
        return self.principal_for_token(token)

    def principal_for_token(self, token: str) -> Principal | None:
        return self._principal_for_hash(token_sha256(token), {})

    def _principal_for_hash(
        self, token_hash: str, service_tokens: Mapping[str, str]
    ) -> Principal | None:
        """Who holds the token with this SHA-256 (a service account or active staff), now."""
        account: str | None = None
        for known, name in service_tokens.items():
            if hmac.compare_digest(token_sha256(known).encode(), token_hash.encode()):
                account = name
        if account is not None:
            return Principal(id=account, name=account, role=Role.ADMIN, team_ids=frozenset())
        rec = self.directory.staff_by_token(token_hash)
        if rec is None:
            return None
        return Principal(
            id=rec.id, name=rec.name, role=Role(rec.role), team_ids=frozenset(rec.team_ids)
        )

    # -- web sessions --------------------------------------------------------------------------

    def open_session(
        self, token: str, service_tokens: Mapping[str, str], *, now: datetime, ttl: timedelta
    ) -> tuple[str, Principal] | None:
        """Sign in to the web UI with a bearer token: a new random session id (the cookie's
        value; only its hash is kept) and who it is, or None for an unknown token. Audited."""
        who = self.resolve_token(token, service_tokens)
        if who is None:
            return None
        sid = new_token()
        self.directory.open_web_session(
            token_sha256(sid), token_sha256(token), now=now, expires_at=now + ttl
        )
        self.directory.write_audit([audit_entry(who, now, "session.open", "staff", who.id)])
        return sid, who

    def session_principal(
        self, sid: str, service_tokens: Mapping[str, str], *, now: datetime
    ) -> Principal | None:
        """Who an unexpired session belongs to, as the directory says now: a deactivated staff
        member, a re-issued token or a removed service account ends the session."""
        token_hash = self.directory.web_session_token(token_sha256(sid), now=now)
        return None if token_hash is None else self._principal_for_hash(token_hash, service_tokens)

    def close_session(self, sid: str, who: Principal | None, *, now: datetime) -> None:
        if self.directory.close_web_session(token_sha256(sid)) and who is not None:
            self.directory.write_audit([audit_entry(who, now, "session.close", "staff", who.id)])

    # -- patients and dispenser clients --------------------------------------------------------

    def put_patient(
        self, who: Principal, subject_ref: str, *, team_id: str, time_zone: str, now: datetime
    ) -> PatientRecord:
        who.require_admin("changing a patient's care team")
        if not subject_ref or len(subject_ref) > 128:
            raise DirectoryError("a subject ref is 1-128 characters")
        check_time_zone(time_zone)
        self._require_teams([team_id])
        audit = audit_entry(
            who, now, "patient.put", "patient", subject_ref, team=team_id, time_zone=time_zone
        )
        return self.directory.put_patient(
            subject_ref, team_id=team_id, time_zone=time_zone, audit=audit
        )

    def get_patient(self, who: Principal, subject_ref: str) -> PatientRecord:
        rec = self.directory.get_patient(subject_ref)
        if rec is None or not (who.is_admin or rec.team_id in who.team_ids):
            raise UnknownEntryError(f"no patient {subject_ref!r}")
        return rec

    def list_patients(self, who: Principal) -> list[PatientRecord]:
        return self.directory.list_patients(team_ids=None if who.is_admin else who.team_ids)

    def put_dispenser_client(
        self,
        who: Principal,
        subject_ref: str,
        *,
        home_care_team_id: str,
        missed_dose_window_min: int,
        dose_times: Sequence[str],
        now: datetime,
    ) -> DispenserClientRecord:
        who.require_admin("changing a dispenser client")
        if self.directory.get_patient(subject_ref) is None:
            raise DirectoryError(
                f"no patient {subject_ref!r}: add the patient (PUT /patients/{{ref}}) first"
            )
        self._require_teams([home_care_team_id])
        lo, hi = MISSED_DOSE_WINDOW_MIN
        if not lo <= missed_dose_window_min <= hi:
            raise DirectoryError(
                f"missed_dose_window_min must be {lo}-{hi} (DOMAIN.md §4), "
                f"not {missed_dose_window_min}"
            )
        if len(dose_times) > MAX_DOSE_TIMES:
            raise DirectoryError(f"at most {MAX_DOSE_TIMES} dose times a day")
        bad = [d for d in dose_times if not _DOSE_TIME_RE.match(d)]
        if bad:
            raise DirectoryError(f"dose times are local HH:MM (00:00-23:59): not {bad}")
        times = sorted(set(dose_times))
        audit = audit_entry(
            who,
            now,
            "dispenser_client.put",
            "patient",
            subject_ref,
            home_care_team=home_care_team_id,
            missed_dose_window_min=missed_dose_window_min,
            dose_times=times,
        )
        return self.directory.put_dispenser_client(
            subject_ref,
            home_care_team_id=home_care_team_id,
            missed_dose_window_min=missed_dose_window_min,
            dose_times=times,
            audit=audit,
        )

    def get_dispenser_client(self, who: Principal, subject_ref: str) -> DispenserClientRecord:
        rec = self.directory.get_dispenser_client(subject_ref)
        if rec is None or not (who.is_admin or rec.home_care_team_id in who.team_ids):
            raise UnknownEntryError(f"no dispenser client {subject_ref!r}")
        return rec

    def list_dispenser_clients(self, who: Principal) -> list[DispenserClientRecord]:
        """The dispenser clients of ``who``'s home-care teams (all of them for admins)."""
        return self.directory.list_dispenser_clients(
            team_ids=None if who.is_admin else who.team_ids
        )

    def can_see_subject(self, who: Principal, subject_ref: str) -> bool:
        """Whether ``who`` may read this subject's readings, events and thresholds: a patient
        of one of their teams, or a dispenser client of one of their home-care teams."""
        if who.is_admin:
            return True
        patient = self.directory.get_patient(subject_ref)
        if patient is not None and patient.team_id in who.team_ids:
            return True
        client = self.directory.get_dispenser_client(subject_ref)
        return client is not None and client.home_care_team_id in who.team_ids

    def require_subject(self, who: Principal, subject_ref: str | None) -> None:
        """Raise unless ``who`` may read ``subject_ref`` (None: all subjects, admins only)."""
        if subject_ref is None:
            if not who.is_admin:
                raise ForbiddenError("staff must name a subject (?subject=...) of their teams")
            return
        if not self.can_see_subject(who, subject_ref):
            raise UnknownEntryError(f"no patient {subject_ref!r} in your care teams")

    # -- audit ---------------------------------------------------------------------------------

    def record(
        self, who: Principal, action: str, kind: str, obj: str, *, now: datetime, **detail: object
    ) -> None:
        """Record an action made elsewhere (e.g. a threshold override) in the audit log."""
        self.directory.write_audit([audit_entry(who, now, action, kind, obj, **detail)])

    def list_audit(
        self,
        who: Principal,
        *,
        object_kind: str | None = None,
        object_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[AuditRecord]:
        who.require_admin("reading the audit log")
        return self.directory.list_audit(
            object_kind=object_kind, object_id=object_id, limit=limit, offset=offset
        )
