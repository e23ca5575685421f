"""Dispenser alert rules: events of home-care medication dispensers -> alert actions. Pure.

Theory of operation (DOMAIN.md §4 dispensers, §5 alarms):

- Rules are data (:class:`DispenserRule`): a condition key, the event kinds that raise it, the
  kinds that end it (its all-clear, possibly none), an IEC 60601-1-8 priority with the reason
  for it, and the audience that acts on it. :data:`DEFAULT_DISPENSER_RULES` is the default set.
- One open alert per subject + condition. Further raising events attach to it: the count goes
  up and the latest evidence is replaced; a second alert is never raised for it.
- Events are processed in event-time order (ties by event id). A late event older than the
  alert's latest evidence adds to the count but neither clears the alert nor replaces its latest
  evidence; an event older than the first evidence becomes the first evidence, so the final state
  does not depend on the order in which events arrive.
- An all-clear event newer than the latest raising event sets ``cleared_at``; the alert stays
  active until a person resolves it (clearing is a fact, not a state: see ``lifecycle.py``).
  A raising event at or after ``cleared_at`` un-clears it. An all-clear about the very dose that
  raised the alert is not an all-clear (a device may report a late dose as both
  ``dose_taken_late`` and ``dose_taken``).
- The same event id given twice counts once (an event with that id but other content is an
  error). Across calls an event is recognised when it is the alert's first or latest evidence;
  the store keeps device events unique by their content-derived id, so the rules see each
  stored event once.
- Every alert explains itself: the rule, its criterion and the source of its priority, the
  first and latest events with UTC times, dose ids and scheduled times, details such as
  ``doses_left``, and whether the data were simulated. No wording states a diagnosis.

The types at the top of this module (:class:`FindingEvidence`, :class:`OpenFinding`,
:class:`FindingState`, :class:`FindingAction`, :class:`FindingBook`) are shared with
:mod:`cloud_ingest.rules.silence`, whose rules raise the same kind of alerts from missing data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Final, Literal, Protocol, TypeVar

from cloud_ingest.rules.engine import AlertEvent
from cloud_ingest.rules.thresholds import Priority, RuleError
from device_profiles.events import DOSE_KINDS, DetailValue, EventKind

Audience = Literal["home_care", "clinician"]
AUDIENCES: Final[frozenset[str]] = frozenset({"home_care", "clinician"})
AUDIENCE_WORDS: Final[Mapping[str, str]] = {
    "home_care": "home-care staff",
    "clinician": "clinicians",
}
T = TypeVar("T")
FindingActionKind = Literal["raise", "update", "clear"]


class RuleInputError(RuleError):
    """Input the rules cannot use: a naive time, an empty id, two open alerts for one key..."""


# --------------------------------------------------------------------------------------------
# shared types: evidence, open alerts, new states, actions


def require_aware(name: str, dt: datetime) -> None:
    """Refuse a naive datetime: the rules compare instants, never wall-clock readings."""
    if not isinstance(dt, datetime) or dt.tzinfo is None or dt.utcoffset() is None:
        raise RuleInputError(f"{name} must be an aware datetime, got {dt!r}")


def require_utc(name: str, dt: datetime) -> None:
    """Refuse anything but an aware UTC datetime (what the store keeps for event times)."""
    require_aware(name, dt)
    if dt.utcoffset() != timedelta(0):
        raise RuleInputError(f"{name} must be in UTC, got offset {dt.utcoffset()}")


def require_text(name: str, text: object) -> None:
    if not isinstance(text, str) or not text:
        raise RuleInputError(f"{name} must be a non-empty string, got {text!r}")


def utc_text(dt: datetime) -> str:
    """An instant as care staff in any time zone can compare it: UTC, to the minute."""
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True, slots=True, kw_only=True)
class FindingEvidence:
    """One piece of evidence an alert remembers (its first and its latest).

    ``event_id`` is the stored device event's id, or for the silence rules a stable id of the
    silence episode or missed window, so the same evidence is recognised when seen again.
    ``summary`` is the evidence in words, built when it is recorded.
    """

    event_id: str
    kind: str
    time: datetime
    summary: str
    dose_id: str | None = None
    scheduled_time: datetime | None = None

    def __post_init__(self) -> None:
        require_text("evidence event_id", self.event_id)
        require_text("evidence kind", self.kind)
        require_aware("evidence time", self.time)
        if self.scheduled_time is not None:
            require_aware("evidence scheduled_time", self.scheduled_time)


def _order(ev: FindingEvidence) -> tuple[datetime, str]:
    return (ev.time, ev.event_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenFinding:
    """An active (open or acknowledged) alert of these rules, as the store hands it back.

    It carries the first and latest evidence, not only their times: an update must still be
    able to name the first event (e.g. the first missed dose) and recognise it when seen again.
    ``alert_id`` is None for an alert not yet stored.
    """

    alert_id: int | None
    subject_ref: str
    condition: str
    first: FindingEvidence
    last: FindingEvidence
    trigger_count: int
    simulated: bool = False
    cleared_at: datetime | None = None
    cleared_by: str | None = None

    def __post_init__(self) -> None:
        where = f"open alert {self.alert_id} ({self.subject_ref}, {self.condition})"
        require_text(f"{where}: subject_ref", self.subject_ref)
        require_text(f"{where}: condition", self.condition)
        if isinstance(self.trigger_count, bool) or self.trigger_count < 1:
            raise RuleInputError(f"{where}: trigger_count must be >= 1")
        if _order(self.first) > _order(self.last):
            raise RuleInputError(f"{where}: first evidence is newer than the latest")
        if self.cleared_at is not None:
            require_aware(f"{where}: cleared_at", self.cleared_at)
            if self.cleared_by is None:
                raise RuleInputError(f"{where}: cleared_at without cleared_by")

    @property
    def key(self) -> tuple[str, str]:
        return (self.subject_ref, self.condition)


@dataclass(frozen=True, slots=True, kw_only=True)
class FindingState:
    """The complete new state of one alert, ready to store (``alert_id`` None: a new alert)."""

    alert_id: int | None
    subject_ref: str
    condition: str
    title: str
    priority: Priority
    audience: Audience
    criterion: str  # what raises it, with its figures
    source: str  # where the criterion and the priority come from
    explanation: str
    first: FindingEvidence
    last: FindingEvidence
    trigger_count: int
    simulated: bool
    cleared_at: datetime | None
    cleared_by: str | None  # the id of the event (or reading, or status) that cleared it

    def as_open(self, alert_id: int | None = None) -> OpenFinding:
        """What the store hands back next time (``alert_id`` given once the alert is stored)."""
        return OpenFinding(
            alert_id=self.alert_id if alert_id is None else alert_id,
            subject_ref=self.subject_ref,
            condition=self.condition,
            first=self.first,
            last=self.last,
            trigger_count=self.trigger_count,
            simulated=self.simulated,
            cleared_at=self.cleared_at,
            cleared_by=self.cleared_by,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class FindingAction:
    """What to store: ``raise`` a new alert, ``update`` one, or record that it ``clear``-ed.

    The state is always complete; ``kind`` names the notable change (``clear`` when this call
    set or moved ``cleared_at``). ``events`` are the audit lines that led there.
    """

    kind: FindingActionKind
    state: FindingState
    events: tuple[AlertEvent, ...] = field(default_factory=tuple)


class RuleFacts(Protocol):
    """What :class:`FindingBook` needs of a rule to build and explain an alert."""

    @property
    def condition(self) -> str: ...
    @property
    def title(self) -> str: ...
    @property
    def priority(self) -> Priority: ...
    @property
    def audience(self) -> Audience: ...
    @property
    def criterion(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def all_clear(self) -> str: ...


def explain_finding(f: OpenFinding, rule: RuleFacts) -> str:
    """The alert's self-explanation: rule, criterion, source, evidence, simulated, clearing."""
    parts = [
        f"{rule.title}. Rule {rule.condition} ({rule.priority.value} priority, for "
        f"{AUDIENCE_WORDS[rule.audience]}): {rule.criterion}. Source: {rule.source}.",
        f"First evidence: {f.first.summary}.",
    ]
    if f.trigger_count > 1:
        parts.append(f"{f.trigger_count} pieces of evidence so far; latest: {f.last.summary}.")
    if f.simulated:
        parts.append(
            "Simulated data: at least one piece of evidence is simulated, not patient data."
        )
    if f.cleared_at is not None:
        parts.append(f"All-clear since {utc_text(f.cleared_at)} ({f.cleared_by}); awaiting review.")
    elif rule.all_clear:
        parts.append(f"All-clear: {rule.all_clear}.")
    else:
        parts.append("No automatic all-clear: a person must check and resolve it.")
    return " ".join(parts)


Key = tuple[str, str]


class FindingBook:
    """The alerts of one rule family during one evaluation call.

    Starts from the open alerts, applies triggers and all-clears in the order the caller feeds
    them (the caller sorts by time), and returns one action per alert that changed. Open alerts
    of conditions outside ``rules`` are not this family's and are ignored.
    """

    __slots__ = ("_cur", "_events", "_now", "_open", "_rules", "_touched")

    def __init__(
        self,
        open_alerts: Iterable[OpenFinding],
        *,
        rules: Mapping[str, RuleFacts],
        now: datetime,
    ) -> None:
        require_aware("now", now)
        self._rules = rules
        self._now = now
        self._open: dict[Key, OpenFinding] = {}
        for a in open_alerts:
            if not isinstance(a, OpenFinding):
                raise RuleInputError(f"open_alerts holds {type(a).__name__}, not OpenFinding")
            if a.condition not in rules:
                continue
            if a.key in self._open:
                raise RuleInputError(f"two open alerts for {a.key}")
            self._open[a.key] = a
        self._cur: dict[Key, OpenFinding] = dict(self._open)
        self._events: dict[Key, list[AlertEvent]] = {}
        self._touched: list[Key] = []

    def current(self, subject_ref: str, condition: str) -> OpenFinding | None:
        return self._cur.get((subject_ref, condition))

    def _set(self, key: Key, new: OpenFinding, event: AlertEvent) -> None:
        self._cur[key] = new
        if key not in self._events:
            self._events[key] = []
            self._touched.append(key)
        self._events[key].append(event)

    def trigger(
        self,
        subject_ref: str,
        condition: str,
        evidence: FindingEvidence,
        *,
        simulated: bool,
        note: str | None = None,
    ) -> bool:
        """Evidence that the condition is present. False when it was already counted."""
        key = (subject_ref, condition)
        cur = self._cur.get(key)
        what = note or f"{evidence.kind} {evidence.event_id} at {utc_text(evidence.time)}"
        if cur is None:
            new = OpenFinding(
                alert_id=None,
                subject_ref=subject_ref,
                condition=condition,
                first=evidence,
                last=evidence,
                trigger_count=1,
                simulated=simulated,
            )
            self._set(key, new, AlertEvent(action="raised", at=self._now, note=f"raised: {what}"))
            return True
        if evidence.event_id in (cur.first.event_id, cur.last.event_id):
            return False
        late = _order(evidence) < _order(cur.last)
        uncleared = cur.cleared_at is not None and evidence.time >= cur.cleared_at
        new = replace(
            cur,
            first=evidence if _order(evidence) < _order(cur.first) else cur.first,
            last=cur.last if late else evidence,
            trigger_count=cur.trigger_count + 1,
            simulated=cur.simulated or simulated,
            cleared_at=None if uncleared else cur.cleared_at,
            cleared_by=None if uncleared else cur.cleared_by,
        )
        if uncleared:
            text = f"condition present again: {what}"
        elif late:
            text = f"further evidence, older than the latest: {what}"
        else:
            text = f"further evidence: {what}"
        self._set(key, new, AlertEvent(action="updated", at=self._now, note=text))
        return True

    def clear(self, subject_ref: str, condition: str, *, at: datetime, by: str, note: str) -> bool:
        """An all-clear at ``at``: counts only when newer than the latest trigger.

        Of several all-clears newer than the latest trigger the earliest is kept, whatever order
        they come in.
        """
        require_aware("all-clear time", at)
        key = (subject_ref, condition)
        cur = self._cur.get(key)
        if cur is None or at <= cur.last.time:
            return False
        if cur.cleared_at is not None and cur.cleared_at <= at:
            return False
        new = replace(cur, cleared_at=at, cleared_by=by)
        self._set(key, new, AlertEvent(action="cleared", at=self._now, note=note))
        return True

    def actions(self) -> list[FindingAction]:
        """One action per alert that changed, in the order they were first touched."""
        out: list[FindingAction] = []
        for key in self._touched:
            cur = self._cur[key]
            original = self._open.get(key)
            if cur == original:
                continue
            kind: FindingActionKind
            if original is None:
                kind = "raise"
            elif cur.cleared_at is not None and cur.cleared_at != original.cleared_at:
                kind = "clear"
            else:
                kind = "update"
            out.append(
                FindingAction(
                    kind=kind,
                    state=finding_state(cur, self._rules[key[1]]),
                    events=tuple(self._events[key]),
                )
            )
        return out


def finding_state(f: OpenFinding, rule: RuleFacts) -> FindingState:
    """The complete state of an alert under ``rule``, with its explanation."""
    return FindingState(
        alert_id=f.alert_id,
        subject_ref=f.subject_ref,
        condition=f.condition,
        title=rule.title,
        priority=rule.priority,
        audience=rule.audience,
        criterion=rule.criterion,
        source=rule.source,
        explanation=explain_finding(f, rule),
        first=f.first,
        last=f.last,
        trigger_count=f.trigger_count,
        simulated=f.simulated,
        cleared_at=f.cleared_at,
        cleared_by=f.cleared_by,
    )


def check_rule_facts(rule: RuleFacts) -> None:
    """What every rule must say about itself before it may raise an alert."""
    require_text("rule condition", rule.condition)
    require_text(f"{rule.condition}: title", rule.title)
    require_text(f"{rule.condition}: source", rule.source)
    if not isinstance(rule.priority, Priority):
        raise RuleError(f"{rule.condition}: priority must be a Priority, got {rule.priority!r}")
    if rule.audience not in AUDIENCES:
        raise RuleError(f"{rule.condition}: unknown audience {rule.audience!r}")


# --------------------------------------------------------------------------------------------
# dispenser events and rules


@dataclass(frozen=True, slots=True, kw_only=True)
class DispenserEvent:
    """What the rules need of one stored dispenser event (``cloud_ingest`` device events)."""

    event_id: str
    subject_ref: str
    device_id: str
    kind: EventKind
    event_time: datetime
    dose_id: str | None = None
    scheduled_time: datetime | None = None
    details: Mapping[str, DetailValue] = field(default_factory=lambda: MappingProxyType({}))
    simulated: bool = False

    def __post_init__(self) -> None:
        require_text("event_id", self.event_id)
        where = f"event {self.event_id}"
        require_text(f"{where}: subject_ref", self.subject_ref)
        require_text(f"{where}: device_id", self.device_id)
        if not isinstance(self.kind, EventKind):
            raise RuleInputError(f"{where}: unknown event kind {self.kind!r}")
        require_utc(f"{where}: event_time", self.event_time)
        if self.scheduled_time is not None:
            require_utc(f"{where}: scheduled_time", self.scheduled_time)
        if self.kind in DOSE_KINDS and not self.dose_id:
            raise RuleInputError(f"{where}: a {self.kind.value} event needs its dose_id")
        for k, v in self.details.items():
            if not isinstance(k, str) or not k:
                raise RuleInputError(f"{where}: detail key {k!r} must be a non-empty string")
            if not isinstance(v, str | int | float | bool):
                raise RuleInputError(
                    f"{where}: detail {k!r} must be a flat value, got {type(v).__name__}"
                )
        if not isinstance(self.simulated, bool):
            raise RuleInputError(f"{where}: simulated must be a bool")
        # freeze a caller's dict so the event stays immutable
        object.__setattr__(self, "details", MappingProxyType(dict(self.details)))


@dataclass(frozen=True, slots=True, kw_only=True)
class DispenserRule:
    """One dispenser condition as data."""

    condition: str  # stable key, e.g. "dose-missed"
    title: str  # what it means, in words a home-care nurse reads (never a diagnosis)
    raised_by: frozenset[EventKind]
    cleared_by: frozenset[EventKind]  # the all-clear kinds; empty: a person must resolve it
    priority: Priority
    audience: Audience
    source: str  # DOMAIN.md section, or "remon default: <reason>" for the priority

    def __post_init__(self) -> None:
        check_rule_facts(self)
        if not self.raised_by:
            raise RuleError(f"{self.condition}: no event kind raises it")
        for kind in self.raised_by | self.cleared_by:
            if not isinstance(kind, EventKind):
                raise RuleError(f"{self.condition}: unknown event kind {kind!r}")
        both = self.raised_by & self.cleared_by
        if both:
            raise RuleError(
                f"{self.condition}: {sorted(k.value for k in both)} both raise and clear it"
            )

    @property
    def criterion(self) -> str:
        kinds = " or ".join(sorted(k.value for k in self.raised_by))
        return f"a dispenser reports {kinds}"

    @property
    def all_clear(self) -> str:
        if not self.cleared_by:
            return ""
        kinds = " or ".join(sorted(k.value for k in self.cleared_by))
        return f"a later {kinds} event marks it cleared; a person still resolves it"


_MISSED: Final = (
    "DOMAIN.md §4: a missed dose is time-sensitive for home-care staff (the dispenser locked it "
    "away)"
)

#: The default dispenser rules. The kinds dose_due, dose_dispensed and dose_taken are
#: information (adherence reports, DOMAIN.md §4) and raise nothing; power_restored and online
#: only clear. Priorities are IEC 60601-1-8 (DOMAIN.md §5): high = immediate response,
#: medium = prompt, low = awareness. Where DOMAIN.md gives none, the source says why.
DEFAULT_DISPENSER_RULES: Final[tuple[DispenserRule, ...]] = (
    DispenserRule(
        condition="dose-missed",
        title="Dose missed: the dispenser locked the dose away",
        raised_by=frozenset({EventKind.DOSE_MISSED}),
        # never cleared by an event: a locked-away dose needs a person to act on it
        cleared_by=frozenset(),
        priority=Priority.HIGH,
        audience="home_care",
        source=_MISSED,
    ),
    DispenserRule(
        condition="help-request",
        title="Help requested by the client at the dispenser",
        raised_by=frozenset({EventKind.HELP_REQUEST}),
        cleared_by=frozenset(),  # only the person who answered knows the request is settled
        priority=Priority.HIGH,
        audience="home_care",
        source="remon default: a person asks for help and why is unknown until someone "
        "answers, so it gets an immediate response (IEC 60601-1-8 high, DOMAIN.md §5); "
        "the dispenser's button does not replace a safety phone",
    ),
    DispenserRule(
        condition="roll-empty",
        title="Dispenser empty: refill needed",
        raised_by=frozenset({EventKind.ROLL_EMPTY}),
        # a dose dispensed afterwards came from a refilled roll; a dose_taken does not show it
        # (it can be the last dose, dispensed before the roll ran out)
        cleared_by=frozenset({EventKind.DOSE_DISPENSED}),
        priority=Priority.HIGH,
        audience="home_care",
        source="remon default: with no dose to give, every following dose is missed until a "
        "person refills it; " + _MISSED,
    ),
    DispenserRule(
        condition="device-jam",
        title="Dispenser jammed or reported a device error",
        raised_by=frozenset({EventKind.JAM}),
        cleared_by=frozenset({EventKind.DOSE_DISPENSED}),  # it dispenses again: it works
        priority=Priority.HIGH,
        audience="home_care",
        source="remon default: a jammed dispenser gives no further doses until a person fixes "
        "it; " + _MISSED,
    ),
    DispenserRule(
        condition="tamper",
        title="Dispenser tampered with or turned over",
        raised_by=frozenset({EventKind.TAMPER}),
        cleared_by=frozenset(),  # no event says the doses are in order again: a person checks
        priority=Priority.MEDIUM,
        audience="home_care",
        source="remon default: doses may be out of order or the device may stop; a prompt "
        "check by a person (IEC 60601-1-8 medium, DOMAIN.md §5)",
    ),
    DispenserRule(
        condition="low-battery",
        title="Dispenser battery low",
        raised_by=frozenset({EventKind.LOW_BATTERY}),
        cleared_by=frozenset({EventKind.POWER_RESTORED}),  # on mains power it charges again
        priority=Priority.MEDIUM,
        audience="home_care",
        source="remon default: an empty battery stops dispensing and reporting missed doses; "
        "prompt response prevents that (IEC 60601-1-8 medium, DOMAIN.md §5)",
    ),
    DispenserRule(
        condition="dispenser-offline",
        title="Dispenser offline: its reports do not reach home care",
        raised_by=frozenset({EventKind.OFFLINE}),
        cleared_by=frozenset({EventKind.ONLINE}),
        priority=Priority.MEDIUM,
        audience="home_care",
        source="remon default: while offline, missed doses and help requests are not notified "
        "(DOMAIN.md §4: dispensers notify home-care staff); prompt check (IEC 60601-1-8 medium)",
    ),
    DispenserRule(
        condition="low-stock",
        title="Dispenser stock running low",
        raised_by=frozenset({EventKind.LOW_STOCK}),
        # no event reports a refill, and a dose dispensed while doses remain says nothing about
        # the stock: a person resolves it after refilling
        cleared_by=frozenset(),
        priority=Priority.LOW,
        audience="home_care",
        source="remon default: doses remain (doses_left says how many), so a refill at a "
        "planned visit is awareness (IEC 60601-1-8 low, DOMAIN.md §5; low_stock: DOMAIN.md §4); "
        "an empty roll is the separate high-priority roll-empty",
    ),
    DispenserRule(
        condition="power-lost",
        title="Dispenser running on battery: mains power lost",
        raised_by=frozenset({EventKind.POWER_LOST}),
        cleared_by=frozenset({EventKind.POWER_RESTORED}),
        priority=Priority.LOW,
        audience="home_care",
        source="remon default: it keeps dispensing on its battery, so awareness (IEC 60601-1-8 "
        "low, DOMAIN.md §5; power_lost: DOMAIN.md §4); a low battery is the separate "
        "medium-priority low-battery",
    ),
    DispenserRule(
        condition="dose-taken-late",
        title="Dose taken late",
        raised_by=frozenset({EventKind.DOSE_TAKEN_LATE}),
        cleared_by=frozenset({EventKind.DOSE_TAKEN}),  # a later dose taken in time
        priority=Priority.LOW,
        audience="home_care",
        source="remon default: the dose was taken, so awareness for the care plan "
        "(DOMAIN.md §4: adherence reports are next-day information)",
    ),
)


def rule_index(rules: Iterable[DispenserRule]) -> dict[str, DispenserRule]:
    """Rules by condition; refuses two definitions of one condition."""
    out: dict[str, DispenserRule] = {}
    for r in rules:
        if not isinstance(r, DispenserRule):
            raise RuleError(f"rules holds {type(r).__name__}, not DispenserRule")
        if r.condition in out:
            raise RuleError(f"condition {r.condition!r} is defined twice")
        out[r.condition] = r
    return out


def describe_event(e: DispenserEvent) -> str:
    """One event in words: kind, UTC time, device, dose and schedule, details."""
    text = f"{e.kind.value} at {utc_text(e.event_time)} from dispenser {e.device_id}"
    if e.dose_id is not None:
        text += f", dose {e.dose_id}"
    if e.scheduled_time is not None:
        text += f" scheduled for {utc_text(e.scheduled_time)}"
    for k in sorted(e.details):
        text += f", {k} {e.details[k]}"
    if e.simulated:
        text += " (simulated)"
    return f"{text} (event {e.event_id})"


def evidence_of(e: DispenserEvent) -> FindingEvidence:
    return FindingEvidence(
        event_id=e.event_id,
        kind=e.kind.value,
        time=e.event_time,
        summary=describe_event(e),
        dose_id=e.dose_id,
        scheduled_time=e.scheduled_time,
    )


def unique_by_id(
    items: Iterable[object],
    cls: type[T],
    id_of: Callable[[T], str],
    *,
    holder: str,
    label: str,
) -> dict[str, T]:
    """``items`` by id, each id once; every rule family's inputs go through here.

    The same id twice is the same input delivered twice and counts once; the same id with other
    content is a fault upstream (ids are content-derived) and is refused, not guessed at.
    ``holder`` names the argument and ``label`` the kind of input in the messages.
    """
    by_id: dict[str, T] = {}
    for x in items:
        if not isinstance(x, cls):
            raise RuleInputError(f"{holder} holds {type(x).__name__}, not {cls.__name__}")
        key = id_of(x)
        seen = by_id.get(key)
        if seen is None:
            by_id[key] = x
        elif seen != x:
            raise RuleInputError(f"{label} {key!r} given twice with different content")
    return by_id


def unique_events(events: Iterable[DispenserEvent]) -> list[DispenserEvent]:
    """The events in processing order (time, then id), each id once (:func:`unique_by_id`)."""
    by_id = unique_by_id(
        events, DispenserEvent, lambda e: e.event_id, holder="events", label="event id"
    )
    return sorted(by_id.values(), key=lambda e: (e.event_time, e.event_id))


def evaluate_events(
    events: Iterable[DispenserEvent],
    *,
    open_alerts: Iterable[OpenFinding],
    now: datetime,
    rules: Sequence[DispenserRule] = DEFAULT_DISPENSER_RULES,
) -> list[FindingAction]:
    """Alert actions for newly stored dispenser ``events`` given the active alerts.

    ``now`` stamps the audit events; it is passed in, never read from a clock. Returns one
    action per alert raised or changed, in the order they were first touched.
    """
    index = rule_index(rules)
    raising: dict[EventKind, list[DispenserRule]] = {}
    clearing: dict[EventKind, list[DispenserRule]] = {}
    for r in index.values():
        for k in r.raised_by:
            raising.setdefault(k, []).append(r)
        for k in r.cleared_by:
            clearing.setdefault(k, []).append(r)
    book = FindingBook(open_alerts, rules=index, now=now)
    for e in unique_events(events):
        for r in raising.get(e.kind, ()):
            book.trigger(e.subject_ref, r.condition, evidence_of(e), simulated=e.simulated)
        for r in clearing.get(e.kind, ()):
            cur = book.current(e.subject_ref, r.condition)
            if cur is not None and e.dose_id is not None and e.dose_id == cur.last.dose_id:
                continue  # news about the dose that raised it is not an all-clear
            book.clear(
                e.subject_ref,
                r.condition,
                at=e.event_time,
                by=e.event_id,
                note=f"all-clear: {describe_event(e)}",
            )
    return book.actions()
