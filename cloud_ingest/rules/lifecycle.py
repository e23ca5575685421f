"""Alert life cycle (DOMAIN.md §5): raised -> acknowledged -> resolved. Pure.

``open`` and ``acknowledged`` alerts are *active* (one per subject + condition); ``resolved`` is
final. Clearing (the condition no longer present) is a fact recorded on an active alert, not a
state: a human still resolves it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class AlertStateName(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class Transition(StrEnum):
    ACKNOWLEDGE = "acknowledge"
    RESOLVE = "resolve"


ACTIVE_STATES: Final = frozenset({AlertStateName.OPEN, AlertStateName.ACKNOWLEDGED})

#: (transition) -> (states it may start from, state it leads to)
TRANSITIONS: Final[dict[Transition, tuple[frozenset[AlertStateName], AlertStateName]]] = {
    Transition.ACKNOWLEDGE: (frozenset({AlertStateName.OPEN}), AlertStateName.ACKNOWLEDGED),
    Transition.RESOLVE: (ACTIVE_STATES, AlertStateName.RESOLVED),
}


class InvalidTransitionError(ValueError):
    def __init__(self, transition: Transition, state: str) -> None:
        super().__init__(f"cannot {transition.value} an alert that is {state}")
        self.transition = transition
        self.state = state


def next_state(state: str, transition: Transition) -> AlertStateName:
    """The state ``transition`` leads to from ``state``; raise if it is not allowed."""
    allowed, target = TRANSITIONS[transition]
    if state not in allowed:
        raise InvalidTransitionError(transition, state)
    return target
