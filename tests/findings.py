"""Test helpers shared by the finding-rule tests (dispenser, device health, PEF zones, silence):
feeding a call's actions back as the next call's open alerts, and picking actions out."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from cloud_ingest.rules.dispenser import FindingAction, FindingState, OpenFinding

Key = tuple[str, str]


def feed(current: dict[Key, OpenFinding], actions: list[FindingAction]) -> dict[Key, OpenFinding]:
    """What the service would hand back next time: the changed states, stored with ids."""
    out = dict(current)
    for a in actions:
        key = (a.state.subject_ref, a.state.condition)
        prev = out.get(key)
        out[key] = a.state.as_open(prev.alert_id if prev is not None else 100 + len(out))
    return out


def only(actions: list[FindingAction], condition: str | None = None) -> FindingAction:
    chosen = [a for a in actions if condition is None or a.state.condition == condition]
    assert len(chosen) == 1, [a.state.condition for a in actions]
    return chosen[0]


def by_condition(actions: list[FindingAction]) -> dict[str, FindingAction]:
    out = {a.state.condition: a for a in actions}
    assert len(out) == len(actions)
    return out


def final_states(actions_by_call: Iterable[list[FindingAction]]) -> dict[Key, FindingState]:
    """Each (subject, condition)'s last state over a sequence of calls, ids left out."""
    out: dict[Key, FindingState] = {}
    for actions in actions_by_call:
        for a in actions:
            out[(a.state.subject_ref, a.state.condition)] = replace(a.state, alert_id=None)
    return out
