"""The device-event contract (``remon.event/1``): edge encodes, cloud decodes, every defect."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_profiles.events import DOSE_KINDS, MAX_DETAILS, DeviceEvent, EventKind
from device_profiles.observation import (
    CLOUD_ONLY_FLAGS,
    DeviceIdentity,
    Provenance,
    QualityFlag,
)
from gateway import wire
from gateway.wire import (
    EVENT_SUBSCRIPTION,
    MAX_EVENTS,
    MAX_PAYLOAD_BYTES,
    SCHEMA_EVENT_V1,
    EncodeError,
    OutboundMessage,
    Subject,
    WireError,
    WireErrorCode,
    decode_events,
    decode_observations,
    encode_events,
    event_id,
    event_topic,
    observation_id,
    parse_event_topic,
)
from tests.helpers import envelope, glucose

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
DISPENSER = DeviceIdentity(
    manufacturer="Acme", model="MedRoll 2", serial="MR-1", firmware="4.2", transport="serial"
)
SUBJECT = Subject(kind="patient", ref="p-1")


def dose(
    n: int, kind: EventKind = EventKind.DOSE_MISSED, *, t: datetime | None = None, **kw: Any
) -> DeviceEvent:
    args: dict[str, Any] = {
        "kind": kind,
        "event_time": t or T0 + timedelta(minutes=n),
        "record_key": f"evt:{n}",
        "provenance": Provenance(source="serial:test"),
        "dose_id": f"dose-{n}",
        "scheduled_time": T0 + timedelta(minutes=n - 30),
    }
    args.update(kw)
    return DeviceEvent(**args)


def encode(events: list[DeviceEvent], **kw: Any) -> list[OutboundMessage]:
    args: dict[str, Any] = {
        "site": "home-1",
        "device_id": "disp-1",
        "device": DISPENSER,
        "subject": SUBJECT,
        "events": events,
        "created_at": T0,
    }
    args.update(kw)
    return encode_events(**args)


def one(events: list[DeviceEvent], **kw: Any) -> OutboundMessage:
    [msg] = encode(events, **kw)
    return msg


MISSED = dose(
    1,
    device_time="2026-11-22T10:01:00",
    clock_offset_s=-2.5,
    details={"window_min": 30, "locked": True, "slot": "A3", "temp_c": 21.5},
    quality=frozenset({QualityFlag.SIMULATED}),
    provenance=Provenance(source="serial:medroll", raw="0a0b0c"),
)
STOCK = DeviceEvent(
    kind=EventKind.LOW_STOCK,
    event_time=T0 + timedelta(minutes=2),
    record_key="evt:2",
    provenance=Provenance(source="serial:medroll"),
    details={"doses_left": 3},
)
GOOD = one([MISSED, STOCK])


def test_round_trip_keeps_every_field() -> None:
    assert GOOD.topic == "remon/v1/home-1/disp-1/event"
    assert (GOOD.qos, GOOD.retain) == (1, False)
    env = decode_events(GOOD.topic, GOOD.payload)
    assert env.schema == SCHEMA_EVENT_V1
    assert env.msg_id == GOOD.msg_id
    assert (env.site, env.device_id, env.device, env.subject) == (
        "home-1",
        "disp-1",
        DISPENSER,
        SUBJECT,
    )
    assert env.created_at == T0
    assert [w.event for w in env.events] == [MISSED, STOCK]
    assert [w.event_id for w in env.events] == [
        event_id(DISPENSER, "evt:1", EventKind.DOSE_MISSED),
        event_id(DISPENSER, "evt:2", EventKind.LOW_STOCK),
    ]
    got = env.events[0].event
    assert got.scheduled_time == T0 - timedelta(minutes=29)
    assert got.event_time.tzinfo is not None
    assert dict(got.details) == {"window_min": 30, "locked": True, "slot": "A3", "temp_c": 21.5}
    assert type(got.details["locked"]) is bool
    assert type(got.details["window_min"]) is int
    doc = json.loads(GOOD.payload)
    assert "dose_id" not in doc["events"][1]  # optional fields are left out, not null
    assert "scheduled_time" not in doc["events"][1]


def test_topics() -> None:
    assert event_topic("home-1", "disp-1") == "remon/v1/home-1/disp-1/event"
    assert parse_event_topic("remon/v1/home-1/disp-1/event") == ("home-1", "disp-1")
    assert EVENT_SUBSCRIPTION == "remon/v1/+/+/event"
    with pytest.raises(EncodeError, match="device id"):
        event_topic("home-1", "Disp 1")


@pytest.mark.parametrize(
    "topic",
    [
        "remon/v1/home-1/disp-1/obs",
        "remon/v1/home-1/disp-1",
        "remon/v2/home-1/disp-1/event",
        "remon/v1/HOME/disp-1/event",
        "remon/v1/home-1/_agent/event",
        "",
    ],
)
def test_bad_topics(topic: str) -> None:
    with pytest.raises(WireError) as info:
        decode_events(topic, GOOD.payload)
    assert (info.value.code, info.value.path) == (WireErrorCode.BAD_TOPIC, "topic")


def test_envelope_kinds_do_not_cross() -> None:
    obs = envelope([glucose(1)], site="home-1", device_id="disp-1")
    with pytest.raises(WireError) as info:  # an observation envelope on an event topic
        decode_events(GOOD.topic, obs.payload)
    assert (info.value.code, info.value.path) == (WireErrorCode.UNKNOWN_SCHEMA, "schema")
    with pytest.raises(WireError) as info:  # and an event envelope on an observation topic
        decode_observations(obs.topic, GOOD.payload)
    assert (info.value.code, info.value.path) == (WireErrorCode.UNKNOWN_SCHEMA, "schema")
    with pytest.raises(WireError) as info:
        decode_observations(GOOD.topic, obs.payload)
    assert info.value.code is WireErrorCode.BAD_TOPIC


def test_ids_are_content_derived() -> None:
    assert one([dose(1)]).msg_id == one([dose(1)]).msg_id
    later = one([dose(1)], created_at=T0 + timedelta(days=1))  # a replay is the same message
    assert later.msg_id == one([dose(1)]).msg_id
    assert one([dose(1)], subject=Subject(kind="patient", ref="p-2")).msg_id != later.msg_id
    # the kind is part of the id: a dose's "due" and "missed" may share the device's record key
    due = event_id(DISPENSER, "evt:1", EventKind.DOSE_DUE)
    assert due != event_id(DISPENSER, "evt:1", EventKind.DOSE_MISSED)
    # a different domain word: never equal to an observation id over the same texts
    assert due != observation_id(DISPENSER, "evt:1", "dose_due")

    # and an event envelope never shares its msg_id with an observation envelope
    def msg_id(schema: str) -> str:
        return wire.message_id(
            schema=schema, site="s", device_id="d", device=DISPENSER, subject=SUBJECT, obs_ids=[due]
        )

    assert msg_id(SCHEMA_EVENT_V1) != msg_id(wire.SCHEMA_OBS_V1)


def test_encoder_refuses_what_the_contract_cannot_carry() -> None:
    with pytest.raises(EncodeError, match="twice"):
        encode([dose(1), dose(1)])
    with pytest.raises(EncodeError, match="subject"):
        encode([dose(1)], subject=Subject(kind="patient", ref=""))
    huge = dose(1, provenance=Provenance(source="t", raw="ab" * MAX_PAYLOAD_BYTES))
    with pytest.raises(EncodeError, match="single event"):
        encode([huge])
    assert encode([]) == []


def test_long_batches_are_split_by_count() -> None:
    events = [dose(n) for n in range(1, 1202)]
    msgs = encode(events)
    assert [len(json.loads(m.payload)["events"]) for m in msgs] == [500, 500, 201]
    assert [w.event for m in msgs for w in decode_events(m.topic, m.payload).events] == events


def test_large_events_are_split_by_size() -> None:
    big = {f"note{i}": "x" * 128 for i in range(MAX_DETAILS)}
    events = [dose(n, details=big) for n in range(1, 301)]
    msgs = encode(events)
    assert len(msgs) > 1
    assert all(len(m.payload) <= MAX_PAYLOAD_BYTES for m in msgs)
    assert all(len(json.loads(m.payload)["events"]) <= MAX_EVENTS for m in msgs)
    assert len({m.msg_id for m in msgs}) == len(msgs)
    assert [w.event for m in msgs for w in decode_events(m.topic, m.payload).events] == events


def _mutate(fn: Callable[[dict[str, Any]], object], payload: bytes = GOOD.payload) -> bytes:
    doc = json.loads(payload)
    fn(doc)
    return json.dumps(doc).encode()


def _ev0(fn: Callable[[dict[str, Any]], object]) -> bytes:
    return _mutate(lambda d: fn(d["events"][0]))


def _details(value: object) -> bytes:
    return _ev0(lambda e: e.update(details=value))


INVALID = WireErrorCode.INVALID_VALUE
WRONG = WireErrorCode.WRONG_TYPE
MISSING = WireErrorCode.MISSING_FIELD
IDS = WireErrorCode.ID_MISMATCH


@pytest.mark.parametrize(
    ("payload", "code", "path"),
    [
        (b"\xff", WireErrorCode.NOT_UTF8, ""),
        (b"{", WireErrorCode.NOT_JSON, ""),
        (b"[]", WRONG, ""),
        (b"x" * (MAX_PAYLOAD_BYTES + 1), WireErrorCode.TOO_LARGE, ""),
        (
            _mutate(lambda d: d.update(schema="remon.event/2")),
            WireErrorCode.UNKNOWN_SCHEMA,
            "schema",
        ),
        (_mutate(lambda d: d.pop("schema")), MISSING, "schema"),
        (_mutate(lambda d: d.update(msg_id="XYZ")), INVALID, "msg_id"),
        (_mutate(lambda d: d.update(msg_id="0" * 32)), IDS, "msg_id"),
        (_mutate(lambda d: d["events"].pop()), IDS, "msg_id"),
        (_mutate(lambda d: d.update(site="home-2")), WireErrorCode.TOPIC_MISMATCH, "site"),
        (_mutate(lambda d: d["device"].pop("serial")), MISSING, "device.serial"),
        (_mutate(lambda d: d["subject"].update(kind="neighbour")), INVALID, "subject.kind"),
        (_mutate(lambda d: d.pop("created_at")), MISSING, "created_at"),
        (_mutate(lambda d: d.pop("events")), MISSING, "events"),
        (_mutate(lambda d: d.update(events={})), WRONG, "events"),
        (_mutate(lambda d: d.update(events=[])), INVALID, "events"),
        (_mutate(lambda d: d["events"].__setitem__(1, "dose")), WRONG, "events[1]"),
        (
            _mutate(lambda d: d["events"].append(d["events"][0])),
            WireErrorCode.DUPLICATE_EVENT,
            "events",
        ),
        (_ev0(lambda e: e.pop("event_id")), MISSING, "events[0].event_id"),
        (_ev0(lambda e: e.update(event_id="0" * 32)), IDS, "events[0].event_id"),
        (_ev0(lambda e: e.update(event_id="0" * 33)), INVALID, "events[0].event_id"),
        (_ev0(lambda e: e.update(record_key="evt:9")), IDS, "events[0].event_id"),
        (_ev0(lambda e: e.update(kind="dose_taken")), IDS, "events[0].event_id"),
        (_ev0(lambda e: e.update(kind="dose_exploded")), INVALID, "events[0].kind"),
        (_ev0(lambda e: e.update(kind=5)), WRONG, "events[0].kind"),
        (_ev0(lambda e: e.pop("kind")), MISSING, "events[0].kind"),
        (_ev0(lambda e: e.update(record_key="")), INVALID, "events[0].record_key"),
        (_ev0(lambda e: e.update(record_key="k" * 129)), INVALID, "events[0].record_key"),
        (_ev0(lambda e: e.pop("event_time")), MISSING, "events[0].event_time"),
        (
            _ev0(lambda e: e.update(event_time="2026-11-22T08:00:00")),
            INVALID,
            "events[0].event_time",
        ),
        (_ev0(lambda e: e.update(event_time="yesterday")), INVALID, "events[0].event_time"),
        (_ev0(lambda e: e.update(scheduled_time=12)), WRONG, "events[0].scheduled_time"),
        (
            _ev0(lambda e: e.update(scheduled_time="2026-11-22T07:30:00")),
            INVALID,
            "events[0].scheduled_time",
        ),
        (_ev0(lambda e: e.pop("dose_id")), MISSING, "events[0].dose_id"),
        (_ev0(lambda e: e.update(dose_id=None)), MISSING, "events[0].dose_id"),
        (_ev0(lambda e: e.update(dose_id="d" * 65)), INVALID, "events[0].dose_id"),
        (_ev0(lambda e: e.update(dose_id=7)), WRONG, "events[0].dose_id"),
        (_ev0(lambda e: e.update(device_time="t" * 41)), INVALID, "events[0].device_time"),
        (_ev0(lambda e: e.update(clock_offset_s="3")), WRONG, "events[0].clock_offset_s"),
        (_ev0(lambda e: e.update(clock_offset_s=10**400)), INVALID, "events[0].clock_offset_s"),
        (_ev0(lambda e: e.update(quality="simulated")), WRONG, "events[0].quality"),
        (_ev0(lambda e: e.update(quality=["simulated", "great"])), INVALID, "events[0].quality[1]"),
        (_ev0(lambda e: e.pop("provenance")), MISSING, "events[0].provenance"),
        (_ev0(lambda e: e.update(provenance="serial")), WRONG, "events[0].provenance"),
        (_ev0(lambda e: e["provenance"].update(source="")), INVALID, "events[0].provenance.source"),
        (_details([1]), WRONG, "events[0].details"),
        (_details({f"k{i}": i for i in range(MAX_DETAILS + 1)}), INVALID, "events[0].details"),
        (_details({"": 1}), INVALID, "events[0].details"),
        (_details({"k" * 33: 1}), INVALID, "events[0].details"),
        (_details({"note": "x" * 129}), INVALID, "events[0].details.note"),
        (_details({"nested": {"a": 1}}), WRONG, "events[0].details.nested"),
        (_details({"list": [1]}), WRONG, "events[0].details.list"),
        (_details({"nothing": None}), WRONG, "events[0].details.nothing"),
        (
            GOOD.payload.replace(b'"window_min":30', b'"window_min":1e999', 1),
            INVALID,
            "events[0].details.window_min",
        ),
        (
            GOOD.payload.replace(b'"slot":"A3"', b'"slot":"A\\u0000"', 1),
            INVALID,
            "events[0].details.slot",
        ),
        (
            GOOD.payload.replace(b'"dose_id":"dose-1"', b'"dose_id":"dose-\\udc00"', 1),
            INVALID,
            "events[0].dose_id",
        ),
        (GOOD.payload.replace(b'"temp_c":21.5', b'"temp_c":NaN', 1), WireErrorCode.NOT_JSON, ""),
    ],
)
def test_every_defect_is_named(payload: bytes, code: WireErrorCode, path: str) -> None:
    assert payload != GOOD.payload  # the mutation took effect
    with pytest.raises(WireError) as info:
        decode_events(GOOD.topic, payload)
    assert (info.value.code, info.value.path) == (code, path)
    assert path in str(info.value)


def test_too_many_events() -> None:
    doc = json.loads(GOOD.payload)
    doc["events"] = doc["events"] * (MAX_EVENTS // 2 + 1)
    with pytest.raises(WireError) as info:
        decode_events(GOOD.topic, json.dumps(doc).encode())
    assert (info.value.code, info.value.path) == (WireErrorCode.INVALID_VALUE, "events")


def test_events_other_than_doses_need_no_dose_id() -> None:
    jam = DeviceEvent(
        kind=EventKind.JAM,
        event_time=T0,
        record_key="evt:7",
        provenance=Provenance(source="t"),
    )
    env = decode_events(GOOD.topic, one([jam]).payload)
    assert env.events[0].event == jam
    assert env.events[0].event.dose_id is None
    assert dict(env.events[0].event.details) == {}


# --------------------------------------------------------------------------------------------
# properties

# Text the contract carries: no NUL, no lone surrogates (PostgreSQL stores neither).
_CHARS = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")


def _text(min_size: int = 1, max_size: int = 20) -> st.SearchStrategy[str]:
    return st.text(_CHARS, min_size=min_size, max_size=max_size)


_TIMES = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
_FLOATS = st.floats(allow_nan=False, allow_infinity=False)
_DETAILS = st.dictionaries(
    _text(1, 32),
    st.one_of(_text(0, 128), st.integers(-(2**63), 2**63), _FLOATS, st.booleans()),
    max_size=MAX_DETAILS,
)


@st.composite
def _event(draw: st.DrawFn, n: int) -> DeviceEvent:
    kind = draw(st.sampled_from(list(EventKind)))
    dose_id = draw(_text(1, 64)) if kind in DOSE_KINDS else draw(st.none() | _text(1, 64))
    return DeviceEvent(
        kind=kind,
        event_time=draw(_TIMES),
        record_key=f"{n}:{draw(_text(0, 100))}",  # unique within an envelope
        provenance=Provenance(
            source=draw(_text(1, 128)),
            original_value=draw(st.none() | _FLOATS),
            original_unit=draw(st.none() | _text()),
            raw=draw(st.none() | _text(1, 64)),
        ),
        dose_id=dose_id,
        scheduled_time=draw(st.none() | _TIMES),
        device_time=draw(st.none() | _text(1, 40)),
        clock_offset_s=draw(st.none() | _FLOATS),
        details=draw(_DETAILS),
        # every flag a hub may send (the cloud-only ones are refused: test_clinical_settings)
        quality=frozenset(
            draw(st.sets(st.sampled_from([q for q in QualityFlag if q not in CLOUD_ONLY_FLAGS])))
        ),
    )


@st.composite
def _events(draw: st.DrawFn) -> list[DeviceEvent]:
    return [draw(_event(n)) for n in range(draw(st.integers(1, 6)))]


@settings(max_examples=60)
@given(_events(), _text(1, 128))
def test_round_trip_property(events: list[DeviceEvent], ref: str) -> None:
    subject = Subject(kind="kiosk-session", ref=ref)
    [msg] = encode(events, subject=subject)
    env = decode_events(msg.topic, msg.payload)
    assert [w.event for w in env.events] == events
    assert env.subject == subject
    assert env.msg_id == msg.msg_id


@settings(max_examples=60)
@given(st.binary(max_size=2048))
def test_random_bytes_get_a_typed_error(data: bytes) -> None:
    with pytest.raises(WireError) as info:
        decode_events(GOOD.topic, data)
    assert info.value.code in WireErrorCode


@settings(max_examples=200)
@given(st.data())
def test_decoder_on_mutated_valid_payloads(data: st.DataObject) -> None:
    payload = bytearray(GOOD.payload)
    for _ in range(data.draw(st.integers(1, 8))):
        payload[data.draw(st.integers(0, len(payload) - 1))] = data.draw(st.integers(0, 255))
    try:
        env = decode_events(GOOD.topic, bytes(payload))
    except WireError as exc:
        assert exc.code in WireErrorCode
        assert str(exc)
        return
    # a mutation that still decodes is self-consistent: every id matches the content
    for w in env.events:
        assert w.event_id == event_id(env.device, w.event.record_key, w.event.kind)
    assert env.msg_id == wire.message_id(
        schema=env.schema,
        site=env.site,
        device_id=env.device_id,
        device=env.device,
        subject=env.subject,
        obs_ids=[w.event_id for w in env.events],
    )
