"""The agent's signal stage: raw curves from sensor boards in, observations out.

A PEF sensor board (``docs/firmware-bridges.md``) streams the raw flow of each blow; the bridge
host hands the assembled curve here. This stage checks the curve is usable (enough samples at a
sample rate of at least 500 Hz, finite values within the sensor's range), keeps the most recent
ones for inspection, and runs the blow analysis (:mod:`edge_agent.pef_blow`): PEF from the
Savitzky-Golay-smoothed flow, time to peak, FEV1, back-extrapolated volume and the quality
flags, which travel on the PEF observation (the value is never altered for them).

It also follows each board's session (DOMAIN.md §1: at least 3 blows, more while the two best
differ by more than 20 L/min, about 5 at most): blows less than :data:`SESSION_GAP` apart are
one session. :meth:`SignalStage.outcome` gives the latest blow's analysis and the session's
assessment, which the serial source sends back to the board (BLOW_RESULT) for the patient.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

import numpy as np
from numpy.typing import NDArray

from device_profiles.observation import Observation, Provenance, QualityFlag, clock_quality
from edge_agent.pef_blow import (
    FLOW_RANGE_L_S,
    MIN_BLOW_MS,
    MIN_SAMPLE_RATE_HZ,
    BlowAnalysis,
    BlowCriteria,
    BlowError,
    BlowQuality,
    SessionAssessment,
    analyse_blow,
    assess_session,
)

#: Blows further apart than this start a new session (remon default: a session's blows follow
#: each other within a minute or two; the post-bronchodilator blows 15-30 min later, DOMAIN.md
#: §1, are a session of their own).
SESSION_GAP: Final = timedelta(minutes=10)
#: Blow quality (edge_agent.pef_blow) as quality flags on the PEF observation.
BLOW_QUALITY_FLAGS: Final[dict[BlowQuality, QualityFlag]] = {
    BlowQuality.SLOW_RISE: QualityFlag.SLOW_RISE,
    BlowQuality.COUGH: QualityFlag.COUGH,
    BlowQuality.EARLY_STOP: QualityFlag.EARLY_STOP,
    BlowQuality.HESITATION: QualityFlag.HESITATION,
    BlowQuality.LARGE_BEV: QualityFlag.LARGE_BEV,
}
#: The limits a curve must meet (sample rate, length, sensor range) are the blow analysis's
#: (edge_agent.pef_blow), re-exported here for the stage's users.
__all__ = [
    "BLOW_QUALITY_FLAGS",
    "FLOW_RANGE_L_S",
    "MIN_BLOW_MS",
    "MIN_SAMPLE_RATE_HZ",
    "SESSION_GAP",
    "Blow",
    "BlowOutcome",
    "BlowRejected",
    "SignalStage",
    "SignalStats",
]


class BlowRejected(ValueError):
    """The curve cannot give a PEF; the message says why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Blow:
    device_id: str
    blow_id: int
    record_key: str  # stable across re-sends of the same blow (content-derived ids)
    sample_rate_hz: int
    flow_l_s: tuple[float, ...]
    started_at: datetime  # UTC, corrected by the board's measured clock offset
    complete: bool  # the board ended the blow normally (not a timeout or an abort)
    board_peak_l_s: float | None = None
    device_time: str | None = None  # the board's own clock at sample 0, as it said it
    clock_offset_s: float | None = None  # board clock minus hub clock


@dataclass(slots=True)
class SignalStats:
    blows: int = 0
    samples: int = 0
    rejected: int = 0
    flagged: int = 0  # accepted blows with a quality flag


@dataclass(frozen=True, slots=True)
class BlowOutcome:
    """The latest blow of a board: its analysis and where its session stands."""

    blow_id: int
    analysis: BlowAnalysis
    session: SessionAssessment


@dataclass(slots=True)
class _Session:
    last_at: datetime
    blows: dict[str, BlowAnalysis]  # by record key: a blow sent again counts once


class SignalStage:
    def __init__(self, *, keep: int = 16, criteria: BlowCriteria | None = None) -> None:
        self.stats = SignalStats()
        self.criteria = criteria if criteria is not None else BlowCriteria()
        #: The most recent accepted blows, newest last (for inspection and tests).
        self.recent: deque[Blow] = deque(maxlen=keep)
        self._sessions: dict[str, _Session] = {}
        self._outcomes: dict[str, BlowOutcome] = {}
        self._finished: dict[str, _Session] = {}  # each board's last completed session

    def on_blow(self, blow: Blow, *, source: str, simulated: bool) -> list[Observation]:
        """The observations a blow gives (its PEF); BlowRejected when it cannot give one."""
        try:
            flow = self._check(blow)
            analysis = analyse_blow(flow, blow.sample_rate_hz, criteria=self.criteria)
        except (BlowRejected, BlowError) as exc:
            self.stats.rejected += 1
            if isinstance(exc, BlowRejected):
                raise
            raise BlowRejected(f"blow {blow.blow_id}: {exc}") from None
        self.stats.blows += 1
        self.stats.samples += len(blow.flow_l_s)
        self.recent.append(blow)
        self._outcomes[blow.device_id] = BlowOutcome(
            blow_id=blow.blow_id, analysis=analysis, session=self._follow(blow, analysis)
        )
        quality = set(clock_quality(blow.clock_offset_s)) if blow.device_time else set()
        quality |= {BLOW_QUALITY_FLAGS[f] for f in analysis.flags}
        if analysis.flags:
            self.stats.flagged += 1
        if simulated:
            quality.add(QualityFlag.SIMULATED)
        if not blow.complete:
            quality.add(QualityFlag.QUESTIONABLE)
        return [
            Observation(
                measure="pef",
                unit="L/min",
                value=round(analysis.pef_l_min, 1),
                effective_time=blow.started_at,
                record_key=blow.record_key,
                device_time=blow.device_time,
                clock_offset_s=blow.clock_offset_s,
                provenance=Provenance(source=source, raw=_describe(blow, analysis)),
                quality=frozenset(quality),
            )
        ]

    def outcome(self, device_id: str) -> BlowOutcome | None:
        """The latest accepted blow of this board and its session's assessment."""
        return self._outcomes.get(device_id)

    def _follow(self, blow: Blow, analysis: BlowAnalysis) -> SessionAssessment:
        done = self._finished.get(blow.device_id)
        if done is not None and blow.record_key in done.blows:  # sent again after it ended
            return assess_session(list(done.blows.values()))
        s = self._sessions.get(blow.device_id)
        if s is None or abs(blow.started_at - s.last_at) > SESSION_GAP:
            s = self._sessions[blow.device_id] = _Session(last_at=blow.started_at, blows={})
        s.last_at = max(s.last_at, blow.started_at)
        s.blows[blow.record_key] = analysis
        assessment = assess_session(list(s.blows.values()))
        if assessment.complete:  # the next blow starts a new session
            self._finished[blow.device_id] = self._sessions.pop(blow.device_id)
        return assessment

    def _check(self, blow: Blow) -> NDArray[np.float64]:
        """The curve as an array, or BlowRejected naming the blow and what is wrong with it."""
        c = self.criteria
        if blow.sample_rate_hz < c.min_sample_rate_hz:
            raise BlowRejected(
                f"blow {blow.blow_id}: sample rate {blow.sample_rate_hz} Hz is below "
                f"{c.min_sample_rate_hz} Hz"
            )
        need = math.ceil(c.min_blow_ms * blow.sample_rate_hz / 1000)
        if len(blow.flow_l_s) < need:
            raise BlowRejected(
                f"blow {blow.blow_id}: {len(blow.flow_l_s)} samples, at least {need} needed "
                f"({c.min_blow_ms:g} ms)"
            )
        lo, hi = c.flow_range_l_s
        flow = np.asarray(blow.flow_l_s, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            bad = np.flatnonzero(~((flow >= lo) & (flow <= hi)))  # NaN compares False: bad
        if bad.size:
            i = int(bad[0])
            raise BlowRejected(
                f"blow {blow.blow_id}: sample {i} = {blow.flow_l_s[i]} L/s is outside the "
                f"sensor range {lo}..{hi} L/s"
            )
        return flow  # analysed as it is: the tuple is converted once


def _describe(blow: Blow, a: BlowAnalysis) -> str:
    """The blow's analysis in words, kept in the observation's provenance."""
    fev1 = f"{a.fev1_l:.2f} L" if a.fev1_l is not None else "n/a"
    text = (
        f"blow {blow.blow_id}: {len(blow.flow_l_s)} samples at {blow.sample_rate_hz} Hz; "
        f"time to peak {a.time_to_peak_ms:.0f} ms, FEV1 {fev1}, volume {a.volume_l:.2f} L, "
        f"BEV {a.bev_l:.3f} L"
    )
    for issue in a.issues:
        text += f"; {issue.flag.value}: {issue.reason}"
    return text[:4096]
