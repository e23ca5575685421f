"""What the patient view, the fleet view and the reports show, read from the service and turned
into the standard pictures by the pure analytics and :mod:`cloud_ingest.web.charts`.

Handlers stay thin: each page asks one function here for its data. Nothing here writes.
Periods follow the clinical protocols: the PEF diary and the AGP over the last 14 days
(DOMAIN.md §1, §2: 14 days of CGM data is the consensus minimum for the AGP), home BP over the
last 7 days (the home BP week, DOMAIN.md §3), doses over the last 14 days.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

import numpy as np

from cloud_ingest.analytics.bp import (
    BpInputError,
    BpReading,
    HomeBpSummary,
    KioskVisitSummary,
    home_bp_summary,
    kiosk_visit_summary,
)
from cloud_ingest.analytics.cgm_metrics import CgmMetrics, agp_profile, cgm_metrics
from cloud_ingest.analytics.pef_diary import DiaryReport, PefDiaryError, analyse_diary
from cloud_ingest.analytics.pef_sessions import PefBlowReading, SessionsResult, blows_from_readings
from cloud_ingest.care import Principal
from cloud_ingest.clinical_settings import PEF_PERSONAL_BEST
from cloud_ingest.service import IngestService, ThresholdView
from cloud_ingest.storage.records import (
    AlertRecord,
    DeviceSubjectRecord,
    EventRecord,
    ObservationRecord,
    SiteRecord,
)
from cloud_ingest.web import charts
from cloud_ingest.web.chart_text import CHART_TEXT
from cloud_ingest.web.i18n import Translator
from device_profiles.codes import MEASURES

#: The diary and AGP period (DOMAIN.md §1 2-week PEF diary; §2 14 days for the AGP).
DIARY_DAYS: Final = 14
#: The home BP week (DOMAIN.md §3: 7 days, morning and evening, day 1 discarded).
BP_DAYS: Final = 7
#: Readings of one patient at one kiosk site within this long of each other are one visit.
KIOSK_VISIT_GAP: Final = timedelta(minutes=30)
#: A site is a self-measurement station when its id starts with this (docs/configuration.md).
KIOSK_SITE_PREFIX: Final = "kiosk-"
#: Upper bounds on what one page reads (14 days of 5-min CGM is 4 032 readings).
_MAX_CGM: Final = 6000
_MAX_SERIES: Final = 2000
#: Device clocks further off than this get the clock-offset flag (DOMAIN.md, ARCHITECTURE.md).
CLOCK_FAULT_S: Final = 15 * 60
#: Measures shown in the latest-readings table, in the order clinicians read them.
LATEST_MEASURES: Final = (
    "bp.systolic",
    "bp.diastolic",
    "pulse.cuff",
    "spo2",
    "pulse.oximeter",
    "body.temperature",
    "glucose.cgm",
    "glucose.capillary",
    "pef",
    "body.weight",
    "body.height",
    "bmi",
)
_DOSE_STATUS: Final = {
    "dose_taken": "taken",
    "dose_taken_late": "late",
    "dose_missed": "missed",
}


def _text(chart: str, t: Translator) -> dict[str, str]:
    return dict(CHART_TEXT[chart][t.lang])


def _clock_fi(t: Translator) -> charts.ClockFormat:
    sep = "." if t.lang == "fi" else ":"

    def clock(minutes: int) -> str:
        return f"{minutes // 60:02d}{sep}{minutes % 60:02d}"

    return clock


def _wall_seconds(at: datetime, tz: ZoneInfo) -> float:
    """Wall-clock seconds in ``tz`` (the AGP folds readings by local time of day)."""
    local = at.astimezone(tz).replace(tzinfo=None)
    return (local - datetime(1970, 1, 1)).total_seconds()  # noqa: DTZ001 - naive wall time


# -- latest readings and open alerts -------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Latest:
    measure: str
    obs: ObservationRecord
    spark: str  # a sparkline SVG of the last readings


def latest_readings(service: IngestService, subject: str, t: Translator) -> list[Latest]:
    out: list[Latest] = []
    for m in LATEST_MEASURES:
        rows = service.list_observations(subject=subject, measure=m, limit=20)
        rows = [r for r in rows if r.value is not None]
        if not rows:
            continue
        decimals = 1 if MEASURES[m].unit in ("mmol/L", "Cel", "kg", "kg/m2") else 0
        spark = charts.sparkline_svg(
            [(r.effective_time, float(r.value)) for r in reversed(rows) if r.value is not None],
            text=_text("sparkline", t),
            num=t.num,
            day=t.day,
            decimals=decimals,
            unit="",
            chart_id=f"spark-{m.replace('.', '-')}",
        )
        out.append(Latest(measure=m, obs=rows[0], spark=spark))
    return out


def open_alerts(service: IngestService, who: Principal, subject: str) -> list[AlertRecord]:
    return service.list_alerts(principal=who, subject=subject, active_only=True, limit=50)


def thresholds(service: IngestService, subject: str) -> list[ThresholdView]:
    return [service.get_threshold(subject, th.condition) for th in service.thresholds()]


# -- PEF diary -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PefView:
    svg: str
    report: DiaryReport | None
    sessions: SessionsResult | None
    personal_best: float | None
    readings: int


def pef_view(
    service: IngestService, subject: str, tz: ZoneInfo, now: datetime, t: Translator
) -> PefView:
    since = now - timedelta(days=DIARY_DAYS)
    rows = service.list_observations(subject=subject, measure="pef", since=since, limit=_MAX_SERIES)
    pb_rec = service.storage.get_parameter(subject, PEF_PERSONAL_BEST)
    pb = pb_rec.value if pb_rec is not None else None
    report: DiaryReport | None = None
    result: SessionsResult | None = None
    if rows:
        result = blows_from_readings(
            [
                PefBlowReading(
                    at=o.effective_time,
                    value=o.value,
                    obs_id=o.obs_id,
                    comparator=o.comparator,
                    quality=frozenset(o.quality),
                )
                for o in rows
            ],
            tz=tz,
        )
        if result.blows:
            try:
                report = analyse_diary(result.blows, personal_best_l_min=pb)
            except PefDiaryError:
                report = None
    svg = charts.pef_diary_svg(
        report, text=_text("pef", t), num=t.num, day=t.day, chart_id="pef-diary"
    )
    return PefView(svg=svg, report=report, sessions=result, personal_best=pb, readings=len(rows))


# -- CGM: AGP and time in ranges -----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CgmView:
    agp: str
    tir: str
    metrics: CgmMetrics | None
    readings: int


def cgm_view(
    service: IngestService, subject: str, tz: ZoneInfo, now: datetime, t: Translator
) -> CgmView:
    since = now - timedelta(days=DIARY_DAYS)
    rows = service.series(subject=subject, measure="glucose.cgm", since=since, limit=_MAX_CGM)
    units = {r.unit for r in rows}
    if not rows or len(units) != 1:
        empty_agp = charts.agp_svg(None, text=_text("agp", t), num=t.num, chart_id="agp")
        empty_tir = charts.tir_bar_svg(None, text=_text("tir", t), num=t.num, chart_id="tir")
        return CgmView(agp=empty_agp, tir=empty_tir, metrics=None, readings=len(rows))
    unit = units.pop()
    by_time = {r.at: r.value for r in rows}
    ordered = sorted(by_time.items())
    utc_s = np.array([at.timestamp() for at, _ in ordered])
    values = np.array([v for _, v in ordered])
    metrics = cgm_metrics(utc_s, values, unit=unit)
    wall = np.array([_wall_seconds(at, tz) for at, _ in ordered])
    profile = agp_profile(wall, values, unit=unit)
    days: dict[date, list[tuple[float, float]]] = defaultdict(list)
    for at, v in ordered:
        local = at.astimezone(tz)
        days[local.date()].append((local.hour * 60 + local.minute + local.second / 60, v))
    agp = charts.agp_svg(
        profile,
        unit=unit,
        days=sorted(days.items()),
        text=_text("agp", t),
        num=t.num,
        clock=_clock_fi(t),
        chart_id="agp",
    )
    tir = charts.tir_bar_svg(metrics, text=_text("tir", t), num=t.num, chart_id="tir")
    return CgmView(agp=agp, tir=tir, metrics=metrics, readings=len(ordered))


# -- home blood pressure -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class BpView:
    svg: str
    summary: HomeBpSummary | None
    readings: int


def pair_bp(
    rows: Sequence[ObservationRecord], pulses: Sequence[ObservationRecord]
) -> list[BpReading]:
    """Systolic and diastolic readings of one measurement (same device, same time) as pairs;
    a half without its other half is left out (never completed with a guess)."""
    dia = {
        (r.device_id, r.site, r.effective_time): r.value
        for r in rows
        if r.measure == "bp.diastolic" and r.value is not None
    }
    pulse = {
        (r.device_id, r.site, r.effective_time): r.value for r in pulses if r.value is not None
    }
    out = []
    for r in rows:
        if r.measure != "bp.systolic" or r.value is None:
            continue
        key = (r.device_id, r.site, r.effective_time)
        d = dia.get(key)
        if d is not None:
            out.append(BpReading(r.effective_time, float(r.value), float(d), pulse.get(key)))
    return sorted(out, key=lambda b: b.time)


def bp_view(
    service: IngestService, subject: str, tz: ZoneInfo, now: datetime, t: Translator
) -> BpView:
    since = now - timedelta(days=BP_DAYS)
    rows: list[ObservationRecord] = []
    for m in ("bp.systolic", "bp.diastolic"):
        rows += service.list_observations(
            subject=subject, measure=m, since=since, limit=_MAX_SERIES
        )
    home = [r for r in rows if not r.site.startswith(KIOSK_SITE_PREFIX)]
    pulses = service.list_observations(
        subject=subject, measure="pulse.cuff", since=since, limit=_MAX_SERIES
    )
    readings = pair_bp(home, pulses)
    summary = home_bp_summary(readings, tz=tz) if readings else None
    svg = charts.bp_series_svg(
        readings,
        summary=summary,
        text=_text("bp", t),
        num=t.num,
        day=t.day,
        clock=_clock_fi(t),
        tz=tz,
        chart_id="bp",
    )
    return BpView(svg=svg, summary=summary, readings=len(readings))


# -- kiosk visits --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class KioskVisit:
    site: str
    start: datetime
    readings: tuple[ObservationRecord, ...]
    bp: tuple[BpReading, ...] = field(default=())
    #: from a visit message (remon.visit/1); None for readings grouped by time at a kiosk site
    ref: str | None = None
    end: datetime | None = None
    answers: tuple[tuple[str, object], ...] = ()
    quarantined: int = 0

    @property
    def bp_summary(self) -> KioskVisitSummary | None:
        """The visit's BP result (DOMAIN.md §3: the mean of the last two of three readings,
        one more when the first two differ by >= 10 mmHg); None without BP readings."""
        if not self.bp:
            return None
        try:
            return kiosk_visit_summary(self.bp)
        except BpInputError:
            return None  # e.g. two readings at one instant: shown as readings, not summarised


#: Visit messages read for one patient's page (two a fortnight is the usual rhythm).
MAX_VISITS: Final = 50


def _visit(
    site: str,
    readings: Sequence[ObservationRecord],
    *,
    start: datetime,
    ref: str | None = None,
    end: datetime | None = None,
    answers: tuple[tuple[str, object], ...] = (),
    quarantined: int = 0,
) -> KioskVisit:
    return KioskVisit(
        site=site,
        start=start,
        readings=tuple(readings),
        bp=tuple(pair_bp(readings, [r for r in readings if r.measure == "pulse.cuff"])),
        ref=ref,
        end=end,
        answers=answers,
        quarantined=quarantined,
    )


def kiosk_visits(
    service: IngestService, subject: str, now: datetime, *, days: int = 90
) -> list[KioskVisit]:
    """The patient's self-measurement visits, newest first: each visit message the kiosk sent
    (its readings, answers and span), and readings that reached the cloud from a kiosk site
    outside any visit message grouped by time (gaps over :data:`KIOSK_VISIT_GAP`)."""
    since = now - timedelta(days=days)
    out: list[KioskVisit] = []
    bundled: set[str] = set()
    for v in service.list_visits(subject=subject, since=since, limit=MAX_VISITS):
        readings = service.visit_observations(v)
        bundled.update(r.obs_id for r in readings)
        out.append(
            _visit(
                v.site,
                readings,
                start=v.started_at,
                ref=v.visit_ref,
                end=v.ended_at,
                answers=tuple((str(a.get("id")), a.get("value")) for a in v.answers),
                quarantined=v.quarantined,
            )
        )
    rows = [
        r
        for r in service.list_observations(
            subject=subject, since=since, site_prefix=KIOSK_SITE_PREFIX, limit=_MAX_SERIES
        )
        if r.obs_id not in bundled
    ]
    rows.sort(key=lambda r: (r.site, r.effective_time))
    groups: list[list[ObservationRecord]] = []
    for r in rows:
        last = groups[-1][-1] if groups else None
        if (
            last is None
            or last.site != r.site
            or r.effective_time - last.effective_time > KIOSK_VISIT_GAP
        ):
            groups.append([r])
        else:
            groups[-1].append(r)
    out += [_visit(g[0].site, g, start=g[0].effective_time) for g in groups]
    return sorted(out, key=lambda v: v.start, reverse=True)


# -- dispenser doses -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DoseView:
    svg: str
    counts: dict[str, int]


def dose_marks(events: Sequence[EventRecord], now: datetime) -> list[charts.DoseMark]:
    """One mark per scheduled dose (events grouped by dose id): its outcome if one arrived,
    else "due"."""
    by_dose: dict[str, list[EventRecord]] = defaultdict(list)
    for e in events:
        if e.dose_id is not None:
            by_dose[e.dose_id].append(e)
    marks = []
    for evs in by_dose.values():
        scheduled = next((e.scheduled_time for e in evs if e.scheduled_time is not None), None)
        if scheduled is None:
            scheduled = min(e.event_time for e in evs)
        outcome = next((e for e in evs if e.kind in _DOSE_STATUS), None)
        if outcome is None:
            if scheduled > now:
                continue
            marks.append(charts.DoseMark(scheduled=scheduled, status="due"))
            continue
        status = _DOSE_STATUS[outcome.kind]
        at = outcome.event_time if status != "missed" else None
        marks.append(charts.DoseMark(scheduled=scheduled, status=status, at=at))  # type: ignore[arg-type]
    return sorted(marks, key=lambda m: m.scheduled)


def dose_view(
    service: IngestService, subject: str, tz: ZoneInfo, now: datetime, t: Translator
) -> DoseView:
    since = now - timedelta(days=DIARY_DAYS)
    events = service.list_events(subject=subject, since=since, limit=5000)
    marks = dose_marks(events, now)
    start = (now.astimezone(tz) - timedelta(days=DIARY_DAYS - 1)).date()
    svg = charts.dose_timeline_svg(
        marks,
        start=start,
        days=DIARY_DAYS,
        tz=tz,
        text=_text("dose", t),
        day=t.day,
        clock=_clock_fi(t),
        chart_id="doses",
    )
    counts = {s: sum(1 for m in marks if m.status == s) for s in ("taken", "late", "missed", "due")}
    return DoseView(svg=svg, counts=counts)


# -- fleet ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetDevice:
    """One physical device at a site: its newest binding (telemetry, identity) and every
    subject the viewer may see that it has reported for (a kiosk's devices serve many)."""

    binding: DeviceSubjectRecord
    subjects: tuple[str, ...]  # newest first

    @property
    def model(self) -> str:
        """From the identity key manufacturer|model|serial."""
        parts = self.binding.device_key.split("|")
        return parts[1] if len(parts) == 3 else self.binding.device_key

    @property
    def firmware(self) -> str | None:
        return self.binding.firmware

    @property
    def transport(self) -> str | None:
        return self.binding.transport

    @property
    def clock_fault(self) -> bool:
        off = self.binding.clock_offset_s
        return off is not None and abs(off) > CLOCK_FAULT_S


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetSite:
    site: str
    record: SiteRecord | None
    devices: list[FleetDevice]


#: Bindings read for the fleet page at most (a region's hubs and kiosks: thousands of devices).
FLEET_ROWS: Final = 20_000


def fleet(service: IngestService, care_subjects: Sequence[str] | None) -> list[FleetSite]:
    """Sites and their devices, in two queries. ``care_subjects``: the subjects the viewer may
    see (None: all, admins); staff see the sites where their patients' devices report."""
    rows = service.storage.device_subjects(subject_refs=care_subjects, limit=FLEET_ROWS)
    sites = {s.site: s for s in service.list_sites()}
    grouped: dict[tuple[str, str], list[DeviceSubjectRecord]] = defaultdict(list)
    for b in rows:  # newest first: each group's first row is the device's newest binding
        grouped[(b.site, b.device_key)].append(b)
    by_site: dict[str, list[FleetDevice]] = defaultdict(list)
    for (site, _), bindings in grouped.items():
        subjects = tuple(dict.fromkeys(b.subject_ref for b in bindings))
        by_site[site].append(FleetDevice(binding=bindings[0], subjects=subjects))
    names = sorted(set(by_site) | (set(sites) if care_subjects is None else set()))
    return [
        FleetSite(
            site=n,
            record=sites.get(n),
            devices=sorted(by_site.get(n, []), key=lambda d: d.binding.device_id),
        )
        for n in names
    ]


def utcnow() -> datetime:
    return datetime.now(UTC)
