"""Alert life cycle (DOMAIN.md §5): raised -> acknowledged -> resolved, plus assignment, bounded
snooze and escalation. Pure.

``open`` and ``acknowledged`` alerts are *active* (one per subject + condition); ``resolved`` is
final. Clearing (the condition no longer present: the automatic all-clear) is a fact recorded on
an active alert, not a state: a human still resolves it, and a cleared alert is not escalated.

Assignment names the team member who handles an alert; it does not change the state. Snoozing
hides an *acknowledged* alert from the working queue until a bounded time: an open alert cannot
be snoozed (it would dodge escalation; the person snoozing it owns it by acknowledging first),
and new high-priority evidence ends a snooze. Escalation raises an unacknowledged alert's level
each time its priority's interval passes without an acknowledgement.

The bounds and intervals are remon defaults, not clinical figures: DOMAIN.md §5 asks for
"snooze with bounded durations" and "escalation when unacknowledged" without numbers. They are
chosen so that a high-priority alert (IEC 60601-1-8: immediate response) cannot be out of sight
for longer than half an hour and reaches a wider audience within minutes; a deployment sets its
own through :class:`LifecyclePolicy`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Final


class AlertStateName(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class Transition(StrEnum):
    ACKNOWLEDGE = "acknowledge"
    RESOLVE = "resolve"
    ASSIGN = "assign"
    SNOOZE = "snooze"


ACTIVE_STATES: Final = frozenset({AlertStateName.OPEN, AlertStateName.ACKNOWLEDGED})

#: (transition) -> (states it may start from, state it leads to)
TRANSITIONS: Final[dict[Transition, tuple[frozenset[AlertStateName], AlertStateName | None]]] = {
    Transition.ACKNOWLEDGE: (frozenset({AlertStateName.OPEN}), AlertStateName.ACKNOWLEDGED),
    Transition.RESOLVE: (ACTIVE_STATES, AlertStateName.RESOLVED),
    # None: the state does not change
    Transition.ASSIGN: (ACTIVE_STATES, None),
    Transition.SNOOZE: (frozenset({AlertStateName.ACKNOWLEDGED}), None),
}


class InvalidTransitionError(ValueError):
    def __init__(self, transition: Transition, state: str, why: str = "") -> None:
        text = f"cannot {transition.value} an alert that is {state}"
        super().__init__(f"{text}: {why}" if why else text)
        self.transition = transition
        self.state = state


class SnoozeRefusedError(InvalidTransitionError):
    """The snooze asked for is not allowed (its length, or its priority's policy): the request
    is wrong, not the alert's state (the API answers 422, not 409)."""


def next_state(state: str, transition: Transition) -> AlertStateName:
    """The state ``transition`` leads to from ``state``; raise if it is not allowed."""
    allowed, target = TRANSITIONS[transition]
    if state not in allowed:
        why = "acknowledge it first" if transition is Transition.SNOOZE else ""
        raise InvalidTransitionError(transition, state, why)
    return target if target is not None else AlertStateName(state)


def _minutes(**kw: float) -> timedelta:
    return timedelta(**kw)


@dataclass(frozen=True, slots=True, kw_only=True)
class LifecyclePolicy:
    """Snooze bounds and escalation intervals per priority (remon defaults, see module doc)."""

    #: the longest snooze a priority allows
    max_snooze: Mapping[str, timedelta] = field(
        default_factory=lambda: MappingProxyType(
            {"high": _minutes(minutes=30), "medium": _minutes(hours=4), "low": _minutes(hours=24)}
        )
    )
    #: an unacknowledged alert of this priority escalates one level per interval; a priority
    #: missing here never escalates (low: awareness only, IEC 60601-1-8)
    escalate_every: Mapping[str, timedelta] = field(
        default_factory=lambda: MappingProxyType(
            {"high": _minutes(minutes=5), "medium": _minutes(minutes=30)}
        )
    )
    max_escalation_level: int = 3

    def __post_init__(self) -> None:
        for name, table in (
            ("max_snooze", self.max_snooze),
            ("escalate_every", self.escalate_every),
        ):
            for priority, span in table.items():
                if span <= timedelta(0):
                    raise ValueError(f"{name}[{priority}] must be positive, not {span}")
        if self.max_escalation_level < 0:
            raise ValueError("max_escalation_level must not be negative")


DEFAULT_POLICY: Final = LifecyclePolicy()


def snooze_until(
    *,
    state: str,
    priority: str,
    minutes: float,
    now: datetime,
    policy: LifecyclePolicy = DEFAULT_POLICY,
) -> datetime:
    """When a snooze of ``minutes`` ends; raise if the state or the bound forbids it."""
    next_state(state, Transition.SNOOZE)
    if not math.isfinite(minutes) or minutes <= 0:
        raise SnoozeRefusedError(
            Transition.SNOOZE, state, f"snooze minutes must be positive, not {minutes}"
        )
    bound = policy.max_snooze.get(priority)
    if bound is None:
        raise SnoozeRefusedError(
            Transition.SNOOZE, state, f"{priority}-priority alerts cannot be snoozed"
        )
    # compared as numbers first: a huge value would overflow timedelta
    if minutes * 60 > bound.total_seconds():
        raise SnoozeRefusedError(
            Transition.SNOOZE,
            state,
            f"a {priority}-priority alert can be snoozed for at most "
            f"{bound.total_seconds() / 60:g} min, not {minutes:g}",
        )
    return now + timedelta(minutes=minutes)


def escalation_level_due(
    *,
    state: str,
    priority: str,
    raised_at: datetime,
    level: int,
    cleared: bool,
    now: datetime,
    policy: LifecyclePolicy = DEFAULT_POLICY,
) -> int | None:
    """The level an alert should be escalated to now, or None when it stays where it is.

    Only open (unacknowledged) alerts escalate, and not once their condition has cleared.
    Level n falls due ``n`` intervals after the alert was raised; a worker that was down for
    a while jumps straight to the level due (at most ``max_escalation_level``).
    """
    if state != AlertStateName.OPEN or cleared:
        return None
    every = policy.escalate_every.get(priority)
    if every is None:
        return None
    elapsed = now - raised_at
    due = min(int(elapsed / every), policy.max_escalation_level)
    return due if due > level else None
