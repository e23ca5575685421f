"""Ingest service against real SQLite and PostgreSQL: dedupe, dead letters, alerts, thresholds."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud_ingest.rules import (
    DEFAULTS_BY_CONDITION,
    AlertState,
    Evidence,
    Reading,
    ThresholdOverride,
    evaluate,
)
from cloud_ingest.rules.engine import needs_evaluation
from cloud_ingest.service import (
    AlertNotFoundError,
    IngestResult,
    IngestService,
    InvalidTransitionError,
    RawMessage,
    RuleError,
    StorageError,
    UnknownConditionError,
)
from cloud_ingest.storage import Storage, open_storage
from device_profiles.observation import (
    AbsentReason,
    Comparator,
    DeviceIdentity,
    Observation,
    Provenance,
    QualityFlag,
)
from gateway.wire import AgentStatus, Subject, encode_observations, encode_status

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
RECEIVED = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
METER = DeviceIdentity(manufacturer="Acme", model="GlucoOne", serial="SN1", transport="sim")
CGM = DeviceIdentity(manufacturer="Acme", model="Flow", serial="CG7", transport="sim")
UNITS = {
    "glucose.capillary": "mmol/L",
    "glucose.cgm": "mmol/L",
    "spo2": "%",
    "bp.systolic": "mm[Hg]",
    "body.weight": "kg",
}


def ob(
    seq: int,
    value: float | None,
    *,
    measure: str = "glucose.capillary",
    comparator: Comparator | None = None,
    absent: AbsentReason | None = None,
    simulated: bool = False,
) -> Observation:
    return Observation(
        measure=measure,
        unit=UNITS[measure],
        effective_time=T0 + timedelta(minutes=seq),
        record_key=f"seq:{seq}",
        provenance=Provenance(source="sim:test"),
        value=value,
        comparator=comparator,
        absent_reason=absent,
        quality=frozenset({QualityFlag.SIMULATED}) if simulated else frozenset(),
    )


def msgs(
    observations: Sequence[Observation],
    *,
    subject: str = "p1",
    site: str = "home-1",
    device_id: str = "meter-1",
    device: DeviceIdentity = METER,
    created_minutes: int = 0,
) -> list[RawMessage]:
    out = encode_observations(
        site=site,
        device_id=device_id,
        device=device,
        subject=Subject(kind="patient", ref=subject),
        observations=observations,
        created_at=T0 + timedelta(minutes=created_minutes),
    )
    return [RawMessage(topic=m.topic, payload=m.payload, received_at=RECEIVED) for m in out]


@pytest.fixture
def storage(db_url: str) -> Iterator[Storage]:
    s = open_storage(db_url)
    yield s
    s.close()


@pytest.fixture
def svc(storage: Storage) -> IngestService:
    return IngestService(storage, clock=lambda: RECEIVED)


def test_valid_batch_is_stored(svc: IngestService) -> None:
    batch = msgs([ob(1, 5.5), ob(2, 6.1)]) + msgs(
        [ob(3, 98, measure="spo2")], device_id="ox-1", device=CGM
    )
    r = svc.ingest_batch(batch)
    assert r == IngestResult(
        messages=2,
        duplicate_messages=0,
        observations=3,
        duplicate_observations=0,
        dead_letters=0,
        alerts_raised=0,
        alerts_updated=0,
    )
    rows = svc.list_observations(subject="p1")
    assert len(rows) == 3
    assert [o.effective_time for o in rows] == sorted(
        (o.effective_time for o in rows), reverse=True
    )
    o = next(x for x in rows if x.record_key == "seq:1")
    assert o.value == 5.5
    assert o.unit == "mmol/L"
    assert o.effective_time == T0 + timedelta(minutes=1)
    assert o.effective_time.tzinfo is not None
    assert o.received_at == RECEIVED
    assert (o.device_manufacturer, o.device_model, o.device_serial) == ("Acme", "GlucoOne", "SN1")
    assert o.provenance == {"source": "sim:test"}
    assert o.quality == []
    s = svc.stats()
    assert (s.messages, s.observations, s.dead_letters) == (2, 3, 0)


def test_same_message_twice_is_stored_once(svc: IngestService) -> None:
    batch = msgs([ob(1, 5.5), ob(2, 2.5)])
    first = svc.ingest_batch(batch + batch)  # twice in one batch
    assert (first.messages, first.duplicate_messages, first.observations) == (1, 1, 2)
    assert first.alerts_raised == 1
    again = svc.ingest_batch(batch)  # redelivery
    assert again == IngestResult(
        messages=0,
        duplicate_messages=1,
        observations=0,
        duplicate_observations=0,
        dead_letters=0,
        alerts_raised=0,
        alerts_updated=0,
    )
    s = svc.stats()
    assert (s.messages, s.observations, s.alerts_total) == (1, 2, 1)
    assert svc.list_alerts()[0].trigger_count == 1  # redelivery is not new evidence


def test_same_reading_in_two_envelopes_is_stored_once(svc: IngestService) -> None:
    a = msgs([ob(1, 2.5), ob(2, 5.0)])
    b = msgs([ob(2, 5.0), ob(3, 5.2)])  # a re-read overlapping the first: different msg_id
    assert a[0].payload != b[0].payload
    r1 = svc.ingest_batch(a)
    r2 = svc.ingest_batch(b)
    assert (r1.observations, r2.observations, r2.duplicate_observations) == (2, 1, 1)
    assert r2.messages == 1
    # and in one batch
    c = msgs([ob(4, 5.0), ob(5, 5.1)])
    d = msgs([ob(5, 5.1)])
    r3 = svc.ingest_batch(c + d)
    assert (r3.messages, r3.observations, r3.duplicate_observations) == (2, 2, 1)
    assert svc.stats().observations == 5
    assert svc.list_alerts()[0].trigger_count == 1


def _valid_doc() -> dict[str, object]:
    doc: dict[str, object] = json.loads(msgs([ob(1, 5.0)])[0].payload)
    return doc


def _bad(doc: dict[str, object]) -> bytes:
    return json.dumps(doc).encode()


BAD_PAYLOADS = [
    (b"not json at all", "not-json", ""),
    (b"\xff\xfe{}", "not-utf8", ""),
    (b"[1, 2]", "wrong-type", ""),
    (b'{"schema": "remon.obs/99"}', "unknown-schema", "schema"),
    (b'{"schema": "remon.obs/1", "value": NaN}', "not-json", ""),
]


def test_malformed_payloads_are_dead_lettered_and_the_rest_stored(svc: IngestService) -> None:
    topic = msgs([ob(1, 5.0)])[0].topic
    doc = _valid_doc()
    no_field = dict(doc)
    del no_field["created_at"]
    id_mismatch = dict(doc, msg_id="0" * 32)
    obs = [dict(o) for o in doc["observations"]]  # type: ignore[attr-defined]
    obs[0]["value"] = "high"
    wrong_type = dict(doc, observations=obs)
    cases = [
        *BAD_PAYLOADS,
        (_bad(no_field), "missing-field", "created_at"),
        (_bad(id_mismatch), "id-mismatch", "msg_id"),
        (_bad(wrong_type), "wrong-type", "observations[0].value"),
    ]
    batch = [RawMessage(topic=topic, payload=p, received_at=RECEIVED) for p, _, _ in cases]
    batch.append(RawMessage(topic="remon/v1/BAD TOPIC/x/obs", payload=b"{}", received_at=RECEIVED))
    batch += msgs([ob(7, 6.0)])
    r = svc.ingest_batch(batch)
    assert r.dead_letters == len(cases) + 1
    assert (r.messages, r.observations) == (1, 1)
    dead = svc.list_dead_letters(limit=100)
    got = {(d.payload, d.code, d.path) for d in dead}
    assert {(p, c, path) for p, c, path in cases} <= got
    assert ("bad-topic", "topic") in {(d.code, d.path) for d in dead}
    assert all(d.detail and d.received_at == RECEIVED for d in dead)
    assert svc.stats().dead_letters == len(cases) + 1


def test_alert_raised_deduplicated_and_cleared(svc: IngestService) -> None:
    r = svc.ingest_batch(msgs([ob(1, 2.7, simulated=True)]))
    assert (r.alerts_raised, r.alerts_updated) == (1, 0)
    r = svc.ingest_batch(msgs([ob(2, 2.6)]))
    assert (r.alerts_raised, r.alerts_updated) == (0, 1)
    [a] = svc.list_alerts(state="open")
    assert (a.condition, a.priority, a.trigger_count, a.last_value) == (
        "glucose-low-l2",
        "high",
        2,
        2.6,
    )
    assert a.simulated
    assert "Simulated data" in a.explanation
    assert a.cleared_at is None
    r = svc.ingest_batch(msgs([ob(3, 3.1)]))  # inside the hysteresis: not cleared
    assert svc.get_alert(a.id).alert.cleared_at is None
    r = svc.ingest_batch(msgs([ob(4, 5.5)]))
    detail = svc.get_alert(a.id)
    assert detail.alert.cleared_at == T0 + timedelta(minutes=4)
    assert detail.alert.state == "open"  # stays for a human to resolve
    # 3.1 at minute 3 raised a level 1 alert; 5.5 clears that one too
    assert [e.action for e in detail.events] == ["raised", "updated", "cleared"]
    assert all(e.actor == "system:rules" for e in detail.events)
    assert svc.stats().open_alerts == 2


def test_lo_reading_raises_and_absent_does_not(svc: IngestService) -> None:
    svc.ingest_batch(msgs([ob(1, None, absent=AbsentReason.ERROR), ob(2, 1.1, comparator="<")]))
    [a] = svc.list_alerts(kind="threshold")
    assert a.first_comparator == "<"
    # the measurement error is no glucose value, but it is a device fault for the care team
    [fault] = svc.list_alerts(kind="reading")
    assert (fault.condition, fault.first_value) == ("device-sensor-fault", None)
    assert "LO reading" in a.explanation
    stored = svc.list_observations(subject="p1")
    assert {o.absent_reason for o in stored} == {"error", None}


def test_ack_and_resolve_life_cycle(svc: IngestService) -> None:
    svc.ingest_batch(msgs([ob(1, 88, measure="spo2")], device_id="ox-1", device=CGM))
    [a] = svc.list_alerts()
    acked = svc.acknowledge(a.id, actor="nurse.a", note="calling")
    assert (acked.state, acked.acknowledged_by, acked.acknowledged_at) == (
        "acknowledged",
        "nurse.a",
        RECEIVED,
    )
    with pytest.raises(InvalidTransitionError):
        svc.acknowledge(a.id, actor="nurse.b")
    # an acknowledged alert still deduplicates new evidence
    r = svc.ingest_batch(msgs([ob(2, 87, measure="spo2")], device_id="ox-1", device=CGM))
    assert (r.alerts_raised, r.alerts_updated) == (0, 1)
    done = svc.resolve(a.id, actor="nurse.a", note="ok after call")
    assert (done.state, done.resolved_by, done.resolved_note) == (
        "resolved",
        "nurse.a",
        "ok after call",
    )
    with pytest.raises(InvalidTransitionError):
        svc.resolve(a.id, actor="nurse.a")
    with pytest.raises(AlertNotFoundError):
        svc.resolve(99999, actor="nurse.a")
    events = svc.get_alert(a.id).events
    assert [(e.action, e.actor) for e in events] == [
        ("raised", "system:rules"),
        ("acknowledged", "nurse.a"),
        ("updated", "system:rules"),
        ("resolved", "nurse.a"),
    ]
    # after resolution new evidence raises a new alert
    r = svc.ingest_batch(msgs([ob(3, 86, measure="spo2")], device_id="ox-1", device=CGM))
    assert r.alerts_raised == 1
    assert svc.stats().alerts_total == 2


def test_threshold_override_per_patient(svc: IngestService) -> None:
    view = svc.get_threshold("p1", "glucose-low-l1")
    assert (view.value, view.overridden) == (3.9, False)
    view = svc.put_threshold("p1", "glucose-low-l1", value=4.5, unit="mmol/L", actor="dr.k")
    assert (view.value, view.overridden, view.set_by) == (4.5, True, "dr.k")
    assert svc.get_threshold("p1", "glucose-low-l1").value == 4.5
    svc.put_threshold("p1", "glucose-low-l1", value=4.4, unit="mmol/L", actor="dr.k")
    assert svc.get_threshold("p1", "glucose-low-l1").value == 4.4
    with pytest.raises(RuleError):
        svc.put_threshold("p1", "glucose-low-l1", value=80, unit="mg/dL", actor="dr.k")
    with pytest.raises(UnknownConditionError):
        svc.get_threshold("p1", "nope")
    svc.ingest_batch(msgs([ob(1, 4.2)]) + msgs([ob(2, 4.2)], subject="p2"))
    [a] = svc.list_alerts()
    assert (a.subject_ref, a.threshold_value) == ("p1", 4.4)
    assert "patient-specific value set by dr.k" in a.threshold_source
    assert svc.reset_threshold("p1", "glucose-low-l1").value == 3.9


def test_alert_filters(svc: IngestService) -> None:
    svc.ingest_batch(
        msgs([ob(1, 2.5)])
        + msgs([ob(2, 92, measure="spo2")], subject="p2", device_id="ox-1", device=CGM)
    )
    assert {a.subject_ref for a in svc.list_alerts(subject="p2")} == {"p2"}
    assert [a.priority for a in svc.list_alerts()] == ["high", "medium"]
    assert [a.condition for a in svc.list_alerts(priority="medium")] == ["spo2-low-news2-2"]
    assert [a.condition for a in svc.list_alerts(condition="glucose-low-l2")] == ["glucose-low-l2"]
    assert len(svc.list_alerts(limit=1, offset=1)) == 1
    assert svc.list_alerts(state="resolved") == []


def test_observation_filters(svc: IngestService) -> None:
    svc.ingest_batch(
        msgs([ob(i, 5.0 + i / 10) for i in range(10)])
        + msgs([ob(1, 97, measure="spo2")], device_id="ox-1", device=CGM)
    )
    since = T0 + timedelta(minutes=3)
    until = T0 + timedelta(minutes=6)
    got = svc.list_observations(subject="p1", since=since, until=until, measure="glucose.capillary")
    assert [o.record_key for o in got] == ["seq:5", "seq:4", "seq:3"]
    assert len(svc.list_observations(measure="spo2")) == 1
    assert len(svc.list_observations(limit=4)) == 4
    assert svc.list_observations(subject="nobody") == []


def test_status_messages_recorded(svc: IngestService) -> None:
    online = encode_status(AgentStatus(site="home-1", state="online", at=T0, agent_version="1.0"))
    offline = encode_status(
        AgentStatus(site="home-1", state="offline", at=T0 - timedelta(hours=1), agent_version="1.0")
    )
    r = svc.ingest_batch(
        [RawMessage(topic=online.topic, payload=online.payload, received_at=RECEIVED)]
    )
    assert (r.statuses, r.dead_letters) == (1, 0)
    assert svc.stats().sites_online == 1
    # an older report does not overwrite a newer one
    svc.ingest_batch(
        [RawMessage(topic=offline.topic, payload=offline.payload, received_at=RECEIVED)]
    )
    [site] = svc.list_sites()
    assert (site.site, site.state, site.at) == ("home-1", "online", T0)
    svc.record_status(
        AgentStatus(site="home-1", state="offline", at=T0 + timedelta(hours=1), agent_version="1.0")
    )
    assert svc.stats().sites_online == 0
    bad = svc.ingest_batch([RawMessage(topic=online.topic, payload=b"{", received_at=RECEIVED)])
    assert bad.dead_letters == 1


def test_the_hubs_outbox_depth_is_kept_and_its_last_will_leaves_it_unknown(
    svc: IngestService,
) -> None:
    def status(state: str, minutes: int, pending: int | None) -> RawMessage:
        m = encode_status(
            AgentStatus(
                site="home-1",
                state=state,  # type: ignore[arg-type]
                at=T0 + timedelta(minutes=minutes) if state == "online" else None,
                agent_version="1.0",
                outbox_pending=pending,
            )
        )
        return RawMessage(
            topic=m.topic, payload=m.payload, received_at=T0 + timedelta(minutes=minutes)
        )

    svc.ingest_batch([status("online", 0, 120)])
    svc.ingest_batch([status("online", 1, 7)])
    [site] = svc.list_sites()
    assert (site.state, site.outbox_pending) == ("online", 7)
    svc.ingest_batch([status("offline", 2, None)])  # the last will: depth unknown
    [site] = svc.list_sites()
    assert (site.state, site.outbox_pending) == ("offline", None)


def test_storage_failure_raises(db_url: str) -> None:
    storage = open_storage(db_url)
    svc = IngestService(storage)
    storage.engine.dispose()
    with storage.write() as tx:  # break the schema under the service's feet
        tx.conn.exec_driver_sql("DROP TABLE alert_events")
        tx.conn.exec_driver_sql("DROP TABLE alerts")
    with pytest.raises(StorageError):
        svc.ingest_batch(msgs([ob(1, 2.0)]))
    # nothing of the failed batch was committed
    assert svc.list_observations() == []
    storage.close()


def test_concurrent_workers_store_exactly_once(db_url: str) -> None:
    """Several workers ingest overlapping batches at once: every reading once, one alert."""
    storages = [open_storage(db_url) for _ in range(4)]
    services = [IngestService(s) for s in storages]
    batches = [msgs([ob(i, 2.5 + i / 1000) for i in range(k, k + 40)]) for k in (0, 20, 10, 30)]
    results: list[IngestResult] = []
    errors: list[BaseException] = []

    def work(svc: IngestService, batch: list[RawMessage]) -> None:
        try:
            results.append(svc.ingest_batch(batch))
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=work, args=(s, b)) for s, b in zip(services, batches, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sum(r.observations for r in results) == 70
    svc = services[0]
    assert svc.stats().observations == 70
    alerts = svc.list_alerts()
    assert len(alerts) == 1
    assert alerts[0].trigger_count == 70
    for s in storages:
        s.close()


# --------------------------------------------------------------------------------------------
# the rules prefilter the service applies: evaluating only the selected readings must give
# exactly the actions evaluating all of them gives


_PF_T0 = datetime(2026, 3, 1, tzinfo=UTC)
_PF_MEASURES = {
    "glucose.cgm": ("mmol/L", [2.8, 2.9, 3.05, 3.1, 3.15, 3.5, 3.9, 4.0, 4.1, 4.2, 6.0, 14.0]),
    "glucose.capillary": ("mmol/L", [1.1, 2.9, 3.0, 3.5, 4.1, 13.9, 14.5, 22.2]),
    "spo2": ("%", [88.0, 91.0, 92.0, 93.0, 94.0, 97.0]),
    "body.weight": ("kg", [70.0]),
}


@st.composite
def _pf_reading(draw: st.DrawFn, i: int) -> Reading:
    measure = draw(st.sampled_from(sorted(_PF_MEASURES)))
    unit, values = _PF_MEASURES[measure]
    return Reading(
        obs_id=f"o{i:04d}",
        subject_ref=draw(st.sampled_from(["p1", "p2"])),
        measure=measure,
        unit=draw(st.sampled_from([unit, unit, unit, "mg/dL"])),
        effective_time=_PF_T0 + timedelta(minutes=draw(st.integers(0, 12))),
        value=draw(st.sampled_from([*values, None])),
        comparator=draw(st.sampled_from([None, None, None, "<", ">", "<=", ">="])),
        absent_reason=draw(st.sampled_from([None, None, None, None, "error"])),
        quality=draw(st.sampled_from([frozenset(), frozenset({"simulated"})])),
    )


@st.composite
def _pf_alert(draw: st.DrawFn, key: tuple[str, str], i: int) -> AlertState:
    subject, condition = key
    default = DEFAULTS_BY_CONDITION[condition]
    ev = Evidence(
        obs_id=f"old{i}",
        value=default.value,
        comparator=None,
        time=_PF_T0 + timedelta(minutes=draw(st.integers(-2, 8))),
    )
    return AlertState(
        id=i + 1,
        subject_ref=subject,
        condition=condition,
        measure=sorted(default.measures)[0],
        priority=default.priority,
        rule=condition,
        threshold_value=draw(st.sampled_from([default.value, default.value + 1.0])),
        threshold_unit=default.unit,
        threshold_comparator=default.comparator,
        threshold_source=default.source,
        explanation="",
        first=ev,
        last=ev,
        trigger_count=1,
        simulated=False,
        cleared_at=draw(st.sampled_from([None, None, ev.time + timedelta(minutes=1)])),
        cleared_by_obs_id=None,
    )


@st.composite
def _pf_case(
    draw: st.DrawFn,
) -> tuple[list[Reading], list[AlertState], dict[tuple[str, str], ThresholdOverride]]:
    n = draw(st.integers(0, 25))
    readings = [draw(_pf_reading(i)) for i in range(n)]
    conditions = sorted(DEFAULTS_BY_CONDITION)
    keys = draw(
        st.lists(
            st.tuples(st.sampled_from(["p1", "p2"]), st.sampled_from(conditions)),
            unique=True,
            max_size=5,
        )
    )
    alerts = [draw(_pf_alert(k, i)) for i, k in enumerate(keys)]
    overrides = {}
    for subject, condition in draw(
        st.lists(
            st.tuples(st.sampled_from(["p1", "p2"]), st.sampled_from(conditions)),
            unique=True,
            max_size=3,
        )
    ):
        default = DEFAULTS_BY_CONDITION[condition]
        overrides[(subject, condition)] = ThresholdOverride(
            subject_ref=subject,
            condition=condition,
            value=default.value + draw(st.sampled_from([-1.0, -0.5, 0.5, 1.0])),
            unit=default.unit,
            set_by="dr",
            set_at=_PF_T0,
        )
    return readings, alerts, overrides


@given(_pf_case())
def test_rules_prefilter_keeps_every_reading_that_matters(
    case: tuple[list[Reading], list[AlertState], dict[tuple[str, str], ThresholdOverride]],
) -> None:
    readings, alerts, overrides = case
    now = datetime(2026, 3, 2, tzinfo=UTC)
    selected = needs_evaluation(
        [(r.subject_ref, r.obs_id, r) for r in readings], open_alerts=alerts, overrides=overrides
    )
    assert selected == sorted(set(selected))
    every = evaluate(readings, open_alerts=alerts, now=now, overrides=overrides)
    some = evaluate(
        [readings[i] for i in selected], open_alerts=alerts, now=now, overrides=overrides
    )
    assert some == every


def test_rules_prefilter_drops_quiet_readings() -> None:
    """Far from every threshold, no alert: nothing to evaluate; after a clear, quiet again."""
    quiet = [
        Reading(
            obs_id=f"q{i}",
            subject_ref="p1",
            measure="glucose.cgm",
            unit="mmol/L",
            effective_time=_PF_T0 + timedelta(minutes=i),
            value=6.0,
        )
        for i in range(10)
    ]
    assert needs_evaluation([(r.subject_ref, r.obs_id, r) for r in quiet], open_alerts=[]) == []
    low = Reading(
        obs_id="low",
        subject_ref="p1",
        measure="glucose.cgm",
        unit="mmol/L",
        effective_time=_PF_T0 + timedelta(minutes=3, seconds=30),
        value=2.8,
    )
    batch = [*quiet, low]
    selected = needs_evaluation([(r.subject_ref, r.obs_id, r) for r in batch], open_alerts=[])
    # the low reading and the first reading after it (which clears the alert it raises)
    assert [batch[i].obs_id for i in selected] == ["q4", "low"]


def test_a_reused_reading_id_with_other_facts_is_a_conflict_not_a_duplicate(
    svc: IngestService,
) -> None:
    # the meter's numbering restarted (battery change): seq:1 now names another reading
    first = svc.ingest_batch(msgs([ob(1, 5.5)]))
    assert first.observations == 1
    again = Observation(
        measure="glucose.capillary",
        unit="mmol/L",
        effective_time=T0 + timedelta(days=30),
        record_key="seq:1",
        provenance=Provenance(source="sim:test"),
        value=2.4,
    )
    same = svc.ingest_batch(msgs([ob(1, 5.5), ob(2, 6.0)]))  # a true redelivery + a new one
    assert (same.observations, same.duplicate_observations, same.dead_letters) == (1, 1, 0)
    r = svc.ingest_batch(msgs([again], created_minutes=5))
    assert r.observations == 0
    assert r.dead_letters == 1
    letters = svc.list_dead_letters()
    assert [d.code for d in letters] == ["id-conflict"]
    assert letters[0].path == "observations[0]"
    assert "5.5 at 2026-03-01T08:01:00+00:00" in letters[0].detail
    assert "2.4 at 2026-03-31T08:00:00+00:00" in letters[0].detail
    # the stored reading is untouched
    rows = svc.list_observations(subject="p1")
    assert sorted(o.value for o in rows if o.value is not None) == [5.5, 6.0]


def test_a_reading_read_again_with_another_measured_offset_is_a_duplicate(
    svc: IngestService,
) -> None:
    """Meters that send their whole memory each time: the corrected time jitters with the
    offset measured in each session; the device's own time and the value decide."""

    def reading(
        offset_s: float, device_time: str, value: float = 5.5, key: str = "10:00"
    ) -> Observation:
        return Observation(
            measure="glucose.capillary",
            unit="mmol/L",
            effective_time=T0 - timedelta(seconds=offset_s),
            record_key=f"ot2:ZNF00001Y@{key}",
            provenance=Provenance(source="sim:test"),
            value=value,
            device_time=device_time,
            clock_offset_s=offset_s,
        )

    assert svc.ingest_batch(msgs([reading(0.4, "2026-03-01T10:00:00")])).observations == 1
    # read again in a dump that also holds a new reading (so not the same message)
    again = svc.ingest_batch(
        msgs([reading(1.3, "2026-03-01T10:00:00"), reading(1.3, "2026-03-01T11:00:00", key="11")])
    )
    assert (again.observations, again.duplicate_observations, again.dead_letters) == (1, 1, 0)
    # the same key with another device time is another reading: a conflict, kept
    other = svc.ingest_batch(msgs([reading(0.4, "2026-03-01T10:05:00")]))
    assert (other.observations, other.dead_letters) == (0, 1)
    assert "device time 2026-03-01T10:00:00" in svc.list_dead_letters()[0].detail
    # and another value at the same device time too
    third = svc.ingest_batch(msgs([reading(0.4, "2026-03-01T10:00:00", 7.0)]))
    assert third.dead_letters == 1


def test_observations_by_site_prefix(svc: IngestService) -> None:
    """The kiosk view's filter: 'kiosk-' matches kiosk-0001 and kiosk-0002, not kiosks-1 or a
    home hub, and no other subject's readings."""
    for seq, site, subject in (
        (1, "kiosk-0001", "p1"),
        (2, "kiosks-1", "p1"),
        (3, "home-kiosk-1", "p1"),
        (4, "home-1", "p1"),
        (5, "kiosk-0002", "p1"),
        (6, "kiosk-0001", "p2"),
    ):
        svc.ingest_batch(msgs([ob(seq, 5.0 + seq)], site=site, subject=subject))
    got = svc.list_observations(subject="p1", site_prefix="kiosk-", limit=100)
    assert [(o.site, o.value) for o in got] == [("kiosk-0002", 10.0), ("kiosk-0001", 6.0)]
    assert len(svc.list_observations(subject="p1", limit=100)) == 5


def test_a_batch_keeps_the_firmware_of_the_devices_newest_data(svc: IngestService) -> None:
    """One batch, two messages from one meter: the newer names no firmware, the older names
    2.0; the binding keeps 2.0 (and an older firmware stored before stays behind)."""
    old = dataclasses.replace(METER, firmware="1.0")
    new = dataclasses.replace(METER, firmware="2.0")
    bare = dataclasses.replace(METER, firmware=None)
    svc.ingest_batch(msgs([ob(1, 5.0)], device=old))
    svc.ingest_batch(msgs([ob(5, 5.1)], device=new) + msgs([ob(6, 5.2)], device=bare))
    (binding,) = svc.storage.device_subjects(subject_ref="p1")
    assert binding.firmware == "2.0"


def test_a_chart_series_is_the_plain_values_oldest_first_the_newest_kept(
    svc: IngestService,
) -> None:
    """LO/HI bounds and absent values are no points of a curve; a limit keeps the newest."""
    svc.ingest_batch(
        msgs(
            [
                ob(1, 5.0),
                ob(2, 2.2, comparator="<"),  # a LO: the device's bound, not a value
                ob(3, None, absent=AbsentReason.ERROR),
                ob(4, 6.0),
                ob(5, 7.0),
            ]
        )
    )
    points = svc.series(subject="p1", measure="glucose.capillary", since=T0, limit=100)
    assert [(p.at, p.value, p.unit) for p in points] == [
        (T0 + timedelta(minutes=1), 5.0, "mmol/L"),
        (T0 + timedelta(minutes=4), 6.0, "mmol/L"),
        (T0 + timedelta(minutes=5), 7.0, "mmol/L"),
    ]
    newest = svc.series(subject="p1", measure="glucose.capillary", since=T0, limit=2)
    assert [p.value for p in newest] == [6.0, 7.0]
    assert svc.series(subject="p2", measure="glucose.capillary", since=T0, limit=100) == []
