"""The device-telemetry contract (``remon.telemetry/1``) and the Battery Level decoder:
edge encodes, cloud decodes, every defect named; nothing out of range is clamped."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_profiles.gatt.ieee11073 import DecodeError
from device_profiles.gatt.ieee11073 import EncodeError as GattEncodeError
from device_profiles.gatt.vitals import decode_battery_level, encode_battery_level
from device_profiles.observation import DeviceIdentity, ObservationError
from device_profiles.telemetry import RSSI_MAX_DBM, RSSI_MIN_DBM, DeviceTelemetry, LinkState
from gateway import wire
from gateway.wire import (
    MAX_SAMPLES,
    SCHEMA_TELEMETRY_V1,
    TELEMETRY_SUBSCRIPTION,
    EncodeError,
    OutboundMessage,
    Subject,
    WireError,
    WireErrorCode,
    decode_events,
    decode_telemetry,
    encode_telemetry,
    parse_telemetry_topic,
    telemetry_id,
    telemetry_topic,
)

T0 = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
CGM = DeviceIdentity(
    manufacturer="Acme", model="CGM 7", serial="C-1", firmware="1.2", transport="ble"
)
SUBJECT = Subject(kind="patient", ref="p-1")


def sample(n: int = 0, **kw: Any) -> DeviceTelemetry:
    args: dict[str, Any] = {
        "at": T0 + timedelta(seconds=n),
        "battery_pct": 80,
        "rssi_dbm": -67,
        "link": LinkState.CONNECTED,
    }
    args.update(kw)
    return DeviceTelemetry(**args)


def encode(samples: list[DeviceTelemetry], **kw: Any) -> list[OutboundMessage]:
    return encode_telemetry(
        site=kw.pop("site", "home-1"),
        device_id=kw.pop("device_id", "cgm-1"),
        device=kw.pop("device", CGM),
        subject=kw.pop("subject", SUBJECT),
        samples=samples,
        created_at=T0,
    )


GOOD = encode([sample(0), sample(60, link=LinkState.DISCONNECTED, battery_pct=None)])[0]


def test_round_trip_keeps_every_field() -> None:
    samples = [
        sample(0, clock_offset_s=-1.25),
        sample(30, battery_pct=None, rssi_dbm=None, link=LinkState.DISCONNECTED),
        sample(60, battery_pct=0, rssi_dbm=RSSI_MIN_DBM, link=None),
        sample(90, battery_pct=100, rssi_dbm=RSSI_MAX_DBM),
    ]
    [msg] = encode(samples)
    assert msg.topic == "remon/v1/home-1/cgm-1/telemetry"
    env = decode_telemetry(msg.topic, msg.payload)
    assert [w.telemetry for w in env.samples] == samples
    assert env.schema == SCHEMA_TELEMETRY_V1
    assert (env.site, env.device_id, env.device, env.subject) == ("home-1", "cgm-1", CGM, SUBJECT)
    assert env.msg_id == msg.msg_id
    body = json.loads(msg.payload)
    # optional fields are left out, not sent as null
    assert body["samples"][1] == {
        "sample_id": telemetry_id(CGM, T0 + timedelta(seconds=30)),
        "at": "2026-12-03T08:00:30Z",
        "link": "disconnected",
    }


def test_topics() -> None:
    assert telemetry_topic("home-1", "cgm-1") == "remon/v1/home-1/cgm-1/telemetry"
    assert parse_telemetry_topic("remon/v1/home-1/cgm-1/telemetry") == ("home-1", "cgm-1")
    assert TELEMETRY_SUBSCRIPTION == "remon/v1/+/+/telemetry"
    for bad in (
        "remon/v1/home-1/cgm-1/obs",
        "remon/v1/home-1/_agent/telemetry",
        "remon/v2/home-1/cgm-1/telemetry",
        "remon/v1/Home/cgm-1/telemetry",
    ):
        with pytest.raises(WireError) as info:
            parse_telemetry_topic(bad)
        assert info.value.code is WireErrorCode.BAD_TOPIC


def test_envelope_kinds_do_not_cross() -> None:
    """Telemetry on an event topic (or the reverse) is refused, and ids never collide."""
    with pytest.raises(WireError) as info:
        decode_events(GOOD.topic.replace("/telemetry", "/event"), GOOD.payload)
    assert info.value.code is WireErrorCode.UNKNOWN_SCHEMA
    obs_topic = GOOD.topic.replace("/telemetry", "/obs")
    with pytest.raises(WireError):
        decode_telemetry(obs_topic, GOOD.payload)


def test_ids_are_content_derived() -> None:
    a = encode([sample(0)])[0]
    assert encode([sample(0)])[0].msg_id == a.msg_id  # resent: the same id
    assert encode([sample(1)])[0].msg_id != a.msg_id
    other = DeviceIdentity(manufacturer="Acme", model="CGM 7", serial="C-2", transport="ble")
    assert telemetry_id(other, T0) != telemetry_id(CGM, T0)
    assert encode([sample(0)], subject=Subject(kind="patient", ref="p-2"))[0].msg_id != a.msg_id


def test_encoder_refuses_what_the_contract_cannot_carry() -> None:
    with pytest.raises(EncodeError):
        encode([sample(0), sample(0)])  # two samples of one instant
    with pytest.raises(EncodeError):
        encode([sample(0)], device_id="CGM 1")
    assert encode([]) == []


def test_long_batches_are_split_by_count() -> None:
    msgs = encode([sample(n) for n in range(MAX_SAMPLES + 1)])
    assert [len(json.loads(m.payload)["samples"]) for m in msgs] == [MAX_SAMPLES, 1]


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        ({"battery_pct": 101}, "battery_pct must be a whole percent 0..100, got 101"),
        ({"battery_pct": -1}, "0..100"),
        ({"battery_pct": 50.5}, "0..100"),
        ({"battery_pct": True}, "0..100"),
        ({"rssi_dbm": 127}, "rssi_dbm must be a whole dBm -127..20, got 127"),
        ({"rssi_dbm": -128}, "-127..20"),
        ({"clock_offset_s": float("nan")}, "finite"),
        ({"link": "up"}, "unknown link state"),
        ({"at": datetime(2026, 1, 1)}, "aware UTC"),
        (
            {"battery_pct": None, "rssi_dbm": None, "link": None},
            "needs at least one of battery_pct, rssi_dbm, link, clock_offset_s",
        ),
    ],
)
def test_a_sample_is_validated_when_built(kw: dict[str, Any], words: str) -> None:
    with pytest.raises(ObservationError, match=words.replace("(", r"\(").replace(".", r"\.")):
        sample(0, **kw)


def _mutate(fn: Callable[[dict[str, Any]], None], *, fix_ids: bool = True) -> bytes:
    body = json.loads(GOOD.payload)
    fn(body)
    if fix_ids:
        dev = DeviceIdentity(**body["device"])
        for s in body["samples"] if isinstance(body["samples"], list) else []:
            try:
                at = datetime.fromisoformat(s["at"])
            except (KeyError, ValueError):
                continue  # the defect under test is the time itself
            s["sample_id"] = telemetry_id(dev, at)
        body["msg_id"] = wire.message_id(
            schema=body["schema"],
            site=body["site"],
            device_id=body["device_id"],
            device=dev,
            subject=Subject(**body["subject"]),
            obs_ids=[s["sample_id"] for s in body["samples"]],
        )
    return json.dumps(body).encode()


def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def fn(body: dict[str, Any]) -> None:
        obj: Any = body
        for k in path[:-1]:
            obj = obj[k]
        obj[path[-1]] = value

    return fn


def _drop(path: list[Any]) -> Callable[[dict[str, Any]], None]:
    def fn(body: dict[str, Any]) -> None:
        obj: Any = body
        for k in path[:-1]:
            obj = obj[k]
        del obj[path[-1]]

    return fn


def _only_time(body: dict[str, Any]) -> None:
    s = body["samples"][1]
    body["samples"][1] = {"sample_id": s["sample_id"], "at": s["at"]}


def _twice(body: dict[str, Any]) -> None:
    body["samples"].append(dict(body["samples"][0]))


@pytest.mark.parametrize(
    ("payload", "code", "path"),
    [
        (_mutate(_set(["schema"], "remon.telemetry/9")), "unknown-schema", "schema"),
        (_mutate(_set(["site"], "home-2")), "topic-mismatch", "site"),
        (_mutate(_drop(["samples", 0, "at"])), "missing-field", "samples[0].at"),
        (_mutate(_set(["samples", 0, "at"], "yesterday")), "invalid-value", "samples[0].at"),
        (
            _mutate(_set(["samples", 0, "battery_pct"], 101)),
            "invalid-value",
            "samples[0].battery_pct",
        ),
        (
            _mutate(_set(["samples", 0, "battery_pct"], 80.5)),
            "invalid-value",
            "samples[0].battery_pct",
        ),
        (
            _mutate(_set(["samples", 0, "battery_pct"], "80")),
            "wrong-type",
            "samples[0].battery_pct",
        ),
        (_mutate(_set(["samples", 0, "rssi_dbm"], 127)), "invalid-value", "samples[0].rssi_dbm"),
        (_mutate(_set(["samples", 0, "link"], "up")), "invalid-value", "samples[0].link"),
        (
            _mutate(_set(["samples", 0, "clock_offset_s"], 12345.5)).replace(b"12345.5", b"1e999"),
            "invalid-value",
            "samples[0].clock_offset_s",
        ),
        (
            _mutate(_only_time),  # nothing left but the id and the time
            "invalid-value",
            "samples[1]",
        ),
        (
            _mutate(_set(["samples", 0, "sample_id"], "0" * 32), fix_ids=False),
            "id-mismatch",
            "samples[0].sample_id",
        ),
        (_mutate(_twice), "duplicate-sample", "samples"),
        (_mutate(_set(["samples"], [])), "invalid-value", "samples"),
        (_mutate(_set(["samples"], {})), "wrong-type", "samples"),
        (b"{", "not-json", ""),
    ],
)
def test_every_defect_is_named(payload: bytes, code: str, path: str) -> None:
    with pytest.raises(WireError) as info:
        decode_telemetry(GOOD.topic, payload)
    assert (info.value.code.value, info.value.path) == (code, path)
    assert str(info.value)


# --------------------------------------------------------------------------- properties


@st.composite
def _sample(draw: st.DrawFn, n: int) -> DeviceTelemetry:
    values = {
        "battery_pct": draw(st.none() | st.integers(0, 100)),
        "rssi_dbm": draw(st.none() | st.integers(RSSI_MIN_DBM, RSSI_MAX_DBM)),
        "link": draw(st.none() | st.sampled_from(LinkState)),
        "clock_offset_s": draw(
            st.none() | st.floats(-1e7, 1e7, allow_nan=False, allow_infinity=False)
        ),
    }
    if all(v is None for v in values.values()):
        values["link"] = LinkState.CONNECTED
    at = T0 + timedelta(seconds=n, microseconds=draw(st.integers(0, 999_999)))
    return DeviceTelemetry(at=at, **values)


@settings(max_examples=80)
@given(st.integers(1, 8).flatmap(lambda k: st.tuples(*(_sample(n) for n in range(k)))))
def test_round_trip_property(samples: tuple[DeviceTelemetry, ...]) -> None:
    [msg] = encode(list(samples))
    env = decode_telemetry(msg.topic, msg.payload)
    assert tuple(w.telemetry for w in env.samples) == samples
    assert env.msg_id == msg.msg_id


@settings(max_examples=60)
@given(st.binary(max_size=2048))
def test_random_bytes_get_a_typed_error(data: bytes) -> None:
    with pytest.raises(WireError) as info:
        decode_telemetry(GOOD.topic, data)
    assert info.value.code in WireErrorCode


@settings(max_examples=200)
@given(st.data())
def test_decoder_on_mutated_valid_payloads(data: st.DataObject) -> None:
    payload = bytearray(GOOD.payload)
    for _ in range(data.draw(st.integers(1, 8))):
        payload[data.draw(st.integers(0, len(payload) - 1))] = data.draw(st.integers(0, 255))
    try:
        env = decode_telemetry(GOOD.topic, bytes(payload))
    except WireError as exc:
        assert exc.code in WireErrorCode
        assert str(exc)
        return
    for w in env.samples:  # what still decodes is in range and self-consistent
        t = w.telemetry
        assert t.battery_pct is None or 0 <= t.battery_pct <= 100
        assert t.rssi_dbm is None or RSSI_MIN_DBM <= t.rssi_dbm <= RSSI_MAX_DBM
        assert w.sample_id == telemetry_id(env.device, t.at)


# --------------------------------------------------------------------------- Battery Level


@given(st.integers(0, 100))
def test_battery_level_round_trip(level: int) -> None:
    assert decode_battery_level(encode_battery_level(level)) == level


@given(st.binary(max_size=4))
def test_battery_level_decoder_takes_one_byte_0_to_100_and_names_every_other(
    data: bytes,
) -> None:
    if len(data) == 1 and data[0] <= 100:
        assert decode_battery_level(data) == data[0]
        return
    with pytest.raises(DecodeError) as info:
        decode_battery_level(data)
    assert str(info.value)


def test_battery_level_past_100_is_refused_with_its_value() -> None:
    with pytest.raises(DecodeError, match="battery level expected 0-100 %, got 101"):
        decode_battery_level(bytes([101]))
    with pytest.raises(GattEncodeError, match="101 is not 0-100"):
        encode_battery_level(101)
