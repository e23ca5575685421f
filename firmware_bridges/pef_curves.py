"""Synthetic expiratory flow-time curves for the PEF board simulator and signal-processing tests.

Shape, and where it comes from:

* A forced expiration rises to peak expiratory flow (PEF) within about 100 ms; "time to peak
  < 120 ms" is the usual spirometry acceptability criterion (DOMAIN.md §1). The rise here is a
  raised cosine from zero flow at the onset to PEF at ``time_to_peak_ms``: smooth, with zero
  slope at the peak.
* After the peak, flow falls as the lungs empty. On the descending limb of a flow-volume curve
  flow is roughly proportional to the volume still to be exhaled, so flow decays exponentially
  in time, ``exp(-t/tau)``. A second, faster exponential (time constant ``time_to_peak / 3``)
  rounds the peak so the curve is smooth there:
  ``flow = PEF * ((1 + k) * exp(-t/tau) - k * exp(-t/ts))`` with ``k = ts / (tau - ts)``, whose
  slope is zero at the peak and whose integral is ``PEF * (tau + ts)``.
* The blow ends when flow falls below 0.025 L/s (ATS/ERS 2005 end of test: less than 0.025 L
  exhaled in 1 s). The volume under the cut-off tail is about ``0.025 L/s * tau``, so ``tau``
  solves ``PEF * tp / 2 + PEF * (tau + ts) - 0.025 * tau = FVC``: the samples' integral
  (:attr:`PefCurve.volume_l`) is FVC to within discretisation, for ``artefact="none"``.
* 20 ms of zero flow come before the onset and after the end (the sensor idles).
* Adult PEF is typically 300-700 L/min; PEF meters read 50-900 L/min (DOMAIN.md §1).

Artefacts (what the edge's blow-quality checks must flag):

* ``cough``: a 60 ms transient of +40 % of PEF starting 250 ms after the peak (a second peak).
  When flow is still high then (a low PEF with a large FVC empties slowly) the cough peak is
  the curve's maximum, and ``true_pef_l_min`` and ``peak_index`` are the cough's.
* ``early_stop``: flow cut abruptly to zero once half of FVC has been exhaled.
* ``hesitation``: flow creeps up to 20 % of PEF over 40 ms and stays there for 200 ms before
  the rise (a large back-extrapolated volume; time to peak counted from the onset is long).

``noise_l_s`` adds Gaussian noise (``random.Random(seed)``, standard deviation in L/s) to every
sample, lead-in and lead-out included. ``true_pef_l_min`` is exactly 60 x the maximum sample of
the noise-free curve (artefacts included): what an ideal PEF algorithm reports. These curves are
a stand-in for real recordings; the public reference set is the ATS 26 standard flow-time
waveforms (DOMAIN.md §1), which are not reproduced here.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Final, Literal

__all__ = ["Artefact", "PefCurve", "pef_flow_curve"]

Artefact = Literal["none", "cough", "early_stop", "hesitation"]

#: ATS/ERS 2005 end-of-test volume change (0.025 L in 1 s) expressed as a flow (L/s).
END_FLOW_L_S: Final = 0.025
#: Zero-flow margins before the onset and after the end (s).
IDLE_S: Final = 0.020
COUGH_DELAY_S: Final = 0.250  # after the peak
COUGH_WIDTH_S: Final = 0.060
COUGH_GAIN: Final = 0.4  # x PEF
EARLY_STOP_FRACTION: Final = 0.5  # of FVC
HESITATION_LEVEL: Final = 0.2  # x PEF
HESITATION_RAMP_S: Final = 0.040
HESITATION_PLATEAU_S: Final = 0.200
#: Longest curve generated (s): a guard against absurd parameters.
MAX_DURATION_S: Final = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class PefCurve:
    flow_l_s: tuple[float, ...]
    sample_rate_hz: int
    true_pef_l_min: float  # 60 x max of the noise-free samples
    artefact: Artefact
    onset_index: int  # the sample where the patient starts blowing (flow 0, rising after it)
    peak_index: int  # first sample of the noise-free maximum

    @property
    def time_to_peak_ms(self) -> float:
        return (self.peak_index - self.onset_index) * 1000 / self.sample_rate_hz

    @property
    def volume_l(self) -> float:
        """Exhaled volume: the samples' sum times the sample interval."""
        return sum(self.flow_l_s) / self.sample_rate_hz


def pef_flow_curve(
    *,
    pef_l_min: float,
    sample_rate_hz: int = 1000,
    time_to_peak_ms: float = 100,
    fvc_l: float = 4.0,
    artefact: Artefact = "none",
    noise_l_s: float = 0.0,
    seed: int = 0,
) -> PefCurve:
    if not (math.isfinite(pef_l_min) and pef_l_min > 60 * END_FLOW_L_S):
        raise ValueError(f"pef_l_min must be above {60 * END_FLOW_L_S} L/min, got {pef_l_min}")
    if sample_rate_hz < 1:
        raise ValueError(f"sample_rate_hz must be >= 1, got {sample_rate_hz}")
    if not (math.isfinite(noise_l_s) and noise_l_s >= 0):
        raise ValueError(f"noise_l_s must be >= 0, got {noise_l_s}")
    dt = 1 / sample_rate_hz
    n_rise = round(time_to_peak_ms / 1000 * sample_rate_hz)
    if n_rise < 1:
        raise ValueError(f"time to peak {time_to_peak_ms} ms is shorter than one sample")
    p = pef_l_min / 60
    tp = n_rise * dt
    ts = tp / 3
    tau = (fvc_l - p * tp / 2 - p * ts) / (p - END_FLOW_L_S)
    if not tau > ts:
        raise ValueError(f"FVC {fvc_l} L is too small for PEF {pef_l_min} L/min in {tp} s")
    k = ts / (tau - ts)

    def idle() -> list[float]:
        return [0.0] * round(IDLE_S * sample_rate_hz)

    clean = idle()
    base = 0.0
    if artefact == "hesitation":
        base = HESITATION_LEVEL * p
        n_ramp = round(HESITATION_RAMP_S * sample_rate_hz)
        clean += [base * (1 - math.cos(math.pi * i / n_ramp)) / 2 for i in range(n_ramp)]
        clean += [base] * round(HESITATION_PLATEAU_S * sample_rate_hz)
        onset = len(clean) - n_ramp - round(HESITATION_PLATEAU_S * sample_rate_hz)
    else:
        onset = len(clean)
    clean += [base + (p - base) * (1 - math.cos(math.pi * i / n_rise)) / 2 for i in range(n_rise)]
    volume = sum(clean) * dt
    for j in range(round(MAX_DURATION_S * sample_rate_hz)):
        x = j * dt
        f = p * ((1 + k) * math.exp(-x / tau) - k * math.exp(-x / ts))
        if artefact == "cough" and COUGH_DELAY_S <= x <= COUGH_DELAY_S + COUGH_WIDTH_S:
            phase = 2 * math.pi * (x - COUGH_DELAY_S) / COUGH_WIDTH_S
            f += COUGH_GAIN * p * (1 - math.cos(phase)) / 2
        if f < END_FLOW_L_S:
            break
        if artefact == "early_stop" and volume >= EARLY_STOP_FRACTION * fvc_l:
            break
        clean.append(f)
        volume += f * dt
    clean += idle()
    peak = max(clean)
    flow = clean
    if noise_l_s > 0:
        rng = random.Random(seed)  # noqa: S311 - reproducible test noise, not security
        flow = [f + rng.gauss(0.0, noise_l_s) for f in clean]
    return PefCurve(
        flow_l_s=tuple(flow),
        sample_rate_hz=sample_rate_hz,
        true_pef_l_min=peak * 60,
        artefact=artefact,
        onset_index=onset,
        peak_index=clean.index(peak),
    )
