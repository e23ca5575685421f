"""PEF blow analysis from a raw flow-time curve, and the session rule for a set of blows.

A PEF sensor board (turbine or pneumotach) streams the flow of one forced expiration; this
module derives what a spirometer would from that curve and says what is wrong with the blow.
It is pure (numpy + scipy, no I/O) and does not import :mod:`edge_agent.signal`, which calls it.

Method (one blow, :func:`analyse_blow`):

* **Smoothing and PEF.** Savitzky-Golay smoothing of degree 2 over :data:`SMOOTHING_MS`
  (21 ms: 11 samples at 500 Hz, 21 at 1 kHz, 43 at 2 kHz). The local fit reproduces any parabola
  exactly, so the rounded top of a peak keeps its height: on the simulator's noise-free curves
  the smoothed maximum is within 0.06 % of the true peak for a 100 ms rise and within 0.25 %
  for a 50 ms one, where a 21 ms moving average loses up to 1.5 % (DOMAIN.md §1: time to peak
  < 120 ms). Yet it averages ~21 samples of noise (noise gain 0.33 at 1 kHz). Degree 3 has the
  same centre weights (a symmetric window cannot see odd terms). PEF = 60 x the maximum of the
  smoothed flow (DOMAIN.md §1: "PEF = maximum flow after smoothing"). The ends of the curve are
  fitted as ``scipy.signal.savgol_filter(..., mode="interp")`` does; a blow cut off abruptly is
  smoothed only up to the cut, so the step neither pulls the peak down nor rings above it.
* **Time zero and BEV** (ATS/ERS 2005 spirometry standard, kept in the 2019 update): the line
  of slope PEF through the point of peak flow on the volume-time curve meets zero volume at the
  back-extrapolated time zero ``t0``; the back-extrapolated volume (BEV) is the volume exhaled
  before ``t0``. Volumes are the measured (unsmoothed) flow summed over time, the rule the
  simulator's ``PefCurve.volume_l`` uses.
* **Time to peak** (``time_to_peak_ms``) runs from the *onset* of the blow to the peak; it is
  the figure compared with :data:`device_profiles.clinical.PEF_TIME_TO_PEAK_MS` (120 ms).
  ``time_to_peak_from_t0_ms`` is reported too, but for a smooth S-shaped rise it is about half
  the onset-based figure (a 100 ms raised-cosine rise gives 50 ms), so against 120 ms it would
  pass almost any blow. The onset: from rest the flow starts with zero slope (~ a (t - t_on)^2),
  so t_on is extrapolated from the times the rise crosses the rest level L (the noise, at least
  0.1 % of PEF) and 4L; a plain threshold would start the clock late by up to tens of ms on a
  noisy sensor. The peak time is the first moment the rise comes within the noise
  (:data:`NOISE_K` x the smoothed noise) of PEF, so a flat, noisy top does not move it later.
  On noise-free curves both come within ~4 ms of the simulator's figures; with 0.05 L/s of
  noise on a 60 L/min blow, within ~35 ms.
* **FEV1** is the volume from ``t0`` to ``t0 + 1 s``; it is None (the reason in ``missing``)
  when the recording ends, the patient breathes in, or the blow is cut short before then. A
  blow that fades out earlier within a longer recording gets FEV1 ≈ its whole volume (noted).
  ``volume_l`` is everything exhaled before the patient breathes in (an FVC-like total).
* **End of the blow**: the first moment after the peak at which the mean flow over the next
  :data:`END_WINDOW_MS` is below the end-of-test flow
  (:data:`device_profiles.clinical.PEF_END_FLOW_L_S`, raised above the noise on a noisy sensor);
  ``duration_ms`` runs from ``t0`` to it.

Quality flags (:class:`BlowQuality`), each with a plain-English reason in ``issues``:

* ``slow-rise``: time to peak >= 120 ms (DOMAIN.md §1).
* ``cough`` (a second peak): after PEF the flow climbs again by at least
  :data:`COUGH_RISE_FRACTION` of PEF above the lowest flow since the peak; or PEF itself is the
  second peak: before it the flow fell by that much and rose again, or, once above half of PEF,
  levelled off (did not rise over :data:`LEVEL_WINDOW_MS`) and then climbed by that much. The
  rise is also required to be well above the noise (:data:`COUGH_NOISE_K`). When the cough is
  the highest flow, PEF is the cough's (the session rule then prefers other blows) and the rise
  timings use the first peak.
* ``early-stop``: at the end of the blow the flow falls to rest within :data:`STEP_MS` from at
  least :data:`EARLY_STOP_FLOW_FRACTION` of PEF (so the end-of-test flow was never reached), or
  the recording ends while the flow is still that high. A natural end, or a cough's falling
  edge, fades over tens of ms.
* ``hesitation``: a plateau before the rise: climbing from 10 % to 50 % of PEF takes more than
  :data:`HESITATION_RATIO` times as long as from 50 % to the peak (and at least
  :data:`HESITATION_MIN_MS`); a smooth S-shaped rise has a ratio of about 0.6 at any speed.
* ``large-bev``: BEV > max(0.150 L, 5 % of the volume) (ATS/ERS 2005, via
  :data:`device_profiles.clinical.PEF_BEV_L` and ``PEF_BEV_FRACTION``). A separate flag from
  ``hesitation`` because the two part ways: a 60 L/min blow with a 200 ms plateau at 20 % of
  PEF has a BEV of only 0.04 L, while a smooth rise to 900 L/min in 119 ms, without any plateau,
  has about 0.16 L.

Constants marked "remon default" are engineering choices tuned on the simulator's curves
(:mod:`firmware_bridges.pef_curves`), not clinical figures; the flag thresholds among them are
fields of :class:`BlowCriteria`, so they can be overridden. Real recordings should be checked
against the ATS 26 standard flow-time waveforms (DOMAIN.md §1), which are not reproduced here.

Session rule (:func:`assess_session`, DOMAIN.md §1 protocol): at least 3 blows; while the two
best differ by more than 20 L/min, blow again, up to about 5; the session value is the best
blow, and every blow is kept. When the caller passes :class:`BlowAnalysis` objects, blows with a
quality flag are left out of "best" and of the two-best comparison, provided at least one blow
has no flag; otherwise every blow counts and the assessment says so.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

import numpy as np
from numpy.typing import NDArray
from scipy.ndimage import correlate1d  # type: ignore[import-untyped]
from scipy.signal import savgol_coeffs  # type: ignore[import-untyped]

from device_profiles import clinical

__all__ = [
    "BlowAnalysis",
    "BlowCriteria",
    "BlowError",
    "BlowIssue",
    "BlowQuality",
    "SessionAssessment",
    "analyse_blow",
    "assess_session",
]

# --- remon defaults (engineering choices, not clinical figures) ----------------------------

#: Savitzky-Golay window (ms). remon default: ~1/5 of a 100 ms rise, so the peak's top is
#: close to a parabola over the window; 21 samples at 1 kHz.
SMOOTHING_MS: Final = 21.0
#: Savitzky-Golay degree. remon default: 2 (degree 3 has identical centre weights).
SMOOTHING_POLYORDER: Final = 2
#: The slowest sample clock accepted (Hz); issue #4 / docs/firmware-bridges.md. The signal
#: stage (edge_agent.signal) takes these three limits from here.
MIN_SAMPLE_RATE_HZ: Final = 500
#: A blow shorter than this (ms) cannot show a peak and its decay.
MIN_BLOW_MS: Final = 150
#: Flow a PEF sensor board can report, L/s (15 L/s = 900 L/min, the top of a meter's range in
#: DOMAIN.md §1; negative flow means inhalation through the sensor).
FLOW_RANGE_L_S: Final = (-20.0, 20.0)
#: Window (ms) over which "the flow has stopped" and "the flow just before the end" are judged.
#: remon default: long enough to average noise, short enough that a cut reads as abrupt.
END_WINDOW_MS: Final = 10.0
#: A cut-off brings the flow to rest within this time (ms); remon default: a sensor's filter
#: may spread a cut over a few ms, while a natural end or a cough's falling edge takes tens.
STEP_MS: Final = 4.0
#: A rebound (second peak) must rise this fraction of PEF above the trough before it (1).
#: remon default: the simulator's cough adds 40 % of PEF; sensor noise stays far below 10 %.
COUGH_RISE_FRACTION: Final = 0.10
#: A stretch (ms) over which the flow did not rise counts as levelling off (a first peak or a
#: plateau) when looking for a second, higher peak. remon default: long enough that noise
#: cannot cancel a real rise, about the length of a cough's rise.
LEVEL_WINDOW_MS: Final = 30.0
#: Flow still at or above this fraction of PEF when the blow stops means it was cut short (1).
#: remon default: a natural end fades to the end-of-test flow; a cut drops from tens of % of PEF.
EARLY_STOP_FLOW_FRACTION: Final = 0.10
#: Hesitation: (time from 10 % to 50 % of PEF) / (time from 50 % to the peak) above this (1).
#: remon default: a smooth S-shaped rise gives ~0.6, a 200 ms plateau gives > 2.5.
HESITATION_RATIO: Final = 1.5
#: ... and the 10 %-50 % climb must take at least this long (ms). remon default.
HESITATION_MIN_MS: Final = 40.0
#: Fractions of PEF that mark the rise (10 %, 50 %, 90 %): the usual rise-time convention.
RISE_LOW: Final = 0.10
RISE_MID: Final = 0.50
RISE_HIGH: Final = 0.90
#: The onset is the last point before the peak where the smoothed flow is at most this fraction
#: of PEF (or within the noise, whichever is higher). remon default: 0.1 % of PEF.
ONSET_FRACTION: Final = 0.001
#: The onset is extrapolated from the rise's crossings of the rest level L and k x L (1).
ONSET_EXTRAPOLATION_K: Final = 4.0
#: Noise multipliers (1) for the smoothed flow's noise sigma_s, or a window mean's sigma/sqrt(w).
#: remon defaults: ~4 sigma excludes noise over a few thousand samples (and bounds how far noise
#: lifts the maximum of a flat top); 10 sigma for rebounds, differences of two noisy extremes.
NOISE_K: Final = 4.0
COUGH_NOISE_K: Final = 10.0
#: FEV1's time span (s): forced expiratory volume in the first second (definition).
FEV1_S: Final = 1.0

_MAD_TO_SD: Final = 1.4826  # median absolute deviation -> standard deviation, normal noise
_EPS: Final = float(np.finfo(np.float64).eps)


class BlowError(ValueError):
    """The curve cannot give a PEF; the message says what and where."""


class BlowQuality(StrEnum):
    SLOW_RISE = "slow-rise"
    COUGH = "cough"
    EARLY_STOP = "early-stop"
    HESITATION = "hesitation"
    LARGE_BEV = "large-bev"


@dataclass(frozen=True, slots=True, kw_only=True)
class BlowCriteria:
    """Limits of the blow analysis. Clinical ones default to :mod:`device_profiles.clinical`."""

    time_to_peak_ms: float = clinical.PEF_TIME_TO_PEAK_MS.value
    bev_l: float = clinical.PEF_BEV_L.value
    bev_fraction: float = clinical.PEF_BEV_FRACTION.value
    end_flow_l_s: float = clinical.PEF_END_FLOW_L_S.value
    smoothing_ms: float = SMOOTHING_MS
    polyorder: int = SMOOTHING_POLYORDER
    min_sample_rate_hz: int = MIN_SAMPLE_RATE_HZ
    min_blow_ms: float = MIN_BLOW_MS
    flow_range_l_s: tuple[float, float] = FLOW_RANGE_L_S
    cough_rise_fraction: float = COUGH_RISE_FRACTION
    early_stop_fraction: float = EARLY_STOP_FLOW_FRACTION
    hesitation_ratio: float = HESITATION_RATIO
    hesitation_min_ms: float = HESITATION_MIN_MS

    def __post_init__(self) -> None:
        positive = {
            "time_to_peak_ms": self.time_to_peak_ms,
            "bev_l": self.bev_l,
            "end_flow_l_s": self.end_flow_l_s,
            "smoothing_ms": self.smoothing_ms,
            "cough_rise_fraction": self.cough_rise_fraction,
            "early_stop_fraction": self.early_stop_fraction,
            "hesitation_ratio": self.hesitation_ratio,
        }
        for name, value in positive.items():
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"BlowCriteria.{name} must be finite and > 0, got {value}")
        non_negative = {
            "bev_fraction": self.bev_fraction,
            "min_blow_ms": self.min_blow_ms,
            "hesitation_min_ms": self.hesitation_min_ms,
        }
        for name, value in non_negative.items():
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"BlowCriteria.{name} must be finite and >= 0, got {value}")
        if not 0 <= self.polyorder <= 5:
            raise ValueError(f"BlowCriteria.polyorder must be 0..5, got {self.polyorder}")
        if self.min_sample_rate_hz < 1:
            raise ValueError(
                f"BlowCriteria.min_sample_rate_hz must be >= 1, got {self.min_sample_rate_hz}"
            )
        lo, hi = self.flow_range_l_s
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < 0 < hi):
            raise ValueError(
                f"BlowCriteria.flow_range_l_s must be finite with lo < 0 < hi, got {(lo, hi)}"
            )


@dataclass(frozen=True, slots=True)
class BlowIssue:
    flag: BlowQuality
    reason: str  # plain English, with the numbers that triggered the flag


@dataclass(frozen=True, slots=True, kw_only=True)
class BlowAnalysis:
    """What one blow's curve gives. Times are ms; ``*_index`` are sample indices."""

    pef_l_min: float  # 60 x max of the smoothed flow
    sample_rate_hz: int
    samples: int
    peak_index: int  # the smoothed maximum (the PEF sample)
    peak_time_ms: float  # when the rise first comes within the noise of its peak
    onset_ms: float  # start of the rise (extrapolated to zero flow), from sample 0
    time_zero_ms: float  # back-extrapolated t0, from sample 0 (may be < 0: recording started late)
    time_to_peak_ms: float  # onset -> peak; compared with BlowCriteria.time_to_peak_ms
    time_to_peak_from_t0_ms: float  # t0 -> peak
    rise_time_10_90_ms: float  # 10 % -> 90 % of the peak flow on the rise
    bev_l: float  # back-extrapolated volume (exhaled before t0)
    bev_limit_l: float  # max(criteria.bev_l, criteria.bev_fraction x volume_l)
    fev1_l: float | None  # t0 -> t0 + 1 s; None with the reason in ``missing``
    volume_l: float  # everything exhaled (FVC-like)
    duration_ms: float  # t0 -> end of the blow (forced expiratory time)
    end_index: int  # first sample after the blow (the flow has stopped from here on)
    end_flow_l_s: float  # mean flow over the END_WINDOW_MS before the end
    noise_l_s: float  # estimated sample noise (standard deviation)
    issues: tuple[BlowIssue, ...] = ()
    missing: Mapping[str, str] = field(default_factory=dict)  # field -> why it is None
    notes: tuple[str, ...] = ()

    @property
    def flags(self) -> frozenset[BlowQuality]:
        return frozenset(i.flag for i in self.issues)

    @property
    def reasons(self) -> dict[BlowQuality, str]:
        return {i.flag: i.reason for i in self.issues}

    @property
    def acceptable(self) -> bool:
        """No quality flag."""
        return not self.issues


# --- smoothing ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _sg_kernels(window: int, polyorder: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Centre weights and the window's least-squares projection (hat) matrix (for the edges)."""
    weights = np.asarray(savgol_coeffs(window, polyorder, use="dot"), dtype=np.float64)
    t = np.arange(window, dtype=np.float64) - window // 2
    design = np.vander(t, polyorder + 1, increasing=True)
    hat = design @ np.linalg.pinv(design)
    weights.setflags(write=False)
    hat.setflags(write=False)
    return weights, hat


def _savgol(x: NDArray[np.float64], window: int, polyorder: int) -> NDArray[np.float64]:
    """``savgol_filter(x, window, polyorder, mode="interp")``, ~10x faster for one blow.

    Interior points take the centre weights (one correlation); the first and last
    ``window // 2`` points take the polynomial fitted to the first / last window, as
    ``mode="interp"`` does. A segment shorter than the window is fitted with the longest odd
    window that fits (or returned as it is when even that cannot hold the polynomial).
    """
    n = x.size
    if n < window:
        window = n if n % 2 else n - 1
    if window <= polyorder:
        return x.copy()
    weights, hat = _sg_kernels(window, polyorder)
    half = window // 2
    out: NDArray[np.float64] = correlate1d(x, weights, mode="nearest")
    out[:half] = hat[:half] @ x[:window]
    out[n - half :] = hat[window - half :] @ x[n - window :]
    return out


def _window(smoothing_ms: float, sample_rate_hz: int, polyorder: int) -> int:
    w = round(smoothing_ms * sample_rate_hz / 1000)
    w = max(w, polyorder + 2)
    return w if w % 2 else w + 1


def _noise_sd(x: NDArray[np.float64]) -> float:
    """Sample noise (SD) from second differences: ~0 on a smooth curve, variance 6 sigma^2."""
    if x.size < 3:
        return 0.0
    d2 = np.abs(x[2:] - 2 * x[1:-1] + x[:-2])
    mid = d2.size // 2
    return float(_MAD_TO_SD * np.partition(d2, mid)[mid] / math.sqrt(6.0))


def _validated(
    flow_l_s: Sequence[float] | NDArray[np.float64], sample_rate_hz: int, c: BlowCriteria
) -> NDArray[np.float64]:
    if isinstance(sample_rate_hz, bool) or not isinstance(sample_rate_hz, int | np.integer):
        raise BlowError(f"sample rate must be an integer in Hz, got {sample_rate_hz!r}")
    if sample_rate_hz < 1:
        raise BlowError(f"sample rate {sample_rate_hz} Hz: must be at least 1 Hz")
    if sample_rate_hz < c.min_sample_rate_hz:
        raise BlowError(
            f"sample rate {sample_rate_hz} Hz is below the {c.min_sample_rate_hz} Hz needed to "
            "resolve a ~100 ms rise to peak"
        )
    try:
        if isinstance(flow_l_s, np.ndarray):
            x = np.asarray(flow_l_s, dtype=np.float64)
        else:
            try:  # a tuple or list of floats: fromiter is ~1.6x faster than asarray
                x = np.fromiter(flow_l_s, dtype=np.float64, count=len(flow_l_s))
            except (TypeError, ValueError):  # asarray names the problem (or the shape) better
                x = np.asarray(flow_l_s, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise BlowError(f"flow samples must be numbers (L/s): {exc}") from exc
    if x.ndim != 1:
        raise BlowError(f"flow must be a one-dimensional series of samples, got shape {x.shape}")
    need = max(3, math.ceil(c.min_blow_ms * sample_rate_hz / 1000))
    if x.size < need:
        raise BlowError(
            f"{x.size} samples at {sample_rate_hz} Hz: at least {need} needed "
            f"({c.min_blow_ms:g} ms)"
        )
    lo, hi = c.flow_range_l_s
    inside = (x >= lo) & (x <= hi)  # False for NaN too
    if not inside.all():
        i = int(np.argmin(inside))
        if not math.isfinite(x[i]):
            raise BlowError(f"sample {i}: {x[i]} is not a finite flow")
        raise BlowError(f"sample {i}: {x[i]} L/s is outside the sensor range {lo:g}..{hi:g} L/s")
    top = float(x.max())
    if top <= 0:
        raise BlowError(f"no expiratory (positive) flow: the largest sample is {top} L/s")
    return x


# --- analysis -------------------------------------------------------------------------------


def _first(mask: NDArray[np.bool_]) -> int | None:
    """Index of the first True (None if there is none); cheaper than flatnonzero."""
    if not mask.size:
        return None
    i = int(mask.argmax())
    return i if mask[i] else None


def _last(mask: NDArray[np.bool_]) -> int | None:
    """Index of the last True (None if there is none)."""
    if not mask.size:
        return None
    i = mask.size - 1 - int(mask[::-1].argmax())
    return i if mask[i] else None


def _last_below(s: NDArray[np.float64], lo: int, hi: int, level: float) -> int | None:
    """Index of the last sample in ``s[lo:hi]`` below ``level`` (None if there is none)."""
    i = _last(s[lo:hi] < level)
    return None if i is None else lo + i


def _crossing(s: NDArray[np.float64], lo: int, hi: int, level: float) -> float:
    """Fractional sample time at which the rise ``s[lo:hi]`` last crosses up through ``level``."""
    i = _last_below(s, lo, hi, level)
    if i is None:
        return float(lo)
    if i + 1 >= s.size:
        return float(i)
    step = s[i + 1] - s[i]
    return i + float((level - s[i]) / step) if step > 0 else float(i + 1)


def _check_blow(peak: float, floor: float, sigma: float) -> None:
    if peak <= floor:
        raise BlowError(
            f"no blow: the smoothed flow peaks at {peak:.3f} L/s, not above {floor:.3f} L/s "
            f"(the end-of-test flow, or {2 * NOISE_K:g}x the smoothed noise; sample noise "
            f"{sigma:.3f} L/s)"
        )


def analyse_blow(
    flow_l_s: Sequence[float] | NDArray[np.float64],
    sample_rate_hz: int,
    *,
    criteria: BlowCriteria = BlowCriteria(),
) -> BlowAnalysis:
    """Analyse one blow's flow curve (L/s, expiration positive); BlowError if it gives no PEF."""
    c = criteria
    x = _validated(flow_l_s, sample_rate_hz, c)
    n = x.size
    rate = int(sample_rate_hz)
    ms = 1000.0 / rate  # ms per sample
    notes: list[str] = []
    missing: dict[str, str] = {}

    window = _window(c.smoothing_ms, rate, c.polyorder)
    sigma = _noise_sd(x)
    weights, _ = _sg_kernels(window, c.polyorder)
    sigma_s = sigma * float(np.sqrt(np.dot(weights, weights)))
    s = _savgol(x, window, c.polyorder)
    pk0 = int(np.argmax(s))
    pef0 = float(s[pk0])
    # A blow must stand clear of the noise: twice the rest level (NOISE_K smoothed SDs).
    floor = max(c.end_flow_l_s, 2 * NOISE_K * sigma_s)
    _check_blow(pef0, floor, sigma)

    # --- end of the blow: the mean flow over the next w samples falls below the end flow
    w = max(1, round(END_WINDOW_MS / ms))
    csum = np.empty(n + 1)
    csum[0] = 0.0
    np.cumsum(x, out=csum[1:])
    window_noise = sigma / math.sqrt(w)
    end_level = c.end_flow_l_s + NOISE_K * window_noise
    # sum of x[i:i+w] for i >= pk0, against w x the level
    stop = _first(csum[w + pk0 :] - csum[pk0 : n + 1 - w] < end_level * w)
    stopped = stop is not None
    end = pk0 + stop if stop is not None else n
    lo_b = max(0, end - w)
    end_flow = float((csum[end] - csum[lo_b]) / (end - lo_b)) if end > lo_b else 0.0
    # Cut short: near the end the flow falls to rest by at least the early-stop level within
    # STEP_MS (a step); a natural end, or the falling edge of a cough, fades more slowly. A
    # recording that ends while the flow is still that high was cut short too.
    d = max(1, round(STEP_MS / ms))
    early_level = max(c.early_stop_fraction * pef0, NOISE_K * sigma * math.sqrt(2.0 / d))
    a, b = max(pk0 + d, end - w), min(n - d + 1, end + w + 1)
    pk = pk0
    step, cut = 0.0, end
    if stopped and a < b:
        # mean of the d samples before j minus the mean of the d from j: largest at a step
        falls = (2 * csum[a:b] - csum[a - d : b - d] - csum[a + d : b + d]) / d
        i = int(np.argmax(falls))
        step, cut = float(falls[i]), a + i
    early = step >= early_level if stopped else end_flow >= early_level
    if early and stopped:
        # Smooth only up to the cut, so the step into zero neither pulls the peak down nor
        # rings above it.
        s = np.concatenate(
            (_savgol(x[:cut], window, c.polyorder), _savgol(x[cut:], window, c.polyorder))
        )
        end = cut
        lo_b = max(0, end - w)
        end_flow = float((csum[end] - csum[lo_b]) / (end - lo_b)) if end > lo_b else 0.0
        pk = int(np.argmax(s[:cut]))
    pef = float(s[pk])
    _check_blow(pef, floor, sigma)

    # --- start of the exhalation: the last sample at rest before the peak
    rest_level = max(NOISE_K * sigma_s, ONSET_FRACTION * pef)
    start_i = _last_below(s, 0, pk + 1, rest_level + _EPS)
    start = start_i if start_i is not None else 0
    if start_i is None:
        notes.append("the flow is above rest from the first sample: the recording starts late")

    # --- a second peak before the maximum (the maximum is a cough's): either the flow fell by
    # the cough level and rose again, or, once above half the maximum, it levelled off (did
    # not rise over LEVEL_WINDOW_MS) and then climbed from its lowest point by the cough level.
    cough_level = max(c.cough_rise_fraction * pef, COUGH_NOISE_K * sigma_s)
    rise = s[start : pk + 1]
    dips = np.maximum.accumulate(rise) - rise
    j = int(np.argmax(dips))
    second = float(dips[j])
    first_pk: int | None = start + int(np.argmax(rise[:j])) if second >= cough_level else None
    if first_pk is None:
        i50 = _last_below(s, start, pk + 1, RISE_MID * pef)
        lo = (i50 if i50 is not None else start) + 1
        lw = max(1, round(LEVEL_WINDOW_MS / ms))
        span = pk + 1 - lw - lo
        flat = _last(s[lo + lw : pk + 1] - s[lo : lo + span] <= 0) if span > 0 else None
        if flat is not None:
            k = lo + flat  # the last time the flow did not rise over lw samples
            trough = k + int(np.argmin(s[k : pk + 1]))
            second = max(second, pef - float(s[trough]))
            if second >= cough_level:
                first_pk = start + int(np.argmax(s[start : trough + 1]))
    rise_pk, rise_pef = pk, pef
    if first_pk is not None:
        rise_pk, rise_pef = first_pk, float(s[first_pk])
        notes.append(
            f"the highest flow ({pef * 60:.0f} L/min at {pk * ms:.0f} ms) comes after a first "
            f"peak of {rise_pef * 60:.0f} L/min at {rise_pk * ms:.0f} ms; the rise timings use "
            "the first peak"
        )
    inhale = _first(s[end:] < -floor)
    last = end + inhale if inhale is not None else n  # the exhalation (and recording) ends
    tail = s[pk:last]
    rebound = float(np.max(tail - np.minimum.accumulate(tail))) if tail.size else 0.0

    # --- peak time; onset extrapolated from the start of the rise; rise crossings
    peak_t = start + int(np.argmax(s[start : rise_pk + 1] >= rise_pef - NOISE_K * sigma_s))
    # From rest the flow starts with zero slope, ~ a (t - t_on)^2: from the times it crosses
    # L and kL, t_on = (sqrt(k) t_L - t_kL) / (sqrt(k) - 1). With L at the rest level this
    # removes the delay a noise-aware threshold would add.
    t_l = _crossing(s, start, peak_t + 1, rest_level)
    k_l = min(ONSET_EXTRAPOLATION_K, RISE_MID * rise_pef / rest_level)
    onset_t = t_l
    if k_l > 1.5:
        t_kl = _crossing(s, start, peak_t + 1, k_l * rest_level)
        root = math.sqrt(k_l)
        onset_t = min(t_l, max(0.0, (root * t_l - t_kl) / (root - 1)))
    onset_t = min(onset_t, float(peak_t))
    t10 = _crossing(s, start, peak_t + 1, RISE_LOW * rise_pef)
    t50 = _crossing(s, start, peak_t + 1, RISE_MID * rise_pef)
    t90 = _crossing(s, start, peak_t + 1, RISE_HIGH * rise_pef)

    # --- volume-time curve (measured flow, rectangle rule), time zero, BEV, FEV1
    base = csum[start]

    def volume_at(u: float) -> float:
        """Litres exhaled from the start of the exhalation to sample time ``u``."""
        u = min(max(u, float(start)), float(n))
        i = min(int(u), n - 1)
        return float(csum[i] + (u - i) * x[i] - base) / rate

    t_peak = peak_t + 0.5  # the middle of the peak sample's interval
    t0 = t_peak - volume_at(t_peak) * rate / rise_pef
    bev = volume_at(t0)
    volume = float(np.max(csum[pk : last + 1]) - base) / rate
    t1 = t0 + FEV1_S * rate
    fev1: float | None = None
    observed = end if early else last  # after a cut-off, or once the patient inhales, no more
    if t1 > observed:
        if early and stopped:
            what = "the blow was cut short"
        elif observed < n:
            what = "the patient breathed in"
        else:
            what = "the recording ends"
        missing["fev1_l"] = (
            f"{what} {(observed - t0) * ms:.0f} ms after time zero, before {FEV1_S * 1000:.0f} ms"
        )
    else:
        fev1 = volume_at(t1) - bev
        if t1 > end:
            notes.append(
                f"the flow faded {(end - t0) * ms:.0f} ms after time zero, so FEV1 is nearly all "
                "of the exhaled volume"
            )
    if t0 < 0:
        notes.append(f"time zero is {-t0 * ms:.0f} ms before the recording starts")

    # --- quality flags
    issues: list[BlowIssue] = []
    ttp = (peak_t - onset_t) * ms
    if ttp >= c.time_to_peak_ms:
        issues.append(
            BlowIssue(
                BlowQuality.SLOW_RISE,
                f"slow rise: the flow took {ttp:.0f} ms to reach its peak (limit: under "
                f"{c.time_to_peak_ms:.0f} ms); blow out as hard and fast as you can",
            )
        )
    cough = max(second, rebound)
    if cough >= cough_level:
        where = "before the highest flow" if second >= rebound else "after the peak"
        issues.append(
            BlowIssue(
                BlowQuality.COUGH,
                f"cough or second peak: the flow dipped and rose again by {cough * 60:.0f} L/min "
                f"{where} (limit: {cough_level * 60:.0f} L/min); blow in one smooth breath",
            )
        )
    if early:
        how = f"the flow stopped abruptly at {end * ms:.0f} ms" if stopped else "the recording ends"
        issues.append(
            BlowIssue(
                BlowQuality.EARLY_STOP,
                f"early stop: {how} while still {end_flow * 60:.0f} L/min "
                f"({end_flow / pef:.0%} of the peak; a finished blow fades below "
                f"{c.end_flow_l_s * 60:.1f} L/min); keep blowing until your lungs are empty",
            )
        )
    lower, upper = (t50 - t10) * ms, (peak_t - t50) * ms
    if lower >= c.hesitation_min_ms and lower > c.hesitation_ratio * max(upper, ms):
        issues.append(
            BlowIssue(
                BlowQuality.HESITATION,
                f"hesitation: the flow took {lower:.0f} ms to climb from "
                f"{RISE_LOW:.0%} to {RISE_MID:.0%} of the peak, against {upper:.0f} ms from "
                f"there to the peak (a plateau before the rise); start with a sharp blast",
            )
        )
    bev_limit = max(c.bev_l, c.bev_fraction * volume)
    if bev > bev_limit:
        issues.append(
            BlowIssue(
                BlowQuality.LARGE_BEV,
                f"large back-extrapolated volume: {bev * 1000:.0f} mL exhaled before time zero "
                f"(limit: {bev_limit * 1000:.0f} mL); start with a sharp blast",
            )
        )

    return BlowAnalysis(
        pef_l_min=pef * 60.0,
        sample_rate_hz=rate,
        samples=n,
        peak_index=pk,
        peak_time_ms=peak_t * ms,
        onset_ms=onset_t * ms,
        time_zero_ms=t0 * ms,
        time_to_peak_ms=ttp,
        time_to_peak_from_t0_ms=(peak_t - t0) * ms,
        rise_time_10_90_ms=(t90 - t10) * ms,
        bev_l=bev,
        bev_limit_l=bev_limit,
        fev1_l=fev1,
        volume_l=volume,
        duration_ms=(end - t0) * ms,
        end_index=end,
        end_flow_l_s=end_flow,
        noise_l_s=sigma,
        issues=tuple(issues),
        missing=missing,
        notes=tuple(notes),
    )


# --- session --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionAssessment:
    best_l_min: float | None  # the session value (best counted blow); None without blows
    best_index: int | None  # which blow (0-based, in the order given)
    blows: int  # every blow given
    counted: tuple[int, ...]  # blows that count for "best" and the two-best comparison
    excluded: tuple[int, ...]  # blows left out for quality flags (only if some blow has none)
    spread_l_min: float | None  # best minus second best among the counted; None if < 2
    reproducible: bool  # spread <= the limit
    blow_again: bool
    complete: bool  # not blow_again: the session can end
    reason: str  # plain English for the patient


def assess_session(
    pefs_l_min: Sequence[float | BlowAnalysis],
    *,
    reproducibility_l_min: float = clinical.PEF_REPRODUCIBILITY_L_MIN.value,
    min_blows: int = int(clinical.PEF_MIN_BLOWS.value),
    max_blows: int = int(clinical.PEF_MAX_BLOWS.value),
) -> SessionAssessment:
    """Apply the session protocol (DOMAIN.md §1) to the blows so far, in the order blown.

    A number is a blow's PEF (L/min) with no quality information; a :class:`BlowAnalysis`
    counts only if it has no flag, unless no blow is flag-free (then all count).
    """
    if not (math.isfinite(reproducibility_l_min) and reproducibility_l_min >= 0):
        raise ValueError(f"reproducibility_l_min must be >= 0, got {reproducibility_l_min}")
    if min_blows < 1 or max_blows < min_blows:
        raise ValueError(f"need 1 <= min_blows <= max_blows, got {min_blows}, {max_blows}")
    values: list[float] = []
    ok: list[bool] = []
    for i, blow in enumerate(pefs_l_min):
        if isinstance(blow, BlowAnalysis):
            v, good = blow.pef_l_min, blow.acceptable
        elif isinstance(blow, int | float) and not isinstance(blow, bool):
            v, good = float(blow), True
        else:
            raise ValueError(f"blow {i}: expected a PEF in L/min or a BlowAnalysis, got {blow!r}")
        if not (math.isfinite(v) and v > 0):
            raise ValueError(f"blow {i}: PEF {v} L/min is not a finite positive flow")
        values.append(v)
        ok.append(good)
    n = len(values)
    counted = [i for i in range(n) if ok[i]] or list(range(n))
    excluded = tuple(i for i in range(n) if i not in counted)
    ranked = sorted(counted, key=lambda i: values[i], reverse=True)
    best_index = ranked[0] if ranked else None
    best = values[best_index] if best_index is not None else None
    spread = values[ranked[0]] - values[ranked[1]] if len(ranked) >= 2 else None
    # "Within 20 L/min" includes 20; allow for the rounding of values like 420.3 - 400.3.
    tolerance = 1e-9 * max(1.0, reproducibility_l_min)
    reproducible = spread is not None and spread <= reproducibility_l_min + tolerance
    blow_again = n < min_blows or (not reproducible and n < max_blows)
    limit = f"{reproducibility_l_min:g} L/min"
    quality = ""
    if excluded:
        quality = (
            f" {len(excluded)} blow{'s' if len(excluded) > 1 else ''} with a quality problem "
            "(see each blow) did not count."
        )
    elif n and not any(ok):
        quality = " Every blow had a quality problem, so all of them count."
    if n == 0:
        reason = f"Blow again: no blows yet; at least {min_blows} are needed."
    elif n < min_blows:
        reason = f"Blow again: {n} of at least {min_blows} blows done."
    elif blow_again and spread is None:
        reason = (
            "Blow again: only one blow was good enough, and two are needed to check that "
            f"they agree within {limit}."
        )
    elif blow_again:
        reason = (
            f"Blow again: your two best blows differ by {spread:.0f} L/min; they should be "
            f"within {limit}."
        )
    elif reproducible:
        reason = (
            f"Done: your best blow is {best:.0f} L/min, and your two best blows agree within "
            f"{limit}."
        )
    else:
        gap = "" if spread is None else f" (they differ by {spread:.0f} L/min)"
        reason = (
            f"Done: {n} blows is the most for one session. Your best blow is {best:.0f} L/min, "
            f"but your two best blows did not agree within {limit}{gap}."
        )
    return SessionAssessment(
        best_l_min=best,
        best_index=best_index,
        blows=n,
        counted=tuple(counted),
        excluded=excluded,
        spread_l_min=spread,
        reproducible=reproducible,
        blow_again=blow_again,
        complete=not blow_again,
        reason=reason + quality,
    )
