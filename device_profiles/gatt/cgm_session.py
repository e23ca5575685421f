"""Sans-I/O CGM session procedure (PROTOCOLS.md "CGM service 0x181F").

Twin of :mod:`device_profiles.gatt.glucose_download` in shape (h11 style): the transport calls
:meth:`CgmSession.start`, :meth:`~CgmSession.receive` (read answers, notifications,
indications), :meth:`~CgmSession.timeout` (when the timer it was asked to start fires),
:meth:`~CgmSession.disconnected`, and the caller may queue SOCP requests with
:meth:`~CgmSession.set_interval`, :meth:`~CgmSession.start_session` and
:meth:`~CgmSession.stop_session`. Each call returns ``list[Command | Event]`` in order.

Flow: read Feature 0x2AA8 (E2E-CRC supported? its own CRC is verified by the codec) -> Status
0x2AA9 -> Session Start Time 0x2AAA -> Session Run Time 0x2AAB -> :class:`SessionInfo` ->
subscribe CGM Measurement 0x2AA7 (notify) and SOCP 0x2AAC (indicate) -> queued SOCP requests,
one outstanding at a time, each answered by op 28 (:class:`SocpResult`).

Decisions:

* Times: ``now`` is always an aware hub (UTC) time. Absolute record time = session start (with
  its zone/DST) + time offset minutes. When the start time is unknown (no date, zone or DST) or
  undecodable, the start is *estimated* as "hub time of the Status read minus the Status time
  offset" (or, without a usable Status, "hub time of the first record minus its offset") and
  every reading carries ``start_time_estimated=True``.
* ``clock_offset_s`` = (start + Status time offset) - hub time of the Status read: how far the
  sensor's clock is from ours (minute resolution, so +-60 s is noise). None when estimated.
* Each record of a notification is decoded on its own (its size byte delimits it), so a CRC
  mismatch or bad record yields :class:`MalformedData` for that record only; a bad size byte
  loses the rest of that notification. Offsets in :class:`MalformedData` are notification-wide.
* A record whose time offset equals the last emitted one is a re-send: dropped silently
  (counted in :attr:`CgmSession.duplicates`). A smaller offset is a
  :class:`PeerProtocolViolation` and the record is dropped. After a successful "start session"
  the offsets restart: the start time is re-read and measurements arriving meanwhile are held.
  Status is not re-read then, so ``clock_offset_s`` becomes None for the new session.
* Fatal: undecodable Feature (the CRC mode is unknown), a read or SOCP response timeout while
  reading the session parameters, disconnect. A SOCP timeout while streaming only fails that
  request (:class:`SocpResult` with ``response_code=None``).
* Optional ``silence_timeout_s``: while streaming, no measurement for that long yields one
  :class:`StreamStalled` per silent period; the stream is not ended.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum, StrEnum
from typing import Final

from device_profiles.gatt.cgm import (
    CgmFeature,
    CgmMeasurement,
    CgmStatus,
    SocpMessage,
    SocpOpCode,
    SocpResponseCode,
    decode_cgm_feature,
    decode_cgm_measurements,
    decode_cgm_session_run_time,
    decode_cgm_session_start_time,
    decode_cgm_status,
    decode_socp,
    encode_socp,
)
from device_profiles.gatt.glucose_download import (
    CancelTimer,
    EnableIndications,
    EnableNotifications,
    LocalProtocolError,
    MalformedData,
    StartTimer,
    WriteControlPoint,
)
from device_profiles.gatt.ieee11073 import DecodeError

__all__ = [
    "FEATURE_UUID",
    "MEASUREMENT_UUID",
    "RUN_TIME_UUID",
    "SOCP_UUID",
    "START_TIME_UUID",
    "STATUS_UUID",
    "CancelTimer",
    "CgmReading",
    "CgmSession",
    "Command",
    "EnableIndications",
    "EnableNotifications",
    "Event",
    "FailureKind",
    "LocalProtocolError",
    "MalformedData",
    "Output",
    "PeerProtocolViolation",
    "ReadCharacteristic",
    "SessionFailed",
    "SessionInfo",
    "SocpResult",
    "StartTimer",
    "StreamStalled",
    "ViolationKind",
    "WriteControlPoint",
]

MEASUREMENT_UUID: Final = 0x2AA7
FEATURE_UUID: Final = 0x2AA8
STATUS_UUID: Final = 0x2AA9
START_TIME_UUID: Final = 0x2AAA
RUN_TIME_UUID: Final = 0x2AAB
SOCP_UUID: Final = 0x2AAC


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadCharacteristic:
    """Read this value; pass the answer to :meth:`CgmSession.receive` with the same uuid."""

    uuid: int


Command = (
    ReadCharacteristic
    | EnableNotifications
    | EnableIndications
    | WriteControlPoint
    | StartTimer
    | CancelTimer
)


# --------------------------------------------------------------------------- events


class FailureKind(StrEnum):
    MALFORMED_FEATURE = "malformed_feature"
    TIMEOUT = "timeout"
    DISCONNECTED = "disconnected"


class ViolationKind(StrEnum):
    TIME_OFFSET_BACKWARDS = "time_offset_backwards"
    UNEXPECTED_SOCP = "unexpected_socp"
    UNEXPECTED_VALUE = "unexpected_value"


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionInfo:
    feature: CgmFeature
    status: CgmStatus | None
    start_time_utc: datetime | None  # None: estimated from the first record later
    start_time_estimated: bool
    run_time_hours: int | None
    clock_offset_s: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class CgmReading:
    measurement: CgmMeasurement
    absolute_time_utc: datetime
    time_offset_min: int
    clock_offset_s: float | None
    start_time_estimated: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class SocpResult:
    """Answer to one SOCP request; ``response_code`` None = no answer in time."""

    request: SocpOpCode
    response_code: SocpResponseCode | None
    interval_minutes: int | None = None

    @property
    def success(self) -> bool:
        return self.response_code is SocpResponseCode.SUCCESS


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerProtocolViolation:
    kind: ViolationKind
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamStalled:
    silent_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionFailed:
    reason: str
    kind: FailureKind


Event = (
    SessionInfo
    | CgmReading
    | SocpResult
    | MalformedData
    | PeerProtocolViolation
    | StreamStalled
    | SessionFailed
)
Output = Command | Event


# --------------------------------------------------------------------------- state machine


class _State(Enum):
    IDLE = "idle"
    READING = "reading"  # initial parameter reads
    STREAMING = "streaming"
    CLOSED = "closed"


_READ_ORDER: Final = (FEATURE_UUID, STATUS_UUID, START_TIME_UUID, RUN_TIME_UUID)
_MIN_RECORD: Final = 6


def _require_aware(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise LocalProtocolError("now must be an aware datetime")
    return now


class CgmSession:
    """One connection's CGM session: parameter reads, live measurement stream, SOCP requests."""

    def __init__(
        self,
        *,
        response_timeout_s: float = 30.0,
        silence_timeout_s: float | None = None,
    ) -> None:
        if not response_timeout_s > 0:
            raise ValueError("response_timeout_s must be positive")
        if silence_timeout_s is not None and not silence_timeout_s > 0:
            raise ValueError("silence_timeout_s must be positive")
        self.response_timeout_s = response_timeout_s
        self.silence_timeout_s = silence_timeout_s
        self._state = _State.IDLE
        self._crc = False
        self._feature: CgmFeature | None = None
        self._status: CgmStatus | None = None
        self._status_at: datetime | None = None
        self._start: datetime | None = None
        self._estimated = False
        self._clock_offset: float | None = None
        self._run_time: int | None = None
        self._pending_read: int | None = None
        self._request_since: datetime | None = None
        self._socp_queue: deque[SocpMessage] = deque()
        self._socp_pending: SocpMessage | None = None
        self._held: list[tuple[bytes, datetime]] = []
        self._last_offset: int | None = None
        self._last_rx: datetime | None = None
        self._stall_reported = False
        self.duplicates = 0
        self.malformed_count = 0

    # ------------------------------------------------------------------ public state

    @property
    def finished(self) -> bool:
        return self._state is _State.CLOSED

    @property
    def streaming(self) -> bool:
        return self._state is _State.STREAMING

    @property
    def e2e_crc(self) -> bool:
        return self._crc

    @property
    def session_start_utc(self) -> datetime | None:
        return self._start

    # ------------------------------------------------------------------ inputs

    def start(self, *, now: datetime) -> list[Output]:
        if self._state is not _State.IDLE:
            raise LocalProtocolError("start() called twice")
        self._state = _State.READING
        return self._read(FEATURE_UUID, _require_aware(now))

    def set_interval(self, minutes: int, *, now: datetime) -> list[Output]:
        if not 0 <= minutes <= 0xFF:
            raise LocalProtocolError(f"interval {minutes} is outside 0..255")
        msg = SocpMessage(
            op_code=SocpOpCode.SET_CGM_COMMUNICATION_INTERVAL, interval_minutes=minutes
        )
        return self._queue(msg, now)

    def start_session(self, *, now: datetime) -> list[Output]:
        return self._queue(SocpMessage(op_code=SocpOpCode.START_THE_SESSION), now)

    def stop_session(self, *, now: datetime) -> list[Output]:
        return self._queue(SocpMessage(op_code=SocpOpCode.STOP_THE_SESSION), now)

    def receive(self, uuid: int, data: bytes, *, now: datetime) -> list[Output]:
        if self._state in (_State.IDLE, _State.CLOSED):
            raise LocalProtocolError(f"receive() in state {self._state.value}")
        now = _require_aware(now)
        data = bytes(data)
        if uuid == self._pending_read:
            self._pending_read = None
            self._request_since = None
            return self._on_read(uuid, data, now)
        if uuid == MEASUREMENT_UUID and self._state is _State.STREAMING:
            self._last_rx = now
            self._stall_reported = False
            if self._pending_read == START_TIME_UUID:
                self._held.append((data, now))
                return []
            return self._on_measurement(data, now)
        if uuid == SOCP_UUID and self._state is _State.STREAMING:
            return self._on_socp(data, now)
        if uuid in (*_READ_ORDER, MEASUREMENT_UUID, SOCP_UUID):
            return [
                PeerProtocolViolation(
                    kind=ViolationKind.UNEXPECTED_VALUE,
                    detail=f"{uuid:#06x} in state {self._state.value}",
                )
            ]
        raise LocalProtocolError(f"characteristic {uuid:#06x} is not part of this procedure")

    def timeout(self, now: datetime) -> list[Output]:
        if self._state in (_State.IDLE, _State.CLOSED):
            return []
        now = _require_aware(now)
        if self._request_since is not None:
            idle = (now - self._request_since).total_seconds()
            if idle < self.response_timeout_s:
                return [StartTimer(seconds=self.response_timeout_s - idle)]
            if self._state is _State.READING or self._pending_read is not None:
                what = f"read {self._pending_read:#06x}" if self._pending_read else "SOCP"
                return self._fail(f"no answer to {what}", FailureKind.TIMEOUT)
            assert self._socp_pending is not None
            req, self._socp_pending, self._request_since = self._socp_pending, None, None
            return [SocpResult(request=req.op_code, response_code=None), *self._next_socp(now)]
        if self._state is _State.STREAMING and self.silence_timeout_s is not None:
            since = self._last_rx if self._last_rx is not None else now
            silent = (now - since).total_seconds()
            if silent < self.silence_timeout_s:
                return [StartTimer(seconds=self.silence_timeout_s - silent)]
            out: list[Output] = []
            if not self._stall_reported:
                self._stall_reported = True
                out.append(StreamStalled(silent_s=silent))
            return [*out, StartTimer(seconds=self.silence_timeout_s)]
        return []

    def disconnected(self) -> list[Output]:
        if self._state in (_State.IDLE, _State.CLOSED):
            self._state = _State.CLOSED
            return []
        return self._fail("link lost", FailureKind.DISCONNECTED)

    # ------------------------------------------------------------------ helpers

    def _fail(self, reason: str, kind: FailureKind) -> list[Output]:
        self._state = _State.CLOSED
        self._pending_read = None
        self._socp_pending = None
        self._socp_queue.clear()
        return [CancelTimer(), SessionFailed(reason=reason, kind=kind)]

    def _read(self, uuid: int, now: datetime) -> list[Output]:
        self._pending_read = uuid
        self._request_since = now
        return [ReadCharacteristic(uuid=uuid), StartTimer(seconds=self.response_timeout_s)]

    def _idle_timer(self) -> list[Output]:
        if self.silence_timeout_s is not None:
            return [StartTimer(seconds=self.silence_timeout_s)]
        return [CancelTimer()]

    def _malformed(self, uuid: int, exc: DecodeError, base: int = 0) -> MalformedData:
        self.malformed_count += 1
        return MalformedData(uuid=uuid, offset=base + exc.offset, detail=str(exc))

    def _queue(self, msg: SocpMessage, now: datetime) -> list[Output]:
        if self._state is _State.CLOSED:
            raise LocalProtocolError("the session is closed")
        now = _require_aware(now)
        self._socp_queue.append(msg)
        streaming = self._state is _State.STREAMING
        if streaming and self._socp_pending is None and self._pending_read is None:
            return self._next_socp(now)
        return []

    def _next_socp(self, now: datetime) -> list[Output]:
        if self._socp_pending is not None:
            return []
        if not self._socp_queue:
            return self._idle_timer()
        msg = self._socp_queue.popleft()
        self._socp_pending = msg
        self._request_since = now
        data = encode_socp(msg, crc=self._crc)
        return [
            WriteControlPoint(data=data, uuid=SOCP_UUID),
            StartTimer(seconds=self.response_timeout_s),
        ]

    # ------------------------------------------------------------------ parameter reads

    def _on_read(self, uuid: int, data: bytes, now: datetime) -> list[Output]:
        out: list[Output] = []
        if uuid == FEATURE_UUID:
            try:
                self._feature = decode_cgm_feature(data)
            except DecodeError as exc:
                return [
                    self._malformed(uuid, exc),
                    *self._fail("undecodable CGM Feature", FailureKind.MALFORMED_FEATURE),
                ]
            self._crc = self._feature.e2e_crc_supported
            return self._read(STATUS_UUID, now)
        if uuid == STATUS_UUID:
            try:
                self._status = decode_cgm_status(data, crc=self._crc)
                self._status_at = now
            except DecodeError as exc:
                out.append(self._malformed(uuid, exc))
            return out + self._read(START_TIME_UUID, now)
        if uuid == START_TIME_UUID:
            out += self._on_start_time(data, now)
            if self._state is _State.STREAMING:  # re-read after "start session"
                held, self._held = self._held, []
                for value, at in held:
                    out += self._on_measurement(value, at)
                return out + self._next_socp(now)
            return out + self._read(RUN_TIME_UUID, now)
        assert uuid == RUN_TIME_UUID
        try:
            self._run_time = decode_cgm_session_run_time(data, crc=self._crc).run_time_hours
        except DecodeError as exc:
            out.append(self._malformed(uuid, exc))
        assert self._feature is not None
        self._state = _State.STREAMING
        self._last_rx = now
        out += [
            SessionInfo(
                feature=self._feature,
                status=self._status,
                start_time_utc=self._start,
                start_time_estimated=self._estimated,
                run_time_hours=self._run_time,
                clock_offset_s=self._clock_offset,
            ),
            EnableNotifications(uuid=MEASUREMENT_UUID),
            EnableIndications(uuid=SOCP_UUID),
        ]
        return out + self._next_socp(now)

    def _on_start_time(self, data: bytes, now: datetime) -> list[Output]:
        out: list[Output] = []
        aware: datetime | None = None
        try:
            aware = decode_cgm_session_start_time(data, crc=self._crc).aware_start_time()
        except DecodeError as exc:
            out.append(self._malformed(START_TIME_UUID, exc))
        self._clock_offset = None
        if aware is not None:
            self._start = aware.astimezone(UTC)
            self._estimated = False
            if self._status is not None and self._status_at is not None:
                sensor_now = aware + timedelta(minutes=self._status.time_offset)
                self._clock_offset = (sensor_now - self._status_at).total_seconds()
        elif self._status is not None and self._status_at is not None:
            self._start = (
                self._status_at - timedelta(minutes=self._status.time_offset)
            ).astimezone(UTC)
            self._estimated = True
        else:
            self._start = None  # anchored on the first record
            self._estimated = True
        return out

    # ------------------------------------------------------------------ stream

    def _on_measurement(self, data: bytes, now: datetime) -> list[Output]:
        out: list[Output] = []
        least = _MIN_RECORD + (2 if self._crc else 0)
        if not data:
            return [self._malformed(MEASUREMENT_UUID, DecodeError(0, "a CGM record"))]
        pos = 0
        while pos < len(data):
            size = data[pos]
            if size < least or pos + size > len(data):
                exc = DecodeError(pos, f"a record size {least}..{len(data) - pos}, got {size}")
                out.append(self._malformed(MEASUREMENT_UUID, exc))
                break
            try:
                (m,) = decode_cgm_measurements(data[pos : pos + size], crc=self._crc)
            except DecodeError as exc:
                out.append(self._malformed(MEASUREMENT_UUID, exc, pos))
            else:
                out += self._record(m, now)
            pos += size
        return out

    def _record(self, m: CgmMeasurement, now: datetime) -> list[Output]:
        off = m.time_offset
        if self._last_offset is not None:
            if off == self._last_offset:
                self.duplicates += 1
                return []
            if off < self._last_offset:
                return [
                    PeerProtocolViolation(
                        kind=ViolationKind.TIME_OFFSET_BACKWARDS,
                        detail=f"time offset {off} after {self._last_offset}",
                    )
                ]
        self._last_offset = off
        if self._start is None:
            self._start = (now - timedelta(minutes=off)).astimezone(UTC)
        return [
            CgmReading(
                measurement=m,
                absolute_time_utc=self._start + timedelta(minutes=off),
                time_offset_min=off,
                clock_offset_s=self._clock_offset,
                start_time_estimated=self._estimated,
            )
        ]

    def _on_socp(self, data: bytes, now: datetime) -> list[Output]:
        try:
            msg = decode_socp(data, crc=self._crc)
        except DecodeError as exc:
            return [self._malformed(SOCP_UUID, exc)]
        req = self._socp_pending
        if (
            req is None
            or msg.op_code is not SocpOpCode.RESPONSE_CODE
            or msg.request_op_code != req.op_code
        ):
            return [
                PeerProtocolViolation(
                    kind=ViolationKind.UNEXPECTED_SOCP,
                    detail=f"{msg.op_code.name} (request {msg.request_op_code!r}) while "
                    f"{'nothing' if req is None else req.op_code.name} is outstanding",
                )
            ]
        assert msg.response_code is not None
        self._socp_pending = None
        self._request_since = None
        out: list[Output] = [
            SocpResult(
                request=req.op_code,
                response_code=msg.response_code,
                interval_minutes=req.interval_minutes,
            )
        ]
        if req.op_code is SocpOpCode.START_THE_SESSION and (
            msg.response_code is SocpResponseCode.SUCCESS
        ):
            self._last_offset = None
            self._status = None
            self._start = None
            return out + self._read(START_TIME_UUID, now)
        return out + self._next_socp(now)
