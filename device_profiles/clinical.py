"""Clinical figures the analytics use, each with its value, unit and source in one place.

Edge-side signal code (``edge_agent``) and the cloud's aggregate analytics (``cloud_ingest``)
both read their defaults from here, so a figure is written once. Every figure is a *default*:
the analyses take it as a parameter a clinician can override per patient or care team
(DOMAIN.md, introduction). Source of every figure: ``../shared/docs/DOMAIN.md`` §1-3 unless
stated otherwise; "remon default" marks an engineering choice that is not from a clinical
source.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class Figure:
    """One number with its UCUM unit (or "1" for a ratio, "%" for a percentage) and source."""

    value: float
    unit: str
    source: str

    def __post_init__(self) -> None:
        if not math.isfinite(self.value):
            raise ValueError(f"clinical figure must be finite: {self.source}")

    def __float__(self) -> float:
        return float(self.value)


# --- §1 PEF home monitoring -----------------------------------------------------------------

#: Diurnal variation significant at >= 20 % and >= 60 L/min (BTS; Käypä hoito UNVERIFIED).
PEF_DIURNAL_PERCENT: Final = Figure(20.0, "%", "DOMAIN.md §1 diagnostic support rule")
PEF_DIURNAL_L_MIN: Final = Figure(60.0, "L/min", "DOMAIN.md §1 diagnostic support rule")
#: BD response significant at >= 15 % and >= 60 L/min.
PEF_BD_PERCENT: Final = Figure(15.0, "%", "DOMAIN.md §1 diagnostic support rule")
PEF_BD_L_MIN: Final = Figure(60.0, "L/min", "DOMAIN.md §1 diagnostic support rule")
#: A criterion is met on this many days (in 2 weeks).
PEF_CRITERION_DAYS: Final = Figure(3, "d", "DOMAIN.md §1: on >= 3 days in 2 weeks")
#: Two best blows of a session within 20 L/min (Finnish practice; ATS/ERS 2005: 40 L/min).
PEF_REPRODUCIBILITY_L_MIN: Final = Figure(20.0, "L/min", "DOMAIN.md §1 blow quality")
#: At least 3 blows a session; about 5 at most when the two best disagree.
PEF_MIN_BLOWS: Final = Figure(3, "1", "DOMAIN.md §1 protocol: at least 3 blows")
PEF_MAX_BLOWS: Final = Figure(5, "1", "DOMAIN.md §1 protocol: about 5 at most")
#: Zones against personal best: green >= 80 %, yellow 50-80 %, red < 50 %.
PEF_ZONE_GREEN_PERCENT: Final = Figure(80.0, "%", "DOMAIN.md §1 zones (asthma action plan)")
PEF_ZONE_RED_PERCENT: Final = Figure(50.0, "%", "DOMAIN.md §1 zones (asthma action plan)")
#: Time to peak flow shorter than 120 ms (the usual spirometry acceptability criterion).
PEF_TIME_TO_PEAK_MS: Final = Figure(120.0, "ms", "DOMAIN.md §1 blow quality")
#: A PEF meter's range.
PEF_METER_MIN_L_MIN: Final = Figure(50.0, "L/min", "DOMAIN.md §1: meter range 50-900 L/min")
PEF_METER_MAX_L_MIN: Final = Figure(900.0, "L/min", "DOMAIN.md §1: meter range 50-900 L/min")
#: Back-extrapolated volume: ATS/ERS 2005 accepts < 5 % of FVC or < 0.150 L, whichever is
#: greater (DOMAIN.md §1 asks for it to be "small"; the figures are ATS/ERS 2005's).
PEF_BEV_L: Final = Figure(0.150, "L", "ATS/ERS 2005 spirometry (DOMAIN.md §1: BEV small)")
PEF_BEV_FRACTION: Final = Figure(0.05, "1", "ATS/ERS 2005 spirometry (DOMAIN.md §1: BEV small)")
#: End of test: less than 0.025 L exhaled in 1 s, as a flow.
PEF_END_FLOW_L_S: Final = Figure(0.025, "L/s", "ATS/ERS 2005 end-of-test criterion")

# --- §2 Glucose -----------------------------------------------------------------------------

_CONSENSUS: Final = "DOMAIN.md §2 CGM consensus metrics (Battelino 2019)"


@dataclass(frozen=True, slots=True)
class GlucoseBands:
    """The consensus range limits in one unit (they are published per unit, not converted)."""

    unit: str
    very_low: float  # TBR level 2 below this
    low: float  # TBR level 1 below this (and >= very_low)
    high: float  # TAR level 1 above this
    very_high: float  # TAR level 2 above this
    source: str = _CONSENSUS


#: 70/54/180/250 mg/dL; 3.9/3.0/10.0/13.9 mmol/L. Thresholds apply in the unit of the data, so
#: results match published tools on the same data.
GLUCOSE_BANDS: Final[dict[str, GlucoseBands]] = {
    "mg/dL": GlucoseBands("mg/dL", very_low=54.0, low=70.0, high=180.0, very_high=250.0),
    "mmol/L": GlucoseBands("mmol/L", very_low=3.0, low=3.9, high=10.0, very_high=13.9),
}
#: GMI (%) = 3.31 + 0.02392 x mean glucose in mg/dL.
GMI_INTERCEPT_PERCENT: Final = Figure(3.31, "%", "DOMAIN.md §2 GMI (Bergenstal 2018)")
GMI_SLOPE_PERCENT_PER_MG_DL: Final = Figure(
    0.02392, "%/(mg/dL)", "DOMAIN.md §2 GMI (Bergenstal 2018)"
)
#: Sufficiency: 14 days of data with the sensor active >= 70 % of the time.
CGM_SUFFICIENT_DAYS: Final = Figure(14, "d", "DOMAIN.md §2 sufficiency")
CGM_SUFFICIENT_ACTIVE_PERCENT: Final = Figure(70.0, "%", "DOMAIN.md §2 sufficiency")
CGM_CV_TARGET_PERCENT: Final = Figure(36.0, "%", "DOMAIN.md §2: CV target <= 36 %")
#: AGP percentiles by time of day.
AGP_PERCENTILES: Final = (5, 25, 50, 75, 95)
#: Urgent low 3.1 mmol/L (55 mg/dL); urgent low soon: predicted <= 3.1 within 20 min.
CGM_URGENT_LOW_MMOL_L: Final = Figure(3.1, "mmol/L", "DOMAIN.md §2 real-time alarms")
CGM_URGENT_LOW_SOON_MIN: Final = Figure(20.0, "min", "DOMAIN.md §2 urgent-low-soon horizon")
#: Rate of change is taken over the last 15-20 min.
CGM_TREND_WINDOW_MIN: Final = Figure(15.0, "min", "DOMAIN.md §2 rate of change window")
#: Trend arrow bands, mg/dL/min: < 1 flat; 1-2 45°; 2-3 single arrow; > 3 double arrow.
CGM_TREND_BANDS_MG_DL_MIN: Final = (1.0, 2.0, 3.0)
CGM_TREND_SOURCE: Final = "DOMAIN.md §2 rate of change (mg/dL/min)"
#: Stale data: warn after 15 min without readings, urgent after 30 min (Nightscout defaults).
CGM_STALE_WARN_MIN: Final = Figure(15.0, "min", "DOMAIN.md §2 stale data")
CGM_STALE_URGENT_MIN: Final = Figure(30.0, "min", "DOMAIN.md §2 stale data")
#: Sensor range 2.2-22.2 mmol/L (40-400 mg/dL); outside it the device says LOW/HIGH.
CGM_SENSOR_MIN_MMOL_L: Final = Figure(2.2, "mmol/L", "DOMAIN.md §2 sensor range")
CGM_SENSOR_MAX_MMOL_L: Final = Figure(22.2, "mmol/L", "DOMAIN.md §2 sensor range")
#: A hypoglycaemia event needs >= 15 consecutive minutes below the level.
HYPO_EVENT_MIN: Final = Figure(15.0, "min", "DOMAIN.md §2 hypoglycaemia event")

# --- §3 Blood pressure ----------------------------------------------------------------------

#: Home BP protocol: 7 days, duplicate readings morning and evening, day 1 discarded.
HOME_BP_DAYS: Final = Figure(7, "d", "DOMAIN.md §3 home BP protocol")
HOME_BP_THRESHOLD_SYS: Final = Figure(135.0, "mm[Hg]", "DOMAIN.md §3 home threshold 135/85")
HOME_BP_THRESHOLD_DIA: Final = Figure(85.0, "mm[Hg]", "DOMAIN.md §3 home threshold 135/85")
#: Kiosk visit: 3 readings, more if the first two differ by >= 10 mmHg; mean of the last two.
KIOSK_BP_READINGS: Final = Figure(3, "1", "DOMAIN.md §3 kiosk/office visit")
KIOSK_BP_REPEAT_DIFF: Final = Figure(10.0, "mm[Hg]", "DOMAIN.md §3 kiosk/office visit")
#: "More" readings when the first two differ: one more, then the mean of the last two
#: (remon default: DOMAIN.md §3 says "more" without a number).
KIOSK_BP_EXTRA: Final = Figure(1, "1", "remon default for DOMAIN.md §3 'more'")


def kiosk_bp_wanted(
    first: tuple[float, float] | None,
    second: tuple[float, float] | None,
    *,
    readings: int = int(KIOSK_BP_READINGS.value),
    repeat_diff_mm_hg: float = KIOSK_BP_REPEAT_DIFF.value,
    extra: int = int(KIOSK_BP_EXTRA.value),
) -> int:
    """How many BP readings a kiosk visit wants (DOMAIN.md §3): ``readings``, and ``extra``
    more when the first two (systolic, diastolic) differ by ``repeat_diff_mm_hg`` or more.
    Shared by the kiosk's screen (asking for one more) and the cloud's visit summary."""
    if first is None or second is None:
        return readings
    differ = (
        abs(first[0] - second[0]) >= repeat_diff_mm_hg
        or abs(first[1] - second[1]) >= repeat_diff_mm_hg
    )
    return readings + (extra if differ else 0)


@dataclass(frozen=True, slots=True)
class BpGrade:
    key: str
    label: str
    systolic_min: float  # mm[Hg]
    diastolic_min: float  # mm[Hg]


#: ESH 2023 office grades, most severe first; a pair takes the highest grade either value meets.
#: Applied to a home average they describe the average's band, not a diagnosis.
ESH_GRADES: Final = (
    BpGrade("grade3", "Grade 3 (>= 180 and/or >= 110)", 180.0, 110.0),
    BpGrade("grade2", "Grade 2 (160-179 and/or 100-109)", 160.0, 100.0),
    BpGrade("grade1", "Grade 1 (140-159 and/or 90-99)", 140.0, 90.0),
    BpGrade("high-normal", "High-normal (130-139 and/or 85-89)", 130.0, 85.0),
)
ESH_SOURCE: Final = "DOMAIN.md §3 ESH 2023 grades"
