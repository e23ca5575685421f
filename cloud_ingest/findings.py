"""Event and silence alerts ("findings") between the pure rules and the alerts table.

Threshold alerts keep their reading-shaped columns (value, comparator, threshold). A finding has
no measured value and no threshold: its first and latest evidence (a dispenser event, a silence
episode, a site status) go in the ``evidence`` JSON column with the rule's criterion and what
cleared it, and the value columns stay empty. Nothing is invented to fill them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from cloud_ingest.rules.dispenser import FindingAction, FindingEvidence, OpenFinding
from cloud_ingest.storage import AlertEventIn, AlertRecord, StorageError

#: ``alerts.kind`` of the rules in this module: raised by device events (dispensers), by data
#: that did not arrive (silence), or by readings judged by a finding rule (device health, PEF
#: zones against the personal best)
EVENT_KIND: Final = "event"
SILENCE_KIND: Final = "silence"
READING_KIND: Final = "reading"


def _evidence_json(e: FindingEvidence) -> dict[str, Any]:
    return {
        "event_id": e.event_id,
        "kind": e.kind,
        "time": e.time.isoformat(),
        "summary": e.summary,
        "dose_id": e.dose_id,
        "scheduled_time": e.scheduled_time.isoformat() if e.scheduled_time else None,
    }


def _evidence(alert_id: int, d: Mapping[str, Any]) -> FindingEvidence:
    try:
        sched = d.get("scheduled_time")
        return FindingEvidence(
            event_id=str(d["event_id"]),
            kind=str(d["kind"]),
            time=datetime.fromisoformat(str(d["time"])),
            summary=str(d["summary"]),
            dose_id=None if d.get("dose_id") is None else str(d["dose_id"]),
            scheduled_time=datetime.fromisoformat(str(sched)) if sched else None,
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise StorageError(f"alert {alert_id}: unreadable evidence ({exc!r})") from exc


def open_finding(a: AlertRecord) -> OpenFinding:
    """The rules' view of a stored event or silence alert."""
    ev = a.evidence
    if ev is None:
        raise StorageError(f"alert {a.id} ({a.kind}) has no evidence: not an event alert")
    return OpenFinding(
        alert_id=a.id,
        subject_ref=a.subject_ref,
        condition=a.condition,
        first=_evidence(a.id, ev["first"]),
        last=_evidence(a.id, ev["last"]),
        trigger_count=a.trigger_count,
        simulated=a.simulated,
        cleared_at=a.cleared_at,
        cleared_by=ev.get("cleared_by"),
    )


def finding_columns(
    action: FindingAction,
    now: datetime,
    *,
    kind: str,
    team_id: str | None,
    audience: str | None = None,
) -> dict[str, Any]:
    """Columns of the alert row for ``action`` (a new row when its state has no id);
    ``audience`` replaces the rule's when the routing decided another (a site's alerts)."""
    s = action.state
    cols: dict[str, Any] = {
        "explanation": s.explanation,
        "last_time": s.last.time,
        "trigger_count": s.trigger_count,
        "simulated": s.simulated,
        "cleared_at": s.cleared_at,
        "evidence": {
            "first": _evidence_json(s.first),
            "last": _evidence_json(s.last),
            "criterion": s.criterion,
            "cleared_by": s.cleared_by,
        },
        "updated_at": now,
    }
    if s.alert_id is not None:
        return cols | {"id": s.alert_id}
    return cols | {
        "subject_ref": s.subject_ref,
        "condition": s.condition,
        "priority": s.priority.value,
        "state": "open",
        "rule": f"{kind}:{s.condition}"[:64],
        "threshold_source": s.source,
        "first_time": s.first.time,
        "first_comparator": None,
        "last_comparator": None,
        "raised_at": now,
        "kind": kind,
        "audience": audience or s.audience,
        "team_id": team_id,
        "escalation_level": 0,
    }


def finding_events(
    action: FindingAction, *, alert_id: int | None, index: int | None, actor: str
) -> list[AlertEventIn]:
    return [
        AlertEventIn(
            alert_id=alert_id, alert_index=index, at=e.at, action=e.action, actor=actor, note=e.note
        )
        for e in action.events
    ]
