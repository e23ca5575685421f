"""SVG charts of the web UI (cloud_ingest.web.charts): geometry inverted back to the data.

Every chart is parsed as XML; the plot area's data attributes give the linear pixel <-> value
mapping, and the drawn points are mapped back and compared with the analysed values they come
from (within 0.01 px: coordinates are written with 2 decimals).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, time, timedelta
from xml.etree import ElementTree as ET
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud_ingest.analytics.bp import BpReading, home_bp_summary
from cloud_ingest.analytics.cgm_metrics import agp_profile, bands_for, cgm_metrics
from cloud_ingest.analytics.pef_diary import Blow, DiaryReport, analyse_diary
from cloud_ingest.web.charts import (
    AGP_TEXT_EN,
    BP_TEXT_EN,
    DOSE_TEXT_EN,
    PEF_TEXT_EN,
    TIR_TEXT_EN,
    DoseMark,
    DoseStatus,
    agp_svg,
    bp_series_svg,
    dose_timeline_svg,
    pef_diary_svg,
    sparkline_svg,
    tir_bar_svg,
)
from device_profiles.clinical import HOME_BP_THRESHOLD_DIA, HOME_BP_THRESHOLD_SYS

NS = "{http://www.w3.org/2000/svg}"
HEL = ZoneInfo("Europe/Helsinki")
D0 = date(2026, 3, 2)


# --------------------------------------------------------------------------- helpers


def parse(svg: str) -> ET.Element:
    """Parse and check the accessible frame every chart shares."""
    root = ET.fromstring(svg)
    assert root.tag == f"{NS}svg"
    assert root.get("role") == "img"
    assert root.get("width") == "100%"
    vb = [float(x) for x in (root.get("viewBox") or "").split()]
    assert len(vb) == 4
    assert vb[2] > 0
    assert vb[3] > 0
    ids = (root.get("aria-labelledby") or "").split()
    assert len(ids) == 2
    title = root.find(f"{NS}title")
    desc = root.find(f"{NS}desc")
    assert title is not None
    assert desc is not None
    assert (title.get("id"), desc.get("id")) == tuple(ids)
    assert (title.text or "").strip()
    assert (desc.text or "").strip()
    assert root.find(f".//{NS}script") is None
    assert "style=" not in svg  # presentation attributes only (strict CSP)
    return root


class Frame:
    """The plot area's mapping, read from its data attributes."""

    def __init__(self, root: ET.Element) -> None:
        plots = root.findall(f".//{NS}g[@class='plot']")
        assert len(plots) == 1
        self.el = plots[0]
        a = {
            k: float(self.el.get(f"data-{k}") or "nan")
            for k in ("x0", "x1", "vmin", "vmax", "y0", "y1", "ymin", "ymax")
        }
        self.x0, self.x1, self.vmin, self.vmax = a["x0"], a["x1"], a["vmin"], a["vmax"]
        self.y0, self.y1, self.ymin, self.ymax = a["y0"], a["y1"], a["ymin"], a["ymax"]
        assert self.y0 > self.y1  # y0 is the bottom

    def vx(self, px: float) -> float:
        return self.vmin + (px - self.x0) / (self.x1 - self.x0) * (self.vmax - self.vmin)

    def vy(self, py: float) -> float:
        return self.ymin + (py - self.y0) / (self.y1 - self.y0) * (self.ymax - self.ymin)

    def tol_x(self, px: float = 0.01) -> float:
        return abs(self.vmax - self.vmin) / abs(self.x1 - self.x0) * px

    def tol_y(self, px: float = 0.01) -> float:
        return abs(self.ymax - self.ymin) / abs(self.y0 - self.y1) * px

    def series(self, name: str) -> ET.Element:
        found = self.el.findall(f".//*[@data-series='{name}']")
        assert len(found) == 1, (name, len(found))
        return found[0]


def translate(el: ET.Element) -> tuple[float, float]:
    m = re.fullmatch(r"translate\(([-\d.]+) ([-\d.]+)\)", el.get("transform") or "")
    assert m, el.get("transform")
    return float(m.group(1)), float(m.group(2))


def markers(el: ET.Element) -> list[ET.Element]:
    return el.findall(f".//{NS}g[@class='pt']")


def polylines(el: ET.Element) -> list[list[tuple[float, float]]]:
    lines = [el] if el.tag == f"{NS}polyline" else el.findall(f".//{NS}polyline")
    out = []
    for line in lines:
        pts = []
        for pair in (line.get("points") or "").split():
            x, y = pair.split(",")
            pts.append((float(x), float(y)))
        out.append(pts)
    return out


def hline_value(fr: Frame, group: ET.Element) -> float:
    line = group.find(f"{NS}line")
    assert line is not None
    assert line.get("y1") == line.get("y2")
    return fr.vy(float(line.get("y1") or "nan"))


def all_text(root: ET.Element) -> str:
    return " ".join(t for t in root.itertext())


def fi_num(value: float, decimals: int) -> str:
    return f"{value:.{decimals}f}".replace(".", ",").replace("-", "\u2212")


def fi_day(d: date) -> str:
    return f"{d.day}.{d.month}."


# --------------------------------------------------------------------------- data


def blows(d: date, session: str, phase: str, *values: float) -> list[Blow]:
    h = 7 if session == "morning" else 20
    t0 = datetime(d.year, d.month, d.day, h, 0 if phase == "pre" else 20)
    return [
        Blow(time=t0 + timedelta(minutes=i), session=session, phase=phase, pef_l_min=v)  # type: ignore[arg-type]
        for i, v in enumerate(values)
    ]


def diary() -> DiaryReport:
    """Six days: day 2 has no evening, day 4 none at all; days 0 and 3 vary >= 20 %."""
    out: list[Blow] = []
    spec: dict[int, tuple[float | None, float | None, float | None, float | None]] = {
        0: (300, 420, 360, None),  # 28.6 %, 120 L/min: meets; BD +20 % (60 L/min): meets
        1: (400, 410, None, None),
        2: (390, None, None, None),
        3: (310, 450, None, 455),  # 31 %: meets
        5: (405, 415, None, None),
    }
    for i, (mpre, epre, mpost, epost) in spec.items():
        d = D0 + timedelta(days=i)
        for s, p, v in (
            ("morning", "pre", mpre),
            ("evening", "pre", epre),
            ("morning", "post", mpost),
            ("evening", "post", epost),
        ):
            if v is not None:
                out += blows(d, s, p, v - 10, v, v - 5)
    return analyse_diary(out, personal_best_l_min=480)


def cgm(unit: str = "mmol/L", *, hole: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """14 days at 5 min: a daily sine plus noise (seeded); ``hole`` drops 02:00-03:00."""
    t = np.arange(0, 14 * 86400, 300, dtype=np.float64) + 1_767_225_600.0  # 2026-01-01
    tod_h = (t % 86400) / 3600
    g = 7.5 + 3 * np.sin((tod_h - 8) / 24 * 2 * np.pi)
    g = g + np.random.default_rng(7).normal(0, 1.2, t.size)
    if hole:
        keep = ~((tod_h >= 2) & (tod_h < 3))
        t, g = t[keep], g[keep]
    if unit == "mg/dL":
        g = np.round(g * 18.016)
    return t, g


# --------------------------------------------------------------------------- PEF diary


def test_pef_points_map_back_to_session_bests() -> None:
    r = diary()
    root = parse(pef_diary_svg(r))
    fr = Frame(root)
    assert fr.vmin == D0.toordinal()
    assert fr.vmax == D0.toordinal() + r.period_days
    for key, attr, off in (
        ("morning-pre", "morning_pre_best", 0.2),
        ("morning-post", "morning_post_best", 0.3),
        ("evening-pre", "evening_pre_best", 0.7),
        ("evening-post", "evening_post_best", 0.8),
    ):
        expected = {d.date: getattr(d, attr) for d in r.days if getattr(d, attr) is not None}
        got = {}
        for m in markers(fr.series(key)):
            x, y = translate(m)
            day = date.fromisoformat(m.get("data-date") or "")
            assert fr.vx(x) == pytest.approx(day.toordinal() + off, abs=fr.tol_x())
            got[day] = fr.vy(y)
        assert got.keys() == expected.keys(), key
        for d, v in expected.items():
            assert got[d] == pytest.approx(v, abs=fr.tol_y()), (key, d)
    # the same bests the analysis chose (the best of 3 blows each)
    assert r.days[0].morning_pre_best == 300
    assert r.days[3].evening_post_best == 455


def test_pef_pre_line_joins_pre_bd_values_and_breaks_at_missing_sessions() -> None:
    r = diary()
    fr = Frame(parse(pef_diary_svg(r)))
    runs = [[fr.vy(y) for _, y in run] for run in polylines(fr.series("pre-line"))]
    # day0 am, pm, day1 am, pm, day2 am | (no day2 pm, no day4) | day3 am, pm | day5 am, pm
    assert [len(run) for run in runs] == [5, 2, 2]
    flat = [v for run in runs for v in run]
    assert flat == pytest.approx([300, 420, 400, 410, 390, 310, 450, 405, 415], abs=fr.tol_y())


def test_pef_shading_reference_lines_and_words() -> None:
    r = diary()
    svg = pef_diary_svg(r)
    root = parse(svg)
    fr = Frame(root)
    shaded = {
        date.fromisoformat(e.get("data-date") or ""): (e.get("data-criterion") or "").split()
        for e in root.findall(f".//{NS}rect[@class='shade']")
    }
    assert {d for d, c in shaded.items() if "diurnal" in c} == set(r.diurnal.days_meeting)
    assert {d for d, c in shaded.items() if "bd" in c} == set(r.bd.days_meeting)
    assert set(r.diurnal.days_meeting) == {D0, D0 + timedelta(days=3)}
    # each shaded column covers its day
    for e in root.findall(f".//{NS}rect[@class='shade']"):
        d = date.fromisoformat(e.get("data-date") or "")
        x = float(e.get("x") or "nan")
        assert fr.vx(x) == pytest.approx(d.toordinal(), abs=fr.tol_x())
    assert hline_value(fr, fr.series("personal-best")) == pytest.approx(480, abs=fr.tol_y())
    assert hline_value(fr, fr.series("zone-80")) == pytest.approx(384, abs=fr.tol_y())
    # 50 % of the best (240) lies below every value: the axis does not stretch to show it
    assert fr.ymin > 240
    assert not fr.el.findall(".//*[@data-series='zone-50']")
    text = all_text(root)
    assert "var 29 %" in text
    assert "BD +20 %" in text
    assert "diurnal variation ≥ 20 % and ≥ 60 L/min" in text  # the criteria, from the report
    legend = {e.get("data-legend") for e in root.findall(f".//{NS}g[@data-legend]")}
    assert {
        "morning-pre",
        "morning-post",
        "evening-pre",
        "evening-post",
        "pre-line",
        "personal-best",
        "shade-diurnal",
        "shade-bd",
    } <= legend
    desc = root.find(f"{NS}desc")
    assert desc is not None
    assert desc.text is not None
    assert desc.text.startswith("6 days from 2 Mar to 7 Mar, 5 with blows.")
    assert "morning 361 L/min, evening 424 L/min" in desc.text  # (300+400+390+310+405)/5
    assert "criterion met on 2 days" in desc.text
    # morning and evening differ by shape as well as colour; pre filled, post hollow
    shapes = {k: {c.tag for c in markers(fr.series(k))[0]} for k in ("morning-pre", "evening-pre")}
    assert f"{NS}circle" in shapes["morning-pre"]
    assert f"{NS}rect" in shapes["evening-pre"]
    pre = markers(fr.series("morning-pre"))[0].find(f"{NS}circle")
    post = markers(fr.series("morning-post"))[0].find(f"{NS}circle")
    assert pre is not None
    assert post is not None
    assert pre.get("fill") == pre.get("stroke")
    assert post.get("fill") == "#ffffff"


def test_pef_criteria_overrides_change_what_is_shaded() -> None:
    from cloud_ingest.analytics.pef_diary import DiaryCriteria

    out: list[Blow] = []
    for i, (am, pm) in enumerate([(300, 420), (340, 420)]):  # 28.6 % and 19.0 %
        d = D0 + timedelta(days=i)
        out += blows(d, "morning", "pre", am) + blows(d, "evening", "pre", pm)
    strict = pef_diary_svg(analyse_diary(out))
    loose = pef_diary_svg(
        analyse_diary(out, criteria=DiaryCriteria(diurnal_percent=15, diurnal_l_min=50))
    )
    assert len(parse(strict).findall(f".//{NS}rect[@class='shade']")) == 1
    root = parse(loose)
    assert len(root.findall(f".//{NS}rect[@class='shade']")) == 2
    assert "≥ 15 % and ≥ 50 L/min" in all_text(root)


# --------------------------------------------------------------------------- AGP


@pytest.mark.parametrize("unit", ["mmol/L", "mg/dL"])
def test_agp_curves_map_back_to_the_profile(unit: str) -> None:
    t, g = cgm(unit)
    prof = agp_profile(t, g, unit=unit)
    root = parse(agp_svg(prof, bands=bands_for(unit), unit=unit))
    fr = Frame(root)
    assert (fr.vmin, fr.vmax) == (0, 1440)
    centres = prof.bin_start_min + prof.bin_minutes / 2
    for p in (5, 25, 50, 75, 95):
        runs = polylines(fr.series("median" if p == 50 else f"p{p}"))
        assert len(runs) == 1
        pts = runs[0]
        assert len(pts) == len(centres) == 96
        xs = np.array([fr.vx(x) for x, _ in pts])
        ys = np.array([fr.vy(y) for _, y in pts])
        np.testing.assert_allclose(xs, centres, atol=fr.tol_x())
        np.testing.assert_allclose(ys, prof.curve(p), atol=fr.tol_y())
    b = bands_for(unit)
    assert hline_value(fr, fr.series("target-low")) == pytest.approx(b.low, abs=fr.tol_y())
    assert hline_value(fr, fr.series("target-high")) == pytest.approx(b.high, abs=fr.tol_y())
    assert {"3.9", "10.0"} <= set(all_text(root).split()) if unit == "mmol/L" else True
    # the bands are filled areas between their percentiles, each edge stroked
    for band in ("p5-p95", "p25-p75"):
        area = fr.series(band)
        assert area.get("class") == "area"
        assert area.findall(f"{NS}path")


def test_agp_daily_overlay_lines_break_at_gaps() -> None:
    t, g = cgm()
    prof = agp_profile(t, g, unit="mmol/L")
    day_pts = [(200.0, 12.25), (30.0, 5.0), (45.0, 5.5), (215.0, 11.0)]  # gap > 60 min
    root = parse(agp_svg(prof, days=[(date(2026, 1, 3), day_pts)]))
    fr = Frame(root)
    days = fr.el.findall(f".//{NS}polyline[@data-series='day']")
    assert [e.get("data-date") for e in days] == ["2026-01-03", "2026-01-03"]
    got = [[(fr.vx(x), fr.vy(y)) for x, y in polylines(e)[0]] for e in days]
    want_runs = ([(30.0, 5.0), (45.0, 5.5)], [(200.0, 12.25), (215.0, 11.0)])
    for run, want in zip(got, want_runs, strict=True):
        for (x, y), (wx, wy) in zip(run, want, strict=True):
            assert x == pytest.approx(wx, abs=fr.tol_x())
            assert y == pytest.approx(wy, abs=fr.tol_y())
    assert "1 single days drawn" in (root.findtext(f"{NS}desc") or "")


def test_agp_median_with_a_hole_is_two_runs() -> None:
    t, g = cgm(hole=True)
    prof = agp_profile(t, g, unit="mmol/L", smooth=False)
    fr = Frame(parse(agp_svg(prof)))
    group = fr.series("median")
    runs = polylines(group)
    # bins 02:00-03:00 (8-11) are NaN: 00:00-02:00 is one run, 03:00-24:00 the other
    assert sorted(len(r) for r in runs) == [8, 84]
    want = prof.curve(50)
    centres = prof.bin_start_min + 7.5
    for run in runs:
        for x, y in run:
            i = int(np.argmin(abs(centres - fr.vx(x))))
            assert fr.vy(y) == pytest.approx(want[i], abs=fr.tol_y())
            assert not 120 <= fr.vx(x) < 180


def test_agp_desc_names_the_median_extremes() -> None:
    t, g = cgm()
    prof = agp_profile(t, g, unit="mmol/L")
    root = parse(agp_svg(prof, num=fi_num))
    med = prof.curve(50)
    desc = root.findtext(f"{NS}desc") or ""
    assert f"Median from {fi_num(float(np.nanmin(med)), 1)} to" in desc
    assert "Target range 3,9-10,0 mmol/L" in desc
    assert str(int(prof.counts.sum())) in desc


def test_agp_unit_mismatch_is_a_caller_error() -> None:
    t, g = cgm()
    prof = agp_profile(t, g, unit="mmol/L")
    with pytest.raises(ValueError, match="mg/dL"):
        agp_svg(prof, unit="mg/dL")
    with pytest.raises(ValueError, match="bands"):
        agp_svg(prof, bands=bands_for("mg/dL"))


# --------------------------------------------------------------------------- TIR


def test_tir_segments_are_proportional_to_the_metrics() -> None:
    # 1000 readings: 12 very low, 38 low, 700 in range, 190 high, 60 very high (mmol/L)
    values = [2.5] * 12 + [3.5] * 38 + [7.0] * 700 + [12.0] * 190 + [16.0] * 60
    t = np.arange(len(values)) * 300.0
    m = cgm_metrics(t, values, unit="mmol/L")
    root = parse(tir_bar_svg(m))
    fr = Frame(root)
    assert (fr.vmin, fr.vmax) == (0, 100)
    keys = ["very_low", "low", "in_range", "high", "very_high"]
    want = [
        m.tbr_level2_percent,
        m.tbr_level1_percent,
        m.tir_percent,
        m.tar_level1_percent,
        m.tar_level2_percent,
    ]
    assert want == pytest.approx([1.2, 3.8, 70, 19, 6])
    left = fr.x0
    for key, pct in zip(keys, want, strict=True):
        seg = fr.series(key)
        x, width = float(seg.get("x") or "nan"), float(seg.get("width") or "nan")
        assert x == pytest.approx(left, abs=0.011)  # stacked left to right, in this order
        assert width / (fr.x1 - fr.x0) * 100 == pytest.approx(pct, abs=fr.tol_x(0.02))
        left = x + width
    assert left == pytest.approx(fr.x1, abs=0.02)
    rows = {e.get("data-row"): " ".join(e.itertext()) for e in root.iter() if e.get("data-row")}
    assert rows["very_low"] == "Very low < 3.0 mmol/L 1 % target < 1 %"
    assert rows["low"] == "Low 3.0-3.8 mmol/L 4 %"
    assert rows["in_range"] == "In range 3.9-10.0 mmol/L 70 % target > 70 %"
    assert rows["high"] == "High 10.1-13.9 mmol/L 19 %"
    assert rows["very_high"] == "Very high > 13.9 mmol/L 6 % target < 5 %"
    assert rows["below-total"] == "Below range (low and very low): 5 %, target < 4 %"
    assert rows["above-total"] == "Above range (high and very high): 25 %, target < 25 %"
    desc = root.findtext(f"{NS}desc") or ""
    assert desc.startswith("Time in range 70 % (target > 70 %).")


def test_tir_mg_dl_limits_and_small_shares() -> None:
    values = [50.0] + [100.0] * 998 + [300.0]  # 0.1 % very low and very high
    m = cgm_metrics(np.arange(1000) * 300.0, values, unit="mg/dL")
    root = parse(tir_bar_svg(m, num=fi_num))
    rows = {e.get("data-row"): " ".join(e.itertext()) for e in root.iter() if e.get("data-row")}
    assert rows["very_low"].startswith("Very low < 54 mg/dL < 1 %")
    assert rows["low"].startswith("Low 54-69 mg/dL 0 %")
    assert rows["high"].startswith("High 181-250 mg/dL 0 %")
    assert rows["in_range"].startswith("In range 70-180 mg/dL > 99 %")
    fr = Frame(root)
    w = float(fr.series("very_low").get("width") or "nan")
    assert w / (fr.x1 - fr.x0) == pytest.approx(0.001, abs=1e-4)


# --------------------------------------------------------------------------- BP


def bp_week(*, high: bool = True) -> list[BpReading]:
    out = []
    for i in range(7):
        for h, m, s, d in ((7, 0, 142, 88), (7, 2, 138, 86), (21, 0, 136, 84), (21, 2, 140, 90)):
            t = datetime(2026, 3, 2 + i, h, m, tzinfo=HEL)
            out.append(BpReading(t, s + i if high else s - 20, d if high else d - 10))
    return out


def test_bp_thresholds_points_and_average() -> None:
    rd = bp_week()
    summ = home_bp_summary(rd, tz="Europe/Helsinki")
    root = parse(bp_series_svg(rd, summary=summ))
    fr = Frame(root)
    assert hline_value(fr, fr.series("threshold-systolic")) == pytest.approx(
        HOME_BP_THRESHOLD_SYS.value, abs=fr.tol_y()
    )
    assert hline_value(fr, fr.series("threshold-diastolic")) == pytest.approx(
        HOME_BP_THRESHOLD_DIA.value, abs=fr.tol_y()
    )
    assert (HOME_BP_THRESHOLD_SYS.value, HOME_BP_THRESHOLD_DIA.value) == (135, 85)
    assert summ.average is not None
    assert hline_value(fr, fr.series("average-systolic")) == pytest.approx(
        summ.average.systolic, abs=fr.tol_y()
    )
    assert hline_value(fr, fr.series("average-diastolic")) == pytest.approx(
        summ.average.diastolic, abs=fr.tol_y()
    )
    # the average spans the used days 2-7 (local midnights)
    line = fr.series("average-systolic").find(f"{NS}line")
    assert line is not None
    x1, x2 = fr.vx(float(line.get("x1") or "nan")), fr.vx(float(line.get("x2") or "nan"))
    assert x1 == pytest.approx(datetime(2026, 3, 3, tzinfo=HEL).timestamp(), abs=fr.tol_x())
    assert x2 == pytest.approx(datetime(2026, 3, 9, tzinfo=HEL).timestamp(), abs=fr.tol_x())
    for key, attr in (("systolic", "systolic"), ("diastolic", "diastolic")):
        pts = [translate(m) for m in markers(fr.series(key))]
        assert len(pts) == len(rd)
        for (x, y), r in zip(pts, sorted(rd, key=lambda r: r.time), strict=True):
            assert fr.vx(x) == pytest.approx(r.time.timestamp(), abs=fr.tol_x())
            assert fr.vy(y) == pytest.approx(getattr(r, attr), abs=fr.tol_y())
        assert len(polylines(fr.series(key))[0]) == len(rd)
    shade = root.findall(f".//{NS}rect[@class='shade']")
    assert [e.get("data-date") for e in shade] == ["2026-03-02"]
    desc = root.findtext(f"{NS}desc") or ""
    assert "Home threshold 135/85 mmHg" in desc
    assert f"from {summ.readings_used} readings, at or above the threshold" in desc
    # systolic and diastolic differ by marker shape and dash, not colour alone
    dia = fr.series("diastolic").find(f"{NS}polyline")
    sy = fr.series("systolic").find(f"{NS}polyline")
    assert dia is not None
    assert sy is not None
    assert dia.get("stroke-dasharray") != sy.get("stroke-dasharray")


def test_bp_without_summary_uses_the_home_threshold_and_a_custom_one_is_followed() -> None:
    rd = bp_week(high=False)
    fr = Frame(parse(bp_series_svg(rd, summary=None, tz="Europe/Helsinki")))
    assert hline_value(fr, fr.series("threshold-systolic")) == pytest.approx(135, abs=fr.tol_y())
    assert not fr.el.findall(".//*[@data-series='average-systolic']")
    summ = home_bp_summary(rd, tz="Europe/Helsinki", threshold=(125.0, 80.0))
    root = parse(bp_series_svg(rd, summary=summ))
    fr = Frame(root)
    assert hline_value(fr, fr.series("threshold-systolic")) == pytest.approx(125, abs=fr.tol_y())
    assert hline_value(fr, fr.series("threshold-diastolic")) == pytest.approx(80, abs=fr.tol_y())
    assert "below the threshold" in (root.findtext(f"{NS}desc") or "")


# --------------------------------------------------------------------------- doses


def test_dose_marks_by_status_count_position_and_shape() -> None:
    start = date(2026, 3, 28)  # Finland moves to summer time on 29 March 2026
    marks = [
        DoseMark(datetime(2026, 3, 28, 8, 0), "taken", datetime(2026, 3, 28, 8, 5)),
        DoseMark(datetime(2026, 3, 28, 20, 0), "missed"),
        DoseMark(
            datetime(2026, 3, 29, 6, 0, tzinfo=UTC),
            "late",  # 09:00 EEST
            datetime(2026, 3, 29, 7, 30, tzinfo=UTC),
        ),
        DoseMark(datetime(2026, 3, 29, 20, 0, tzinfo=HEL), "taken"),
        DoseMark(datetime(2026, 3, 30, 8, 0, tzinfo=HEL), "due"),
        DoseMark(datetime(2026, 3, 31, 8, 0, tzinfo=HEL), "due"),  # outside the 3 days
        DoseMark(datetime(2026, 3, 27, 8, 0, tzinfo=HEL), "missed"),  # before the start
    ]
    root = parse(dose_timeline_svg(marks, start=start, days=3, tz="Europe/Helsinki"))
    fr = Frame(root)
    want = {
        "taken": [(date(2026, 3, 28), 480), (date(2026, 3, 29), 1200)],
        "late": [(date(2026, 3, 29), 540)],
        "missed": [(date(2026, 3, 28), 1200)],
        "due": [(date(2026, 3, 30), 480)],
    }
    tags = {}
    colours = {}
    for status, expected in want.items():
        got = []
        for m in markers(fr.series(status)):
            assert m.get("data-status") == status
            x, y = translate(m)
            row = fr.vy(y)
            d = date.fromordinal(math.floor(row))
            assert row - math.floor(row) == pytest.approx(0.5, abs=fr.tol_y())
            assert d.isoformat() == m.get("data-date")
            got.append((d, round(fr.vx(x), 6)))
            tags[status] = sorted(c.tag for c in m if c.tag != f"{NS}title")
            colours[status] = {c.get("stroke") for c in m if c.get("stroke")} - {"#ffffff"}
        assert sorted(got) == expected, status
    assert tags["missed"] == [f"{NS}path"]
    assert tags["due"] == [f"{NS}circle"]
    assert tags["taken"] == [f"{NS}circle", f"{NS}path"]  # circle with a check mark
    assert len({frozenset(c) for c in colours.values()}) == 4  # and colours differ too
    # the late dose's delay line runs from 09:00 to the intake at 10:30
    delay = fr.el.findall(f".//{NS}line[@class='delay']")
    assert len(delay) == 1
    xs = sorted(fr.vx(float(delay[0].get(k) or "nan")) for k in ("x1", "x2"))
    assert xs == pytest.approx([540, 630], abs=fr.tol_x())
    legend = {
        e.get("data-legend"): " ".join(e.itertext()) for e in root.iter() if e.get("data-legend")
    }
    assert legend == {
        "taken": "taken (2)",
        "late": "late (1)",
        "missed": "missed (1)",
        "due": "due (1)",
    }
    assert (root.findtext(f"{NS}desc") or "").startswith(
        "3 days from 28 Mar to 30 Mar: 2 taken, 1 late, 1 missed, 1 due."
    )


# --------------------------------------------------------------------------- sparkline


def test_sparkline_points_and_latest() -> None:
    t0 = datetime(2026, 3, 2, 8, tzinfo=UTC)
    vals = [(t0 + timedelta(hours=i), v) for i, v in enumerate([120.0, 131.0, 125.0, 140.0])]
    root = parse(sparkline_svg(vals[::-1], unit="mmHg"))
    fr = Frame(root)
    pts = polylines(fr.series("values"))[0]
    assert [fr.vy(y) for _, y in pts] == pytest.approx([v for _, v in vals], abs=fr.tol_y())
    assert [fr.vx(x) for x, _ in pts] == pytest.approx(
        [t.timestamp() for t, _ in vals], abs=fr.tol_x()
    )
    (latest,) = markers(fr.series("latest"))
    assert fr.vy(translate(latest)[1]) == pytest.approx(140.0, abs=fr.tol_y())
    assert "latest 140 mmHg" in (root.findtext(f"{NS}desc") or "")


# --------------------------------------------------------------------------- cross-cutting


def every_chart(
    text: Mapping[str, str] | None = None, chart_id: str | None = None
) -> Iterator[str]:
    """One chart of each kind with data, in the given words (default: English)."""
    rd = bp_week()
    t, g = cgm()
    yield pef_diary_svg(diary(), text=text or PEF_TEXT_EN, chart_id=chart_id)
    yield agp_svg(
        agp_profile(t, g, unit="mmol/L"),
        days=[(D0, [(0.0, 5.0), (30.0, 6.0)])],
        text=text or AGP_TEXT_EN,
        chart_id=chart_id,
    )
    yield tir_bar_svg(cgm_metrics(t, g, unit="mmol/L"), text=text or TIR_TEXT_EN, chart_id=chart_id)
    yield bp_series_svg(
        rd,
        summary=home_bp_summary(rd, tz="Europe/Helsinki"),
        text=text or BP_TEXT_EN,
        chart_id=chart_id,
    )
    statuses: tuple[DoseStatus, ...] = ("taken", "late", "missed", "due")
    yield dose_timeline_svg(
        [DoseMark(datetime(2026, 3, 2, 8, tzinfo=HEL), s) for s in statuses],
        start=D0,
        days=2,
        tz=HEL,
        text=text or DOSE_TEXT_EN,
        chart_id=chart_id,
    )


def _luminance(colour: str) -> float:
    h = colour.lstrip("#")
    if len(h) == 3:
        h = "".join(c * 2 for c in h)
    rgb = [int(h[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(colour: str) -> float:
    return 1.05 / (_luminance(colour) + 0.05)


def test_colours_meet_wcag_aa_against_white() -> None:
    decorative = {"area", "shade", "grid"}
    for svg in every_chart():
        root = parse(svg)
        parents = {c: p for p in root.iter() for c in p}

        def is_decor(e: ET.Element, parents: dict[ET.Element, ET.Element] = parents) -> bool:
            node: ET.Element | None = e
            while node is not None:
                if decorative & set((node.get("class") or "").split()):
                    return True
                node = parents.get(node)
            return False

        checked = 0
        for e in root.iter():
            if is_decor(e) or e.tag == f"{NS}svg":
                continue
            if e.tag == f"{NS}text":
                fill = e.get("fill") or "#000000"
                assert contrast(fill) >= 4.5, (root.get("data-chart"), fill, e.text)
                checked += 1
                continue
            for attr in ("fill", "stroke"):
                c = e.get(attr)
                if c is None or c in ("none", "#ffffff"):
                    continue
                assert contrast(c) >= 3.0, (root.get("data-chart"), e.tag, attr, c)
                checked += 1
        assert checked > 10


def test_hostile_text_is_escaped_and_ids_are_safe() -> None:
    evil = '<script>alert("x")</script> & \' "'
    keys = set(PEF_TEXT_EN) | set(AGP_TEXT_EN) | set(TIR_TEXT_EN) | set(BP_TEXT_EN)
    words = dict.fromkeys(keys | set(DOSE_TEXT_EN), evil + " {unit} {nope}")
    charts = list(every_chart(text=words, chart_id='x" onload="alert(1)'))
    assert len(charts) == 5
    for svg in charts:
        assert "<script" not in svg
        root = parse(svg)
        assert root.get("id") == "x--onload--alert-1-"
        assert "onload" not in root.attrib
        assert root.findtext(f"{NS}title", "").startswith(evil)
        assert "{nope}" in root.findtext(f"{NS}title", "")  # unknown placeholders stay put
        assert all(not k.startswith("on") for e in root.iter() for k in e.attrib)


def test_localised_formatters_and_partial_text() -> None:
    fi = {"title": "PEF-seuranta", "morning_pre": "aamu ennen"}
    root = parse(pef_diary_svg(diary(), text=fi, num=fi_num, day=fi_day))
    assert root.findtext(f"{NS}title") == "PEF-seuranta"
    text = all_text(root)
    assert "aamu ennen" in text
    assert "evening, before BD" in text
    assert "2.3." in text
    assert "7.3." in text
    assert "var 29 %" in text
    t, g = cgm()
    root = parse(
        agp_svg(
            agp_profile(t, g, unit="mmol/L"), num=fi_num, clock=lambda m: f"{m // 60}.{m % 60:02d}"
        )
    )
    text = all_text(root)
    assert "3,9" in text
    assert "10,0" in text
    assert "6.00" in text
    assert "24.00" in text


def test_empty_data_gives_a_no_data_chart() -> None:
    fi = {"no_data": "Ei tietoa tältä jaksolta."}
    charts = [
        pef_diary_svg(None, text=fi),
        agp_svg(None, unit="mmol/L", text=fi),
        tir_bar_svg(None, text=fi),
        bp_series_svg([], summary=None, text=fi),
        bp_series_svg([], summary=home_bp_summary([], tz="Europe/Helsinki"), text=fi),
        dose_timeline_svg([], start=D0, days=7, tz=HEL, text=fi),
        dose_timeline_svg(
            [DoseMark(datetime(2026, 1, 1, 8, tzinfo=HEL), "due")],
            start=D0,
            days=7,
            tz=HEL,
            text=fi,
        ),
        dose_timeline_svg([], start=D0, days=0, tz=HEL, text=fi),
        sparkline_svg([], text=fi),
    ]
    for svg in charts:
        root = parse(svg)
        assert root.get("data-empty") == "true"
        assert "Ei tietoa tältä jaksolta." in all_text(root)
        assert root.find(f".//{NS}g[@class='plot']") is None


def test_two_charts_on_one_page_get_distinct_ids() -> None:
    a = parse(tir_bar_svg(None, chart_id="tir-14d"))
    b = parse(tir_bar_svg(None, chart_id="tir-90d"))
    ids_a = {e.get("id") for e in a.iter() if e.get("id")}
    ids_b = {e.get("id") for e in b.iter() if e.get("id")}
    assert ids_a
    assert not ids_a & ids_b


# --------------------------------------------------------------------------- properties

finite = st.floats(allow_nan=False, allow_infinity=False)
moments = st.datetimes(
    min_value=datetime(1971, 1, 2),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, HEL, ZoneInfo("America/St_Johns")]),
)


def well_formed(svg: str) -> ET.Element:
    root = parse(svg)
    assert not re.search(r"\b(nan|inf)\b", svg, re.IGNORECASE)
    return root


@given(st.lists(st.tuples(moments, finite, finite), max_size=30))
def test_property_bp_any_finite_readings(rows: list[tuple[datetime, float, float]]) -> None:
    well_formed(bp_series_svg([BpReading(t, s, d) for t, s, d in rows], summary=None))


@given(st.lists(st.tuples(moments, finite), max_size=30), st.integers(-3, 9))
def test_property_sparkline_any_finite_values(vals: list[tuple[datetime, float]], dec: int) -> None:
    well_formed(sparkline_svg(vals, decimals=dec))


@given(
    st.lists(
        st.tuples(
            st.dates(min_value=date(1971, 1, 1), max_value=date(2100, 1, 1)),
            st.lists(st.tuples(finite, finite), max_size=20),
        ),
        max_size=4,
    ),
    st.lists(st.floats(min_value=1.0, max_value=30.0), min_size=1, max_size=50),
)
def test_property_agp_any_finite_overlay(
    days: list[tuple[date, list[tuple[float, float]]]], values: list[float]
) -> None:
    t = np.arange(len(values)) * 977.0
    well_formed(agp_svg(agp_profile(t, values, unit="mmol/L"), days=days))


@given(
    st.lists(
        st.tuples(
            moments, st.sampled_from(["taken", "late", "missed", "due"]), st.none() | moments
        ),
        max_size=30,
    ),
    st.dates(min_value=date(1971, 1, 1), max_value=date(2099, 1, 1)),
    st.integers(-2, 40),
)
def test_property_doses_any_marks(
    rows: list[tuple[datetime, str, datetime | None]], start: date, days: int
) -> None:
    marks = [DoseMark(s, status, at) for s, status, at in rows]  # type: ignore[arg-type]
    well_formed(dose_timeline_svg(marks, start=start, days=days, tz=HEL))


@given(
    st.lists(
        st.tuples(
            st.integers(0, 20),
            st.sampled_from(["morning", "evening"]),
            st.sampled_from(["pre", "post"]),
            st.floats(min_value=1e-6, max_value=1e12),
        ),
        min_size=1,
        max_size=40,
    ),
    st.none() | st.floats(min_value=1e-3, max_value=1e9),
)
def test_property_pef_any_positive_blows(
    rows: list[tuple[int, str, str, float]], pb: float | None
) -> None:
    bl = [
        Blow(
            time=datetime.combine(
                D0 + timedelta(days=i), time(7 if s == "morning" else 20, k % 60)
            ),
            session=s,  # type: ignore[arg-type]
            phase=p,  # type: ignore[arg-type]
            pef_l_min=v,
        )
        for k, (i, s, p, v) in enumerate(rows)
    ]
    well_formed(pef_diary_svg(analyse_diary(bl, personal_best_l_min=pb)))


@given(st.lists(st.floats(min_value=1.1, max_value=33.3), min_size=1, max_size=60))
def test_property_tir_any_readings(values: list[float]) -> None:
    root = well_formed(
        tir_bar_svg(cgm_metrics(np.arange(len(values)) * 300.0, values, unit="mmol/L"))
    )
    fr = Frame(root)
    widths = [
        float(fr.series(k).get("width") or "nan")
        for k in ("very_low", "low", "in_range", "high", "very_high")
    ]
    assert sum(widths) == pytest.approx(fr.x1 - fr.x0, abs=0.05)
