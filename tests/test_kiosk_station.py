"""A kiosk station end to end: the visit state machine, the station's real outbox, the real
relay and Mosquitto, the real consumer and storage. Scripted visits, adversarial ones among them:
no reading may reach the cloud as the wrong patient's, a visit arrives once and is wiped."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cloud_ingest.consumer import Consumer, ConsumerConfig
from cloud_ingest.service import IngestService
from cloud_ingest.storage import Storage, open_storage
from device_profiles.observation import DeviceIdentity, Observation, Provenance, QualityFlag
from edge_agent.kiosk_session import KioskError, KioskState, KioskTimeouts
from edge_agent.kiosk_station import QUARANTINE_SOURCE, KioskStation
from gateway.outbox import Outbox
from gateway.relay import Relay, RelayConfig
from gateway.wire import OutboundMessage
from remon.brokers import MosquittoProcess
from tests.test_end_to_end import wait_until

SITE = "kiosk-0007"
CUFF = DeviceIdentity(manufacturer="Acme", model="Kiosk BP", serial="BP-7", transport="ble")
SCALE = DeviceIdentity(manufacturer="Acme", model="Scale", serial="SC-7", transport="serial")
DEVICES = {"bp": CUFF, "scale": SCALE}
DEADLINE_S = 30.0


@dataclass
class Clock:
    """The hub's clock, moved by the script (an hour behind real time, so nothing the cloud
    receives is in its future)."""

    now: datetime = field(default_factory=lambda: datetime.now(UTC) - timedelta(hours=1))

    def __call__(self) -> datetime:
        return self.now

    def step(self, **kw: float) -> datetime:
        self.now += timedelta(**kw)
        return self.now


class Cuff:
    """A BP cuff with a memory: every reading it ever took, replayed on each reconnect."""

    def __init__(self) -> None:
        self.memory: list[Observation] = []

    def measure(self, at: datetime, sys_: float, dia: float) -> list[Observation]:
        n = len(self.memory) + 1
        new = [
            _obs("bp.systolic", "mm[Hg]", sys_, at, f"bp:{n}"),
            _obs("bp.diastolic", "mm[Hg]", dia, at, f"bp:{n}"),
        ]
        self.memory += new
        return list(self.memory)  # the reconnect hands over the whole memory


def _obs(measure: str, unit: str, value: float, at: datetime, key: str) -> Observation:
    return Observation(
        measure=measure,
        unit=unit,
        value=value,
        effective_time=at,
        record_key=key,
        provenance=Provenance(source="test"),
        quality=frozenset({QualityFlag.SIMULATED}),
    )


@dataclass
class Rig:
    tmp: Path
    broker: MosquittoProcess
    storage: Storage
    service: IngestService
    clock: Clock
    outbox: Outbox
    station: KioskStation
    consumer: Consumer
    relays: list[Relay] = field(default_factory=list)

    def relay(self) -> Relay:
        cfg = RelayConfig(
            url=self.broker.url,
            client_id=f"kiosk-{os.getpid()}-{uuid.uuid4().hex[:8]}",
            reconnect_min_s=0.1,
            reconnect_max_s=0.5,
            poll_s=0.1,
        )
        r = Relay(self.outbox, cfg, site=SITE, agent_version="0.1.0")
        r.start()
        self.relays.append(r)
        return r

    def visits(self, patient: str) -> list[tuple[str, list[tuple[str, float | None]]]]:
        out = []
        for v in self.service.list_visits(subject=patient):
            readings = self.service.visit_observations(v)
            out.append((v.visit_ref, [(r.record_key, r.value) for r in readings]))
        return out

    def wait_sent(self) -> None:
        def wiped() -> bool:
            self.station.poll()
            return self.station.view().state is KioskState.IDLE

        wait_until(wiped, DEADLINE_S, "the visit to be confirmed and wiped")


def new_station(outbox: Outbox, clock: Clock) -> KioskStation:
    refs = iter(f"v-{i}" for i in range(1, 100))
    return KioskStation(
        site=SITE,
        devices=DEVICES,
        outbox=outbox,
        clock=clock,
        new_ref=lambda: next(refs),
        questions=("smoker",),
    )


@pytest.fixture
def rig(tmp_path: Path, fresh_mosquitto: MosquittoProcess) -> Iterator[Rig]:
    storage = open_storage(f"sqlite:///{tmp_path / 'cloud.db'}")
    service = IngestService(storage)
    consumer = Consumer(
        service,
        ConsumerConfig(url=fresh_mosquitto.url, client_id=f"c-{uuid.uuid4().hex[:8]}"),
    )
    consumer.start()
    clock = Clock()
    outbox = Outbox(tmp_path / "kiosk-outbox.db")
    station = new_station(outbox, clock)
    r = Rig(tmp_path, fresh_mosquitto, storage, service, clock, outbox, station, consumer)
    try:
        yield r
    finally:
        for relay in r.relays:
            relay.stop(timeout=5)
        r.outbox.close()
        consumer.stop()
        storage.close()


def one_visit(r: Rig, patient: str, cuff: Cuff, values: list[tuple[float, float]]) -> str:
    s, c = r.station, r.clock
    s.identify(patient)
    c.step(seconds=20)
    s.start()
    for sys_, dia in values:
        c.step(minutes=1)
        s.measured("bp", cuff.measure(c.now - timedelta(seconds=2), sys_, dia))
    s.measured("scale", [_obs("body.weight", "kg", 80.5, c.now, f"w:{patient}")])
    c.step(seconds=30)
    s.review()
    s.answer("smoker", False)
    c.step(seconds=30)
    return s.consent()


def test_a_visit_reaches_the_cloud_once_as_the_patients_and_is_wiped(rig: Rig) -> None:
    r = rig
    r.relay()
    msg_id = one_visit(r, "p-anna", Cuff(), [(142, 88), (136, 85), (134, 84)])
    r.wait_sent()
    assert not r.outbox.has(msg_id)
    assert r.outbox.pending() == 0
    assert r.station.view().readings == ()  # nothing of the visit left on the screen
    wait_until(lambda: bool(r.visits("p-anna")), DEADLINE_S, "the visit at the cloud")
    ((ref, readings),) = r.visits("p-anna")
    assert ref == "v-1"
    assert len(readings) == 7  # 3 x (systolic, diastolic) and the weight
    (stored,) = r.service.list_visits(subject="p-anna")
    assert stored.answers == [{"id": "smoker", "value": False}]
    assert stored.quarantined == 0
    # the BP result by the kiosk protocol travels with the readings: the last two of three
    (bp,) = stored.summaries
    assert bp["id"] == "bp"
    assert bp["values"] == {"systolic": 135.0, "diastolic": 84.5, "readings": 3}


def test_back_to_back_visits_with_a_cuff_replaying_its_memory(rig: Rig) -> None:
    """The second patient's cuff hands over the first patient's readings again on every
    reconnect: they are quarantined (taken before the device was armed for this visit)."""
    r = rig
    r.relay()
    cuff = Cuff()
    one_visit(r, "p-anna", cuff, [(142, 88), (136, 85), (134, 84)])
    r.wait_sent()
    r.clock.step(seconds=10)
    one_visit(r, "p-bert", cuff, [(121, 77), (118, 76), (117, 75)])
    r.wait_sent()
    wait_until(lambda: bool(r.visits("p-bert")), DEADLINE_S, "the second visit")
    ((_, anna),) = r.visits("p-anna")
    ((_, bert),) = r.visits("p-bert")
    assert {k for k, _ in anna}.isdisjoint(k for k, _ in bert)
    assert sorted(v for k, v in bert if k.startswith("bp:")) == [75, 76, 77, 117, 118, 121]
    (second,) = r.service.list_visits(subject="p-bert")
    assert second.quarantined > 0  # anna's replayed readings, counted, never sent as bert's
    rejects = [x for x in r.outbox.rejects(1000) if x.source == QUARANTINE_SOURCE]
    assert rejects
    assert all("p-anna" not in (x.raw or b"").decode() for x in rejects)  # no patient in them


def test_a_reading_one_second_after_the_visit_ended_is_nobodys(rig: Rig) -> None:
    r = rig
    r.relay()
    one_visit(r, "p-anna", Cuff(), [(142, 88), (136, 85), (134, 84)])
    r.wait_sent()
    r.clock.step(seconds=1)
    late = [_obs("body.weight", "kg", 79.9, r.clock.now - timedelta(seconds=1), "w:late")]
    assert r.station.measured("scale", late) == 0
    (reject,) = [x for x in r.outbox.rejects(10) if x.source == QUARANTINE_SOURCE]
    assert reject.reason.startswith("no-open-visit")
    assert b"w:late" in (reject.raw or b"")
    ((_, readings),) = r.visits("p-anna")
    assert ("w:late", 79.9) not in readings


def test_a_patient_who_walks_away_leaves_nothing_behind(rig: Rig) -> None:
    r = rig
    s = r.station
    s.identify("p-anna")
    s.start()
    s.measured("bp", Cuff().measure(r.clock.step(seconds=40), 150, 90))
    assert len(s.view().readings) == 2
    # 50 s before the measuring step times out (it began at start, 40 s ago)
    r.clock.step(seconds=KioskTimeouts().measuring.total_seconds() - 40 - 50)
    s.poll()
    assert s.view().warning_until is not None  # told a minute ahead
    r.clock.step(seconds=60)
    s.poll()
    view = s.view()
    assert (view.state, view.readings, view.visit_ref) == (KioskState.IDLE, (), None)
    assert r.outbox.pending() == 0  # nothing queued, nothing sent


def test_power_loss_while_sending_sends_the_visit_once_then_wipes_it(rig: Rig) -> None:
    """Consent queues the visit; the power goes before the relay has sent it. After the
    restart the station is idle with nothing in memory, the relay sends the queued visit, the
    cloud keeps it once (the same message sent again changes nothing) and the outbox is empty."""
    r = rig
    msg_id = one_visit(r, "p-anna", Cuff(), [(142, 88), (136, 85), (134, 84)])
    (queued,) = r.outbox.lease(10)
    assert queued.msg_id == msg_id
    r.outbox.close()  # power loss: the process is gone, the file stays
    r.outbox = Outbox(r.tmp / "kiosk-outbox.db")
    r.station = new_station(r.outbox, r.clock)  # restarted: idle, no personal data in memory
    assert r.station.view().state is KioskState.IDLE
    assert r.outbox.has(msg_id)
    r.relay()
    wait_until(lambda: r.outbox.pending() == 0, DEADLINE_S, "the queued visit to be sent")
    wait_until(lambda: bool(r.visits("p-anna")), DEADLINE_S, "the visit at the cloud")
    # the same visit again (a PUBACK lost on the way: the relay sends it once more)
    r.outbox.put_many(
        [OutboundMessage(topic=queued.topic, payload=queued.payload, msg_id=queued.msg_id)]
    )
    wait_until(lambda: r.outbox.pending() == 0, DEADLINE_S, "the resend")
    wait_until(
        lambda: r.consumer.stats.totals.get("duplicate_messages", 0) >= 2,  # its two parts
        DEADLINE_S,
        "the cloud to take the resend",
    )
    assert len(r.service.list_visits(subject="p-anna")) == 1
    ((_, readings),) = r.visits("p-anna")
    assert len(readings) == 7


def test_steps_out_of_order_are_refused_and_change_nothing(rig: Rig) -> None:
    s = rig.station
    with pytest.raises(KioskError):
        s.consent()
    with pytest.raises(KioskError):
        s.answer("smoker", True)
    s.identify("p-anna")
    with pytest.raises(KioskError):
        s.identify("p-bert")  # one visit at a time
    with pytest.raises(KioskError):
        s.answer("not-a-question", 1)
    with pytest.raises(KioskError):
        s.answer("smoker", float("nan"))
    s.cancel()
    assert s.view().state is KioskState.IDLE
    assert rig.outbox.pending() == 0


def test_the_visit_carries_the_bmi_of_its_weight_and_height(rig: Rig) -> None:
    from gateway.wire import decode_visit

    r = rig
    s = r.station
    s.identify("p-anna")
    s.start()
    height = _obs("body.height", "cm", 176.0, r.clock.step(seconds=30), "h:1")
    weight = _obs("body.weight", "kg", 81.4, r.clock.step(seconds=30), "w:1")
    s.measured("scale", [weight])
    s.measured("bp", [height])  # (a height rod in a test: any armed device of the station)
    s.review()
    msg_id = s.consent()
    (queued,) = r.outbox.lease(10)
    assert queued.msg_id == msg_id
    visit = decode_visit(queued.topic, queued.payload)
    bmis = [
        w.observation for p in visit.parts for w in p.observations if w.observation.measure == "bmi"
    ]
    assert len(bmis) == 1
    (bmi,) = bmis
    assert bmi.value == round(81.4 / 1.76**2, 1) == 26.3
    assert bmi.unit == "kg/m2"
    assert QualityFlag.DERIVED in bmi.quality
    assert bmi.record_key == "w:1/bmi"
    assert bmi.effective_time == weight.effective_time
    scale_part = next(p for p in visit.parts if p.device_id == "scale")
    assert "bmi" in {w.observation.measure for w in scale_part.observations}


def test_a_streaming_device_cannot_fill_a_visit_past_what_one_message_carries(rig: Rig) -> None:
    """An oximeter streaming twice a second for minutes: the visit keeps the first 150 of its
    readings and quarantines the rest as visit-full; the visit still goes out whole."""
    from edge_agent.kiosk_session import MAX_READINGS_PER_DEVICE

    r = rig
    s = r.station
    s.identify("p-anna")
    s.start()
    t = r.clock.step(seconds=5)
    stream = [_obs("spo2", "%", 97.0, t + timedelta(seconds=i / 2), f"plx:{i}") for i in range(400)]
    r.clock.step(seconds=205)
    assert s.measured("bp", stream) == MAX_READINGS_PER_DEVICE
    s.review()
    s.consent()
    (queued,) = r.outbox.lease(10)
    from gateway.wire import decode_visit

    visit = decode_visit(queued.topic, queued.payload)
    assert visit.observation_count == MAX_READINGS_PER_DEVICE
    assert visit.quarantined == 400 - MAX_READINGS_PER_DEVICE
    full = [x for x in r.outbox.rejects(100) if x.reason.startswith("visit-full")]
    assert full


def test_an_unreachable_broker_frees_the_station_and_the_visit_waits_in_the_outbox(
    rig: Rig,
) -> None:
    """No confirmation within SEND_WAIT: the station goes idle (nothing of the visit in
    memory) and says the results are saved; the outbox sends the visit when it can."""
    from edge_agent.kiosk_station import SEND_WAIT

    r = rig
    msg_id = one_visit(r, "p-anna", Cuff(), [(142, 88), (136, 85), (134, 84)])  # no relay yet
    r.station.poll()
    assert r.station.view().state is KioskState.SENDING
    r.clock.step(seconds=SEND_WAIT.total_seconds())
    r.station.poll()
    view = r.station.view()
    assert (view.state, view.readings, view.visit_ref) == (KioskState.IDLE, (), None)
    assert view.last_end is not None
    assert view.last_end[0] == "queued"
    assert r.outbox.has(msg_id)
    r.relay()  # the broker is back
    wait_until(lambda: r.outbox.pending() == 0, DEADLINE_S, "the visit to go out")
    wait_until(lambda: bool(r.visits("p-anna")), DEADLINE_S, "the visit at the cloud")
