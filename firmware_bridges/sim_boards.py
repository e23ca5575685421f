"""Simulated bridge boards (PEF sensor, medication dispenser, kiosk peripheral), each a
:class:`~device_profiles.serial.sim.SerialSim`: sans-I/O, driven by the monotonic ``now`` they
are given and a wall-clock function, so tests fast-forward instead of sleeping.

They follow the board rules of docs/firmware-bridges.md, as a reference for firmware authors:

* HELLO at start and every ``hello_retry_s`` until a HELLO_ACK accepts it; nothing else is sent
  before that (events that happen meanwhile are queued). HELLO_REQUEST starts this over.
* After the clock is set (HELLO_ACK, SET_TIME) a HEARTBEAT at once, then every ``heartbeat_s``.
  Setting the clock shifts the timestamps of queued, unacknowledged events by the same
  correction, so every event time reads on the host's time scale.
* Every event (BLOW_END with its blow, DISPENSER_EVENT, MEASUREMENT) is kept until ACKed and
  sent again ``ack_timeout_s`` after its last frame left. A blow is always sent whole
  (BLOW_START, every FLOW_SAMPLES chunk, BLOW_END), live at the sample rate or, when resent,
  at line speed; frames of two events never interleave. RESEND_BLOW of a kept blow resends it;
  of any other blow it answers ERROR BLOW_NOT_BUFFERED.
* The board clock reads ``wall_clock() + rtc_offset``; a board without an RTC reads 0 until
  the host sets it.

:class:`BoardFaults` injects link faults, counted in frames the board transmits (1-based).
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

from cobs import cobs  # type: ignore[import-untyped]

from device_profiles.events import EventKind
from device_profiles.gatt.ieee11073 import number_from_decimal
from firmware_bridges import messages as m
from firmware_bridges.framing import PROTOCOL_VERSION, Frame, FrameDecoder, encode_frame
from firmware_bridges.pef_curves import PefCurve

__all__ = [
    "BoardFaults",
    "BoardOptions",
    "DispenserSim",
    "DoseSlot",
    "KioskPeripheralSim",
    "KioskReading",
    "PefBoardSim",
]

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_I16_MIN, _I16_MAX = -0x8000, 0x7FFF
#: The PEF board's blow buffer: 30 s at 1 kHz (samples).
PEF_BUFFER_SAMPLES: Final = 30_000
SENT_SAMPLES_KEPT: Final = 32
#: What a board keeps of the host's messages and ACKs for observers (tests, serial-sim's
#: counters): bounded, so a day-long simulation does not grow.
OBSERVED_KEPT: Final = 10_000
RESULTS_KEPT: Final = 64
#: DOMAIN.md §4: the missed-dose window is configurable from 5 min to 5 h in devices.
MIN_MISSED_WINDOW: Final = timedelta(minutes=5)
MAX_MISSED_WINDOW: Final = timedelta(hours=5)

_Key = tuple[m.MsgType, int]


def _unix_ms(dt: datetime) -> int:
    return (dt - _EPOCH) // timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True, kw_only=True)
class BoardFaults:
    #: Before every k-th frame, 1-16 random non-zero bytes and a 0x00: a noise burst on an idle
    #: line (the frame after it is intact).
    noise_every: int | None = None
    corrupt_every: int | None = None  # every k-th frame goes out with one CRC bit flipped
    drop_frame_every: int | None = None  # every k-th frame never leaves the board
    drop_frames: frozenset[int] = frozenset()  # these frame numbers never leave the board
    duplicate_every: int | None = None  # every k-th event is transmitted twice in a row
    #: The board is pulled out after this many frames (once; :meth:`replug` plugs it back).
    unplug_after_frames: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("noise_every", "corrupt_every", "drop_frame_every", "duplicate_every"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.unplug_after_frames is not None and self.unplug_after_frames < 0:
            raise ValueError("unplug_after_frames must be >= 0")

    def drops(self, n: int) -> bool:
        return n in self.drop_frames or _every(self.drop_frame_every, n)


def _every(k: int | None, n: int) -> bool:
    return k is not None and n % k == 0


def _bad_crc(frame: bytes) -> bytes:
    """The same frame with the lowest bit of its CRC flipped (re-stuffed, still delimited)."""
    data = bytearray(cobs.decode(frame[:-1]))
    data[-4] ^= 0x01
    out: bytes = cobs.encode(bytes(data)) + b"\x00"
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class BoardOptions:
    """What every simulated board has in common."""

    firmware: str = "sim-1.0.0"
    has_rtc: bool = True  # False: the clock reads 0 until the host sets it
    rtc_offset: timedelta = timedelta(0)  # board clock minus true time, before the host sets it
    has_battery: bool = False
    heartbeat_s: float = 5.0
    hello_retry_s: float = 2.0
    ack_timeout_s: float = 3.0
    faults: BoardFaults = BoardFaults()

    def __post_init__(self) -> None:
        if min(self.heartbeat_s, self.hello_retry_s, self.ack_timeout_s) <= 0:
            raise ValueError("heartbeat_s, hello_retry_s and ack_timeout_s must be positive")


@dataclass(slots=True)
class _Queued:
    release_at: float
    msg: m.BridgeMessage
    completes: _Key | None  # the last frame of this event's transmission


@dataclass(slots=True)
class _Pending:
    messages: tuple[m.BridgeMessage, ...]
    resend_at: float | None = None  # None while queued for transmission
    resend_requested: bool = False


class _BoardSim:
    """What every board does; subclasses produce their events in :meth:`_produce`."""

    kind: m.BoardKind

    def __init__(
        self, board_id: str, *, wall_clock: Callable[[], datetime], options: BoardOptions
    ) -> None:
        self.board_id = board_id
        self.options = options
        self.faults = options.faults
        self._wall_clock = wall_clock
        self._rtc_offset: timedelta | None = options.rtc_offset if options.has_rtc else None
        self._rng = random.Random(self.faults.seed)  # noqa: S311 - fault injection, not security
        self._decoder = FrameDecoder()
        self._started: float | None = None
        self._now = 0.0
        self._wall = _EPOCH
        self._accepted = False
        self._next_hello = 0.0
        self._next_heartbeat: float | None = None
        self._tx_seq = 0
        self._queue: deque[_Queued] = deque()
        self._pending: dict[_Key, _Pending] = {}
        self._urgent: list[m.BridgeMessage] = []
        self._events_made = 0
        self._unplugged = False
        self._unplug_done = False  # the unplug fault acts once
        # observable by tests
        self.frames_sent = 0  # frames the board tried to send (dropped ones included)
        self.frames_dropped = 0
        self.resends = 0
        self.received: deque[m.BridgeMessage] = deque(maxlen=OBSERVED_KEPT)
        self.acked: deque[_Key] = deque(maxlen=OBSERVED_KEPT)  # the latest ACKs, in order
        self.acked_by_type: Counter[m.MsgType] = Counter()  # every ACK, counted
        #: BLOW_RESULTs from the host (PEF boards): what a real board would show the patient
        self.results: deque[m.BlowResult] = deque(maxlen=RESULTS_KEPT)
        self._hello()  # refuses a bad board id or firmware string now, not at the first poll

    # ------------------------------------------------------------------ SerialSim

    @property
    def unplugged(self) -> bool:
        return self._unplugged

    def replug(self, now: float) -> None:
        """Plugged in again: the link starts over (HELLO, frame numbers from 0, nothing
        half-sent survives); every event not yet ACKed is kept and sent again, whole, once the
        host accepts the HELLO. Memory, clocks and counters stay."""
        self._unplugged = False
        self._decoder = FrameDecoder()
        self._accepted = False
        self._next_hello = now
        self._next_heartbeat = None
        self._tx_seq = 0
        self._urgent.clear()
        self._queue.clear()
        for p in self._pending.values():
            p.resend_at, p.resend_requested = now, False

    def receive(self, data: bytes, now: float) -> None:
        if self._unplugged:
            return
        self._tick(now)
        for item in self._decoder.feed(data):
            if not isinstance(item, Frame):
                continue  # a damaged host frame: the host repeats what matters
            try:
                msg = m.decode_message(item.msg_type, item.payload)
            except m.UnknownMessageTypeError:
                self._urgent.append(self._error(m.BoardErrorCode.UNKNOWN_MESSAGE, item.msg_type))
                continue
            except m.BridgeMessageError as exc:
                self._urgent.append(
                    self._error(m.BoardErrorCode.BAD_PAYLOAD, item.msg_type, str(exc))
                )
                continue
            self.received.append(msg)
            self._on_message(msg, now)

    def poll(self, now: float) -> bytes:
        if self._unplugged:
            return b""
        self._tick(now)
        out = bytearray()
        self._produce(now)
        if not self._accepted:
            if now >= self._next_hello:
                self._send(self._hello(), out)
                self._next_hello = now + self.options.hello_retry_s
            return bytes(out)
        for msg in self._urgent:
            self._send(msg, out)
        self._urgent.clear()
        if self._next_heartbeat is not None and now >= self._next_heartbeat:
            self._send(self._heartbeat(now), out)
            self._next_heartbeat = now + self.options.heartbeat_s
        if not self._queue:
            for key, p in self._pending.items():
                if p.resend_at is not None and now >= p.resend_at:
                    p.resend_at = None
                    self.resends += 1
                    self._enqueue([(now, msg) for msg in p.messages], key)
        while self._queue and self._queue[0].release_at <= now and not self._unplugged:
            q = self._queue.popleft()
            self._send(q.msg, out)
            sent = self._pending.get(q.completes) if q.completes else None
            if sent is not None:
                sent.resend_at = now if sent.resend_requested else now + self.options.ack_timeout_s
                sent.resend_requested = False
        return bytes(out)

    def next_deadline(self) -> float | None:
        if self._unplugged:
            return None
        if self._started is None:
            return 0.0
        times = [self._next_production()]
        if not self._accepted:
            times.append(self._next_hello)
        else:
            if self._urgent:
                times.append(self._now)
            times.append(self._next_heartbeat)
            if self._queue:
                times.append(self._queue[0].release_at)
            else:
                times += [p.resend_at for p in self._pending.values()]
        return min((t for t in times if t is not None), default=None)

    # ------------------------------------------------------------------ board behaviour

    def _tick(self, now: float) -> None:
        if self._started is None:
            self._started = now
            self._next_hello = now
        self._now = now
        self._wall = self._wall_clock()

    def _rtc_ms(self, wall: datetime | None = None) -> int:
        """The board clock at ``wall`` (default: now), Unix ms; 0 while it is not set."""
        if self._rtc_offset is None:
            return 0
        return _unix_ms((wall or self._wall) + self._rtc_offset)

    def _hello(self) -> m.Hello:
        flags = m.HelloFlags(0)
        if self.options.has_rtc:
            flags |= m.HelloFlags.HAS_RTC
        if self.options.has_battery:
            flags |= m.HelloFlags.HAS_BATTERY
        return m.Hello(
            kind=self.kind,
            protocol_version=PROTOCOL_VERSION,
            flags=flags,
            board_id=self.board_id,
            firmware=self.options.firmware,
            rtc_unix_ms=self._rtc_ms(),
            **self._capabilities(),
        )

    def _capabilities(self) -> dict[str, int]:
        return {}

    def _status(self) -> m.BoardStatus:
        return m.BoardStatus.RTC_UNSET if self._rtc_offset is None else m.BoardStatus(0)

    def _heartbeat(self, now: float) -> m.Heartbeat:
        return m.Heartbeat(
            uptime_ms=round((now - (self._started or now)) * 1000),
            status=self._status(),
            queued_events=min(len(self._pending), 0xFFFF),
            rtc_unix_ms=self._rtc_ms(),
        )

    def _error(self, code: m.BoardErrorCode, ref: int, text: str = "") -> m.ErrorReport:
        return m.ErrorReport(code=code, ref=ref, text=text[: m.MAX_ERROR_TEXT])

    def _send(self, msg: m.BridgeMessage, out: bytearray) -> None:
        f = self.faults
        if not self._unplug_done and self.frames_sent == f.unplug_after_frames:
            self._unplug_done = self._unplugged = True
            return
        self.frames_sent += 1
        n = self.frames_sent
        seq, self._tx_seq = self._tx_seq, (self._tx_seq + 1) & 0xFFFF
        if f.drops(n):
            self.frames_dropped += 1
            return
        if _every(f.noise_every, n):
            out += bytes(self._rng.randrange(1, 256) for _ in range(self._rng.randint(1, 16)))
            out += b"\x00"
        frame = encode_frame(msg.TYPE, seq, msg.encode())
        out += _bad_crc(frame) if _every(f.corrupt_every, n) else frame

    def _enqueue(self, timed: Sequence[tuple[float, m.BridgeMessage]], key: _Key) -> None:
        for i, (at, msg) in enumerate(timed):
            release = max(at, self._queue[-1].release_at) if self._queue else at
            self._queue.append(_Queued(release, msg, key if i == len(timed) - 1 else None))

    def _emit(self, key: _Key, timed: Sequence[tuple[float, m.BridgeMessage]]) -> None:
        """A new event: keep it until ACKed and queue its frames."""
        self._pending[key] = _Pending(messages=tuple(msg for _, msg in timed))
        self._enqueue(timed, key)
        self._events_made += 1
        if _every(self.faults.duplicate_every, self._events_made):
            self._enqueue(timed, key)

    def _set_clock(self, host_unix_ms: int, now: float) -> None:
        new = _EPOCH + timedelta(milliseconds=host_unix_ms) - self._wall
        if self._rtc_offset is not None:
            delta_ms = (new - self._rtc_offset) // timedelta(milliseconds=1)
            for q in self._queue:
                q.msg = _shifted(q.msg, delta_ms)
            for p in self._pending.values():
                p.messages = tuple(_shifted(msg, delta_ms) for msg in p.messages)
        self._rtc_offset = new
        self._next_heartbeat = now

    def _on_message(self, msg: m.BridgeMessage, now: float) -> None:
        match msg:
            case m.HelloAck(accepted=True):
                self._accepted = True
                self._set_clock(msg.host_unix_ms, now)
            case m.HelloAck():
                pass  # refused: keep saying HELLO every hello_retry_s
            case m.HelloRequest():
                self._accepted = False
                self._next_hello = now
            case m.SetTime():
                self._set_clock(msg.host_unix_ms, now)
            case m.Ack():
                key = (msg.acked_type, msg.event_id)
                if self._pending.pop(key, None) is not None:
                    self.acked.append(key)
                    self.acked_by_type[msg.acked_type] += 1
            case m.ResendBlow():
                p = self._pending.get((m.MsgType.BLOW_END, msg.blow_id))
                if p is None:
                    self._urgent.append(
                        self._error(m.BoardErrorCode.BLOW_NOT_BUFFERED, msg.blow_id)
                    )
                elif p.resend_at is None:
                    p.resend_requested = True
                else:
                    p.resend_at = now
            case m.BlowResult() if self.kind is m.BoardKind.PEF_SENSOR:
                self.results.append(msg)
            case _:
                self._urgent.append(self._error(m.BoardErrorCode.UNKNOWN_MESSAGE, msg.TYPE))

    # ------------------------------------------------------------------ subclass hooks

    def _produce(self, now: float) -> None:
        raise NotImplementedError

    def _next_production(self) -> float | None:
        raise NotImplementedError

    def _since_start(self, now: float) -> float:
        return now - (self._started if self._started is not None else now)


def _shifted(msg: m.BridgeMessage, delta_ms: int) -> m.BridgeMessage:
    """``msg`` with its board-clock timestamp moved by ``delta_ms`` (0 stays "not set")."""
    match msg:
        case m.BlowStart() | m.Measurement() if msg.rtc_unix_ms:
            return dataclasses.replace(msg, rtc_unix_ms=msg.rtc_unix_ms + delta_ms)
        case m.DispenserEvent() if msg.actual_unix_s:
            return dataclasses.replace(msg, actual_unix_s=msg.actual_unix_s + delta_ms // 1000)
    return msg


# --------------------------------------------------------------------------- PEF sensor board


class PefBoardSim(_BoardSim):
    """A flow sensor board: each blow ``(at_s, curve)`` is streamed live ``at_s`` seconds after
    the board starts, ``chunk`` samples per FLOW_SAMPLES frame, each frame leaving when its last
    sample has been measured (so 1 kHz in chunks of 50 costs the host 20 frames/s).

    Flow is sent as i16 mL/s, rounded; a value beyond the i16 range sits at the limit and
    the blow is flagged SATURATED, as a real ADC at full scale would be.
    """

    kind = m.BoardKind.PEF_SENSOR

    def __init__(
        self,
        board_id: str,
        *,
        blows: Sequence[tuple[float, PefCurve]],
        wall_clock: Callable[[], datetime],
        sample_rate_hz: int = 1000,
        chunk: int = 50,
        first_blow_id: int = 1,
        options: BoardOptions | None = None,
    ) -> None:
        if not 1 <= chunk <= m.MAX_SAMPLES_PER_FRAME:
            raise ValueError(f"chunk must be 1..{m.MAX_SAMPLES_PER_FRAME}")
        if sample_rate_hz < m.MIN_SAMPLE_RATE_HZ:
            raise ValueError(f"sample_rate_hz must be >= {m.MIN_SAMPLE_RATE_HZ}")
        self.sample_rate_hz = sample_rate_hz
        self.chunk = chunk
        # Taken in order, one at a time: a lazy sequence (a day of blows made on demand) works.
        self._blows = blows
        self._next_blow = 0
        self._blow_id = first_blow_id
        #: blow id → the i16 samples as sent (what the host must reassemble exactly), for the
        #: last SENT_SAMPLES_KEPT blows
        self.sent_samples: dict[int, tuple[int, ...]] = {}
        super().__init__(board_id, wall_clock=wall_clock, options=options or BoardOptions())

    def _capabilities(self) -> dict[str, int]:
        return {"sample_rate_hz": self.sample_rate_hz, "max_blow_samples": PEF_BUFFER_SAMPLES}

    def _next_production(self) -> float | None:
        if self._next_blow >= len(self._blows) or self._started is None:
            return None
        return self._started + self._blows[self._next_blow][0]

    def _produce(self, now: float) -> None:
        while self._next_blow < len(self._blows):
            at, curve = self._blows[self._next_blow]
            if self._since_start(now) < at:
                return
            self._next_blow += 1
            if curve.sample_rate_hz != self.sample_rate_hz:
                raise ValueError(f"blow at {at} s is sampled at {curve.sample_rate_hz} Hz")
            if len(curve.flow_l_s) > PEF_BUFFER_SAMPLES:
                raise ValueError(f"blow at {at} s exceeds {PEF_BUFFER_SAMPLES} samples")
            start = (self._started or 0.0) + at
            self._stream(start, curve)

    def _stream(self, start: float, curve: PefCurve) -> None:
        blow_id, self._blow_id = self._blow_id, self._blow_id + 1
        samples = [round(f * 1000) for f in curve.flow_l_s]
        saturated = any(not _I16_MIN <= s <= _I16_MAX for s in samples)
        samples = [min(max(s, _I16_MIN), _I16_MAX) for s in samples]
        self.sent_samples[blow_id] = tuple(samples)
        while len(self.sent_samples) > SENT_SAMPLES_KEPT:  # a day-long run must not grow
            del self.sent_samples[next(iter(self.sent_samples))]
        rate = self.sample_rate_hz
        timed: list[tuple[float, m.BridgeMessage]] = [
            (
                start,
                m.BlowStart(
                    blow_id=blow_id,
                    sample_rate_hz=rate,
                    start_tick_us=round(start * 1_000_000) & 0xFFFFFFFF,
                    rtc_unix_ms=self._rtc_ms(),
                ),
            )
        ]
        for i in range(0, len(samples), self.chunk):
            part = tuple(samples[i : i + self.chunk])
            done = start + (i + len(part)) / rate
            timed.append((done, m.FlowSamples(blow_id=blow_id, first_index=i, samples=part)))
        end = m.BlowEnd(
            blow_id=blow_id,
            total_samples=len(samples),
            end_reason=m.EndReason.COMPLETE,
            flags=m.BlowFlags.SATURATED if saturated else m.BlowFlags(0),
            board_peak_ml_s=min(max(max(samples, default=0), 0), 0xFFFF),
        )
        timed.append((timed[-1][0], end))
        self._emit((m.MsgType.BLOW_END, blow_id), timed)


# --------------------------------------------------------------------------- dispenser

Behaviour = Literal["on_time", "late", "misses"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DoseSlot:
    dose_id: str
    scheduled: datetime  # aware UTC


@dataclass(frozen=True, slots=True)
class _Happening:
    at: datetime  # true (wall) time
    kind: EventKind
    slot: DoseSlot | None = None


class DispenserSim(_BoardSim):
    """A dose dispenser following its schedule; the patient behaves as told per dose.

    A dose taken more than ``late_after`` after its scheduled time is late; one not taken
    within ``missed_window`` (per client, 5 min-5 h: DOMAIN.md §4) is missed.
    Per dose: DOSE_DUE and DOSE_DISPENSED at the scheduled time, then ``on_time`` → DOSE_TAKEN
    at scheduled + ``late_after`` / 2, ``late`` → DOSE_TAKEN_LATE halfway between
    ``late_after`` and ``missed_window``, ``misses`` → DOSE_MISSED at scheduled +
    ``missed_window`` (the dose is locked away). Each dispense takes one dose from ``stock``:
    LOW_STOCK once when at most ``low_stock_at`` are left, ROLL_EMPTY at zero. Every event
    carries doses_left. ``help_requests`` are HELP_REQUEST times; during ``power_outages``
    (start, end) the board runs on battery (POWER_LOST / POWER_RESTORED, heartbeat ON_BATTERY).

    The schedule runs on true (wall) time; events are stamped with the board clock at the
    moment they happened. ``time_scale`` is wall seconds per monotonic second, used only to
    tell the runner when the next event is due (``wall_clock`` must run at that rate).
    """

    kind = m.BoardKind.DISPENSER

    def __init__(
        self,
        board_id: str,
        *,
        schedule: Sequence[DoseSlot],
        wall_clock: Callable[[], datetime],
        behaviour: Behaviour | Sequence[Behaviour] = "on_time",
        missed_window: timedelta = timedelta(minutes=30),
        late_after: timedelta = timedelta(minutes=10),
        stock: int | None = None,
        low_stock_at: int = 3,
        help_requests: Sequence[datetime] = (),
        power_outages: Sequence[tuple[datetime, datetime]] = (),
        time_scale: float = 1.0,
        options: BoardOptions | None = None,
    ) -> None:
        if not MIN_MISSED_WINDOW <= missed_window <= MAX_MISSED_WINDOW:
            raise ValueError(f"missed_window must be {MIN_MISSED_WINDOW}..{MAX_MISSED_WINDOW}")
        if not timedelta(0) < late_after < missed_window:
            raise ValueError("late_after must be positive and shorter than missed_window")
        if time_scale <= 0:
            raise ValueError("time_scale must be positive")
        behaviours = [behaviour] * len(schedule) if isinstance(behaviour, str) else behaviour
        if len(behaviours) != len(schedule):
            raise ValueError("one behaviour per dose slot")
        options = options or BoardOptions(has_battery=True)
        super().__init__(board_id, wall_clock=wall_clock, options=options)
        self.time_scale = time_scale
        self.doses_left = len(schedule) if stock is None else stock
        self.low_stock_at = low_stock_at
        self._low_stock_told = False
        self._on_battery = False
        self._seq = 0
        h: list[_Happening] = []
        for slot, b in zip(schedule, behaviours, strict=True):
            if slot.scheduled.utcoffset() is None:
                raise ValueError(f"dose {slot.dose_id}: scheduled time must be aware")
            t = slot.scheduled
            h += [
                _Happening(t, EventKind.DOSE_DUE, slot),
                _Happening(t, EventKind.DOSE_DISPENSED, slot),
            ]
            if b == "on_time":
                h.append(_Happening(t + late_after / 2, EventKind.DOSE_TAKEN, slot))
            elif b == "late":
                h.append(
                    _Happening(
                        t + (late_after + missed_window) / 2, EventKind.DOSE_TAKEN_LATE, slot
                    )
                )
            else:
                h.append(_Happening(t + missed_window, EventKind.DOSE_MISSED, slot))
        h += [_Happening(t, EventKind.HELP_REQUEST) for t in help_requests]
        for lost, back in power_outages:
            h += [
                _Happening(lost, EventKind.POWER_LOST),
                _Happening(back, EventKind.POWER_RESTORED),
            ]
        self._happenings = deque(sorted(h, key=lambda x: x.at))

    def _status(self) -> m.BoardStatus:
        s = super()._status()
        return s | m.BoardStatus.ON_BATTERY if self._on_battery else s

    def _next_production(self) -> float | None:
        if not self._happenings or self._started is None:
            return None
        ahead = (self._happenings[0].at - self._wall).total_seconds() / self.time_scale
        return self._now + max(ahead, 0.0)

    def _produce(self, now: float) -> None:
        while self._happenings and self._happenings[0].at <= self._wall:
            h = self._happenings.popleft()
            dispensed = h.kind is EventKind.DOSE_DISPENSED
            if dispensed:
                self.doses_left = max(self.doses_left - 1, 0)
            elif h.kind in (EventKind.POWER_LOST, EventKind.POWER_RESTORED):
                self._on_battery = h.kind is EventKind.POWER_LOST
            self._event(h.kind, h.at, h.slot)
            if dispensed and self.doses_left <= self.low_stock_at and not self._low_stock_told:
                self._low_stock_told = True
                self._event(EventKind.LOW_STOCK, h.at, None)
            if dispensed and self.doses_left == 0:
                self._event(EventKind.ROLL_EMPTY, h.at, None)

    def _event(self, kind: EventKind, at: datetime, slot: DoseSlot | None) -> None:
        self._seq += 1
        rtc = self._rtc_ms(at)
        msg = m.DispenserEvent(
            event_seq=self._seq,
            kind=kind,
            dose_id=slot.dose_id if slot else "",
            scheduled_unix_s=_unix_ms(slot.scheduled) // 1000 if slot else 0,
            actual_unix_s=rtc // 1000,
            doses_left=min(self.doses_left, m.DOSES_LEFT_UNKNOWN - 1),
        )
        self._emit((m.MsgType.DISPENSER_EVENT, self._seq), [(self._now, msg)])


# --------------------------------------------------------------------------- kiosk peripheral


_NO_STATUS: Final = m.MeasurementStatus(0)


@dataclass(frozen=True, slots=True, kw_only=True)
class KioskReading:
    at_s: float  # seconds after the board starts
    measure: str  # device_profiles measure key with a MEASURE_CODES entry
    value: float | None  # in the measure's canonical unit; None = the device reported an error
    status: m.MeasurementStatus = _NO_STATUS


class KioskPeripheralSim(_BoardSim):
    """A kiosk peripheral without BLE (a height rod, an RS-232 scale behind a bridge board):
    each reading ``(at_s, measure, value)`` is sent ``at_s`` seconds after start, the value as
    its exact decimal mantissa and exponent; None becomes an ERROR reading with no value."""

    kind = m.BoardKind.KIOSK_PERIPHERAL

    def __init__(
        self,
        board_id: str,
        *,
        measurements: Sequence[tuple[float, str, float | None] | KioskReading],
        wall_clock: Callable[[], datetime],
        options: BoardOptions | None = None,
    ) -> None:
        options = options or BoardOptions(has_rtc=False)
        super().__init__(board_id, wall_clock=wall_clock, options=options)
        readings = [
            r if isinstance(r, KioskReading) else KioskReading(at_s=r[0], measure=r[1], value=r[2])
            for r in measurements
        ]
        self._readings = deque(sorted(readings, key=lambda r: r.at_s))
        self._seq = 0
        for r in readings:  # refuse at construction what the message would refuse later
            self._message(r, 1)

    def _message(self, r: KioskReading, seq: int) -> m.Measurement:
        status = r.status
        mantissa = exponent = 0
        if r.value is None:
            status |= m.MeasurementStatus.ERROR
        else:
            n = number_from_decimal(repr(float(r.value)))
            mantissa, exponent = n.mantissa, n.exponent
        return m.Measurement(
            seq=seq,
            measure=r.measure,
            status=status,
            exponent=exponent,
            mantissa=mantissa,
            rtc_unix_ms=self._rtc_ms(),
        )

    def _next_production(self) -> float | None:
        if not self._readings or self._started is None:
            return None
        return self._started + self._readings[0].at_s

    def _produce(self, now: float) -> None:
        while self._readings and self._since_start(now) >= self._readings[0].at_s:
            self._seq += 1
            msg = self._message(self._readings.popleft(), self._seq)
            self._emit((m.MsgType.MEASUREMENT, self._seq), [(now, msg)])
