"""``remon pef-report``: a PEF diary CSV → text, JSON or a self-contained HTML report.

The analysis is :mod:`cloud_ingest.analytics.pef_diary` (DOMAIN.md §1); this module reads the
file, renders the result and maps errors to an exit code. The HTML page has no external assets
(inline CSS and an inline SVG chart), prints on paper, and escapes every text it shows.
"""

from __future__ import annotations

import html as h
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final, TextIO

from cloud_ingest.analytics.pef_diary import (
    CONVENTIONS,
    Convention,
    CriterionResult,
    DayResult,
    DiaryReport,
    PefDiaryError,
    analyse_diary,
    parse_pef_csv,
    report_to_json,
)

__all__ = ["PefDiaryError", "render_html", "render_text", "run"]

_CONVENTION_NAMES: Final[dict[str, str]] = {"finnish": "Finnish", "gina": "GINA"}


def _v(x: float | None, *, pct: bool = False) -> str:
    if x is None:
        return "-"
    if pct:
        return f"{x:.1f}"
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}"


def _yn(x: bool | None) -> str:
    return "-" if x is None else ("yes" if x else "no")


def _convention_line(r: DiaryReport) -> str:
    post = (
        "; the highest may also be a post-BD best (post-BD values in the daily maximum)"
        if r.post_bd_in_max
        else " (post-BD values not in the daily maximum)"
    )
    period = " The period figure is the mean of the daily values." if r.convention == "gina" else ""
    return (
        f"Convention: {_CONVENTION_NAMES[r.convention]}: daily diurnal variation = {r.formula}, "
        f"from the day's best pre-BD morning and evening values{post}.{period}"
    )


def _period_line(r: DiaryReport) -> str:
    return (
        f"PEF diary {r.first_date.isoformat()} to {r.last_date.isoformat()}: "
        f"{r.period_days} day{'s' if r.period_days != 1 else ''} "
        f"({r.days_with_data} with blows), {r.n_blows} blows"
        + (
            f"; personal best {_v(r.personal_best_l_min)} L/min"
            if r.personal_best_l_min is not None
            else ""
        )
    )


def _criterion_label(c: CriterionResult) -> str:
    what = "Diurnal variation" if c.name == "diurnal_variation" else "BD response"
    return f"{what} {c.threshold} on ≥ {c.required_days} days"


def _mean_line(r: DiaryReport) -> str:
    label = "GINA period figure" if r.convention == "gina" else "for information"
    if r.mean_diurnal_variation_percent is None:
        return f"Mean daily diurnal variation ({label}): not computable (no day with both pre-BD)"
    return (
        f"Mean daily diurnal variation ({label}): {r.mean_diurnal_variation_percent:.1f} % "
        f"over {r.days_with_diurnal_variation} day"
        f"{'s' if r.days_with_diurnal_variation != 1 else ''}"
    )


_COLUMNS: Final = (
    ("Date", 10),
    ("AM pre", 6),
    ("AM post", 7),
    ("PM pre", 6),
    ("PM post", 7),
    ("Var %", 5),
    ("Var L/min", 9),
    ("Var≥", 4),
    ("BD %", 5),
    ("BD L/min", 8),
    ("BD ses", 7),
    ("BD≥", 4),
    ("Zone", 6),
)


def _day_cells(d: DayResult) -> list[str]:
    return [
        d.date.isoformat(),
        _v(d.morning_pre_best),
        _v(d.morning_post_best),
        _v(d.evening_pre_best),
        _v(d.evening_post_best),
        _v(d.diurnal_variation_percent, pct=True),
        _v(d.diurnal_variation_l_min),
        _yn(d.diurnal_meets),
        _v(d.bd_response_percent, pct=True),
        _v(d.bd_response_l_min),
        d.bd_response_session or "-",
        _yn(d.bd_meets),
        d.zone or "-",
    ]


def render_text(r: DiaryReport) -> str:
    """A compact plain-text report: one table row per day, the criteria and the notes."""
    out = [_period_line(r), _convention_line(r), ""]
    head = [f"{name:<{w}}" if i == 0 else f"{name:>{w}}" for i, (name, w) in enumerate(_COLUMNS)]
    out.append("  ".join(head) + "  Missing")
    for d in r.days:
        cells = _day_cells(d)
        row = [
            f"{c:<{w}}" if i == 0 else f"{c:>{w}}"
            for i, (c, (_, w)) in enumerate(zip(cells, _COLUMNS, strict=True))
        ]
        out.append("  ".join(row) + "  " + "; ".join(d.missing))
    out += ["", "Criteria:"]
    for c in (r.diurnal, r.bd):
        out.append(f"  {_criterion_label(c)} [{c.source}]: {c.statement}")
        if c.days_meeting:
            out.append("    days: " + ", ".join(x.isoformat() for x in c.days_meeting))
    out.append(_mean_line(r))
    if r.notes:
        out += ["", "Notes:"]
        out += [f"  - {n}" for n in r.notes]
    out += ["", r.disclaimer]
    return "\n".join(line.rstrip() for line in out) + "\n"


# --------------------------------------------------------------------------- HTML

_CSS: Final = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5rem;
       color: #111; max-width: 68rem; }
h1 { font-size: 1.4rem; margin-bottom: .2rem; } h2 { font-size: 1.1rem; margin-top: 1.4rem; }
p.meta { margin: .2rem 0; color: #333; }
table { border-collapse: collapse; font-size: .85rem; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #bbb; padding: .2rem .45rem; text-align: right; }
th { background: #eee; } td.l, th.l { text-align: left; }
tr.meets td { background: #fff3cd; } tr.nodata td { color: #777; font-style: italic; }
.met { font-weight: bold; } .crit { margin: .3rem 0; }
.disclaimer { border: 1px solid #999; padding: .5rem .7rem; margin-top: 1.2rem; }
svg { max-width: 100%; height: auto; } svg text { font-size: 11px; fill: #222; }
@media print {
  body { margin: 0; max-width: none; font-size: 10pt; }
  tr.meets td { background: none; font-weight: bold; }
  h2 { page-break-after: avoid; } table, svg { page-break-inside: avoid; }
}
"""

#: (label, attribute, colour, dashed, filled marker, marker shape)
_SERIES: Final = (
    ("morning pre-BD", "morning_pre_best", "#1f5fa8", False, True, "circle"),
    ("evening pre-BD", "evening_pre_best", "#c0541a", False, True, "square"),
    ("morning post-BD", "morning_post_best", "#1f5fa8", True, False, "circle"),
    ("evening post-BD", "evening_post_best", "#c0541a", True, False, "square"),
)


def _marker(shape: str, x: float, y: float, colour: str, filled: bool, title: str) -> str:
    fill = colour if filled else "#fff"
    t = f"<title>{h.escape(title)}</title>"
    if shape == "circle":
        return (
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{fill}" stroke="{colour}" '
            f'stroke-width="1.5">{t}</circle>'
        )
    return (
        f'<rect x="{x - 3.5:.1f}" y="{y - 3.5:.1f}" width="7" height="7" fill="{fill}" '
        f'stroke="{colour}" stroke-width="1.5">{t}</rect>'
    )


def _nice_range(values: Sequence[float]) -> tuple[float, float, float]:
    lo, hi = min(values), max(values)
    step = 50.0 if hi - lo <= 300 else 100.0
    y0 = (lo // step) * step
    y1 = -(-hi // step) * step
    if y1 - y0 < 2 * step:
        y1 = y0 + 2 * step
    return y0, y1, step


def render_svg(r: DiaryReport) -> str:
    """An inline SVG line chart of the daily bests (pre-BD solid, post-BD dashed)."""
    width, height = 800, 330
    left, right, top, bottom = 52, 12, 14, 72
    pw, ph = width - left - right, height - top - bottom
    values: list[float] = []
    for d in r.days:
        for _, attr, *_rest in _SERIES:
            v = getattr(d, attr)
            if v is not None:
                values.append(v)
    if r.personal_best_l_min is not None:
        values.append(r.personal_best_l_min)
    y0, y1, step = _nice_range(values)
    n = len(r.days)

    def x_of(i: int) -> float:
        return left + (pw * (i + 0.5) / n)

    def y_of(v: float) -> float:
        return top + ph * (1 - (v - y0) / (y1 - y0))

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-labelledby="chart-title">',
        '<title id="chart-title">Daily best PEF (L/min): morning and evening, before and '
        "after the bronchodilator</title>",
    ]
    band = pw / n
    for i, d in enumerate(r.days):  # shade the days that meet a criterion
        if d.diurnal_meets or d.bd_meets:
            parts.append(
                f'<rect x="{left + band * i:.1f}" y="{top}" width="{band:.1f}" height="{ph}" '
                f'fill="#fff3cd"><title>{h.escape(d.date.isoformat())}: meets a criterion'
                "</title></rect>"
            )
    v = y0
    while v <= y1 + 1e-9:
        y = y_of(v)
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{v:.0f}</text>'
        )
        v += step
    parts.append(
        f'<text x="14" y="{top + ph / 2:.1f}" transform="rotate(-90 14 {top + ph / 2:.1f})" '
        'text-anchor="middle">PEF L/min</text>'
    )
    if r.personal_best_l_min is not None:
        pb = r.personal_best_l_min
        for frac, label in (
            (1.0, "personal best"),
            (r.criteria.zone_green_percent / 100, f"{r.criteria.zone_green_percent:g} % PB"),
            (r.criteria.zone_red_percent / 100, f"{r.criteria.zone_red_percent:g} % PB"),
        ):
            val = pb * frac
            if y0 <= val <= y1:
                y = y_of(val)
                parts.append(
                    f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" '
                    f'stroke="#2a7a2a" stroke-dasharray="2 3"/>'
                    f'<text x="{left + pw - 4}" y="{y - 3:.1f}" text-anchor="end">'
                    f"{h.escape(label)}</text>"
                )
    for i, d in enumerate(r.days):
        x = x_of(i)
        parts.append(
            f'<text x="{x:.1f}" y="{top + ph + 14}" text-anchor="end" '
            f'transform="rotate(-45 {x:.1f} {top + ph + 14})">'
            f"{h.escape(d.date.isoformat()[5:])}</text>"
        )
    parts.append(
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>'
    )
    for label, attr, colour, dashed, filled, shape in _SERIES:
        points: list[tuple[int, float]] = [
            (i, getattr(d, attr)) for i, d in enumerate(r.days) if getattr(d, attr) is not None
        ]
        dash = ' stroke-dasharray="5 4"' if dashed else ""
        run: list[tuple[int, float]] = []
        for p in [*points, (-2, 0.0)]:  # sentinel flushes the last run
            if run and p[0] != run[-1][0] + 1:
                if len(run) > 1:
                    pts = " ".join(f"{x_of(i):.1f},{y_of(val):.1f}" for i, val in run)
                    parts.append(
                        f'<polyline points="{pts}" fill="none" stroke="{colour}" '
                        f'stroke-width="1.6"{dash}/>'
                    )
                run = []
            run.append(p)
        for i, val in points:
            title = f"{r.days[i].date.isoformat()} {label}: {_v(val)} L/min"
            parts.append(_marker(shape, x_of(i), y_of(val), colour, filled, title))
    # legend
    lx, ly = left, height - 10
    for k, (label, _, colour, dashed, filled, shape) in enumerate(_SERIES):
        x = lx + k * 142
        dash = ' stroke-dasharray="5 4"' if dashed else ""
        parts.append(
            f'<line x1="{x}" y1="{ly - 4}" x2="{x + 24}" y2="{ly - 4}" stroke="{colour}" '
            f'stroke-width="1.6"{dash}/>'
        )
        parts.append(_marker(shape, x + 12, ly - 4, colour, filled, label))
        parts.append(f'<text x="{x + 30}" y="{ly}">{h.escape(label)}</text>')
    x = lx + len(_SERIES) * 142
    parts.append(f'<rect x="{x}" y="{ly - 10}" width="24" height="12" fill="#fff3cd"/>')
    parts.append(f'<text x="{x + 30}" y="{ly}">meets a criterion</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _html_table(r: DiaryReport) -> str:
    heads = [name for name, _ in _COLUMNS] + ["Missing"]
    rows = [
        "<table><thead><tr>"
        + "".join(
            f'<th class="l">{h.escape(x)}</th>'
            if i in (0, len(heads) - 1)
            else f"<th>{h.escape(x)}</th>"
            for i, x in enumerate(heads)
        )
        + "</tr></thead><tbody>"
    ]
    for d in r.days:
        cls = "meets" if (d.diurnal_meets or d.bd_meets) else ("nodata" if not d.n_blows else "")
        cells = _day_cells(d)
        tds = [f'<td class="l">{h.escape(cells[0])}</td>']
        tds += [f"<td>{h.escape(c)}</td>" for c in cells[1:]]
        tds.append(f'<td class="l">{h.escape("; ".join(d.missing))}</td>')
        rows.append((f'<tr class="{cls}">' if cls else "<tr>") + "".join(tds) + "</tr>")
    rows.append("</tbody></table>")
    return "\n".join(rows)


def render_html(r: DiaryReport) -> str:
    """A self-contained HTML page (inline CSS and SVG, no scripts, no external assets)."""
    crit = []
    for c in (r.diurnal, r.bd):
        days = ", ".join(x.isoformat() for x in c.days_meeting) or "none"
        cls = "crit met" if c.met else "crit"
        crit.append(
            f'<p class="{cls}">{h.escape(_criterion_label(c))}: {h.escape(c.statement)}.'
            f"<br>Days meeting it: {h.escape(days)}. Source: {h.escape(c.source)}.</p>"
        )
    notes = "".join(f"<li>{h.escape(n)}</li>" for n in r.notes)
    title = f"PEF diary {r.first_date.isoformat()} to {r.last_date.isoformat()}"
    body = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{h.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{h.escape(title)}</h1>",
        f'<p class="meta">{h.escape(_period_line(r))}</p>',
        f'<p class="meta">{h.escape(_convention_line(r))}</p>',
        "<h2>Criteria</h2>",
        *crit,
        f'<p class="meta">{h.escape(_mean_line(r))}</p>',
        "<h2>Daily best values</h2>",
        render_svg(r),
        "<h2>Days</h2>",
        _html_table(r),
        "<h2>Notes</h2>" + (f"<ul>{notes}</ul>" if notes else "<p>None.</p>"),
        f'<p class="disclaimer">{h.escape(r.disclaimer)}</p>',
        "</body></html>",
    ]
    return "\n".join(body) + "\n"


# --------------------------------------------------------------------------- command


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PefDiaryError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise PefDiaryError(exc.strerror or str(exc)) from None


def _convention(name: str) -> Convention:
    for c in CONVENTIONS:
        if name.strip().lower() == c:
            return c
    raise PefDiaryError(f"convention {name!r} is not one of {', '.join(CONVENTIONS)}")


def run(
    path: Path,
    *,
    as_json: bool,
    html: Path | None,
    convention: str,
    post_bd_in_max: bool,
    out: TextIO,
    personal_best: float | None = None,
    err: TextIO | None = None,
) -> int:
    """The body of ``remon pef-report``: 0 when the report was made, 2 on bad input.

    Prints the text (or, with ``as_json``, the JSON) report to ``out``; writes the HTML page to
    ``html`` when given. Errors go to ``err`` (default ``sys.stderr``) as ``error: FILE: ...``.
    """
    errs = err if err is not None else sys.stderr

    def fail(where: Path, exc: Exception) -> int:
        print(f"error: {where}: {exc}", file=errs)
        return 2

    try:
        report = analyse_diary(
            parse_pef_csv(_read(path)),
            convention=_convention(convention),
            post_bd_in_max=post_bd_in_max,
            personal_best_l_min=personal_best,
        )
    except PefDiaryError as exc:
        return fail(path, exc)
    if html is not None:
        try:
            html.write_text(render_html(report), encoding="utf-8")
        except OSError as exc:
            return fail(html, PefDiaryError(exc.strerror or str(exc)))
    if as_json:
        json.dump(report_to_json(report), out, indent=2, ensure_ascii=False)
        out.write("\n")
    else:
        out.write(render_text(report))
        if html is not None:
            out.write(f"HTML report written to {html}\n")
    return 0
