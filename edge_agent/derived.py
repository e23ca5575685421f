"""Derived CGM values at the edge: each CGM reading through its sensor's stream, in arrival order.

For every ``glucose.cgm`` observation the agent is about to queue, the device's
:class:`~edge_agent.cgm_stream.CgmStream` cleans it (duplicates, gaps, LOW/HIGH, warm-up,
impossible jumps, suspected compression lows) and, from the last 15 minutes, gives the rate of
change and a 20-minute prediction. This module turns that into what travels on the wire:

* the reading itself, with the stream's suspicions added as quality flags (its value is never
  changed);
* ``glucose.cgm.trend`` (mmol/L/min) and ``glucose.cgm.predicted`` (mmol/L), flagged
  ``derived``, keyed by the reading's record key plus a suffix, so a re-sent reading gives the
  same ids. The cloud's ``cgm-urgent-low-soon`` rule reads the prediction.

Trend and prediction are only sent for *live* readings (no older than :data:`LIVE_WITHIN` by the
hub's clock): a backlog downloaded after a reconnect still feeds the stream, but a prediction
about a moment long past would raise an alert nobody can act on. The streams live in memory:
after a restart a sensor's trend returns once it has a few readings again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Final

from device_profiles.clinical import CGM_STALE_WARN_MIN
from device_profiles.gatt.observations import cgm_session_start
from device_profiles.observation import Observation, Provenance, QualityFlag
from edge_agent.cgm_stream import CgmFlag, CgmStream, CgmStreamError, CgmUpdate

log = logging.getLogger("remon.derived")

#: A reading older than this (hub clock) is history, not live: no trend or prediction is sent.
#: The stale-data warning time (DOMAIN.md §2): a reading that old would already be "stale".
LIVE_WITHIN: Final = timedelta(minutes=CGM_STALE_WARN_MIN.value)
TREND_SUFFIX: Final = "/trend15"
PREDICTION_SUFFIX: Final = "/pred"
SOURCE: Final = "edge:cgm-stream"

_FLAGS: Final[dict[CgmFlag, QualityFlag]] = {
    CgmFlag.WARM_UP: QualityFlag.SENSOR_WARM_UP,
    CgmFlag.IMPOSSIBLE_JUMP: QualityFlag.IMPOSSIBLE_JUMP,
    CgmFlag.COMPRESSION_LOW: QualityFlag.COMPRESSION_LOW,
}


@dataclass(slots=True)
class DerivedStats:
    readings: int = 0
    trends: int = 0
    predictions: int = 0
    urgent_low_soon: int = 0
    flagged: int = 0


class CgmDerivation:
    """One :class:`CgmStream` per device; pure apart from the clock it is given."""

    def __init__(self, *, clock: Callable[[], datetime]) -> None:
        self._clock = clock
        self._streams: dict[str, CgmStream] = {}
        self.stats = DerivedStats()

    def stream(self, device_id: str) -> CgmStream:
        s = self._streams.get(device_id)
        if s is None:
            s = CgmStream()  # DOMAIN.md §2 defaults: 15-min trend, 20-min horizon
            self._streams[device_id] = s
        return s

    def process(self, device_id: str, observations: Sequence[Observation]) -> list[Observation]:
        """The observations to queue: CGM readings flagged, followed by their derived values."""
        if not any(o.measure == "glucose.cgm" for o in observations):
            return list(observations)
        out: list[Observation] = []
        now = self._clock()
        for given in observations:
            if given.measure != "glucose.cgm":
                out.append(given)
                continue
            obs = given
            self.stats.readings += 1
            usable = obs.value is not None and QualityFlag.QUESTIONABLE not in obs.quality
            try:
                update = self.stream(device_id).update(
                    obs.effective_time,
                    obs.value if usable else None,
                    comparator=obs.comparator if usable else None,
                    sensor_start=cgm_session_start(obs.record_key),
                )
            except CgmStreamError as exc:  # the reading still goes out, underived
                log.warning("device %s: CGM reading %s not derived: %s", device_id, obs, exc)
                out.append(obs)
                continue
            flags = frozenset(_FLAGS[f] for f in update.flags if f in _FLAGS)
            if flags - obs.quality:
                self.stats.flagged += 1
                obs = replace(obs, quality=obs.quality | flags)
            out.append(obs)
            if update.accepted and now - obs.effective_time <= LIVE_WITHIN:
                out += self._derived(obs, update)
        return out

    def _derived(self, obs: Observation, u: CgmUpdate) -> list[Observation]:
        quality = frozenset({QualityFlag.DERIVED}) | (obs.quality & {QualityFlag.SIMULATED})
        out: list[Observation] = []
        if u.trend_mmol_l_min is not None:
            self.stats.trends += 1
            arrow = u.arrow.value if u.arrow is not None else "none"
            out.append(
                Observation(
                    measure="glucose.cgm.trend",
                    unit="mmol/L/min",
                    value=round(u.trend_mmol_l_min, 4),
                    effective_time=obs.effective_time,
                    record_key=obs.record_key + TREND_SUFFIX,
                    quality=quality,
                    provenance=Provenance(
                        source=SOURCE,
                        original_value=round(u.trend_mg_dl_min, 2)
                        if u.trend_mg_dl_min is not None
                        else None,
                        original_unit="mg/dL/min" if u.trend_mg_dl_min is not None else None,
                        raw=f"15-min least-squares slope; arrow {arrow}",
                    ),
                )
            )
        if u.predicted_mmol_l is not None:
            self.stats.predictions += 1
            self.stats.urgent_low_soon += u.urgent_low_soon
            sd = u.prediction_sd_mmol_l
            bound = u.prediction_low_bound_mmol_l
            raw = f"linear extrapolation {u.horizon_min:g} min ahead"
            if sd is not None:
                raw += f"; SD {sd:.2f} mmol/L"
            if bound is not None:
                raw += f"; one-sided 95 % lower bound {bound:.2f} mmol/L"
            out.append(
                Observation(
                    measure="glucose.cgm.predicted",
                    unit="mmol/L",
                    value=round(u.predicted_mmol_l, 2),
                    effective_time=obs.effective_time,
                    record_key=obs.record_key + PREDICTION_SUFFIX,
                    quality=quality,
                    provenance=Provenance(source=SOURCE, raw=raw),
                )
            )
        return out
