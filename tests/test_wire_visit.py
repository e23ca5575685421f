"""The kiosk visit contract (``remon.visit/1``): one message per visit, every device's readings
as observation envelopes of their own, the questionnaire answers; edge encodes, cloud decodes,
and every way a visit could carry a reading that is not the patient's is refused with its path."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_profiles.observation import DeviceIdentity, Observation, Provenance, QualityFlag
from gateway.wire import (
    MAX_VISIT_SPAN,
    SCHEMA_VISIT_V1,
    VISIT_SUBSCRIPTION,
    VISIT_TIME_TOLERANCE,
    Answer,
    EncodeError,
    OutboundMessage,
    Subject,
    VisitPart,
    WireError,
    WireErrorCode,
    decode_observations,
    decode_visit,
    encode_observations,
    encode_visit,
    parse_visit_topic,
    visit_topic,
)

START = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
END = START + timedelta(minutes=12)
PATIENT = Subject(kind="patient", ref="p-7f3a")
CUFF = DeviceIdentity(
    manufacturer="Acme", model="Kiosk BP", serial="BP-1", firmware="2.1", transport="ble"
)
SCALE = DeviceIdentity(manufacturer="Acme", model="Scale", serial="SC-1", transport="serial")
ROD = DeviceIdentity(manufacturer="Acme", model="Height rod", serial="HR-1", transport="serial")


def obs(measure: str, unit: str, value: float, minute: float, key: str) -> Observation:
    return Observation(
        measure=measure,
        unit=unit,
        value=value,
        effective_time=START + timedelta(minutes=minute),
        record_key=key,
        provenance=Provenance(source="test"),
        quality=frozenset({QualityFlag.SIMULATED}),
    )


def bp(n: int, sys_: float, dia: float, pulse: float, minute: float) -> list[Observation]:
    return [
        obs("bp.systolic", "mm[Hg]", sys_, minute, f"bp:{n}"),
        obs("bp.diastolic", "mm[Hg]", dia, minute, f"bp:{n}"),
        obs("pulse.cuff", "/min", pulse, minute, f"bp:{n}"),
    ]


def parts() -> list[VisitPart]:
    return [
        VisitPart(
            device_id="bp",
            device=CUFF,
            observations=[*bp(1, 142, 88, 71, 5), *bp(2, 136, 85, 70, 7), *bp(3, 134, 84, 69, 9)],
        ),
        VisitPart(
            device_id="scale", device=SCALE, observations=[obs("body.weight", "kg", 81.4, 2, "w:1")]
        ),
        VisitPart(
            device_id="rod", device=ROD, observations=[obs("body.height", "cm", 176.0, 1, "h:1")]
        ),
    ]


ANSWERS = [
    Answer(id="smoker", value=False),
    Answer(id="alcohol-units-week", value=4),
    Answer(id="feeling", value="hyvä"),
]


def visit(**kw: Any) -> OutboundMessage:
    args: dict[str, Any] = {
        "site": "kiosk-0001",
        "visit_ref": "v-20261204-0001",
        "subject": PATIENT,
        "started_at": START,
        "ended_at": END,
        "parts": parts(),
        "answers": ANSWERS,
        "quarantined": 1,
        "created_at": END + timedelta(seconds=2),
    }
    args.update(kw)
    return encode_visit(**args)


GOOD = visit()


def doc() -> dict[str, Any]:
    out: dict[str, Any] = json.loads(GOOD.payload)
    return out


def refused(body: dict[str, Any], topic: str = GOOD.topic) -> WireError:
    with pytest.raises(WireError) as info:
        decode_visit(topic, json.dumps(body).encode())
    return info.value


# -- round trip --------------------------------------------------------------------------------


def test_a_visit_round_trips_whole() -> None:
    env = decode_visit(GOOD.topic, GOOD.payload)
    assert env.schema == SCHEMA_VISIT_V1
    assert (env.site, env.visit_ref, env.subject) == ("kiosk-0001", "v-20261204-0001", PATIENT)
    assert (env.started_at, env.ended_at, env.quarantined) == (START, END, 1)
    assert env.msg_id == GOOD.msg_id
    assert [p.device_id for p in env.parts] == ["bp", "scale", "rod"]
    assert [[w.observation for w in p.observations] for p in env.parts] == [
        list(p.observations) for p in parts()
    ]
    assert env.observation_count == 11
    assert list(env.answers) == ANSWERS
    # each part is exactly the observation envelope the hub would have sent for that device
    for p, part in zip(env.parts, parts(), strict=True):
        (alone,) = encode_observations(
            site="kiosk-0001",
            device_id=part.device_id,
            device=part.device,
            subject=PATIENT,
            observations=part.observations,
            created_at=END,
        )
        assert p.msg_id == alone.msg_id
        assert decode_observations(alone.topic, alone.payload).observations == p.observations


def test_the_visit_id_is_its_content_not_its_sending_time() -> None:
    again = visit(created_at=END + timedelta(hours=3))  # resent after a power loss
    assert again.msg_id == GOOD.msg_id
    assert visit(answers=ANSWERS[:2]).msg_id != GOOD.msg_id
    assert visit(quarantined=0).msg_id != GOOD.msg_id
    assert visit(ended_at=END + timedelta(minutes=1)).msg_id != GOOD.msg_id
    assert visit(parts=parts()[:2]).msg_id != GOOD.msg_id


def test_topic() -> None:
    assert GOOD.topic == visit_topic("kiosk-0001") == "remon/v1/kiosk-0001/_kiosk/visit"
    assert parse_visit_topic(GOOD.topic) == "kiosk-0001"
    assert VISIT_SUBSCRIPTION == "remon/v1/+/_kiosk/visit"
    for bad in ("remon/v1/kiosk-0001/_agent/status", "remon/v1/Kiosk/_kiosk/visit", "x"):
        with pytest.raises(WireError) as info:
            parse_visit_topic(bad)
        assert info.value.code is WireErrorCode.BAD_TOPIC


# -- what the cloud refuses, and where -----------------------------------------------------------


def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(d: dict[str, Any]) -> None:
        node: Any = d
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return apply


def _drop_part(d: dict[str, Any]) -> None:
    d["parts"].pop()


def _swap_reading(d: dict[str, Any]) -> None:
    # a weight moved into the cuff's envelope: its id no longer matches that device
    d["parts"][0]["observations"].append(d["parts"][1]["observations"][0])


def _twice(d: dict[str, Any]) -> None:
    d["parts"].append(json.loads(json.dumps(d["parts"][0])))


def _kiosk_subject(d: dict[str, Any]) -> None:
    d["subject"] = {"kind": "kiosk-session", "ref": "s-1"}


@pytest.mark.parametrize(
    ("mutate", "code", "path"),
    [
        (_set(["site"], "kiosk-0002"), WireErrorCode.TOPIC_MISMATCH, "site"),
        (_kiosk_subject, WireErrorCode.INVALID_VALUE, "subject.kind"),
        (
            _set(["parts", 1, "subject", "ref"], "p-other"),
            WireErrorCode.ID_MISMATCH,
            "parts[1].msg_id",
        ),
        (_set(["parts", 2, "site"], "kiosk-0002"), WireErrorCode.TOPIC_MISMATCH, "parts[2].site"),
        (
            _set(["parts", 0, "schema"], "remon.event/1"),
            WireErrorCode.UNKNOWN_SCHEMA,
            "parts[0].schema",
        ),
        (
            _set(["parts", 0, "observations", 1, "value"], "88"),
            WireErrorCode.WRONG_TYPE,
            "parts[0].observations[1].value",
        ),
        (_swap_reading, WireErrorCode.ID_MISMATCH, "parts[0].observations[9].obs_id"),
        (_twice, WireErrorCode.INVALID_VALUE, "parts"),
        (_drop_part, WireErrorCode.ID_MISMATCH, "msg_id"),
        (_set(["parts"], []), WireErrorCode.INVALID_VALUE, "parts"),
        (_set(["visit", "quarantined"], 2), WireErrorCode.ID_MISMATCH, "msg_id"),
        (_set(["visit", "quarantined"], -1), WireErrorCode.INVALID_VALUE, "visit.quarantined"),
        (
            _set(["visit", "started_at"], "2026-12-04T09:20:00Z"),
            WireErrorCode.INVALID_VALUE,
            "visit.ended_at",
        ),
        (
            _set(["visit", "started_at"], "2026-12-04T06:00:00Z"),
            WireErrorCode.INVALID_VALUE,
            "visit.ended_at",
        ),
        (
            _set(["visit", "ended_at"], "2026-12-04T09:04:00Z"),
            WireErrorCode.INVALID_VALUE,
            "parts[0].observations[0].effective_time",
        ),
        (
            _set(["visit", "ended_at"], "2026-12-04 09:12"),
            WireErrorCode.INVALID_VALUE,
            "visit.ended_at",
        ),
        (_set(["answers", 0, "value"], True), WireErrorCode.ID_MISMATCH, "msg_id"),
        (_set(["answers", 0, "value"], [1]), WireErrorCode.WRONG_TYPE, "answers[0].value"),
        (_set(["answers", 0, "value"], None), WireErrorCode.WRONG_TYPE, "answers[0].value"),
        (_set(["answers", 1, "id"], "Smoker"), WireErrorCode.INVALID_VALUE, "answers[1]"),
        (_set(["answers", 2, "value"], "x" * 129), WireErrorCode.INVALID_VALUE, "answers[2]"),
        (_set(["answers", 1, "value"], 10**400), WireErrorCode.INVALID_VALUE, "answers[1]"),
        (_set(["answers", 1, "id"], "smoker"), WireErrorCode.INVALID_VALUE, "answers"),
        (_set(["answers"], {"smoker": False}), WireErrorCode.WRONG_TYPE, "answers"),
        (_set(["msg_id"], "0" * 32), WireErrorCode.ID_MISMATCH, "msg_id"),
        (_set(["schema"], "remon.visit/2"), WireErrorCode.UNKNOWN_SCHEMA, "schema"),
    ],
)
def test_a_defect_is_refused_with_its_place(
    mutate: Callable[[dict[str, Any]], None], code: WireErrorCode, path: str
) -> None:
    body = doc()
    mutate(body)
    err = refused(body)
    assert (err.code, err.path) == (code, path), err


def _minutes(at: datetime) -> float:
    return (at - START).total_seconds() / 60


def test_a_reading_just_inside_the_clock_tolerance_is_kept_and_one_beyond_it_refused() -> None:
    edge = END + VISIT_TIME_TOLERANCE
    inside = [
        VisitPart(
            device_id="rod",
            device=ROD,
            observations=[
                obs("body.height", "cm", 176.0, (edge - START).total_seconds() / 60, "h:9")
            ],
        )
    ]
    env = decode_visit(GOOD.topic, visit(parts=inside).payload)
    assert env.parts[0].observations[0].observation.effective_time == edge
    beyond = [
        VisitPart(
            device_id="rod",
            device=ROD,
            observations=[
                obs("body.height", "cm", 176.0, (edge - START).total_seconds() / 60 + 0.05, "h:9")
            ],
        )
    ]
    with pytest.raises(EncodeError, match="outside the visit"):
        visit(parts=beyond)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"subject": Subject(kind="kiosk-session", ref="s-1")}, "identified patient"),
        ({"parts": []}, "1..32 devices"),
        ({"parts": [parts()[0], parts()[0]]}, "twice"),
        ({"ended_at": START - timedelta(seconds=1)}, "before started_at"),
        ({"ended_at": START + MAX_VISIT_SPAN + timedelta(seconds=1)}, "at most"),
        ({"answers": [Answer(id="a", value=1), Answer(id="a", value=2)]}, "each question once"),
        ({"answers": [Answer(id="A b", value=1)]}, "must match"),
        ({"answers": [Answer(id="a", value=float("nan"))]}, "finite"),
        ({"quarantined": -1}, "negative"),
        ({"site": "Kiosk 1"}, "site id"),
    ],
)
def test_the_edge_cannot_encode_a_visit_the_cloud_would_refuse(
    kw: dict[str, Any], match: str
) -> None:
    with pytest.raises(EncodeError, match=match):
        visit(**kw)


# -- properties ----------------------------------------------------------------------------------

_MEASURES = [
    ("body.weight", "kg"),
    ("body.height", "cm"),
    ("spo2", "%"),
    ("body.temperature", "Cel"),
]


@st.composite
def _visits(draw: st.DrawFn) -> tuple[list[VisitPart], list[Answer], int]:
    n = draw(st.integers(1, 4))
    out: list[VisitPart] = []
    for i in range(n):
        measure, unit = draw(st.sampled_from(_MEASURES))
        count = draw(st.integers(1, 5))
        minutes = draw(st.lists(st.floats(0, 12, allow_nan=False), min_size=count, max_size=count))
        values = draw(
            st.lists(st.floats(0.5, 300, allow_nan=False), min_size=count, max_size=count)
        )
        device = DeviceIdentity(manufacturer="Acme", model=f"M{i}", serial=f"S{i}", transport="ble")
        observations = [
            obs(measure, unit, round(v, 2), m, f"r:{j}")
            for j, (m, v) in enumerate(zip(minutes, values, strict=True))
        ]
        out.append(VisitPart(device_id=f"dev-{i}", device=device, observations=observations))
    ids = draw(
        st.lists(st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True), max_size=5, unique=True)
    )
    answers = [
        Answer(
            id=a,
            value=draw(
                st.one_of(
                    st.booleans(),
                    st.integers(-1000, 1000),
                    st.text(min_size=1, max_size=40).filter(
                        lambda s: "\x00" not in s and not any(0xD800 <= ord(c) <= 0xDFFF for c in s)
                    ),
                )
            ),
        )
        for a in ids
    ]
    return out, answers, draw(st.integers(0, 50))


@given(_visits())
def test_round_trip_property(v: tuple[list[VisitPart], list[Answer], int]) -> None:
    ps, answers, quarantined = v
    msg = visit(parts=ps, answers=answers, quarantined=quarantined)
    env = decode_visit(msg.topic, msg.payload)
    assert env.msg_id == msg.msg_id
    assert [[w.observation for w in p.observations] for p in env.parts] == [
        list(p.observations) for p in ps
    ]
    assert list(env.answers) == answers
    assert env.quarantined == quarantined


@settings(max_examples=60)
@given(st.binary(max_size=2048))
def test_random_bytes_get_a_typed_error(data: bytes) -> None:
    with pytest.raises(WireError) as info:
        decode_visit(GOOD.topic, data)
    assert info.value.code in WireErrorCode


@settings(max_examples=200)
@given(st.data())
def test_decoder_on_mutated_valid_payloads(data: st.DataObject) -> None:
    """Whatever a corrupted visit becomes, it is refused with a typed error, or it decodes to
    a visit that is still self-consistent: every reading inside the visit, the patient's."""
    payload = bytearray(GOOD.payload)
    for _ in range(data.draw(st.integers(1, 8))):
        payload[data.draw(st.integers(0, len(payload) - 1))] = data.draw(st.integers(0, 255))
    try:
        env = decode_visit(GOOD.topic, bytes(payload))
    except WireError as exc:
        assert exc.code in WireErrorCode
        return
    assert env.subject.kind == "patient"
    for p in env.parts:
        assert p.subject == env.subject
        assert p.site == env.site
        for w in p.observations:
            t = w.observation.effective_time
            assert env.started_at - VISIT_TIME_TOLERANCE <= t <= env.ended_at + VISIT_TIME_TOLERANCE


def test_visit_summaries_round_trip_and_are_covered_by_the_id() -> None:
    from gateway.wire import VisitSummary

    bp = VisitSummary(
        id="bp",
        values={"systolic": 135.0, "diastolic": 84.5, "readings": 3},
        method="mean of the last two of 3 readings",
    )
    msg = visit(summaries=[bp])
    env = decode_visit(msg.topic, msg.payload)
    assert list(env.summaries) == [bp]
    assert msg.msg_id != GOOD.msg_id
    body = json.loads(msg.payload)
    body["summaries"][0]["values"]["systolic"] = 125.0  # a changed result does not pass
    err = refused(body, msg.topic)
    assert (err.code, err.path) == (WireErrorCode.ID_MISMATCH, "msg_id")
    body = json.loads(msg.payload)
    body["summaries"][0]["values"]["systolic"] = "135"
    err = refused(body, msg.topic)
    assert (err.code, err.path) == (WireErrorCode.INVALID_VALUE, "summaries[0]")
    with pytest.raises(EncodeError, match="finite"):
        visit(summaries=[VisitSummary(id="bp", values={"systolic": float("inf")}, method="m")])
