"""A kiosk station: the visit state machine (:mod:`edge_agent.kiosk_session`) wired to the
station's devices, its durable outbox and the broker's confirmation.

What it adds to the state machine, which decides binding:

* it remembers which device each accepted reading came from (with that device's identity), the
  answers to the health-check questions and how many measurements were quarantined, and at
  consent queues the visit as **one** ``remon.visit/1`` message in the outbox (one SQLite
  transaction: a power cut leaves the visit queued whole or not at all);
* it wipes the visit when the broker has confirmed that message: the relay deletes an outbox
  record only after its PUBACK, so "no longer in the outbox" is the confirmation. After a power
  loss during sending the station starts idle with nothing of the visit in memory; the relay
  sends the queued message (once: the cloud keeps a visit by its content-derived id), and the
  outbox row, the last of the visit's personal data at the station, goes with its PUBACK. With
  the broker out of reach the station waits :data:`SEND_WAIT`, then frees itself for the next
  patient and leaves the visit to the outbox;
* it caps what a visit takes (``kiosk_session.MAX_READINGS_PER_DEVICE``/``_PER_VISIT``: one
  message carries a visit), adds the BMI of the visit's weight and height and the BP result by
  the kiosk protocol;
* quarantined readings go to the outbox's reject store for inspection, with their device and
  reason and no patient reference: never shown or sent as anyone's.

Thread-safe (a lock around the machine): devices hand over readings from their tasks, the
local screen calls the patient's steps. Time is the hub's clock, injectable for tests.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

from device_profiles.clinical import kiosk_bp_wanted
from device_profiles.observation import DeviceIdentity, Observation, Provenance, QualityFlag
from edge_agent.kiosk_session import (
    Accepted,
    KioskError,
    KioskSession,
    KioskState,
    KioskTimeouts,
    Output,
    Quarantine,
    QuarantineReason,
    VisitReady,
    Warn,
    Wipe,
)
from gateway.outbox import Outbox
from gateway.wire import (
    MAX_ANSWERS,
    Answer,
    AnswerValue,
    EncodeError,
    Subject,
    VisitPart,
    VisitSummary,
    answer_problem,
    encode_visit,
    is_token,
)

log = logging.getLogger("remon.kiosk")

#: The reject store's source for readings no visit could take.
QUARANTINE_SOURCE = "kiosk-quarantine"
#: How long the screen waits for the broker's confirmation of a visit. After that the visit
#: stays in the durable outbox (sent when the broker is back, then deleted) and the station is
#: free for the next patient, with nothing of the visit left in memory.
SEND_WAIT: Final = timedelta(seconds=20)
#: How long quarantined readings are kept at the station for inspection (remon default: a
#: week covers the daily checks and a weekend; they are nobody's, and then they are gone).
QUARANTINE_KEPT: Final = timedelta(days=7)


def _utcnow() -> datetime:
    return datetime.now(UTC)


#: The source and record-key suffix of the BMI a station derives from a visit's weight and height.
BMI_SOURCE = "edge:kiosk-bmi"
BMI_SUFFIX = "/bmi"


def bmi_observation(weight: Observation, height: Observation) -> Observation | None:
    """The body mass index of a visit's weight and height (kg / m², one decimal), flagged
    ``derived`` and keyed by the weight's record; None when either has no value."""
    if weight.value is None or height.value is None or height.value <= 0:
        return None
    w, h = weight.value, height.value
    flags = {QualityFlag.DERIVED}
    if QualityFlag.SIMULATED in weight.quality | height.quality:
        flags.add(QualityFlag.SIMULATED)
    return Observation(
        measure="bmi",
        unit="kg/m2",
        value=round(w / (h / 100) ** 2, 1),
        effective_time=max(weight.effective_time, height.effective_time),
        record_key=weight.record_key + BMI_SUFFIX,
        quality=frozenset(flags),  # computed at the edge, not measured
        provenance=Provenance(
            source=BMI_SOURCE, raw=f"body.weight / body.height^2 ({w:g} kg, {h:g} cm)"
        ),
    )


@dataclass(frozen=True, slots=True)
class BpProgress:
    """The visit's BP measurements against the kiosk protocol (DOMAIN.md §3)."""

    taken: int
    wanted: int
    first_two_differ: bool
    result: tuple[float, float] | None  # mean of the last two, once enough are taken


def bp_progress(readings: Sequence[tuple[str, Observation]]) -> BpProgress | None:
    """Systolic/diastolic pairs (same device, same record) in time order; None without any."""
    sys_: dict[tuple[str, str], Observation] = {}
    dia: dict[tuple[str, str], float] = {}
    for device_id, o in readings:
        key = (device_id, o.record_key)
        if o.measure == "bp.systolic" and o.value is not None:
            sys_[key] = o
        elif o.measure == "bp.diastolic" and o.value is not None:
            dia[key] = o.value
    pairs = sorted(
        ((o.effective_time, o.value, dia[k]) for k, o in sys_.items() if k in dia),
        key=lambda p: p[0],
    )
    if not pairs:
        return None
    values = [(float(s), float(d)) for _, s, d in pairs if s is not None]
    first, second = (values[0], values[1]) if len(values) >= 2 else (None, None)
    wanted = kiosk_bp_wanted(first, second)
    result = None
    if len(values) >= wanted:
        (s1, d1), (s2, d2) = values[-2], values[-1]
        result = ((s1 + s2) / 2, (d1 + d2) / 2)
    return BpProgress(
        taken=len(values),
        wanted=wanted,
        first_two_differ=wanted > kiosk_bp_wanted(None, None),
        result=result,
    )


def bp_summary(readings: Sequence[tuple[str, Observation]]) -> VisitSummary | None:
    """The visit's BP result for the visit message, once the protocol's readings are taken."""
    bp = bp_progress(readings)
    if bp is None or bp.result is None:
        return None
    return VisitSummary(
        id="bp",
        values={
            "systolic": round(bp.result[0], 1),
            "diastolic": round(bp.result[1], 1),
            "readings": bp.taken,
        },
        method=f"mean of the last two of {bp.taken} readings (DOMAIN.md §3, kiosk visit)",
    )


def new_visit_ref() -> str:
    """A visit reference that says nothing about the patient."""
    return f"v-{secrets.token_hex(8)}"


@dataclass(slots=True)
class _Open:
    """What the station keeps of the open visit beside the state machine."""

    ref: str
    patient_ref: str
    started_at: datetime
    by_device: dict[str, list[Observation]] = field(default_factory=dict)
    answers: dict[str, AnswerValue] = field(default_factory=dict)
    quarantined: int = 0
    msg_id: str | None = None  # the queued visit message, while sending
    sending_since: datetime | None = None
    warning: Warn | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StationView:
    """What the local screen shows: the state, and the open visit's own readings only."""

    state: KioskState
    visit_ref: str | None
    readings: tuple[tuple[str, Observation], ...]  # (device id, reading), in time order
    answers: Mapping[str, AnswerValue]
    warning_until: datetime | None
    #: how the last visit ended ("sent", "queued", or why it was wiped) and when
    last_end: tuple[str, datetime] | None = None
    #: when the current step times out (the screen refreshes itself by then)
    deadline: datetime | None = None


class KioskStation:
    def __init__(
        self,
        *,
        site: str,
        devices: Mapping[str, DeviceIdentity],
        outbox: Outbox,
        clock: Callable[[], datetime] = _utcnow,
        timeouts: KioskTimeouts | None = None,
        new_ref: Callable[[], str] = new_visit_ref,
        questions: Sequence[str] = (),
        on_output: Callable[[Output], None] | None = None,
        on_queued: Callable[[str], None] | None = None,
    ) -> None:
        if not is_token(site):
            raise ValueError(f"site id {site!r} is not a token")
        self.site = site
        self.devices = dict(devices)
        self.outbox = outbox
        self.questions = tuple(questions)
        self._clock = clock
        self._on_output = on_output
        self._on_queued = on_queued
        self._session = KioskSession(
            devices=frozenset(self.devices), new_ref=new_ref, timeouts=timeouts
        )
        self._open: _Open | None = None
        self._last_end: tuple[str, datetime] | None = None
        self._lock = threading.Lock()

    def now(self) -> datetime:
        """The hub's clock, as the station uses it."""
        return self._clock()

    # -- the patient's steps (from the local screen) ---------------------------------------------

    def identify(self, patient_ref: str) -> str:
        """An identification source named the patient; returns the new visit's reference."""
        with self._lock:
            now = self._clock()
            self._apply(self._session.identify(patient_ref, now))
            ref = self._session.visit_ref
            assert ref is not None
            self._open = _Open(ref=ref, patient_ref=patient_ref, started_at=now)
            return ref

    def start(self, devices: frozenset[str] | None = None) -> None:
        with self._lock:
            self._apply(self._session.start(self._clock(), devices))

    def review(self) -> None:
        with self._lock:
            self._apply(self._session.review(self._clock()))

    def repeat(self, devices: frozenset[str]) -> None:
        with self._lock:
            self._apply(self._session.repeat(devices, self._clock()))

    def answer(self, question: str, value: AnswerValue) -> None:
        """A health-check answer; the same question answered again replaces the answer."""
        problem = answer_problem(Answer(id=question, value=value))
        if problem:
            raise KioskError(problem)
        with self._lock:
            v = self._require_open()
            if self._session.state is KioskState.SENDING:
                raise KioskError("the visit is being sent: answers can no longer change")
            if self.questions and question not in self.questions:
                raise KioskError(f"{question!r} is not a question of this station")
            if len(v.answers) >= MAX_ANSWERS and question not in v.answers:
                raise KioskError(f"at most {MAX_ANSWERS} answers")
            v.answers[question] = value
            self._session.touch(self._clock())

    def touch(self) -> None:
        with self._lock:
            v = self._open
            if v is not None:
                v.warning = None
            self._apply(self._session.touch(self._clock()))

    def consent(self) -> str:
        """The patient agrees to send: the visit is queued as one message; returns its id."""
        with self._lock:
            v = self._require_open()
            now = self._clock()
            outputs = self._session.consent(now)
            try:
                self._apply(outputs, now=now)
            except Exception as exc:  # never stay stuck in sending with the data kept
                log.exception("kiosk %s: visit %s could not be queued", self.site, v.ref)
                self._apply(self._session.send_failed(v.ref, now, str(exc)))
                raise KioskError(f"the visit could not be sent: {exc}") from exc
            assert v.msg_id is not None
            return v.msg_id

    def cancel(self, why: str = "cancelled") -> None:
        with self._lock:
            self._apply(self._session.cancel(self._clock(), why))

    # -- devices and time ------------------------------------------------------------------------

    def measured(
        self,
        device_id: str,
        observations: Sequence[Observation],
        identity: DeviceIdentity | None = None,
    ) -> int:
        """A device handed over readings; returns how many the open visit took. ``identity``:
        who the device said it is in this session (its readings' ids derive from it)."""
        with self._lock:
            if identity is not None and device_id in self.devices:
                self.devices[device_id] = identity
            outputs = self._session.measured(device_id, observations, self._clock())
            self._apply(outputs)
            return sum(len(o.observations) for o in outputs if isinstance(o, Accepted))

    def poll(self) -> None:
        """Timeouts, and the broker's confirmation of a visit being sent (call every second)."""
        with self._lock:
            now = self._clock()
            v = self._open
            if self._session.state is KioskState.SENDING and v is not None and v.msg_id:
                if not self.outbox.has(v.msg_id):
                    self._apply(self._session.sent(v.ref, now))
                elif v.sending_since is not None and now - v.sending_since >= SEND_WAIT:
                    self._apply(self._session.queued(v.ref, now))
                return
            self._apply(self._session.tick(now))

    def view(self) -> StationView:
        with self._lock:
            v = self._open
            readings: list[tuple[str, Observation]] = []
            if v is not None:
                readings = [(d, o) for d, obs in v.by_device.items() for o in obs]
                readings.sort(key=lambda r: r[1].effective_time)
            return StationView(
                state=self._session.state,
                visit_ref=v.ref if v else None,
                readings=tuple(readings),
                answers=dict(v.answers) if v else {},
                warning_until=v.warning.ends_at if v and v.warning else None,
                last_end=self._last_end,
                deadline=self._session.deadline(),
            )

    # -- internals -------------------------------------------------------------------------------

    def _require_open(self) -> _Open:
        if self._open is None:
            raise KioskError("no visit is open")
        return self._open

    def _apply(self, outputs: Sequence[Output], *, now: datetime | None = None) -> None:
        # the visit's own readings first: whatever happens to a quarantine below, what the
        # state machine bound must reach the visit it bound it to
        outputs = sorted(outputs, key=lambda o: not isinstance(o, Accepted))
        for out in outputs:
            v = self._open
            if isinstance(out, Accepted) and v is not None and v.ref == out.visit_ref:
                v.by_device.setdefault(out.device_id, []).extend(out.observations)
            elif isinstance(out, Quarantine):
                self._quarantine(out)
            elif isinstance(out, Warn) and v is not None:
                v.warning = out
            elif isinstance(out, VisitReady) and v is not None:
                v.msg_id = self._queue(v, now or self._clock())
                v.sending_since = now or self._clock()
            elif isinstance(out, Wipe):
                log.info("kiosk %s: visit %s wiped (%s)", self.site, out.visit_ref, out.why)
                self._open = None
                self._last_end = (out.why, self._clock())
            if self._on_output is not None:
                self._on_output(out)

    def _quarantine(self, q: Quarantine) -> None:
        if self._open is not None:
            self._open.quarantined += len(q.observations)
        try:
            self._keep_quarantined(q)
        except Exception:  # a full disk must not lose the visit's own readings
            log.exception("kiosk %s: quarantined readings could not be kept", self.site)

    def _keep_quarantined(self, q: Quarantine) -> None:
        raw = json.dumps(
            [
                {
                    "measure": o.measure,
                    "value": o.value,
                    "unit": o.unit,
                    "effective_time": o.effective_time.isoformat(),
                    "record_key": o.record_key,
                }
                for o in q.observations
            ]
        ).encode()
        now = self._clock()
        self.outbox.put_reject(
            at=now.isoformat(),
            device_id=q.device_id,
            source=QUARANTINE_SOURCE,
            reason=f"{q.reason.value}: {q.detail}",
            raw=raw,
        )
        self.outbox.expire_rejects(
            source=QUARANTINE_SOURCE, before=(now - QUARANTINE_KEPT).isoformat()
        )
        # a device measuring at an idle station is routine; anything else is worth a look
        level = logging.INFO if q.reason is QuarantineReason.NO_OPEN_VISIT else logging.WARNING
        log.log(
            level,
            "kiosk %s: %d reading(s) from %s quarantined (%s)",
            self.site,
            len(q.observations),
            q.device_id,
            q.reason.value,
        )

    def _with_bmi(self, v: _Open) -> dict[str, list[Observation]]:
        """The visit's readings by device, with the BMI of its last weight and height (on the
        weight's device) when it has both."""
        out = {d: list(obs) for d, obs in v.by_device.items()}

        def last(measure: str) -> tuple[str, Observation] | None:
            found = [(d, o) for d, obs in out.items() for o in obs if o.measure == measure]
            return max(found, key=lambda x: x[1].effective_time) if found else None

        weight, height = last("body.weight"), last("body.height")
        if weight is not None and height is not None:
            bmi = bmi_observation(weight[1], height[1])
            if bmi is not None:
                out[weight[0]].append(bmi)
        return out

    def _queue(self, v: _Open, now: datetime) -> str:
        by_device = self._with_bmi(v)
        readings = [o for obs in by_device.values() for o in obs]
        ended = max([now, *(o.effective_time for o in readings)])
        # (a hub clock stepped back during the visit: the span still holds every reading)
        started = min([v.started_at, *(o.effective_time for o in readings)])
        try:
            msg = encode_visit(
                site=self.site,
                visit_ref=v.ref,
                subject=Subject(kind="patient", ref=v.patient_ref),
                started_at=started,
                ended_at=ended,
                parts=[
                    VisitPart(device_id=d, device=self.devices[d], observations=obs)
                    for d, obs in by_device.items()
                    if obs
                ],
                answers=[Answer(id=q, value=a) for q, a in v.answers.items()],
                quarantined=v.quarantined,
                summaries=[
                    s
                    for s in [bp_summary([(d, o) for d, obs in by_device.items() for o in obs])]
                    if s is not None
                ],
                created_at=now,
            )
        except EncodeError as exc:
            raise KioskError(f"the visit cannot be encoded: {exc}") from exc
        self.outbox.put_many([msg])
        log.info("kiosk %s: visit %s queued as %s", self.site, v.ref, msg.msg_id)
        if self._on_queued is not None:
            self._on_queued(msg.msg_id)
        return msg.msg_id
