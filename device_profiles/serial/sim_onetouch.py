"""Simulated LifeScan OneTouch Ultra 2: the meter's side of :mod:`.onetouch` (sans-I/O).

Implements :class:`~device_profiles.serial.sim.SerialSim`. Commands arrive as DC1 CR, text, CR
(LF, DC1 and NUL are ignored; an unknown or malformed command is ignored and counted). Answers
are checksummed lines ending CR LF, queued with ``line_delay_s`` between lines: ``DM@``,
``DM?``, ``DMF``, ``DMT`` (sets the meter clock and answers ``T`` + the new clock), ``DMSU?``
and ``DMP`` (header, then the records newest first, as in the example dump the Tidepool
uploader documents). The meter clock is the hub's local wall clock (``local_now``) plus
``clock_offset_s``.

Out-of-range results (UNVERIFIED layout, see :mod:`.onetouch`): a :class:`OneTouchReading`
with a comparator and a number is stored as that number (below 20 / above 600 mg/dL); with a
comparator and no number it is written as the text ``HIGH`` / `` LO `` in the value field.

Faults (:class:`OneTouchFaults`, each "every k-th" counted over the lines the meter sends):
``noise_every`` puts a garbage line (containing 0xFF) before the k-th line; ``bad_checksum_every``
sends the k-th line with its checksum off by one; ``drop_byte_every`` loses every k-th byte on
the wire; ``ignore_first_commands`` leaves the first N commands unanswered (meter asleep);
``unplug_after_lines`` pulls the cable after that many lines (:meth:`~OneTouchUltra2Sim.replug`
plugs it back).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from device_profiles.serial.onetouch import (
    CMD_DUMP,
    CMD_READ_CLOCK,
    CMD_SERIAL,
    CMD_SET_CLOCK,
    CMD_UNIT,
    CMD_VERSION,
    GLUCOSE_HIGH_LIMIT_MG_DL,
    GLUCOSE_LOW_LIMIT_MG_DL,
    checksum,
    encode_line,
)

__all__ = [
    "DEFAULT_SERIAL",
    "OneTouchFaults",
    "OneTouchReading",
    "OneTouchUltra2Sim",
    "clock_text",
    "reading_text",
    "ultra2_readings",
]

#: 9 characters ending in "Y", which the published spec gives as the Ultra 2 model letter.
DEFAULT_SERIAL: Final = "ZNF00001Y"
MAX_COMMAND_BYTES: Final = 64  # the longest command (DMT + date) is 20 bytes
MAX_RECORDS: Final = 999  # the dump header's count has three digits
_DAYS: Final = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")
_IGNORED: Final = frozenset(b"\n\x11\x00")


@dataclass(frozen=True, slots=True, kw_only=True)
class OneTouchFaults:
    noise_every: int | None = None
    bad_checksum_every: int | None = None
    drop_byte_every: int | None = None
    ignore_first_commands: int = 0
    unplug_after_lines: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("noise_every", "bad_checksum_every", "drop_byte_every"):
            k = getattr(self, name)
            if k is not None and k < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.ignore_first_commands < 0 or (self.unplug_after_lines or 0) < 0:
            raise ValueError("ignore_first_commands and unplug_after_lines must be >= 0")


@dataclass(frozen=True, slots=True)
class OneTouchReading:
    """One stored test as the meter keeps it (value in mg/dL, time on the meter's clock)."""

    time: datetime
    value_mg_dl: int | None
    comparator: str | None = None  # "<" LO, ">" HI
    control: bool = False
    meal: str = "N"
    comment: str = "00"

    def __post_init__(self) -> None:
        v, lo, hi = self.value_mg_dl, GLUCOSE_LOW_LIMIT_MG_DL, GLUCOSE_HIGH_LIMIT_MG_DL
        ok = {
            None: v is not None and lo <= v <= hi,
            "<": v is None or 0 <= v < lo,
            ">": v is None or hi < v <= 999,
        }.get(self.comparator, False)
        if not ok:
            raise ValueError(f"value {v} does not fit comparator {self.comparator!r}")
        if not 2000 <= self.time.year <= 2099 or self.time.tzinfo is not None:
            raise ValueError("time must be naive and in 2000-2099 (two-digit years)")
        if len(self.meal) != 1 or not self.meal.isupper():
            raise ValueError(f"meal {self.meal!r} must be one upper-case letter")
        if len(self.comment) != 2 or not self.comment.isdigit():
            raise ValueError(f"comment {self.comment!r} must be two digits")


def clock_text(t: datetime) -> str:
    """``"SAT","03/21/15","16:47:02   "``: the meter's weekday, date and time fields."""
    return f'"{_DAYS[t.weekday()]}","{t:%m/%d/%y}","{t:%H:%M:%S}   "'


def reading_text(r: OneTouchReading) -> str:
    """The dump line text (without checksum) of one record."""
    if r.value_mg_dl is not None:
        body = f" {r.value_mg_dl:03d}"
    else:
        body = "HIGH" if r.comparator == ">" else " LO "
    value = ("C" if r.control else " ") + body + " "
    return f'P {clock_text(r.time)},"{value}","{r.meal}","{r.comment}", 00'


@dataclass(frozen=True, slots=True)
class _Out:
    due: float
    data: bytes
    is_line: bool  # False for injected noise


class OneTouchUltra2Sim:
    def __init__(
        self,
        readings: Iterable[OneTouchReading],
        *,
        local_now: Callable[[], datetime],
        serial: str = DEFAULT_SERIAL,
        version: str = "P02.00.00",
        clock_offset_s: float = 0.0,
        display_unit: str = "MG/DL ",
        faults: OneTouchFaults | None = None,
        line_delay_s: float = 0.0,
    ) -> None:
        if len(serial) != 9 or not all(c.isdigit() or "A" <= c <= "Z" for c in serial):
            raise ValueError(f"serial {serial!r} must be 9 characters 0-9/A-Z")
        self.readings: list[OneTouchReading] = []
        for r in readings:
            self.add_reading(r)
        self.serial = serial
        self.version = version
        self.clock_offset_s = clock_offset_s
        self.display_unit = display_unit
        self.faults = faults if faults is not None else OneTouchFaults()
        self.line_delay_s = line_delay_s
        self._local_now = local_now
        self._rng = random.Random(self.faults.seed)  # noqa: S311 - simulation, not crypto
        self._inbox = bytearray()
        self._queue: deque[_Out] = deque()
        self._last_due = float("-inf")
        self._unplugged = self.faults.unplug_after_lines == 0
        # counters
        self.commands_received = 0  # well-formed commands, answered or not
        self.commands_ignored = 0  # well-formed but unanswered (asleep)
        self.malformed_commands = 0
        self.lines_queued = 0
        self.lines_sent = 0
        self.noise_lines = 0
        self.bytes_sent = 0
        self.bytes_dropped = 0
        self.dumps = 0

    def add_reading(self, reading: OneTouchReading) -> None:
        """The user did a test: it is the newest record."""
        if len(self.readings) >= MAX_RECORDS:
            raise ValueError(f"the dump format holds at most {MAX_RECORDS} records")
        self.readings.append(reading)

    @property
    def meter_time(self) -> datetime:
        t = self._local_now() + timedelta(seconds=self.clock_offset_s)
        return t.replace(microsecond=0)

    @property
    def unplugged(self) -> bool:
        return self._unplugged

    def replug(self, now: float) -> None:
        """Plugged in again: half-received commands and unsent lines are gone; memory, clock
        and counters stay (so ``unplug_after_lines`` and ``ignore_first_commands`` act once)."""
        self._unplugged = False
        self._inbox.clear()
        self._queue.clear()
        self._last_due = now

    # ------------------------------------------------------------------ host → meter

    def receive(self, data: bytes, now: float) -> None:
        if self._unplugged:
            return
        for b in data:
            if b == 0x0D:
                if self._inbox:
                    self._command(self._inbox.decode("latin-1"), now)
                self._inbox.clear()
            elif b not in _IGNORED:
                self._inbox.append(b)
                if len(self._inbox) > MAX_COMMAND_BYTES:
                    self.malformed_commands += 1
                    self._inbox.clear()

    def _command(self, text: str, now: float) -> None:
        answer = self._answer(text)
        if answer is None:
            self.malformed_commands += 1
            return
        self.commands_received += 1
        if self.commands_received <= self.faults.ignore_first_commands:
            self.commands_ignored += 1
            return
        for line in answer():
            self._enqueue(line, now)

    def _answer(self, text: str) -> Callable[[], list[str]] | None:
        """What to send for ``text`` (evaluated when answered), or None if malformed."""
        fixed: dict[str, Callable[[], list[str]]] = {
            CMD_SERIAL: lambda: [f'@ "{self.serial}"'],
            CMD_VERSION: lambda: [f"?{self.version}"],
            CMD_READ_CLOCK: lambda: [f"F {clock_text(self.meter_time)}"],
            CMD_UNIT: lambda: [f'SU?,"{self.display_unit}"'],
            CMD_DUMP: self._dump,
        }
        if text in fixed:
            return fixed[text]
        if text.startswith(CMD_SET_CLOCK):
            try:
                new = datetime.strptime(text[3:], "%m/%d/%y %H:%M:%S")  # noqa: DTZ007 - meter time
            except ValueError:
                return None
            return lambda: self._set_clock(new)
        return None

    def _set_clock(self, new: datetime) -> list[str]:
        self.clock_offset_s = (new - self._local_now()).total_seconds()
        return [f"T {clock_text(new)}"]

    def _dump(self) -> list[str]:
        self.dumps += 1
        header = f'P {len(self.readings):03d},"{self.serial}","{self.display_unit}"'
        return [header, *(reading_text(r) for r in reversed(self.readings))]

    def _enqueue(self, text: str, now: float) -> None:
        self.lines_queued += 1
        n, f = self.lines_queued, self.faults
        due = max(now, self._last_due) + self.line_delay_s
        self._last_due = due
        if f.noise_every is not None and n % f.noise_every == 0:
            self.noise_lines += 1
            junk = bytes(self._rng.randrange(0x20, 0x100) for _ in range(self._rng.randrange(40)))
            self._queue.append(_Out(due, b"\xff" + junk + b"\r\n", is_line=False))
        if f.bad_checksum_every is not None and n % f.bad_checksum_every == 0:
            raw = text.encode("ascii")
            data = raw + b" %04X\r\n" % ((checksum(raw) + 1) & 0xFFFF)
        else:
            data = encode_line(text)
        self._queue.append(_Out(due, data, is_line=True))

    # ------------------------------------------------------------------ meter → host

    def poll(self, now: float) -> bytes:
        out = bytearray()
        while not self._unplugged and self._queue and self._queue[0].due <= now:
            item = self._queue.popleft()
            out += self._wire(item.data)
            if item.is_line:
                self.lines_sent += 1
                if self.lines_sent == self.faults.unplug_after_lines:
                    self._unplugged = True
                    self._queue.clear()
        return bytes(out)

    def _wire(self, data: bytes) -> bytes:
        k = self.faults.drop_byte_every
        if k is None:
            self.bytes_sent += len(data)
            return data
        kept = bytearray()
        for b in data:
            self.bytes_sent += 1
            if self.bytes_sent % k == 0:
                self.bytes_dropped += 1
            else:
                kept.append(b)
        return bytes(kept)

    def next_deadline(self) -> float | None:
        if self._unplugged or not self._queue:
            return None
        return self._queue[0].due


def ultra2_readings(
    n: int,
    *,
    seed: int,
    start: datetime,
    every: timedelta,
    lo_hi: bool = True,
    control: bool = False,
) -> list[OneTouchReading]:
    """``n`` plausible tests, oldest first, ``every`` apart from ``start`` (meter time).

    With ``lo_hi`` every 10th test (from the 4th) is LO and every 10th (from the 8th) is HI,
    alternating between the stored-number and the text form; with ``control`` every 9th (from
    the 5th) is a control-solution test (100-150 mg/dL).
    """
    rng = random.Random(seed)  # noqa: S311 - simulation, not crypto
    out: list[OneTouchReading] = []
    for i in range(n):
        t = start + i * every
        meal = rng.choice("NNNBA")
        comment = f"{rng.choice([0, 0, 0, *range(1, 12)]):02d}"
        numeric = (i // 10) % 2 == 0
        if control and i % 9 == 4:
            r = OneTouchReading(t, rng.randint(100, 150), control=True)
        elif lo_hi and i % 10 == 3:
            r = OneTouchReading(t, rng.randint(0, 19) if numeric else None, "<")
        elif lo_hi and i % 10 == 7:
            r = OneTouchReading(t, rng.randint(601, 999) if numeric else None, ">")
        else:
            value = round(rng.triangular(40, 400, 120))
            r = OneTouchReading(t, value, meal=meal, comment=comment)
        out.append(r)
    return out
