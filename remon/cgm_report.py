"""``remon cgm-report FILE.csv``: CGM consensus metrics and the AGP per subject from a CSV.

Input: the open ``id,time,gl`` format (iglu's; one row per reading, several subjects, rows in
any order). ``time`` is an ISO date and time ("YYYY-MM-DD HH:MM:SS", "T" or seconds optional)
on the local wall clock, without a UTC offset; ``gl`` is a number in mg/dL or mmol/L. Other
columns are ignored (and said so). Rows are numbered as the file's lines (the header is row 1).

Unit: ``--unit`` states it; without it the unit is inferred and the report says so: every value
<= 35 -> mmol/L, otherwise mg/dL. Values <= 35 next to values > 35 (in one subject, or one
subject's against another's) look like mixed units and are an error naming the rows. With
``--unit mmol/L`` a value > 40 looks like mg/dL: an error naming the row.

Errors (exit 2, ``error: row N: ...`` on stderr): an empty file or no readings; a missing
column; an unparsable, non-finite or non-numeric ``gl`` (LOW/HIGH/NA included); an unparsable
time or one with a UTC offset; a value outside remon's plausible range 20-600 mg/dL or 1.1-33.3
mmol/L (never clamped); two readings of one subject at the same time with different values
(both rows named). Identical duplicate rows (same id, time and value) are kept once and counted
in the subject's notes.

``--agp OUT.png`` writes the AGP picture: to OUT.png for a single subject, to OUT-<id>.png for
each subject of a multi-subject file (characters other than letters, digits, ``.``, ``_`` and
``-`` in the id become ``_``).

JSON (``--json``): an object keyed by subject id, in the order subjects first appear; each value
holds the metrics of :func:`cloud_ingest.analytics.cgm_metrics.metrics_dict` plus ``unit``,
``unit_inferred``, ``period_start``/``period_end`` (ISO, local), ``duplicates_dropped``,
``notes`` and, with ``--agp``, ``agp_png`` (the path written).
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

from cloud_ingest.analytics.cgm_metrics import (
    GLUCOSE_UNITS,
    MMOL_L_LOOKS_LIKE_MG_DL_ABOVE,
    PLAUSIBLE_GLUCOSE,
    UNIT_INFERENCE_MAX_MMOL_L,
    CgmMetrics,
    agp_profile,
    cgm_metrics,
    first_implausible,
    format_glucose,
    metrics_dict,
)
from device_profiles.clinical import CGM_SUFFICIENT_ACTIVE_PERCENT, CGM_SUFFICIENT_DAYS

REQUIRED_COLUMNS = ("id", "time", "gl")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


class CgmDataError(ValueError):
    """The CSV cannot be analysed; the message names the row."""


@dataclass
class Subject:
    """One subject's readings, sorted by time, duplicates resolved."""

    id: str
    rows: npt.NDArray[np.int64]
    times: npt.NDArray[np.datetime64]
    values: npt.NDArray[np.float64]
    duplicates_dropped: list[int] = field(default_factory=list)  # rows kept once


@dataclass
class CgmFile:
    subjects: list[Subject]
    unit: str
    unit_inferred: bool
    unit_reason: str
    ignored_columns: tuple[str, ...]


def normalise_unit(unit: str | None) -> str | None:
    """ "mg/dL" or "mmol/L" (any letter case), or None; anything else is a :class:`CgmDataError`."""
    if unit is None:
        return None
    for u in GLUCOSE_UNITS:
        if unit.strip().lower() == u.lower():
            return u
    raise CgmDataError(f"unknown unit {unit!r}: use mg/dL or mmol/L")


def _parse_time(text: str, row: int) -> datetime:
    s = text.strip()
    try:
        t = datetime.fromisoformat(s)
    except ValueError:
        raise CgmDataError(
            f"row {row}: time {text!r} is not a date and time like 2024-05-01 08:15:00"
        ) from None
    if len(s) <= 10:  # a date alone
        raise CgmDataError(f"row {row}: time {text!r} has no time of day")
    if t.tzinfo is not None:
        raise CgmDataError(
            f"row {row}: time {text!r} has a UTC offset; give local wall-clock times without one"
        )
    return t


def _parse_gl(text: str, row: int) -> float:
    try:
        v = float(text.strip())
    except ValueError:
        raise CgmDataError(f"row {row}: gl {text!r} is not a number") from None
    if not math.isfinite(v):
        raise CgmDataError(f"row {row}: gl {text!r} is not a finite number")
    return v


@dataclass
class _Raw:
    rows: list[int] = field(default_factory=list)
    times: list[datetime] = field(default_factory=list)
    values: list[float] = field(default_factory=list)


def _read_rows(lines: Iterable[str]) -> tuple[dict[str, _Raw], tuple[str, ...]]:
    reader = csv.reader(lines)
    header: list[str] | None = None
    for header_row in reader:
        if any(c.strip() for c in header_row):
            header = [c.strip() for c in header_row]
            break
    if header is None:
        raise CgmDataError("the file is empty")
    header_line = reader.line_num
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise CgmDataError(
            f"row {header_line}: the header lacks column(s) {', '.join(missing)}; "
            f"expected {','.join(REQUIRED_COLUMNS)}"
        )
    for c in REQUIRED_COLUMNS:
        if header.count(c) > 1:
            raise CgmDataError(f"row {header_line}: column {c!r} appears twice in the header")
    i_id, i_time, i_gl = (header.index(c) for c in REQUIRED_COLUMNS)
    ignored = tuple(c for c in header if c not in REQUIRED_COLUMNS)
    raw: dict[str, _Raw] = {}
    for rec in reader:
        row = reader.line_num
        if not any(c.strip() for c in rec):
            continue  # a blank line holds no reading
        if len(rec) != len(header):
            raise CgmDataError(f"row {row}: {len(rec)} fields, the header has {len(header)}")
        sid = rec[i_id].strip()
        if not sid:
            raise CgmDataError(f"row {row}: empty id")
        r = raw.setdefault(sid, _Raw())
        r.rows.append(row)
        r.times.append(_parse_time(rec[i_time], row))
        r.values.append(_parse_gl(rec[i_gl], row))
    if not raw:
        raise CgmDataError("the file has a header but no readings")
    return raw, ignored


def _resolve_unit(subjects: list[Subject], unit: str | None) -> tuple[str, bool, str]:
    limit = UNIT_INFERENCE_MAX_MMOL_L.value
    if unit == "mmol/L":
        above = MMOL_L_LOOKS_LIKE_MG_DL_ABOVE.value
        for s in subjects:
            hit = np.flatnonzero(s.values > above)
            if hit.size:
                i = int(hit[0])
                raise CgmDataError(
                    f"row {s.rows[i]}: gl {s.values[i]:g} > {above:g} looks like mg/dL, but the "
                    "unit was given as mmol/L"
                )
        return unit, False, "given"
    if unit == "mg/dL":
        return unit, False, "given"
    # Inferred: a subject is mmol/L-like when all its values are <= the limit.
    low_like = [s for s in subjects if float(s.values.max()) <= limit]
    high_like = [s for s in subjects if float(s.values.max()) > limit]
    if not high_like:
        return "mmol/L", True, f"all values <= {limit:g}"
    if low_like:
        a, b = low_like[0], high_like[0]
        j = int(np.argmax(b.values))
        raise CgmDataError(
            f"row {a.rows[0]}: units look mixed: all of subject {a.id!r}'s values are "
            f"<= {limit:g} (mmol/L-like) while row {b.rows[j]} (subject {b.id!r}) has "
            f"{b.values[j]:g} (mg/dL-like); split the file or pass --unit"
        )
    for s in high_like:
        low = np.flatnonzero(s.values <= limit)
        if low.size:
            i, j = int(low[0]), int(np.argmax(s.values))
            raise CgmDataError(
                f"row {s.rows[i]}: units look mixed: gl {s.values[i]:g} (<= {limit:g}, "
                f"mmol/L-like) while row {s.rows[j]} of subject {s.id!r} has "
                f"{s.values[j]:g} (mg/dL-like); pass --unit mg/dL if the low values are mg/dL"
            )
    return "mg/dL", True, f"values above {limit:g}"


def _check_plausible(s: Subject, unit: str) -> None:
    i = first_implausible(s.values, unit)
    if i is None:
        return
    lo, hi = (f.value for f in PLAUSIBLE_GLUCOSE[unit])
    hint = ""
    if unit == "mg/dL" and s.values[i] <= UNIT_INFERENCE_MAX_MMOL_L.value:
        hint = " (mmol/L?)"
    raise CgmDataError(
        f"row {s.rows[i]}: gl {s.values[i]:g} {unit} is outside the plausible range "
        f"{lo:g}-{hi:g} {unit}{hint} (remon default limits; values are never clamped)"
    )


def _dedupe(s: Subject) -> Subject:
    order = np.argsort(s.times, kind="stable")
    rows, times, values = s.rows[order], s.times[order], s.values[order]
    same = np.flatnonzero(times[1:] == times[:-1])
    keep = np.ones(times.shape[0], dtype=bool)
    dropped: list[int] = []
    for k in same:
        i = int(k)
        if values[i] != values[i + 1]:
            raise CgmDataError(
                f"rows {rows[i]} and {rows[i + 1]}: subject {s.id!r} has two readings at "
                f"{_text(times[i])} with different values "
                f"({values[i]:g} and {values[i + 1]:g})"
            )
        keep[i + 1] = False
        dropped.append(int(rows[i + 1]))
    return Subject(s.id, rows[keep], times[keep], values[keep], sorted(dropped))


def parse_cgm_csv(lines: Iterable[str], *, unit: str | None = None) -> CgmFile:
    """Parse and validate the ``id,time,gl`` CSV (lines of text); raise :class:`CgmDataError`."""
    given = normalise_unit(unit)
    raw, ignored = _read_rows(lines)
    subjects = [
        Subject(
            sid,
            np.asarray(r.rows, dtype=np.int64),
            np.asarray(r.times, dtype="datetime64[us]"),
            np.asarray(r.values, dtype=np.float64),
        )
        for sid, r in raw.items()
    ]
    resolved, inferred, reason = _resolve_unit(subjects, given)
    for s in subjects:
        _check_plausible(s, resolved)
    return CgmFile([_dedupe(s) for s in subjects], resolved, inferred, reason, ignored)


def _text(t: np.datetime64) -> str:
    """A local wall-clock time as "YYYY-MM-DD HH:MM:SS" (fractions only when present)."""
    dt: datetime = t.astype("datetime64[us]").item()
    return dt.isoformat(sep=" ")


def _iso(seconds: float) -> str:
    return _text(np.datetime64(round(seconds * 1e6), "us"))


def subject_report(s: Subject, f: CgmFile, m: CgmMetrics) -> dict[str, Any]:
    """JSON-ready report of one subject."""
    d = metrics_dict(m)
    notes: list[str] = []
    if f.unit_inferred:
        notes.append(f"unit inferred as {f.unit} ({f.unit_reason}); pass --unit to state it")
    if s.duplicates_dropped:
        shown = ", ".join(str(r) for r in s.duplicates_dropped[:10])
        more = " ..." if len(s.duplicates_dropped) > 10 else ""
        notes.append(
            f"{len(s.duplicates_dropped)} identical duplicate row(s) kept once "
            f"(dropped rows {shown}{more})"
        )
    d.update(
        unit_inferred=f.unit_inferred,
        period_start=_iso(m.period_start_s),
        period_end=_iso(m.period_end_s),
        duplicates_dropped=len(s.duplicates_dropped),
        notes=notes + d["notes"],
    )
    return d


def _fmt(v: float | None, spec: str, suffix: str = "") -> str:
    return "n/a" if v is None else f"{v:{spec}}{suffix}"


def format_text(name: str, f: CgmFile, reports: dict[str, dict[str, Any]]) -> str:
    """The human-readable report."""
    u = f.unit
    b = {
        k: format_glucose(v, u)
        for k, v in next(iter(reports.values()))["bands"].items()
        if k not in {"unit", "source"}
    }
    how = f"inferred: {f.unit_reason}; pass --unit to state it" if f.unit_inferred else "given"
    lines = [
        f"CGM report: {name}: {len(reports)} subject(s), unit {u} ({how})",
        f"Ranges in {u} (Battelino 2019 consensus, % of readings): very low (TBR2) "
        f"< {b['very_low']}; low (TBR1) {b['very_low']} to < {b['low']}; "
        f"in range (TIR) {b['low']}-{b['high']}; high (TAR1) > {b['high']} to "
        f"{b['very_high']}; very high (TAR2) > {b['very_high']}",
    ]
    if f.ignored_columns:
        lines.append(f"Columns ignored: {', '.join(f.ignored_columns)}")
    for sid, r in reports.items():
        interval = _fmt(r["interval_min"], "g", " min")
        if r["interval_inferred"]:
            interval += " (median gap)"
        suff = "yes" if r["sufficient"] else "no"
        lines += [
            "",
            f"{sid}: {r['period_start']} to {r['period_end']}",
            f"  readings {r['readings']}, days {r['days']:.1f}, interval {interval}, "
            f"sensor active {_fmt(r['active_percent'], '.1f', ' %')}, "
            f"sufficient (>= {CGM_SUFFICIENT_DAYS.value:g} days, "
            f">= {CGM_SUFFICIENT_ACTIVE_PERCENT.value:g} % active): {suff}",
            f"  mean {r['mean_mmol_l']:.1f} mmol/L ({r['mean_mg_dl']:.0f} mg/dL), "
            f"SD {_fmt(r['sd_mmol_l'], '.2f', ' mmol/L')} ({_fmt(r['sd_mg_dl'], '.1f', ' mg/dL')}),"
            f" CV {_fmt(r['cv_percent'], '.1f', ' %')}, "
            f"GMI {r['gmi_percent']:.1f} % ({r['gmi_mmol_mol']:.0f} mmol/mol)",
            f"  TBR2 {r['tbr_level2_percent']:.1f} %, TBR1 {r['tbr_level1_percent']:.1f} %, "
            f"TIR {r['tir_percent']:.1f} %, TAR1 {r['tar_level1_percent']:.1f} %, "
            f"TAR2 {r['tar_level2_percent']:.1f} %",
        ]
        if r.get("agp_png"):
            lines.append(f"  AGP: {r['agp_png']}")
        lines += [f"  note: {n}" for n in r["notes"]]
    return "\n".join(lines) + "\n"


def agp_paths(out: Path, ids: list[str]) -> dict[str, Path]:
    """Where each subject's AGP goes: ``out`` itself for one subject, else ``out-<id>.png``."""
    if len(ids) == 1:
        return {ids[0]: out}
    suffix = out.suffix or ".png"
    paths: dict[str, Path] = {}
    used: set[str] = set()
    for sid in ids:
        stem = f"{out.stem}-{_SAFE_NAME.sub('_', sid)}"
        name, k = stem, 2
        while name in used:  # two ids that differ only in unsafe characters
            name, k = f"{stem}-{k}", k + 1
        used.add(name)
        paths[sid] = out.with_name(name + suffix)
    return paths


def _period(r: dict[str, Any]) -> str:
    return f"{r['period_start'][:16]} to {r['period_end'][:16]}"


def analyse(f: CgmFile) -> tuple[dict[str, dict[str, Any]], dict[str, CgmMetrics]]:
    """Metrics per subject: the JSON-ready reports and the metrics objects."""
    reports: dict[str, dict[str, Any]] = {}
    metrics: dict[str, CgmMetrics] = {}
    for s in f.subjects:
        m = cgm_metrics(s.times, s.values, unit=f.unit)
        metrics[s.id] = m
        reports[s.id] = subject_report(s, f, m)
    return reports, metrics


def run(path: Path, *, unit: str | None, as_json: bool, agp: Path | None, out: TextIO) -> int:
    """The command body: 0 on success, 2 on bad input (``error: ...`` on stderr)."""
    try:
        if agp is not None:
            from cloud_ingest.analytics.agp_png import AgpUnavailableError, require_matplotlib

            try:
                require_matplotlib()
            except AgpUnavailableError as exc:
                raise CgmDataError(str(exc)) from None
        try:
            with path.open(encoding="utf-8-sig", newline="") as fh:
                f = parse_cgm_csv(fh, unit=unit)
        except (OSError, UnicodeDecodeError) as exc:
            raise CgmDataError(f"cannot read {path}: {exc}") from None
        reports, metrics = analyse(f)
        if agp is not None:
            from cloud_ingest.analytics.agp_png import render_agp_png

            paths = agp_paths(agp, [s.id for s in f.subjects])
            for s in f.subjects:
                profile = agp_profile(s.times, s.values, unit=f.unit)
                png = render_agp_png(
                    profile, metrics[s.id], subject=s.id, period=_period(reports[s.id])
                )
                try:
                    paths[s.id].write_bytes(png)
                except OSError as exc:
                    raise CgmDataError(f"cannot write {paths[s.id]}: {exc}") from None
                reports[s.id]["agp_png"] = str(paths[s.id])
    except CgmDataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if as_json:
        out.write(json.dumps(reports, indent=2, allow_nan=False) + "\n")
    else:
        out.write(format_text(str(path), f, reports))
    return 0
