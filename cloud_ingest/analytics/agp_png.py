"""The AGP picture (PNG bytes) of one subject: percentile bands over the modal day and a
time-in-ranges bar (DOMAIN.md §2; Bergenstal et al. 2013, "Recommendations for standardizing
glucose reporting and analysis to optimize clinical decision making in diabetes: the Ambulatory
Glucose Profile", *Diabetes Technol Ther* 15:198; Battelino et al. 2019 for the ranges).

Drawn from :class:`~cloud_ingest.analytics.cgm_metrics.AgpProfile` and ``CgmMetrics``: the
5-95th percentile band (light), the 25-75th band (dark), the median line, the target range
limits (3.9/10.0 mmol/L or 70/180 mg/dL, from the metrics' bands) as lines, axes labelled with
the unit, a title with the subject and period, and beside it a stacked bar of TBR level 2,
TBR level 1, TIR, TAR level 1 and TAR level 2 with their percentages. Bins without readings
are gaps, never filled. The y axis reaches at least the CGM sensor's upper limit
(clinical.CGM_SENSOR_MAX_MMOL_L, 22.2 mmol/L = 400 mg/dL).

The only module of remon that imports matplotlib, lazily and with its Agg canvas (no display,
no global pyplot state); it returns bytes and writes no file (the caller does). matplotlib
comes with the ``reports`` extra: ``pip install 'remon[reports]'``.
"""

from __future__ import annotations

import io
from typing import Final

import numpy as np
import numpy.typing as npt

from cloud_ingest.analytics.cgm_metrics import AgpProfile, CgmMetrics, format_glucose
from device_profiles.clinical import CGM_SENSOR_MAX_MMOL_L
from device_profiles.units import GLUCOSE_MG_DL_PER_MMOL_L

MATPLOTLIB_MISSING: Final = "matplotlib is needed for --agp: pip install 'remon[reports]'"

# Colours (remon default, the AGP report's usual palette).
_BAND_OUTER: Final = "#bcd3ea"
_BAND_INNER: Final = "#6f9fd0"
_MEDIAN: Final = "#1f4e8c"
_TARGET: Final = "#2e7d32"
_RANGE_COLOURS: Final = ("#8b1a1a", "#e53935", "#43a047", "#fbc02d", "#ef6c00")
_LABEL_COLOURS: Final = ("#8b1a1a", "#c62828", "#2e7d32", "#a07800", "#d84315")


class AgpUnavailableError(RuntimeError):
    """matplotlib is not installed."""


def require_matplotlib() -> None:
    """Raise :class:`AgpUnavailableError` with the install hint if matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise AgpUnavailableError(MATPLOTLIB_MISSING) from None


def _range_labels(m: CgmMetrics) -> list[str]:
    b = m.bands
    vl, lo, hi, vh = (format_glucose(x, b.unit) for x in (b.very_low, b.low, b.high, b.very_high))
    return [
        f"Very low < {vl}: {m.tbr_level2_percent:.1f} %",
        f"Low {vl} to < {lo}: {m.tbr_level1_percent:.1f} %",
        f"In range {lo}-{hi}: {m.tir_percent:.1f} %",
        f"High > {hi} to {vh}: {m.tar_level1_percent:.1f} %",
        f"Very high > {vh}: {m.tar_level2_percent:.1f} %",
    ]


def render_agp_png(
    profile: AgpProfile,
    metrics: CgmMetrics,
    *,
    subject: str,
    period: str,
    dpi: int = 100,
) -> bytes:
    """The AGP of one subject as PNG bytes. ``period`` is shown in the title as given."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise AgpUnavailableError(MATPLOTLIB_MISSING) from None
    if profile.unit != metrics.unit:
        raise ValueError("the profile and the metrics are in different units")
    for q in (5, 25, 50, 75, 95):
        if q not in profile.percentiles:
            raise ValueError(f"the AGP needs the {q}th percentile")

    unit = profile.unit
    # Close the day: the first bin again at 24:00; x at bin centres.
    x = (profile.bin_start_min + profile.bin_minutes / 2.0) / 60.0
    x = np.concatenate(([x[-1] - 24.0], x, [x[0] + 24.0]))

    def curve(q: int) -> npt.NDArray[np.float64]:
        c = profile.curve(q)
        return np.concatenate(([c[-1]], c, [c[0]]))

    p5, p25, p50, p75, p95 = (curve(q) for q in (5, 25, 50, 75, 95))
    sensor_max = CGM_SENSOR_MAX_MMOL_L.value * (
        GLUCOSE_MG_DL_PER_MMOL_L if unit == "mg/dL" else 1.0
    )
    top = float(np.nanmax(p95)) if np.isfinite(p95).any() else 0.0
    y_max = max(sensor_max, top * 1.05)

    fig = Figure(figsize=(11.0, 5.0), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(1, 2, width_ratios=(5.0, 1.6))
    ax = fig.add_subplot(grid[0, 0])
    bar = fig.add_subplot(grid[0, 1])

    ax.fill_between(x, p5, p95, color=_BAND_OUTER, lw=0, label="5-95th percentile")
    ax.fill_between(x, p25, p75, color=_BAND_INNER, lw=0, label="25-75th percentile")
    ax.plot(x, p50, color=_MEDIAN, lw=2.0, label="median")
    b = metrics.bands
    for level in (b.low, b.high):
        ax.axhline(level, color=_TARGET, lw=1.2, ls="--")
    ax.axhspan(b.low, b.high, color=_TARGET, alpha=0.06, lw=0)
    ax.set_xlim(0.0, 24.0)
    ax.set_ylim(0.0, y_max)
    ax.set_xticks(np.arange(0, 25, 3))
    ax.set_xticklabels([f"{h:02d}:00" for h in range(0, 25, 3)])
    ax.set_xlabel("time of day (local)")
    ax.set_ylabel(f"glucose ({unit})")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize="small", frameon=False)
    active = "n/a" if metrics.active_percent is None else f"{metrics.active_percent:.0f} %"
    ax.set_title(
        f"AGP - {subject} - {period}\n"
        f"{metrics.readings} readings, {metrics.days:.1f} days, sensor active {active}; "
        f"target {format_glucose(b.low, unit)}-{format_glucose(b.high, unit)} {unit}",
        fontsize="medium",
    )

    shares = (
        metrics.tbr_level2_percent,
        metrics.tbr_level1_percent,
        metrics.tir_percent,
        metrics.tar_level1_percent,
        metrics.tar_level2_percent,
    )
    bottom = 0.0
    for share, colour in zip(shares, _RANGE_COLOURS, strict=True):
        bar.bar(0.0, share, bottom=bottom, width=0.6, color=colour, edgecolor="white", lw=0.5)
        bottom += share
    for i, (label, colour) in enumerate(zip(_range_labels(metrics), _LABEL_COLOURS, strict=True)):
        bar.text(0.42, 10.0 + 20.0 * i, label, va="center", fontsize="small", color=colour)
    bar.set_xlim(-0.4, 2.6)
    bar.set_ylim(0.0, 100.0)
    bar.set_xticks([])
    bar.set_ylabel("% of readings")
    bar.set_title(f"time in ranges ({unit})", fontsize="medium")
    for side in ("top", "right", "bottom"):
        bar.spines[side].set_visible(False)

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()
