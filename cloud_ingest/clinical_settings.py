"""Per-team and per-patient clinical settings: a care team's threshold values, a patient's PEF
personal best and PEF diary period. Validated, audited, one transaction per change.

Which threshold value applies to a patient: the patient's own value (``PUT /patients/{ref}/
thresholds/{condition}``), else the value of the patient's care team, else the built-in default
(:mod:`cloud_ingest.rules.thresholds`, each with its DOMAIN.md source). Team and patient values
stay within the same safety bounds (``OVERRIDE_RANGES``): no value can switch a condition off.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Final

from cloud_ingest.care import ForbiddenError, Principal, Role, audit_entry
from cloud_ingest.rules.pef_zones import PERSONAL_BEST_PARAMETER
from cloud_ingest.rules.thresholds import (
    DEFAULTS_BY_CONDITION,
    Threshold,
    UnknownConditionError,
    check_override,
)
from cloud_ingest.storage import (
    Directory,
    ParameterRecord,
    PefDiaryRecord,
    Storage,
    TeamThresholdRecord,
)
from device_profiles.clinical import PEF_METER_MAX_L_MIN, PEF_METER_MIN_L_MIN

#: DOMAIN.md §1: the PEF personal best is entered by the clinician; meters read 50-900 L/min,
#: so a personal best outside that range cannot have been measured.
PEF_PERSONAL_BEST: Final = PERSONAL_BEST_PARAMETER
#: DOMAIN.md §1: a diary runs 2 weeks (diagnosis) or 1 week (follow-up); remon accepts up to 4
#: weeks so a repeated or extended diary fits, and refuses longer periods as likely typos.
PEF_DIARY_MAX_DAYS: Final = 28


class SettingsError(ValueError):
    """A clinical setting that cannot be stored; the message says what and why."""


class ClinicalSettings:
    def __init__(self, storage: Storage, thresholds: dict[str, Threshold] | None = None) -> None:
        self.storage = storage
        self.directory = Directory(storage)
        self.thresholds = dict(thresholds or DEFAULTS_BY_CONDITION)

    def _default(self, condition: str) -> Threshold:
        t = self.thresholds.get(condition)
        if t is None:
            raise UnknownConditionError(
                f"unknown condition {condition!r}; known: {sorted(self.thresholds)}"
            )
        return t

    @staticmethod
    def _may_set_for_team(who: Principal, team_id: str) -> None:
        if who.is_admin:
            return
        if who.role is not Role.CLINICIAN or team_id not in who.team_ids:
            raise ForbiddenError(
                f"a team's thresholds are set by its clinicians or an admin; {who.id} is "
                f"{who.role.value} of {sorted(who.team_ids)}"
            )

    # -- team thresholds -----------------------------------------------------------------------

    def put_team_threshold(
        self,
        who: Principal,
        team_id: str,
        condition: str,
        *,
        value: float,
        unit: str,
        now: datetime,
    ) -> TeamThresholdRecord:
        self._may_set_for_team(who, team_id)
        if self.directory.missing_teams([team_id]):
            raise SettingsError(f"unknown care team {team_id!r}")
        check_override(condition, value, unit, self.thresholds)  # same bounds as a patient's
        rec = TeamThresholdRecord(
            team_id=team_id,
            condition=condition,
            value=float(value),
            unit=unit,
            set_by=who.actor,
            set_at=now,
        )
        audit = audit_entry(
            who, now, "team_threshold.put", "team", team_id, condition=condition, value=value
        )
        self.storage.put_team_threshold(rec, audit=audit)
        return rec

    def delete_team_threshold(
        self, who: Principal, team_id: str, condition: str, *, now: datetime
    ) -> bool:
        self._may_set_for_team(who, team_id)
        self._default(condition)
        audit = audit_entry(who, now, "team_threshold.delete", "team", team_id, condition=condition)
        return self.storage.delete_team_threshold(team_id, condition, audit=audit)

    def list_team_thresholds(self, who: Principal, team_id: str) -> list[TeamThresholdRecord]:
        if not who.is_admin and team_id not in who.team_ids:
            raise ForbiddenError(f"{who.id} is not in care team {team_id}")
        return self.storage.list_team_thresholds(team_id)

    # -- PEF personal best and diary -----------------------------------------------------------

    def require_patient_clinician(self, who: Principal, subject_ref: str, what: str) -> None:
        """Patient-level clinical settings (thresholds, PEF): admins, or a clinician of the
        patient's care team."""
        if who.is_admin:
            return
        entry = self.directory.get_patient(subject_ref)
        if who.role is not Role.CLINICIAN or entry is None or entry.team_id not in who.team_ids:
            raise ForbiddenError(f"{what} is set by a clinician of the patient's care team")

    def put_pef_personal_best(
        self, who: Principal, subject_ref: str, *, value: float, now: datetime
    ) -> ParameterRecord:
        self.require_patient_clinician(who, subject_ref, "a PEF personal best")
        lo, hi = PEF_METER_MIN_L_MIN, PEF_METER_MAX_L_MIN
        if not lo.value <= value <= hi.value:
            raise SettingsError(
                f"a PEF personal best must lie within {lo.value:g}-{hi.value:g} L/min "
                f"({lo.source}), not {value:g}"
            )
        rec = ParameterRecord(
            subject_ref=subject_ref,
            name=PEF_PERSONAL_BEST,
            value=float(value),
            unit="L/min",
            set_by=who.actor,
            set_at=now,
        )
        audit = audit_entry(who, now, "pef_personal_best.put", "patient", subject_ref, value=value)
        self.storage.put_parameter(rec, audit=audit)
        return rec

    def put_pef_diary(
        self, who: Principal, subject_ref: str, *, first_day: date, last_day: date, now: datetime
    ) -> PefDiaryRecord:
        self.require_patient_clinician(who, subject_ref, "a PEF diary")
        if self.directory.get_patient(subject_ref) is None:
            raise SettingsError(
                f"no patient {subject_ref!r}: the diary's days are in the patient's time zone, "
                "so add the patient first"
            )
        if last_day < first_day:
            raise SettingsError(f"last_day {last_day} is before first_day {first_day}")
        if last_day - first_day >= timedelta(days=PEF_DIARY_MAX_DAYS):
            raise SettingsError(
                f"a PEF diary of more than {PEF_DIARY_MAX_DAYS} days (DOMAIN.md §1: 1-2 weeks)"
            )
        rec = PefDiaryRecord(
            subject_ref=subject_ref,
            first_day=first_day,
            last_day=last_day,
            set_by=who.actor,
            set_at=now,
        )
        audit = audit_entry(
            who,
            now,
            "pef_diary.put",
            "patient",
            subject_ref,
            first_day=first_day.isoformat(),
            last_day=last_day.isoformat(),
        )
        self.storage.put_pef_diary(rec, audit=audit)
        return rec
