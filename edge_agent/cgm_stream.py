"""Streaming CGM processing at the edge: per-reading checks, trend, arrow and a short prediction.

One :class:`CgmStream` per sensor receives that sensor's readings in arrival order
(:meth:`CgmStream.update`) and answers, for each reading, in O(1) time and memory:

* **Reading checks** (:class:`CgmFlag`): duplicate time, out-of-order (late) reading, a gap of
  more than ``CGM_STALE_WARN_MIN`` (15 min) before it, device LOW/HIGH (a comparator: the value
  is the range limit, never a number for the trend), a number outside the sensor range 2.2-22.2
  mmol/L (``out-of-range``, never clamped), sensor warm-up, a physiologically implausible jump
  and, retrospectively when the recovery arrives, a suspected compression low. A flagged reading
  is never altered; it is only kept out of the trend (``accepted`` is False). Late and
  duplicate readings are left to the cloud's analytics (they hold the whole history).
* **Jumps**: a reading is compared with the newest accepted reading still in the trend window;
  a change larger than rate·Δt + allowance (:data:`IMPOSSIBLE_RATE_MMOL_L_MIN`,
  :data:`JUMP_NOISE_ALLOWANCE_MMOL_L`) is flagged. A lone spike is flagged and the next normal
  reading accepted; after a level shift readings stay flagged until the window has emptied (at
  most 15 min), then the new level starts a new trend.
* **Trend**: the least-squares slope over the accepted readings of the last
  ``CGM_TREND_WINDOW_MIN`` (15 min; DOMAIN.md §2 "over the last 15-20 min"), kept as running sums
  (n, Σx, Σy, Σx², Σxy, Σy²) that readings enter and leave; x is minutes and y mmol/L, both
  relative to a moving origin so the sums never lose precision (re-based from the bounded window
  every :data:`REBASE_AFTER_MIN`). A trend needs :data:`MIN_TREND_READINGS` readings spanning
  :data:`MIN_TREND_SPAN_MIN`, otherwise it is None and ``reason`` says why.
* **Arrow** (:func:`trend_arrow`): DOMAIN.md §2 bands in mg/dL/min, |rate| < 1 flat; 1 <= |rate|
  < 2 forty-five; 2 <= |rate| <= 3 single; > 3 double. DOMAIN.md writes "1-2" and "2-3", so the
  shared edge 2 is a choice: it goes to the single arrow, as the rise/fall alerts start at
  2 mg/dL/min. The rate is compared after rounding to 1e-9 mg/dL/min so a regression's
  floating-point residue does not move an exact edge.
* **Prediction**: the regression line extrapolated ``horizon_min`` (default 20,
  ``CGM_URGENT_LOW_SOON_MIN``) past the reading, with the standard prediction SD of a new
  observation from a simple linear regression, s·sqrt(1 + 1/n + (x_p - x̄)²/Sxx), where s is the
  residual SD but at least the sensor noise floor :data:`SENSOR_NOISE_SD_MMOL_L` (a straight line
  through 3-4 readings has no residual, yet the sensor is not noiseless). The one-sided 95 % low
  bound is predicted - 1.645 SD. It is a linear extrapolation, a model output for alerting, not a
  glucose value: it is not clamped and may fall outside the sensor range.
* **Urgent low soon** (DOMAIN.md §2: "predicted <= 3.1 mmol/L within 20 min") uses the *point*
  prediction, as DOMAIN.md words it; the low bound is exposed for a stricter rule.
* **Stale data** (:meth:`CgmStream.stale_after`): warn when more than 15 min and urgent when more
  than 30 min have passed since the last in-order reading that carried glucose information, a
  number or a LOW/HIGH (Nightscout defaults, DOMAIN.md §2); a reading without a value does not
  refresh it.

Compression lows (pressure-induced sensor attenuation, Baysal et al. 2014, J Diabetes Sci
Technol) are a *suspicion*, never a fact: a fall of at least :data:`COMPRESSION_RATE_MG_DL_MIN`
from an accepted reading at most 15 min earlier into a value below the consensus low (3.9
mmol/L; a LOW counts), that rises again at least as fast, recovering at least half of the drop
within :data:`COMPRESSION_MAX_DIP_MIN`. A stream cannot see the future, so the recovery
reading's update lists the earlier low readings in ``retro_flags`` and takes them out of the
current trend. A real hypoglycaemia treated with fast carbohydrate can look the same; the time
of day is not used (the stream does not know the patient's zone). Alerts already raised for
those readings stay the alert engine's business.

Every clinical figure comes from :mod:`device_profiles.clinical` and is a keyword parameter;
the figures defined here are remon defaults, each with its reason. Pure: no clock reads, no I/O.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final, Literal

from device_profiles import clinical
from device_profiles.units import GLUCOSE_MG_DL_PER_MMOL_L

#: A trend needs at least this many accepted readings in the window (remon default: three
#: 5-min readings, the fewest that give a slope with a residual).
MIN_TREND_READINGS: Final = 3
#: ... spanning at least this many minutes (remon default: two thirds of the 15-min window, so
#: three 5-min readings qualify and a burst of readings a minute apart does not).
MIN_TREND_SPAN_MIN: Final = 10.0
#: Sensor warm-up after the session start, minutes (remon default: the order of current sensors'
#: warm-up, 30 min to 2 h per the manufacturers' IFUs; set it per sensor model). Warm-up readings
#: are kept and flagged but not used for the trend.
SENSOR_WARMUP_MIN: Final = 60.0
#: A change between consecutive accepted readings faster than this is physiologically
#: implausible, mmol/L/min (remon default: ~5.4 mg/dL/min; blood glucose rarely changes faster
#: than 4-5 mg/dL/min, Dunn et al. 2004 Diabetes Care; 3 mg/dL/min is already a double arrow).
IMPOSSIBLE_RATE_MMOL_L_MIN: Final = 0.3
#: Change allowed on top of that rate for sensor noise, mmol/L (remon default: two readings a
#: minute apart may differ by noise alone; ~9 mg/dL).
JUMP_NOISE_ALLOWANCE_MMOL_L: Final = 0.5
#: Floor of the residual SD in the prediction, mmol/L (remon default: order of a CGM's
#: point-to-point noise, ~3.6 mg/dL; not a clinical figure).
SENSOR_NOISE_SD_MMOL_L: Final = 0.2
#: One-sided 95 % normal quantile for the prediction's low bound.
LOW_BOUND_Z: Final = 1.6448536269514722
#: Longest prediction horizon, minutes (remon default: twice the 15-min fit window; a straight
#: line says little beyond that).
MAX_HORIZON_MIN: Final = 30.0
#: Tolerance on the sensor range limits, mmol/L (remon default: DOMAIN.md §2 gives the range as
#: 2.2-22.2 mmol/L, rounded from 40-400 mg/dL; 400 mg/dL is 22.20 mmol/L and must be in range).
RANGE_ROUNDING_MMOL_L: Final = 0.05
#: Compression-low suspicion: fall into the low and rise out of it at least this fast, mg/dL/min
#: (remon default: the single-arrow rate of DOMAIN.md §2; PISA falls are abrupt, Baysal 2014).
COMPRESSION_RATE_MG_DL_MIN: Final = 2.0
#: ... the fall measured from an accepted reading at most this long before the first low one.
COMPRESSION_DROP_WITHIN_MIN: Final = 15.0
#: ... and the low over within this long (remon default: compression lows last minutes to tens
#: of minutes; a longer low is treated as real).
COMPRESSION_MAX_DIP_MIN: Final = 60.0
#: ... recovering at least this fraction of the drop (remon default).
COMPRESSION_RECOVERY_FRACTION: Final = 0.5
#: Bounded buffers: the trend window, the recent reading times (duplicate detection) and a
#: suspected dip's readings (remon defaults: a 1-min sensor fills 15-20 of 64 slots).
WINDOW_MAX_READINGS: Final = 64
RECENT_READINGS: Final = 64
DIP_MAX_READINGS: Final = 128
#: The running sums are recomputed from the window once their origin is this old, minutes.
REBASE_AFTER_MIN: Final = 60.0
#: Arrow bands compare the rate rounded to this many decimals (mg/dL/min).
ARROW_RATE_DECIMALS: Final = 9

Staleness = Literal["ok", "warn", "urgent"]


class CgmFlag(StrEnum):
    """What the stream found about one reading (a reading may carry several)."""

    DUPLICATE = "duplicate"  # same time as a reading already seen
    OUT_OF_ORDER = "out-of-order"  # earlier than the newest reading: not in the real-time trend
    GAP = "gap"  # the previous reading with a value is more than the stale-warn time before
    BELOW_RANGE = "below-range"  # device LOW (comparator '<'): not a number
    ABOVE_RANGE = "above-range"  # device HIGH (comparator '>'): not a number
    OUT_OF_RANGE = "out-of-range"  # a number outside the sensor range without a comparator
    WARM_UP = "warm-up"  # within the sensor warm-up after the session start
    IMPOSSIBLE_JUMP = "impossible-jump"  # faster change than physiology allows
    COMPRESSION_LOW = "compression-low"  # suspected compression artefact (retro_flags only)
    NO_VALUE = "no-value"  # the device gave no value (absent reason on the observation)


class TrendArrow(StrEnum):
    DOUBLE_DOWN = "double-down"
    SINGLE_DOWN = "single-down"
    FORTY_FIVE_DOWN = "forty-five-down"
    FLAT = "flat"
    FORTY_FIVE_UP = "forty-five-up"
    SINGLE_UP = "single-up"
    DOUBLE_UP = "double-up"


@dataclass(frozen=True, slots=True, kw_only=True)
class CgmUpdate:
    """The stream's answer to one reading. Trend and prediction are None with ``reason`` set
    when they cannot be computed at this reading."""

    time: datetime  # the reading's time, UTC
    accepted: bool  # used as a number in the trend and prediction
    flags: frozenset[CgmFlag]
    reason: str | None
    horizon_min: float
    trend_mmol_l_min: float | None = None
    trend_mg_dl_min: float | None = None
    arrow: TrendArrow | None = None
    trend_readings: int = 0  # accepted readings the trend was fitted to
    predicted_mmol_l: float | None = None  # regression line at time + horizon_min
    prediction_sd_mmol_l: float | None = None
    prediction_low_bound_mmol_l: float | None = None  # predicted - z·SD (one-sided 95 %)
    urgent_low_soon: bool = False  # predicted_mmol_l <= urgent low (point prediction)
    #: Earlier readings (by time) that this reading makes suspect, e.g. a compression low.
    retro_flags: tuple[tuple[datetime, CgmFlag], ...] = ()


class CgmStreamError(ValueError):
    """The caller passed something that is not a reading (naive time, NaN, bad comparator)."""


def _check_bands(bands: Sequence[float]) -> tuple[float, float, float]:
    if len(bands) != 3:
        raise ValueError(f"trend bands need 3 edges (mg/dL/min), got {len(bands)}")
    b0, b1, b2 = (float(b) for b in bands)
    if not (0.0 < b0 < b1 < b2) or not math.isfinite(b2):
        raise ValueError(f"trend bands must be finite and 0 < b0 < b1 < b2, got {tuple(bands)}")
    return b0, b1, b2


def _arrow(rate_mg_dl_min: float, b0: float, b1: float, b2: float) -> TrendArrow:
    r = round(rate_mg_dl_min, ARROW_RATE_DECIMALS)
    a = abs(r)
    if a < b0:
        return TrendArrow.FLAT
    up = r > 0
    if a < b1:
        return TrendArrow.FORTY_FIVE_UP if up else TrendArrow.FORTY_FIVE_DOWN
    if a <= b2:
        return TrendArrow.SINGLE_UP if up else TrendArrow.SINGLE_DOWN
    return TrendArrow.DOUBLE_UP if up else TrendArrow.DOUBLE_DOWN


def trend_arrow(
    rate_mg_dl_min: float,
    bands: Sequence[float] = clinical.CGM_TREND_BANDS_MG_DL_MIN,
) -> TrendArrow:
    """The arrow for a rate of change (mg/dL/min): |r| < b0 flat; b0 <= |r| < b1 forty-five;
    b1 <= |r| <= b2 single; |r| > b2 double (DOMAIN.md §2; default bands 1, 2, 3)."""
    if not math.isfinite(rate_mg_dl_min):
        raise ValueError(f"rate must be finite, got {rate_mg_dl_min!r}")
    return _arrow(rate_mg_dl_min, *_check_bands(bands))


class _Point:
    """One accepted reading in the trend window (mutable: a retro flag deactivates it)."""

    __slots__ = ("active", "ts", "v")

    def __init__(self, ts: float, v: float) -> None:
        self.ts = ts
        self.v = v
        self.active = True


class _Dip:
    """A low that followed a fast fall: a compression-low candidate until it recovers."""

    __slots__ = ("last_ts", "last_v", "min_v", "pre_v", "start_ts", "times")

    def __init__(self, pre_v: float, ts: float, v: float, t: datetime) -> None:
        self.pre_v = pre_v
        self.start_ts = ts
        self.last_ts = ts
        self.last_v = v
        self.min_v = v
        self.times: deque[tuple[float, datetime]] = deque([(ts, t)], maxlen=DIP_MAX_READINGS)


def _utc_ts(t: datetime, what: str) -> tuple[datetime, float]:
    if type(t) is datetime and t.tzinfo is UTC:  # the common case, fast
        return t, t.timestamp()
    if not isinstance(t, datetime):
        raise CgmStreamError(f"{what} must be a datetime, got {type(t).__name__}")
    if t.tzinfo is None or t.utcoffset() is None:
        raise CgmStreamError(f"{what} {t.isoformat()} is naive; an aware UTC time is required")
    u = t.astimezone(UTC)
    return u, u.timestamp()


class CgmStream:
    """Streaming state of one CGM sensor. Feed readings in arrival order to :meth:`update`."""

    def __init__(
        self,
        *,
        horizon_min: float = clinical.CGM_URGENT_LOW_SOON_MIN.value,
        urgent_low_mmol_l: float = clinical.CGM_URGENT_LOW_MMOL_L.value,
        trend_window_min: float = clinical.CGM_TREND_WINDOW_MIN.value,
        trend_bands_mg_dl_min: Sequence[float] = clinical.CGM_TREND_BANDS_MG_DL_MIN,
        stale_warn_min: float = clinical.CGM_STALE_WARN_MIN.value,
        stale_urgent_min: float = clinical.CGM_STALE_URGENT_MIN.value,
        sensor_min_mmol_l: float = clinical.CGM_SENSOR_MIN_MMOL_L.value,
        sensor_max_mmol_l: float = clinical.CGM_SENSOR_MAX_MMOL_L.value,
        warmup_min: float = SENSOR_WARMUP_MIN,
        impossible_rate_mmol_l_min: float = IMPOSSIBLE_RATE_MMOL_L_MIN,
        jump_noise_allowance_mmol_l: float = JUMP_NOISE_ALLOWANCE_MMOL_L,
        noise_floor_mmol_l: float = SENSOR_NOISE_SD_MMOL_L,
        low_bound_z: float = LOW_BOUND_Z,
        min_trend_readings: int = MIN_TREND_READINGS,
        min_trend_span_min: float = MIN_TREND_SPAN_MIN,
        compression_low_mmol_l: float = clinical.GLUCOSE_BANDS["mmol/L"].low,
        compression_rate_mg_dl_min: float = COMPRESSION_RATE_MG_DL_MIN,
        compression_max_dip_min: float = COMPRESSION_MAX_DIP_MIN,
    ) -> None:
        numbers = {
            "horizon_min": horizon_min,
            "urgent_low_mmol_l": urgent_low_mmol_l,
            "trend_window_min": trend_window_min,
            "stale_warn_min": stale_warn_min,
            "stale_urgent_min": stale_urgent_min,
            "sensor_min_mmol_l": sensor_min_mmol_l,
            "sensor_max_mmol_l": sensor_max_mmol_l,
            "warmup_min": warmup_min,
            "impossible_rate_mmol_l_min": impossible_rate_mmol_l_min,
            "jump_noise_allowance_mmol_l": jump_noise_allowance_mmol_l,
            "noise_floor_mmol_l": noise_floor_mmol_l,
            "low_bound_z": low_bound_z,
            "min_trend_span_min": min_trend_span_min,
            "compression_low_mmol_l": compression_low_mmol_l,
            "compression_rate_mg_dl_min": compression_rate_mg_dl_min,
            "compression_max_dip_min": compression_max_dip_min,
        }
        for name, x in numbers.items():
            if not math.isfinite(x) or x < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {x!r}")
        if not 0 < horizon_min <= MAX_HORIZON_MIN:
            raise ValueError(
                f"horizon_min must be in (0, {MAX_HORIZON_MIN}] min, got {horizon_min}"
            )
        if trend_window_min <= 0 or not 0 < min_trend_span_min <= trend_window_min:
            raise ValueError(
                f"need 0 < min_trend_span_min ({min_trend_span_min}) <= trend_window_min "
                f"({trend_window_min})"
            )
        if min_trend_readings < 3:
            raise ValueError(f"min_trend_readings must be >= 3, got {min_trend_readings}")
        if not stale_warn_min < stale_urgent_min:
            raise ValueError(
                f"stale_warn_min ({stale_warn_min}) must be < stale_urgent_min ({stale_urgent_min})"
            )
        if not sensor_min_mmol_l < sensor_max_mmol_l:
            raise ValueError("sensor_min_mmol_l must be < sensor_max_mmol_l")
        self.horizon_min = float(horizon_min)
        self.urgent_low_mmol_l = float(urgent_low_mmol_l)
        self._bands = _check_bands(trend_bands_mg_dl_min)
        self._window_s = trend_window_min * 60.0
        self._warn_s = stale_warn_min * 60.0
        self._urgent_s = stale_urgent_min * 60.0
        self._range_lo = sensor_min_mmol_l - RANGE_ROUNDING_MMOL_L
        self._range_hi = sensor_max_mmol_l + RANGE_ROUNDING_MMOL_L
        self._warmup_s = warmup_min * 60.0
        self._jump_rate = impossible_rate_mmol_l_min
        self._jump_allow = jump_noise_allowance_mmol_l
        self._noise = noise_floor_mmol_l
        self._z = low_bound_z
        self._min_n = min_trend_readings
        self._min_span_s = min_trend_span_min * 60.0
        self._cmp_low = compression_low_mmol_l
        self._cmp_rate = compression_rate_mg_dl_min / GLUCOSE_MG_DL_PER_MMOL_L  # mmol/L/min
        self._cmp_max_s = compression_max_dip_min * 60.0
        self._cmp_drop_s = COMPRESSION_DROP_WITHIN_MIN * 60.0
        self._rebase_s = REBASE_AFTER_MIN * 60.0

        self._newest_ts: float | None = None  # newest time of any in-order update
        self._last_data: datetime | None = None  # newest reading with glucose information
        self._last_data_ts: float | None = None
        self._recent: deque[tuple[float, float | None, str | None]] = deque(maxlen=RECENT_READINGS)
        self._sensor_start_ts: float | None = None
        self._last_high: tuple[float, float] | None = None  # accepted (ts, v) >= the low
        self._dip: _Dip | None = None
        self._window: deque[_Point] = deque()  # bounded by WINDOW_MAX_READINGS by hand
        self._reset_sums()

    # ------------------------------------------------------------------ running sums

    def _reset_sums(self) -> None:
        self._o_ts: float | None = None  # origin of x (epoch seconds) and y (mmol/L)
        self._o_v = 0.0
        self._n = 0
        self._sx = self._sy = self._sxx = self._sxy = self._syy = 0.0

    def _add(self, p: _Point) -> None:
        if self._o_ts is None:
            self._o_ts, self._o_v = p.ts, p.v
        x = (p.ts - self._o_ts) / 60.0
        y = p.v - self._o_v
        self._n += 1
        self._sx += x
        self._sy += y
        self._sxx += x * x
        self._sxy += x * y
        self._syy += y * y

    def _remove(self, p: _Point) -> None:
        assert self._o_ts is not None
        if self._n == 1:
            self._reset_sums()
            return
        x = (p.ts - self._o_ts) / 60.0
        y = p.v - self._o_v
        self._n -= 1
        self._sx -= x
        self._sy -= y
        self._sxx -= x * x
        self._sxy -= x * y
        self._syy -= y * y

    def _rebase(self) -> None:
        """Recompute the sums from the (bounded) window with the oldest point as origin."""
        self._reset_sums()
        for p in self._window:
            if p.active:
                self._add(p)

    def _evict(self, ts: float) -> None:
        w = self._window
        cutoff = ts - self._window_s
        while w and (w[0].ts < cutoff or not w[0].active):
            p = w.popleft()
            if p.active:
                self._remove(p)

    def _newest_active(self) -> _Point | None:
        for p in reversed(self._window):
            if p.active:
                return p
        return None

    # ------------------------------------------------------------------ public API

    @property
    def last_reading_time(self) -> datetime | None:
        """Time of the newest in-order reading that carried glucose information (or None)."""
        return self._last_data

    def buffer_sizes(self) -> dict[str, int]:
        """Lengths of the internal buffers (all bounded by constants of this module)."""
        return {
            "window": len(self._window),
            "recent": len(self._recent),
            "dip": 0 if self._dip is None else len(self._dip.times),
        }

    def stale_after(self, now: datetime) -> Staleness:
        """ "ok", "warn" (> stale-warn min since the last reading) or "urgent" (> stale-urgent
        min). With no reading yet: "urgent" (no data is the stalest state; check
        :attr:`last_reading_time` to tell a new stream apart)."""
        _, now_ts = _utc_ts(now, "now")
        if self._last_data_ts is None:
            return "urgent"
        age = now_ts - self._last_data_ts
        if age > self._urgent_s:
            return "urgent"
        if age > self._warn_s:
            return "warn"
        return "ok"

    def update(
        self,
        t: datetime,
        value_mmol_l: float | None,
        *,
        comparator: str | None = None,
        sensor_start: datetime | None = None,
    ) -> CgmUpdate:
        """Take one reading (time aware; value in mmol/L, or the range limit with a comparator,
        or None when the device gave no value) and return what the stream makes of it."""
        tu, ts = _utc_ts(t, "reading time")
        v = value_mmol_l
        if v is not None:
            if type(v) is not float:
                if isinstance(v, bool) or not isinstance(v, int | float):
                    raise CgmStreamError(
                        f"reading at {tu.isoformat()}: value {v!r} is not a number"
                    )
                v = float(v)
            if not math.isfinite(v):
                raise CgmStreamError(f"reading at {tu.isoformat()}: value {v!r} is not finite")
        if comparator is not None:
            if comparator not in ("<", "<=", ">", ">="):
                raise CgmStreamError(f"reading at {tu.isoformat()}: comparator {comparator!r}")
            if v is None:
                raise CgmStreamError(f"reading at {tu.isoformat()}: comparator without a value")

        start_ts = None if sensor_start is None else _utc_ts(sensor_start, "sensor_start")[1]

        flags: set[CgmFlag] = set()
        reasons: list[str] = []
        # What the value is, independent of the stream.
        if v is None:
            flags.add(CgmFlag.NO_VALUE)
            reasons.append("no value from the device")
        elif comparator is not None:
            below = comparator[0] == "<"
            flags.add(CgmFlag.BELOW_RANGE if below else CgmFlag.ABOVE_RANGE)
            reasons.append(f"device reported {'LOW' if below else 'HIGH'} ({comparator}{v:g})")
        elif not self._range_lo <= v <= self._range_hi:
            flags.add(CgmFlag.OUT_OF_RANGE)
            reasons.append(f"{v:g} mmol/L is outside the sensor range")

        # Ordering.
        if self._newest_ts is not None and ts <= self._newest_ts:
            same = next((r for r in reversed(self._recent) if r[0] == ts), None)
            if same is not None:
                flags.add(CgmFlag.DUPLICATE)
                agree = same[1] == v and same[2] == comparator
                reasons.append(
                    "same time as an earlier reading"
                    + (" and value" if agree else f" with a different value (earlier {same[1]})")
                )
            else:
                flags.add(CgmFlag.OUT_OF_ORDER)
                reasons.append("earlier than the newest reading: not used for the real-time trend")
            return CgmUpdate(
                time=tu,
                accepted=False,
                flags=frozenset(flags),
                reason="; ".join(reasons),
                horizon_min=self.horizon_min,
            )
        self._newest_ts = ts
        self._recent.append((ts, v, comparator))
        has_info = v is not None

        if self._last_data_ts is not None and ts - self._last_data_ts > self._warn_s:
            flags.add(CgmFlag.GAP)
            gap_min = (ts - self._last_data_ts) / 60.0
            reasons.append(f"{gap_min:.1f} min since the previous reading")

        if start_ts is not None:
            if self._sensor_start_ts is not None and start_ts != self._sensor_start_ts:
                self._window.clear()
                self._reset_sums()
                self._dip = None
                self._last_high = None
                reasons.append("new sensor session: trend restarted")
            self._sensor_start_ts = start_ts
        if self._sensor_start_ts is not None and ts - self._sensor_start_ts < self._warmup_s:
            flags.add(CgmFlag.WARM_UP)
            reasons.append(f"sensor warm-up ({self._warmup_s / 60.0:g} min after the start)")

        self._evict(ts)

        retro: tuple[tuple[datetime, CgmFlag], ...] = ()
        if (
            v is not None
            and CgmFlag.WARM_UP not in flags
            and (self._dip is not None or v < self._cmp_low or comparator in ("<", "<="))
        ):
            retro = self._compression_step(tu, ts, v, comparator)
            if retro:
                reasons.append(
                    f"fast recovery from a fast fall: {len(retro)} earlier low reading(s) "
                    "suspected compression artefact, removed from the trend"
                )

        usable = v is not None and not flags & _NOT_NUMBERS
        if usable:
            assert v is not None
            w = self._window
            prev = w[-1] if w and w[-1].active else self._newest_active()
            if prev is not None:
                dt_min = (ts - prev.ts) / 60.0
                if abs(v - prev.v) > self._jump_rate * dt_min + self._jump_allow:
                    flags.add(CgmFlag.IMPOSSIBLE_JUMP)
                    reasons.append(
                        f"change of {v - prev.v:+.2f} mmol/L in {dt_min:.1f} min is faster than "
                        "physiologically plausible"
                    )
        accepted = usable and CgmFlag.IMPOSSIBLE_JUMP not in flags
        if accepted:
            assert v is not None
            w = self._window
            if len(w) >= WINDOW_MAX_READINGS:
                old = w.popleft()
                if old.active:
                    self._remove(old)
                self._evict(ts)  # drop inactive points that are now at the front
            p = _Point(ts, v)
            w.append(p)
            self._add(p)
            if v >= self._cmp_low:
                self._last_high = (ts, v)
        if has_info:
            self._last_data_ts = ts
            self._last_data = tu
        if self._o_ts is not None and ts - self._o_ts > self._rebase_s:
            self._rebase()

        if not accepted:
            reasons.append("no trend at this reading: it is not used as a number")
            return CgmUpdate(
                time=tu,
                accepted=False,
                flags=frozenset(flags),
                reason="; ".join(reasons),
                horizon_min=self.horizon_min,
                retro_flags=retro,
            )
        return self._fit(tu, ts, flags, reasons, retro)

    # ------------------------------------------------------------------ internals

    def _fit(
        self,
        tu: datetime,
        ts: float,
        flags: set[CgmFlag],
        reasons: list[str],
        retro: tuple[tuple[datetime, CgmFlag], ...],
    ) -> CgmUpdate:
        n = self._n
        span_s = ts - self._window[0].ts if self._window else 0.0
        if n < self._min_n or span_s < self._min_span_s:
            reasons.append(
                f"no trend: {n} reading(s) over {span_s / 60.0:.1f} min in the window "
                f"(need {self._min_n} over {self._min_span_s / 60.0:g} min)"
            )
            return CgmUpdate(
                time=tu,
                accepted=True,
                flags=frozenset(flags),
                reason="; ".join(reasons),
                horizon_min=self.horizon_min,
                trend_readings=n,
                retro_flags=retro,
            )
        assert self._o_ts is not None
        mx = self._sx / n
        my = self._sy / n
        sxx = self._sxx - self._sx * mx
        sxy = self._sxy - self._sx * my
        syy = self._syy - self._sy * my
        slope = sxy / sxx
        # Numerical floor only: rounding can make the residual sum of squares a hair negative.
        ssr = max(0.0, syy - slope * sxy)
        s = max(math.sqrt(ssr / (n - 2)), self._noise)
        xp = (ts - self._o_ts) / 60.0 + self.horizon_min
        predicted = self._o_v + my + slope * (xp - mx)
        sd = s * math.sqrt(1.0 + 1.0 / n + (xp - mx) ** 2 / sxx)
        rate_mg = slope * GLUCOSE_MG_DL_PER_MMOL_L
        return CgmUpdate(
            time=tu,
            accepted=True,
            flags=frozenset(flags),
            reason="; ".join(reasons) if reasons else None,
            horizon_min=self.horizon_min,
            trend_mmol_l_min=slope,
            trend_mg_dl_min=rate_mg,
            arrow=_arrow(rate_mg, *self._bands),
            trend_readings=n,
            predicted_mmol_l=predicted,
            prediction_sd_mmol_l=sd,
            prediction_low_bound_mmol_l=predicted - self._z * sd,
            urgent_low_soon=predicted <= self.urgent_low_mmol_l,
            retro_flags=retro,
        )

    def _compression_step(
        self, tu: datetime, ts: float, v: float, comparator: str | None
    ) -> tuple[tuple[datetime, CgmFlag], ...]:
        """Advance the compression-low candidate with one in-order reading (not in warm-up)."""
        is_low = (comparator is not None and comparator[0] == "<") or (
            comparator is None and v < self._cmp_low
        )
        dip = self._dip
        if dip is not None and ts - dip.start_ts > self._cmp_max_s:
            dip = self._dip = None  # too long for a compression low: treated as real
        if dip is None:
            hi = self._last_high
            if is_low and hi is not None and 0 < ts - hi[0] <= self._cmp_drop_s:
                fall = (hi[1] - v) / ((ts - hi[0]) / 60.0)  # v is an upper bound for a LOW
                if fall >= self._cmp_rate:
                    self._dip = _Dip(hi[1], ts, v, tu)
            return ()
        if is_low:
            if len(dip.times) >= DIP_MAX_READINGS:
                self._dip = None  # more readings than we track: no partial suspicion
                return ()
            dip.times.append((ts, tu))
            dip.last_ts, dip.last_v = ts, v
            dip.min_v = min(dip.min_v, v)
            return ()
        self._dip = None
        if comparator is not None:  # HIGH right after a low: not a recovery we can measure
            return ()
        rise = (v - dip.last_v) / ((ts - dip.last_ts) / 60.0)
        recovered = v - dip.min_v >= COMPRESSION_RECOVERY_FRACTION * (dip.pre_v - dip.min_v)
        if rise < self._cmp_rate or not recovered:
            return ()
        suspect = {d_ts for d_ts, _ in dip.times}
        for p in self._window:
            if p.active and p.ts in suspect:
                p.active = False
                self._remove(p)
        self._evict(ts)
        if self._last_high is not None and self._last_high[0] in suspect:
            self._last_high = None
        return tuple((d_t, CgmFlag.COMPRESSION_LOW) for _, d_t in dip.times)


#: Flags that keep a reading's value out of the trend.
_NOT_NUMBERS: Final = frozenset(
    {
        CgmFlag.NO_VALUE,
        CgmFlag.BELOW_RANGE,
        CgmFlag.ABOVE_RANGE,
        CgmFlag.OUT_OF_RANGE,
        CgmFlag.WARM_UP,
    }
)
