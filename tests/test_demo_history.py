"""The demo's 14-day history (remon.demo_history): what it generates, and the same through a real
Mosquitto into a real SQLite ingest, read back the way the care-team views read it."""

from __future__ import annotations

import itertools
import operator
import os
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from cloud_ingest.analytics.bp import BpReading, home_bp_summary
from cloud_ingest.analytics.cgm_metrics import agp_profile, cgm_metrics
from cloud_ingest.analytics.pef_diary import DiaryReport, analyse_diary
from cloud_ingest.analytics.pef_sessions import PefBlowReading, blows_from_readings
from cloud_ingest.consumer import Consumer, ConsumerConfig
from cloud_ingest.rules.thresholds import DEFAULT_THRESHOLDS
from cloud_ingest.service import IngestService, RawMessage
from cloud_ingest.storage import ObservationRecord, Storage, open_storage
from device_profiles.events import EventKind
from device_profiles.observation import Observation, QualityFlag
from gateway.wire import (
    OutboundMessage,
    WireObservation,
    decode_events,
    decode_observations,
    decode_visit,
)
from remon.brokers import MosquittoProcess
from remon.demo import DemoOptions, seed_directory
from remon.demo_history import (
    KIOSK_SITE,
    HistoryError,
    bp_history,
    cgm_history,
    dose_history,
    history_plan,
    kiosk_history,
    load_history,
    pef_dip_day,
    pef_history,
    publish_history,
    seed_history_settings,
    seed_personal_bests,
)
from tests.test_end_to_end import wait_until

HEL = ZoneInfo("Europe/Helsinki")
#: An evening in the past (the ingest refuses readings from the future); the history's 14 days
#: run over the end of summer time (2025-10-26 04:00 EEST -> 03:00 EET).
NOW = datetime(2025, 10, 30, 21, 30, tzinfo=HEL)
TODAY = NOW.date()
DAYS = [TODAY - timedelta(days=13 - k) for k in range(14)]
KIOSK_DEVICE_IDS = {
    "kiosk-bp-history",
    "kiosk-oximeter-history",
    "kiosk-thermometer-history",
    "kiosk-scale-history",
    "kiosk-height-history",
}
_CMP = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def alerting(o: Observation) -> list[str]:
    """The default thresholds (cloud_ingest.rules.thresholds) the reading meets."""
    return [
        t.condition
        for t in DEFAULT_THRESHOLDS
        if o.measure in t.measures and o.value is not None and _CMP[t.comparator](o.value, t.value)
    ]


def diary(observations: list[Observation]) -> tuple[DiaryReport, list[str]]:
    readings = [
        PefBlowReading(
            at=o.effective_time,
            value=o.value,
            comparator=o.comparator,
            quality=frozenset(q.value for q in o.quality),
        )
        for o in observations
    ]
    r = blows_from_readings(readings)
    return analyse_diary(r.blows, personal_best_l_min=500.0), [u.reason for u in r.unclassified]


# ------------------------------------------------------------------------------- generation


def test_cgm_follows_the_profile_within_the_sensor_range() -> None:
    start, end = NOW - timedelta(days=14), NOW
    for profile in ("normal", "hyperglycaemic", "hypo-prone"):
        obs = cgm_history(3, start=start, end=end, profile=profile)
        v = np.array([o.value for o in obs], dtype=np.float64)
        in_range, above_10 = np.mean((v >= 3.9) & (v <= 10.0)), np.mean(v > 10.0)
        if profile == "normal":
            assert in_range > 0.9
        elif profile == "hyperglycaemic":
            assert above_10 > 0.8  # mostly above 10 mmol/L
        else:
            assert np.min(v) < 3.9
        assert all(o.comparator is None for o in obs)  # never outside 40-400 mg/dL here
        assert np.all((v >= 2.2) & (v <= 22.2))
        # as a BLE CGM: whole mg/dL, converted once, the original kept
        o = obs[0]
        assert o.provenance.original_unit == "mg/dL"
        assert o.provenance.original_value is not None
        assert o.provenance.original_value.is_integer()
        assert o.value == pytest.approx(o.provenance.original_value / 18.016)
        assert QualityFlag.SIMULATED in o.quality
    # the hypo-prone lows are at night, and last (a low event needs >= 15 min, DOMAIN.md §2)
    obs = cgm_history(1, start=start, end=end, profile="hypo-prone")
    lows = [o.effective_time.astimezone(HEL) for o in obs if o.value is not None and o.value < 3.9]
    assert lows
    assert {t.hour for t in lows} <= {0, 1, 2, 3, 4, 5, 6}
    assert len({t.date() for t in lows}) >= 2


def test_cgm_readings_are_5_min_apart_with_a_warm_up_gap_at_each_sensor_change() -> None:
    obs = cgm_history(0, start=NOW - timedelta(days=14), end=NOW)
    times = [o.effective_time for o in obs]
    gaps = Counter(b - a for a, b in itertools.pairwise(times))
    assert set(gaps) == {timedelta(minutes=5), timedelta(hours=1, minutes=5)}
    assert gaps[timedelta(hours=1, minutes=5)] in (1, 2)  # 10-day sensors
    assert all(t.timestamp() % 300 == 0 for t in times)
    sessions = {o.record_key.split("+")[0] for o in obs}
    assert len(sessions) == gaps[timedelta(hours=1, minutes=5)] + 1


def test_the_dip_patients_diary_meets_the_criteria_and_another_does_not() -> None:
    report, unclassified = diary(pef_history(0, days=DAYS, now=NOW))
    assert report.period_days == 14
    assert report.days_with_data == 14
    assert report.diurnal.met
    assert report.bd.met
    assert set(report.diurnal.days_meeting) == {d for d in DAYS if pef_dip_day(d)}
    assert all(r.startswith("flagged early-stop") for r in unclassified)
    other, _ = diary(pef_history(3, days=DAYS, now=NOW))
    assert not other.diurnal.met
    assert not other.bd.met
    assert other.days_with_data == 14
    # 3 good blows a session, morning and evening, in the windows the schedule rule watches
    for d in report.days:
        assert d.morning_pre_best is not None
        assert d.evening_pre_best is not None
        assert all(len(s.values) >= 3 for s in d.sessions)


def test_home_bp_is_a_protocol_week_and_the_hypertensive_profile_is_above_135_85() -> None:
    for i, above in ((0, False), (2, True)):
        obs = bp_history(i, days=DAYS[-7:], now=NOW)
        by_key: dict[str, dict[str, float]] = {}
        times: dict[str, datetime] = {}
        for o in obs:
            assert o.value is not None
            by_key.setdefault(o.record_key, {})[o.measure] = o.value
            times[o.record_key] = o.effective_time
        readings = [
            BpReading(
                time=times[k],
                systolic=m["bp.systolic"],
                diastolic=m["bp.diastolic"],
                pulse=m["pulse.cuff"],
            )
            for k, m in by_key.items()
        ]
        s = home_bp_summary(readings, tz=HEL)
        assert s.readings_total == 28
        assert s.notes == ()
        assert s.at_or_above_threshold is above
        assert all(r.systolic < 180 and r.diastolic < 110 for r in readings)  # no grade 3


def test_kiosk_visits_two_a_fortnight_on_weekdays_with_plausible_values_and_no_alert() -> None:
    profiles = ("normal", "hypo-prone", "hypertensive", "hyperglycaemic", "hypoxic", "febrile")
    for seed, i in itertools.product(range(4), range(12)):
        profile = profiles[i % 6]
        visits = kiosk_history(i, now=NOW, seed=seed)
        assert len(visits) == 2
        # a visit: readings within 30 min of each other; two visits: days apart
        assert visits[1].start - visits[0].start > timedelta(days=2)
        temperatures = []
        for v in visits:
            obs = v.observations
            times = sorted(o.effective_time for o in obs)
            assert NOW - timedelta(days=14) < v.start <= times[0]
            assert times[-1] <= NOW
            assert times[-1] - times[0] < timedelta(minutes=15)
            for t in (times[0].astimezone(HEL), times[-1].astimezone(HEL)):
                assert t.weekday() < 5
                assert 8 <= t.hour < 16
            by_measure: dict[str, list[Observation]] = {}
            for o in obs:
                by_measure.setdefault(o.measure, []).append(o)
                assert QualityFlag.SIMULATED in o.quality
                assert alerting(o) == [], (seed, i, o)
            assert {m: len(x) for m, x in by_measure.items()} == {
                "bp.systolic": 3,
                "bp.diastolic": 3,
                "pulse.cuff": 3,
                "spo2": 1,
                "pulse.oximeter": 1,
                "body.temperature": 1,
                "body.weight": 1,
                "body.height": 1,
                "bmi": 1,
            }
            # BP: 3 readings 1-2 min apart, within 5 min, the first two within 10 mmHg
            bp = by_measure["bp.systolic"]
            gaps = [b.effective_time - a.effective_time for a, b in itertools.pairwise(bp)]
            assert all(timedelta(minutes=1) <= g <= timedelta(minutes=2) for g in gaps)
            assert bp[-1].effective_time - bp[0].effective_time <= timedelta(minutes=5)
            assert abs((bp[0].value or 0) - (bp[1].value or 0)) < 10
            for s, d in zip(bp, by_measure["bp.diastolic"], strict=True):
                assert s.record_key == d.record_key
                assert s.value is not None
                assert d.value is not None
                assert 90 < s.value < 180
                assert 50 < d.value < 110
                assert s.value - d.value >= 20
            # BMI: derived from the visit's weight and height (to its 0.1 resolution)
            (bmi,) = by_measure["bmi"]
            (w,) = by_measure["body.weight"]
            (h,) = by_measure["body.height"]
            assert w.value is not None
            assert h.value is not None
            assert bmi.value is not None
            assert bmi.value == pytest.approx(w.value / (h.value / 100) ** 2, abs=0.05 + 1e-9)
            assert QualityFlag.DERIVED in bmi.quality
            assert QualityFlag.DERIVED not in w.quality | h.quality
            assert bmi.provenance.source == "edge:kiosk-bmi"
            assert 150 <= h.value <= 195
            assert 17 < bmi.value < 36
            assert set(v.readings) == KIOSK_DEVICE_IDS
            assert {o.measure for o in v.readings["kiosk-scale-history"]} == {"body.weight", "bmi"}
            (spo2,) = by_measure["spo2"]
            assert spo2.value is not None
            if profile == "hypoxic":
                assert 94 <= spo2.value <= 95
            else:
                assert 95 <= spo2.value <= 99
            temperatures += [o.value for o in by_measure["body.temperature"]]
        if profile == "febrile":  # one fever visit (38.x, below the NEWS2 39.1 alert)
            assert sum(38 <= (t or 0) < 39 for t in temperatures) == 1
        else:
            assert all(36 <= (t or 0) < 37.5 for t in temperatures)


def test_kiosk_visits_whatever_now_and_never_two_readings_at_one_instant() -> None:
    # any 14 days hold both visits (one may have begun a minute ago and have no readings yet)
    for hours in range(0, 14 * 24, 5):
        now = NOW + timedelta(hours=hours, minutes=7)
        for i in range(6):
            visits = kiosk_history(i, now=now, seed=3)
            assert len(visits) == 2, (now, i)
            assert all(now - timedelta(days=14) < v.start <= now for v in visits)
    # the same visit, the same readings, whatever now (ids are content-derived)
    a, b = (kiosk_history(4, now=n) for n in (NOW, NOW + timedelta(days=5)))
    shared = {v.number for v in a} & {v.number for v in b}
    assert shared
    assert [v for v in a if v.number in shared] == [v for v in b if v.number in shared]
    # one shared station: a device's record keys are unique across the patients, and up to
    # 135 patients no two visits overlap
    keys: Counter[tuple[str, str, str]] = Counter()
    spans: list[tuple[datetime, datetime]] = []
    for i in range(300):
        for v in kiosk_history(i, now=NOW):
            for device, obs in v.readings.items():
                keys.update((device, o.record_key, o.measure) for o in obs)
            if i < 135:
                times = [o.effective_time for o in v.observations]
                spans.append((v.start, max(times)))
    assert max(keys.values()) == 1
    spans.sort()
    assert all(a[1] < b[0] for a, b in itertools.pairwise(spans))


def test_kiosk_readings_through_the_ingest_raise_no_alert(sqlite_url: str) -> None:
    """Every profile's kiosk visits (6 patients), stored by the real ingest and its rules."""
    plan = history_plan(patients=6, now=NOW)
    storage = open_storage(sqlite_url)
    try:
        service = IngestService(storage)
        arrived = NOW + timedelta(minutes=1)
        msgs = plan.messages[KIOSK_SITE]
        result = service.ingest_batch([RawMessage(m.topic, m.payload, arrived) for m in msgs])
        assert (result.observations, result.dead_letters) == (plan.stats.kiosk, 0)
        stored_obs = [
            o
            for i in range(6)
            for o in service.list_observations(subject=f"demo-patient-{i + 1:04d}", limit=1000)
        ]
        assert len(stored_obs) == plan.stats.kiosk == 6 * 2 * 15
        assert {(o.site, o.subject_kind) for o in stored_obs} == {(KIOSK_SITE, "patient")}
        assert {o.device_id for o in stored_obs} == KIOSK_DEVICE_IDS
        assert {o.device_transport for o in stored_obs} == {"ble", "serial"}
        febrile = [
            o.value for o in stored_obs if o.measure == "body.temperature" and (o.value or 0) >= 38
        ]
        assert len(febrile) == 1
        assert service.list_alerts(limit=100) == []
    finally:
        storage.close()


@pytest.mark.parametrize("behaviour", ["misses", "late", "mixed", "on_time"])
def test_every_dose_has_its_due_dispensed_and_one_outcome(behaviour: str) -> None:
    events = dose_history(1, days=DAYS, now=NOW, behaviour=behaviour)  # type: ignore[arg-type]
    by_dose: dict[str | None, list[EventKind]] = {}
    for e in events:
        by_dose.setdefault(e.dose_id, []).append(e.kind)
        left = e.details["doses_left"]
        assert isinstance(left, int)
        assert left >= 0
    assert len(by_dose) == 42
    outcomes = Counter(kinds[2] for kinds in by_dose.values())
    for kinds in by_dose.values():
        assert kinds[:2] == [EventKind.DOSE_DUE, EventKind.DOSE_DISPENSED]
        assert len(kinds) == 3
    if behaviour != "on_time":
        assert set(outcomes) == {
            EventKind.DOSE_TAKEN,
            EventKind.DOSE_TAKEN_LATE,
            EventKind.DOSE_MISSED,
        }
    local = {
        e.scheduled_time.astimezone(HEL).time().isoformat("minutes")
        for e in events
        if e.scheduled_time
    }
    assert local == {"08:00", "14:00", "20:00"}  # also across the end of summer time


def readings(m: OutboundMessage) -> tuple[WireObservation, ...]:
    """The readings of an observation message, or of every part of a kiosk visit."""
    if m.topic.endswith("/_kiosk/visit"):
        return tuple(w for p in decode_visit(m.topic, m.payload).parts for w in p.observations)
    return decode_observations(m.topic, m.payload).observations


def test_nothing_after_now_and_the_same_readings_whatever_now() -> None:
    early = NOW - timedelta(hours=14)  # 07:30: the morning's PEF and BP may be under way
    a = history_plan(patients=6, now=early)
    b = history_plan(patients=6, now=NOW)
    for plan, now in ((a, early), (b, NOW)):
        for msgs in plan.messages.values():
            for m in msgs:
                items = (
                    [w.event.event_time for w in decode_events(m.topic, m.payload).events]
                    if m.topic.endswith("/event")
                    else [w.observation.effective_time for w in readings(m)]
                )
                assert max(items) <= now
    # a whole past day is the same message (same msg_id) in both runs
    ids_a = {m.msg_id for msgs in a.messages.values() for m in msgs}
    ids_b = {m.msg_id for msgs in b.messages.values() for m in msgs}
    assert len(ids_a & ids_b) >= len(ids_a) - 4 * 6  # today's messages differ, and the 14th day

    # and every reading of the earlier run is in the later one with the same id and content
    def contents(plan: object) -> dict[str, object]:
        out: dict[str, object] = {}
        for msgs in plan.messages.values():  # type: ignore[attr-defined]
            for m in msgs:
                if not m.topic.endswith("/event"):
                    for w in readings(m):
                        out[w.obs_id] = w.observation
        return out

    ca, cb = contents(a), contents(b)
    shared = set(ca) & set(cb)
    assert len(shared) > 0.9 * len(ca)
    assert all(ca[k] == cb[k] for k in shared)


def test_the_plan_is_deterministic_and_counts_what_it_holds() -> None:
    a = history_plan(patients=3, now=NOW, seed=7)
    b = history_plan(patients=3, now=NOW, seed=7)
    assert a == b
    assert history_plan(patients=3, now=NOW, seed=8) != a
    s = a.stats
    assert s.messages == sum(len(v) for v in a.messages.values())
    assert s.observations == s.cgm_readings + s.pef_blows + 3 * s.bp_readings + s.kiosk
    assert s.events == s.dose_events
    assert (s.kiosk_visits, s.kiosk) == (6, 6 * 15)
    assert (s.visit_messages, s.visit_parts) == (6, 6 * len(KIOSK_DEVICE_IDS))
    assert set(a.messages) == {"home-0001", "home-0002", "home-0003", "kiosk-0001"}
    devices = {m.topic.split("/")[3] for msgs in a.messages.values() for m in msgs}
    assert devices == {
        "ble-cgm-history",
        "pef-board-history",
        "ble-bp-history",
        "dispenser-history",
        "_kiosk",  # the kiosk sends each visit whole
    }
    # one message per visit, each the patient's, every device's readings inside
    kiosk = a.messages["kiosk-0001"]
    assert {m.topic for m in kiosk} == {"remon/v1/kiosk-0001/_kiosk/visit"}
    visits = [decode_visit(m.topic, m.payload) for m in kiosk]
    assert len(visits) == s.kiosk_visits
    assert {p.device_id for v in visits for p in v.parts} == set(KIOSK_DEVICE_IDS)
    assert {v.subject.ref for v in visits} == {f"demo-patient-{i + 1:04d}" for i in range(3)}
    assert all(len(v.answers) == 3 for v in visits)
    assert not any(
        m.topic.split("/")[3] in KIOSK_DEVICE_IDS
        for site, msgs in a.messages.items()
        if site != "kiosk-0001"
        for m in msgs
    )
    with pytest.raises(HistoryError, match="aware"):
        history_plan(patients=1, now=datetime(2025, 10, 30, 21, 30))


# ------------------------------------------------------------------------------- end to end


@dataclass
class Ingest:
    storage: Storage
    service: IngestService
    broker: MosquittoProcess
    consumer: Consumer

    def total(self, name: str) -> int:
        return self.consumer.stats.totals.get(name, 0)


@pytest.fixture
def ingest(sqlite_url: str, fresh_mosquitto: MosquittoProcess) -> Iterator[Ingest]:
    storage = open_storage(sqlite_url)
    service = IngestService(storage)
    consumer = Consumer(
        service,
        ConsumerConfig(
            url=fresh_mosquitto.url, client_id=f"hist-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        ),
    )
    consumer.start()
    try:
        yield Ingest(storage, service, fresh_mosquitto, consumer)
    finally:
        consumer.stop()
        storage.close()


def demo_options(tmp_path: Path) -> DemoOptions:
    return DemoOptions(
        data_dir=tmp_path,
        duration=None,
        broker=None,
        database=None,
        patients=3,
        interval=1.0,
        host="127.0.0.1",
        port=0,
        keep=False,
    )


def stored(service: IngestService, subject: str, measure: str) -> list[ObservationRecord]:
    return service.list_observations(subject=subject, measure=measure, limit=100_000)


def test_three_patients_history_through_mosquitto_into_the_ingest(
    ingest: Ingest, tmp_path: Path
) -> None:
    service = ingest.service
    seed_directory(ingest.storage, demo_options(tmp_path))
    assert seed_personal_bests(ingest.storage, patients=3, now=NOW) == 1

    stats = publish_history(
        broker_url=ingest.broker.url, protocol="auto", data_dir=tmp_path, patients=3, now=NOW
    )
    assert stats.seconds < 10
    assert stats.queued == stats.messages
    wait_until(
        lambda: (
            service.stats().observations >= stats.observations
            and service.stats().events >= stats.events
        ),
        120,
        "the history stored",
    )
    counts = service.stats()
    assert (counts.observations, counts.events) == (stats.observations, stats.events)
    assert counts.dead_letters == 0

    # CGM: 14 days and more for patient 1, the consensus metrics and an AGP computable
    cgm = stored(service, "demo-patient-0001", "glucose.cgm")
    assert len(cgm) == stats.cgm_readings
    assert {(o.device_id, o.device_transport, o.site) for o in cgm} == {
        ("ble-cgm-history", "ble", "home-0001")
    }
    utc_s = np.array([o.effective_time.timestamp() for o in cgm])
    values = np.array([o.value for o in cgm], dtype=np.float64)
    m = cgm_metrics(utc_s, values, unit="mmol/L")
    assert m.days >= 14
    assert m.sufficient, m.notes
    wall_s = np.array(
        [o.effective_time.astimezone(HEL).replace(tzinfo=None).timestamp() for o in cgm]
    )
    agp = agp_profile(wall_s, values, unit="mmol/L")
    assert np.all(agp.counts > 0)
    assert np.all(np.isfinite(agp.values))

    # PEF: the stored blows make a 14-day diary meeting the diurnal criterion
    pef = stored(service, "demo-patient-0001", "pef")
    assert len(pef) == stats.pef_blows
    r = blows_from_readings(
        [
            PefBlowReading(
                at=o.effective_time,
                value=o.value,
                obs_id=o.obs_id,
                comparator=o.comparator,
                quality=frozenset(o.quality),
            )
            for o in pef
        ]
    )
    report = analyse_diary(r.blows, personal_best_l_min=500.0)
    assert (report.first_date, report.last_date) == (DAYS[0], DAYS[-1])
    assert report.days_with_data == 14
    assert report.diurnal.met
    assert all(u.reason.startswith("flagged early-stop") for u in r.unclassified)

    # home BP: 7 local days, 2 + 2 readings a day, for every patient
    for i, above in ((0, False), (1, False), (2, True)):
        ref = f"demo-patient-{i + 1:04d}"
        sys_ = {
            o.record_key: o for o in stored(service, ref, "bp.systolic") if o.site != KIOSK_SITE
        }
        dia = {
            o.record_key: o for o in stored(service, ref, "bp.diastolic") if o.site != KIOSK_SITE
        }
        readings = [
            BpReading(
                time=o.effective_time,
                systolic=float(o.value or 0),
                diastolic=float(dia[k].value or 0),
            )
            for k, o in sys_.items()
        ]
        s = home_bp_summary(readings, tz=HEL)
        assert len({t.time.astimezone(HEL).date() for t in readings}) == 7
        assert s.readings_total == 28
        assert s.at_or_above_threshold is above

    # doses of the dispenser client (patient 2, "misses"): every outcome present
    events = service.list_events(subject="demo-patient-0002", limit=1000)
    kinds = Counter(e.kind for e in events)
    assert kinds["dose_due"] == kinds["dose_dispensed"] == 42
    assert kinds["dose_taken"] > 0
    assert kinds["dose_taken_late"] > 0
    assert kinds["dose_missed"] > 0
    assert kinds["dose_taken"] + kinds["dose_taken_late"] + kinds["dose_missed"] == 42
    alerts = service.list_alerts(state="open", limit=100)
    assert "dose-missed" in {a.condition for a in alerts}

    # kiosk visits: stored with the station's site, bound to the patient, raising no alert
    kiosk = [
        o
        for i in range(3)
        for o in service.list_observations(subject=f"demo-patient-{i + 1:04d}", limit=100_000)
        if o.device_id in KIOSK_DEVICE_IDS
    ]
    assert len(kiosk) == stats.kiosk == 3 * 2 * 15
    assert {(o.site, o.subject_kind) for o in kiosk} == {("kiosk-0001", "patient")}
    assert {o.subject_ref for o in kiosk} == {f"demo-patient-{i + 1:04d}" for i in range(3)}
    assert all("derived" in o.quality for o in kiosk if o.measure == "bmi")
    kiosk_ids = {o.obs_id for o in kiosk}
    every_alert = service.list_alerts(limit=1000)
    alert_obs = {a.first_obs_id for a in every_alert} | {a.last_obs_id for a in every_alert}
    assert not kiosk_ids & alert_obs
    assert not {a.measure for a in every_alert} & {
        "spo2",
        "pulse.oximeter",
        "body.temperature",
        "body.weight",
        "body.height",
        "bmi",
    }
    assert not {a.condition for a in every_alert} & {
        "bp-systolic-grade3",
        "bp-diastolic-grade3",
        "bp-systolic-low",
        "pulse-low",
        "pulse-high",
    }

    # again: nothing new is stored, the broker's copies are dropped as duplicates
    again = publish_history(
        broker_url=ingest.broker.url, protocol="auto", data_dir=tmp_path, patients=3, now=NOW
    )
    assert again.messages == stats.messages
    wait_until(
        lambda: (
            ingest.total("duplicate_messages") >= stats.messages - stats.event_messages
            and ingest.total("events_duplicate") >= stats.events
        ),
        60,
        "the second run's messages recognised as duplicates",
    )
    again_counts = service.stats()  # (sites_online follows the relays' statuses)
    assert (again_counts.messages, again_counts.observations, again_counts.events) == (
        counts.messages,
        counts.observations,
        counts.events,
    )
    # an hour later: only the new hour's CGM readings are new; the rest are recognised
    later = publish_history(
        broker_url=ingest.broker.url,
        protocol="auto",
        data_dir=tmp_path,
        patients=3,
        now=NOW + timedelta(hours=1),
    )
    wait_until(
        lambda: service.stats().observations >= counts.observations + 12,
        60,
        "the next hour's CGM readings",
    )
    obs_messages = sum(x.messages - x.event_messages for x in (stats, again, later))
    wait_until(
        lambda: (
            ingest.total("duplicate_messages") + ingest.total("messages") >= obs_messages
            and ingest.total("events_duplicate") >= 2 * stats.events
        ),
        60,
        "every message of the third run taken",
    )
    final = service.stats()
    assert later.cgm_readings == stats.cgm_readings + 12
    assert final.observations == counts.observations + 12
    assert final.events == counts.events
    assert final.dead_letters == 0


def test_the_demos_history_step_as_of_now_leaves_only_the_alerts_the_history_explains(
    ingest: Ingest, tmp_path: Path
) -> None:
    """``load_history`` as ``remon demo`` runs it, at the real time: the diaries are set after
    the blows are stored, so no diary window is "missed"; the CGM is fresh, so not stale."""
    storage, service = ingest.storage, ingest.service
    seed_directory(storage, demo_options(tmp_path))
    now = datetime.now(UTC) - timedelta(seconds=1)
    stats = load_history(
        storage=storage,
        consumer=ingest.consumer,
        broker_url=ingest.broker.url,
        protocol="auto",
        data_dir=tmp_path,
        patients=3,
        now=now,
    )
    counts = service.stats()
    assert (counts.observations, counts.events) == (stats.observations, stats.events)
    diary = storage.get_pef_diary("demo-patient-0001")
    assert diary is not None
    assert diary.last_day == now.astimezone(HEL).date()
    assert (diary.last_day - diary.first_day).days == 13
    service.housekeeping()  # the consumer's time-driven rules, now
    conditions = {a.condition for a in service.list_alerts(limit=100)}
    assert conditions <= {"pef-zone-yellow", "dose-missed", "dose-taken-late"}, conditions
    assert "dose-missed" in conditions
    # the settings again change nothing
    assert seed_history_settings(storage, patients=3, now=now) == 1
    assert {a.condition for a in service.list_alerts(limit=100)} == conditions
