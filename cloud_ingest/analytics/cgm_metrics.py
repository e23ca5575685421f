"""CGM consensus metrics and the AGP percentiles for one subject's readings (pure, numpy).

Method (DOMAIN.md §2; Battelino et al. 2019, *Diabetes Care* 42:1593, "Clinical targets for
CGM data interpretation"; Danne et al. 2017, *Diabetes Care* 40:1631, "International
consensus on use of CGM"; Bergenstal et al. 2018, *Diabetes Care* 41:2275, GMI):

- **Mean** in both units (1 mmol/L = 18.016 mg/dL, :mod:`device_profiles.units`), **SD** as the
  sample SD (``ddof=1``, like R's ``sd``), **CV %** = 100 SD / mean, **GMI %** = 3.31 + 0.02392
  x mean mg/dL, and GMI in mmol/mol = 12.71 + 4.70587 x mean mmol/L (DOMAIN.md §2).
- **Time in ranges** as % of readings (not of time), with the band edges the consensus and
  iglu (Broll et al. 2021, ``in_range_percent``/``below_percent``/``above_percent``) use, in
  the unit of the data (the limits are published per unit, never converted):
  TBR level 2 ``v < 54`` (3.0); TBR level 1 ``54 <= v < 70`` (3.0/3.9); TIR ``70 <= v <= 180``
  (3.9-10.0); TAR level 1 ``180 < v <= 250`` (10.0/13.9); TAR level 2 ``v > 250`` (13.9).
  The five shares sum to 100 %.
- **Reading interval**: the median gap between consecutive readings, rounded to whole minutes
  (at least 1 min), as iglu's ``active_percent`` does; a caller who knows the sensor passes
  ``interval_s``.
- **Active %** (Danne 2017, "percentage of time CGM is active"): the reading slots of the wear
  period, ``round(span / interval) + 1``, less the slots lost in gaps longer than one interval,
  ``round(sum(gap - interval) / interval)``; as a % of the slots. This is iglu's
  ``active_percent`` (``range_type="automatic"``) formula: on a regular grid it is exactly
  "readings present / readings expected", and readings off the grid cannot push it above 100 %.
- **Days**: the wear period, ``span + one interval`` (each reading stands for one interval, so
  4032 readings at 5 min are 14.0 days). remon default; iglu's ``ndays`` is the bare span
  rounded to 0.1 d (13.997 d -> 14.0 for the same trace).
- **Sufficient**: days >= 14 and active >= 70 % (DOMAIN.md §2, clinical.CGM_SUFFICIENT_*).
- **AGP** (DOMAIN.md §2; Bergenstal et al. 2013, *Diabetes Technol Ther* 15:198): all days
  folded onto one 24-h "modal day" by wall-clock time of day, readings grouped in bins of
  ``bin_minutes`` (remon default 15 min), the 5/25/50/75/95th percentiles per bin (linear
  interpolation between order statistics, R's type 7 = numpy's default), then lightly smoothed
  by a circular 1-2-1 moving average over neighbouring bins (remon default; ``smooth=False``
  gives the raw bin percentiles). A bin without readings is NaN, never filled.

Times are wall-clock local time: ``datetime64`` (naive) or seconds since 1970-01-01 on the local
wall clock. The analysis never clamps a value and never states a diagnosis; what it could not
compute is None with a reason in ``notes``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from device_profiles.clinical import (
    AGP_PERCENTILES,
    CGM_SUFFICIENT_ACTIVE_PERCENT,
    CGM_SUFFICIENT_DAYS,
    GLUCOSE_BANDS,
    GMI_INTERCEPT_PERCENT,
    GMI_SLOPE_PERCENT_PER_MG_DL,
    Figure,
    GlucoseBands,
)
from device_profiles.units import GLUCOSE_MG_DL_PER_MMOL_L

FloatArray = npt.NDArray[np.float64]

#: The two units the consensus publishes its limits in.
GLUCOSE_UNITS: Final = ("mg/dL", "mmol/L")

#: GMI (mmol/mol) = 12.71 + 4.70587 x mean glucose in mmol/L.
GMI_INTERCEPT_MMOL_MOL: Final = Figure(12.71, "mmol/mol", "DOMAIN.md §2 GMI (Bergenstal 2018)")
GMI_SLOPE_MMOL_MOL_PER_MMOL_L: Final = Figure(
    4.70587, "(mmol/mol)/(mmol/L)", "DOMAIN.md §2 GMI (Bergenstal 2018)"
)

_PLAUSIBLE: Final = (
    "remon default: a reading outside it is a data error (wrong unit, a LOW/HIGH comparator "
    "typed as a number, a corrupt export), never clamped; wider than the CGM sensor range "
    "40-400 mg/dL, up to the meters' 33.3 mmol/L (DOMAIN.md §2)"
)
#: Plausible glucose values, inclusive, per unit: 20-600 mg/dL, 1.1-33.3 mmol/L.
PLAUSIBLE_GLUCOSE: Final[dict[str, tuple[Figure, Figure]]] = {
    "mg/dL": (Figure(20.0, "mg/dL", _PLAUSIBLE), Figure(600.0, "mg/dL", _PLAUSIBLE)),
    "mmol/L": (Figure(1.1, "mmol/L", _PLAUSIBLE), Figure(33.3, "mmol/L", _PLAUSIBLE)),
}
#: Unit inference: values all <= 35 are mmol/L, otherwise mg/dL. remon default: 35 lies above
#: the plausible mmol/L maximum (33.3) and below a CGM's lowest mg/dL reading (40, DOMAIN.md §2
#: sensor range); values <= 35 next to values > 35 make the unit ambiguous.
UNIT_INFERENCE_MAX_MMOL_L: Final = Figure(35.0, "mmol/L", "remon default: unit inference")
#: A value above 40 in data stated to be mmol/L looks like mg/dL (no mmol/L reading gets near
#: 40, and 40 mg/dL is a CGM's lowest reading, DOMAIN.md §2 sensor range). remon default.
MMOL_L_LOOKS_LIKE_MG_DL_ABOVE: Final = Figure(
    40.0, "mmol/L", "remon default: CGM sensor floor 40 mg/dL (DOMAIN.md §2)"
)
#: AGP bin width. remon default (the AGP's modal day at 15-min resolution).
AGP_BIN_MINUTES: Final = 15

_SECONDS_PER_MINUTE: Final = 60.0
_SECONDS_PER_DAY: Final = 86_400.0


@dataclass(frozen=True, slots=True)
class CgmMetrics:
    """One subject's consensus metrics. Percentages are of readings (0-100)."""

    unit: str  # unit of the data; the band limits applied are ``bands``
    bands: GlucoseBands
    readings: int
    period_start_s: float  # wall-clock seconds since 1970-01-01, first reading
    period_end_s: float  # last reading
    mean_mg_dl: float
    mean_mmol_l: float
    sd_mg_dl: float | None  # None with fewer than 2 readings
    sd_mmol_l: float | None
    cv_percent: float | None
    gmi_percent: float
    gmi_mmol_mol: float
    tbr_level2_percent: float
    tbr_level1_percent: float
    tir_percent: float
    tar_level1_percent: float
    tar_level2_percent: float
    interval_s: float | None  # the reading interval used (inferred or given)
    interval_inferred: bool
    active_percent: float | None  # None when the interval is unknown (1 reading)
    days: float  # wear period: span + one interval (0.0 when the interval is unknown)
    sufficient: bool
    notes: tuple[str, ...]

    @property
    def tbr_percent(self) -> float:
        """TBR total (level 1 + level 2)."""
        return self.tbr_level1_percent + self.tbr_level2_percent

    @property
    def tar_percent(self) -> float:
        """TAR total (level 1 + level 2)."""
        return self.tar_level1_percent + self.tar_level2_percent


@dataclass(frozen=True, slots=True)
class AgpProfile:
    """AGP percentiles over the modal day: ``values[i, j]`` is percentile ``percentiles[i]`` in
    bin ``j`` (which starts ``bin_start_min[j]`` minutes after midnight); NaN for empty bins."""

    unit: str
    bin_minutes: int
    bin_start_min: FloatArray
    percentiles: tuple[int, ...]
    values: FloatArray
    counts: npt.NDArray[np.int64]  # readings per bin
    smoothed: bool

    def curve(self, percentile: int) -> FloatArray:
        """The curve of one percentile (e.g. 50 for the median)."""
        row: FloatArray = self.values[self.percentiles.index(percentile), :]
        return row


def bands_for(unit: str) -> GlucoseBands:
    """The consensus limits in ``unit`` ("mg/dL" or "mmol/L")."""
    try:
        return GLUCOSE_BANDS[unit]
    except KeyError:
        raise ValueError(f"unknown glucose unit {unit!r}; use one of {GLUCOSE_UNITS}") from None


def format_glucose(value: float, unit: str) -> str:
    """A limit or value as written in its unit: one decimal for mmol/L (3.0, 10.0), else ``g``."""
    return f"{value:.1f}" if unit == "mmol/L" else f"{value:g}"


def as_seconds(times: npt.ArrayLike) -> FloatArray:
    """Wall-clock seconds since 1970-01-01 from ``datetime64`` values or from numbers (seconds)."""
    arr = np.asarray(times)
    if arr.ndim != 1:
        raise ValueError("times must be one-dimensional")
    if arr.dtype.kind == "M":
        if np.isnat(arr).any():
            raise ValueError(f"time {int(np.flatnonzero(np.isnat(arr))[0])} is NaT")
        us = arr.astype("datetime64[us]").astype(np.int64)
        return us.astype(np.float64) / 1e6
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"times must be datetime64 or seconds, not {arr.dtype}")
    out = arr.astype(np.float64)
    bad = ~np.isfinite(out)
    if bad.any():
        raise ValueError(f"time {int(np.flatnonzero(bad)[0])} is not finite")
    return out


def _values(values: npt.ArrayLike, n: int) -> FloatArray:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.shape[0] != n:
        raise ValueError(f"values must be one-dimensional with {n} entries like times")
    bad = ~np.isfinite(v)
    if bad.any():
        raise ValueError(f"value {int(np.flatnonzero(bad)[0])} is not finite")
    return v


def _sorted(t: FloatArray, v: FloatArray) -> tuple[FloatArray, FloatArray]:
    d = np.diff(t)
    if (d > 0).all():
        return t, v
    order = np.argsort(t, kind="stable")
    t, v = t[order], v[order]
    dup = np.flatnonzero(np.diff(t) == 0)
    if dup.size:
        i, j = int(order[dup[0]]), int(order[dup[0] + 1])
        raise ValueError(f"readings {i} and {j} have the same time; remove duplicates first")
    return t, v


def first_implausible(
    values: npt.ArrayLike,
    unit: str,
    *,
    low: float | None = None,
    high: float | None = None,
) -> int | None:
    """Index of the first value outside the plausible range (inclusive) for ``unit``, or None.

    ``low``/``high`` default to :data:`PLAUSIBLE_GLUCOSE` (remon defaults).
    """
    lo_fig, hi_fig = PLAUSIBLE_GLUCOSE[bands_for(unit).unit]
    lo = lo_fig.value if low is None else low
    hi = hi_fig.value if high is None else high
    v = np.asarray(values, dtype=np.float64)
    bad = np.flatnonzero(~((v >= lo) & (v <= hi)))
    return int(bad[0]) if bad.size else None


def reading_interval_s(t_sorted: FloatArray) -> float | None:
    """The median gap between consecutive readings, rounded to whole minutes (>= 1 min), in
    seconds; None with fewer than 2 readings. Half-minutes round to even, as iglu's ``round``."""
    if t_sorted.shape[0] < 2:
        return None
    minutes = float(np.rint(np.median(np.diff(t_sorted)) / _SECONDS_PER_MINUTE))
    return max(1.0, minutes) * _SECONDS_PER_MINUTE


def active_percent(t_sorted: FloatArray, interval_s: float) -> float:
    """Share of the wear period's reading slots that hold a reading (see module docstring)."""
    if interval_s <= 0 or not np.isfinite(interval_s):
        raise ValueError("the reading interval must be a positive number of seconds")
    gaps = np.diff(t_sorted)
    long = gaps[gaps > interval_s]
    span = float(t_sorted[-1] - t_sorted[0]) if t_sorted.shape[0] else 0.0
    expected = float(np.rint(span / interval_s)) + 1.0
    missing = float(np.rint((float(long.sum()) - long.shape[0] * interval_s) / interval_s))
    return 100.0 * (expected - missing) / expected


def cgm_metrics(
    times: npt.ArrayLike,
    values: npt.ArrayLike,
    *,
    unit: str,
    bands: GlucoseBands | None = None,
    interval_s: float | None = None,
    gmi_intercept_percent: float = GMI_INTERCEPT_PERCENT.value,
    gmi_slope_percent_per_mg_dl: float = GMI_SLOPE_PERCENT_PER_MG_DL.value,
    gmi_intercept_mmol_mol: float = GMI_INTERCEPT_MMOL_MOL.value,
    gmi_slope_mmol_mol_per_mmol_l: float = GMI_SLOPE_MMOL_MOL_PER_MMOL_L.value,
    sufficient_days: float = CGM_SUFFICIENT_DAYS.value,
    sufficient_active_percent: float = CGM_SUFFICIENT_ACTIVE_PERCENT.value,
    mg_dl_per_mmol_l: float = GLUCOSE_MG_DL_PER_MMOL_L,
) -> CgmMetrics:
    """The consensus metrics of one subject's readings, ``values`` in ``unit``.

    ``times`` need not be sorted but must be distinct (``ValueError`` otherwise); values must be
    finite. ``bands`` defaults to the consensus limits in ``unit`` and must be in that unit.
    """
    b = bands_for(unit) if bands is None else bands
    if b.unit != unit:
        raise ValueError(f"bands are in {b.unit} but the data is in {unit}")
    t = as_seconds(times)
    n = t.shape[0]
    if n == 0:
        raise ValueError("no readings")
    v = _values(values, n)
    t, v = _sorted(t, v)
    notes: list[str] = []

    to_mg = mg_dl_per_mmol_l if unit == "mmol/L" else 1.0
    to_mmol = 1.0 / mg_dl_per_mmol_l if unit == "mg/dL" else 1.0
    mean = float(v.mean())
    sd: float | None = None
    cv: float | None = None
    if n >= 2:
        sd = float(v.std(ddof=1))
        cv = 100.0 * sd / mean
    else:
        notes.append("SD and CV need at least 2 readings (1 given)")

    below_low = int(np.count_nonzero(v < b.low))
    below_very_low = int(np.count_nonzero(v < b.very_low))
    above_high = int(np.count_nonzero(v > b.high))
    above_very_high = int(np.count_nonzero(v > b.very_high))
    in_range = n - below_low - above_high

    if interval_s is None:
        dt = reading_interval_s(t)
        inferred = True
    else:
        if not (interval_s > 0 and np.isfinite(interval_s)):
            raise ValueError("interval_s must be a positive number of seconds")
        dt, inferred = float(interval_s), False
    active: float | None
    if dt is None:
        active, days = None, 0.0
        notes.append(
            "the reading interval cannot be inferred from 1 reading: active % and days not computed"
        )
    else:
        active = active_percent(t, dt)
        days = (float(t[-1] - t[0]) + dt) / _SECONDS_PER_DAY

    sufficient = (
        active is not None and days >= sufficient_days and active >= sufficient_active_percent
    )
    if days < sufficient_days:
        notes.append(f"not sufficient: {days:.1f} days of data < {sufficient_days:g} days")
    if active is not None and active < sufficient_active_percent:
        notes.append(
            f"not sufficient: sensor active {active:.1f} % < {sufficient_active_percent:g} %"
        )

    mean_mg, mean_mmol = mean * to_mg, mean * to_mmol
    pct = 100.0 / n
    return CgmMetrics(
        unit=unit,
        bands=b,
        readings=n,
        period_start_s=float(t[0]),
        period_end_s=float(t[-1]),
        mean_mg_dl=mean_mg,
        mean_mmol_l=mean_mmol,
        sd_mg_dl=None if sd is None else sd * to_mg,
        sd_mmol_l=None if sd is None else sd * to_mmol,
        cv_percent=cv,
        gmi_percent=gmi_intercept_percent + gmi_slope_percent_per_mg_dl * mean_mg,
        gmi_mmol_mol=gmi_intercept_mmol_mol + gmi_slope_mmol_mol_per_mmol_l * mean_mmol,
        tbr_level2_percent=below_very_low * pct,
        tbr_level1_percent=(below_low - below_very_low) * pct,
        tir_percent=in_range * pct,
        tar_level1_percent=(above_high - above_very_high) * pct,
        tar_level2_percent=above_very_high * pct,
        interval_s=dt,
        interval_inferred=inferred and dt is not None,
        active_percent=active,
        days=days,
        sufficient=sufficient,
        notes=tuple(notes),
    )


def _grouped_percentiles(
    groups: npt.NDArray[np.int16], v: FloatArray, n_groups: int, qs: FloatArray
) -> tuple[FloatArray, npt.NDArray[np.int64]]:
    """Percentiles ``qs`` (0-100) of ``v`` within each group, linear interpolation (type 7)."""
    by_value = np.argsort(v)
    # a stable sort of small integers (numpy: radix sort) keeps each group in value order
    order = by_value[np.argsort(groups[by_value], kind="stable")]
    sv = v[order]
    counts = np.bincount(groups, minlength=n_groups).astype(np.int64)
    starts = np.cumsum(counts) - counts
    last = np.maximum(counts - 1, 0)
    h = last[None, :] * (qs[:, None] / 100.0)
    lo = np.floor(h).astype(np.int64)
    frac = h - lo
    top = sv.shape[0] - 1
    a = sv[np.minimum(starts + lo, top)]
    b = sv[np.minimum(starts + np.minimum(lo + 1, last), top)]
    out = a + frac * (b - a)
    out[:, counts == 0] = np.nan
    return out, counts


def _smooth_circular(x: FloatArray) -> FloatArray:
    """1-2-1 moving average along the last axis, wrapping around midnight, NaN-aware."""
    finite = np.isfinite(x)
    xv = np.where(finite, x, 0.0)
    w = finite.astype(np.float64)
    xp = np.concatenate((xv[:, -1:], xv, xv[:, :1]), axis=1)
    wp = np.concatenate((w[:, -1:], w, w[:, :1]), axis=1)
    num = 2.0 * xv + xp[:, :-2] + xp[:, 2:]
    den = 2.0 * w + wp[:, :-2] + wp[:, 2:]
    out: FloatArray = np.full_like(x, np.nan)
    np.divide(num, den, out=out, where=finite)
    return out


def agp_profile(
    times: npt.ArrayLike,
    values: npt.ArrayLike,
    *,
    unit: str,
    bin_minutes: int = AGP_BIN_MINUTES,
    percentiles: tuple[int, ...] = AGP_PERCENTILES,
    smooth: bool = True,
) -> AgpProfile:
    """AGP percentiles by wall-clock time of day over the modal day (see module docstring)."""
    bands_for(unit)
    if bin_minutes <= 0 or 1440 % bin_minutes:
        raise ValueError("bin_minutes must divide a day (1440 min)")
    if any(not 0 <= q <= 100 for q in percentiles) or list(percentiles) != sorted(percentiles):
        raise ValueError("percentiles must be increasing, within 0-100")
    t = as_seconds(times)
    if t.shape[0] == 0:
        raise ValueError("no readings")
    v = _values(values, t.shape[0])
    n_bins = 1440 // bin_minutes
    tod = np.mod(t, _SECONDS_PER_DAY)
    groups = np.minimum((tod // (bin_minutes * _SECONDS_PER_MINUTE)).astype(np.int64), n_bins - 1)
    qs = np.asarray(percentiles, dtype=np.float64)
    out, counts = _grouped_percentiles(groups, v, n_bins, qs)
    if smooth:
        out = _smooth_circular(out)
    return AgpProfile(
        unit=unit,
        bin_minutes=bin_minutes,
        bin_start_min=np.arange(n_bins, dtype=np.float64) * bin_minutes,
        percentiles=tuple(int(q) for q in percentiles),
        values=out,
        counts=counts,
        smoothed=smooth,
    )


def metrics_dict(m: CgmMetrics) -> dict[str, Any]:
    """The metrics as JSON-ready values under the report's key names (periods not included)."""
    return {
        "unit": m.unit,
        "readings": m.readings,
        "mean_mg_dl": m.mean_mg_dl,
        "mean_mmol_l": m.mean_mmol_l,
        "sd_mg_dl": m.sd_mg_dl,
        "sd_mmol_l": m.sd_mmol_l,
        "cv_percent": m.cv_percent,
        "gmi_percent": m.gmi_percent,
        "gmi_mmol_mol": m.gmi_mmol_mol,
        "tir_percent": m.tir_percent,
        "tbr_level1_percent": m.tbr_level1_percent,
        "tbr_level2_percent": m.tbr_level2_percent,
        "tbr_percent": m.tbr_percent,
        "tar_level1_percent": m.tar_level1_percent,
        "tar_level2_percent": m.tar_level2_percent,
        "tar_percent": m.tar_percent,
        "interval_min": None if m.interval_s is None else m.interval_s / _SECONDS_PER_MINUTE,
        "interval_inferred": m.interval_inferred,
        "active_percent": m.active_percent,
        "days": m.days,
        "sufficient": m.sufficient,
        "bands": {
            "unit": m.bands.unit,
            "very_low": m.bands.very_low,
            "low": m.bands.low,
            "high": m.bands.high,
            "very_high": m.bands.very_high,
            "source": m.bands.source,
        },
        "notes": list(m.notes),
    }
