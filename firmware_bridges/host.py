"""The host side of one bridge link (one serial port, one board): sans-I/O.

Bytes from the board go into :meth:`BridgeHost.feed` with the host's Unix time in ms; out come
typed events, in order. Bytes for the board are events too (:class:`Transmit`). The caller's
contract, which makes delivery at-least-once with no loss:

1. Handle the events of one call **in list order**.
2. Persist each data event (:class:`BlowCurve`, :class:`DispenserReport`,
   :class:`PeripheralMeasurement`) durably (the edge outbox) before writing any
   :class:`Transmit` that follows it: the ACK for an event always comes *after* the event in
   the list, so a crash between the two leaves the event unacknowledged and the board sends it
   again; the host (or the cloud's content-derived ids) drops the duplicate.
3. Keep :class:`BridgeProblem` raw bytes as dead letters.
4. Call :meth:`BridgeHost.poll` at :meth:`BridgeHost.next_deadline_ms` for heartbeat
   supervision.

Rules (docs/firmware-bridges.md): nothing but HELLO is accepted before a HELLO was accepted
(the host answers with HELLO_REQUEST, at most once a second); the host ACKs an event once it
holds it, and re-ACKs duplicates without emitting them again (the last
:data:`DEDUPE_WINDOW` event ids per board and event type are remembered); a blow is delivered
whole or not at all: a gap in sample indices, a missing BLOW_START or a wrong sample count
makes the host ask for the whole blow again with RESEND_BLOW. The board's clock offset (board
minus host) is measured from every HELLO and HEARTBEAT; it is unknown (None) from the moment the
host sends a time until the board's next heartbeat. Event times are the board's, uncorrected,
with the offset beside them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from device_profiles.codes import MEASURES
from device_profiles.events import EventKind
from device_profiles.observation import AbsentReason, Comparator
from firmware_bridges import messages as m
from firmware_bridges.framing import Frame, FrameCounters, FrameDecoder, FrameError

__all__ = [
    "DEDUPE_WINDOW",
    "HEARTBEAT_TIMEOUT_MS",
    "BlowCurve",
    "BoardBack",
    "BoardError",
    "BoardHello",
    "BoardSilent",
    "BridgeHost",
    "BridgeProblem",
    "Capabilities",
    "DispenserReport",
    "Heartbeat",
    "HostCounters",
    "HostEvent",
    "PeripheralMeasurement",
    "ProblemKind",
    "Transmit",
]

#: No frame for this long means the board is silent: three missed 5 s heartbeats (ms).
HEARTBEAT_TIMEOUT_MS: Final = 15_000
#: Event ids remembered per board and event type for deduplication.
DEDUPE_WINDOW: Final = 1024
#: Boards whose dedupe memory is kept when another board appears on the same link.
MAX_BOARDS_REMEMBERED: Final = 8
#: At most one HELLO_REQUEST per this interval (ms).
HELLO_REQUEST_INTERVAL_MS: Final = 1_000
#: A blow longer than this is refused: 60 s at 1 kHz (samples).
MAX_BLOW_SAMPLES: Final = 60_000
_ML_PER_L: Final = 1000
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
#: Which board kind may send which message (HELLO, HEARTBEAT, ERROR: every kind).
_KIND_OF_TYPE: Final[dict[m.MsgType, m.BoardKind]] = {
    m.MsgType.BLOW_START: m.BoardKind.PEF_SENSOR,
    m.MsgType.FLOW_SAMPLES: m.BoardKind.PEF_SENSOR,
    m.MsgType.BLOW_END: m.BoardKind.PEF_SENSOR,
    m.MsgType.DISPENSER_EVENT: m.BoardKind.DISPENSER,
    m.MsgType.MEASUREMENT: m.BoardKind.KIOSK_PERIPHERAL,
}


def _utc(unix_ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=unix_ms)


# --------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True, kw_only=True)
class Transmit:
    """Bytes to write to the board, in list order, after handling the events before it."""

    data: bytes
    message: m.BridgeMessage  # what the bytes carry (for logs and tests)


@dataclass(frozen=True, slots=True, kw_only=True)
class Capabilities:
    has_rtc: bool
    has_battery: bool
    sample_rate_hz: int | None
    max_blow_samples: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class BoardHello:
    board_id: str
    kind: m.BoardKind
    firmware: str
    protocol_version: int
    rtc_offset_ms: int | None  # board clock minus host clock when the HELLO came; None: unset
    capabilities: Capabilities
    accepted: bool  # False: refused (not the configured board id or kind)


@dataclass(frozen=True, slots=True, kw_only=True)
class BlowCurve:
    """One complete blow, every sample in order, exactly as the board measured it."""

    board_id: str
    blow_id: int
    sample_rate_hz: int
    start_tick_us: int
    flow_l_s: tuple[float, ...]
    end_reason: m.EndReason
    board_peak_l_s: float | None
    saturated: bool  # samples at the sensor's limit: a PEF from this curve is a lower bound
    sensor_fault: bool
    board_time: datetime | None  # board clock at sample 0 (UTC, uncorrected); None: unset
    rtc_offset_ms: int | None
    received_at: datetime  # host time when this blow's BLOW_START arrived


@dataclass(frozen=True, slots=True, kw_only=True)
class DispenserReport:
    board_id: str
    seq: int
    kind: EventKind
    dose_id: str | None
    scheduled: datetime | None  # UTC
    actual: datetime | None  # board clock when it happened (UTC, uncorrected); None: unset
    rtc_offset_ms: int | None
    details: Mapping[str, int]  # "doses_left" when the board knows it
    received_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class PeripheralMeasurement:
    """A kiosk reading in the measure's canonical unit; out of range is the limit with a
    comparator, an error is no value with a reason: never a made-up number."""

    board_id: str
    seq: int
    measure: str  # device_profiles.codes measure key
    value: float | None
    unit: str
    comparator: Comparator | None
    absent_reason: AbsentReason | None
    unstable: bool
    at: datetime | None  # board clock when measured (UTC, uncorrected); None: unset
    rtc_offset_ms: int | None
    received_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat:
    board_id: str
    uptime_ms: int
    status: m.BoardStatus
    queued_events: int
    rtc_offset_ms: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class BoardError:
    board_id: str
    code: m.BoardErrorCode | int
    ref: int
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class BoardSilent:
    board_id: str | None  # None: nothing was ever heard on this link
    last_heard_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class BoardBack:
    board_id: str | None
    silent_ms: int


class ProblemKind(StrEnum):
    FRAMING = "framing"  # COBS, CRC, length, version, oversize
    UNKNOWN_TYPE = "unknown_type"
    UNDECODABLE = "undecodable"
    WRONG_DIRECTION = "wrong_direction"  # a host → board message came from the board
    WRONG_BOARD_KIND = "wrong_board_kind"
    BEFORE_HELLO = "before_hello"
    REFUSED_BOARD = "refused_board"
    BLOW_INCOMPLETE = "blow_incomplete"


@dataclass(frozen=True, slots=True, kw_only=True)
class BridgeProblem:
    kind: ProblemKind
    reason: str  # what and where
    raw: bytes  # the frame or run as received (COBS-stuffed, no delimiter): a dead letter


HostEvent = (
    Transmit
    | BoardHello
    | BlowCurve
    | DispenserReport
    | PeripheralMeasurement
    | Heartbeat
    | BoardError
    | BoardSilent
    | BoardBack
    | BridgeProblem
)


@dataclass(slots=True)
class HostCounters:
    events: int = 0  # data events emitted
    duplicates: int = 0  # events received again and re-ACKed
    problems: int = 0
    unknown_types: int = 0
    undecodable: int = 0
    before_hello: int = 0
    resend_requests: int = 0
    seq_gaps: int = 0  # breaks in the board's frame sequence numbers (lost frames)


@dataclass(slots=True)
class _Blow:
    blow_id: int
    start: m.BlowStart | None
    received_at_ms: int
    samples: list[int] = field(default_factory=list)
    broken: str | None = None  # why this assembly cannot complete


@dataclass(frozen=True, slots=True)
class _Board:
    board_id: str
    kind: m.BoardKind


class BridgeHost:
    def __init__(
        self,
        *,
        expected_board_id: str | None = None,
        expected_kind: m.BoardKind | None = None,
        heartbeat_timeout_ms: int = HEARTBEAT_TIMEOUT_MS,
        dedupe_window: int = DEDUPE_WINDOW,
        max_blow_samples: int = MAX_BLOW_SAMPLES,
    ) -> None:
        if heartbeat_timeout_ms <= 0 or dedupe_window < 1 or max_blow_samples < 1:
            raise ValueError("timeouts, windows and limits must be positive")
        self.expected_board_id = expected_board_id
        self.expected_kind = expected_kind
        self.heartbeat_timeout_ms = heartbeat_timeout_ms
        self.dedupe_window = dedupe_window
        self.max_blow_samples = max_blow_samples
        self.counters = HostCounters()
        self._decoder = FrameDecoder()
        self._board: _Board | None = None
        self._rtc_offset_ms: int | None = None
        self._tx_seq = 0
        self._rx_seq: int | None = None
        self._last_heard_ms: int | None = None
        self._silent = False
        self._last_hello_request_ms: int | None = None
        self._blow: _Blow | None = None
        self._ignoring_blow: int | None = None  # a delivered blow being sent again
        self._seen: OrderedDict[str, dict[m.MsgType, OrderedDict[int, None]]] = OrderedDict()

    @property
    def board_id(self) -> str | None:
        """The accepted board on this link, or None before an accepted HELLO."""
        return self._board.board_id if self._board else None

    @property
    def framing(self) -> FrameCounters:
        return self._decoder.counters

    # ------------------------------------------------------------------ public API

    def feed(self, data: bytes, now_ms: int) -> list[HostEvent]:
        out: list[HostEvent] = []
        if self._last_heard_ms is None:
            self._last_heard_ms = now_ms
        for item in self._decoder.feed(data):
            if isinstance(item, FrameError):
                reason = f"{item.reason} (stream byte {item.offset})"
                self._problem(out, ProblemKind.FRAMING, reason, item.raw)
                continue
            if self._silent:
                out.append(
                    BoardBack(board_id=self.board_id, silent_ms=now_ms - self._last_heard_ms)
                )
                self._silent = False
            self._last_heard_ms = now_ms
            self._on_frame(item, now_ms, out)
        return out

    def poll(self, now_ms: int) -> list[HostEvent]:
        if self._last_heard_ms is None:
            self._last_heard_ms = now_ms
        if not self._silent and now_ms - self._last_heard_ms >= self.heartbeat_timeout_ms:
            self._silent = True
            return [BoardSilent(board_id=self.board_id, last_heard_ms=self._last_heard_ms)]
        return []

    def next_deadline_ms(self) -> int | None:
        if self._silent or self._last_heard_ms is None:
            return None
        return self._last_heard_ms + self.heartbeat_timeout_ms

    def set_time(self, now_ms: int) -> list[HostEvent]:
        """A SET_TIME for the board (e.g. daily); the clock offset is unknown until its answer."""
        self._rtc_offset_ms = None
        return [self._transmit(m.SetTime(host_unix_ms=now_ms))]

    def blow_result(self, result: m.BlowResult) -> Transmit:
        """A BLOW_RESULT for the board: the hub's analysis of a blow it has stored."""
        return self._transmit(result)

    # ------------------------------------------------------------------ frames

    def _who(self) -> str:
        return f"board {self._board.board_id}" if self._board else "unidentified board"

    def _transmit(self, msg: m.BridgeMessage) -> Transmit:
        data = m.encode_message(msg, self._tx_seq)
        self._tx_seq = (self._tx_seq + 1) & 0xFFFF
        return Transmit(data=data, message=msg)

    def _problem(self, out: list[HostEvent], kind: ProblemKind, reason: str, raw: bytes) -> None:
        self.counters.problems += 1
        out.append(BridgeProblem(kind=kind, reason=f"{self._who()}: {reason}", raw=raw))

    def _on_frame(self, frame: Frame, now_ms: int, out: list[HostEvent]) -> None:
        where = f"frame type {frame.msg_type:#04x} seq {frame.seq}"
        try:
            msg = m.decode_message(frame.msg_type, frame.payload)
        except m.UnknownMessageTypeError:
            self.counters.unknown_types += 1
            self._problem(out, ProblemKind.UNKNOWN_TYPE, f"{where}: unknown type", frame.raw)
            return
        except m.BridgeMessageError as exc:
            self.counters.undecodable += 1
            self._problem(out, ProblemKind.UNDECODABLE, f"{where}: {exc}", frame.raw)
            return
        where = f"{msg.TYPE.name} seq {frame.seq}"
        if msg.TYPE in m.HOST_TO_BOARD:
            self._problem(
                out, ProblemKind.WRONG_DIRECTION, f"{where}: a host-to-board message", frame.raw
            )
            return
        if self._rx_seq is not None and frame.seq != (self._rx_seq + 1) & 0xFFFF:
            self.counters.seq_gaps += 1
        self._rx_seq = frame.seq
        if isinstance(msg, m.Hello):
            self._on_hello(msg, frame, now_ms, out)
            return
        board = self._board
        if board is None:
            self.counters.before_hello += 1
            last = self._last_hello_request_ms
            if last is None or now_ms - last >= HELLO_REQUEST_INTERVAL_MS:
                self._last_hello_request_ms = now_ms
                self._problem(
                    out,
                    ProblemKind.BEFORE_HELLO,
                    f"{where} before an accepted HELLO ({self.counters.before_hello} so far); "
                    "sent HELLO_REQUEST",
                    frame.raw,
                )
                out.append(self._transmit(m.HelloRequest()))
            return
        expected_kind = _KIND_OF_TYPE.get(msg.TYPE)
        if expected_kind is not None and expected_kind is not board.kind:
            self._problem(
                out,
                ProblemKind.WRONG_BOARD_KIND,
                f"{where} from a {board.kind.name} board (only {expected_kind.name} sends it)",
                frame.raw,
            )
            return
        offset = self._rtc_offset_ms
        received_at = _utc(now_ms)
        match msg:
            case m.Heartbeat():
                self._rtc_offset_ms = msg.rtc_unix_ms - now_ms if msg.rtc_unix_ms else None
                out.append(
                    Heartbeat(
                        board_id=board.board_id,
                        uptime_ms=msg.uptime_ms,
                        status=msg.status,
                        queued_events=msg.queued_events,
                        rtc_offset_ms=self._rtc_offset_ms,
                    )
                )
            case m.ErrorReport():
                out.append(
                    BoardError(board_id=board.board_id, code=msg.code, ref=msg.ref, text=msg.text)
                )
            case m.BlowStart():
                self._on_blow_start(msg, now_ms, out, frame)
            case m.FlowSamples():
                self._on_samples(msg, now_ms, out, frame)
            case m.BlowEnd():
                self._on_blow_end(msg, board, out, frame)
            case m.DispenserEvent():
                if self._fresh(board, msg.TYPE, msg.event_seq, out):
                    event = _dispenser_report(board, msg, offset, received_at)
                    self._deliver(board, msg.TYPE, msg.event_seq, event, out)
            case m.Measurement():
                if self._fresh(board, msg.TYPE, msg.seq, out):
                    self._deliver(
                        board, msg.TYPE, msg.seq, _measurement(board, msg, offset, received_at), out
                    )

    def _on_hello(self, msg: m.Hello, frame: Frame, now_ms: int, out: list[HostEvent]) -> None:
        accepted = (self.expected_board_id in (None, msg.board_id)) and (
            self.expected_kind in (None, msg.kind)
        )
        if self._board is None or self._board.board_id != msg.board_id:
            self._blow, self._ignoring_blow = None, None
        self._rx_seq = frame.seq  # a HELLO starts the board's frame numbering afresh
        offset = msg.rtc_unix_ms - now_ms if msg.rtc_unix_ms else None
        out.append(
            BoardHello(
                board_id=msg.board_id,
                kind=msg.kind,
                firmware=msg.firmware,
                protocol_version=msg.protocol_version,
                rtc_offset_ms=offset,
                capabilities=Capabilities(
                    has_rtc=m.HelloFlags.HAS_RTC in msg.flags,
                    has_battery=m.HelloFlags.HAS_BATTERY in msg.flags,
                    sample_rate_hz=msg.sample_rate_hz or None,
                    max_blow_samples=msg.max_blow_samples or None,
                ),
                accepted=accepted,
            )
        )
        if accepted:
            self._board = _Board(msg.board_id, msg.kind)
            self._rtc_offset_ms = None  # the board sets its clock from the HELLO_ACK
        else:
            self._board = None
            self._problem(
                out,
                ProblemKind.REFUSED_BOARD,
                f"HELLO from {msg.kind.name} board {msg.board_id!r} refused: this link expects "
                f"{self.expected_kind.name if self.expected_kind else 'any kind'} "
                f"{self.expected_board_id or 'any id'}",
                frame.raw,
            )
        out.append(self._transmit(m.HelloAck(host_unix_ms=now_ms, accepted=accepted)))

    # ------------------------------------------------------------------ events and dedupe

    def _ids(self, board: _Board, msg_type: m.MsgType) -> OrderedDict[int, None]:
        per_board = self._seen.get(board.board_id)
        if per_board is None:
            per_board = self._seen[board.board_id] = {}
            if len(self._seen) > MAX_BOARDS_REMEMBERED:
                self._seen.popitem(last=False)
        self._seen.move_to_end(board.board_id)
        return per_board.setdefault(msg_type, OrderedDict())

    def _fresh(
        self, board: _Board, msg_type: m.MsgType, event_id: int, out: list[HostEvent]
    ) -> bool:
        """False (and the duplicate re-ACKed) when this event was delivered already."""
        if event_id not in self._ids(board, msg_type):
            return True
        self.counters.duplicates += 1
        out.append(self._transmit(m.Ack(acked_type=msg_type, event_id=event_id)))
        return False

    def _deliver(
        self,
        board: _Board,
        msg_type: m.MsgType,
        event_id: int,
        event: HostEvent,
        out: list[HostEvent],
    ) -> None:
        ids = self._ids(board, msg_type)
        ids[event_id] = None
        if len(ids) > self.dedupe_window:
            ids.popitem(last=False)
        self.counters.events += 1
        out.append(event)
        out.append(self._transmit(m.Ack(acked_type=msg_type, event_id=event_id)))

    # ------------------------------------------------------------------ blows

    def _delivered_blow(self, blow_id: int) -> bool:
        return self._board is not None and blow_id in self._ids(self._board, m.MsgType.BLOW_END)

    def _ask_resend(self, blow_id: int, why: str, out: list[HostEvent], frame: Frame) -> None:
        self.counters.resend_requests += 1
        self._problem(
            out,
            ProblemKind.BLOW_INCOMPLETE,
            f"blow {blow_id} incomplete ({why}); sent RESEND_BLOW",
            frame.raw,
        )
        out.append(self._transmit(m.ResendBlow(blow_id=blow_id)))

    def _open(
        self,
        blow_id: int,
        start: m.BlowStart | None,
        now_ms: int,
        out: list[HostEvent],
        frame: Frame,
    ) -> _Blow:
        old = self._blow
        if old is not None and old.blow_id != blow_id:
            self._ask_resend(old.blow_id, f"blow {blow_id} began before its BLOW_END", out, frame)
        self._blow = _Blow(blow_id=blow_id, start=start, received_at_ms=now_ms)
        return self._blow

    def _on_blow_start(
        self, msg: m.BlowStart, now_ms: int, out: list[HostEvent], frame: Frame
    ) -> None:
        if self._delivered_blow(msg.blow_id):
            self._ignoring_blow = msg.blow_id
            return
        self._ignoring_blow = None
        self._open(msg.blow_id, msg, now_ms, out, frame)

    def _on_samples(
        self, msg: m.FlowSamples, now_ms: int, out: list[HostEvent], frame: Frame
    ) -> None:
        if msg.blow_id == self._ignoring_blow or self._delivered_blow(msg.blow_id):
            return
        blow = self._blow
        if blow is None or blow.blow_id != msg.blow_id:
            blow = self._open(msg.blow_id, None, now_ms, out, frame)
            blow.broken = "its BLOW_START was lost"
        if blow.broken is not None:
            return
        if msg.first_index != len(blow.samples):
            blow.broken = (
                f"sample index gap: expected {len(blow.samples)}, got {msg.first_index} "
                f"(FLOW_SAMPLES seq {frame.seq})"
            )
        elif len(blow.samples) + len(msg.samples) > self.max_blow_samples:
            blow.broken = f"longer than {self.max_blow_samples} samples"
        else:
            blow.samples.extend(msg.samples)

    def _on_blow_end(
        self, msg: m.BlowEnd, board: _Board, out: list[HostEvent], frame: Frame
    ) -> None:
        blow = self._blow if self._blow and self._blow.blow_id == msg.blow_id else None
        if blow is not None:
            self._blow = None
        self._ignoring_blow = None
        if not self._fresh(board, msg.TYPE, msg.blow_id, out):
            return
        if blow is None:
            why = "BLOW_END without BLOW_START or samples"
        elif blow.broken is not None:
            why = blow.broken
        elif len(blow.samples) != msg.total_samples:
            why = f"{len(blow.samples)} samples received, BLOW_END says {msg.total_samples}"
        else:
            why = ""
        if blow is None or blow.start is None or why:
            self._ask_resend(msg.blow_id, why, out, frame)
            return
        start = blow.start
        curve = BlowCurve(
            board_id=board.board_id,
            blow_id=msg.blow_id,
            sample_rate_hz=start.sample_rate_hz,
            start_tick_us=start.start_tick_us,
            flow_l_s=tuple(s / _ML_PER_L for s in blow.samples),
            end_reason=msg.end_reason,
            board_peak_l_s=msg.board_peak_ml_s / _ML_PER_L if msg.board_peak_ml_s else None,
            saturated=m.BlowFlags.SATURATED in msg.flags,
            sensor_fault=m.BlowFlags.SENSOR_FAULT in msg.flags,
            board_time=_utc(start.rtc_unix_ms) if start.rtc_unix_ms else None,
            rtc_offset_ms=self._rtc_offset_ms,
            received_at=_utc(blow.received_at_ms),
        )
        self._deliver(board, msg.TYPE, msg.blow_id, curve, out)


def _dispenser_report(
    board: _Board, msg: m.DispenserEvent, offset: int | None, received_at: datetime
) -> DispenserReport:
    known = msg.doses_left != m.DOSES_LEFT_UNKNOWN
    return DispenserReport(
        board_id=board.board_id,
        seq=msg.event_seq,
        kind=msg.kind,
        dose_id=msg.dose_id or None,
        scheduled=_utc(msg.scheduled_unix_s * 1000) if msg.scheduled_unix_s else None,
        actual=_utc(msg.actual_unix_s * 1000) if msg.actual_unix_s else None,
        rtc_offset_ms=offset,
        details=MappingProxyType({"doses_left": msg.doses_left} if known else {}),
        received_at=received_at,
    )


def _measurement(
    board: _Board, msg: m.Measurement, offset: int | None, received_at: datetime
) -> PeripheralMeasurement:
    s = msg.status
    comparator: Comparator | None = None
    if m.MeasurementStatus.ABOVE_RANGE in s:
        comparator = ">"
    elif m.MeasurementStatus.BELOW_RANGE in s:
        comparator = "<"
    error = m.MeasurementStatus.ERROR in s
    return PeripheralMeasurement(
        board_id=board.board_id,
        seq=msg.seq,
        measure=msg.measure,
        value=msg.value,
        unit=MEASURES[msg.measure].unit,
        comparator=None if error else comparator,
        absent_reason=AbsentReason.ERROR if error else None,
        unstable=m.MeasurementStatus.UNSTABLE in s,
        at=_utc(msg.rtc_unix_ms) if msg.rtc_unix_ms else None,
        rtc_offset_ms=offset,
        received_at=received_at,
    )
