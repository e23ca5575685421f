"""Alert rules: thresholds as data, evaluation and the alert life cycle. Pure functions of data.

Imports neither FastAPI nor SQLAlchemy (import-linter contract "rules are pure").
"""

from cloud_ingest.rules.engine import (
    AlertAction,
    AlertEvent,
    AlertState,
    Evidence,
    Reading,
    clears,
    evaluate,
    explain,
    meets,
)
from cloud_ingest.rules.lifecycle import (
    ACTIVE_STATES,
    DEFAULT_POLICY,
    AlertStateName,
    InvalidTransitionError,
    LifecyclePolicy,
    SnoozeRefusedError,
    Transition,
    escalation_level_due,
    next_state,
    snooze_until,
)
from cloud_ingest.rules.thresholds import (
    DEFAULT_THRESHOLDS,
    DEFAULTS_BY_CONDITION,
    Priority,
    RuleError,
    Threshold,
    ThresholdOverride,
    UnknownConditionError,
    apply_override,
    check_override,
)

__all__ = [
    "ACTIVE_STATES",
    "DEFAULTS_BY_CONDITION",
    "DEFAULT_POLICY",
    "DEFAULT_THRESHOLDS",
    "AlertAction",
    "AlertEvent",
    "AlertState",
    "AlertStateName",
    "Evidence",
    "InvalidTransitionError",
    "LifecyclePolicy",
    "Priority",
    "Reading",
    "RuleError",
    "SnoozeRefusedError",
    "Threshold",
    "ThresholdOverride",
    "Transition",
    "UnknownConditionError",
    "apply_override",
    "check_override",
    "clears",
    "escalation_level_due",
    "evaluate",
    "explain",
    "meets",
    "next_state",
    "snooze_until",
]
