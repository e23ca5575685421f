"""The edge→cloud wire contract: topics, the versioned JSON envelope and content-derived ids.

Pure (no I/O): the edge encodes with it, the cloud decodes with it, and a contract test runs
both sides. ``docs/wire-protocol.md`` is the prose version of this module.

Topics (no personal data in any of them)::

    remon/v1/<site>/<device>/obs        observations (remon.obs/1), QoS 1, never retained
    remon/v1/<site>/<device>/event      device events (remon.event/1), QoS 1, never retained
    remon/v1/<site>/<device>/telemetry  device telemetry (remon.telemetry/1), QoS 1, never retained
    remon/v1/<site>/_agent/status       agent online/offline, QoS 1, retained, set by last will

The three envelopes share their routing fields (schema, msg_id, site, device_id, device,
subject, created_at), size bounds and splitting; they differ in the array they carry:
``observations`` (:class:`~device_profiles.observation.Observation`), ``events``
(:class:`~device_profiles.events.DeviceEvent`, e.g. a dispenser's ``dose_missed``) or
``samples`` (:class:`~device_profiles.telemetry.DeviceTelemetry`: battery, RSSI, link, clock).

Ids. ``obs_id`` = first 32 hex digits of SHA-256 over the device identity key, the device's own
record key and the measure: the same reading read twice gets the same id. ``event_id`` is the
same digest over another domain word ("event"), the device key, the record key and the event
kind, so it never equals an observation's id; a telemetry sample's ``sample_id`` covers
"telemetry", the device key and the sample's instant. ``msg_id`` is derived the same way from the
envelope's routing fields and its items' ids, so a redelivery or a replay from the outbox
carries the same id and ingest drops it. Decoding recomputes all of them and refuses a message
whose ids do not match its content (a reused id would otherwise make ingest discard a different
reading or event as a duplicate).

Every way a payload can be wrong raises :class:`WireError` with a code, the JSON path of the
offending field and a message; the cloud keeps the payload in its dead-letter store.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final, Generic, Literal, NamedTuple, TypeVar, cast

from device_profiles.events import (
    DOSE_KINDS,
    MAX_DETAIL_TEXT,
    MAX_DETAILS,
    DetailValue,
    DeviceEvent,
    EventKind,
)
from device_profiles.observation import (
    CLOUD_ONLY_FLAGS,
    COMPARATORS,
    AbsentReason,
    Comparator,
    DeviceIdentity,
    Observation,
    ObservationError,
    Provenance,
    QualityFlag,
)
from device_profiles.telemetry import RSSI_MAX_DBM, RSSI_MIN_DBM, DeviceTelemetry, LinkState

SCHEMA_OBS_V1: Final = "remon.obs/1"
SCHEMA_EVENT_V1: Final = "remon.event/1"
#: Versions the cloud accepts; the previous version stays here for one release after a bump.
ACCEPTED_SCHEMAS: Final[frozenset[str]] = frozenset({SCHEMA_OBS_V1})
ACCEPTED_EVENT_SCHEMAS: Final[frozenset[str]] = frozenset({SCHEMA_EVENT_V1})
SCHEMA_STATUS_V1: Final = "remon.status/1"
SCHEMA_TELEMETRY_V1: Final = "remon.telemetry/1"
ACCEPTED_TELEMETRY_SCHEMAS: Final[frozenset[str]] = frozenset({SCHEMA_TELEMETRY_V1})

TOPIC_ROOT: Final = "remon/v1"
#: Largest payload either side will produce or accept (bytes). Mosquitto's default is far larger.
MAX_PAYLOAD_BYTES: Final = 256 * 1024
#: Most observations (events) one envelope may carry; encoders split longer batches.
MAX_OBSERVATIONS: Final = 500
MAX_EVENTS: Final = 500
MAX_SAMPLES: Final = 500
MAX_TEXT: Final = 128
_TOKEN_RE: Final = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_HEX32_RE: Final = re.compile(r"^[0-9a-f]{32}$")

SubjectKind = Literal["patient", "kiosk-session"]
SUBJECT_KINDS: Final[frozenset[str]] = frozenset({"patient", "kiosk-session"})


class WireErrorCode(StrEnum):
    TOO_LARGE = "too-large"
    NOT_UTF8 = "not-utf8"
    NOT_JSON = "not-json"
    BAD_TOPIC = "bad-topic"
    TOPIC_MISMATCH = "topic-mismatch"
    UNKNOWN_SCHEMA = "unknown-schema"
    MISSING_FIELD = "missing-field"
    WRONG_TYPE = "wrong-type"
    INVALID_VALUE = "invalid-value"
    ID_MISMATCH = "id-mismatch"
    DUPLICATE_OBSERVATION = "duplicate-observation"
    DUPLICATE_EVENT = "duplicate-event"
    DUPLICATE_SAMPLE = "duplicate-sample"


class WireError(ValueError):
    """A payload or topic that breaks the contract; ``path`` is a JSON path to the defect."""

    def __init__(self, code: WireErrorCode, path: str, message: str) -> None:
        super().__init__(f"{code.value} at {path or '<payload>'}: {message}")
        self.code = code
        self.path = path
        self.detail = message


class EncodeError(ValueError):
    """The edge asked to encode something the contract cannot carry (our bug, not the peer's)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Subject:
    """Whom a reading belongs to: a pseudonymous patient ref, or a kiosk session ref."""

    kind: SubjectKind
    ref: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WireObservation:
    obs_id: str
    observation: Observation


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    schema: str
    msg_id: str
    site: str
    device_id: str
    device: DeviceIdentity
    subject: Subject
    created_at: datetime
    observations: tuple[WireObservation, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class WireEvent:
    event_id: str
    event: DeviceEvent


@dataclass(frozen=True, slots=True, kw_only=True)
class EventEnvelope:
    schema: str
    msg_id: str
    site: str
    device_id: str
    device: DeviceIdentity
    subject: Subject
    created_at: datetime
    events: tuple[WireEvent, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class WireTelemetry:
    sample_id: str
    telemetry: DeviceTelemetry


@dataclass(frozen=True, slots=True, kw_only=True)
class TelemetryEnvelope:
    schema: str
    msg_id: str
    site: str
    device_id: str
    device: DeviceIdentity
    subject: Subject
    created_at: datetime
    samples: tuple[WireTelemetry, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboundMessage:
    """What the outbox stores and the relay publishes: bytes, ready to go."""

    topic: str
    payload: bytes
    msg_id: str
    qos: int = 1
    retain: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentStatus:
    site: str
    state: Literal["online", "offline"]
    at: datetime | None
    agent_version: str
    #: messages waiting in the hub's outbox when the status was sent (None: not reported)
    outbox_pending: int | None = None


# --------------------------------------------------------------------------------------------
# topics


def is_token(text: str) -> bool:
    """Site and device ids: lowercase letters, digits and '-', 1..63 characters."""
    return _TOKEN_RE.fullmatch(text) is not None


def _check_token(kind: str, text: str) -> None:
    if not is_token(text):
        raise EncodeError(f"{kind} id {text!r} must match {_TOKEN_RE.pattern}")


def _device_topic(site: str, device_id: str, leaf: str) -> str:
    _check_token("site", site)
    _check_token("device", device_id)
    return f"{TOPIC_ROOT}/{site}/{device_id}/{leaf}"


def obs_topic(site: str, device_id: str) -> str:
    return _device_topic(site, device_id, "obs")


def event_topic(site: str, device_id: str) -> str:
    return _device_topic(site, device_id, "event")


def telemetry_topic(site: str, device_id: str) -> str:
    return _device_topic(site, device_id, "telemetry")


def status_topic(site: str) -> str:
    _check_token("site", site)
    return f"{TOPIC_ROOT}/{site}/_agent/status"


#: Subscription filters for the cloud side.
OBS_SUBSCRIPTION: Final = f"{TOPIC_ROOT}/+/+/obs"
EVENT_SUBSCRIPTION: Final = f"{TOPIC_ROOT}/+/+/event"
TELEMETRY_SUBSCRIPTION: Final = f"{TOPIC_ROOT}/+/+/telemetry"
STATUS_SUBSCRIPTION: Final = f"{TOPIC_ROOT}/+/_agent/status"


def _parse_device_topic(topic: str, leaf: str, what: str) -> tuple[str, str]:
    parts = topic.split("/")
    if (
        len(parts) != 5
        or f"{parts[0]}/{parts[1]}" != TOPIC_ROOT
        or parts[4] != leaf
        or not is_token(parts[2])
        or not is_token(parts[3])
    ):
        raise WireError(WireErrorCode.BAD_TOPIC, "topic", f"not {what} topic: {topic[:200]!r}")
    return parts[2], parts[3]


def parse_obs_topic(topic: str) -> tuple[str, str]:
    """Return (site, device_id) of an observation topic or raise ``WireError(BAD_TOPIC)``."""
    return _parse_device_topic(topic, "obs", "an observation")


def parse_event_topic(topic: str) -> tuple[str, str]:
    """Return (site, device_id) of an event topic or raise ``WireError(BAD_TOPIC)``."""
    return _parse_device_topic(topic, "event", "an event")


def parse_telemetry_topic(topic: str) -> tuple[str, str]:
    """Return (site, device_id) of a telemetry topic or raise ``WireError(BAD_TOPIC)``."""
    return _parse_device_topic(topic, "telemetry", "a telemetry")


# --------------------------------------------------------------------------------------------
# ids


def _digest(*parts: str) -> str:
    """SHA-256 over each part followed by a 0x1F separator, first 32 hex digits."""
    text = "\x1f".join(parts) + "\x1f"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def observation_id(device: DeviceIdentity, record_key: str, measure: str) -> str:
    return _digest("obs", device.key, record_key, measure)


def event_id(device: DeviceIdentity, record_key: str, kind: EventKind) -> str:
    return _digest("event", device.key, record_key, kind.value)


def telemetry_id(device: DeviceIdentity, at: datetime) -> str:
    """A sample is the device's state at one instant: the same sample resent has the same id."""
    return _digest("telemetry", device.key, _iso(at))


class _Route(NamedTuple):
    """An envelope's routing fields: what its ``msg_id`` covers besides its items' ids.

    A named tuple, not a dataclass: one is built per decoded message (a frozen dataclass costs
    microseconds more).
    """

    schema: str
    site: str
    device_id: str
    device: DeviceIdentity
    subject: Subject

    def msg_id(self, item_ids: Sequence[str]) -> str:
        s = self.subject
        return _digest(
            "msg", self.schema, self.site, self.device_id, self.device.key, s.kind, s.ref, *item_ids
        )


def message_id(
    *,
    schema: str,
    site: str,
    device_id: str,
    device: DeviceIdentity,
    subject: Subject,
    obs_ids: Sequence[str],
) -> str:
    """The ``msg_id`` of an envelope; ``obs_ids`` are its items' ids in order (obs or event)."""
    return _Route(schema, site, device_id, device, subject).msg_id(obs_ids)


# --------------------------------------------------------------------------------------------
# encoding (edge side)


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


_T = TypeVar("_T", Observation, DeviceEvent, DeviceTelemetry)


@dataclass(frozen=True, slots=True)
class _Items(Generic[_T]):
    """What differs between the envelope kinds: the array's key, its bound and its items."""

    key: str  # "observations" | "events" | "samples"
    limit: int  # most items per envelope
    noun: str  # "reading" | "event" | "telemetry sample", for messages
    item_id: Callable[[DeviceIdentity, _T], str]
    to_json: Callable[[str, _T], dict[str, Any]]


def _prov_to_json(p: Provenance) -> dict[str, Any]:
    prov: dict[str, Any] = {"source": p.source}
    if p.original_value is not None:
        prov["original_value"] = p.original_value
    if p.original_unit is not None:
        prov["original_unit"] = p.original_unit
    if p.raw is not None:
        prov["raw"] = p.raw
    return prov


def _obs_to_json(obs_id: str, o: Observation) -> dict[str, Any]:
    d: dict[str, Any] = {
        "obs_id": obs_id,
        "measure": o.measure,
        "unit": o.unit,
        "effective_time": _iso(o.effective_time),
        "record_key": o.record_key,
    }
    if o.value is not None:
        d["value"] = o.value
    if o.comparator is not None:
        d["comparator"] = o.comparator
    if o.absent_reason is not None:
        d["absent_reason"] = o.absent_reason.value
    if o.device_time is not None:
        d["device_time"] = o.device_time
    if o.clock_offset_s is not None:
        d["clock_offset_s"] = o.clock_offset_s
    if o.quality:
        d["quality"] = sorted(q.value for q in o.quality)
    d["provenance"] = _prov_to_json(o.provenance)
    return d


def _event_to_json(eid: str, e: DeviceEvent) -> dict[str, Any]:
    d: dict[str, Any] = {
        "event_id": eid,
        "kind": e.kind.value,
        "event_time": _iso(e.event_time),
        "record_key": e.record_key,
    }
    if e.dose_id is not None:
        d["dose_id"] = e.dose_id
    if e.scheduled_time is not None:
        d["scheduled_time"] = _iso(e.scheduled_time)
    if e.device_time is not None:
        d["device_time"] = e.device_time
    if e.clock_offset_s is not None:
        d["clock_offset_s"] = e.clock_offset_s
    if e.details:
        d["details"] = dict(e.details)
    if e.quality:
        d["quality"] = sorted(q.value for q in e.quality)
    d["provenance"] = _prov_to_json(e.provenance)
    return d


def _telemetry_to_json(sid: str, t: DeviceTelemetry) -> dict[str, Any]:
    d: dict[str, Any] = {"sample_id": sid, "at": _iso(t.at)}
    if t.battery_pct is not None:
        d["battery_pct"] = t.battery_pct
    if t.rssi_dbm is not None:
        d["rssi_dbm"] = t.rssi_dbm
    if t.link is not None:
        d["link"] = t.link.value
    if t.clock_offset_s is not None:
        d["clock_offset_s"] = t.clock_offset_s
    return d


_OBS_ITEMS: Final[_Items[Observation]] = _Items(
    key="observations",
    limit=MAX_OBSERVATIONS,
    noun="reading",
    item_id=lambda dev, o: observation_id(dev, o.record_key, o.measure),
    to_json=_obs_to_json,
)
_EVENT_ITEMS: Final[_Items[DeviceEvent]] = _Items(
    key="events",
    limit=MAX_EVENTS,
    noun="event",
    item_id=lambda dev, e: event_id(dev, e.record_key, e.kind),
    to_json=_event_to_json,
)
_TELEMETRY_ITEMS: Final[_Items[DeviceTelemetry]] = _Items(
    key="samples",
    limit=MAX_SAMPLES,
    noun="telemetry sample",
    item_id=lambda dev, t: telemetry_id(dev, t.at),
    to_json=_telemetry_to_json,
)


def _device_to_json(dev: DeviceIdentity) -> dict[str, Any]:
    d: dict[str, Any] = {
        "manufacturer": dev.manufacturer,
        "model": dev.model,
        "serial": dev.serial,
        "transport": dev.transport,
    }
    if dev.firmware is not None:
        d["firmware"] = dev.firmware
    return d


def encode_observations(
    *,
    site: str,
    device_id: str,
    device: DeviceIdentity,
    subject: Subject,
    observations: Sequence[Observation],
    created_at: datetime,
) -> list[OutboundMessage]:
    """Encode observations into as many envelopes as the size bounds require (order kept)."""
    topic = obs_topic(site, device_id)
    route = _Route(SCHEMA_OBS_V1, site, device_id, device, subject)
    return _encode(topic, route, created_at, observations, _OBS_ITEMS)


def encode_events(
    *,
    site: str,
    device_id: str,
    device: DeviceIdentity,
    subject: Subject,
    events: Sequence[DeviceEvent],
    created_at: datetime,
) -> list[OutboundMessage]:
    """Encode device events into as many envelopes as the size bounds require (order kept)."""
    topic = event_topic(site, device_id)
    route = _Route(SCHEMA_EVENT_V1, site, device_id, device, subject)
    return _encode(topic, route, created_at, events, _EVENT_ITEMS)


def encode_telemetry(
    *,
    site: str,
    device_id: str,
    device: DeviceIdentity,
    subject: Subject,
    samples: Sequence[DeviceTelemetry],
    created_at: datetime,
) -> list[OutboundMessage]:
    """Encode telemetry samples into as many envelopes as the size bounds require."""
    topic = telemetry_topic(site, device_id)
    route = _Route(SCHEMA_TELEMETRY_V1, site, device_id, device, subject)
    return _encode(topic, route, created_at, samples, _TELEMETRY_ITEMS)


def _encode(
    topic: str, route: _Route, created_at: datetime, items: Sequence[_T], spec: _Items[_T]
) -> list[OutboundMessage]:
    """Split ``items`` into envelopes of at most ``spec.limit`` items and MAX_PAYLOAD_BYTES."""
    subject = route.subject
    if subject.kind not in SUBJECT_KINDS or not subject.ref or len(subject.ref) > MAX_TEXT:
        raise EncodeError(f"invalid subject {subject!r}")
    if not items:
        return []
    out: list[OutboundMessage] = []
    chunk = spec.limit
    start = 0
    while start < len(items):
        part = items[start : start + chunk]
        msg = _encode_one(topic, route, created_at, part, spec)
        if len(msg.payload) > MAX_PAYLOAD_BYTES:
            if chunk == 1:
                raise EncodeError(f"a single {spec.noun} exceeds MAX_PAYLOAD_BYTES")
            chunk = max(1, chunk // 2)
            continue
        out.append(msg)
        start += len(part)
    return out


def _encode_one(
    topic: str, route: _Route, created_at: datetime, items: Sequence[_T], spec: _Items[_T]
) -> OutboundMessage:
    ids = [spec.item_id(route.device, it) for it in items]
    if len(set(ids)) != len(ids):
        raise EncodeError(f"the same {spec.noun} appears twice in one batch")
    msg_id = route.msg_id(ids)
    body = {
        "schema": route.schema,
        "msg_id": msg_id,
        "site": route.site,
        "device_id": route.device_id,
        "device": _device_to_json(route.device),
        "subject": {"kind": route.subject.kind, "ref": route.subject.ref},
        "created_at": _iso(created_at),
        spec.key: [spec.to_json(i, it) for i, it in zip(ids, items, strict=True)],
    }
    payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return OutboundMessage(topic=topic, payload=payload.encode("utf-8"), msg_id=msg_id)


def encode_status(status: AgentStatus) -> OutboundMessage:
    body: dict[str, Any] = {
        "schema": SCHEMA_STATUS_V1,
        "site": status.site,
        "state": status.state,
        "agent_version": status.agent_version,
    }
    if status.at is not None:
        body["at"] = _iso(status.at)
    if status.outbox_pending is not None:
        if status.outbox_pending < 0:
            raise EncodeError(f"outbox_pending {status.outbox_pending} is negative")
        body["outbox_pending"] = status.outbox_pending
    payload = json.dumps(body, separators=(",", ":")).encode()
    return OutboundMessage(
        topic=status_topic(status.site),
        payload=payload,
        msg_id=_digest("status", payload.decode()),
        retain=True,
    )


# --------------------------------------------------------------------------------------------
# decoding (cloud side)


def _fail(code: WireErrorCode, path: str, message: str) -> WireError:
    return WireError(code, path, message)


def _get(obj: Mapping[str, Any], key: str, path: str) -> Any:
    if key not in obj:
        raise _fail(WireErrorCode.MISSING_FIELD, _join(path, key), "required field is missing")
    return obj[key]


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _str(
    obj: Mapping[str, Any], key: str, path: str, *, optional: bool = False, max_len: int = MAX_TEXT
) -> str | None:
    if optional and obj.get(key) is None:
        return None
    v = _get(obj, key, path)
    if not isinstance(v, str):
        raise _fail(
            WireErrorCode.WRONG_TYPE, _join(path, key), f"expected a string, got {_tname(v)}"
        )
    if not v or len(v) > max_len:
        raise _fail(
            WireErrorCode.INVALID_VALUE,
            _join(path, key),
            f"must be 1..{max_len} characters, got {len(v)}",
        )
    return v


def _req_str(obj: Mapping[str, Any], key: str, path: str, max_len: int = MAX_TEXT) -> str:
    v = _str(obj, key, path, max_len=max_len)
    assert v is not None
    return v


def _num(obj: Mapping[str, Any], key: str, path: str, *, optional: bool = False) -> float | None:
    if optional and obj.get(key) is None:
        return None
    v = _get(obj, key, path)
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise _fail(
            WireErrorCode.WRONG_TYPE, _join(path, key), f"expected a number, got {_tname(v)}"
        )
    try:
        f = float(v)
    except OverflowError:
        raise _fail(WireErrorCode.INVALID_VALUE, _join(path, key), "number out of range") from None
    if not math.isfinite(f):
        raise _fail(WireErrorCode.INVALID_VALUE, _join(path, key), "must be finite")
    return f


def _time(obj: Mapping[str, Any], key: str, path: str) -> datetime:
    s = _req_str(obj, key, path, max_len=40)
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise _fail(
            WireErrorCode.INVALID_VALUE, _join(path, key), f"not an ISO 8601 date-time: {s!r}"
        ) from None
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise _fail(
            WireErrorCode.INVALID_VALUE, _join(path, key), f"date-time without a UTC offset: {s!r}"
        )
    try:
        return dt.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 has no UTC equivalent
        raise _fail(
            WireErrorCode.INVALID_VALUE, _join(path, key), f"date-time out of range: {s!r}"
        ) from None


def _obj(v: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(v, dict):
        raise _fail(WireErrorCode.WRONG_TYPE, path, f"expected an object, got {_tname(v)}")
    return v


def _tname(v: Any) -> str:
    return {
        dict: "object",
        list: "array",
        str: "string",
        bool: "boolean",
        int: "number",
        float: "number",
        type(None): "null",
    }.get(type(v), type(v).__name__)


def load_json(payload: bytes) -> Mapping[str, Any]:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise _fail(WireErrorCode.TOO_LARGE, "", f"{len(payload)} bytes > {MAX_PAYLOAD_BYTES}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(WireErrorCode.NOT_UTF8, "", f"invalid UTF-8 at byte {exc.start}") from None
    try:
        doc = _JSON.decode(text)
    except json.JSONDecodeError as exc:
        raise _fail(
            WireErrorCode.NOT_JSON,
            "",
            f"{exc.msg} at line {exc.lineno} column {exc.colno} (char {exc.pos})",
        ) from None
    except RecursionError:
        raise _fail(WireErrorCode.NOT_JSON, "", "nesting too deep") from None
    except ValueError as exc:  # e.g. an integer literal longer than Python converts
        raise _fail(WireErrorCode.NOT_JSON, "", str(exc)[:200]) from None
    if "\\u" in text:
        # Escapes can smuggle in what raw UTF-8 cannot: NUL and lone surrogates. Neither is
        # text (and PostgreSQL refuses both), so refuse them here, with where they are.
        _check_text(doc, "")
    return _obj(doc, "")


_BAD_TEXT: Final = re.compile("[\x00\ud800-\udfff]")


def _check_text(v: Any, path: str) -> None:
    if isinstance(v, str):
        if _BAD_TEXT.search(v):
            raise _fail(WireErrorCode.INVALID_VALUE, path, "NUL or a lone surrogate in text")
    elif isinstance(v, dict):
        for k, item in v.items():
            _check_text(k, path)
            _check_text(item, _join(path, k))
    elif isinstance(v, list):
        for i, item in enumerate(v):
            _check_text(item, f"{path}[{i}]")


def _reject_constant(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not valid JSON", name, 0)


#: One decoder for every payload (``json.loads`` with options builds a new one per call).
_JSON: Final = json.JSONDecoder(parse_constant=_reject_constant)


def _check_schema(doc: Mapping[str, Any], accepted: frozenset[str]) -> None:
    schema = _get(doc, "schema", "")
    if not isinstance(schema, str) or schema not in accepted:
        raise _fail(
            WireErrorCode.UNKNOWN_SCHEMA, "schema", f"{schema!r} is not one of {sorted(accepted)}"
        )


def decode_observations(topic: str, payload: bytes) -> Envelope:
    """Decode and validate one observation message; raise :class:`WireError` on any defect."""
    site_t, device_t = parse_obs_topic(topic)
    doc = load_json(payload)
    _check_schema(doc, ACCEPTED_SCHEMAS)
    return _decode_obs_v1(site_t, device_t, doc)


def decode_events(topic: str, payload: bytes) -> EventEnvelope:
    """Decode and validate one device-event message; raise :class:`WireError` on any defect."""
    r, msg_id, created_at, items = _decode_items(
        parse_event_topic(topic), payload, ACCEPTED_EVENT_SCHEMAS, SCHEMA_EVENT_V1, _EVENT_ITEMS
    )
    events = tuple(_decode_event(r.device, raw, f"events[{i}]") for i, raw in enumerate(items))
    _check_ids(r, msg_id, [e.event_id for e in events], _EVENT_ITEMS, WireErrorCode.DUPLICATE_EVENT)
    return EventEnvelope(
        schema=r.schema,
        msg_id=msg_id,
        site=r.site,
        device_id=r.device_id,
        device=r.device,
        subject=r.subject,
        created_at=created_at,
        events=events,
    )


def decode_telemetry(topic: str, payload: bytes) -> TelemetryEnvelope:
    """Decode and validate one telemetry message; raise :class:`WireError` on any defect."""
    r, msg_id, created_at, items = _decode_items(
        parse_telemetry_topic(topic),
        payload,
        ACCEPTED_TELEMETRY_SCHEMAS,
        SCHEMA_TELEMETRY_V1,
        _TELEMETRY_ITEMS,
    )
    samples = tuple(_decode_sample(r.device, raw, f"samples[{i}]") for i, raw in enumerate(items))
    ids = [x.sample_id for x in samples]
    _check_ids(r, msg_id, ids, _TELEMETRY_ITEMS, WireErrorCode.DUPLICATE_SAMPLE)
    return TelemetryEnvelope(
        schema=r.schema,
        msg_id=msg_id,
        site=r.site,
        device_id=r.device_id,
        device=r.device,
        subject=r.subject,
        created_at=created_at,
        samples=samples,
    )


def _decode_items(
    topic: tuple[str, str],
    payload: bytes,
    accepted: frozenset[str],
    schema: str,
    spec: _Items[Any],
) -> tuple[_Route, str, datetime, list[Any]]:
    """An event or telemetry message up to its unchecked items: JSON, schema, routing fields."""
    doc = load_json(payload)
    _check_schema(doc, accepted)
    return _decode_head(schema, topic[0], topic[1], doc, spec)


def _decode_head(
    schema: str, site_t: str, device_t: str, doc: Mapping[str, Any], spec: _Items[Any]
) -> tuple[_Route, str, datetime, list[Any]]:
    """The checked routing fields of an envelope, its msg_id (to check against its items'
    ids), its created_at and its still unchecked items. A plain tuple: this runs per message."""
    msg_id = _req_str(doc, "msg_id", "", max_len=32)
    if not _HEX32_RE.match(msg_id):
        raise _fail(WireErrorCode.INVALID_VALUE, "msg_id", "must be 32 lowercase hex digits")
    site = _req_str(doc, "site", "")
    device_id = _req_str(doc, "device_id", "")
    if site != site_t or device_id != device_t:
        raise _fail(
            WireErrorCode.TOPIC_MISMATCH,
            "site",
            f"payload says {site}/{device_id}, topic says {site_t}/{device_t}",
        )
    dev = _obj(_get(doc, "device", ""), "device")
    try:
        device = DeviceIdentity(
            manufacturer=_req_str(dev, "manufacturer", "device"),
            model=_req_str(dev, "model", "device"),
            serial=_req_str(dev, "serial", "device"),
            firmware=_str(dev, "firmware", "device", optional=True),
            transport=_req_str(dev, "transport", "device"),
        )
    except ObservationError as exc:
        raise _fail(WireErrorCode.INVALID_VALUE, "device", str(exc)) from None
    subj = _obj(_get(doc, "subject", ""), "subject")
    kind = _req_str(subj, "kind", "subject")
    if kind not in SUBJECT_KINDS:
        raise _fail(
            WireErrorCode.INVALID_VALUE,
            "subject.kind",
            f"{kind!r} is not one of {sorted(SUBJECT_KINDS)}",
        )
    subject = Subject(kind=kind, ref=_req_str(subj, "ref", "subject"))  # type: ignore[arg-type]
    created_at = _time(doc, "created_at", "")
    key = spec.key
    items = _get(doc, key, "")
    if not isinstance(items, list):
        raise _fail(WireErrorCode.WRONG_TYPE, key, f"expected an array, got {_tname(items)}")
    if not 1 <= len(items) <= spec.limit:
        raise _fail(
            WireErrorCode.INVALID_VALUE, key, f"must hold 1..{spec.limit} {key}, got {len(items)}"
        )
    return _Route(schema, site, device_id, device, subject), msg_id, created_at, items


def _check_ids(
    route: _Route, msg_id: str, ids: list[str], spec: _Items[Any], duplicate: WireErrorCode
) -> None:
    """No item twice, and ``msg_id`` matches the routing fields and the items' ids."""
    if len(set(ids)) != len(ids):
        raise _fail(duplicate, spec.key, f"the same {spec.noun} appears twice in one message")
    expected = route.msg_id(ids)
    if expected != msg_id:
        raise _fail(
            WireErrorCode.ID_MISMATCH, "msg_id", f"does not match the content (expected {expected})"
        )


def _decode_obs_v1(site_t: str, device_t: str, doc: Mapping[str, Any]) -> Envelope:
    head = _fast_obs_head(site_t, device_t, doc)
    if head is None:
        r, msg_id, created_at, items = _decode_head(
            SCHEMA_OBS_V1, site_t, device_t, doc, _OBS_ITEMS
        )
        id_base = _obs_id_base(r.device)
    else:
        r, msg_id, created_at, items, id_base = head
    device = r.device
    observations = tuple(
        _fast_obs(device, raw, id_base) or _decode_obs(device, raw, f"observations[{i}]")
        for i, raw in enumerate(items)
    )
    ids = [o.obs_id for o in observations]
    _check_ids(r, msg_id, ids, _OBS_ITEMS, WireErrorCode.DUPLICATE_OBSERVATION)
    return Envelope(
        schema=r.schema,
        msg_id=msg_id,
        site=r.site,
        device_id=r.device_id,
        device=device,
        subject=r.subject,
        created_at=created_at,
        observations=observations,
    )


#: Decoded devices (with the start of their readings' id digest) and subjects by their fields:
#: a fleet sends the same few thousand again and again. Values are immutable; the caches are
#: emptied when full.
_CACHE_LIMIT: Final = 4096
_DEVICES: dict[tuple[str, str, str, str | None, str], tuple[DeviceIdentity, Any]] = {}
_SUBJECTS: dict[tuple[str, str], Subject] = {}


def _obs_id_base(device: DeviceIdentity) -> Any:
    """SHA-256 fed with what :func:`observation_id` hashes before the record key."""
    return hashlib.sha256(f"obs\x1f{device.key}\x1f".encode())


def _text(v: Any, max_len: int = MAX_TEXT) -> bool:
    return type(v) is str and 0 < len(v) <= max_len


def _fast_obs_head(
    site_t: str, device_t: str, doc: Mapping[str, Any]
) -> tuple[_Route, str, datetime, list[Any], Any] | None:
    """:func:`_decode_head` for the common case, with cached devices and subjects; None sends
    the message the careful way (which names the defect). Also returns the id digest base."""
    g: Callable[[str], Any] = doc.get
    msg_id, site, device_id, dev, subj = (
        g("msg_id"),
        g("site"),
        g("device_id"),
        g("device"),
        g("subject"),
    )
    created, items = g("created_at"), g("observations")
    if not (
        type(msg_id) is str
        and len(msg_id) == 32
        and _HEX32_RE.match(msg_id)
        and type(site) is str
        and site == site_t
        and type(device_id) is str
        and device_id == device_t
        and type(dev) is dict
        and type(subj) is dict
        and _text(created, 40)
        and type(items) is list
        and 1 <= len(items) <= MAX_OBSERVATIONS
    ):
        return None
    dg: Callable[[str], Any] = dev.get
    key = (dg("manufacturer"), dg("model"), dg("serial"), dg("firmware"), dg("transport"))
    cached = _DEVICES.get(key) if all(type(v) is str or v is None for v in key) else None
    if cached is None:
        manufacturer, model, serial, firmware, transport = key
        if not (
            _text(manufacturer)
            and _text(model)
            and _text(serial)
            and _opt_text(firmware)
            and _text(transport)
        ):
            return None
        device = DeviceIdentity(
            manufacturer=manufacturer,
            model=model,
            serial=serial,
            firmware=firmware,
            transport=transport,
        )
        cached = (device, _obs_id_base(device))
        if len(_DEVICES) >= _CACHE_LIMIT:
            _DEVICES.clear()
        _DEVICES[key] = cached
    kind, ref = subj.get("kind"), subj.get("ref")
    if not (type(kind) is str and type(ref) is str):
        return None
    subject = _SUBJECTS.get((kind, ref))
    if subject is None:
        if not (kind in SUBJECT_KINDS and _text(ref)):
            return None
        subject = Subject(kind=kind, ref=ref)  # type: ignore[arg-type]
        if len(_SUBJECTS) >= _CACHE_LIMIT:
            _SUBJECTS.clear()
        _SUBJECTS[(kind, ref)] = subject
    try:
        t = datetime.fromisoformat(created)
        if t.tzinfo is not UTC:
            if t.tzinfo is None or t.utcoffset() is None:
                return None
            t = t.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    route = _Route(SCHEMA_OBS_V1, site, device_id, cached[0], subject)
    return route, msg_id, t, items, cached[1]


_ABSENT: Final[Mapping[str, AbsentReason]] = {r.value: r for r in AbsentReason}
_QUALITY: Final[Mapping[str, QualityFlag]] = {
    q.value: q for q in QualityFlag if q not in CLOUD_ONLY_FLAGS
}
_NUMBER: Final = (int, float)
_NO_FLAGS: Final[list[str]] = []


def _opt_text(v: Any, max_len: int = MAX_TEXT) -> bool:
    return v is None or (type(v) is str and 0 < len(v) <= max_len)


def _opt_number(v: Any) -> bool:
    if v is None:
        return True
    if type(v) not in _NUMBER:
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an integer too large for a float
        return False


def _fast_obs(device: DeviceIdentity, o: Any, id_base: Any = None) -> WireObservation | None:
    """The common case, checked with few calls; None sends the item to :func:`_decode_obs`.

    Accepts a subset of what :func:`_decode_obs` accepts and builds the same value (a test holds
    the two to that); anything unusual or wrong goes the careful way, which names the defect.
    ``id_base`` is :func:`_obs_id_base` of ``device`` (computed here when not given).
    """
    if type(o) is not dict:
        return None
    g = o.get
    obs_id, measure, unit, record_key = g("obs_id"), g("measure"), g("unit"), g("record_key")
    eff, prov, value = g("effective_time"), g("provenance"), g("value")
    comparator, absent, device_time = g("comparator"), g("absent_reason"), g("device_time")
    offset, quality = g("clock_offset_s"), g("quality", _NO_FLAGS)
    if not (
        type(obs_id) is str
        and len(obs_id) == 32
        and type(measure) is str
        and 0 < len(measure) <= MAX_TEXT
        and type(unit) is str
        and 0 < len(unit) <= MAX_TEXT
        and type(record_key) is str
        and 0 < len(record_key) <= MAX_TEXT
        and type(eff) is str
        and 0 < len(eff) <= 40
        and type(prov) is dict
        and _opt_number(value)
        and (comparator is None or (type(comparator) is str and comparator in COMPARATORS))
        and (absent is None or (type(absent) is str and absent in _ABSENT))
        and _opt_text(device_time, 40)
        and _opt_number(offset)
        and type(quality) is list
    ):
        return None
    if not quality:
        flags = _NO_QUALITY
    else:
        qkey = tuple(quality)
        if all(type(q) is str for q in qkey):
            cached_flags = _QUALITY_SETS.get(qkey)
            if cached_flags is None:
                if not all(q in _QUALITY for q in qkey):
                    return None
                cached_flags = frozenset(_QUALITY[q] for q in qkey)
                if len(_QUALITY_SETS) >= _CACHE_LIMIT:
                    _QUALITY_SETS.clear()
                _QUALITY_SETS[qkey] = cached_flags
            flags = cached_flags
        else:
            return None
    pg = prov.get
    source, orig_value, orig_unit, raw = (
        pg("source"),
        pg("original_value"),
        pg("original_unit"),
        pg("raw"),
    )
    if not (
        type(source) is str
        and 0 < len(source) <= MAX_TEXT
        and _opt_number(orig_value)
        and _opt_text(orig_unit)
        and _opt_text(raw, 4096)
    ):
        return None
    try:
        t = datetime.fromisoformat(eff)
        if t.tzinfo is not UTC:  # already UTC (a "Z" or "+00:00" time): nothing to convert
            if t.tzinfo is None or t.utcoffset() is None:
                return None
            t = t.astimezone(UTC)
        if orig_value is None and raw is None:
            # the usual provenance (a source, perhaps the original unit): one shared value
            pkey = (source, orig_unit)
            provenance = _PROVENANCES.get(pkey)
            if provenance is None:
                provenance = Provenance(source=source, original_unit=orig_unit)
                if len(_PROVENANCES) >= _CACHE_LIMIT:
                    _PROVENANCES.clear()
                _PROVENANCES[pkey] = provenance
        else:
            provenance = Provenance(
                source=source,
                original_value=None if orig_value is None else float(orig_value),
                original_unit=orig_unit,
                raw=raw,
            )
        observation = Observation(
            measure=measure,
            unit=unit,
            effective_time=t,
            record_key=record_key,
            provenance=provenance,
            value=None if value is None else float(value),
            comparator=cast("Comparator | None", comparator),
            absent_reason=None if absent is None else _ABSENT[absent],
            device_time=device_time,
            clock_offset_s=None if offset is None else float(offset),
            quality=flags,
        )
    except (ValueError, OverflowError, ObservationError):
        return None
    if id_base is None:
        if obs_id != observation_id(device, record_key, measure):
            return None
    else:
        h = id_base.copy()
        h.update(f"{record_key}\x1f{measure}\x1f".encode())
        if obs_id != h.hexdigest()[:32]:
            return None
    return WireObservation(obs_id=obs_id, observation=observation)


_NO_QUALITY: Final[frozenset[QualityFlag]] = frozenset()
_QUALITY_SETS: dict[tuple[str, ...], frozenset[QualityFlag]] = {}
_PROVENANCES: dict[tuple[str, str | None], Provenance] = {}


def _decode_obs(device: DeviceIdentity, raw: Any, path: str) -> WireObservation:
    o = _obj(raw, path)
    obs_id = _req_str(o, "obs_id", path, max_len=32)
    measure = _req_str(o, "measure", path)
    unit = _req_str(o, "unit", path)
    record_key = _req_str(o, "record_key", path)
    value = _num(o, "value", path, optional=True)
    comparator = _str(o, "comparator", path, optional=True, max_len=2)
    if comparator is not None and comparator not in COMPARATORS:
        raise _fail(
            WireErrorCode.INVALID_VALUE,
            _join(path, "comparator"),
            f"{comparator!r} is not one of {sorted(COMPARATORS)}",
        )
    absent_raw = _str(o, "absent_reason", path, optional=True, max_len=32)
    absent: AbsentReason | None = None
    if absent_raw is not None:
        try:
            absent = AbsentReason(absent_raw)
        except ValueError:
            raise _fail(
                WireErrorCode.INVALID_VALUE,
                _join(path, "absent_reason"),
                f"unknown absent reason {absent_raw!r}",
            ) from None
    quality = _decode_quality(o, path)
    try:
        provenance = _decode_provenance(o, path)
        observation = Observation(
            measure=measure,
            unit=unit,
            effective_time=_time(o, "effective_time", path),
            record_key=record_key,
            provenance=provenance,
            value=value,
            comparator=comparator,  # type: ignore[arg-type]
            absent_reason=absent,
            device_time=_str(o, "device_time", path, optional=True, max_len=40),
            clock_offset_s=_num(o, "clock_offset_s", path, optional=True),
            quality=quality,
        )
    except ObservationError as exc:
        raise _fail(WireErrorCode.INVALID_VALUE, path, str(exc)) from None
    expected = observation_id(device, record_key, measure)
    if obs_id != expected:
        raise _fail(
            WireErrorCode.ID_MISMATCH,
            _join(path, "obs_id"),
            f"does not match device, record_key and measure (expected {expected})",
        )
    return WireObservation(obs_id=obs_id, observation=observation)


def _decode_quality(o: Mapping[str, Any], path: str) -> frozenset[QualityFlag]:
    quality_raw = o.get("quality", [])
    if not isinstance(quality_raw, list):
        raise _fail(WireErrorCode.WRONG_TYPE, _join(path, "quality"), "expected an array")
    quality: set[QualityFlag] = set()
    for i, q in enumerate(quality_raw):
        flag = _QUALITY.get(q) if isinstance(q, str) else None
        if flag is None:
            why = (
                f"quality flag {q!r} is set by the cloud only"
                if q in {f.value for f in CLOUD_ONLY_FLAGS}
                else f"unknown quality flag {q!r}"
            )
            raise _fail(WireErrorCode.INVALID_VALUE, f"{path}.quality[{i}]", why)
        quality.add(flag)
    return frozenset(quality)


def _decode_provenance(o: Mapping[str, Any], path: str) -> Provenance:
    ppath = _join(path, "provenance")
    prov = _obj(_get(o, "provenance", path), ppath)
    return Provenance(
        source=_req_str(prov, "source", ppath),
        original_value=_num(prov, "original_value", ppath, optional=True),
        original_unit=_str(prov, "original_unit", ppath, optional=True),
        raw=_str(prov, "raw", ppath, optional=True, max_len=4096),
    )


_EVENT_KINDS: Final[Mapping[str, EventKind]] = {k.value: k for k in EventKind}


def _decode_event(device: DeviceIdentity, raw: Any, path: str) -> WireEvent:
    o = _obj(raw, path)
    eid = _req_str(o, "event_id", path, max_len=32)
    kind_raw = _req_str(o, "kind", path, max_len=32)
    kind = _EVENT_KINDS.get(kind_raw)
    if kind is None:
        raise _fail(
            WireErrorCode.INVALID_VALUE, _join(path, "kind"), f"unknown event kind {kind_raw!r}"
        )
    record_key = _req_str(o, "record_key", path)
    dose_id = _str(o, "dose_id", path, optional=True, max_len=64)
    if dose_id is None and kind in DOSE_KINDS:
        raise _fail(
            WireErrorCode.MISSING_FIELD,
            _join(path, "dose_id"),
            f"a {kind_raw} event needs its dose_id",
        )
    event_time = _time(o, "event_time", path)
    scheduled = None if o.get("scheduled_time") is None else _time(o, "scheduled_time", path)
    quality = _decode_quality(o, path)
    try:
        event = DeviceEvent(
            kind=kind,
            event_time=event_time,
            record_key=record_key,
            provenance=_decode_provenance(o, path),
            dose_id=dose_id,
            scheduled_time=scheduled,
            device_time=_str(o, "device_time", path, optional=True, max_len=40),
            clock_offset_s=_num(o, "clock_offset_s", path, optional=True),
            details=_decode_details(o, path),
            quality=quality,
        )
    except ObservationError as exc:
        raise _fail(WireErrorCode.INVALID_VALUE, path, str(exc)) from None
    expected = event_id(device, record_key, kind)
    if eid != expected:
        raise _fail(
            WireErrorCode.ID_MISMATCH,
            _join(path, "event_id"),
            f"does not match device, record_key and kind (expected {expected})",
        )
    return WireEvent(event_id=eid, event=event)


def _decode_details(o: Mapping[str, Any], path: str) -> dict[str, DetailValue]:
    """A flat object of at most MAX_DETAILS string, number or boolean values (absent: none)."""
    raw = o.get("details")
    if raw is None:
        return {}
    dpath = _join(path, "details")
    if not isinstance(raw, dict):
        raise _fail(WireErrorCode.WRONG_TYPE, dpath, f"expected an object, got {_tname(raw)}")
    if len(raw) > MAX_DETAILS:
        raise _fail(WireErrorCode.INVALID_VALUE, dpath, f"at most {MAX_DETAILS}, got {len(raw)}")
    for k, v in raw.items():
        if not 1 <= len(k) <= 32:
            raise _fail(WireErrorCode.INVALID_VALUE, dpath, f"key {k[:40]!r}: 1..32 characters")
        if isinstance(v, str):
            if len(v) > MAX_DETAIL_TEXT:
                raise _fail(
                    WireErrorCode.INVALID_VALUE, _join(dpath, k), f"longer than {MAX_DETAIL_TEXT}"
                )
        elif isinstance(v, float):
            if not math.isfinite(v):  # e.g. 1e999, which JSON parsers read as infinity
                raise _fail(WireErrorCode.INVALID_VALUE, _join(dpath, k), "must be finite")
        elif not isinstance(v, int):  # int covers bool
            raise _fail(
                WireErrorCode.WRONG_TYPE,
                _join(dpath, k),
                f"expected a string, number or boolean, got {_tname(v)}",
            )
    return raw


_LINK: Final[Mapping[str, LinkState]] = {s.value: s for s in LinkState}


def _whole(o: Mapping[str, Any], key: str, path: str, lo: int, hi: int) -> int | None:
    """An optional whole number within lo..hi (1.0 is accepted as 1; 1.5 is not)."""
    v = _num(o, key, path, optional=True)
    if v is None:
        return None
    if not v.is_integer() or not lo <= v <= hi:
        raise _fail(
            WireErrorCode.INVALID_VALUE, _join(path, key), f"must be a whole number {lo}..{hi}"
        )
    return int(v)


def _decode_sample(device: DeviceIdentity, raw: Any, path: str) -> WireTelemetry:
    o = _obj(raw, path)
    sid = _req_str(o, "sample_id", path, max_len=32)
    at = _time(o, "at", path)
    link_text = _str(o, "link", path, optional=True)
    link = None
    if link_text is not None:
        link = _LINK.get(link_text)
        if link is None:
            raise _fail(
                WireErrorCode.INVALID_VALUE,
                _join(path, "link"),
                f"{link_text!r} is not one of {sorted(_LINK)}",
            )
    try:
        t = DeviceTelemetry(
            at=at,
            battery_pct=_whole(o, "battery_pct", path, 0, 100),
            rssi_dbm=_whole(o, "rssi_dbm", path, RSSI_MIN_DBM, RSSI_MAX_DBM),
            link=link,
            clock_offset_s=_num(o, "clock_offset_s", path, optional=True),
        )
    except ObservationError as exc:
        raise _fail(WireErrorCode.INVALID_VALUE, path, str(exc)) from None
    expected = telemetry_id(device, at)
    if sid != expected:
        raise _fail(
            WireErrorCode.ID_MISMATCH,
            _join(path, "sample_id"),
            f"does not match the content (expected {expected})",
        )
    return WireTelemetry(sample_id=sid, telemetry=t)


def decode_status(topic: str, payload: bytes) -> AgentStatus:
    parts = topic.split("/")
    if len(parts) != 5 or parts[3] != "_agent" or parts[4] != "status" or not is_token(parts[2]):
        raise _fail(WireErrorCode.BAD_TOPIC, "topic", f"not a status topic: {topic[:200]!r}")
    doc = load_json(payload)
    if doc.get("schema") != SCHEMA_STATUS_V1:
        raise _fail(WireErrorCode.UNKNOWN_SCHEMA, "schema", f"{doc.get('schema')!r}")
    site = _req_str(doc, "site", "")
    if site != parts[2]:
        raise _fail(WireErrorCode.TOPIC_MISMATCH, "site", f"payload {site}, topic {parts[2]}")
    state = _req_str(doc, "state", "")
    if state not in ("online", "offline"):
        raise _fail(WireErrorCode.INVALID_VALUE, "state", f"{state!r}")
    at = _time(doc, "at", "") if doc.get("at") is not None else None
    return AgentStatus(
        site=site,
        state=state,  # type: ignore[arg-type]
        at=at,
        agent_version=_req_str(doc, "agent_version", ""),
        outbox_pending=_whole(doc, "outbox_pending", "", 0, 2**53),
    )


# --------------------------------------------------------------------------------------------
# kiosk visit envelope (remon.visit/1)
#
# One message per self-measurement visit at a kiosk: the identified patient, the visit's span,
# every device's readings as ordinary ``remon.obs/1`` envelopes (each with its own ids), and the
# questionnaire answers. One message, so the cloud stores a visit whole or not at all, and the
# kiosk can wipe the visit the moment this message's PUBACK arrives.

SCHEMA_VISIT_V1: Final = "remon.visit/1"
ACCEPTED_VISIT_SCHEMAS: Final[frozenset[str]] = frozenset({SCHEMA_VISIT_V1})
VISIT_SUBSCRIPTION: Final = f"{TOPIC_ROOT}/+/_kiosk/visit"
#: Devices one visit may carry readings from, and questionnaire answers per visit.
MAX_VISIT_PARTS: Final = 32
MAX_ANSWERS: Final = 64
#: Visit summaries (e.g. the BP result by the kiosk protocol) and values in each.
MAX_SUMMARIES: Final = 16
MAX_SUMMARY_VALUES: Final = 16
#: How far a reading may lie outside its visit's span (device and hub clocks; the kiosk's own
#: binding check allows the same, edge_agent.kiosk_session.KioskTimeouts.clock_tolerance).
VISIT_TIME_TOLERANCE: Final = timedelta(seconds=5)
#: The longest visit the cloud accepts (the kiosk's timeouts end a visit far sooner).
MAX_VISIT_SPAN: Final = timedelta(hours=2)

AnswerValue = str | bool | int | float


@dataclass(frozen=True, slots=True, kw_only=True)
class VisitPart:
    """What the kiosk encodes for one device of a visit."""

    device_id: str
    device: DeviceIdentity
    observations: Sequence[Observation]


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    """One questionnaire answer: the question's id (a token) and the patient's answer."""

    id: str
    value: AnswerValue


@dataclass(frozen=True, slots=True, kw_only=True)
class VisitSummary:
    """A result the kiosk derived from the visit's readings, e.g. ``bp``: systolic, diastolic,
    pulse, readings; ``method`` says how (for the record; the readings themselves are sent)."""

    id: str
    values: Mapping[str, float]
    method: str


@dataclass(frozen=True, slots=True, kw_only=True)
class VisitEnvelope:
    schema: str
    msg_id: str
    site: str
    visit_ref: str
    subject: Subject
    started_at: datetime
    ended_at: datetime
    created_at: datetime
    #: each device's readings, as observation envelopes of their own (site and subject the
    #: visit's); their msg_ids are part of the visit's
    parts: tuple[Envelope, ...]
    answers: tuple[Answer, ...] = ()
    #: how many measurements the kiosk refused to bind to this visit (a count, no values)
    quarantined: int = 0
    summaries: tuple[VisitSummary, ...] = ()

    @property
    def observation_count(self) -> int:
        return sum(len(p.observations) for p in self.parts)


def visit_topic(site: str) -> str:
    _check_token("site", site)
    return f"{TOPIC_ROOT}/{site}/_kiosk/visit"


def parse_visit_topic(topic: str) -> str:
    parts = topic.split("/")
    if (
        len(parts) != 5
        or f"{parts[0]}/{parts[1]}" != TOPIC_ROOT
        or parts[3] != "_kiosk"
        or parts[4] != "visit"
        or not is_token(parts[2])
    ):
        raise _fail(WireErrorCode.BAD_TOPIC, "topic", f"not a visit topic: {topic[:200]!r}")
    return parts[2]


def _answer_text(value: AnswerValue) -> str:
    """The canonical JSON text of an answer's value (what the msg_id covers)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def visit_message_id(
    *,
    site: str,
    visit_ref: str,
    subject: Subject,
    started_at: datetime,
    ended_at: datetime,
    quarantined: int,
    part_ids: Sequence[str],
    answers: Sequence[Answer],
    summaries: Sequence[VisitSummary] = (),
) -> str:
    """The visit's ``msg_id``: its routing fields, span, parts' msg_ids, answers and
    summaries, in order."""
    return _digest(
        "msg",
        SCHEMA_VISIT_V1,
        site,
        visit_ref,
        subject.kind,
        subject.ref,
        _iso(started_at),
        _iso(ended_at),
        str(quarantined),
        *part_ids,
        *(f"{a.id}={_answer_text(a.value)}" for a in answers),
        *(_summary_text(s) for s in summaries),
    )


def _summary_text(s: VisitSummary) -> str:
    values = json.dumps(dict(sorted(s.values.items())), allow_nan=False)
    return f"summary:{s.id}={values}|{s.method}"


def summary_problem(s: VisitSummary) -> str | None:
    """What is wrong with a visit summary, or None."""
    if not is_token(s.id):
        return f"summary id {s.id!r} must match {_TOKEN_RE.pattern}"
    if not s.method or len(s.method) > MAX_TEXT or _BAD_TEXT.search(s.method):
        return f"summary {s.id}: method must be 1..{MAX_TEXT} characters"
    if not 1 <= len(s.values) <= MAX_SUMMARY_VALUES:
        return f"summary {s.id}: 1..{MAX_SUMMARY_VALUES} values"
    for name, v in s.values.items():
        if not is_token(name):
            return f"summary {s.id}: value name {name!r} must match {_TOKEN_RE.pattern}"
        if isinstance(v, bool) or not isinstance(v, int | float):
            return f"summary {s.id}: {name} must be a number"
        if abs(v) > 2**53 or not math.isfinite(v):
            return f"summary {s.id}: {name} must be finite"
    return None


def answer_problem(a: Answer) -> str | None:
    """What is wrong with an answer, or None."""
    if not is_token(a.id):
        return f"answer id {a.id!r} must match {_TOKEN_RE.pattern}"
    v = a.value
    if isinstance(v, str):
        if not v or len(v) > MAX_TEXT or _BAD_TEXT.search(v):
            return f"answer {a.id}: text must be 1..{MAX_TEXT} characters, no NUL"
    elif isinstance(v, bool):
        pass
    elif isinstance(v, int | float):
        if abs(v) > 2**53 or not math.isfinite(v):  # (isfinite of a huge int overflows)
            return f"answer {a.id}: a number must be finite and at most 2**53"
    else:
        return f"answer {a.id}: {type(v).__name__} is not a string, number or boolean"
    return None


def _check_visit_span(
    started_at: datetime, ended_at: datetime, fail: Callable[[str], Exception]
) -> None:
    if ended_at < started_at:
        raise fail(f"ended_at {_iso(ended_at)} is before started_at {_iso(started_at)}")
    if ended_at - started_at > MAX_VISIT_SPAN:
        raise fail(f"a visit lasts at most {MAX_VISIT_SPAN}, this one {ended_at - started_at}")


def _outside_visit(o: Observation, started_at: datetime, ended_at: datetime) -> bool:
    t = o.effective_time
    return t < started_at - VISIT_TIME_TOLERANCE or t > ended_at + VISIT_TIME_TOLERANCE


def encode_visit(
    *,
    site: str,
    visit_ref: str,
    subject: Subject,
    started_at: datetime,
    ended_at: datetime,
    parts: Sequence[VisitPart],
    answers: Sequence[Answer] = (),
    quarantined: int = 0,
    summaries: Sequence[VisitSummary] = (),
    created_at: datetime,
) -> OutboundMessage:
    """One visit, one message (never split: a visit is stored whole or not at all)."""
    topic = visit_topic(site)
    if subject.kind != "patient" or not subject.ref or len(subject.ref) > MAX_TEXT:
        raise EncodeError(f"a visit belongs to an identified patient, not {subject!r}")
    if not visit_ref or len(visit_ref) > MAX_TEXT:
        raise EncodeError(f"invalid visit ref {visit_ref!r}")
    _check_visit_span(started_at, ended_at, EncodeError)
    if not 1 <= len(parts) <= MAX_VISIT_PARTS:
        raise EncodeError(f"a visit carries 1..{MAX_VISIT_PARTS} devices, got {len(parts)}")
    if len({p.device_id for p in parts}) != len(parts):
        raise EncodeError("a device appears twice in one visit")
    if len(answers) > MAX_ANSWERS or len({a.id for a in answers}) != len(answers):
        raise EncodeError(f"at most {MAX_ANSWERS} answers, each question once")
    for a in answers:
        problem = answer_problem(a)
        if problem:
            raise EncodeError(problem)
    if quarantined < 0:
        raise EncodeError(f"quarantined {quarantined} is negative")
    if len(summaries) > MAX_SUMMARIES or len({s.id for s in summaries}) != len(summaries):
        raise EncodeError(f"at most {MAX_SUMMARIES} summaries, each id once")
    for s in summaries:
        problem = summary_problem(s)
        if problem:
            raise EncodeError(problem)
    docs: list[Any] = []
    part_ids: list[str] = []
    for p in parts:
        late = [o for o in p.observations if _outside_visit(o, started_at, ended_at)]
        if late:
            raise EncodeError(f"{p.device_id}: a reading outside the visit ({late[0].measure})")
        msgs = encode_observations(
            site=site,
            device_id=p.device_id,
            device=p.device,
            subject=subject,
            observations=p.observations,
            created_at=created_at,
        )
        if len(msgs) != 1:
            raise EncodeError(f"{p.device_id}: a visit part must be one envelope, not {len(msgs)}")
        docs.append(json.loads(msgs[0].payload))
        part_ids.append(msgs[0].msg_id)
    msg_id = visit_message_id(
        site=site,
        visit_ref=visit_ref,
        subject=subject,
        started_at=started_at,
        ended_at=ended_at,
        quarantined=quarantined,
        part_ids=part_ids,
        answers=answers,
        summaries=summaries,
    )
    body: dict[str, Any] = {
        "schema": SCHEMA_VISIT_V1,
        "msg_id": msg_id,
        "site": site,
        "visit": {
            "ref": visit_ref,
            "started_at": _iso(started_at),
            "ended_at": _iso(ended_at),
            "quarantined": quarantined,
        },
        "subject": {"kind": subject.kind, "ref": subject.ref},
        "created_at": _iso(created_at),
        "parts": docs,
    }
    if answers:
        body["answers"] = [{"id": a.id, "value": a.value} for a in answers]
    if summaries:
        body["summaries"] = [
            {"id": s.id, "values": dict(s.values), "method": s.method} for s in summaries
        ]
    payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    data = payload.encode("utf-8")
    if len(data) > MAX_PAYLOAD_BYTES:
        raise EncodeError(f"a visit of {len(data)} bytes exceeds MAX_PAYLOAD_BYTES")
    return OutboundMessage(topic=topic, payload=data, msg_id=msg_id)


def _prefixed(exc: WireError, prefix: str) -> WireError:
    return _fail(exc.code, _join(prefix, exc.path) if exc.path else prefix, exc.detail)


def decode_visit(topic: str, payload: bytes) -> VisitEnvelope:
    """Decode and validate one visit message; raise :class:`WireError` on any defect.

    Besides every check of its parts' observation envelopes: each part is the visit's site and
    patient, no device twice, every reading inside the visit's span (± the clock tolerance),
    and the visit's msg_id covers its span, parts and answers.
    """
    site_t = parse_visit_topic(topic)
    doc = load_json(payload)
    _check_schema(doc, ACCEPTED_VISIT_SCHEMAS)
    msg_id = _req_str(doc, "msg_id", "", max_len=32)
    if not _HEX32_RE.match(msg_id):
        raise _fail(WireErrorCode.INVALID_VALUE, "msg_id", "must be 32 lowercase hex digits")
    site = _req_str(doc, "site", "")
    if site != site_t:
        raise _fail(WireErrorCode.TOPIC_MISMATCH, "site", f"payload {site}, topic {site_t}")
    visit = _obj(_get(doc, "visit", ""), "visit")
    visit_ref = _req_str(visit, "ref", "visit")
    started_at = _time(visit, "started_at", "visit")
    ended_at = _time(visit, "ended_at", "visit")
    _check_visit_span(
        started_at,
        ended_at,
        lambda why: _fail(WireErrorCode.INVALID_VALUE, "visit.ended_at", why),
    )
    quarantined = _whole(visit, "quarantined", "visit", 0, 10_000) or 0
    subj = _obj(_get(doc, "subject", ""), "subject")
    kind = _req_str(subj, "kind", "subject")
    if kind != "patient":
        raise _fail(
            WireErrorCode.INVALID_VALUE, "subject.kind", f"a visit is a patient's, not {kind!r}"
        )
    subject = Subject(kind="patient", ref=_req_str(subj, "ref", "subject"))
    created_at = _time(doc, "created_at", "")
    raw_parts = _get(doc, "parts", "")
    if not isinstance(raw_parts, list):
        raise _fail(
            WireErrorCode.WRONG_TYPE, "parts", f"expected an array, got {_tname(raw_parts)}"
        )
    if not 1 <= len(raw_parts) <= MAX_VISIT_PARTS:
        raise _fail(WireErrorCode.INVALID_VALUE, "parts", f"must hold 1..{MAX_VISIT_PARTS} parts")
    parts: list[Envelope] = []
    for i, raw in enumerate(raw_parts):
        path = f"parts[{i}]"
        part = _obj(raw, path)
        try:
            _check_schema(part, ACCEPTED_SCHEMAS)
            device_id = _req_str(part, "device_id", "")
            if not is_token(device_id):
                raise _fail(WireErrorCode.INVALID_VALUE, "device_id", "not a device id token")
            env = _decode_obs_v1(site, device_id, part)
        except WireError as exc:
            raise _prefixed(exc, path) from None
        if env.subject != subject:
            raise _fail(
                WireErrorCode.INVALID_VALUE,
                f"{path}.subject",
                "a part must be the visit's patient",
            )
        for j, w in enumerate(env.observations):
            if _outside_visit(w.observation, started_at, ended_at):
                raise _fail(
                    WireErrorCode.INVALID_VALUE,
                    f"{path}.observations[{j}].effective_time",
                    f"{_iso(w.observation.effective_time)} is outside the visit "
                    f"({_iso(started_at)} - {_iso(ended_at)}, ± {VISIT_TIME_TOLERANCE})",
                )
        parts.append(env)
    if len({p.device_id for p in parts}) != len(parts):
        raise _fail(WireErrorCode.INVALID_VALUE, "parts", "a device appears twice in one visit")
    answers: list[Answer] = []
    raw_answers = doc.get("answers")
    if raw_answers is not None:
        if not isinstance(raw_answers, list):
            raise _fail(
                WireErrorCode.WRONG_TYPE, "answers", f"expected an array, got {_tname(raw_answers)}"
            )
        if len(raw_answers) > MAX_ANSWERS:
            raise _fail(WireErrorCode.INVALID_VALUE, "answers", f"at most {MAX_ANSWERS} answers")
        for i, raw in enumerate(raw_answers):
            path = f"answers[{i}]"
            item = _obj(raw, path)
            aid = _req_str(item, "id", path, max_len=63)
            value = _get(item, "value", path)
            a = Answer(id=aid, value=value)
            if isinstance(value, list | dict) or value is None:
                raise _fail(
                    WireErrorCode.WRONG_TYPE,
                    f"{path}.value",
                    f"expected a string, number or boolean, got {_tname(value)}",
                )
            problem = answer_problem(a)
            if problem:
                raise _fail(WireErrorCode.INVALID_VALUE, path, problem)
            answers.append(a)
        if len({a.id for a in answers}) != len(answers):
            raise _fail(WireErrorCode.INVALID_VALUE, "answers", "a question is answered twice")
    summaries = _decode_summaries(doc.get("summaries"))
    expected = visit_message_id(
        site=site,
        visit_ref=visit_ref,
        subject=subject,
        started_at=started_at,
        ended_at=ended_at,
        quarantined=quarantined,
        part_ids=[p.msg_id for p in parts],
        answers=answers,
        summaries=summaries,
    )
    if expected != msg_id:
        raise _fail(
            WireErrorCode.ID_MISMATCH, "msg_id", f"does not match the content (expected {expected})"
        )
    return VisitEnvelope(
        schema=SCHEMA_VISIT_V1,
        msg_id=msg_id,
        site=site,
        visit_ref=visit_ref,
        subject=subject,
        started_at=started_at,
        ended_at=ended_at,
        created_at=created_at,
        parts=tuple(parts),
        answers=tuple(answers),
        quarantined=quarantined,
        summaries=tuple(summaries),
    )


def _decode_summaries(raw: Any) -> list[VisitSummary]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _fail(WireErrorCode.WRONG_TYPE, "summaries", f"expected an array, got {_tname(raw)}")
    if len(raw) > MAX_SUMMARIES:
        raise _fail(WireErrorCode.INVALID_VALUE, "summaries", f"at most {MAX_SUMMARIES}")
    out: list[VisitSummary] = []
    for i, item in enumerate(raw):
        path = f"summaries[{i}]"
        o = _obj(item, path)
        values = _obj(_get(o, "values", path), f"{path}.values")
        s = VisitSummary(
            id=_req_str(o, "id", path, max_len=63),
            values=dict(values),
            method=_req_str(o, "method", path),
        )
        problem = summary_problem(s)
        if problem:
            raise _fail(WireErrorCode.INVALID_VALUE, path, problem)
        out.append(s)
    if len({s.id for s in out}) != len(out):
        raise _fail(WireErrorCode.INVALID_VALUE, "summaries", "a summary id appears twice")
    return out
