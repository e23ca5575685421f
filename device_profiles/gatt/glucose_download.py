"""Sans-I/O glucose record download over the Record Access Control Point (RACP 0x2A52).

Theory of operation (PROTOCOLS.md "Glucose service 0x1808", RACP paragraph): the procedure is
a state machine in the style of h11. The transport calls :meth:`GlucoseDownload.start`,
:meth:`~GlucoseDownload.receive` (every notification / indication), :meth:`~GlucoseDownload.timeout`
(when the timer it was asked to start fires), :meth:`~GlucoseDownload.abort` and
:meth:`~GlucoseDownload.disconnected`. Each call returns a list of *outputs* in order: commands
(:class:`EnableNotifications`, :class:`EnableIndications`, :class:`WriteControlPoint`,
:class:`StartTimer`, :class:`CancelTimer`) that the transport turns into GATT operations, and
typed events (:class:`RecordsAvailable`, :class:`RecordReceived`, ...). No I/O happens here.

Flow: subscribe 0x2A18 / 0x2A34 (notify) and 0x2A52 (indicate) -> "report number of stored
records" (``04 01`` or ``04 03 01 <last+1>``) -> "report stored records" with the same filter
-> measurements, each optionally followed by its context (flag b4, same sequence number) ->
RACP response code for the report op.

Decisions:

* A measurement whose ``context_follows`` flag is set is held (at most one) until its context
  arrives; it is emitted without a context when the next measurement or the final RACP response
  arrives. On disconnect a held measurement is *discarded*, not emitted: :attr:`last_sequence`
  stays below it, so the resumed download fetches it again together with its context.
  Exception (liveness): if it is the first record of the session, it is emitted without its
  context, because a meter that drops the link at that same point every time (or never sends
  that context) would otherwise stall every later download at this record. The cost: a context
  is lost only when two consecutive sessions are both cut between that measurement and its
  context.
* :attr:`last_sequence` is the highest sequence number emitted as :class:`RecordReceived` or
  :class:`ControlSolutionSkipped` (control solution is handled, never re-downloaded).
* Peer misbehaviour (response to an op we did not send, records before the report request,
  sequence not increasing, a context nobody announced) yields :class:`PeerProtocolViolation`
  and the offending value is dropped; undecodable values yield :class:`MalformedData`. Neither
  ends the procedure. Misuse by the caller raises :class:`LocalProtocolError`.
* Sequence wrap-around (0xFFFF -> 0) is not handled: ``last_sequence`` must be < 0xFFFF.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Final

from device_profiles.gatt.glucose import (
    GlucoseContext,
    GlucoseMeasurement,
    RacpMessage,
    RacpOpCode,
    RacpOperator,
    RacpResponseCode,
    decode_glucose_context,
    decode_glucose_measurement,
    decode_racp,
    encode_racp,
    racp_abort,
    racp_report_all,
    racp_report_count_all,
    racp_report_from_sequence,
)
from device_profiles.gatt.ieee11073 import DecodeError

__all__ = [
    "CONTEXT_UUID",
    "MEASUREMENT_UUID",
    "RACP_UUID",
    "CancelTimer",
    "Command",
    "ControlSolutionSkipped",
    "DownloadComplete",
    "DownloadFailed",
    "EnableIndications",
    "EnableNotifications",
    "Event",
    "FailureKind",
    "GlucoseDownload",
    "LocalProtocolError",
    "MalformedData",
    "Output",
    "PeerProtocolViolation",
    "RecordReceived",
    "RecordsAvailable",
    "StartTimer",
    "ViolationKind",
    "WriteControlPoint",
]

MEASUREMENT_UUID: Final = 0x2A18
CONTEXT_UUID: Final = 0x2A34
RACP_UUID: Final = 0x2A52
_MAX_SEQUENCE: Final = 0xFFFF


class LocalProtocolError(Exception):
    """We (the caller) used the procedure wrongly, e.g. fed data after it finished."""


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True, kw_only=True)
class EnableNotifications:
    uuid: int


@dataclass(frozen=True, slots=True, kw_only=True)
class EnableIndications:
    uuid: int


@dataclass(frozen=True, slots=True, kw_only=True)
class WriteControlPoint:
    data: bytes
    uuid: int = RACP_UUID


@dataclass(frozen=True, slots=True, kw_only=True)
class StartTimer:
    """(Re)arm the single procedure timer; call :meth:`GlucoseDownload.timeout` when it fires."""

    seconds: float

    def __post_init__(self) -> None:
        if not self.seconds > 0:
            raise ValueError(f"timer needs a positive duration, got {self.seconds}")


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelTimer:
    pass


Command = EnableNotifications | EnableIndications | WriteControlPoint | StartTimer | CancelTimer


# --------------------------------------------------------------------------- events


class FailureKind(StrEnum):
    RACP_ERROR = "racp_error"
    DISCONNECTED = "disconnected"
    TIMEOUT = "timeout"
    ABORTED = "aborted"


class ViolationKind(StrEnum):
    UNEXPECTED_RACP = "unexpected_racp"
    RECORD_BEFORE_REQUEST = "record_before_request"
    SEQUENCE_NOT_INCREASING = "sequence_not_increasing"
    UNEXPECTED_CONTEXT = "unexpected_context"


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordsAvailable:
    count: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordReceived:
    measurement: GlucoseMeasurement
    context: GlucoseContext | None

    def __post_init__(self) -> None:
        if self.context is not None and (
            self.context.sequence_number != self.measurement.sequence_number
        ):
            raise ValueError("context and measurement sequence numbers differ")


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlSolutionSkipped:
    sequence: int


@dataclass(frozen=True, slots=True, kw_only=True)
class MalformedData:
    uuid: int
    offset: int
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerProtocolViolation:
    kind: ViolationKind
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DownloadComplete:
    """``received`` counts :class:`RecordReceived`; control solution and malformed separately."""

    received: int
    expected: int
    control_solution: int = 0
    malformed: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class DownloadFailed:
    reason: str
    kind: FailureKind
    response_code: RacpResponseCode | None = None


Event = (
    RecordsAvailable
    | RecordReceived
    | ControlSolutionSkipped
    | MalformedData
    | PeerProtocolViolation
    | DownloadComplete
    | DownloadFailed
)
Output = Command | Event


# --------------------------------------------------------------------------- state machine


class _State(Enum):
    IDLE = "idle"
    COUNTING = "counting"  # count request written, waiting for op 5
    TRANSFERRING = "transferring"  # report request written, records flowing
    ABORTING = "aborting"  # abort written by the caller, waiting for its response
    DRAINING = "draining"  # failed (timeout), abort written, swallowing what still arrives
    CLOSED = "closed"


@dataclass(slots=True)
class _Counters:
    received: int = 0
    control_solution: int = 0
    malformed: int = 0
    expected: int = 0


class GlucoseDownload:
    """One RACP download session. Build a new one (with :attr:`last_sequence`) to resume."""

    def __init__(self, last_sequence: int | None, *, timeout_s: float = 30.0) -> None:
        if last_sequence is not None and not 0 <= last_sequence < _MAX_SEQUENCE:
            raise ValueError(f"last_sequence {last_sequence} is outside 0..{_MAX_SEQUENCE - 1}")
        if not timeout_s > 0:
            raise ValueError("timeout_s must be positive")
        self.initial_last_sequence = last_sequence
        self.timeout_s = timeout_s
        self._state: _State = _State.IDLE
        self._last_sequence: int | None = last_sequence
        self._last_seen = -1 if last_sequence is None else last_sequence
        self._pending: GlucoseMeasurement | None = None
        self._swallow_context: int | None = None
        self._last_progress: float | None = None
        self._counters = _Counters()

    # ------------------------------------------------------------------ public state

    @property
    def last_sequence(self) -> int | None:
        """Highest sequence number emitted (pass it to the next session to resume)."""
        return self._last_sequence

    @property
    def finished(self) -> bool:
        """True once a terminal event (complete / failed) has been emitted."""
        return self._state in (_State.CLOSED, _State.DRAINING)

    @property
    def malformed_count(self) -> int:
        return self._counters.malformed

    # ------------------------------------------------------------------ inputs

    def start(self, *, now: float | None = None) -> list[Output]:
        if self._state is not _State.IDLE:
            raise LocalProtocolError("start() called twice")
        self._state = _State.COUNTING
        self._last_progress = now
        return [
            EnableNotifications(uuid=MEASUREMENT_UUID),
            EnableNotifications(uuid=CONTEXT_UUID),
            EnableIndications(uuid=RACP_UUID),
            WriteControlPoint(data=encode_racp(self._count_request())),
            StartTimer(seconds=self.timeout_s),
        ]

    def receive(self, uuid: int, data: bytes, *, now: float) -> list[Output]:
        if self._state in (_State.IDLE, _State.CLOSED):
            raise LocalProtocolError(f"receive() in state {self._state.value}")
        if uuid == MEASUREMENT_UUID:
            return self._on_measurement(data, now)
        if uuid == CONTEXT_UUID:
            return self._on_context(data, now)
        if uuid == RACP_UUID:
            return self._on_racp(data, now)
        raise LocalProtocolError(f"characteristic {uuid:#06x} is not part of this procedure")

    def timeout(self, now: float) -> list[Output]:
        """The timer fired. Fails (and aborts) if nothing useful arrived for ``timeout_s``."""
        if self._state in (_State.IDLE, _State.CLOSED, _State.DRAINING):
            return []
        if self._last_progress is not None:
            idle = now - self._last_progress
            if idle < self.timeout_s:
                return [StartTimer(seconds=self.timeout_s - idle)]
        self._pending = None
        self._state = _State.DRAINING
        return [
            DownloadFailed(
                reason=f"no progress for {self.timeout_s:g} s", kind=FailureKind.TIMEOUT
            ),
            WriteControlPoint(data=encode_racp(racp_abort())),
        ]

    def abort(self) -> list[Output]:
        if self._state in (_State.COUNTING, _State.TRANSFERRING):
            self._state = _State.ABORTING
            return [WriteControlPoint(data=encode_racp(racp_abort()))]
        raise LocalProtocolError(f"abort() in state {self._state.value}")

    def disconnected(self) -> list[Output]:
        if self._state in (_State.CLOSED, _State.DRAINING, _State.IDLE):
            self._state = _State.CLOSED
            return []
        out: list[Output] = [CancelTimer()]
        if self._pending is not None and self._counters.received == 0 == (
            self._counters.control_solution
        ):
            # First record of this session: emit it rather than never making progress.
            out += self._flush_pending()
        self._pending = None  # see module docstring: re-fetched complete on resume
        self._state = _State.CLOSED
        return [
            *out,
            DownloadFailed(reason="link lost mid-transfer", kind=FailureKind.DISCONNECTED),
        ]

    # ------------------------------------------------------------------ handlers

    def _count_request(self) -> RacpMessage:
        if self.initial_last_sequence is None:
            return racp_report_count_all()
        return RacpMessage(
            op_code=RacpOpCode.REPORT_NUMBER_OF_STORED_RECORDS,
            operator=RacpOperator.GREATER_THAN_OR_EQUAL_TO,
            filter_type=0x01,
            filter_values=(self.initial_last_sequence + 1,),
        )

    def _report_request(self) -> RacpMessage:
        if self.initial_last_sequence is None:
            return racp_report_all()
        return racp_report_from_sequence(self.initial_last_sequence + 1)

    def _malformed(self, uuid: int, exc: DecodeError) -> list[Output]:
        self._counters.malformed += 1
        return [MalformedData(uuid=uuid, offset=exc.offset, detail=str(exc))]

    def _flush_pending(self) -> list[Output]:
        if self._pending is None:
            return []
        m, self._pending = self._pending, None
        return self._emit(m, None)

    def _emit(self, m: GlucoseMeasurement, ctx: GlucoseContext | None) -> list[Output]:
        self._last_sequence = m.sequence_number
        if self._state is _State.DRAINING:
            return []
        self._counters.received += 1
        return [RecordReceived(measurement=m, context=ctx)]

    def _on_measurement(self, data: bytes, now: float) -> list[Output]:
        try:
            m = decode_glucose_measurement(data)
        except DecodeError as exc:
            return self._malformed(MEASUREMENT_UUID, exc)
        if self._state is _State.DRAINING:
            return []
        if self._state is _State.COUNTING:
            return [
                PeerProtocolViolation(
                    kind=ViolationKind.RECORD_BEFORE_REQUEST,
                    detail=f"measurement {m.sequence_number} before the report request",
                )
            ]
        if m.sequence_number <= self._last_seen:
            return [
                PeerProtocolViolation(
                    kind=ViolationKind.SEQUENCE_NOT_INCREASING,
                    detail=f"sequence {m.sequence_number} after {self._last_seen}",
                )
            ]
        self._last_progress = now
        self._last_seen = m.sequence_number
        out = self._flush_pending()
        self._swallow_context = None
        if m.is_control_solution:
            self._last_sequence = m.sequence_number
            self._counters.control_solution += 1
            if m.context_follows:
                self._swallow_context = m.sequence_number
            out.append(ControlSolutionSkipped(sequence=m.sequence_number))
        elif m.context_follows:
            self._pending = m
        else:
            out += self._emit(m, None)
        return out

    def _on_context(self, data: bytes, now: float) -> list[Output]:
        try:
            ctx = decode_glucose_context(data)
        except DecodeError as exc:
            return self._malformed(CONTEXT_UUID, exc)
        if self._state is _State.DRAINING:
            return []
        seq = ctx.sequence_number
        if self._pending is not None and self._pending.sequence_number == seq:
            self._last_progress = now
            m, self._pending = self._pending, None
            return self._emit(m, ctx)
        if self._swallow_context == seq:
            self._last_progress = now
            self._swallow_context = None
            return []
        kind = (
            ViolationKind.RECORD_BEFORE_REQUEST
            if self._state is _State.COUNTING
            else ViolationKind.UNEXPECTED_CONTEXT
        )
        return [PeerProtocolViolation(kind=kind, detail=f"context {seq} matches no measurement")]

    def _finish(self, event: Event) -> list[Output]:
        self._state = _State.CLOSED
        return [CancelTimer(), event]

    def _unexpected(self, msg: RacpMessage) -> list[Output]:
        return [
            PeerProtocolViolation(
                kind=ViolationKind.UNEXPECTED_RACP,
                detail=f"{msg.op_code.name} (request {msg.request_op_code!r}) "
                f"in state {self._state.value}",
            )
        ]

    def _on_racp(self, data: bytes, now: float) -> list[Output]:
        try:
            msg = decode_racp(data)
        except DecodeError as exc:
            return self._malformed(RACP_UUID, exc)
        op, req, code = msg.op_code, msg.request_op_code, msg.response_code
        state = self._state
        if state is _State.DRAINING:
            if op is RacpOpCode.RESPONSE_CODE and req is RacpOpCode.ABORT_OPERATION:
                self._state = _State.CLOSED
                return [CancelTimer()]
            return []
        if state is _State.COUNTING:
            if op is RacpOpCode.NUMBER_OF_STORED_RECORDS_RESPONSE:
                assert msg.number_of_records is not None  # decoder guarantees it
                self._last_progress = now
                self._counters.expected = msg.number_of_records
                self._state = _State.TRANSFERRING
                return [
                    RecordsAvailable(count=msg.number_of_records),
                    WriteControlPoint(data=encode_racp(self._report_request())),
                ]
            if op is RacpOpCode.RESPONSE_CODE and req is RacpOpCode.REPORT_NUMBER_OF_STORED_RECORDS:
                assert code is not None
                if code is RacpResponseCode.NO_RECORDS_FOUND:
                    return [RecordsAvailable(count=0), *self._complete()]
                return self._racp_failed(code, "count")
            return self._unexpected(msg)
        if state is _State.TRANSFERRING:
            if op is RacpOpCode.RESPONSE_CODE and req is RacpOpCode.REPORT_STORED_RECORDS:
                assert code is not None
                out = self._flush_pending()
                if code in (RacpResponseCode.SUCCESS, RacpResponseCode.NO_RECORDS_FOUND):
                    if code is RacpResponseCode.NO_RECORDS_FOUND:
                        self._counters.expected = 0
                    return out + self._complete()
                return out + self._racp_failed(code, "report")
            return self._unexpected(msg)
        # ABORTING
        if op is RacpOpCode.RESPONSE_CODE and req is RacpOpCode.ABORT_OPERATION:
            assert code is not None
            out = self._flush_pending()
            return out + self._finish(
                DownloadFailed(
                    reason=f"aborted by the caller ({code.name})",
                    kind=FailureKind.ABORTED,
                    response_code=code,
                )
            )
        if op is RacpOpCode.RESPONSE_CODE and req is RacpOpCode.REPORT_STORED_RECORDS:
            return self._flush_pending()  # the report ended before the abort got there
        if op is RacpOpCode.NUMBER_OF_STORED_RECORDS_RESPONSE:
            return []
        return self._unexpected(msg)

    def _complete(self) -> list[Output]:
        c = self._counters
        return self._finish(
            DownloadComplete(
                received=c.received,
                expected=c.expected,
                control_solution=c.control_solution,
                malformed=c.malformed,
            )
        )

    def _racp_failed(self, code: RacpResponseCode, what: str) -> list[Output]:
        return self._finish(
            DownloadFailed(
                reason=f"{what} request refused: {code.name}",
                kind=FailureKind.RACP_ERROR,
                response_code=code,
            )
        )
