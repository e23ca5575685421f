"""Silence rules: alerts raised by data that did not arrive. Pure.

Three families, each a pure function of a snapshot, the active alerts and ``now`` (passed in,
never read from a clock), returning the same :class:`~cloud_ingest.rules.dispenser.FindingAction`
as the dispenser rules:

- **CGM stale data** (:func:`evaluate_cgm_silence`, DOMAIN.md §2: warn after 15 min without
  readings, urgent after 30 min, Nightscout defaults). Two conditions of one family, each its
  own alert, like the threshold families in ``thresholds.py``: a check triggers only the most
  severe one met, so the urgent alert is raised as soon as it applies and never hides inside an
  older warning (which is left as it is while the urgent level holds). A subject not expected
  to stream (no CGM, session ended) is never stale, and its silence alerts are cleared.
  The evidence is the *silence episode*, named by the instant silence began (the newest
  reading, or when the stream became expected), so checking again every minute recognises the
  same episode and counts nothing twice. A reading newer than the episode start clears.
- **PEF diary session missed** (:func:`evaluate_pef_schedule`, DOMAIN.md §1: a morning and an
  evening session a day over about two weeks). Each local session window of each diary day is
  turned into UTC instants with :mod:`zoneinfo` (so DST days have their true length). A window
  that has ended (plus an upload grace) without a reading inside it raises
  ``pef-session-missed``; further missed windows attach to the open alert; a reading inside a
  later window clears it. Windows already judged are not judged again (see the function).
- **Site offline** (:func:`evaluate_site_status`): a hub or kiosk whose last status (the MQTT
  last will) is offline for at least a grace period raises ``site-offline``; online clears it.

Every figure is a keyword-overridable policy value with its unit and source
(:class:`~device_profiles.clinical.Figure`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from typing import Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cloud_ingest.rules.dispenser import (
    Audience,
    FindingAction,
    FindingBook,
    FindingEvidence,
    OpenFinding,
    RuleInputError,
    check_rule_facts,
    require_aware,
    require_text,
    unique_by_id,
    utc_text,
)
from cloud_ingest.rules.thresholds import Priority, RuleError
from device_profiles.clinical import CGM_STALE_URGENT_MIN, CGM_STALE_WARN_MIN, Figure


@dataclass(frozen=True, slots=True, kw_only=True)
class SilenceRule:
    """One silence condition as data (built from the policy in effect, so its words carry
    the figures actually used)."""

    condition: str
    title: str
    priority: Priority
    audience: Audience
    criterion: str
    source: str
    all_clear: str

    def __post_init__(self) -> None:
        check_rule_facts(self)


def _minutes(name: str, fig: Figure, *, allow_zero: bool = False) -> timedelta:
    """A policy duration in "min": a threshold must be positive, a grace may be zero."""
    if fig.unit != "min":
        raise RuleError(f"{name} must be in min, got {fig.unit!r}")
    if fig.value < 0 or (fig.value == 0 and not allow_zero):
        raise RuleError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {fig.value:g} min")
    return timedelta(minutes=fig.value)


def _whole_minutes(d: timedelta) -> int:
    """Elapsed whole minutes (29:59 is 29, not a rounded 30 that would overstate it)."""
    return int(d.total_seconds() // 60)


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat()


def _utc(dt: datetime) -> datetime:
    return dt.astimezone(UTC)


# --------------------------------------------------------------------------------------------
# CGM stale data

CGM_STALE: Final = "cgm-stale"
CGM_STALE_URGENT: Final = "cgm-stale-urgent"


@dataclass(frozen=True, slots=True, kw_only=True)
class CgmSilencePolicy:
    warn_after: Figure = CGM_STALE_WARN_MIN
    urgent_after: Figure = CGM_STALE_URGENT_MIN

    def __post_init__(self) -> None:
        if _minutes("warn_after", self.warn_after) >= _minutes("urgent_after", self.urgent_after):
            raise RuleError("warn_after must be shorter than urgent_after")


@dataclass(frozen=True, slots=True, kw_only=True)
class CgmStream:
    """One subject's CGM stream as the store sees it.

    ``expected_since`` is when the subject began to be expected to stream (the sensor session
    start); None means not expected (no CGM, or the session ended): never stale.
    """

    subject_ref: str
    expected_since: datetime | None
    newest_reading_time: datetime | None = None
    newest_reading_id: str | None = None
    simulated: bool = False

    def __post_init__(self) -> None:
        require_text("CGM stream subject_ref", self.subject_ref)
        where = f"CGM stream of {self.subject_ref}"
        if self.expected_since is not None:
            require_aware(f"{where}: expected_since", self.expected_since)
        if (self.newest_reading_time is None) != (self.newest_reading_id is None):
            raise RuleInputError(f"{where}: newest_reading_time and _id go together")
        if self.newest_reading_time is not None:
            require_aware(f"{where}: newest_reading_time", self.newest_reading_time)
            require_text(f"{where}: newest_reading_id", self.newest_reading_id)


def cgm_rules(policy: CgmSilencePolicy) -> dict[str, SilenceRule]:
    source = (
        f"DOMAIN.md §2 stale data: warn after {policy.warn_after.value:g} min, urgent after "
        f"{policy.urgent_after.value:g} min (Nightscout defaults; in effect: "
        f"{policy.warn_after.source}; {policy.urgent_after.source})"
    )
    clear = "a CGM reading newer than the start of the silence, or the stream no longer expected"
    return {
        CGM_STALE: SilenceRule(
            condition=CGM_STALE,
            title="No CGM readings received",
            priority=Priority.LOW,
            audience="clinician",
            criterion=f"a subject expected to stream CGM data has had no reading for "
            f"{policy.warn_after.value:g} min or more",
            source=source + "; priority: remon default, low: short gaps (signal loss, phone "
            "out of reach) are common and usually end by themselves (DOMAIN.md §5 alarm "
            "fatigue)",
            all_clear=clear,
        ),
        CGM_STALE_URGENT: SilenceRule(
            condition=CGM_STALE_URGENT,
            title="No CGM readings received for an extended time",
            priority=Priority.MEDIUM,
            audience="clinician",
            criterion=f"a subject expected to stream CGM data has had no reading for "
            f"{policy.urgent_after.value:g} min or more",
            source=source + "; priority: remon default, medium: without data no glucose "
            "alert (e.g. urgent low) can be raised for this subject; prompt response "
            "(IEC 60601-1-8 medium, DOMAIN.md §5)",
            all_clear=clear,
        ),
    }


def _silence_start(s: CgmStream) -> datetime:
    assert s.expected_since is not None
    if s.newest_reading_time is None or s.newest_reading_time < s.expected_since:
        return s.expected_since
    return s.newest_reading_time


def _silence_evidence(s: CgmStream, start: datetime) -> FindingEvidence:
    if s.newest_reading_time is not None and start == s.newest_reading_time:
        since = f"newest reading {s.newest_reading_id} at {utc_text(start)}"
    else:
        since = f"the stream expected since {utc_text(start)} and no reading after it"
    return FindingEvidence(
        event_id=f"cgm-silence:{s.subject_ref}:{_iso(start)}",
        kind="no-cgm-reading",
        time=start,
        summary=f"no CGM reading since {utc_text(start)} ({since})"
        + (" (simulated stream)" if s.simulated else ""),
    )


def evaluate_cgm_silence(
    streams: Iterable[CgmStream],
    *,
    open_alerts: Iterable[OpenFinding],
    now: datetime,
    policy: CgmSilencePolicy | None = None,
) -> list[FindingAction]:
    """Stale-data actions for each subject's CGM stream at ``now``.

    A stream is stale at a level when ``now - start >= threshold`` (exactly 15:00 min is
    stale). Pass every subject with an open silence alert: one not passed keeps its alert as is.
    """
    pol = policy or CgmSilencePolicy()
    warn = _minutes("warn_after", pol.warn_after)
    urgent = _minutes("urgent_after", pol.urgent_after)
    rules = cgm_rules(pol)
    book = FindingBook(open_alerts, rules=rules, now=now)
    seen: set[str] = set()
    for s in sorted(streams, key=lambda s: s.subject_ref):
        if s.subject_ref in seen:
            raise RuleInputError(f"CGM stream of {s.subject_ref} given twice")
        seen.add(s.subject_ref)
        if s.expected_since is None:
            for cond in rules:
                book.clear(
                    s.subject_ref,
                    cond,
                    at=now,
                    by=f"cgm-stream-not-expected:{s.subject_ref}",
                    note=f"the subject is no longer expected to stream CGM data "
                    f"(checked at {utc_text(now)})",
                )
            continue
        start = _utc(_silence_start(s))
        silent = now - start
        level = CGM_STALE_URGENT if silent >= urgent else CGM_STALE if silent >= warn else None
        if level is not None:
            book.trigger(
                s.subject_ref,
                level,
                _silence_evidence(s, start),
                simulated=s.simulated,
                note=f"no CGM reading since {utc_text(start)}: {_whole_minutes(silent)} "
                f"min when checked at {utc_text(now)}",
            )
            continue  # a lower level of the family is also met: left as it is
        if s.newest_reading_time is None or s.newest_reading_id is None:
            continue
        for cond in rules:
            book.clear(
                s.subject_ref,
                cond,
                at=s.newest_reading_time,
                by=s.newest_reading_id,
                note=f"CGM reading {s.newest_reading_id} at {utc_text(s.newest_reading_time)}",
            )
    return book.actions()


# --------------------------------------------------------------------------------------------
# PEF diary sessions

PEF_SESSION_MISSED: Final = "pef-session-missed"


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionWindow:
    """A session window in local wall-clock time, ``[start, end)``: a reading at the end
    instant belongs to no window that ends there. A window does not cross midnight."""

    label: str
    start: time
    end: time

    def __post_init__(self) -> None:
        require_text("session window label", self.label)
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise RuleInputError(f"window {self.label}: local times carry no time zone")
        if not self.start < self.end:
            raise RuleInputError(
                f"window {self.label}: start {self.start} must be before end {self.end} "
                "(a window crossing midnight is two windows)"
            )

    def text(self) -> str:
        return f"{self.label} {self.start:%H:%M}-{self.end:%H:%M}"


def check_windows(windows: Sequence[SessionWindow], where: str) -> None:
    if not windows:
        raise RuleInputError(f"{where}: no session windows")
    labels = [w.label for w in windows]
    if len(set(labels)) != len(labels):
        raise RuleInputError(f"{where}: window labels repeat: {labels}")
    for a, b in pairwise(windows):
        if b.start < a.end:
            raise RuleInputError(
                f"{where}: windows must be in order and not overlap ({a.label}, {b.label})"
            )


#: DOMAIN.md §1: a morning session right after waking and an evening one at about the same time
#: each day. The window bounds are remon defaults wide enough for ordinary waking and evening
#: hours; a clinician sets a patient's own windows in the schedule.
DEFAULT_PEF_WINDOWS: Final[tuple[SessionWindow, ...]] = (
    SessionWindow(label="morning", start=time(6, 0), end=time(11, 0)),
    SessionWindow(label="evening", start=time(18, 0), end=time(23, 0)),
)


#: Readings reach the cloud through the hub's store-and-forward outbox, which holds them while
#: the hub is offline; judging a window this long after its end keeps upload delays from
#: raising alerts. A reading counts by its effective time, whenever it arrives.
PEF_UPLOAD_GRACE_MIN: Final = Figure(
    30.0, "min", "remon default: upload delay through the hub outbox, configurable"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class PefSchedulePolicy:
    windows: tuple[SessionWindow, ...] = DEFAULT_PEF_WINDOWS
    windows_source: str = (
        "DOMAIN.md §1: morning and evening sessions; window bounds 06:00-11:00 and 18:00-23:00 "
        "local time are remon defaults, set per patient"
    )
    upload_grace: Figure = PEF_UPLOAD_GRACE_MIN

    def __post_init__(self) -> None:
        check_windows(self.windows, "default PEF windows")
        _minutes("upload_grace", self.upload_grace, allow_zero=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class PefSchedule:
    """One subject's PEF diary: local session windows on each day from first to last."""

    subject_ref: str
    time_zone: str  # IANA name, e.g. "Europe/Helsinki"
    first_day: date
    last_day: date
    windows: tuple[SessionWindow, ...] | None = None  # None: the policy's windows
    simulated: bool = False

    def __post_init__(self) -> None:
        require_text("PEF schedule subject_ref", self.subject_ref)
        where = f"PEF schedule of {self.subject_ref}"
        zone(self.time_zone, where)
        if isinstance(self.first_day, datetime) or isinstance(self.last_day, datetime):
            raise RuleInputError(f"{where}: first_day and last_day are dates, not datetimes")
        if self.first_day > self.last_day:
            raise RuleInputError(f"{where}: first_day {self.first_day} after {self.last_day}")
        if self.windows is not None:
            check_windows(self.windows, where)


@dataclass(frozen=True, slots=True, kw_only=True)
class PefReadingTime:
    """A stored PEF reading, as far as the schedule cares: who and when."""

    obs_id: str
    subject_ref: str
    effective_time: datetime
    simulated: bool = False

    def __post_init__(self) -> None:
        require_text("PEF reading obs_id", self.obs_id)
        require_text(f"PEF reading {self.obs_id}: subject_ref", self.subject_ref)
        require_aware(f"PEF reading {self.obs_id}: effective_time", self.effective_time)


def zone(name: str, where: str) -> ZoneInfo:
    require_text(f"{where}: time_zone", name)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise RuleInputError(f"{where}: unknown time zone {name!r}") from exc


@dataclass(frozen=True, slots=True)
class DiaryWindow:
    """One session window on one diary day, as UTC instants ``[start, end)``."""

    day: date
    window: SessionWindow
    start: datetime
    end: datetime


def diary_windows(schedule: PefSchedule, policy: PefSchedulePolicy) -> list[DiaryWindow]:
    """Every window of the diary in UTC, in time order.

    Local times become instants with the zone's rules for that day, by the convention of
    RFC 5545 (iCalendar) and PEP 495 ``fold=0``: a bound in the spring-forward gap is read with
    the offset before the change, so it falls the gap's length later (03:30 becomes 04:30
    summer time); an ambiguous autumn bound is its first occurrence. A window that thereby ends
    at or before its start (e.g. 03:50-04:00 on the spring day in Helsinki) has no instants that
    day and is left out.
    """
    tz = zone(schedule.time_zone, f"PEF schedule of {schedule.subject_ref}")
    windows = schedule.windows if schedule.windows is not None else policy.windows
    out: list[DiaryWindow] = []
    day = schedule.first_day
    while day <= schedule.last_day:
        for w in windows:
            start = datetime.combine(day, w.start, tzinfo=tz).astimezone(UTC)
            end = datetime.combine(day, w.end, tzinfo=tz).astimezone(UTC)
            if start < end:
                out.append(DiaryWindow(day, w, start, end))
        day += timedelta(days=1)
    return out


def _window_evidence(schedule: PefSchedule, dw: DiaryWindow) -> FindingEvidence:
    return FindingEvidence(
        event_id=f"pef-window:{schedule.subject_ref}:{dw.day.isoformat()}:{dw.window.label}",
        kind="pef-session-missed",
        time=dw.end,
        summary=f"no PEF reading in the {dw.window.text()} window of {dw.day.isoformat()} "
        f"({schedule.time_zone}; {utc_text(dw.start)} to {utc_text(dw.end)})"
        + (" (simulated diary)" if schedule.simulated else ""),
    )


def pef_rules(policy: PefSchedulePolicy) -> dict[str, SilenceRule]:
    return {
        PEF_SESSION_MISSED: SilenceRule(
            condition=PEF_SESSION_MISSED,
            title="PEF diary session missed",
            priority=Priority.LOW,
            audience="clinician",
            criterion="a session window of the PEF diary ended with no PEF reading inside it "
            f"(judged {policy.upload_grace.value:g} min after the window's end)",
            source=f"{policy.windows_source}; grace: {policy.upload_grace.source}; priority: "
            "remon default, low: a missing session is awareness for the diary's reviewer, "
            "the diary's analysis reports the days it covers",
            all_clear="a PEF reading inside a later session window",
        )
    }


def _unique_readings(readings: Iterable[PefReadingTime]) -> dict[str, list[PefReadingTime]]:
    by_id = unique_by_id(
        readings, PefReadingTime, lambda r: r.obs_id, holder="readings", label="PEF reading"
    )
    out: dict[str, list[PefReadingTime]] = {}
    for r in sorted(by_id.values(), key=lambda r: (r.effective_time, r.obs_id)):
        out.setdefault(r.subject_ref, []).append(r)
    return out


def evaluate_pef_schedule(
    schedules: Iterable[PefSchedule],
    readings: Iterable[PefReadingTime],
    *,
    open_alerts: Iterable[OpenFinding],
    now: datetime,
    judged_until: Mapping[str, datetime] | None = None,
    policy: PefSchedulePolicy | None = None,
) -> list[FindingAction]:
    """Missed-session actions for each diary at ``now``.

    ``readings`` are all PEF readings of the diary period (not only new ones): whether a window
    was missed depends on all of them. Readings of subjects without a schedule concern no
    window. Windows and readings are replayed in time order: a missed window triggers at its
    end, a reading inside a window is an all-clear at its time.

    A window is judged once: windows ending at or before the open alert's latest evidence were
    judged by an earlier call. With no open alert (none yet, or resolved by a person), pass in
    ``judged_until[subject]`` the latest evidence time of the subject's last resolved
    ``pef-session-missed`` alert; without it, old missed windows are raised again (the safe
    direction: shown twice, never hidden).
    """
    pol = policy or PefSchedulePolicy()
    grace = _minutes("upload_grace", pol.upload_grace, allow_zero=True)
    rules = pef_rules(pol)
    book = FindingBook(open_alerts, rules=rules, now=now)
    by_subject = _unique_readings(readings)
    judged = judged_until or {}
    seen: set[str] = set()
    for schedule in sorted(schedules, key=lambda s: s.subject_ref):
        subject = schedule.subject_ref
        if subject in seen:
            raise RuleInputError(f"PEF schedule of {subject} given twice")
        seen.add(subject)
        horizon = judged.get(subject)
        if horizon is not None:
            require_aware(f"judged_until[{subject}]", horizon)
        cur = book.current(subject, PEF_SESSION_MISSED)
        if cur is not None and (horizon is None or cur.last.time > horizon):
            horizon = cur.last.time
        windows = diary_windows(schedule, pol)
        subject_readings = by_subject.get(subject, [])
        # (time, 0 = missed window / 1 = reading, id, payload): one timeline in time order
        timeline: list[tuple[datetime, int, str, DiaryWindow | PefReadingTime]] = []
        for dw in windows:
            inside = [r for r in subject_readings if dw.start <= r.effective_time < dw.end]
            for r in inside:
                timeline.append((r.effective_time, 1, r.obs_id, r))
            if inside or dw.end + grace > now:
                continue
            if horizon is not None and dw.end <= horizon:
                continue
            timeline.append((dw.end, 0, dw.window.label, dw))
        timeline.sort(key=lambda t: (t[0], t[1], t[2]))
        for _, _, _, item in timeline:
            if isinstance(item, DiaryWindow):
                book.trigger(
                    subject,
                    PEF_SESSION_MISSED,
                    _window_evidence(schedule, item),
                    simulated=schedule.simulated,
                )
            else:
                book.clear(
                    subject,
                    PEF_SESSION_MISSED,
                    at=item.effective_time,
                    by=item.obs_id,
                    note=f"PEF reading {item.obs_id} at {utc_text(item.effective_time)} "
                    "inside a session window",
                )
    return book.actions()


# --------------------------------------------------------------------------------------------
# site offline

SITE_OFFLINE: Final = "site-offline"


#: A hub restart, a router reboot or a broker failover takes a few minutes and the hub's outbox
#: keeps its readings meanwhile (nothing is lost), so such blips stay out of the queue; a site
#: that stays down is still reported well before the CGM urgent stale time (30 min, DOMAIN.md
#: §2), so the site alert names the likely cause before its subjects' silence alerts escalate.
SITE_OFFLINE_GRACE_MIN: Final = Figure(
    10.0, "min", "remon default: rides out restarts; the outbox keeps data, configurable"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class SiteStatusPolicy:
    grace: Figure = SITE_OFFLINE_GRACE_MIN

    def __post_init__(self) -> None:
        _minutes("grace", self.grace, allow_zero=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class SiteStatus:
    """A hub's or kiosk's last reported status (offline is the MQTT last will)."""

    site: str
    state: Literal["online", "offline"]
    at: datetime
    simulated: bool = False

    def __post_init__(self) -> None:
        require_text("site", self.site)
        if self.state not in ("online", "offline"):
            raise RuleInputError(f"site {self.site}: unknown state {self.state!r}")
        require_aware(f"site {self.site}: at", self.at)

    @property
    def status_id(self) -> str:
        return f"site-status:{self.site}:{self.state}:{_iso(self.at)}"


def site_rules(policy: SiteStatusPolicy) -> dict[str, SilenceRule]:
    return {
        SITE_OFFLINE: SilenceRule(
            condition=SITE_OFFLINE,
            title="Home hub or kiosk offline",
            priority=Priority.MEDIUM,
            audience="home_care",
            criterion=f"the site's last status has been offline for "
            f"{policy.grace.value:g} min or more",
            source=f"grace: {policy.grace.source}; priority: remon default, medium: while a "
            "site is offline none of its readings or events arrive, so no other alert can be "
            "raised for its clients (DOMAIN.md §5: stale-data alerts); prompt check",
            all_clear="the site reports online again",
        )
    }


def evaluate_site_status(
    statuses: Iterable[SiteStatus],
    *,
    open_alerts: Iterable[OpenFinding],
    now: datetime,
    policy: SiteStatusPolicy | None = None,
) -> list[FindingAction]:
    """Site-offline actions for each site's last status at ``now`` (subject = the site id).

    Offline for at least the grace (exactly 10:00 min counts) raises; offline for less does
    nothing yet; online newer than the alert's latest evidence clears it.
    """
    pol = policy or SiteStatusPolicy()
    grace = _minutes("grace", pol.grace, allow_zero=True)
    rules = site_rules(pol)
    book = FindingBook(open_alerts, rules=rules, now=now)
    seen: set[str] = set()
    for s in sorted(statuses, key=lambda s: s.site):
        if s.site in seen:
            raise RuleInputError(f"site {s.site} given twice: pass its last status only")
        seen.add(s.site)
        at = _utc(s.at)
        if s.state == "offline":
            if now - at < grace:
                continue
            book.trigger(
                s.site,
                SITE_OFFLINE,
                FindingEvidence(
                    event_id=s.status_id,
                    kind="site-offline",
                    time=at,
                    summary=f"site {s.site} reported offline at {utc_text(at)}"
                    + (" (simulated site)" if s.simulated else ""),
                ),
                simulated=s.simulated,
                note=f"offline since {utc_text(at)}: {_whole_minutes(now - at)} min "
                f"when checked at {utc_text(now)}",
            )
        else:
            book.clear(
                s.site,
                SITE_OFFLINE,
                at=at,
                by=s.status_id,
                note=f"site {s.site} reported online at {utc_text(at)}",
            )
    return book.actions()
