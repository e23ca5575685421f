"""The edge→cloud contract: encode on the edge side, decode on the cloud side, and every defect."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_profiles.observation import AbsentReason, Observation, Provenance, QualityFlag
from gateway import wire
from gateway.wire import (
    MAX_OBSERVATIONS,
    MAX_PAYLOAD_BYTES,
    AgentStatus,
    EncodeError,
    Subject,
    WireError,
    WireErrorCode,
    decode_observations,
    decode_status,
    encode_observations,
    encode_status,
)
from tests.helpers import METER, T0, envelope, glucose


def test_round_trip_keeps_every_field() -> None:
    obs = [
        glucose(
            1,
            5.4,
            device_time="2026-11-22T10:01:00",
            clock_offset_s=-3.5,
            provenance=Provenance(
                source="ble:0x2A18", original_value=97.0, original_unit="mg/dL", raw="0b0100"
            ),
        ),
        glucose(2, 1.1, comparator="<", quality=frozenset({QualityFlag.BELOW_RANGE})),
        glucose(3, None, absent_reason=AbsentReason.NOT_A_NUMBER),
    ]
    msg = envelope(obs)
    assert msg.topic == "remon/v1/home-1/gm1/obs"
    env = decode_observations(msg.topic, msg.payload)
    assert env.msg_id == msg.msg_id
    assert env.device == METER
    assert env.subject == Subject(kind="patient", ref="p-1")
    assert env.created_at == T0
    assert [w.observation for w in env.observations] == obs
    assert len({w.obs_id for w in env.observations}) == 3


def test_ids_are_content_derived() -> None:
    a = envelope([glucose(1)])
    b = envelope([glucose(1)])
    assert a.msg_id == b.msg_id  # a re-read of the same record dedupes
    assert envelope([glucose(2)]).msg_id != a.msg_id
    assert envelope([glucose(1)], subject="p-2").msg_id != a.msg_id
    # created_at is not part of the id: a replay made later is still the same message
    later = encode_observations(
        site="home-1",
        device_id="gm1",
        device=METER,
        subject=Subject(kind="patient", ref="p-1"),
        observations=[glucose(1)],
        created_at=datetime.now(UTC),
    )[0]
    assert later.msg_id == a.msg_id


def test_long_batches_are_split_within_bounds() -> None:
    obs = [glucose(n) for n in range(1, 1202)]
    msgs = encode_observations(
        site="home-1",
        device_id="gm1",
        device=METER,
        subject=Subject(kind="patient", ref="p-1"),
        observations=obs,
        created_at=T0,
    )
    assert [len(json.loads(m.payload)["observations"]) for m in msgs] == [500, 500, 201]
    assert all(len(m.payload) <= MAX_PAYLOAD_BYTES for m in msgs)
    decoded = [
        w.observation for m in msgs for w in decode_observations(m.topic, m.payload).observations
    ]
    assert decoded == obs


def test_encoder_refuses_what_the_contract_cannot_carry() -> None:
    with pytest.raises(EncodeError, match="site id"):
        wire.obs_topic("Home 1", "gm1")
    with pytest.raises(EncodeError, match="twice"):
        envelope([glucose(1), glucose(1)])


def _mutate(payload: bytes, fn: object) -> bytes:
    doc = json.loads(payload)
    fn(doc)  # type: ignore[operator]
    return json.dumps(doc).encode()


GOOD = envelope([glucose(1), glucose(2)])


@pytest.mark.parametrize(
    ("payload", "code", "path"),
    [
        (b"\xff\xfe", WireErrorCode.NOT_UTF8, ""),
        (b"{not json", WireErrorCode.NOT_JSON, ""),
        (b"[1,2]", WireErrorCode.WRONG_TYPE, ""),
        (b"{}", WireErrorCode.MISSING_FIELD, "schema"),
        (b'{"schema": "remon.obs/99"}', WireErrorCode.UNKNOWN_SCHEMA, "schema"),
        (b"x" * (MAX_PAYLOAD_BYTES + 1), WireErrorCode.TOO_LARGE, ""),
        (_mutate(GOOD.payload, lambda d: d.pop("device")), WireErrorCode.MISSING_FIELD, "device"),
        (
            _mutate(GOOD.payload, lambda d: d.update(site="home-2")),
            WireErrorCode.TOPIC_MISMATCH,
            "site",
        ),
        (
            _mutate(GOOD.payload, lambda d: d["observations"][1].update(value="5.5")),
            WireErrorCode.WRONG_TYPE,
            "observations[1].value",
        ),
        (GOOD.payload.replace(b'"value":5.5', b'"value":NaN', 1), WireErrorCode.NOT_JSON, ""),
        (
            _mutate(GOOD.payload, lambda d: d["observations"][0].update(value=None)),
            WireErrorCode.INVALID_VALUE,
            "observations[0]",
        ),
        (
            _mutate(GOOD.payload, lambda d: d["observations"][0].update(unit="mg/dL")),
            WireErrorCode.INVALID_VALUE,
            "observations[0]",
        ),
        (
            _mutate(
                GOOD.payload,
                lambda d: d["observations"][0].update(effective_time="2026-11-22T08:00:00"),
            ),
            WireErrorCode.INVALID_VALUE,
            "observations[0].effective_time",
        ),
        (
            _mutate(GOOD.payload, lambda d: d["observations"][0].update(record_key="seq:9")),
            WireErrorCode.ID_MISMATCH,
            "observations[0].obs_id",
        ),
        (
            _mutate(GOOD.payload, lambda d: d["observations"].pop()),
            WireErrorCode.ID_MISMATCH,
            "msg_id",
        ),
        (
            _mutate(GOOD.payload, lambda d: d.update(observations=[])),
            WireErrorCode.INVALID_VALUE,
            "observations",
        ),
        (
            _mutate(GOOD.payload, lambda d: d["observations"][0].update(quality=["great"])),
            WireErrorCode.INVALID_VALUE,
            "observations[0].quality[0]",
        ),
        (
            _mutate(GOOD.payload, lambda d: d["observations"][0].update(absent_reason="bored")),
            WireErrorCode.INVALID_VALUE,
            "observations[0].absent_reason",
        ),
        (
            _mutate(GOOD.payload, lambda d: d["subject"].update(kind="neighbour")),
            WireErrorCode.INVALID_VALUE,
            "subject.kind",
        ),
        (
            _mutate(GOOD.payload, lambda d: d["observations"].append(d["observations"][0])),
            WireErrorCode.DUPLICATE_OBSERVATION,
            "observations",
        ),
        # found in review: these crashed the decoder with a non-WireError, stalling ingest
        (
            GOOD.payload.replace(b'"value":5.5', b'"value":' + b"9" * 5000, 1),
            WireErrorCode.NOT_JSON,
            "",
        ),
        (
            _mutate(GOOD.payload, lambda d: d["observations"][0].update(value=10**400)),
            WireErrorCode.INVALID_VALUE,
            "observations[0].value",
        ),
        (
            _mutate(
                GOOD.payload,
                lambda d: d["observations"][0].update(effective_time="0001-01-01T00:00:00+01:00"),
            ),
            WireErrorCode.INVALID_VALUE,
            "observations[0].effective_time",
        ),
        (
            GOOD.payload.replace(b'"serial":"SN-1"', b'"serial":"SN-\\ud800"', 1),
            WireErrorCode.INVALID_VALUE,
            "device.serial",
        ),
        (
            GOOD.payload.replace(b'"ref":"p-1"', b'"ref":"p-\\u0000"', 1),
            WireErrorCode.INVALID_VALUE,
            "subject.ref",
        ),
    ],
)
def test_every_defect_is_named(payload: bytes, code: WireErrorCode, path: str) -> None:
    with pytest.raises(WireError) as info:
        decode_observations(GOOD.topic, payload)
    assert info.value.code is code
    assert info.value.path == path
    assert path in str(info.value)


def test_too_many_observations() -> None:
    doc = json.loads(GOOD.payload)
    doc["observations"] = doc["observations"] * (MAX_OBSERVATIONS // 2 + 1)
    with pytest.raises(WireError) as info:
        decode_observations(GOOD.topic, json.dumps(doc).encode())
    assert info.value.code is WireErrorCode.INVALID_VALUE


@pytest.mark.parametrize(
    "topic",
    ["remon/v1/home-1/gm1", "remon/v2/home-1/gm1/obs", "remon/v1/HOME/gm1/obs", "x/v1/a/b/obs", ""],
)
def test_bad_topics(topic: str) -> None:
    with pytest.raises(WireError) as info:
        decode_observations(topic, GOOD.payload)
    assert info.value.code is WireErrorCode.BAD_TOPIC


def test_status_round_trip() -> None:
    msg = encode_status(AgentStatus(site="home-1", state="online", at=T0, agent_version="0.1"))
    assert msg.retain
    assert decode_status(msg.topic, msg.payload) == AgentStatus(
        site="home-1", state="online", at=T0, agent_version="0.1"
    )


def test_status_carries_the_outbox_depth() -> None:
    status = AgentStatus(
        site="home-1", state="online", at=T0, agent_version="0.1", outbox_pending=42
    )
    msg = encode_status(status)
    assert json.loads(msg.payload)["outbox_pending"] == 42
    assert decode_status(msg.topic, msg.payload) == status
    with pytest.raises(EncodeError, match="negative"):
        encode_status(
            AgentStatus(site="h", state="online", at=T0, agent_version="1", outbox_pending=-1)
        )


@pytest.mark.parametrize(
    ("value", "code"),
    [(-1, "invalid-value"), (1.5, "invalid-value"), ("3", "wrong-type"), (True, "wrong-type")],
)
def test_a_bad_outbox_depth_is_named(value: object, code: str) -> None:
    msg = encode_status(AgentStatus(site="home-1", state="online", at=T0, agent_version="0.1"))
    doc = json.loads(msg.payload)
    doc["outbox_pending"] = value
    with pytest.raises(WireError) as info:
        decode_status(msg.topic, json.dumps(doc).encode())
    assert (info.value.code.value, info.value.path) == (code, "outbox_pending")


@given(st.binary(max_size=2048))
def test_random_bytes_get_a_typed_error(data: bytes) -> None:
    # random bytes never make a valid envelope (its ids are digests of its content)
    with pytest.raises(WireError) as info:
        decode_observations(GOOD.topic, data)
    assert info.value.code in WireErrorCode


@given(st.data())
def test_decoder_on_mutated_valid_payloads(data: st.DataObject) -> None:
    payload = bytearray(GOOD.payload)
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(payload) - 1))
        payload[i] = data.draw(st.integers(0, 255))
    try:
        env = decode_observations(GOOD.topic, bytes(payload))
    except WireError as exc:
        error: WireError | None = exc
    else:
        error = None
    if error is not None:
        assert error.code in WireErrorCode
        assert str(error)
        return
    # A mutation that still decodes must still be self-consistent: ids match the content.
    assert env.msg_id == wire.message_id(
        schema=env.schema,
        site=env.site,
        device_id=env.device_id,
        device=env.device,
        subject=env.subject,
        obs_ids=[o.obs_id for o in env.observations],
    )


_values = st.floats(min_value=0.1, max_value=40, allow_nan=False).map(lambda v: round(v, 2))


@given(
    st.lists(
        st.tuples(st.integers(1, 10_000), _values),
        min_size=1,
        max_size=40,
        unique_by=lambda t: t[0],
    )
)
def test_round_trip_property(records: list[tuple[int, float]]) -> None:
    obs = [glucose(n, v) for n, v in records]
    msg = envelope(obs)
    env = decode_observations(msg.topic, msg.payload)
    assert [w.observation for w in env.observations] == obs


def test_observation_invariants() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        glucose(1, None)
    with pytest.raises(ValueError, match="finite"):
        glucose(1, float("nan"))
    with pytest.raises(ValueError, match="mmol/L"):
        glucose(1, 99.0, unit="mg/dL")
    with pytest.raises(ValueError, match="UTC"):
        glucose(1, t=datetime(2026, 1, 1))
    assert isinstance(glucose(1), Observation)


_ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**400), 10**400),
    st.floats(allow_nan=True),
    st.text(max_size=5),
    st.sampled_from(
        [
            "<",
            ">=",
            "error",
            "simulated",
            "2026-11-22T08:00:00",
            "2026-11-22T08:00:00+02:00",
            "x" * 200,
        ]
    ),
    st.lists(st.sampled_from(["simulated", "bogus", 1]), max_size=3),
    st.just({}),
    st.just([]),
)
_FIELDS = [
    "obs_id",
    "measure",
    "unit",
    "record_key",
    "effective_time",
    "value",
    "comparator",
    "absent_reason",
    "device_time",
    "clock_offset_s",
    "quality",
    "provenance",
]


@given(
    st.dictionaries(st.sampled_from(_FIELDS), _ODD_VALUES, max_size=3),
    st.dictionaries(
        st.sampled_from(["source", "original_value", "original_unit", "raw"]),
        _ODD_VALUES,
        max_size=2,
    ),
    st.sets(st.sampled_from(_FIELDS), max_size=2),
)
def test_fast_path_agrees_with_the_careful_decoder(
    changes: dict[str, object], prov_changes: dict[str, object], dropped: set[str]
) -> None:
    doc = json.loads(
        envelope([glucose(1, 5.5, device_time="2026-11-22T08:01:00", clock_offset_s=2.0)]).payload
    )
    o = doc["observations"][0]
    o["provenance"].update(prov_changes)
    o.update(changes)
    for k in dropped:
        o.pop(k, None)
    fast = wire._fast_obs(METER, o)
    try:
        careful: wire.WireObservation | None = wire._decode_obs(METER, o, "observations[0]")
    except WireError:
        careful = None
    # same value when both accept; the fast path declines exactly what the careful one refuses
    assert fast == careful


_HEAD_FIELDS = ["msg_id", "site", "device_id", "device", "subject", "created_at", "observations"]
_DEVICE_FIELDS = ["manufacturer", "model", "serial", "firmware", "transport"]


@given(
    st.dictionaries(st.sampled_from(_HEAD_FIELDS), _ODD_VALUES, max_size=2),
    st.dictionaries(st.sampled_from(_DEVICE_FIELDS), _ODD_VALUES, max_size=2),
    st.dictionaries(st.sampled_from(["kind", "ref"]), _ODD_VALUES, max_size=1),
    st.sampled_from(
        ["2026-11-22T08:00:00Z", "2026-11-22T10:00:00+02:00", "2026-11-22T08:00:00", "x"]
    ),
)
def test_fast_header_agrees_with_the_careful_decoder(
    changes: dict[str, object],
    dev_changes: dict[str, object],
    subj_changes: dict[str, object],
    created: str,
) -> None:
    """The cached header path accepts a subset of what the careful one accepts, with the same
    routing fields, and its reading-id digest base gives the same ids."""
    doc = json.loads(GOOD.payload)
    doc["created_at"] = created
    doc["device"].update(dev_changes)
    doc["subject"].update(subj_changes)
    doc.update(changes)
    fast = wire._fast_obs_head("home-1", "gm1", doc)
    try:
        careful = wire._decode_head(wire.SCHEMA_OBS_V1, "home-1", "gm1", doc, wire._OBS_ITEMS)
    except WireError:
        careful = None
    if fast is None:
        return  # declined: the careful path decides (and names any defect)
    assert careful is not None
    route, msg_id, created_at, items, id_base = fast
    assert (route, msg_id, created_at, items) == careful
    for o in items:
        if isinstance(o, dict) and isinstance(o.get("record_key"), str):
            h = id_base.copy()
            h.update(f"{o['record_key']}\x1f{o.get('measure')}\x1f".encode())
            want = wire.observation_id(route.device, o["record_key"], str(o.get("measure")))
            assert h.hexdigest()[:32] == want


def test_the_fast_header_takes_an_ordinary_message() -> None:
    head = wire._fast_obs_head("home-1", "gm1", json.loads(GOOD.payload))
    assert head is not None
    assert head[0].device == METER
