"""Kiosk session: one self-measurement visit at a station shared by many patients. Sans-I/O.

A health-station kiosk has one set of devices and a queue of strangers. The worst failure it can
have is a reading attributed to the wrong person, so this state machine decides, for every
measurement a device hands over, whether it belongs to the open visit, and quarantines it with
the reason otherwise (ARCHITECTURE.md "Time, identity and binding": a measurement that cannot be
bound is quarantined, never guessed).

States::

    idle ─identify─▶ identified ─start─▶ measuring ─review─▶ review ─consent─▶ sending ─sent─▶ idle
                          │                  ▲                  │ (repeat: measuring again)
                          └──── cancel / timeout at any step but sending: wiped ─▶ idle

Binding guarantees (each a reason in :class:`QuarantineReason`). A measurement is bound to the
open visit only when all of these hold:

- a visit is open and measuring (not idle, not identified, not in review, not sending);
- its device was armed *for this visit* (``start`` or ``repeat`` armed it, nothing disarmed it);
- it was taken at or after the moment the device was armed (a meter replaying its memory on
  reconnect, or a reading stored before the patient sat down, is older than that);
- it was not taken after it arrived (a device clock ahead of the hub's cannot prove when it was
  taken) beyond :attr:`KioskTimeouts.clock_tolerance`;
- it is not a record the visit already holds (a resend is dropped, not counted twice);
- it is not a record an earlier visit took (the station remembers the device record keys it
  bound, not whose they were: a replay within the clock tolerance of the next visit's start is
  still refused).

A reading that arrives a second after its visit ended finds no open visit: quarantined. There
is one visit at a time per station, so two visits cannot race for a device; ``identify`` while a
visit is open is refused.

Timeouts: every waiting state ends by itself (identified, measuring, review), with a warning
:data:`KioskTimeouts.warn_before` ahead so nobody is rushed without notice. Sending has no
timeout: the outbox owns delivery, and the visit's data is wiped when the hub confirms the visit
message (``sent``). Wiping ends every path, so a next patient never sees a previous one's data.

The machine takes the hub's clock as an argument and returns outputs (arm, disarm, quarantine,
warn, visit ready, wipe); the agent's kiosk runner performs them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final

from device_profiles.observation import Observation


class KioskState(StrEnum):
    IDLE = "idle"
    IDENTIFIED = "identified"
    MEASURING = "measuring"
    REVIEW = "review"
    SENDING = "sending"


class QuarantineReason(StrEnum):
    NO_OPEN_VISIT = "no-open-visit"
    NOT_MEASURING = "not-measuring"
    DEVICE_NOT_ARMED = "device-not-armed"
    TAKEN_BEFORE_ARMED = "taken-before-armed"
    TAKEN_AFTER_ARRIVAL = "taken-after-arrival"
    BOUND_BEFORE = "bound-before"
    VISIT_FULL = "visit-full"


class KioskError(ValueError):
    """A request the current state does not allow (the UI shows the message)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class KioskTimeouts:
    """How long each waiting state lasts (remon defaults for a supervised lobby station)."""

    identified: timedelta = timedelta(minutes=3)  # identified but not started
    measuring: timedelta = timedelta(minutes=15)  # BP needs 5 min rest plus 3 readings
    review: timedelta = timedelta(minutes=5)
    warn_before: timedelta = timedelta(seconds=60)
    #: a reading may say it was taken this much after it arrived (hub and device clocks differ
    #: by a little even after correction); more, and the time cannot place it in the visit
    clock_tolerance: timedelta = timedelta(seconds=5)

    def __post_init__(self) -> None:
        for name in ("identified", "measuring", "review"):
            if getattr(self, name) <= self.warn_before:
                raise ValueError(f"{name} timeout must be longer than warn_before")
        if self.warn_before <= timedelta(0) or self.clock_tolerance < timedelta(0):
            raise ValueError("warn_before must be > 0 and clock_tolerance >= 0")


# -- outputs ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Arm:
    """Start taking measurements from these devices for this visit."""

    visit_ref: str
    device_ids: frozenset[str]
    at: datetime


@dataclass(frozen=True, slots=True)
class Disarm:
    visit_ref: str
    device_ids: frozenset[str]


@dataclass(frozen=True, slots=True)
class Quarantine:
    """Readings that belong to no visit: kept aside with the reason, never shown or sent."""

    device_id: str
    reason: QuarantineReason
    detail: str
    observations: tuple[Observation, ...]


@dataclass(frozen=True, slots=True)
class Accepted:
    visit_ref: str
    device_id: str
    observations: tuple[Observation, ...]


@dataclass(frozen=True, slots=True)
class Warn:
    """The state ends at ``ends_at`` unless the patient goes on."""

    visit_ref: str
    state: KioskState
    ends_at: datetime


@dataclass(frozen=True, slots=True)
class VisitReady:
    """The consented visit, to queue as one message."""

    visit_ref: str
    patient_ref: str
    observations: tuple[Observation, ...]


@dataclass(frozen=True, slots=True)
class Wipe:
    """Forget everything of this visit (screen, memory); ``why`` for the log."""

    visit_ref: str
    why: str


Output = Arm | Disarm | Quarantine | Accepted | Warn | VisitReady | Wipe


@dataclass(slots=True)
class _Visit:
    ref: str
    patient_ref: str
    since: datetime  # when the current state began
    armed: dict[str, datetime] = field(default_factory=dict)  # device -> armed at
    readings: dict[tuple[str, str, str], Observation] = field(default_factory=dict)
    warned: bool = False


_TIMED: Final = (KioskState.IDENTIFIED, KioskState.MEASURING, KioskState.REVIEW)
#: How many bound readings' keys (device, record key, measure) the station remembers.
SEEN_KEYS: Final = 10_000
#: Readings one visit takes from one device, and in all (remon defaults). A visit is sent as
#: one message of at most 256 KiB; a streaming device (an oximeter's continuous PLX, two a
#: second) would fill it in minutes and the whole visit could not be sent. Beyond these the
#: readings are quarantined as ``visit-full``, never silently dropped.
MAX_READINGS_PER_DEVICE: Final = 150
MAX_READINGS_PER_VISIT: Final = 600


class KioskSession:
    """The station's visit state machine. ``new_ref`` makes a fresh visit reference."""

    def __init__(
        self,
        *,
        devices: frozenset[str],
        new_ref: Callable[[], str],
        timeouts: KioskTimeouts | None = None,
    ) -> None:
        if not devices:
            raise ValueError("a kiosk needs at least one device")
        self.devices = devices
        self.timeouts = timeouts or KioskTimeouts()
        self._new_ref = new_ref
        self._visit: _Visit | None = None
        self._state = KioskState.IDLE
        # keys of readings bound to visits (no personal data), oldest first
        self._bound: OrderedDict[tuple[str, str, str], None] = OrderedDict()

    @property
    def state(self) -> KioskState:
        return self._state

    @property
    def visit_ref(self) -> str | None:
        return self._visit.ref if self._visit else None

    def deadline(self) -> datetime | None:
        """When the current waiting step times out (None: idle or sending)."""
        v = self._visit
        if v is None or self._state not in _TIMED:
            return None
        return v.since + self._limit()

    def _limit(self) -> timedelta:
        return {
            KioskState.IDENTIFIED: self.timeouts.identified,
            KioskState.MEASURING: self.timeouts.measuring,
            KioskState.REVIEW: self.timeouts.review,
        }[self._state]

    def readings(self) -> tuple[Observation, ...]:
        """What the open visit holds (for the review screen), in time order."""
        if self._visit is None:
            return ()
        return tuple(sorted(self._visit.readings.values(), key=lambda o: o.effective_time))

    # -- patient's steps ------------------------------------------------------------------------

    def identify(self, patient_ref: str, now: datetime) -> list[Output]:
        if self._state is not KioskState.IDLE:
            raise KioskError(f"a visit is open ({self._state.value}): finish or cancel it first")
        if not patient_ref:
            raise KioskError("identification gave no patient reference")
        ref = self._new_ref()
        self._visit = _Visit(ref=ref, patient_ref=patient_ref, since=now)
        self._state = KioskState.IDENTIFIED
        return []

    def start(self, now: datetime, devices: frozenset[str] | None = None) -> list[Output]:
        """Arm the station's devices (or some of them) for this visit."""
        v = self._require(KioskState.IDENTIFIED, "start measuring")
        return self._arm(v, devices if devices is not None else self.devices, now)

    def repeat(self, device_ids: frozenset[str], now: datetime) -> list[Output]:
        """From review: measure again with these devices (new readings join the visit)."""
        v = self._require(KioskState.REVIEW, "repeat a measurement")
        return self._arm(v, device_ids, now)

    def review(self, now: datetime) -> list[Output]:
        v = self._require(KioskState.MEASURING, "review")
        return self._to_review(v, now)

    def consent(self, now: datetime) -> list[Output]:
        """The patient agrees to send: the visit is handed over as one message."""
        v = self._require(KioskState.REVIEW, "send")
        if not v.readings:
            raise KioskError("nothing measured to send")
        self._state = KioskState.SENDING
        v.since = now
        return [VisitReady(v.ref, v.patient_ref, self.readings())]

    def sent(self, visit_ref: str, now: datetime) -> list[Output]:
        """The hub confirmed the visit message (broker PUBACK): wipe it."""
        v = self._require(KioskState.SENDING, "confirm sending")
        if v.ref != visit_ref:
            raise KioskError(f"confirmation for visit {visit_ref!r}, sending {v.ref!r}")
        return self._wipe(v, "sent")

    def queued(self, visit_ref: str, now: datetime) -> list[Output]:
        """The visit message is safe in the durable outbox but not confirmed yet (the broker
        is out of reach): free the station for the next patient; the outbox sends it later."""
        v = self._require(KioskState.SENDING, "hand over to the outbox")
        if v.ref != visit_ref:
            raise KioskError(f"hand-over for visit {visit_ref!r}, sending {v.ref!r}")
        return self._wipe(v, "queued")

    def send_failed(self, visit_ref: str, now: datetime, why: str) -> list[Output]:
        """The consented visit could not be queued (a bug, not the patient's doing): wipe it,
        so the station never stays stuck in sending or keeps the data."""
        v = self._require(KioskState.SENDING, "fail sending")
        if v.ref != visit_ref:
            raise KioskError(f"failure for visit {visit_ref!r}, sending {v.ref!r}")
        return self._wipe(v, f"not sent: {why}")

    def cancel(self, now: datetime, why: str = "cancelled") -> list[Output]:
        """The patient (or staff) stops the visit: nothing is sent, everything is wiped."""
        if self._visit is None:
            return []
        if self._state is KioskState.SENDING:
            raise KioskError("the visit is being sent; it is wiped once sent")
        return self._wipe(self._visit, why)

    # -- devices and time -----------------------------------------------------------------------

    def measured(
        self, device_id: str, observations: Sequence[Observation], now: datetime
    ) -> list[Output]:
        """A device handed over readings at hub time ``now``: bind them or quarantine them."""
        obs = tuple(observations)
        if not obs:
            return []
        v = self._visit

        def refuse(reason: QuarantineReason, detail: str, which: tuple[Observation, ...]) -> None:
            out.append(Quarantine(device_id, reason, detail, which))

        out: list[Output] = []
        if v is None:
            refuse(QuarantineReason.NO_OPEN_VISIT, "no visit is open at the station", obs)
            return out
        if self._state is not KioskState.MEASURING:
            refuse(
                QuarantineReason.NOT_MEASURING,
                f"the visit is in {self._state.value}, not measuring",
                obs,
            )
            return out
        armed_at = v.armed.get(device_id)
        if armed_at is None:
            refuse(QuarantineReason.DEVICE_NOT_ARMED, f"{device_id} is not armed", obs)
            return out
        before = tuple(o for o in obs if o.effective_time < armed_at)
        latest = now + self.timeouts.clock_tolerance
        # (each reading gets one reason, even if the hub's clock stepped back past the arming)
        after = tuple(o for o in obs if armed_at <= o.effective_time and o.effective_time > latest)
        if before:
            refuse(
                QuarantineReason.TAKEN_BEFORE_ARMED,
                f"taken before {device_id} was armed at {armed_at.isoformat()}",
                before,
            )
        if after:
            refuse(
                QuarantineReason.TAKEN_AFTER_ARRIVAL,
                f"taken after it arrived at {now.isoformat()}",
                after,
            )
        bad = {id(o) for o in (*before, *after)}
        fresh: list[Observation] = []
        earlier: list[Observation] = []
        full: list[Observation] = []
        from_device = sum(1 for k in v.readings if k[0] == device_id)
        for o in obs:
            key = (device_id, o.record_key, o.measure)
            if id(o) in bad or key in v.readings:
                continue  # quarantined above, or a resend of a reading the visit holds
            if key in self._bound:
                earlier.append(o)
                continue
            if (
                from_device + len(fresh) >= MAX_READINGS_PER_DEVICE
                or len(v.readings) >= MAX_READINGS_PER_VISIT
            ):
                full.append(o)
                continue
            v.readings[key] = o
            self._bound[key] = None
            if len(self._bound) > SEEN_KEYS:
                self._bound.popitem(last=False)
            fresh.append(o)
        if earlier:
            refuse(
                QuarantineReason.BOUND_BEFORE,
                "a reading an earlier visit at this station already took",
                tuple(earlier),
            )
        if full:
            refuse(
                QuarantineReason.VISIT_FULL,
                f"the visit holds {MAX_READINGS_PER_DEVICE} readings of {device_id} "
                f"(or {MAX_READINGS_PER_VISIT} in all)",
                tuple(full),
            )
        if fresh:
            out.append(Accepted(v.ref, device_id, tuple(fresh)))
        return out

    def tick(self, now: datetime) -> list[Output]:
        """Warn ahead of a timeout, and end a state that timed out."""
        v = self._visit
        if v is None or self._state not in _TIMED:
            return []
        ends_at = v.since + self._limit()
        if now >= ends_at:
            return self._wipe(v, f"timed out in {self._state.value}")
        if not v.warned and now >= ends_at - self.timeouts.warn_before:
            v.warned = True
            return [Warn(v.ref, self._state, ends_at)]
        return []

    def touch(self, now: datetime) -> list[Output]:
        """The patient is still there (a tap on the screen): the current state starts over."""
        if self._visit is not None and self._state in _TIMED:
            self._visit.since = now
            self._visit.warned = False
        return []

    # -- internals ------------------------------------------------------------------------------

    def _require(self, state: KioskState, what: str) -> _Visit:
        if self._state is not state or self._visit is None:
            raise KioskError(f"cannot {what} in {self._state.value}")
        return self._visit

    def _arm(self, v: _Visit, devices: frozenset[str], now: datetime) -> list[Output]:
        unknown = devices - self.devices
        if unknown or not devices:
            raise KioskError(f"not devices of this station: {sorted(unknown)}")
        for d in devices:
            v.armed[d] = now
        self._state = KioskState.MEASURING
        v.since, v.warned = now, False
        return [Arm(v.ref, frozenset(devices), now)]

    def _to_review(self, v: _Visit, now: datetime) -> list[Output]:
        out: list[Output] = []
        if v.armed:
            out.append(Disarm(v.ref, frozenset(v.armed)))
            v.armed.clear()
        self._state = KioskState.REVIEW
        v.since, v.warned = now, False
        return out

    def _wipe(self, v: _Visit, why: str) -> list[Output]:
        out: list[Output] = []
        if v.armed:
            out.append(Disarm(v.ref, frozenset(v.armed)))
        out.append(Wipe(v.ref, why))
        self._visit = None
        self._state = KioskState.IDLE
        return out
