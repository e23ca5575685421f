"""CGM consensus metrics, the AGP and ``remon cgm-report``, checked against iglu-python.

iglu-python 0.4.3 (an independent implementation of the same metrics, a dev dependency, GPL:
run here, never imported by the product) computes the metrics on the same data; the tolerances
are stated at :data:`TOL`. Its wheel ships no example data, so the example is ours:
``tests/data/cgm_example.csv``, generated deterministically by :func:`example_csv` (regenerate
with ``python -m tests.test_cgm_metrics``; a test checks the file matches).

Known definitional differences, documented and tested as such:
- ``days``: remon's wear period is span + one reading interval; iglu's ``ndays`` is the span
  rounded to 0.1 d.
- mmol/L data: iglu's ``below_percent``/``above_percent`` truncate their thresholds to integers
  (3.9 -> 3), so for mmol/L data the comparison runs iglu on the values x 10 with thresholds
  30/39/100/139 (exact for values with one decimal, as mmol/L data is written).
"""

from __future__ import annotations

import io
import json
import math
import random
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import iglu_python as iglu
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_ingest.analytics import agp_png
from cloud_ingest.analytics.cgm_metrics import (
    CgmMetrics,
    agp_profile,
    cgm_metrics,
    first_implausible,
)
from device_profiles.clinical import GLUCOSE_BANDS
from device_profiles.units import GLUCOSE_MG_DL_PER_MMOL_L as K
from remon.cgm_report import CgmDataError, agp_paths, analyse, parse_cgm_csv, run

DATA = Path(__file__).parent / "data" / "cgm_example.csv"
T0 = datetime(2024, 3, 4, 0, 0, 0)
MIN = 60.0

#: Agreement with iglu required per metric (absolute).
TOL: dict[str, float] = {
    "mean": 1e-9,
    "sd": 1e-9,
    "cv": 1e-9,
    "gmi": 1e-9,
    "tir": 1e-9,
    "tbr1": 1e-9,
    "tbr2": 1e-9,
    "tar1": 1e-9,
    "tar2": 1e-9,
    "active": 1e-9,
    "days_vs_ndays": 0.05,  # after removing the one-interval difference; iglu rounds to 0.1 d
}


# --------------------------------------------------------------------------- data builders


def example_csv() -> str:
    """A small three-subject mg/dL example in iglu's format (deterministic)."""
    rng = random.Random(20240304)
    lines = ["id,time,gl"]
    specs = [
        # id, start, minutes between readings, readings, base, gap (start index, length)
        ("Subject 1", datetime(2024, 3, 4, 0, 2, 31), 5, 288, 140.0, None),
        ("Subject 2", datetime(2024, 3, 4, 6, 7, 0), 15, 192, 175.0, (60, 12)),
        ("Subject 3", datetime(2024, 3, 5, 0, 1, 5), 5, 288, 118.0, (100, 30)),
    ]
    for sid, start, every, n, base, gap in specs:
        noise = 0.0
        for i in range(n):
            if gap and gap[0] <= i < gap[0] + gap[1]:
                continue
            t = start + timedelta(minutes=every * i)
            h = t.hour + t.minute / 60
            meals = sum(
                a * math.exp(-(((h - c) / 1.2) ** 2)) for c, a in ((8, 70), (12.5, 60), (18.5, 90))
            )
            noise = 0.8 * noise + rng.gauss(0.0, 6.0)
            v = base + 25 * math.sin(2 * math.pi * (h - 4) / 24) + meals - 30 + noise
            v = round(v)
            assert 40 <= v <= 400, (sid, i, v)
            lines.append(f"{sid},{t:%Y-%m-%d %H:%M:%S},{v}")
    return "\n".join(lines) + "\n"


def trace(
    days: float,
    *,
    every_min: float = 5.0,
    seed: int = 0,
    mean: float = 150.0,
    drop: slice | None = None,
    jitter_s: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Times (datetime64[s]) and mg/dL values of a synthetic CGM trace."""
    rng = np.random.default_rng(seed)
    n = round(days * 1440 / every_min)
    t_s = np.arange(n) * every_min * 60.0
    if jitter_s:
        t_s = t_s + rng.uniform(-jitter_s, jitter_s, n)
        t_s[0] = 0.0
    tod = np.mod(t_s, 86400) / 3600
    v = mean + 45 * np.sin(2 * np.pi * (tod - 5) / 24) + rng.normal(0, 25, n)
    v = np.round(np.clip(v, 40, 400))  # synthetic data: the generator's own floor/ceiling
    keep = np.ones(n, dtype=bool)
    if drop is not None:
        keep[drop] = False
    times = np.datetime64(T0, "s") + np.round(t_s).astype("timedelta64[s]")
    return times[keep], v[keep]


def frame(subjects: dict[str, tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
    parts = [
        pd.DataFrame({"id": sid, "time": pd.to_datetime(t), "gl": v.astype(float)})
        for sid, (t, v) in subjects.items()
    ]
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(autouse=True, scope="module")
def _iglu_utc() -> Iterator[None]:
    """iglu localises naive times to the machine's zone; pin it so DST cannot shift a span."""
    before = iglu.utils.get_local_tz()
    iglu.utils.set_local_tz("UTC")
    yield
    iglu.utils.local_tz = before


def _col(df: pd.DataFrame, col: str) -> dict[str, float]:
    return {str(k): float(v) for k, v in zip(df["id"], df[col], strict=True)}


def iglu_metrics(df: pd.DataFrame, unit: str) -> dict[str, dict[str, float]]:
    """iglu's figures per subject, in the keys of :data:`TOL`."""
    out: dict[str, dict[str, float]] = {}
    mean = _col(iglu.mean_glu(df), "mean")
    sd = _col(iglu.sd_glu(df), "SD")
    cv = _col(iglu.cv_glu(df), "CV")
    if unit == "mg/dL":
        gmi = _col(iglu.gmi(df), "GMI")
        tir = _col(iglu.in_range_percent(df, [[70, 180]]), "in_range_70_180")
        below = iglu.below_percent(df, [54, 70])
        above = iglu.above_percent(df, [180, 250])
        b54, b70 = _col(below, "below_54"), _col(below, "below_70")
        a180, a250 = _col(above, "above_180"), _col(above, "above_250")
    else:
        mg = df.assign(gl=df["gl"] * K)
        gmi = _col(iglu.gmi(mg), "GMI")
        tir = _col(iglu.in_range_percent(df, [[3.9, 10.0]]), "in_range_3.9_10.0")
        x10 = df.assign(gl=(df["gl"] * 10).round())
        below = iglu.below_percent(x10, [30, 39])
        above = iglu.above_percent(x10, [100, 139])
        b54, b70 = _col(below, "below_30"), _col(below, "below_39")
        a180, a250 = _col(above, "above_100"), _col(above, "above_139")
    act = iglu.active_percent(df)
    active, ndays = _col(act, "active_percent"), _col(act, "ndays")
    for sid in mean:
        out[sid] = {
            "mean": mean[sid],
            "sd": sd[sid],
            "cv": cv[sid],
            "gmi": gmi[sid],
            "tir": tir[sid],
            "tbr2": b54[sid],
            "tbr1": b70[sid] - b54[sid],
            "tar1": a180[sid] - a250[sid],
            "tar2": a250[sid],
            "active": active[sid],
            "ndays": ndays[sid],
        }
    return out


def ours(m: CgmMetrics) -> dict[str, float]:
    assert m.sd_mg_dl is not None
    assert m.sd_mmol_l is not None
    assert m.cv_percent is not None
    assert m.active_percent is not None
    assert m.interval_s is not None
    mg = m.unit == "mg/dL"
    return {
        "mean": m.mean_mg_dl if mg else m.mean_mmol_l,
        "sd": m.sd_mg_dl if mg else m.sd_mmol_l,
        "cv": m.cv_percent,
        "gmi": m.gmi_percent,
        "tir": m.tir_percent,
        "tbr1": m.tbr_level1_percent,
        "tbr2": m.tbr_level2_percent,
        "tar1": m.tar_level1_percent,
        "tar2": m.tar_level2_percent,
        "active": m.active_percent,
        "days_vs_ndays": m.days - m.interval_s / 86400,
    }


def differences(df: pd.DataFrame, unit: str) -> dict[str, float]:
    """Max absolute difference per metric between remon and iglu over the subjects."""
    ref = iglu_metrics(df, unit)
    worst = dict.fromkeys(TOL, 0.0)
    for sid, g in df.groupby("id", sort=False):
        m = cgm_metrics(g["time"].to_numpy(), g["gl"].to_numpy(), unit=unit)
        mine, theirs = ours(m), ref[str(sid)]
        for k in TOL:
            other = theirs["ndays"] if k == "days_vs_ndays" else theirs[k]
            worst[k] = max(worst[k], abs(mine[k] - other))
    return worst


def generated_subjects() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {
        "regular-5min": trace(14, seed=1),
        "gappy-5min": trace(14, seed=2, drop=slice(1000, 1900)),
        "libre-15min": trace(10, every_min=15, seed=3, mean=190),
        "jitter-1min": trace(3, every_min=1, seed=4, mean=110, jitter_s=12),
        "low-5min": trace(7, seed=5, mean=85, drop=slice(100, 103)),
        "high-5min": trace(2, seed=6, mean=260),
    }


def agreement_table() -> dict[str, dict[str, float]]:
    """Max abs difference remon vs iglu per metric, per data set (for the report)."""
    example = pd.read_csv(DATA)
    example["time"] = pd.to_datetime(example["time"])
    gen = frame(generated_subjects())
    mmol = gen.assign(gl=(gen["gl"] / K).round(1))
    return {
        "example (mg/dL)": differences(example, "mg/dL"),
        "generated (mg/dL)": differences(gen, "mg/dL"),
        "generated (mmol/L)": differences(mmol, "mmol/L"),
    }


# --------------------------------------------------------------------------- iglu agreement


def test_example_file_is_reproducible() -> None:
    assert DATA.read_text() == example_csv()


@pytest.mark.parametrize("dataset", ["example (mg/dL)", "generated (mg/dL)", "generated (mmol/L)"])
def test_agreement_with_iglu(dataset: str) -> None:
    worst = agreement_table()[dataset]
    for k, tol in TOL.items():
        assert worst[k] <= tol, (k, worst[k])


def test_cli_json_agrees_with_iglu_on_the_example() -> None:
    buf = io.StringIO()
    assert run(DATA, unit=None, as_json=True, agp=None, out=buf) == 0
    doc = json.loads(buf.getvalue())
    example = pd.read_csv(DATA)
    ref = iglu_metrics(example, "mg/dL")
    assert list(doc) == ["Subject 1", "Subject 2", "Subject 3"]
    for sid, r in doc.items():
        assert r["mean_mg_dl"] == pytest.approx(ref[sid]["mean"], abs=1e-9)
        assert r["sd_mg_dl"] == pytest.approx(ref[sid]["sd"], abs=1e-9)
        assert r["tir_percent"] == pytest.approx(ref[sid]["tir"], abs=1e-9)
        assert r["active_percent"] == pytest.approx(ref[sid]["active"], abs=1e-9)
        assert r["unit"] == "mg/dL"
        assert r["unit_inferred"] is True
    assert doc["Subject 1"]["active_percent"] == 100.0
    assert doc["Subject 3"]["active_percent"] < 100.0


@settings(max_examples=20, deadline=None)
@given(
    st.lists(st.integers(40, 400), min_size=2, max_size=60),
    st.lists(st.sampled_from([5, 5, 5, 10, 35]), min_size=59, max_size=59),
)
def test_property_agrees_with_iglu(values: list[int], steps: list[int]) -> None:
    t = np.datetime64(T0, "s") + np.concatenate(([0], np.cumsum(steps)))[: len(values)].astype(
        "timedelta64[m]"
    )
    v = np.asarray(values, dtype=float)
    worst = differences(frame({"s": (t, v)}), "mg/dL")
    for k, tol in TOL.items():
        assert worst[k] <= tol, (k, worst[k])


# --------------------------------------------------------------------------- metric definitions


@pytest.mark.parametrize(
    ("unit", "value", "band"),
    [
        ("mg/dL", 20.0, "tbr2"),
        ("mg/dL", 53.9, "tbr2"),
        ("mg/dL", 54.0, "tbr1"),
        ("mg/dL", 69.0, "tbr1"),
        ("mg/dL", 69.99, "tbr1"),
        ("mg/dL", 70.0, "tir"),
        ("mg/dL", 180.0, "tir"),
        ("mg/dL", 180.01, "tar1"),
        ("mg/dL", 181.0, "tar1"),
        ("mg/dL", 250.0, "tar1"),
        ("mg/dL", 251.0, "tar2"),
        ("mmol/L", 2.9, "tbr2"),
        ("mmol/L", 3.0, "tbr1"),
        ("mmol/L", 3.8, "tbr1"),
        ("mmol/L", 3.9, "tir"),
        ("mmol/L", 10.0, "tir"),
        ("mmol/L", 10.1, "tar1"),
        ("mmol/L", 13.9, "tar1"),
        ("mmol/L", 14.0, "tar2"),
    ],
)
def test_band_edges(unit: str, value: float, band: str) -> None:
    t = np.array([0.0, 300.0, 600.0, 900.0])
    m = cgm_metrics(t, [value] * 4, unit=unit)
    got = {
        "tbr2": m.tbr_level2_percent,
        "tbr1": m.tbr_level1_percent,
        "tir": m.tir_percent,
        "tar1": m.tar_level1_percent,
        "tar2": m.tar_level2_percent,
    }
    assert got == {k: (100.0 if k == band else 0.0) for k in got}


def test_means_sd_cv_gmi_by_hand() -> None:
    m = cgm_metrics([0, 300, 600, 900], [100, 120, 140, 160], unit="mg/dL")
    assert m.mean_mg_dl == 130.0
    assert m.mean_mmol_l == pytest.approx(130.0 / K)
    sd = math.sqrt(sum((x - 130) ** 2 for x in (100, 120, 140, 160)) / 3)
    assert m.sd_mg_dl == pytest.approx(sd)
    assert m.cv_percent == pytest.approx(100 * sd / 130)
    assert m.gmi_percent == pytest.approx(3.31 + 0.02392 * 130)
    assert m.gmi_mmol_mol == pytest.approx(12.71 + 4.70587 * 130 / K)
    mm = cgm_metrics([0, 300, 600, 900], [5.0, 6.0, 7.0, 8.0], unit="mmol/L")
    assert mm.mean_mg_dl == pytest.approx(6.5 * K)
    assert mm.sd_mg_dl == pytest.approx(K * math.sqrt(5 / 3))
    assert mm.gmi_percent == pytest.approx(3.31 + 0.02392 * 6.5 * K)


def test_thresholds_and_gmi_are_parameters() -> None:
    from device_profiles.clinical import GlucoseBands

    pregnancy = GlucoseBands("mmol/L", very_low=3.0, low=3.5, high=7.8, very_high=13.9)
    m = cgm_metrics([0, 300], [3.6, 8.0], unit="mmol/L", bands=pregnancy, gmi_intercept_percent=0)
    assert m.tir_percent == 50.0
    assert m.tar_level1_percent == 50.0
    assert m.gmi_percent == pytest.approx(0.02392 * 5.8 * K)
    with pytest.raises(ValueError, match="bands are in mmol/L"):
        cgm_metrics([0, 300], [100, 120], unit="mg/dL", bands=pregnancy)


def slots_trace(slots: int, present: int) -> tuple[np.ndarray, np.ndarray]:
    """5-min slots, the first and last present, one gap in the middle."""
    missing = slots - present
    idx = np.concatenate((np.arange(0, 1000), np.arange(1000 + missing, slots)))
    assert idx.size == present
    return idx * 300.0, np.full(present, 120.0)


@pytest.mark.parametrize(
    ("present", "active", "sufficient"),
    [(2829, 69.0, False), (2869, 2869 / 41, False), (2870, 70.0, True), (4100, 100.0, True)],
)
def test_sufficiency_boundary_on_active_percent(
    present: int, active: float, sufficient: bool
) -> None:
    t, v = slots_trace(4100, present)  # 4100 x 5 min = 14.2 days
    m = cgm_metrics(t, v, unit="mg/dL")
    assert m.interval_s == 300.0
    assert m.active_percent == pytest.approx(active, abs=1e-12)
    assert m.days == pytest.approx(4100 * 300 / 86400)
    assert m.sufficient is sufficient
    assert any("active" in n for n in m.notes) is not sufficient


@pytest.mark.parametrize(
    ("readings", "days", "sufficient"),
    [(4032, 14.0, True), (4031, 4031 / 288, False), (4003, 4003 / 288, False)],
)
def test_sufficiency_boundary_on_days(readings: int, days: float, sufficient: bool) -> None:
    m = cgm_metrics(np.arange(readings) * 300.0, np.full(readings, 120.0), unit="mg/dL")
    assert m.days == days  # 4032 readings of 5 min are exactly 14 days
    assert m.active_percent == 100.0
    assert m.sufficient is sufficient
    assert any("days of data" in n for n in m.notes) is not sufficient


def test_13_9_day_trace_is_not_sufficient() -> None:
    t, v = trace(13.9, seed=9)
    m = cgm_metrics(t, v, unit="mg/dL")
    assert m.days == pytest.approx(13.9, abs=1e-3)
    assert m.active_percent == 100.0
    assert not m.sufficient
    assert "not sufficient: 13.9 days of data < 14 days" in m.notes


def test_single_reading() -> None:
    m = cgm_metrics(np.array(["2024-01-01T08:00"], dtype="datetime64[s]"), [6.1], unit="mmol/L")
    assert m.readings == 1
    assert m.mean_mmol_l == 6.1
    assert m.sd_mg_dl is None
    assert m.cv_percent is None
    assert m.active_percent is None
    assert m.interval_s is None
    assert m.sufficient is False
    assert any("at least 2 readings" in n for n in m.notes)
    assert any("interval cannot be inferred" in n for n in m.notes)


def test_given_interval_and_iglu_rounding_of_the_median_gap() -> None:
    m = cgm_metrics([0, 60, 120, 180], [100] * 4, unit="mg/dL", interval_s=300)
    assert m.interval_inferred is False
    assert m.interval_s == 300
    # a 2.5-min median gap rounds to even (2 min), as iglu's round() does
    m2 = cgm_metrics([0, 150, 300], [100] * 3, unit="mg/dL")
    assert m2.interval_s == 120.0


def test_unsorted_and_duplicate_times() -> None:
    t, v = trace(2, seed=3)
    rng = np.random.default_rng(0)
    p = rng.permutation(t.size)
    assert cgm_metrics(t[p], v[p], unit="mg/dL") == cgm_metrics(t, v, unit="mg/dL")
    with pytest.raises(ValueError, match="same time"):
        cgm_metrics([0, 300, 300], [100, 110, 120], unit="mg/dL")


@pytest.mark.parametrize(
    ("times", "values", "message"),
    [
        ([], [], "no readings"),
        ([0, 1], [100.0, math.nan], "value 1 is not finite"),
        ([0, math.inf], [100.0, 110.0], "time 1 is not finite"),
        ([0, 300], [100.0], "values must be one-dimensional"),
    ],
)
def test_metric_input_errors(times: list[float], values: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cgm_metrics(times, values, unit="mg/dL")


def test_unknown_unit() -> None:
    with pytest.raises(ValueError, match="unknown glucose unit"):
        cgm_metrics([0], [100], unit="mg/dl")


def test_first_implausible() -> None:
    assert first_implausible([20, 600, 150], "mg/dL") is None
    assert first_implausible([20, 601, 19], "mg/dL") == 1
    assert first_implausible([1.1, 33.3], "mmol/L") is None
    assert first_implausible([5.0, 1.0], "mmol/L") == 1
    assert first_implausible([5.0, 34.0], "mmol/L", high=40) is None


away = st.floats(2.3, 22.0).filter(
    lambda x: all(
        abs(x * K - e) > 1.0 and abs(x - e2) > 0.06
        for e, e2 in zip((54, 70, 180, 250), (3.0, 3.9, 10.0, 13.9), strict=True)
    )
)


@settings(max_examples=60, deadline=None)
@given(st.lists(away, min_size=1, max_size=80))
def test_property_units_give_the_same_percentages_away_from_edges(mmol: list[float]) -> None:
    t = np.arange(len(mmol)) * 300.0
    a = cgm_metrics(t, mmol, unit="mmol/L")
    b = cgm_metrics(t, np.asarray(mmol) * K, unit="mg/dL")
    for key in ("tbr_level2", "tbr_level1", "tir", "tar_level1", "tar_level2"):
        assert getattr(a, key + "_percent") == getattr(b, key + "_percent"), key
    assert a.mean_mg_dl == pytest.approx(b.mean_mg_dl)
    assert a.gmi_percent == pytest.approx(b.gmi_percent)
    assert a.active_percent == b.active_percent


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 20 * 86400), st.floats(20, 600, allow_nan=False)),
        min_size=1,
        max_size=120,
        unique_by=lambda x: x[0],
    )
)
def test_property_invariants(readings: list[tuple[int, float]]) -> None:
    t = np.array([r[0] for r in readings], dtype=float)
    v = np.array([r[1] for r in readings])
    m = cgm_metrics(t, v, unit="mg/dL")
    shares = [
        m.tbr_level2_percent,
        m.tbr_level1_percent,
        m.tir_percent,
        m.tar_level1_percent,
        m.tar_level2_percent,
    ]
    assert all(0 <= s <= 100 for s in shares)
    assert sum(shares) == pytest.approx(100.0)
    assert m.readings == len(readings)
    assert v.min() <= m.mean_mg_dl <= v.max() or math.isclose(v.min(), v.max())
    if m.active_percent is not None:
        assert 0 < m.active_percent <= 100
        assert m.days > 0
    assert m.sufficient == (
        m.days >= 14 and m.active_percent is not None and m.active_percent >= 70
    )
    rev = cgm_metrics(t[::-1], v[::-1], unit="mg/dL")
    assert rev == m


# --------------------------------------------------------------------------- AGP


def test_agp_raw_percentiles_match_numpy_per_bin() -> None:
    t, v = trace(14, seed=7, drop=slice(50, 500))
    p = agp_profile(t, v, unit="mg/dL", bin_minutes=30, smooth=False)
    assert p.values.shape == (5, 48)
    assert p.percentiles == (5, 25, 50, 75, 95)
    tod = (t - t.astype("datetime64[D]")).astype("timedelta64[s]").astype(int)
    bins = tod // 1800
    for j in range(48):
        sel = v[bins == j]
        assert p.counts[j] == sel.size
        np.testing.assert_allclose(p.values[:, j], np.percentile(sel, [5, 25, 50, 75, 95]))


def test_agp_empty_bins_stay_empty_and_smoothing_is_circular() -> None:
    # readings only between 00:00 and 06:00 on three days
    t = np.concatenate([np.arange(0, 6 * 3600, 300) + d * 86400 for d in range(3)]).astype(float)
    v = 100 + (t % 86400) / 600
    p = agp_profile(t, v, unit="mg/dL")
    assert np.isnan(p.values[:, 24:]).all()
    assert np.isfinite(p.values[:, :24]).all()
    raw = agp_profile(t, v, unit="mg/dL", smooth=False)
    # bin 0's neighbours are bin 95 (empty) and bin 1: weights 2 and 1
    np.testing.assert_allclose(p.values[2, 0], (2 * raw.values[2, 0] + raw.values[2, 1]) / 3)
    np.testing.assert_allclose(
        p.values[2, 5], (raw.values[2, 4] + 2 * raw.values[2, 5] + raw.values[2, 6]) / 4
    )


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 5 * 86400), st.integers(40, 400)), min_size=1, max_size=200),
    st.sampled_from([5, 15, 60]),
    st.booleans(),
)
def test_property_agp_percentiles_are_ordered(
    readings: list[tuple[int, int]], bin_minutes: int, smooth: bool
) -> None:
    t = np.array([r[0] for r in readings], dtype=float)
    v = np.array([r[1] for r in readings], dtype=float)
    p = agp_profile(t, v, unit="mg/dL", bin_minutes=bin_minutes, smooth=smooth)
    assert int(p.counts.sum()) == len(readings)
    filled = p.counts > 0
    assert np.isfinite(p.values[:, filled]).all()
    assert np.isnan(p.values[:, ~filled]).all()
    assert (np.diff(p.values[:, filled], axis=0) >= -1e-9).all()
    assert (p.values[:, filled] >= v.min() - 1e-9).all()
    assert (p.values[:, filled] <= v.max() + 1e-9).all()


def test_agp_input_errors() -> None:
    with pytest.raises(ValueError, match="divide a day"):
        agp_profile([0], [100], unit="mg/dL", bin_minutes=7)
    with pytest.raises(ValueError, match="increasing"):
        agp_profile([0], [100], unit="mg/dL", percentiles=(50, 5))


def test_agp_png_renders() -> None:
    t, v = trace(14, seed=8)
    m = cgm_metrics(t, v, unit="mg/dL")
    png = agp_png.render_agp_png(
        agp_profile(t, v, unit="mg/dL"), m, subject="p-1", period="2024-03-04 to 2024-03-17"
    )
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 10_000


def test_agp_without_matplotlib(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(agp_png.AgpUnavailableError, match=r"pip install 'remon\[reports\]'"):
        agp_png.require_matplotlib()
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    code = run(DATA, unit=None, as_json=False, agp=tmp_path / "a.png", out=io.StringIO())
    assert code == 2
    assert err.getvalue() == f"error: {agp_png.MATPLOTLIB_MISSING}\n"


# --------------------------------------------------------------------------- CSV and command


def parse(text: str, unit: str | None = None) -> Any:
    return parse_cgm_csv(io.StringIO(text), unit=unit)


GOOD_ROWS = "id,time,gl\na,2024-01-01 00:00:00,100\na,2024-01-01 00:05:00,110\n"


@pytest.mark.parametrize(
    ("text", "unit", "message"),
    [
        ("", None, "the file is empty"),
        ("\n\n", None, "the file is empty"),
        ("id,time,gl\n", None, "a header but no readings"),
        ("id,time,glucose\na,2024-01-01 00:00:00,5\n", None, "row 1: the header lacks column"),
        ("id,time,gl\na,2024-01-01 00:00:00,LOW\n", None, "row 2: gl 'LOW' is not a number"),
        ("id,time,gl\na,2024-01-01 00:00:00,NA\n", None, "row 2: gl 'NA' is not a number"),
        ("id,time,gl\na,2024-01-01 00:00:00,\n", None, "row 2: gl '' is not a number"),
        ("id,time,gl\na,2024-01-01 00:00:00,nan\n", None, "row 2: gl 'nan' is not a finite"),
        ("id,time,gl\na,2024-01-01 00:00:00,inf\n", None, "row 2: gl 'inf' is not a finite"),
        ("id,time,gl\na,01/02/2024 08:00,5\n", None, "row 2: time '01/02/2024 08:00' is not"),
        ("id,time,gl\na,2024-01-01,5\n", None, "row 2: time '2024-01-01' has no time of day"),
        ("id,time,gl\na,2024-01-01T08:00:00+02:00,5\n", None, "row 2: time .* has a UTC offset"),
        ("id,time,gl\na,2024-01-01 08:00:00,5,x\n", None, "row 2: 4 fields, the header has 3"),
        ("id,time,gl\n,2024-01-01 08:00:00,5\n", None, "row 2: empty id"),
        (GOOD_ROWS + "a,2024-01-01 00:10:00,19\n", "mg/dL", r"row 4: gl 19 mg/dL is outside"),
        (GOOD_ROWS + "a,2024-01-01 00:10:00,601\n", None, "row 4: gl 601 mg/dL is outside"),
        (
            "id,time,gl\na,2024-01-01 00:00:00,5\na,2024-01-01 00:05:00,1.0\n",
            None,
            "row 3: gl 1 mmol/L is outside the plausible range 1.1-33.3 mmol/L",
        ),
        (
            "id,time,gl\na,2024-01-01 00:00:00,5\na,2024-01-01 00:05:00,34\n",
            "mmol/L",
            "row 3: gl 34 mmol/L is outside",
        ),
        (GOOD_ROWS, "mmol/L", "row 2: gl 100 > 40 looks like mg/dL"),
        (GOOD_ROWS, "mg/l", "unknown unit 'mg/l'"),
        (
            GOOD_ROWS + "b,2024-01-01 00:00:00,5.5\n",
            None,
            "row 4: units look mixed: all of subject 'b'.*row 3 \\(subject 'a'\\) has 110",
        ),
        (
            GOOD_ROWS + "a,2024-01-01 00:10:00,7.5\n",
            None,
            "row 4: units look mixed: gl 7.5 .* row 3 of subject 'a' has 110",
        ),
        (
            GOOD_ROWS + "a,2024-01-01 00:00:00,105\n",
            None,
            "rows 2 and 4: subject 'a' has two readings at 2024-01-01 00:00:00 "
            "with different values \\(100 and 105\\)",
        ),
    ],
)
def test_csv_errors_name_the_row(text: str, unit: str | None, message: str) -> None:
    with pytest.raises(CgmDataError, match=message):
        parse(text, unit)


def test_mg_dl_lows_are_accepted_when_the_unit_is_given() -> None:
    f = parse(GOOD_ROWS + "a,2024-01-01 00:10:00,30\n", "mg/dL")
    assert f.unit == "mg/dL"
    assert not f.unit_inferred
    assert f.subjects[0].values.tolist() == [100, 110, 30]


def test_identical_duplicates_kept_once_and_noted() -> None:
    text = GOOD_ROWS + "a,2024-01-01 00:05:00,110.0\nb,2024-01-01 00:00:00,120\n"
    f = parse(text)
    a = f.subjects[0]
    assert a.values.tolist() == [100, 110]
    assert a.duplicates_dropped == [4]
    reports, _ = analyse(f)
    assert reports["a"]["duplicates_dropped"] == 1
    assert "1 identical duplicate row(s) kept once (dropped rows 4)" in reports["a"]["notes"]
    assert reports["b"]["duplicates_dropped"] == 0


def test_unsorted_rows_extra_columns_bom_and_order() -> None:
    text = (
        "\ufeff,id,time,gl\n"
        '1,"z",2024-01-01 00:10:00,6.2\n'
        "2,y,2024-01-01 00:00:00,5.0\n"
        "3,z,2024-01-01T00:00,5.8\n"
        "\n"
        "4,z,2024-01-01 00:05:00,6.0\n"
    ).lstrip("\ufeff")
    f = parse(text)
    assert [s.id for s in f.subjects] == ["z", "y"]
    assert f.unit == "mmol/L"
    assert f.unit_inferred
    assert f.ignored_columns == ("",)
    z = f.subjects[0]
    assert z.values.tolist() == [5.8, 6.0, 6.2]
    assert z.rows.tolist() == [4, 6, 2]


def test_run_text_states_the_inferred_unit(capsys: pytest.CaptureFixture[str]) -> None:
    buf = io.StringIO()
    assert run(DATA, unit=None, as_json=False, agp=None, out=buf) == 0
    text = buf.getvalue()
    assert "unit mg/dL (inferred: values above 35; pass --unit to state it)" in text
    assert "\nSubject 2: 2024-03-04 06:07:00 to 2024-03-06 05:52:00\n" in text
    assert "TIR" in text
    buf2 = io.StringIO()
    assert run(DATA, unit="mg/dL", as_json=False, agp=None, out=buf2) == 0
    assert "unit mg/dL (given)" in buf2.getvalue()
    assert capsys.readouterr().err == ""


def test_run_json_keys(tmp_path: Path) -> None:
    p = tmp_path / "one.csv"
    p.write_text("id,time,gl\np1,2024-01-01 08:00:00,6.1\n")
    buf = io.StringIO()
    assert run(p, unit=None, as_json=True, agp=None, out=buf) == 0
    doc = json.loads(buf.getvalue())
    r = doc["p1"]
    required = {
        "mean_mg_dl",
        "mean_mmol_l",
        "sd_mg_dl",
        "cv_percent",
        "gmi_percent",
        "tir_percent",
        "tbr_level1_percent",
        "tbr_level2_percent",
        "tar_level1_percent",
        "tar_level2_percent",
        "active_percent",
        "days",
        "readings",
        "sufficient",
        "unit",
        "unit_inferred",
        "notes",
        "period_start",
        "period_end",
    }
    assert required <= set(r)
    assert r["readings"] == 1
    assert r["sd_mg_dl"] is None
    assert r["cv_percent"] is None
    assert r["sufficient"] is False
    assert r["unit"] == "mmol/L"
    assert r["period_start"] == r["period_end"] == "2024-01-01 08:00:00"
    assert any("at least 2 readings" in n for n in r["notes"])
    assert any("unit inferred as mmol/L" in n for n in r["notes"])


def test_run_errors_go_to_stderr_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = tmp_path / "bad.csv"
    p.write_text(GOOD_ROWS + "a,2024-01-01 00:10:00,HIGH\n")
    out = io.StringIO()
    assert run(p, unit=None, as_json=True, agp=None, out=out) == 2
    assert out.getvalue() == ""
    assert capsys.readouterr().err == "error: row 4: gl 'HIGH' is not a number\n"
    assert run(tmp_path / "missing.csv", unit=None, as_json=False, agp=None, out=out) == 2
    assert "error: cannot read" in capsys.readouterr().err


def test_run_writes_one_agp_per_subject(tmp_path: Path) -> None:
    buf = io.StringIO()
    assert run(DATA, unit=None, as_json=True, agp=tmp_path / "agp.png", out=buf) == 0
    doc = json.loads(buf.getvalue())
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["agp-Subject_1.png", "agp-Subject_2.png", "agp-Subject_3.png"]
    assert doc["Subject 2"]["agp_png"] == str(tmp_path / "agp-Subject_2.png")
    assert (tmp_path / "agp-Subject_1.png").read_bytes().startswith(b"\x89PNG")
    one = tmp_path / "one.csv"
    one.write_text(GOOD_ROWS)
    assert run(one, unit=None, as_json=False, agp=tmp_path / "x.png", out=io.StringIO()) == 0
    assert (tmp_path / "x.png").read_bytes().startswith(b"\x89PNG")


def test_the_registered_command(tmp_path: Path) -> None:
    p = tmp_path / "bad.csv"
    p.write_text("id,time,gl\na,2024-01-01 00:00:00,100\na,2024-01-01 00:05:00,145\n")
    r = subprocess.run(
        [sys.executable, "-m", "remon.cli", "cgm-report", str(p), "--unit", "mmol/L"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 2
    assert (
        r.stderr == "error: row 2: gl 100 > 40 looks like mg/dL, but the unit was given as mmol/L\n"
    )
    r = subprocess.run(
        [sys.executable, "-m", "remon.cli", "cgm-report", str(p), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["a"]["tir_percent"] == 100.0


def test_agp_paths_keep_ids_apart() -> None:
    got = agp_paths(Path("out/agp.png"), ["a/b", "a?b", "c"])
    assert got == {
        "a/b": Path("out/agp-a_b.png"),
        "a?b": Path("out/agp-a_b-2.png"),
        "c": Path("out/agp-c.png"),
    }


@settings(max_examples=40, deadline=None)
@given(
    st.dictionaries(
        st.text("abcXYZ019 _-", min_size=1, max_size=6).map(str.strip).filter(bool),
        st.lists(
            st.tuples(st.integers(0, 3 * 86400), st.integers(40, 400)),
            min_size=1,
            max_size=40,
            unique_by=lambda r: r[0],
        ),
        min_size=1,
        max_size=4,
    ),
    st.randoms(use_true_random=False),
)
def test_property_csv_round_trip(
    subjects: dict[str, list[tuple[int, int]]], rnd: random.Random
) -> None:
    rows = [(sid, s, v) for sid, rs in subjects.items() for s, v in rs]
    rnd.shuffle(rows)
    text = "id,time,gl\n" + "".join(
        f"{sid},{T0 + timedelta(seconds=s):%Y-%m-%d %H:%M:%S},{v}\n" for sid, s, v in rows
    )
    f = parse(text, "mg/dL")
    assert {s.id for s in f.subjects} == set(subjects)
    for s in f.subjects:
        rs = sorted(subjects[s.id])
        direct = cgm_metrics([r[0] for r in rs], [r[1] for r in rs], unit="mg/dL")
        via = cgm_metrics(s.times, s.values, unit="mg/dL")
        assert via.readings == direct.readings
        assert via.tir_percent == direct.tir_percent
        assert via.active_percent == direct.active_percent
        assert via.days == direct.days
        assert via.mean_mg_dl == pytest.approx(direct.mean_mg_dl)


def test_bands_come_from_clinical() -> None:
    m = cgm_metrics([0, 300], [100, 120], unit="mg/dL")
    assert m.bands is GLUCOSE_BANDS["mg/dL"]


if __name__ == "__main__":
    DATA.parent.mkdir(exist_ok=True)
    DATA.write_text(example_csv())
    iglu.utils.set_local_tz("UTC")
    for name, worst in agreement_table().items():
        print(name, json.dumps({k: float(f"{v:.3g}") for k, v in worst.items()}))
