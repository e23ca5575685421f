"""Screening on arrival: readings the cloud keeps but does not let drive alerts. Pure.

Two checks, each marking the reading with a cloud-only quality flag (never sent by a hub: the
wire refuses them, :data:`device_profiles.observation.CLOUD_ONLY_FLAGS`). A flagged reading is
stored and shown with its flag; it raises, updates and clears no threshold alert. Nothing is
clamped or replaced.

- ``future-time``: the effective time is later than the message's arrival by more than
  :data:`FUTURE_LIMIT`. The hub corrects device times by the offset it measured and flags offsets
  over 15 minutes (``CLOCK_OFFSET_FLAG_LIMIT``); a reading still in the future by more than that
  comes from a clock nobody could correct, and treating it as the newest reading would make every
  real later reading look "late" to the rules. The same limit is used, so a reading the hub
  accepted without a flag is never flagged here.
- ``implausible``: a value outside what any person or device of the measure can produce. These
  are coarse physical bounds, not clinical thresholds and not device ranges (DOMAIN.md §3:
  device plausibility comes from each device's instructions and is checked at the edge, per
  profile); a value past them is a device or transfer fault. A LO/HI reading (a range limit with
  a comparator) is judged by its limit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Final

from device_profiles.observation import CLOCK_OFFSET_FLAG_LIMIT, Observation, QualityFlag
from gateway.wire import Envelope, WireObservation

#: How far past its arrival a reading's time may be: the hub's own clock-offset limit.
FUTURE_LIMIT: Final[timedelta] = CLOCK_OFFSET_FLAG_LIMIT

#: measure -> (lowest, highest) value possible at all, inclusive, in the measure's unit. remon
#: bounds, UNVERIFIED clinically: they are set far outside every clinical threshold so that only
#: physical impossibilities are caught (a meter's own range is narrower: DOMAIN.md §2, 0.6-33.3
#: mmol/L; §1 PEF meters 50-900 L/min).
PLAUSIBLE: Final[Mapping[str, tuple[float, float]]] = {
    "glucose.capillary": (0.0, 60.0),  # mmol/L; > 1000 mg/dL is beyond any meter
    "glucose.cgm": (0.0, 60.0),
    "glucose.cgm.predicted": (0.0, 60.0),
    "bp.systolic": (20.0, 350.0),  # mm[Hg]
    "bp.diastolic": (5.0, 300.0),
    "pulse.cuff": (10.0, 350.0),  # /min
    "pulse.oximeter": (10.0, 350.0),
    "spo2": (0.0, 100.0),  # %: saturation cannot exceed 100
    "body.temperature": (20.0, 46.0),  # Cel
    "body.weight": (0.2, 700.0),  # kg
    "body.height": (20.0, 300.0),  # cm
    "bmi": (5.0, 250.0),  # kg/m2
    "pef": (0.0, 1200.0),  # L/min; meters read 50-900 (DOMAIN.md §1)
}


def _implausible(o: Observation) -> bool:
    bounds = PLAUSIBLE.get(o.measure)
    if bounds is None or o.value is None:
        return False
    lo, hi = bounds
    v, cmp = o.value, o.comparator
    if cmp in ("<", "<="):
        return v < lo or (cmp == "<" and v <= lo)  # "below v" with v at or under the floor
    if cmp in (">", ">="):
        return v > hi or (cmp == ">" and v >= hi)
    return not lo <= v <= hi


def screen_observation(o: Observation, received_at: datetime) -> Observation:
    """``o`` with the cloud's flags added where they apply (the same object when none do)."""
    add: set[QualityFlag] = set()
    if o.effective_time - received_at > FUTURE_LIMIT:
        add.add(QualityFlag.FUTURE_TIME)
    if _implausible(o):
        add.add(QualityFlag.IMPLAUSIBLE)
    if not add:
        return o
    return replace(o, quality=o.quality | add)


def screen(env: Envelope, received_at: datetime) -> Envelope:
    """The envelope with every reading screened (the same object when nothing changed)."""
    changed = False
    out: list[WireObservation] = []
    for w in env.observations:
        o = screen_observation(w.observation, received_at)
        if o is w.observation:
            out.append(w)
        else:
            changed = True
            out.append(WireObservation(obs_id=w.obs_id, observation=o))
    return replace(env, observations=tuple(out)) if changed else env
