"""Pure SVG charts for the care-team web UI: PEF diary, AGP, TIR bar, home BP, dose timeline.

Each public function takes analysed data (:mod:`cloud_ingest.analytics`) and returns one
self-contained ``<svg>`` string. No I/O, no scripts, no external references and no ``style``
attributes (presentation attributes only), so the charts render under a Content-Security-Policy
that forbids inline styles.

Accessibility (WCAG 2.1 AA): the root has ``role="img"`` and ``aria-labelledby`` naming its
``<title>`` and ``<desc>``; the desc says in words what the chart shows. Every colour that
carries meaning (lines, markers, segments, text) has at least 3:1 contrast against white, text at
least 4.5:1. Light fills (class ``area``, ``shade``, ``grid``) are backgrounds whose meaning is
also carried by a stroked edge or a text label. Series differ by marker shape or dash as well as
by colour, and a text legend names them. The ``viewBox`` is fixed and ``width="100%"``: the
chart scales to its container (768 px tablets included) and keeps its aspect ratio.

Localisation: ``text`` maps label keys to words; the ``*_TEXT_EN`` dicts are the English
defaults and fill any key the caller leaves out. ``{name}`` placeholders are replaced by plain
substitution (not ``str.format``: a translation cannot reach attributes or raise).
``num(value, decimals)``, ``day(date)`` and ``clock(minutes after midnight)`` format numbers,
dates and times; ``num_en``, ``day_en`` and ``clock_en`` are simple English defaults. All text
is escaped.

Geometry, for tests and tooling: each plot area is a ``<g class="plot">`` with ``data-x0
data-x1`` (pixels) for ``data-vmin data-vmax`` (x values) and ``data-y0 data-y1`` (pixels, y0
the bottom) for ``data-ymin data-ymax`` (y values); both mappings are linear. Each series is an
element with ``data-series``; lines are ``<polyline points="x,y ...">`` and point markers are
``<g class="pt" transform="translate(x y)">``.

Empty data gives a small "no data" chart (``data-empty="true"``) in the caller's words, never an
exception. Values are drawn as given: axes grow to hold them, nothing is clamped.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Final, Literal, TypeAlias
from zoneinfo import ZoneInfo

import numpy as np

from cloud_ingest.analytics.bp import BpReading, HomeBpSummary
from cloud_ingest.analytics.cgm_metrics import AgpProfile, CgmMetrics, bands_for
from cloud_ingest.analytics.pef_diary import DayResult, DiaryReport
from device_profiles.clinical import (
    HOME_BP_THRESHOLD_DIA,
    HOME_BP_THRESHOLD_SYS,
    GlucoseBands,
)

__all__ = [
    "AGP_TEXT_EN",
    "BP_TEXT_EN",
    "DOSE_STATUSES",
    "DOSE_TEXT_EN",
    "PEF_TEXT_EN",
    "SPARKLINE_TEXT_EN",
    "TIR_TARGETS",
    "TIR_TEXT_EN",
    "ClockFormat",
    "DayFormat",
    "DoseMark",
    "DoseStatus",
    "NumFormat",
    "TirTargets",
    "agp_svg",
    "bp_series_svg",
    "clock_en",
    "day_en",
    "dose_timeline_svg",
    "num_en",
    "pef_diary_svg",
    "sparkline_svg",
    "tir_bar_svg",
]

#: ``num(value, decimals)`` → "7.5" (English) or "7,5" (Finnish).
NumFormat: TypeAlias = Callable[[float, int], str]
#: ``day(date)`` → a short axis label: "4 Dec" (English) or "4.12." (Finnish).
DayFormat: TypeAlias = Callable[[date], str]
#: ``clock(minutes after midnight)`` → "06:00" (English) or "6.00" (Finnish).
ClockFormat: TypeAlias = Callable[[int], str]

DoseStatus: TypeAlias = Literal["taken", "late", "missed", "due"]
DOSE_STATUSES: Final[tuple[DoseStatus, ...]] = ("taken", "late", "missed", "due")

_SVG_NS: Final = "http://www.w3.org/2000/svg"
_FONT: Final = "system-ui, -apple-system, Segoe UI, Roboto, sans-serif"
_WIDTH: Final = 800.0
_FONT_SIZE: Final = 12.0

# Colours (contrast against white in brackets; >= 3:1 for graphics, >= 4.5:1 for text).
_INK: Final = "#1a1a1a"  # text (17.4)
_INK_SOFT: Final = "#555555"  # secondary text (7.5)
_AXIS: Final = "#767676"  # axis lines, plot frame (4.5)
_GRID: Final = "#e2e2e2"  # decorative grid (class grid)
_WHITE: Final = "#ffffff"
_SHADE: Final = "#fde7b0"  # background of days meeting a PEF criterion (class shade)
_MORNING: Final = "#1f5fa8"  # (6.4)
_EVENING: Final = "#b4490f"  # (5.4)
_TREND: Final = "#4d4d4d"  # (8.5)
_PB: Final = "#2e6b30"  # (6.4)
_AGP_OUTER_FILL: Final = "#dce8f6"  # class area; edges _AGP_OUTER
_AGP_OUTER: Final = "#4a74a8"  # (4.8)
_AGP_INNER_FILL: Final = "#a9c4e6"  # class area; edges _AGP_INNER
_AGP_INNER: Final = "#2b5d99"  # (6.7)
_AGP_MEDIAN: Final = "#0b2e59"  # (13.6)
_TARGET: Final = "#2e7d32"  # (5.1)
_TARGET_FILL: Final = "#eef7ef"  # class area
_OVERLAY: Final = "#7a7a7a"  # (4.3)
_SYSTOLIC: Final = "#b2182b"  # (6.9)
_DIASTOLIC: Final = "#2166ac"  # (5.9)
_THRESHOLD: Final = "#595959"  # (7.0)
_DISCARDED_FILL: Final = "#eeeeee"  # class shade
#: Consensus colours, darkened to >= 3:1: very low, low, in range, high, very high.
_TIR_COLOURS: Final = ("#8b0000", "#d32f2f", "#2e7d32", "#b8860b", "#c45100")
_DOSE_COLOURS: Final[dict[DoseStatus, str]] = {
    "taken": "#1a7f37",  # (5.1)
    "late": "#b36b00",  # (4.2)
    "missed": "#c62828",  # (5.6)
    "due": "#6b6b6b",  # (5.3)
}

_MONTHS: Final = (
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
)


# --------------------------------------------------------------------------- default formats


def num_en(value: float, decimals: int = 0) -> str:
    """English number: ``num_en(7.46, 1)`` → "7.5" (no grouping, no negative zero)."""
    d = max(0, min(int(decimals), 6))
    s = f"{value:.{d}f}"
    if s.startswith("-") and s.strip("-0.") == "":
        s = s[1:]
    return s


def day_en(d: date) -> str:
    """English short date: "4 Dec"."""
    return f"{d.day} {_MONTHS[d.month - 1]}"


def clock_en(minutes: int) -> str:
    """24-hour clock from minutes after midnight: 390 → "06:30", 1440 → "24:00"."""
    m = int(minutes)
    return f"{m // 60:02d}:{m % 60:02d}"


# --------------------------------------------------------------------------- English words

PEF_TEXT_EN: Final[Mapping[str, str]] = {
    "title": "PEF diary: best blow of each session (L/min)",
    "desc": (
        "{days} days from {first} to {last}, {with_data} with blows. Mean pre-BD best: morning "
        "{am} L/min, evening {pm} L/min. Diurnal variation criterion met on {dv_days} days, "
        "BD response criterion on {bd_days} days ({required} days needed)."
    ),
    "desc_pb": " Personal best {pb} L/min.",
    "no_data": "No PEF diary for this period.",
    "axis_y": "PEF (L/min)",
    "morning_pre": "morning, before BD",
    "evening_pre": "evening, before BD",
    "morning_post": "morning, after BD",
    "evening_post": "evening, after BD",
    "pre_line": "pre-BD values",
    "personal_best": "personal best {value}",
    "zone_line": "{percent} % of personal best",
    "legend_diurnal": "var: diurnal variation ≥ {percent} % and ≥ {l_min} L/min",
    "legend_bd": "BD: BD response ≥ {percent} % and ≥ {l_min} L/min",
    "label_diurnal": "var {value} %",
    "label_bd": "BD +{value} %",
    "point": "{date} {series}: {value} L/min",
    "none": "-",
}

AGP_TEXT_EN: Final[Mapping[str, str]] = {
    "title": "Ambulatory glucose profile ({unit})",
    "desc": (
        "{readings} readings folded onto one day in {bin} min bins. Median from {min} to {max} "
        "{unit}, lowest at {t_min}, highest at {t_max}. Target range {low}-{high} {unit}."
    ),
    "desc_no_median": "{readings} readings folded onto one day in {bin} min bins.",
    "desc_days": " {n} single days drawn as thin lines.",
    "no_data": "No glucose data for this period.",
    "axis_y": "Glucose ({unit})",
    "band": "{low}-{high} % of readings",
    "median": "median",
    "target": "target range {low}-{high} {unit}",
    "day": "single days",
}

TIR_TEXT_EN: Final[Mapping[str, str]] = {
    "title": "Time in ranges",
    "desc": (
        "Time in range {tir} (target > {tir_target} %). Below range {tbr} (very low {vl}), "
        "above range {tar} (very high {vh}). {readings} readings over {days} days."
    ),
    "no_data": "No glucose data for this period.",
    "very_low": "Very low",
    "low": "Low",
    "in_range": "In range",
    "high": "High",
    "very_high": "Very high",
    "range_below": "< {value} {unit}",
    "range_between": "{low}-{high} {unit}",
    "range_above": "> {value} {unit}",
    "percent": "{value} %",
    "percent_below": "< {value} %",
    "percent_above": "> {value} %",
    "target_below": "target < {value} %",
    "target_above": "target > {value} %",
    "below_total": "Below range (low and very low): {value}, target < {target} %",
    "above_total": "Above range (high and very high): {value}, target < {target} %",
}

BP_TEXT_EN: Final[Mapping[str, str]] = {
    "title": "Blood pressure (mmHg)",
    "desc": (
        "{n} readings from {first} to {last}: systolic {sys_min}-{sys_max}, diastolic "
        "{dia_min}-{dia_max} mmHg. Home threshold {thr_sys}/{thr_dia} mmHg."
    ),
    "desc_average": " Protocol average {sys}/{dia} mmHg from {used} readings, {status}.",
    "status_above": "at or above the threshold",
    "status_below": "below the threshold",
    "no_data": "No blood pressure readings for this period.",
    "axis_y": "mmHg",
    "systolic": "systolic",
    "diastolic": "diastolic",
    "threshold": "home threshold {sys}/{dia}",
    "threshold_line": "threshold {value}",
    "average": "protocol average {sys}/{dia}",
    "average_line": "average {value}",
    "discarded": "day 1 (not averaged)",
    "point": "{date} {time} {series}: {value} mmHg",
}

DOSE_TEXT_EN: Final[Mapping[str, str]] = {
    "title": "Medication doses",
    "desc": (
        "{days} days from {first} to {last}: {taken} taken, {late} late, {missed} missed, "
        "{due} due."
    ),
    "no_data": "No scheduled doses for this period.",
    "taken": "taken",
    "late": "late",
    "missed": "missed",
    "due": "due",
    "legend": "{status} ({count})",
    "point": "{date} {time}: {status}",
    "point_at": "{date} {time}: {status}, at {at}",
}

SPARKLINE_TEXT_EN: Final[Mapping[str, str]] = {
    "title": "Recent readings",
    "desc": "{n} readings from {first} to {last}; latest {latest}{unit}, range {min}-{max}{unit}.",
    "no_data": "No readings.",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class TirTargets:
    """Consensus targets for the time in ranges, % of readings (DOMAIN.md §2, Battelino 2019)."""

    very_low_below: float = 1.0
    below_range_below: float = 4.0  # TBR total (low and very low)
    in_range_above: float = 70.0
    above_range_below: float = 25.0  # TAR total (high and very high)
    very_high_below: float = 5.0
    source: str = "DOMAIN.md §2 CGM consensus targets (Battelino 2019)"


#: The standard targets (older or high-risk people: pass your own :class:`TirTargets`).
TIR_TARGETS: Final = TirTargets()


@dataclass(frozen=True, slots=True)
class DoseMark:
    """One scheduled dose: when it was due, its status, and when it was taken (if known).

    Naive datetimes are read in the chart's time zone; aware ones are converted to it.
    """

    scheduled: datetime
    status: DoseStatus
    at: datetime | None = None


# --------------------------------------------------------------------------- helpers


class _Words:
    """The caller's words with the English defaults behind them; ``{name}`` substitution."""

    def __init__(self, text: Mapping[str, str], defaults: Mapping[str, str]) -> None:
        self._text = text
        self._defaults = defaults

    def __call__(self, key: str, **values: str) -> str:
        t = self._text.get(key)
        template = t if isinstance(t, str) else self._defaults[key]
        return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), template)


def _esc(s: str) -> str:
    return html.escape(s, quote=True)


def _f(x: float) -> str:
    """A coordinate: at most 2 decimals, no trailing zeros; non-finite as 0."""
    if not math.isfinite(x):
        return "0"
    s = f"{x:.2f}".rstrip("0").rstrip(".")
    return "0" if s in ("", "-0") else s


def _v(x: float) -> str:
    """A data-attribute value at full precision."""
    return repr(float(x)) if math.isfinite(x) else "0"


Attrs: TypeAlias = Mapping[str, str | float | int | None]


def _tag(name: str, attrs: Attrs | None = None, body: str | None = None) -> str:
    """An element; attribute values are escaped, ``body`` is markup already escaped."""
    parts = [name]
    for k, val in (attrs or {}).items():
        if val is None:
            continue
        s = _f(val) if isinstance(val, float) else str(val)
        parts.append(f'{k}="{_esc(s)}"')
    head = "<" + " ".join(parts)
    return f"{head}/>" if body is None else f"{head}>{body}</{name}>"


def _text(
    x: float,
    y: float,
    s: str,
    *,
    anchor: str = "start",
    size: float = _FONT_SIZE,
    fill: str = _INK,
    weight: str | None = None,
    halo: bool = False,
    attrs: Attrs | None = None,
) -> str:
    """Text; ``halo`` draws a white outline under it, for labels that sit on lines."""
    a: dict[str, str | float | int | None] = {
        "x": x,
        "y": y,
        "text-anchor": anchor,
        "font-size": float(size),
        "fill": fill,
        "font-weight": weight,
    }
    if halo:
        a.update(
            {
                "stroke": _WHITE,
                "stroke-width": 3.0,
                "stroke-linejoin": "round",
                "paint-order": "stroke",
            }
        )
    a.update(attrs or {})
    return _tag("text", a, _esc(s))


def _title(s: str) -> str:
    return _tag("title", None, _esc(s))


def _tick_anchor(minute: int) -> str:
    """Hour labels: the one at 24:00 ends at the plot's right edge instead of overflowing."""
    return "end" if minute >= 1440 else "middle"


def _text_width(s: str, size: float = _FONT_SIZE) -> float:
    """A generous estimate of the rendered width (system sans-serif, ~0.6 em a character)."""
    return len(s) * size * 0.6


def _line(x1: float, y1: float, x2: float, y2: float, stroke: str, **extra: str | float) -> str:
    a: dict[str, str | float | int | None] = {
        "x1": x1,
        "y1": y1,
        "x2": x2,
        "y2": y2,
        "stroke": stroke,
    }
    a.update({k.replace("_", "-"): v for k, v in extra.items()})
    return _tag("line", a)


def _polyline(points: Sequence[tuple[float, float]], attrs: Attrs) -> str:
    pts = " ".join(f"{_f(x)},{_f(y)}" for x, y in points)
    a: dict[str, str | float | int | None] = {"points": pts, "fill": "none"}
    a.update(attrs)
    return _tag("polyline", a)


def _runs(points: Iterable[tuple[float, float] | None]) -> list[list[tuple[float, float]]]:
    """Consecutive points between ``None`` breaks."""
    out: list[list[tuple[float, float]]] = [[]]
    for p in points:
        if p is None:
            if out[-1]:
                out.append([])
        else:
            out[-1].append(p)
    return [r for r in out if r]


def _chart_id(chart_id: str | None, kind: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_-]", "-", chart_id or kind)
    return s if s[:1].isalpha() else f"c-{s}"


def _svg(
    *,
    kind: str,
    cid: str,
    width: float,
    height: float,
    title: str,
    desc: str,
    body: Iterable[str],
    empty: bool = False,
) -> str:
    tid, did = f"{cid}-title", f"{cid}-desc"
    head = _tag(
        "svg",
        {
            "xmlns": _SVG_NS,
            "viewBox": f"0 0 {_f(width)} {_f(height)}",
            "width": "100%",
            "role": "img",
            "aria-labelledby": f"{tid} {did}",
            "id": cid,
            "class": f"chart chart-{kind}",
            "data-chart": kind,
            "data-empty": "true" if empty else None,
            "font-family": _FONT,
            "font-size": _FONT_SIZE,
        },
        "",
    ).removesuffix("</svg>")
    return "".join(
        [
            head,
            _tag("title", {"id": tid}, _esc(title)),
            _tag("desc", {"id": did}, _esc(desc)),
            *body,
            "</svg>",
        ]
    )


def _no_data(*, kind: str, cid: str, title: str, message: str) -> str:
    w, h = _WIDTH, 96.0
    body = [
        _tag(
            "rect",
            {
                "x": 1.0,
                "y": 1.0,
                "width": w - 2,
                "height": h - 2,
                "fill": _WHITE,
                "stroke": _AXIS,
                "stroke-dasharray": "4 4",
            },
        ),
        _text(w / 2, 30.0, title, anchor="middle", fill=_INK_SOFT),
        _text(w / 2, 60.0, message, anchor="middle", size=14.0, weight="bold"),
    ]
    return _svg(
        kind=kind, cid=cid, width=w, height=h, title=title, desc=message, body=body, empty=True
    )


@dataclass(frozen=True, slots=True)
class _Frame:
    """A plot area: linear maps from values to pixels (y0 is the bottom pixel)."""

    x0: float
    x1: float
    vmin: float
    vmax: float
    y0: float
    y1: float
    ymin: float
    ymax: float

    def x(self, v: float) -> float:
        return self.x0 + _ratio(v, self.vmin, self.vmax) * (self.x1 - self.x0)

    def y(self, v: float) -> float:
        return self.y0 + _ratio(v, self.ymin, self.ymax) * (self.y1 - self.y0)

    def attrs(self) -> dict[str, str | float | int | None]:
        return {
            "class": "plot",
            "data-x0": _v(self.x0),
            "data-x1": _v(self.x1),
            "data-vmin": _v(self.vmin),
            "data-vmax": _v(self.vmax),
            "data-y0": _v(self.y0),
            "data-y1": _v(self.y1),
            "data-ymin": _v(self.ymin),
            "data-ymax": _v(self.ymax),
        }

    def frame_rect(self) -> str:
        return _tag(
            "rect",
            {
                "x": self.x0,
                "y": self.y1,
                "width": self.x1 - self.x0,
                "height": self.y0 - self.y1,
                "fill": "none",
                "stroke": _AXIS,
            },
        )


def _ratio(v: float, lo: float, hi: float) -> float:
    """(v - lo) / (hi - lo), computed on halves so that no finite input overflows."""
    den = hi / 2 - lo / 2
    if den == 0 or not math.isfinite(den):
        return 0.5
    r = (v / 2 - lo / 2) / den
    return r if math.isfinite(r) else 0.5


def _nice_step(raw: float) -> float:
    if not (math.isfinite(raw) and raw > 1e-300):
        return 1.0 if not math.isfinite(raw) or raw <= 0 else 1e-300
    base = 10.0 ** math.floor(math.log10(raw))
    for m in (1.0, 2.0, 2.5, 5.0):
        if raw <= m * base * (1 + 1e-9):
            return m * base
    return 10.0 * base


def _axis(lo: float, hi: float, *, ticks: int = 5) -> tuple[float, float, list[float]]:
    """A rounded value range holding [lo, hi] and its tick values (at most ~2 x ``ticks``)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = 0.0, 1.0
    lo, hi = min(lo, hi), max(lo, hi)
    if hi / 2 - lo / 2 <= abs(hi) * 1e-12:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    step = _nice_step(hi / ticks - lo / ticks)
    ymin = math.floor(lo / step) * step
    ymax = math.ceil(hi / step) * step
    if not math.isfinite(ymin) or ymin > lo:
        ymin = lo
    if not math.isfinite(ymax) or ymax < hi:
        ymax = hi
    out: list[float] = []
    for k in range(4 * ticks + 2):
        v = ymin + k * step
        if v > ymax + step * 1e-6 or not math.isfinite(v):
            break
        if not out or v > out[-1]:
            out.append(v)
    return ymin, ymax, out


def _decimals(step: float) -> int:
    """Decimals a tick label needs for ticks ``step`` apart (0 for 1, 10, 50; 1 for 2.5...)."""
    for d in range(4):
        if abs(step * 10**d - round(step * 10**d)) < 1e-6 * max(1.0, step * 10**d):
            return d
    return 4


def _y_axis(
    fr: _Frame, ticks: Sequence[float], *, num: NumFormat, decimals: int, label: str
) -> list[str]:
    out = [
        _tag(
            "g",
            {"class": "grid"},
            "".join(_line(fr.x0, fr.y(v), fr.x1, fr.y(v), _GRID) for v in ticks),
        )
    ]
    for v in ticks:
        out.append(_text(fr.x0 - 6, fr.y(v) + 4, num(v, decimals), anchor="end", size=11.0))
    cy = (fr.y0 + fr.y1) / 2
    out.append(
        _text(
            14.0,
            cy,
            label,
            anchor="middle",
            size=11.0,
            attrs={"transform": f"rotate(-90 14 {_f(cy)})"},
        )
    )
    return out


# --------------------------------------------------------------------------- markers

Shape: TypeAlias = Literal[
    "circle", "square", "triangle-up", "triangle-down", "cross", "ring", "check", "diamond"
]


def _shape(shape: Shape, colour: str, *, filled: bool = True, r: float = 4.5) -> str:
    """A marker drawn around the origin."""
    fill = colour if filled else _WHITE
    sw = 1.6
    if shape == "circle":
        return _tag("circle", {"r": r, "fill": fill, "stroke": colour, "stroke-width": sw})
    if shape == "ring":
        return _tag("circle", {"r": r, "fill": _WHITE, "stroke": colour, "stroke-width": 2.2})
    if shape == "check":
        tick = f"M{_f(-r * 0.5)},0 L{_f(-r * 0.1)},{_f(r * 0.45)} L{_f(r * 0.55)},{_f(-r * 0.45)}"
        return _tag("circle", {"r": r + 1, "fill": colour, "stroke": colour}) + _tag(
            "path", {"d": tick, "fill": "none", "stroke": _WHITE, "stroke-width": 1.8}
        )
    if shape == "cross":
        d = f"M{_f(-r)},{_f(-r)} L{_f(r)},{_f(r)} M{_f(-r)},{_f(r)} L{_f(r)},{_f(-r)}"
        return _tag("path", {"d": d, "fill": "none", "stroke": colour, "stroke-width": 2.6})
    if shape == "square":
        s = r * 0.9
        return _tag(
            "rect",
            {
                "x": -s,
                "y": -s,
                "width": 2 * s,
                "height": 2 * s,
                "fill": fill,
                "stroke": colour,
                "stroke-width": sw,
            },
        )
    if shape == "diamond":
        s = r * 1.25
        d = f"M0,{_f(-s)} L{_f(s)},0 L0,{_f(s)} L{_f(-s)},0 Z"
    elif shape == "triangle-up":
        s = r * 1.25
        d = f"M0,{_f(-s)} L{_f(s)},{_f(s * 0.8)} L{_f(-s)},{_f(s * 0.8)} Z"
    else:  # triangle-down
        s = r * 1.25
        d = f"M0,{_f(s)} L{_f(s)},{_f(-s * 0.8)} L{_f(-s)},{_f(-s * 0.8)} Z"
    return _tag("path", {"d": d, "fill": fill, "stroke": colour, "stroke-width": sw})


def _point(
    shape: Shape,
    x: float,
    y: float,
    colour: str,
    *,
    filled: bool = True,
    r: float = 4.5,
    title: str | None = None,
    attrs: Attrs | None = None,
) -> str:
    a: dict[str, str | float | int | None] = {
        "class": "pt",
        "transform": f"translate({_f(x)} {_f(y)})",
    }
    a.update(attrs or {})
    body = _shape(shape, colour, filled=filled, r=r) + (_title(title) if title else "")
    return _tag("g", a, body)


@dataclass(frozen=True, slots=True)
class _Key:
    """One legend entry: a sample drawn in a 28 x 14 box, and its words."""

    key: str
    label: str
    sample: Callable[[float, float], str]  # (left, centre y) -> markup


def _key_line(
    colour: str, *, dash: str | None = None, width: float = 1.6
) -> Callable[[float, float], str]:
    def draw(x: float, y: float) -> str:
        return _line(x, y, x + 28, y, colour, stroke_width=width, stroke_dasharray=dash or "none")

    return draw


def _key_marker(
    shape: Shape,
    colour: str,
    *,
    filled: bool = True,
    line: str | None = None,
    dash: str | None = None,
) -> Callable[[float, float], str]:
    def draw(x: float, y: float) -> str:
        base = _key_line(line, dash=dash)(x, y) if line else ""
        return base + _point(shape, x + 14, y, colour, filled=filled)

    return draw


def _key_swatch(
    fill: str, *, stroke: str | None = None, dash: str | None = None
) -> Callable[[float, float], str]:
    def draw(x: float, y: float) -> str:
        return _tag(
            "rect",
            {
                "class": "area",
                "x": x,
                "y": y - 6,
                "width": 28.0,
                "height": 12.0,
                "fill": fill,
                "stroke": stroke or "none",
                "stroke-dasharray": dash,
            },
        )

    return draw


def _legend(keys: Sequence[_Key], *, x0: float, y: float, width: float) -> tuple[str, float]:
    """Legend entries laid out left to right, wrapping; returns the markup and its height."""
    row_h = 20.0
    x, rows = x0, 1
    parts: list[str] = []
    for k in keys:
        w = 28 + 6 + _text_width(k.label) + 18
        if x > x0 and x + w > x0 + width:
            x, rows = x0, rows + 1
        cy = y + (rows - 1) * row_h
        parts.append(
            _tag(
                "g",
                {"data-legend": k.key},
                k.sample(x, cy) + _text(x + 34, cy + 4, k.label),
            )
        )
        x += w
    return _tag("g", {"class": "legend"}, "".join(parts)), rows * row_h


def _zone(tz: str | tzinfo | None) -> tzinfo:
    if tz is None:
        return UTC
    if isinstance(tz, str):
        return ZoneInfo(tz)
    return tz


def _local(t: datetime, zone: tzinfo) -> datetime:
    return t.replace(tzinfo=zone) if t.tzinfo is None else t.astimezone(zone)


def _minute_of_day(t: datetime) -> float:
    return t.hour * 60 + t.minute + t.second / 60 + t.microsecond / 60e6


def _mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def _dec(x: float) -> int:
    """Decimals to show a criterion figure: 0 for 20, 1 for 15.5."""
    return 0 if float(x).is_integer() else 1


# --------------------------------------------------------------------------- 1. PEF diary

#: (key, attribute of DayResult, colour, filled, shape, x offset in the day)
_PEF_SERIES: Final[tuple[tuple[str, str, str, bool, Shape, float], ...]] = (
    ("morning-pre", "morning_pre_best", _MORNING, True, "circle", 0.2),
    ("morning-post", "morning_post_best", _MORNING, False, "circle", 0.3),
    ("evening-pre", "evening_pre_best", _EVENING, True, "square", 0.7),
    ("evening-post", "evening_post_best", _EVENING, False, "square", 0.8),
)


def _pef_value(d: DayResult, attr: str) -> float | None:
    v = getattr(d, attr)
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else None


def pef_diary_svg(
    report: DiaryReport | None,
    *,
    text: Mapping[str, str] = PEF_TEXT_EN,
    num: NumFormat = num_en,
    day: DayFormat = day_en,
    chart_id: str | None = None,
) -> str:
    """The PEF diary as clinicians read it: per day the morning and evening session bests.

    x value: the day as ``date.toordinal()``; within a day the morning pre-BD best sits at
    +0.2, morning post-BD at +0.3, evening pre-BD at +0.7, evening post-BD at +0.8. Pre-BD
    markers are filled, post-BD hollow; morning circles (blue), evening squares (orange). A
    solid line joins the pre-BD values in session order and breaks at a missing session. The
    personal best and the zone limits (``report.criteria``) are dashed lines; days meeting the
    diurnal-variation or BD-response criterion are shaded and labelled with the day's figure.
    Series: ``morning-pre``, ``morning-post``, ``evening-pre``, ``evening-post``, ``pre-line``,
    ``personal-best``, ``zone-<percent>``.
    """
    w = _Words(text, PEF_TEXT_EN)
    cid = _chart_id(chart_id, "pef-diary")
    values = [
        v
        for d in (report.days if report else ())
        for _, attr, *_ in _PEF_SERIES
        if (v := _pef_value(d, attr)) is not None
    ]
    if report is None or not report.days or not values:
        return _no_data(kind="pef-diary", cid=cid, title=w("title"), message=w("no_data"))
    c = report.criteria
    pb = report.personal_best_l_min
    pb_ok = pb is not None and math.isfinite(pb) and pb > 0
    axis_values = [*values, pb] if pb_ok and pb is not None else values
    ymin, ymax, ticks = _axis(min(axis_values), max(axis_values))
    first = report.days[0].date
    n = len(report.days)
    left, right, top, plot_h = 60.0, 16.0, 30.0, 260.0
    fr = _Frame(
        x0=left,
        x1=_WIDTH - right,
        vmin=float(first.toordinal()),
        vmax=float(first.toordinal() + n),
        y0=top + plot_h,
        y1=top,
        ymin=ymin,
        ymax=ymax,
    )
    per_day = (fr.x1 - fr.x0) / n
    body: list[str] = []

    # shaded days (under everything)
    labelled = per_day >= 44
    shade: list[str] = []
    for d in report.days:
        crit = [k for k, met in (("diurnal", d.diurnal_meets), ("bd", d.bd_meets)) if met]
        if not crit:
            continue
        x = fr.x(float(d.date.toordinal()))
        labels: list[str] = []
        if d.diurnal_meets and d.diurnal_variation_percent is not None:
            labels.append(w("label_diurnal", value=num(d.diurnal_variation_percent, 0)))
        if d.bd_meets and d.bd_response_percent is not None:
            labels.append(w("label_bd", value=num(d.bd_response_percent, 0)))
        inner = _title(f"{day(d.date)}: " + ", ".join(labels)) if labels else ""
        shade.append(
            _tag(
                "rect",
                {
                    "class": "shade",
                    "data-date": d.date.isoformat(),
                    "data-criterion": " ".join(crit),
                    "x": x,
                    "y": fr.y1,
                    "width": per_day,
                    "height": fr.y0 - fr.y1,
                    "fill": _SHADE,
                },
                inner,
            )
        )
        if labelled:
            for i, lab in enumerate(labels):
                shade.append(
                    _text(
                        x + per_day / 2,
                        fr.y1 + 11 + 11 * i,
                        lab,
                        anchor="middle",
                        size=9.5,
                        halo=True,
                        attrs={"class": "shade-label", "data-date": d.date.isoformat()},
                    )
                )
    body.append(_tag("g", {"class": "shades"}, "".join(shade)))
    body += _y_axis(
        fr,
        ticks,
        num=num,
        decimals=_decimals(ticks[1] - ticks[0]) if len(ticks) > 1 else 0,
        label=w("axis_y"),
    )

    # day separators and labels
    every = max(1, math.ceil((_text_width(day(first), 11.0) + 8) / per_day))
    seps, labels_x = [], []
    for i, d in enumerate(report.days):
        x = fr.x(float(d.date.toordinal()))
        if i:
            seps.append(_line(x, fr.y1, x, fr.y0, _GRID))
        if i % every == 0:
            labels_x.append(
                _text(
                    x + per_day / 2,
                    fr.y0 + 16,
                    day(d.date),
                    anchor="middle",
                    size=11.0,
                    attrs={"data-date": d.date.isoformat()},
                )
            )
    body.append(_tag("g", {"class": "grid"}, "".join(seps)))
    body.append(_tag("g", {"class": "x-labels"}, "".join(labels_x)))

    plot: list[str] = []
    # personal best and zone lines
    if pb_ok and pb is not None:
        for key, val, label in (
            ("personal-best", pb, w("personal_best", value=num(pb, 0))),
            (
                f"zone-{_f(c.zone_green_percent)}",
                pb * c.zone_green_percent / 100,
                w("zone_line", percent=num(c.zone_green_percent, _dec(c.zone_green_percent))),
            ),
            (
                f"zone-{_f(c.zone_red_percent)}",
                pb * c.zone_red_percent / 100,
                w("zone_line", percent=num(c.zone_red_percent, _dec(c.zone_red_percent))),
            ),
        ):
            if not ymin <= val <= ymax:
                continue
            y = fr.y(val)
            dash = "6 3" if key == "personal-best" else "2 3"
            plot.append(
                _tag(
                    "g",
                    {"data-series": key},
                    _line(fr.x0, y, fr.x1, y, _PB, stroke_width=1.5, stroke_dasharray=dash)
                    + _text(
                        fr.x1 - 4,
                        y - 4,
                        label,
                        anchor="end",
                        size=10.5,
                        fill=_PB,
                        halo=True,
                    ),
                )
            )
    # pre-BD line, broken at a missing session
    slots: list[tuple[float, float] | None] = []
    for d in report.days:
        for _, attr, _, _, _, off in (_PEF_SERIES[0], _PEF_SERIES[2]):
            v = _pef_value(d, attr)
            slots.append(None if v is None else (fr.x(d.date.toordinal() + off), fr.y(v)))
    plot.append(
        _tag(
            "g",
            {"data-series": "pre-line"},
            "".join(
                _polyline(
                    run,
                    {
                        "stroke": _TREND,
                        "stroke-width": 1.6,
                        "stroke-linejoin": "round",
                        "stroke-linecap": "round",
                    },
                )
                for run in _runs(slots)
            ),
        )
    )
    # pre -> post links (the BD response)
    links: list[str] = []
    for d in report.days:
        for pre, post in ((_PEF_SERIES[0], _PEF_SERIES[1]), (_PEF_SERIES[2], _PEF_SERIES[3])):
            a, b = _pef_value(d, pre[1]), _pef_value(d, post[1])
            if a is not None and b is not None:
                o = d.date.toordinal()
                links.append(
                    _line(
                        fr.x(o + pre[5]),
                        fr.y(a),
                        fr.x(o + post[5]),
                        fr.y(b),
                        pre[2],
                        stroke_width=1.0,
                        stroke_dasharray="2 2",
                    )
                )
    plot.append(_tag("g", {"class": "links"}, "".join(links)))
    for key, attr, colour, filled, shape, off in _PEF_SERIES:
        label = w(key.replace("-", "_"))
        pts = []
        for d in report.days:
            v = _pef_value(d, attr)
            if v is None:
                continue
            pts.append(
                _point(
                    shape,
                    fr.x(d.date.toordinal() + off),
                    fr.y(v),
                    colour,
                    filled=filled,
                    title=w("point", date=day(d.date), series=label, value=num(v, 0)),
                    attrs={"data-date": d.date.isoformat()},
                )
            )
        plot.append(_tag("g", {"data-series": key}, "".join(pts)))
    body.append(_tag("g", fr.attrs(), "".join(plot)))
    body.append(fr.frame_rect())

    keys = [
        _Key(k, w(k.replace("-", "_")), _key_marker(shape, colour, filled=filled))
        for k, _, colour, filled, shape, _ in _PEF_SERIES
    ]
    keys.append(_Key("pre-line", w("pre_line"), _key_line(_TREND)))
    if pb_ok and pb is not None:
        keys.append(
            _Key(
                "personal-best",
                w("personal_best", value=num(pb, 0)),
                _key_line(_PB, dash="6 3", width=1.5),
            )
        )
    if any(d.diurnal_meets for d in report.days):
        keys.append(
            _Key(
                "shade-diurnal",
                w(
                    "legend_diurnal",
                    percent=num(c.diurnal_percent, _dec(c.diurnal_percent)),
                    l_min=num(c.diurnal_l_min, _dec(c.diurnal_l_min)),
                ),
                _key_swatch(_SHADE, stroke=_AXIS),
            )
        )
    if any(d.bd_meets for d in report.days):
        keys.append(
            _Key(
                "shade-bd",
                w(
                    "legend_bd",
                    percent=num(c.bd_percent, _dec(c.bd_percent)),
                    l_min=num(c.bd_l_min, _dec(c.bd_l_min)),
                ),
                _key_swatch(_SHADE, stroke=_AXIS),
            )
        )
    legend, legend_h = _legend(keys, x0=left, y=fr.y0 + 42, width=_WIDTH - left - right)
    body.append(legend)

    am = _mean([v for d in report.days if (v := _pef_value(d, "morning_pre_best")) is not None])
    pm = _mean([v for d in report.days if (v := _pef_value(d, "evening_pre_best")) is not None])
    desc = w(
        "desc",
        days=str(report.period_days),
        first=day(report.first_date),
        last=day(report.last_date),
        with_data=str(report.days_with_data),
        am=w("none") if am is None else num(am, 0),
        pm=w("none") if pm is None else num(pm, 0),
        dv_days=str(len(report.diurnal.days_meeting)),
        bd_days=str(len(report.bd.days_meeting)),
        required=str(c.required_days),
    )
    if pb_ok and pb is not None:
        desc += w("desc_pb", pb=num(pb, 0))
    height = fr.y0 + 42 + legend_h
    return _svg(
        kind="pef-diary",
        cid=cid,
        width=_WIDTH,
        height=height,
        title=w("title"),
        desc=desc,
        body=body,
    )


# --------------------------------------------------------------------------- 2. AGP


def _glucose_decimals(unit: str) -> int:
    return 1 if unit == "mmol/L" else 0


def agp_svg(
    profile: AgpProfile | None,
    *,
    bands: GlucoseBands | None = None,
    unit: str | None = None,
    days: Sequence[tuple[date, Sequence[tuple[float, float]]]] = (),
    text: Mapping[str, str] = AGP_TEXT_EN,
    num: NumFormat = num_en,
    clock: ClockFormat = clock_en,
    max_gap_minutes: float = 60.0,
    chart_id: str | None = None,
) -> str:
    """The ambulatory glucose profile over the modal day (x: minutes after midnight, 0-1440).

    Each bin is drawn at its centre (``bin_start_min + bin_minutes / 2``). The outer band
    (first and last percentile, 5-95 by default) and the inner band (25-75) are filled areas
    with stroked edges (series ``p5``, ``p95``, ``p25``, ``p75``); the median is a thick line
    (series ``median``); the target range limits are green lines (``target-low``,
    ``target-high``). Bins without readings break the lines. ``days`` adds thin lines for
    single days (series ``day``, ``data-date``), broken at gaps over ``max_gap_minutes``.
    ``unit`` and ``bands`` default to the profile's unit and its consensus limits; a mismatch
    is a ``ValueError`` (a caller's error, not data).
    """
    u = unit if unit is not None else (profile.unit if profile is not None else "mmol/L")
    w = _Words(text, AGP_TEXT_EN)
    cid = _chart_id(chart_id, "agp")
    title = w("title", unit=u)
    if profile is not None and profile.unit != u:
        raise ValueError(f"the profile is in {profile.unit} but the chart is asked in {u}")
    b = bands if bands is not None else bands_for(u)
    if b.unit != u:
        raise ValueError(f"bands are in {b.unit} but the chart is in {u}")
    vals = np.asarray(profile.values if profile is not None else [], dtype=np.float64)
    finite = vals[np.isfinite(vals)] if vals.size else vals
    overlay = [
        (d, [(float(m), float(v)) for m, v in pts if math.isfinite(m) and math.isfinite(v)])
        for d, pts in days
    ]
    overlay_values = [v for _, pts in overlay for _, v in pts]
    if profile is None or finite.size == 0:
        return _no_data(kind="agp", cid=cid, title=title, message=w("no_data"))
    dec = _glucose_decimals(u)
    data_lo = min(0.0, float(finite.min()), *overlay_values)
    data_hi = max(b.very_high * 1.4, float(finite.max()), *overlay_values)
    ymin, ymax, _ = _axis(data_lo, data_hi)
    left, right, top, plot_h = 60.0, 16.0, 16.0, 280.0
    fr = _Frame(
        x0=left,
        x1=_WIDTH - right,
        vmin=0.0,
        vmax=1440.0,
        y0=top + plot_h,
        y1=top,
        ymin=ymin,
        ymax=ymax,
    )
    body: list[str] = []
    # target range background and y labels at the consensus limits (plus the axis ends)
    body.append(
        _tag(
            "rect",
            {
                "class": "area",
                "x": fr.x0,
                "y": fr.y(b.high),
                "width": fr.x1 - fr.x0,
                "height": fr.y(b.low) - fr.y(b.high),
                "fill": _TARGET_FILL,
            },
        )
    )
    limits = [b.very_low, b.low, b.high, b.very_high]
    body.append(
        _tag(
            "g",
            {"class": "grid"},
            "".join(
                _line(fr.x0, fr.y(v), fr.x1, fr.y(v), _GRID) for v in (b.very_low, b.very_high)
            ),
        )
    )
    y_labels = [ymin, *limits, ymax]
    for v in y_labels:
        strong = v in (b.low, b.high)
        body.append(
            _text(
                fr.x0 - 6,
                fr.y(v) + 4,
                num(v, dec),
                anchor="end",
                size=11.0,
                weight="bold" if strong else None,
                fill=_TARGET if strong else _INK,
            )
        )
    cy = (fr.y0 + fr.y1) / 2
    body.append(
        _text(
            14.0,
            cy,
            w("axis_y", unit=u),
            anchor="middle",
            size=11.0,
            attrs={"transform": f"rotate(-90 14 {_f(cy)})"},
        )
    )
    hours, hour_lines = [], []
    for m in range(0, 1441, 180):
        x = fr.x(float(m))
        hour_lines.append(_line(x, fr.y1, x, fr.y0, _GRID))
        hours.append(_text(x, fr.y0 + 16, clock(m), anchor=_tick_anchor(m), size=11.0))
    body.append(_tag("g", {"class": "grid"}, "".join(hour_lines)))
    body.append(_tag("g", {"class": "x-axis"}, "".join(hours)))

    centres = profile.bin_start_min + profile.bin_minutes / 2
    pcts = profile.percentiles

    def curve(p: int) -> list[tuple[float, float] | None]:
        row = profile.curve(p)
        return [
            (fr.x(float(m)), fr.y(float(v))) if math.isfinite(v) else None
            for m, v in zip(centres, row, strict=True)
        ]

    plot: list[str] = []
    bands_drawn: list[tuple[int, int, str, str, str]] = []
    pairs = []
    if len(pcts) >= 2:
        pairs.append((pcts[0], pcts[-1], _AGP_OUTER_FILL, _AGP_OUTER, "4 3"))
    if len(pcts) >= 4:
        pairs.append((pcts[1], pcts[-2], _AGP_INNER_FILL, _AGP_INNER, "none"))
    for lo_p, hi_p, fill, edge, dash in pairs:
        lo_c, hi_c = curve(lo_p), curve(hi_p)
        both = [None if a is None or c is None else (a, c) for a, c in zip(lo_c, hi_c, strict=True)]
        areas = []
        run: list[tuple[tuple[float, float], tuple[float, float]]] = []
        for item in [*both, None]:
            if item is not None:
                run.append(item)
                continue
            if run:
                top_pts = [c for _, c in run]
                bottom = [a for a, _ in reversed(run)]
                outline = " L".join(f"{_f(x)},{_f(y)}" for x, y in [*top_pts, *bottom])
                areas.append(_tag("path", {"d": f"M{outline} Z", "fill": fill, "stroke": "none"}))
                run = []
        plot.append(_tag("g", {"class": "area", "data-series": f"p{lo_p}-p{hi_p}"}, "".join(areas)))
        bands_drawn.append((lo_p, hi_p, fill, edge, dash))
    # target range lines
    for key, v in (("target-low", b.low), ("target-high", b.high)):
        y = fr.y(v)
        plot.append(
            _tag("g", {"data-series": key}, _line(fr.x0, y, fr.x1, y, _TARGET, stroke_width=1.8))
        )
    # single days
    if overlay:
        lines = []
        for when, day_pts in overlay:
            seq: list[tuple[float, float] | None] = []
            prev: float | None = None
            for minute, value in sorted(day_pts):
                if prev is not None and minute - prev > max_gap_minutes:
                    seq.append(None)
                seq.append((fr.x(minute), fr.y(value)))
                prev = minute
            for run_pts in _runs(seq):
                lines.append(
                    _polyline(
                        run_pts,
                        {
                            "data-series": "day",
                            "data-date": when.isoformat(),
                            "stroke": _OVERLAY,
                            "stroke-width": 0.8,
                        },
                    )
                )
        plot.append(_tag("g", {"class": "days"}, "".join(lines)))
    # band edges, then the median on top
    for lo_p, hi_p, _, edge, dash in bands_drawn:
        for p in (lo_p, hi_p):
            plot.append(
                _tag(
                    "g",
                    {"data-series": f"p{p}"},
                    "".join(
                        _polyline(
                            r, {"stroke": edge, "stroke-width": 1.0, "stroke-dasharray": dash}
                        )
                        for r in _runs(curve(p))
                    ),
                )
            )
    if 50 in pcts:
        plot.append(
            _tag(
                "g",
                {"data-series": "median"},
                "".join(
                    _polyline(
                        r,
                        {
                            "stroke": _AGP_MEDIAN,
                            "stroke-width": 2.6,
                            "stroke-linejoin": "round",
                            "stroke-linecap": "round",
                        },
                    )
                    for r in _runs(curve(50))
                ),
            )
        )
    body.append(_tag("g", fr.attrs(), "".join(plot)))
    body.append(fr.frame_rect())

    keys: list[_Key] = []
    for lo_p, hi_p, fill, edge, dash in bands_drawn:
        keys.append(
            _Key(
                f"p{lo_p}-p{hi_p}",
                w("band", low=str(lo_p), high=str(hi_p)),
                _key_swatch(fill, stroke=edge, dash=None if dash == "none" else dash),
            )
        )
    if 50 in pcts:
        keys.append(_Key("median", w("median"), _key_line(_AGP_MEDIAN, width=2.6)))
    keys.append(
        _Key(
            "target",
            w("target", low=num(b.low, dec), high=num(b.high, dec), unit=u),
            _key_line(_TARGET, width=1.8),
        )
    )
    if overlay:
        keys.append(_Key("day", w("day"), _key_line(_OVERLAY, width=0.8)))
    legend, legend_h = _legend(keys, x0=left, y=fr.y0 + 40, width=_WIDTH - left - right)
    body.append(legend)

    readings = str(int(np.asarray(profile.counts).sum()))
    median = profile.curve(50) if 50 in pcts else np.asarray([], dtype=np.float64)
    fin = np.flatnonzero(np.isfinite(median))
    if fin.size:
        i_min = int(fin[np.argmin(median[fin])])
        i_max = int(fin[np.argmax(median[fin])])
        desc = w(
            "desc",
            readings=readings,
            bin=str(profile.bin_minutes),
            min=num(float(median[i_min]), dec),
            max=num(float(median[i_max]), dec),
            t_min=clock(int(profile.bin_start_min[i_min])),
            t_max=clock(int(profile.bin_start_min[i_max])),
            low=num(b.low, dec),
            high=num(b.high, dec),
            unit=u,
        )
    else:
        desc = w("desc_no_median", readings=readings, bin=str(profile.bin_minutes))
    if overlay:
        desc += w("desc_days", n=str(len(overlay)))
    height = fr.y0 + 40 + legend_h
    return _svg(kind="agp", cid=cid, width=_WIDTH, height=height, title=title, desc=desc, body=body)


# --------------------------------------------------------------------------- 3. TIR bar

_TIR_KEYS: Final = ("very_low", "low", "in_range", "high", "very_high")


def tir_bar_svg(
    metrics: CgmMetrics | None,
    *,
    text: Mapping[str, str] = TIR_TEXT_EN,
    num: NumFormat = num_en,
    targets: TirTargets = TIR_TARGETS,
    chart_id: str | None = None,
) -> str:
    """The stacked time-in-ranges bar: very low, low, in range, high, very high, left to right.

    x value: percent of readings, 0-100; segment ``i`` is a ``<rect data-series=KEY>`` whose
    width is proportional to its share. Below the bar a text table gives each range's limits
    (in the data's unit), its share and its consensus target, then the below/above-range totals.
    """
    w = _Words(text, TIR_TEXT_EN)
    cid = _chart_id(chart_id, "tir")
    if metrics is None or metrics.readings <= 0:
        return _no_data(kind="tir", cid=cid, title=w("title"), message=w("no_data"))
    b = metrics.bands
    u = b.unit
    dec = _glucose_decimals(u)
    step = 10.0**-dec
    shares = [
        metrics.tbr_level2_percent,
        metrics.tbr_level1_percent,
        metrics.tir_percent,
        metrics.tar_level1_percent,
        metrics.tar_level2_percent,
    ]
    shares = [s if math.isfinite(s) and s > 0 else 0.0 for s in shares]
    total = math.fsum(shares) or 100.0

    def pct(p: float) -> str:
        r = round(p)
        if p > 0 and r == 0:
            return w("percent_below", value=num(1, 0))
        if p < 100 and r == 100:
            return w("percent_above", value=num(99, 0))
        return w("percent", value=num(p, 0))

    ranges = [
        w("range_below", value=num(b.very_low, dec), unit=u),
        w("range_between", low=num(b.very_low, dec), high=num(b.low - step, dec), unit=u),
        w("range_between", low=num(b.low, dec), high=num(b.high, dec), unit=u),
        w("range_between", low=num(b.high + step, dec), high=num(b.very_high, dec), unit=u),
        w("range_above", value=num(b.very_high, dec), unit=u),
    ]
    target_text = [
        w("target_below", value=num(targets.very_low_below, _dec(targets.very_low_below))),
        "",
        w("target_above", value=num(targets.in_range_above, _dec(targets.in_range_above))),
        "",
        w("target_below", value=num(targets.very_high_below, _dec(targets.very_high_below))),
    ]
    names = [w(k) for k in _TIR_KEYS]
    values = [pct(s / total * 100) for s in shares]

    left, right, bar_top, bar_h = 16.0, 16.0, 26.0, 34.0
    fr = _Frame(
        x0=left,
        x1=_WIDTH - right,
        vmin=0.0,
        vmax=100.0,
        y0=bar_top + bar_h,
        y1=bar_top,
        ymin=0.0,
        ymax=1.0,
    )
    segs: list[str] = []
    above: list[str] = []
    acc = 0.0
    for key, share, colour, name, value in zip(
        _TIR_KEYS, shares, _TIR_COLOURS, names, values, strict=True
    ):
        p = share / total * 100
        xa, xb = fr.x(acc), fr.x(acc + p)
        segs.append(
            _tag(
                "rect",
                {
                    "data-series": key,
                    "x": xa,
                    "y": fr.y1,
                    "width": xb - xa,
                    "height": bar_h,
                    "fill": colour,
                    "stroke": _WHITE,
                    "stroke-width": 1.0,
                },
                _title(f"{name} {value}"),
            )
        )
        if xb - xa >= max(36.0, _text_width(value, 11.0) + 4):
            above.append(
                _text(
                    (xa + xb) / 2,
                    fr.y1 - 6,
                    value,
                    anchor="middle",
                    size=11.0,
                    attrs={"data-series": key},
                )
            )
        acc += p
    body = [
        _tag("g", fr.attrs(), "".join(segs)),
        _tag("g", {"class": "bar-labels"}, "".join(above)),
    ]

    # the table: swatch | name | range | share | target
    col_name = left + 24
    col_range = col_name + max(_text_width(s) for s in names) + 16
    col_value = col_range + max(_text_width(s) for s in ranges) + 16
    col_target = col_value + max(_text_width(s, 12.5) for s in values) + 16
    width = max(_WIDTH, col_target + max(_text_width(s) for s in target_text) + right)
    rows: list[str] = []
    y = fr.y0 + 28
    for key, colour, name, rng, value, tgt in zip(
        _TIR_KEYS, _TIR_COLOURS, names, ranges, values, target_text, strict=True
    ):
        rows.append(
            _tag(
                "g",
                {"data-row": key},
                _tag(
                    "rect", {"x": left, "y": y - 10, "width": 14.0, "height": 12.0, "fill": colour}
                )
                + _text(col_name, y, name)
                + _text(col_range, y, rng, fill=_INK_SOFT)
                + _text(col_value, y, value, weight="bold", size=12.5)
                + _text(col_target, y, tgt, fill=_INK_SOFT),
            )
        )
        y += 20
    y += 6
    tbr, tar = shares[0] + shares[1], shares[3] + shares[4]
    for key, line in (
        (
            "below",
            w(
                "below_total",
                value=pct(tbr / total * 100),
                target=num(targets.below_range_below, _dec(targets.below_range_below)),
            ),
        ),
        (
            "above",
            w(
                "above_total",
                value=pct(tar / total * 100),
                target=num(targets.above_range_below, _dec(targets.above_range_below)),
            ),
        ),
    ):
        rows.append(_text(left, y, line, attrs={"data-row": f"{key}-total"}))
        y += 20
    body.append(_tag("g", {"class": "table"}, "".join(rows)))
    desc = w(
        "desc",
        tir=values[2],
        tir_target=num(targets.in_range_above, _dec(targets.in_range_above)),
        tbr=pct(tbr / total * 100),
        vl=values[0],
        tar=pct(tar / total * 100),
        vh=values[4],
        readings=str(metrics.readings),
        days=num(metrics.days, 1),
    )
    return _svg(kind="tir", cid=cid, width=width, height=y, title=w("title"), desc=desc, body=body)


# --------------------------------------------------------------------------- 4. home BP


def bp_series_svg(
    readings: Sequence[BpReading],
    *,
    summary: HomeBpSummary | None = None,
    text: Mapping[str, str] = BP_TEXT_EN,
    num: NumFormat = num_en,
    day: DayFormat = day_en,
    clock: ClockFormat = clock_en,
    tz: str | tzinfo | None = None,
    chart_id: str | None = None,
) -> str:
    """Systolic and diastolic readings over time with the home threshold and protocol average.

    x value: POSIX seconds; the range is whole local days (``tz``, else the summary's zone,
    else UTC; naive reading times are read in that zone). Systolic: solid line with
    down-pointing triangles (series ``systolic``); diastolic: dashed line with up-pointing
    triangles (``diastolic``). The threshold lines (``threshold-systolic``,
    ``threshold-diastolic``) sit at the summary's thresholds, by default the home threshold of
    :mod:`device_profiles.clinical` (135/85). With a summary that has an average, the protocol
    average is drawn over the days it used (``average-systolic``, ``average-diastolic``) and
    the discarded day 1 is shaded. Readings with a non-finite value are not drawn.
    """
    w = _Words(text, BP_TEXT_EN)
    cid = _chart_id(chart_id, "bp")
    zone = _zone(tz if tz is not None else (summary.tz if summary is not None else None))
    pts: list[tuple[datetime, float, float]] = []
    for r in readings:
        s, d = float(r.systolic), float(r.diastolic)
        if math.isfinite(s) and math.isfinite(d):
            try:
                pts.append((_local(r.time, zone), s, d))
            except OverflowError:  # a time at the edge of datetime's range: not drawable
                continue
    pts.sort(key=lambda p: p[0])
    if not pts:
        return _no_data(kind="bp", cid=cid, title=w("title"), message=w("no_data"))
    thr_s = summary.threshold_systolic if summary is not None else HOME_BP_THRESHOLD_SYS.value
    thr_d = summary.threshold_diastolic if summary is not None else HOME_BP_THRESHOLD_DIA.value
    avg = summary.average if summary is not None else None
    used_days = [x for x in (summary.day_table if summary else ()) if x.status == "used"]
    discarded = [x for x in (summary.day_table if summary else ()) if x.status == "discarded"]
    first_day = min([pts[0][0].date(), *(x.date for x in (summary.day_table if summary else ()))])
    last_day = max([pts[-1][0].date(), *(x.date for x in (summary.day_table if summary else ()))])

    def midnight(d: date) -> float:
        return datetime.combine(d, time(0), tzinfo=zone).timestamp()

    def next_midnight(d: date) -> float:
        return midnight(d) + 86400.0 if d == date.max else midnight(d + timedelta(days=1))

    n_days = (last_day - first_day).days + 1
    ys = [v for _, s, d in pts for v in (s, d)] + [thr_s, thr_d]
    if avg is not None:
        ys += [avg.systolic, avg.diastolic]
    ymin, ymax, ticks = _axis(min(ys), max(ys))
    left, right, top, plot_h = 60.0, 16.0, 16.0, 260.0
    fr = _Frame(
        x0=left,
        x1=_WIDTH - right,
        vmin=midnight(first_day),
        vmax=next_midnight(last_day),
        y0=top + plot_h,
        y1=top,
        ymin=ymin,
        ymax=ymax,
    )
    body: list[str] = []
    for x in discarded:
        xa, xb = fr.x(midnight(x.date)), fr.x(next_midnight(x.date))
        body.append(
            _tag(
                "rect",
                {
                    "class": "shade",
                    "data-date": x.date.isoformat(),
                    "x": xa,
                    "y": fr.y1,
                    "width": xb - xa,
                    "height": fr.y0 - fr.y1,
                    "fill": _DISCARDED_FILL,
                },
                _title(w("discarded")),
            )
            + _text(
                (xa + xb) / 2,
                fr.y1 + 12,
                w("discarded"),
                anchor="middle",
                size=10.0,
                fill=_INK_SOFT,
            )
        )
    body += _y_axis(
        fr,
        ticks,
        num=num,
        decimals=_decimals(ticks[1] - ticks[0]) if len(ticks) > 1 else 0,
        label=w("axis_y"),
    )
    per_day = (fr.x1 - fr.x0) / n_days
    every = max(1, math.ceil((_text_width(day(first_day), 11.0) + 8) / per_day))
    xs, day_lines = [], []
    for i in range(0, n_days, every):  # a line and a label every ``every`` days
        dd = first_day + timedelta(days=i)
        xa = fr.x(midnight(dd))
        if i:
            day_lines.append(_line(xa, fr.y1, xa, fr.y0, _GRID))
        xb = fr.x(next_midnight(dd))
        xs.append(
            _text(
                (xa + xb) / 2,
                fr.y0 + 16,
                day(dd),
                anchor="middle",
                size=11.0,
                attrs={"data-date": dd.isoformat()},
            )
        )
    body.append(_tag("g", {"class": "grid"}, "".join(day_lines)))
    body.append(_tag("g", {"class": "x-axis"}, "".join(xs)))

    plot: list[str] = []
    for key, v in (("threshold-systolic", thr_s), ("threshold-diastolic", thr_d)):
        y = fr.y(v)
        plot.append(
            _tag(
                "g",
                {"data-series": key},
                _line(fr.x0, y, fr.x1, y, _THRESHOLD, stroke_width=1.4, stroke_dasharray="2 3")
                + _text(
                    fr.x1 - 4,
                    y - 4,
                    w("threshold_line", value=num(v, 0)),
                    anchor="end",
                    size=10.5,
                    halo=True,
                    fill=_THRESHOLD,
                ),
            )
        )
    if avg is not None and used_days:
        xa = fr.x(midnight(min(x.date for x in used_days)))
        xb = fr.x(next_midnight(max(x.date for x in used_days)))
        for key, v, colour in (
            ("average-systolic", avg.systolic, _SYSTOLIC),
            ("average-diastolic", avg.diastolic, _DIASTOLIC),
        ):
            y = fr.y(v)
            plot.append(
                _tag(
                    "g",
                    {"data-series": key},
                    _line(xa, y, xb, y, colour, stroke_width=2.4, stroke_dasharray="10 4")
                    + _text(
                        xa + 4,
                        y + (14 if key == "average-systolic" else -6),
                        w("average_line", value=num(v, 0)),
                        size=10.5,
                        halo=True,
                        fill=colour,
                    ),
                )
            )
    series: tuple[tuple[str, list[float], str, Shape, str], ...] = (
        ("systolic", [p[1] for p in pts], _SYSTOLIC, "triangle-down", "none"),
        ("diastolic", [p[2] for p in pts], _DIASTOLIC, "triangle-up", "6 3"),
    )
    for key, vals, colour, shape, dash in series:
        coords = [(fr.x(p[0].timestamp()), fr.y(v)) for p, v in zip(pts, vals, strict=True)]
        marks = "".join(
            _point(
                shape,
                x,
                y,
                colour,
                title=w(
                    "point",
                    date=day(p[0].date()),
                    time=clock(int(_minute_of_day(p[0]))),
                    series=w(key),
                    value=num(v, 0),
                ),
                attrs={"data-time": p[0].isoformat()},
            )
            for (x, y), p, v in zip(coords, pts, vals, strict=True)
        )
        line = _polyline(coords, {"stroke": colour, "stroke-width": 1.5, "stroke-dasharray": dash})
        plot.append(_tag("g", {"data-series": key}, line + marks))
    body.append(_tag("g", fr.attrs(), "".join(plot)))
    body.append(fr.frame_rect())

    keys = [
        _Key("systolic", w("systolic"), _key_marker("triangle-down", _SYSTOLIC, line=_SYSTOLIC)),
        _Key(
            "diastolic",
            w("diastolic"),
            _key_marker("triangle-up", _DIASTOLIC, line=_DIASTOLIC, dash="6 3"),
        ),
        _Key(
            "threshold",
            w("threshold", sys=num(thr_s, 0), dia=num(thr_d, 0)),
            _key_line(_THRESHOLD, dash="2 3", width=1.4),
        ),
    ]
    if avg is not None and used_days:
        keys.append(
            _Key(
                "average",
                w("average", sys=num(avg.systolic, 0), dia=num(avg.diastolic, 0)),
                _key_line(_INK_SOFT, dash="10 4", width=2.4),
            )
        )
    if discarded and avg is not None:
        keys.append(_Key("discarded", w("discarded"), _key_swatch(_DISCARDED_FILL, stroke=_AXIS)))
    legend, legend_h = _legend(keys, x0=left, y=fr.y0 + 40, width=_WIDTH - left - right)
    body.append(legend)

    sys_v = [p[1] for p in pts]
    dia_v = [p[2] for p in pts]
    desc = w(
        "desc",
        n=str(len(pts)),
        first=day(pts[0][0].date()),
        last=day(pts[-1][0].date()),
        sys_min=num(min(sys_v), 0),
        sys_max=num(max(sys_v), 0),
        dia_min=num(min(dia_v), 0),
        dia_max=num(max(dia_v), 0),
        thr_sys=num(thr_s, 0),
        thr_dia=num(thr_d, 0),
    )
    if avg is not None and summary is not None:
        status = "status_above" if summary.at_or_above_threshold else "status_below"
        desc += w(
            "desc_average",
            sys=num(avg.systolic, 0),
            dia=num(avg.diastolic, 0),
            used=str(summary.readings_used),
            status=w(status),
        )
    height = fr.y0 + 40 + legend_h
    return _svg(
        kind="bp", cid=cid, width=_WIDTH, height=height, title=w("title"), desc=desc, body=body
    )


# --------------------------------------------------------------------------- 5. doses

_DOSE_SHAPES: Final[dict[DoseStatus, Shape]] = {
    "taken": "check",
    "late": "triangle-up",
    "missed": "cross",
    "due": "ring",
}


def dose_timeline_svg(
    marks: Sequence[DoseMark],
    *,
    start: date,
    days: int,
    tz: str | tzinfo,
    text: Mapping[str, str] = DOSE_TEXT_EN,
    day: DayFormat = day_en,
    clock: ClockFormat = clock_en,
    chart_id: str | None = None,
) -> str:
    """Doses by day (rows, first day on top) and time of day (x: minutes after midnight).

    Each dose is a marker at its scheduled local time in ``tz``: taken a green circle with a
    check, late an amber triangle, missed a red cross, due a grey ring; each carries
    ``data-status``, ``data-date`` and sits in the group ``data-series=<status>``. A late dose
    taken at a known time has a dashed amber line from the scheduled time to the intake
    (``class="delay"``; cut at midnight). y value: ``date.toordinal()`` of the row, growing
    downwards (row ``d`` spans ``[d, d + 1]``), so ``data-ymin`` (the bottom) is the larger
    value. Doses outside ``start .. start + days - 1`` and unknown statuses are not drawn.
    """
    w = _Words(text, DOSE_TEXT_EN)
    cid = _chart_id(chart_id, "doses")
    zone = _zone(tz)
    n = max(0, int(days))
    placed: list[tuple[DoseMark, datetime]] = []
    for m in marks:
        if m.status not in _DOSE_SHAPES:
            continue
        try:
            lt = _local(m.scheduled, zone)
        except OverflowError:  # at the edge of datetime's range: outside any chart
            continue
        if 0 <= (lt.date() - start).days < n:
            placed.append((m, lt))
    if not placed:
        return _no_data(kind="doses", cid=cid, title=w("title"), message=w("no_data"))
    placed.sort(key=lambda p: p[1])
    left, right, top, row_h = 76.0, 16.0, 24.0, 30.0
    s0 = float(start.toordinal())
    fr = _Frame(
        x0=left,
        x1=_WIDTH - right,
        vmin=0.0,
        vmax=1440.0,
        y0=top + n * row_h,
        y1=top,
        ymin=s0 + n,
        ymax=s0,
    )
    body: list[str] = []
    grid, labels = [], []
    for i in range(n):
        d = start + timedelta(days=i)
        y = fr.y(s0 + i + 0.5)
        if i % 2:
            grid.append(
                _tag(
                    "rect",
                    {
                        "x": fr.x0,
                        "y": fr.y(s0 + i),
                        "width": fr.x1 - fr.x0,
                        "height": row_h,
                        "fill": "#f4f4f4",
                    },
                )
            )
        labels.append(
            _text(
                fr.x0 - 8,
                y + 4,
                day(d),
                anchor="end",
                size=11.0,
                attrs={"data-date": d.isoformat()},
            )
        )
    for mnt in range(0, 1441, 180):
        x = fr.x(float(mnt))
        grid.append(_line(x, fr.y1, x, fr.y0, _GRID))
        labels.append(_text(x, fr.y1 - 8, clock(mnt), anchor=_tick_anchor(mnt), size=11.0))
    body.append(_tag("g", {"class": "grid"}, "".join(grid)))
    body.append(_tag("g", {"class": "labels"}, "".join(labels)))

    groups: dict[DoseStatus, list[str]] = {s: [] for s in DOSE_STATUSES}
    delays: list[str] = []
    counts: dict[DoseStatus, int] = dict.fromkeys(DOSE_STATUSES, 0)
    for m, lt in placed:
        row = float(lt.date().toordinal())
        x, y = fr.x(_minute_of_day(lt)), fr.y(row + 0.5)
        colour = _DOSE_COLOURS[m.status]
        counts[m.status] += 1
        at_text = ""
        at = None
        if m.at is not None:
            try:
                at = _local(m.at, zone)
            except OverflowError:
                at = None
        if at is not None:
            at_text = clock(int(_minute_of_day(at)))
            if m.status == "late" and at > lt:
                end = 1440.0 if at.date() > lt.date() else _minute_of_day(at)
                delays.append(
                    _line(
                        x,
                        y,
                        fr.x(end),
                        y,
                        colour,
                        stroke_width=1.5,
                        stroke_dasharray="3 2",
                        **{"class": "delay", "data_date": lt.date().isoformat()},
                    )
                )
        when = dict(date=day(lt.date()), time=clock(int(_minute_of_day(lt))), status=w(m.status))
        title = w("point_at", at=at_text, **when) if at_text else w("point", **when)
        groups[m.status].append(
            _point(
                _DOSE_SHAPES[m.status],
                x,
                y,
                colour,
                r=5.5,
                title=title,
                attrs={
                    "data-status": m.status,
                    "data-date": lt.date().isoformat(),
                    "data-time": lt.isoformat(),
                },
            )
        )
    plot = [_tag("g", {"class": "delays"}, "".join(delays))]
    plot += [_tag("g", {"data-series": s}, "".join(groups[s])) for s in DOSE_STATUSES]
    body.append(_tag("g", fr.attrs(), "".join(plot)))
    body.append(fr.frame_rect())
    keys = [
        _Key(
            s,
            w("legend", status=w(s), count=str(counts[s])),
            _key_marker(_DOSE_SHAPES[s], _DOSE_COLOURS[s]),
        )
        for s in DOSE_STATUSES
    ]
    legend, legend_h = _legend(keys, x0=left, y=fr.y0 + 24, width=_WIDTH - left - right)
    body.append(legend)
    desc = w(
        "desc",
        days=str(n),
        first=day(start),
        last=day(start + timedelta(days=n - 1)),
        **{s: str(counts[s]) for s in DOSE_STATUSES},
    )
    height = fr.y0 + 24 + legend_h
    return _svg(
        kind="doses", cid=cid, width=_WIDTH, height=height, title=w("title"), desc=desc, body=body
    )


# --------------------------------------------------------------------------- 6. sparkline


def sparkline_svg(
    values: Sequence[tuple[datetime, float]],
    *,
    text: Mapping[str, str] = SPARKLINE_TEXT_EN,
    num: NumFormat = num_en,
    day: DayFormat = day_en,
    decimals: int = 0,
    unit: str = "",
    chart_id: str | None = None,
) -> str:
    """A small line of recent values for a "latest reading" tile, the latest one marked.

    x value: POSIX seconds (naive times read as UTC); series ``values`` (a polyline) and
    ``latest`` (a marker). Non-finite values are not drawn.
    """
    w = _Words(text, SPARKLINE_TEXT_EN)
    cid = _chart_id(chart_id, "sparkline")
    pts = sorted(
        ((_local(t, UTC).timestamp(), float(v), t) for t, v in values if math.isfinite(v)),
        key=lambda p: p[0],
    )
    if not pts:
        body = [_text(80.0, 26.0, w("no_data"), anchor="middle", fill=_INK_SOFT)]
        return _svg(
            kind="sparkline",
            cid=cid,
            width=160.0,
            height=40.0,
            title=w("title"),
            desc=w("no_data"),
            body=body,
            empty=True,
        )
    vs = [p[1] for p in pts]
    lo, hi = min(vs), max(vs)
    if hi / 2 - lo / 2 <= abs(hi) * 1e-12:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    t0, t1 = pts[0][0], pts[-1][0]
    if t1 <= t0:
        t0, t1 = t0 - 1.0, t1 + 1.0
    fr = _Frame(x0=4.0, x1=150.0, vmin=t0, vmax=t1, y0=34.0, y1=6.0, ymin=lo, ymax=hi)
    coords = [(fr.x(t), fr.y(v)) for t, v, _ in pts]
    last = pts[-1]
    plot = _tag(
        "g",
        {"data-series": "values"},
        _polyline(coords, {"stroke": _AGP_INNER, "stroke-width": 1.5, "stroke-linejoin": "round"}),
    ) + _tag("g", {"data-series": "latest"}, _point("circle", *coords[-1], _AGP_MEDIAN, r=3.0))
    u = f" {unit}" if unit else ""
    desc = w(
        "desc",
        n=str(len(pts)),
        first=day(pts[0][2].date()),
        last=day(last[2].date()),
        latest=num(last[1], decimals),
        min=num(min(vs), decimals),
        max=num(max(vs), decimals),
        unit=u,
    )
    return _svg(
        kind="sparkline",
        cid=cid,
        width=160.0,
        height=40.0,
        title=w("title"),
        desc=desc,
        body=[_tag("g", fr.attrs(), plot)],
    )
