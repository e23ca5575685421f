"""Streaming CGM processing (edge_agent/cgm_stream.py): checks, trend, arrow, prediction, stale.

Figures checked against DOMAIN.md §2: arrows < 1 flat, 1-2 45°, 2-3 single, > 3 double
(mg/dL/min; the shared edge 2 goes to the single arrow), urgent low soon = predicted <= 3.1
mmol/L within 20 min, stale warn > 15 min / urgent > 30 min, sensor range 2.2-22.2 mmol/L with
LOW/HIGH as comparators. The trend is checked against a brute-force least-squares fit (numpy).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_profiles import clinical
from device_profiles.units import GLUCOSE_MG_DL_PER_MMOL_L as MG
from edge_agent.cgm_stream import (
    DIP_MAX_READINGS,
    RECENT_READINGS,
    WINDOW_MAX_READINGS,
    CgmFlag,
    CgmStream,
    CgmStreamError,
    CgmUpdate,
    TrendArrow,
    trend_arrow,
)

T0 = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def feed(s: CgmStream, rows: Sequence[tuple[float, float | None]]) -> list[CgmUpdate]:
    return [s.update(at(m), v) for m, v in rows]


def linear(start: float, rate_mmol_min: float, minutes: list[float]) -> list[tuple[float, float]]:
    return [(m, start + rate_mmol_min * m) for m in minutes]


EVERY_5 = [5.0 * k for k in range(8)]  # 0..35 min


# --------------------------------------------------------------------------- arrows


@pytest.mark.parametrize(
    ("rate", "arrow"),
    [
        (0.0, TrendArrow.FLAT),
        (0.999999, TrendArrow.FLAT),
        (-0.999999, TrendArrow.FLAT),
        (1.0, TrendArrow.FORTY_FIVE_UP),  # "< 1 flat": 1 is not flat
        (-1.0, TrendArrow.FORTY_FIVE_DOWN),
        (1.999999, TrendArrow.FORTY_FIVE_UP),
        (-1.999999, TrendArrow.FORTY_FIVE_DOWN),
        (2.0, TrendArrow.SINGLE_UP),  # shared edge "1-2"/"2-3": single (alerts start at 2)
        (-2.0, TrendArrow.SINGLE_DOWN),
        (2.5, TrendArrow.SINGLE_UP),
        (3.0, TrendArrow.SINGLE_UP),  # "> 3 double": 3 is not double
        (-3.0, TrendArrow.SINGLE_DOWN),
        (3.000001, TrendArrow.DOUBLE_UP),
        (-3.000001, TrendArrow.DOUBLE_DOWN),
        (12.0, TrendArrow.DOUBLE_UP),
        (-12.0, TrendArrow.DOUBLE_DOWN),
        # floating residue of a regression does not move an exact edge
        (2.0 - 1e-12, TrendArrow.SINGLE_UP),
        (-3.0 - 1e-12, TrendArrow.SINGLE_DOWN),
        (1.0 - 1e-12, TrendArrow.FORTY_FIVE_UP),
    ],
)
def test_arrow_bands_at_exact_edges(rate: float, arrow: TrendArrow) -> None:
    assert trend_arrow(rate) is arrow


def test_arrow_bands_are_parameters() -> None:
    assert trend_arrow(1.5, bands=(2.0, 3.0, 4.0)) is TrendArrow.FLAT
    for bad in [(1.0, 2.0), (2.0, 1.0, 3.0), (0.0, 1.0, 2.0), (1.0, 2.0, math.inf)]:
        with pytest.raises(ValueError, match="bands"):
            trend_arrow(1.0, bands=bad)
    with pytest.raises(ValueError, match="finite"):
        trend_arrow(math.nan)


# --------------------------------------------------------------------------- trend, prediction


def test_steady_fall_of_2_mg_dl_min_is_single_down_and_predicts_40_mg_dl_lower() -> None:
    s = CgmStream()
    ups = feed(s, linear(10.0, -2.0 / MG, EVERY_5))
    assert [u.trend_readings for u in ups] == [1, 2, 3, 4, 4, 4, 4, 4]  # 15-min window, closed
    assert ups[0].trend_mmol_l_min is None
    assert ups[1].reason is not None
    assert "need 3 over 10 min" in ups[1].reason
    for u, (_, v) in zip(ups[2:], linear(10.0, -2.0 / MG, EVERY_5)[2:], strict=True):
        assert u.accepted
        assert u.arrow is TrendArrow.SINGLE_DOWN
        assert u.trend_mg_dl_min == pytest.approx(-2.0, abs=1e-9)
        assert u.trend_mmol_l_min == pytest.approx(-2.0 / MG, abs=1e-12)
        assert u.predicted_mmol_l == pytest.approx(v - 40.0 / MG, abs=1e-9)
        assert u.horizon_min == 20.0
        assert u.predicted_mmol_l is not None
        assert u.prediction_sd_mmol_l is not None
        assert u.prediction_low_bound_mmol_l is not None
        # a perfect line has no residual: the SD comes from the sensor-noise floor
        assert u.prediction_sd_mmol_l >= 0.2
        assert u.prediction_low_bound_mmol_l == pytest.approx(
            u.predicted_mmol_l - 1.6448536269514722 * u.prediction_sd_mmol_l
        )


def test_horizon_is_configurable_up_to_30_min() -> None:
    s = CgmStream(horizon_min=30)
    u = feed(s, linear(10.0, -0.1, EVERY_5))[-1]
    assert u.horizon_min == 30
    assert u.predicted_mmol_l == pytest.approx(10.0 - 0.1 * (35 + 30), abs=1e-9)
    for bad in (0.0, -5.0, 30.5, math.nan):
        with pytest.raises(ValueError, match="horizon"):
            CgmStream(horizon_min=bad)


def test_prediction_sd_grows_with_noise() -> None:
    quiet = feed(CgmStream(), linear(8.0, 0.0, EVERY_5))[-1]
    noisy = feed(CgmStream(), [(m, 8.0 + (0.6 if k % 2 else -0.6)) for k, m in enumerate(EVERY_5)])[
        -1
    ]
    assert quiet.prediction_sd_mmol_l is not None
    assert noisy.prediction_sd_mmol_l is not None
    assert noisy.prediction_sd_mmol_l > quiet.prediction_sd_mmol_l


@pytest.mark.parametrize(
    ("level", "urgent"),
    [(3.1, True), (3.11, False), (3.0, True), (3.5, False)],
)
def test_urgent_low_soon_boundary_on_the_point_prediction(level: float, urgent: bool) -> None:
    # flat at the level: the regression predicts exactly the level (sums are kept relative to
    # the first value, so a constant series has slope 0.0 exactly)
    u = feed(CgmStream(), [(m, level) for m in EVERY_5])[-1]
    assert u.trend_mmol_l_min == 0.0
    assert u.predicted_mmol_l == level
    assert u.urgent_low_soon is urgent
    assert u.prediction_low_bound_mmol_l is not None
    assert u.prediction_low_bound_mmol_l < level


@pytest.mark.parametrize(("predicted", "urgent"), [(3.09, True), (3.12, False)])
def test_urgent_low_soon_for_a_falling_series(predicted: float, urgent: bool) -> None:
    rate = -0.05
    last = predicted - rate * 20  # the value at 35 min
    u = feed(CgmStream(), linear(last - rate * 35, rate, EVERY_5))[-1]
    assert u.predicted_mmol_l == pytest.approx(predicted, abs=1e-9)
    assert u.urgent_low_soon is urgent
    # the bound is lower than 3.1 in both cases: the flag follows the point prediction only
    assert u.prediction_low_bound_mmol_l is not None
    assert u.prediction_low_bound_mmol_l < 3.1


def test_urgent_low_threshold_is_a_parameter() -> None:
    u = feed(CgmStream(urgent_low_mmol_l=3.9), [(m, 3.5) for m in EVERY_5])[-1]
    assert u.urgent_low_soon


def test_trend_matches_a_brute_force_fit_after_a_long_noisy_run() -> None:
    rng = random.Random(7)
    s = CgmStream()
    rows: list[tuple[float, float]] = []
    minute = 0.0
    u: CgmUpdate | None = None
    for k in range(3000):
        minute += rng.choice([1.0, 4.5, 5.0, 5.0, 5.5])
        v = 8.0 + 3.0 * math.sin(k / 40.0) + rng.gauss(0.0, 0.15)
        rows.append((minute, v))
        u = s.update(at(minute), v)
        assert u.accepted, u.reason
    assert u is not None
    assert u.trend_mmol_l_min is not None
    window = [(m, v) for m, v in rows if m >= minute - 15.0]
    x = np.array([m for m, _ in window])
    y = np.array([v for _, v in window])
    slope, intercept = np.polyfit(x, y, 1)
    assert u.trend_readings == len(window)
    assert u.trend_mmol_l_min == pytest.approx(slope, abs=1e-9)
    assert u.predicted_mmol_l == pytest.approx(intercept + slope * (minute + 20.0), abs=1e-8)


# --------------------------------------------------------------------------- reading checks


def test_duplicate_and_out_of_order_readings_do_not_touch_the_trend() -> None:
    s, ref = CgmStream(), CgmStream()
    rows = linear(9.0, -0.05, EVERY_5)
    for m, v in rows[:5]:
        s.update(at(m), v)
        ref.update(at(m), v)
    same = s.update(at(20), rows[4][1])
    assert same.flags == {CgmFlag.DUPLICATE}
    assert not same.accepted
    assert same.reason is not None
    assert "and value" in same.reason
    other = s.update(at(20), 5.0)
    assert CgmFlag.DUPLICATE in other.flags
    assert other.reason is not None
    assert "different value" in other.reason
    older_dup = s.update(at(10), rows[2][1])
    assert older_dup.flags == {CgmFlag.DUPLICATE}
    late = s.update(at(12), 7.0)
    assert late.flags == {CgmFlag.OUT_OF_ORDER}
    assert not late.accepted
    assert late.trend_mmol_l_min is None
    a, b = s.update(at(25), rows[5][1]), ref.update(at(25), rows[5][1])
    assert a.trend_mmol_l_min == b.trend_mmol_l_min
    assert a.predicted_mmol_l == b.predicted_mmol_l


@pytest.mark.parametrize(("gap_min", "flagged"), [(15.0, False), (15.5, True), (40.0, True)])
def test_gap_is_more_than_the_stale_warn_time(gap_min: float, flagged: bool) -> None:
    s = CgmStream()
    feed(s, [(0, 7.0), (5, 7.0), (10, 7.0)])
    u = s.update(at(10 + gap_min), 7.0)
    assert (CgmFlag.GAP in u.flags) is flagged
    assert u.accepted
    if gap_min > 15.0:  # the window emptied during the gap: no trend until it refills
        assert u.trend_mmol_l_min is None
        assert u.trend_readings == 1


def test_low_and_high_are_comparators_excluded_from_trend() -> None:
    s = CgmStream()
    feed(s, [(0, 3.0), (5, 2.8), (10, 2.6)])
    low = s.update(at(15), 2.2, comparator="<")
    assert low.flags == {CgmFlag.BELOW_RANGE}
    assert not low.accepted
    assert low.trend_mmol_l_min is None
    assert low.predicted_mmol_l is None
    assert not low.urgent_low_soon
    nxt = s.update(at(20), 2.5)
    assert nxt.accepted
    assert nxt.trend_readings == 3  # 5, 10 and 20 min; the LOW is not a number
    high = s.update(at(25), 22.2, comparator=">=")
    assert high.flags == {CgmFlag.ABOVE_RANGE}
    assert not high.accepted
    assert s.last_reading_time == at(25)  # LOW/HIGH are glucose information for staleness


@pytest.mark.parametrize(
    ("value", "in_range"),
    [
        (2.2, True),
        (22.2, True),
        (40.0 / MG, True),  # 40 mg/dL
        (400.0 / MG, True),  # 400 mg/dL = 22.2025 mmol/L: the range is rounded to 0.1
        (2.1, False),
        (1.0, False),
        (22.3, False),
        (30.0, False),
        (0.0, False),
    ],
)
def test_sensor_range_without_comparator(value: float, in_range: bool) -> None:
    s = CgmStream()
    u = s.update(at(0), value)
    assert (CgmFlag.OUT_OF_RANGE in u.flags) is not in_range
    assert u.accepted is in_range


def test_no_value_is_flagged_and_does_not_refresh_staleness() -> None:
    s = CgmStream()
    s.update(at(0), 6.0)
    u = s.update(at(5), None)
    assert u.flags == {CgmFlag.NO_VALUE}
    assert not u.accepted
    assert s.last_reading_time == at(0)
    assert s.stale_after(at(16)) == "warn"


def test_warm_up_readings_are_kept_flagged_and_out_of_the_trend() -> None:
    s = CgmStream()
    start = at(0)
    ups = [s.update(at(m), 7.0, sensor_start=start) for m in (10, 30, 55, 59.9, 60, 65)]
    assert [CgmFlag.WARM_UP in u.flags for u in ups] == [True, True, True, True, False, False]
    assert [u.accepted for u in ups] == [False, False, False, False, True, True]
    assert ups[-1].trend_readings == 2
    # sensor_start is remembered when later readings omit it
    s2 = CgmStream(warmup_min=30)
    s2.update(at(0), 7.0, sensor_start=start)
    assert CgmFlag.WARM_UP in s2.update(at(20), 7.0).flags


def test_a_new_sensor_session_restarts_the_trend() -> None:
    s = CgmStream(warmup_min=0)
    for m in EVERY_5[:4]:
        s.update(at(m), 7.0, sensor_start=at(-600))
    assert s.update(at(20), 7.0, sensor_start=at(-600)).trend_readings == 4
    u = s.update(at(25), 7.0, sensor_start=at(22))
    assert u.trend_readings == 1
    assert u.reason is not None
    assert "new sensor session" in u.reason


def test_impossible_jump_is_flagged_not_altered_and_kept_out_of_the_trend() -> None:
    s = CgmStream()
    feed(s, [(0, 6.0), (5, 6.0), (10, 6.0)])
    spike = s.update(at(15), 10.0)  # 4 mmol/L in 5 min (~14 mg/dL/min)
    assert spike.flags == {CgmFlag.IMPOSSIBLE_JUMP}
    assert not spike.accepted
    back = s.update(at(20), 6.1)  # compared with the last accepted reading, not the spike
    assert back.accepted
    assert back.trend_readings == 3  # 5, 10, 20 min
    assert back.trend_mmol_l_min is not None
    assert abs(back.trend_mmol_l_min) < 0.01
    # a plausible fast change (1.5 mmol/L in 5 min, ~5.4 mg/dL/min) is not a jump
    assert CgmFlag.IMPOSSIBLE_JUMP not in s.update(at(25), 7.6).flags


def test_level_shift_is_flagged_until_the_window_empties() -> None:
    s = CgmStream()
    feed(s, [(0, 6.0), (5, 6.0), (10, 6.0)])
    ups = feed(s, [(15, 12.0), (20, 12.0), (25, 12.0), (30, 12.0)])
    assert [u.accepted for u in ups] == [False, False, False, True]  # 6.0 at 10 min left
    assert all(CgmFlag.IMPOSSIBLE_JUMP in u.flags for u in ups[:3])


# --------------------------------------------------------------------------- compression low


def compression_rows() -> list[tuple[float, float | None]]:
    return [(0, 7.0), (5, 7.0), (10, 7.1), (15, 3.4), (20, 3.1), (25, 3.3), (30, 6.8)]


def test_compression_low_is_suspected_when_the_fast_recovery_arrives() -> None:
    s = CgmStream()
    ups = feed(s, compression_rows())
    assert all(u.retro_flags == () for u in ups[:-1])
    rec = ups[-1]
    assert rec.retro_flags == tuple((at(m), CgmFlag.COMPRESSION_LOW) for m in (15, 20, 25))
    assert CgmFlag.COMPRESSION_LOW not in rec.flags  # the recovery itself is not suspect
    assert rec.accepted
    assert rec.reason is not None
    assert "suspected compression" in rec.reason
    # the suspected lows left the trend: of the 15-30 min window only 6.8 remains, so there
    # is no trend rather than a false double-up arrow
    assert rec.trend_readings == 1
    assert rec.arrow is None


def test_compression_low_into_a_device_low() -> None:
    rows: list[tuple[float, float | None]] = [(0, 6.5), (5, 6.5), (10, 6.5)]
    s = CgmStream()
    feed(s, rows)
    s.update(at(15), 2.2, comparator="<")
    rec = s.update(at(20), 6.0)
    assert rec.retro_flags == ((at(15), CgmFlag.COMPRESSION_LOW),)


@pytest.mark.parametrize(
    "rows",
    [
        # slow fall (~1 mg/dL/min) into the low
        [(0, 4.5), (5, 4.2), (10, 3.95), (15, 3.7), (20, 3.5), (25, 6.0)],
        # fast fall, slow recovery (a real low being treated)
        [(0, 7.0), (5, 7.0), (10, 3.5), (15, 3.4), (20, 3.6), (25, 3.95), (30, 4.2)],
        # fast fall, fast rise that recovers less than half of the drop
        [(0, 9.0), (5, 9.0), (10, 3.0), (15, 3.0), (20, 5.0)],
        # low lasting longer than 60 min
        [(0, 7.0), (5, 7.0), (10, 3.5)] + [(10 + 5 * k, 3.4) for k in range(1, 14)] + [(80, 7.0)],
    ],
)
def test_no_compression_suspicion_without_fast_fall_and_fast_recovery(
    rows: list[tuple[float, float | None]],
) -> None:
    ups = feed(CgmStream(), rows)
    assert all(u.retro_flags == () for u in ups)


# --------------------------------------------------------------------------- staleness


@pytest.mark.parametrize(
    ("age", "state"),
    [
        (timedelta(0), "ok"),
        (timedelta(minutes=15), "ok"),
        (timedelta(minutes=15, seconds=1), "warn"),
        (timedelta(minutes=30), "warn"),
        (timedelta(minutes=30, seconds=1), "urgent"),
        (timedelta(minutes=-5), "ok"),  # a reading from "the future" (clock skew) is fresh
    ],
)
def test_stale_after(age: timedelta, state: str) -> None:
    s = CgmStream()
    s.update(at(0), 6.0)
    assert s.stale_after(at(0) + age) == state


def test_stale_with_no_reading_and_custom_figures() -> None:
    s = CgmStream(stale_warn_min=5, stale_urgent_min=10)
    assert s.last_reading_time is None
    assert s.stale_after(T0) == "urgent"
    s.update(at(0), 6.0)
    assert s.stale_after(at(6)) == "warn"
    with pytest.raises(ValueError, match="stale_warn_min"):
        CgmStream(stale_warn_min=30, stale_urgent_min=15)


# --------------------------------------------------------------------------- input errors


def test_bad_input_is_an_error_naming_the_reading() -> None:
    s = CgmStream()
    with pytest.raises(CgmStreamError, match="naive"):
        s.update(datetime(2026, 1, 1, 8, 0), 5.0)
    with pytest.raises(CgmStreamError, match="not finite"):
        s.update(at(0), math.nan)
    with pytest.raises(CgmStreamError, match="comparator"):
        s.update(at(0), 2.2, comparator="~")
    with pytest.raises(CgmStreamError, match="comparator without a value"):
        s.update(at(0), None, comparator="<")
    with pytest.raises(CgmStreamError, match="naive"):
        s.update(at(0), 5.0, sensor_start=datetime(2026, 1, 1))
    with pytest.raises(CgmStreamError, match="naive"):
        s.stale_after(datetime(2026, 1, 1))
    # nothing was taken in by the failed calls
    assert s.last_reading_time is None
    assert s.update(at(0), 5.0).flags == frozenset()


def test_non_utc_aware_times_are_converted() -> None:
    s = CgmStream()
    helsinki = timezone(timedelta(hours=2))
    u = s.update(T0.astimezone(helsinki), 6.0)
    assert u.time == T0
    assert u.time.tzinfo is UTC
    assert s.update(T0, 6.0).flags == {CgmFlag.DUPLICATE}


def test_defaults_come_from_clinical() -> None:
    s = CgmStream()
    assert s.horizon_min == clinical.CGM_URGENT_LOW_SOON_MIN.value
    assert s.urgent_low_mmol_l == clinical.CGM_URGENT_LOW_MMOL_L.value


# --------------------------------------------------------------------------- bounded state


def test_state_stays_bounded_over_10000_readings() -> None:
    rng = random.Random(3)
    s = CgmStream()
    minute = 0.0
    for k in range(10_000):
        minute += rng.choice([0.02, 1.0, 5.0, 5.0])  # includes bursts ~1 s apart
        v = 8.0 + 4.0 * math.sin(k / 50.0) + rng.gauss(0.0, 0.3)
        s.update(at(minute), v)
        if k % 97 == 0:
            s.update(at(minute), v)  # duplicate
            s.update(at(minute - 3), v)  # late
        if k % 401 == 0:
            s.update(at(minute + 0.01), 2.2, comparator="<")
            minute += 0.01
    sizes = s.buffer_sizes()
    assert sizes["window"] <= WINDOW_MAX_READINGS
    assert sizes["recent"] <= RECENT_READINGS
    assert sizes["dip"] <= DIP_MAX_READINGS


def test_a_burst_of_readings_fills_the_window_bound_without_a_trend() -> None:
    s = CgmStream()
    u: CgmUpdate | None = None
    for k in range(200):
        u = s.update(T0 + timedelta(seconds=k), 6.0)
    assert u is not None
    assert s.buffer_sizes()["window"] == WINDOW_MAX_READINGS
    assert u.trend_readings == WINDOW_MAX_READINGS
    assert u.trend_mmol_l_min is None  # 64 readings over 63 s: span too short
    assert u.reason is not None
    assert "need 3 over 10 min" in u.reason


# --------------------------------------------------------------------------- properties

reading = st.tuples(
    st.floats(min_value=-20.0, max_value=60.0),  # minutes after the previous reading
    st.one_of(
        st.none(),
        st.floats(min_value=0.0, max_value=40.0),
        st.sampled_from([2.2, 22.2]),
    ),
    st.sampled_from([None, None, None, "<", ">", "<=", ">="]),
    st.booleans(),  # give a sensor start
)


@settings(max_examples=150, deadline=None)
@given(st.lists(reading, max_size=120), st.floats(min_value=1.0, max_value=30.0))
def test_any_sequence_never_raises_and_outputs_are_finite_or_none(
    rows: list[tuple[float, float | None, str | None, bool]], horizon: float
) -> None:
    s = CgmStream(horizon_min=horizon)
    t = T0
    for step, v, comp, with_start in rows:
        t += timedelta(minutes=step)
        u = s.update(
            t,
            v,
            comparator=comp if v is not None else None,
            sensor_start=T0 if with_start else None,
        )
        for x in (
            u.trend_mmol_l_min,
            u.trend_mg_dl_min,
            u.predicted_mmol_l,
            u.prediction_sd_mmol_l,
            u.prediction_low_bound_mmol_l,
        ):
            assert x is None or math.isfinite(x)
        assert (u.trend_mmol_l_min is None) == (u.arrow is None) == (u.predicted_mmol_l is None)
        if u.trend_mmol_l_min is None:
            assert u.reason
            assert not u.urgent_low_soon
        if not u.accepted:
            assert u.flags
            assert u.trend_mmol_l_min is None
        assert s.stale_after(t) in ("ok", "warn", "urgent")
    sizes = s.buffer_sizes()
    assert sizes["window"] <= WINDOW_MAX_READINGS


@settings(max_examples=150, deadline=None)
@given(
    start=st.floats(min_value=10.0, max_value=14.0),
    rate=st.floats(min_value=-0.1, max_value=0.1),
    steps=st.lists(st.sampled_from([1.0, 2.0, 3.0, 5.0, 4.75]), min_size=12, max_size=24),
)
def test_trend_of_a_linear_series_equals_its_slope(
    start: float, rate: float, steps: list[float]
) -> None:
    s = CgmStream()
    minute = 0.0
    u: CgmUpdate | None = None
    for step in steps:
        minute += step
        v = start + rate * (minute - 60.0)  # stays within 4..20 mmol/L over <= 120 min
        u = s.update(at(minute), v)
        assert u.accepted
    assert u is not None
    if u.trend_mmol_l_min is None:  # too few readings in the last 15 min: said why
        assert u.reason
        return
    assert u.trend_mmol_l_min == pytest.approx(rate, abs=1e-9)
    assert u.predicted_mmol_l == pytest.approx(start + rate * (minute + 20.0 - 60.0), abs=1e-8)
    assert u.arrow is trend_arrow(rate * MG)
