"""The care directory: care teams, staff and their teams, patients, dispenser clients, audit log.

Routing reads it on the hot path (:meth:`cloud_ingest.storage.WriteTx.routing`); everything here
is the slow administrative side, one transaction per call. Every change writes an audit row in
the same transaction, so a change without its audit row cannot exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from cloud_ingest.storage import schema as t
from cloud_ingest.storage.records import (
    AuditIn,
    AuditRecord,
    DispenserClientRecord,
    PatientRecord,
    StaffRecord,
    TeamRecord,
)
from cloud_ingest.storage.store import Storage


def _staff(row: Any, team_ids: Sequence[str]) -> StaffRecord:
    return StaffRecord(
        id=row.id,
        name=row.name,
        role=row.role,
        active=bool(row.active),
        created_at=row.created_at,
        team_ids=tuple(sorted(team_ids)),
        has_token=row.token_sha256 is not None,
    )


def _client(row: Any) -> DispenserClientRecord:
    return DispenserClientRecord(
        subject_ref=row.subject_ref,
        home_care_team_id=row.home_care_team_id,
        missed_dose_window_min=row.missed_dose_window_min,
        dose_times=tuple(row.dose_times),
        updated_at=row.updated_at,
    )


class Directory:
    """Reads and writes of the care directory over a :class:`Storage`."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    # -- teams ---------------------------------------------------------------------------------

    def put_team(self, team_id: str, name: str, *, audit: AuditIn) -> TeamRecord:
        with self.storage.write() as tx:
            ins = tx._insert(t.care_teams)
            tx.conn.execute(
                ins.on_conflict_do_update(index_elements=["id"], set_={"name": ins.excluded.name}),
                {"id": team_id, "name": name, "created_at": audit.at},
            )
            tx.insert_audit([audit])
            row = tx.conn.execute(sa.select(t.care_teams).where(t.care_teams.c.id == team_id))
            r = row.one()
            return TeamRecord(id=r.id, name=r.name, created_at=r.created_at)

    def list_teams(self) -> list[TeamRecord]:
        with self.storage._read() as conn:
            rows = conn.execute(sa.select(t.care_teams).order_by(t.care_teams.c.id))
            return [TeamRecord(id=r.id, name=r.name, created_at=r.created_at) for r in rows]

    def missing_teams(self, team_ids: Sequence[str]) -> list[str]:
        """The ids among ``team_ids`` that no team has."""
        if not team_ids:
            return []
        with self.storage._read() as conn:
            found = {
                r[0]
                for r in conn.execute(
                    sa.select(t.care_teams.c.id).where(t.care_teams.c.id.in_(set(team_ids)))
                )
            }
        return sorted(set(team_ids) - found)

    # -- staff ---------------------------------------------------------------------------------

    def put_staff(
        self,
        staff_id: str,
        *,
        name: str,
        role: str,
        active: bool,
        team_ids: Sequence[str],
        token_sha256: str | None,
        audit: AuditIn,
    ) -> StaffRecord:
        """Create or replace a staff member and their team memberships.

        ``token_sha256`` None keeps the member's current token (or none for a new member).
        Deactivating a member or giving them a new token deletes the web sessions opened with
        the old token: re-activating them later does not bring those sessions back.
        """
        s = t.staff
        with self.storage.write() as tx:
            old = tx.conn.execute(
                sa.select(s.c.token_sha256).where(s.c.id == staff_id)
            ).scalar_one_or_none()
            if old is not None and (not active or token_sha256 is not None):
                ws = t.web_sessions
                tx.conn.execute(sa.delete(ws).where(ws.c.token_sha256 == old))
            ins = tx._insert(s)
            update = {"name": ins.excluded.name, "role": ins.excluded.role}
            update["active"] = ins.excluded.active
            if token_sha256 is not None:
                update["token_sha256"] = ins.excluded.token_sha256
            tx.conn.execute(
                ins.on_conflict_do_update(index_elements=["id"], set_=update),
                {
                    "id": staff_id,
                    "name": name,
                    "role": role,
                    "active": active,
                    "token_sha256": token_sha256,
                    "created_at": audit.at,
                },
            )
            tx.conn.execute(sa.delete(t.staff_teams).where(t.staff_teams.c.staff_id == staff_id))
            if team_ids:
                tx.conn.execute(
                    sa.insert(t.staff_teams),
                    [{"staff_id": staff_id, "team_id": tid} for tid in sorted(set(team_ids))],
                )
            tx.insert_audit([audit])
            return self._get_staff(tx.conn, staff_id)  # type: ignore[return-value]

    def _get_staff(self, conn: sa.Connection, staff_id: str) -> StaffRecord | None:
        row = conn.execute(sa.select(t.staff).where(t.staff.c.id == staff_id)).first()
        if row is None:
            return None
        teams = conn.execute(
            sa.select(t.staff_teams.c.team_id).where(t.staff_teams.c.staff_id == staff_id)
        )
        return _staff(row, [r[0] for r in teams])

    def get_staff(self, staff_id: str) -> StaffRecord | None:
        with self.storage._read() as conn:
            return self._get_staff(conn, staff_id)

    def staff_by_token(self, token_sha256: str) -> StaffRecord | None:
        """The active staff member whose token has this SHA-256, if any."""
        with self.storage._read() as conn:
            row = conn.execute(
                sa.select(t.staff.c.id).where(
                    t.staff.c.token_sha256 == token_sha256, t.staff.c.active.is_(True)
                )
            ).first()
            return None if row is None else self._get_staff(conn, row[0])

    def list_staff(self, *, team_id: str | None = None) -> list[StaffRecord]:
        with self.storage._read() as conn:
            stmt = sa.select(t.staff).order_by(t.staff.c.id)
            if team_id is not None:
                stmt = stmt.where(
                    t.staff.c.id.in_(
                        sa.select(t.staff_teams.c.staff_id).where(
                            t.staff_teams.c.team_id == team_id
                        )
                    )
                )
            rows = list(conn.execute(stmt))
            memberships: dict[str, list[str]] = {}
            for m in conn.execute(sa.select(t.staff_teams)):
                memberships.setdefault(m.staff_id, []).append(m.team_id)
            return [_staff(r, memberships.get(r.id, [])) for r in rows]

    # -- patients and dispenser clients --------------------------------------------------------

    def put_patient(
        self, subject_ref: str, *, team_id: str, time_zone: str, audit: AuditIn
    ) -> PatientRecord:
        with self.storage.write() as tx:
            ins = tx._insert(t.patients)
            tx.conn.execute(
                ins.on_conflict_do_update(
                    index_elements=["subject_ref"],
                    set_={c: ins.excluded[c] for c in ("team_id", "time_zone", "updated_at")},
                ),
                {
                    "subject_ref": subject_ref,
                    "team_id": team_id,
                    "time_zone": time_zone,
                    "updated_at": audit.at,
                },
            )
            tx.insert_audit([audit])
        return PatientRecord(
            subject_ref=subject_ref, team_id=team_id, time_zone=time_zone, updated_at=audit.at
        )

    def get_patient(self, subject_ref: str) -> PatientRecord | None:
        with self.storage._read() as conn:
            r = conn.execute(
                sa.select(t.patients).where(t.patients.c.subject_ref == subject_ref)
            ).first()
            return None if r is None else PatientRecord(**r._asdict())

    def list_patients(self, *, team_ids: frozenset[str] | None = None) -> list[PatientRecord]:
        stmt = sa.select(t.patients).order_by(t.patients.c.subject_ref)
        if team_ids is not None:
            stmt = stmt.where(t.patients.c.team_id.in_(sorted(team_ids)))
        with self.storage._read() as conn:
            return [PatientRecord(**r._asdict()) for r in conn.execute(stmt)]

    def put_dispenser_client(
        self,
        subject_ref: str,
        *,
        home_care_team_id: str,
        missed_dose_window_min: int,
        dose_times: Sequence[str],
        audit: AuditIn,
    ) -> DispenserClientRecord:
        with self.storage.write() as tx:
            ins = tx._insert(t.dispenser_clients)
            cols = ("home_care_team_id", "missed_dose_window_min", "dose_times", "updated_at")
            tx.conn.execute(
                ins.on_conflict_do_update(
                    index_elements=["subject_ref"], set_={c: ins.excluded[c] for c in cols}
                ),
                {
                    "subject_ref": subject_ref,
                    "home_care_team_id": home_care_team_id,
                    "missed_dose_window_min": missed_dose_window_min,
                    "dose_times": list(dose_times),
                    "updated_at": audit.at,
                },
            )
            tx.insert_audit([audit])
        return DispenserClientRecord(
            subject_ref=subject_ref,
            home_care_team_id=home_care_team_id,
            missed_dose_window_min=missed_dose_window_min,
            dose_times=tuple(dose_times),
            updated_at=audit.at,
        )

    def get_dispenser_client(self, subject_ref: str) -> DispenserClientRecord | None:
        dc = t.dispenser_clients
        with self.storage._read() as conn:
            r = conn.execute(sa.select(dc).where(dc.c.subject_ref == subject_ref)).first()
            return None if r is None else _client(r)

    def list_dispenser_clients(
        self, *, team_ids: frozenset[str] | None = None
    ) -> list[DispenserClientRecord]:
        """Dispenser clients, of these home-care teams only unless None."""
        dc = t.dispenser_clients
        stmt = sa.select(dc).order_by(dc.c.subject_ref)
        if team_ids is not None:
            stmt = stmt.where(dc.c.home_care_team_id.in_(sorted(team_ids)))
        with self.storage._read() as conn:
            return [_client(r) for r in conn.execute(stmt)]

    # -- web sessions --------------------------------------------------------------------------

    def open_web_session(
        self, sid_sha256: str, token_sha256: str, *, now: datetime, expires_at: datetime
    ) -> None:
        """Store a new session (and drop the expired ones: sign-ins are rare, so this is cheap)."""
        ws = t.web_sessions
        with self.storage.write() as tx:
            tx.conn.execute(sa.delete(ws).where(ws.c.expires_at <= now))
            tx.conn.execute(
                sa.insert(ws).values(
                    sid_sha256=sid_sha256,
                    token_sha256=token_sha256,
                    created_at=now,
                    expires_at=expires_at,
                )
            )

    def web_session_token(self, sid_sha256: str, *, now: datetime) -> str | None:
        """The token hash an unexpired session was opened with, if the session exists."""
        ws = t.web_sessions
        with self.storage._read() as conn:
            row = conn.execute(
                sa.select(ws.c.token_sha256).where(
                    ws.c.sid_sha256 == sid_sha256, ws.c.expires_at > now
                )
            ).first()
        return None if row is None else str(row[0])

    def close_web_session(self, sid_sha256: str) -> bool:
        ws = t.web_sessions
        with self.storage.write() as tx:
            gone = tx.conn.execute(sa.delete(ws).where(ws.c.sid_sha256 == sid_sha256))
        return bool(gone.rowcount)

    # -- audit ---------------------------------------------------------------------------------

    def write_audit(self, rows: Sequence[AuditIn]) -> None:
        with self.storage.write() as tx:
            tx.insert_audit(rows)

    def list_audit(
        self,
        *,
        object_kind: str | None = None,
        object_id: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[AuditRecord]:
        a = t.audit_log
        stmt = sa.select(a)
        if object_kind is not None:
            stmt = stmt.where(a.c.object_kind == object_kind)
        if object_id is not None:
            stmt = stmt.where(a.c.object_id == object_id)
        if since is not None:
            stmt = stmt.where(a.c.at >= since)
        stmt = stmt.order_by(a.c.id.desc()).limit(limit).offset(offset)
        with self.storage._read() as conn:
            return [AuditRecord(**r._asdict()) for r in conn.execute(stmt)]


__all__ = ["Directory"]
