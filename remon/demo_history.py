"""``remon demo``'s history: 14 days of simulated readings and dose events for the demo fleet,
published through the production edge path, so every view of the care-team UI has data at once.

What patient ``i`` (subject ``demo-patient-{i+1:04d}``, site ``home-{i+1:04d}``, profile
``FLEET_PROFILES[i % 6]`` of :mod:`remon.demo`) gets, in the patient's zone (Europe/Helsinki):

- **CGM** (the patients with a CGM in the live fleet, ``i % 3 == 0``): a reading every 5 min
  from local midnight 14 days ago until ``now`` (or ``cgm_until``), as a BLE CGM reports it: whole
  mg/dL converted to mmol/L with the original kept in the provenance; 10-day sensor sessions
  with a 1 h warm-up gap after each insertion; a daily pattern of meals, a dawn rise, a slow
  drift and sensor noise (numpy, seeded). The hypo-prone profile dips below 3.9 mmol/L on some
  nights, the hyperglycaemic one stays mostly above 10. A value beyond the sensor range
  (DOMAIN.md §2: 40-400 mg/dL) is sent as the sensor's LO/HI (the limit with a comparator).
- **PEF diary** (the PEF-board patients, ``i % 3 == 0``): the 14 local days ending today, a
  morning and an evening session of 3 blows a day, on some mornings a post-BD session 15-20 min
  after the pre-BD one, now and then a fourth blow the edge flagged (``early-stop``). The first
  patient has a morning dip on every third day (by date): >= 20 % and >= 60 L/min diurnal
  variation and a BD response on those days, so the diary's criteria are met.
- **Home BP** (every patient): the 7 local days ending today, two cuff readings in the morning
  and two in the evening (DOMAIN.md §3); the hypertensive profile averages above 135/85.
- **Dispenser doses** (the dispenser clients, ``i % 3 == 1``): 08:00, 14:00 and 20:00 local for
  14 days: ``dose_due`` and ``dose_dispensed`` at the scheduled time, then ``dose_taken``,
  ``dose_taken_late`` or ``dose_missed`` (the 5-min window of the demo's clients) as the client's
  behaviour (``DISPENSER_CLIENTS``) makes likely; every event carries ``doses_left``.
- **Kiosk visits** (every patient): 2 visits in the last 14 days at the shared health station
  ``kiosk-0001`` (subject: the patient the visit identified), on weekdays between 08:00 and
  16:00 local, days apart: height (rod) and weight (scale), both behind our bridge
  board, the BMI the hub derives from them (flagged ``derived``), 3 BP readings 1-2 min apart,
  SpO2 with the oximeter's pulse, temperature. Values follow the profile and raise no alert:
  the hypoxic profile 94-95 %, the febrile one 38.2-38.8 °C on one of the two visits. Visit
  ``k`` recurs every two weeks at the same instant, in week ``k`` of the cycle, so any 14 days
  hold both; the patients have their own slots (no two visits overlap up to 135 patients).

Only what happened at or before ``now`` is sent. Every value depends only on ``seed``, the
patient and its own instant or local date, never on ``now``: a later run sends the same readings
with the same content-derived ids for the overlapping period (and one message per device and
local day, so whole past days repeat with the same ``msg_id``), and ingest drops them as
duplicates. Everything carries the ``simulated`` quality flag, and device ids end in
``-history``, so history is never taken for a live device.

Each site (the home hubs and the kiosk) publishes through its own
:class:`~gateway.outbox.Outbox` (``data_dir/history/<site>``) and :class:`~gateway.relay.Relay`
(client id ``remon-history-<site>``), like a hub that uploads what it stored while offline. A
relay's retained status of its site says "offline" when it stops: start the live fleet after
this, or its next status (within a minute) corrects it.

The PEF personal best and diary period are the ingest's clinical settings, not MQTT.
:func:`seed_personal_bests` goes first, so the zone rules judge the history's blows as they
arrive (the dip mornings raise a yellow-zone alert that green evenings mark cleared);
:func:`seed_pef_diaries` goes last, once the history is stored, or the missed-session rule
would judge the diary's windows before their blows are in. :func:`load_history` does the three
steps in that order for ``remon demo``.
"""

from __future__ import annotations

import math
import time as clock
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Final, Literal, TypeVar
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from cloud_ingest.care import Principal, Role
from cloud_ingest.clinical_settings import ClinicalSettings
from cloud_ingest.consumer import Consumer
from cloud_ingest.storage import Storage
from device_profiles.events import DeviceEvent, EventKind
from device_profiles.observation import (
    Comparator,
    DeviceIdentity,
    Observation,
    Provenance,
    QualityFlag,
)
from device_profiles.units import GLUCOSE_MG_DL_PER_MMOL_L, convert
from edge_agent.kiosk_station import bmi_observation
from gateway.outbox import Outbox
from gateway.relay import Relay, RelayConfig
from gateway.wire import (
    Answer,
    OutboundMessage,
    Subject,
    VisitPart,
    encode_events,
    encode_observations,
    encode_visit,
)

__all__ = [
    "BP_DAYS",
    "HISTORY_DAYS",
    "KIOSK_SITE",
    "PERSONAL_BEST_L_MIN",
    "HistoryError",
    "HistoryPlan",
    "HistoryStats",
    "KioskVisit",
    "bp_history",
    "cgm_history",
    "dose_history",
    "history_plan",
    "kiosk_history",
    "load_history",
    "pef_history",
    "publish_history",
    "seed_history_settings",
    "seed_pef_diaries",
    "seed_personal_bests",
]

MqttProtocol = Literal["auto", "5", "3.1.1"]
Behaviour = Literal["on_time", "late", "misses", "mixed"]

TZ: Final = ZoneInfo("Europe/Helsinki")  # the demo patients' zone (remon.demo.seed_directory)
#: Days of CGM, PEF diary and doses (DOMAIN.md §1 PEF: 2 weeks; §2 CGM sufficiency: 14 days).
HISTORY_DAYS: Final = 14
#: Days of home BP (DOMAIN.md §3: 7 days, morning and evening duplicates).
BP_DAYS: Final = 7
#: The clinician-entered PEF personal best of the demo's PEF patients (L/min). The live PEF
#: board blows 405-472 L/min (edge_agent.config pef_l_min 450 x 0.9-1.05): green (>= 80 %).
PERSONAL_BEST_L_MIN: Final = 500.0
#: The agent version in the history relays' status messages.
HISTORY_AGENT_VERSION: Final = "0.1.0-history"

CGM_INTERVAL_S: Final = 300  # 5 min: a CGM's reading interval
#: Sensor wear and warm-up (remon demo values, like 10-day sensors with a 1 h warm-up).
CGM_SENSOR_DAYS: Final = 10
CGM_WARM_UP_S: Final = 3600
#: The sensor's range in mg/dL (DOMAIN.md §2: 2.2-22.2 mmol/L, 40-400 mg/dL; LO/HI outside).
CGM_RANGE_MG_DL: Final = (40, 400)
#: Sessions of patient i start at this instant plus i x 3 days, every CGM_SENSOR_DAYS.
_CGM_ANCHOR: Final = datetime(2024, 1, 1, 8, 0, tzinfo=UTC)
#: The demo's dispenser clients: dose times and missed-dose window (remon.demo.seed_directory).
DOSE_TIMES: Final = (time(8, 0), time(14, 0), time(20, 0))
MISSED_WINDOW: Final = timedelta(minutes=5)
#: Taken after this share of the window is late (as the live dispenser sim: window / 3).
_LATE_AFTER: Final = MISSED_WINDOW / 3
#: Sachets on a roll, changed every HISTORY_DAYS days (remon demo value: two weeks of 3 doses
#: and a few spare).
ROLL_DOSES: Final = 56

# random-stream labels: each stream is seeded by (seed, patient, label, day or instant)
(
    _CGM_MEALS,
    _CGM_NIGHT,
    _CGM_NOISE,
    _CGM_DRIFT,
    _PEF,
    _BP,
    _DOSE,
    _KIOSK,
    _KIOSK_BODY,
    _KIOSK_SLOTS,
) = range(10)


class HistoryError(RuntimeError):
    """The history could not be published (the broker did not confirm it in time)."""


# --------------------------------------------------------------------------------------------
# who has what (as the live fleet in remon.demo)


def subject_ref(i: int) -> str:
    return f"demo-patient-{i + 1:04d}"


def site_of(i: int) -> str:
    return f"home-{i + 1:04d}"


def has_cgm(i: int) -> bool:
    return i % 3 == 0  # remon.demo.ble_devices: every third hub has a CGM


def has_pef(i: int) -> bool:
    return i % 3 == 0  # remon.demo.serial_devices: every third hub has a PEF board


def has_dispenser(i: int) -> bool:
    return i % 3 == 1  # remon.demo.serial_devices / seed_directory: the dispenser clients


#: The patient whose diary shows morning dips (and the BD response) on every third day.
PEF_DIP_PATIENT: Final = 0


def _profile(i: int) -> str:
    from remon.demo import FLEET_PROFILES  # lazily: remon.demo imports this module

    return FLEET_PROFILES[i % len(FLEET_PROFILES)]


def _behaviour(i: int) -> Behaviour:
    from remon.demo import DISPENSER_CLIENTS

    b = DISPENSER_CLIENTS[(i // 3) % len(DISPENSER_CLIENTS)]
    if b not in ("on_time", "late", "misses", "mixed"):
        raise HistoryError(f"unknown dispenser client behaviour {b!r}")
    return b  # type: ignore[return-value]


def _rng(seed: int, i: int, stream: int, key: int) -> np.random.Generator:
    return np.random.default_rng([seed, i, stream, key])


def _spread(rng: np.random.Generator, sd: float) -> float:
    """A normal draw cut at 2.5 SD: a simulated profile stays inside its own band (the
    hypertensive one below the grade 3 alert, 180/110), whatever the seed and the day."""
    return float(np.clip(rng.normal(0.0, sd), -2.5 * sd, 2.5 * sd))


def _local(d: date, t: time) -> datetime:
    """A local wall time as an aware UTC instant (a spring-forward gap time moves on)."""
    return datetime.combine(d, t, TZ).astimezone(UTC)


def _days(today: date, n: int) -> list[date]:
    return [today - timedelta(days=n - 1 - k) for k in range(n)]


def _sim() -> frozenset[QualityFlag]:
    return frozenset({QualityFlag.SIMULATED})


# --------------------------------------------------------------------------------------------
# CGM


@dataclass(frozen=True, slots=True)
class _CgmModel:
    base: float  # overnight level, mmol/L
    meal: tuple[float, float]  # rise of a meal, low-high, mmol/L
    tau_min: float  # minutes from a meal to its peak
    dawn: float  # early-morning rise, mmol/L
    drift: float  # amplitude of the slow drift, mmol/L
    noise: float  # sensor noise, SD mmol/L
    night_low: tuple[float, float]  # depth of a nocturnal dip, low-high (0, 0: none)
    night_low_share: float  # share of nights with one


_CGM_NORMAL: Final = _CgmModel(5.4, (1.8, 3.2), 45, 0.3, 0.35, 0.12, (0.0, 0.0), 0.0)
CGM_MODELS: Final[dict[str, _CgmModel]] = {
    "normal": _CGM_NORMAL,
    "hypo-prone": _CgmModel(5.0, (1.5, 3.0), 40, 0.0, 0.4, 0.15, (1.7, 2.4), 0.35),
    "hyperglycaemic": _CgmModel(10.2, (3.5, 6.0), 70, 1.5, 0.9, 0.2, (0.0, 0.0), 0.0),
    "hypertensive": _CgmModel(5.9, (1.8, 3.2), 50, 0.4, 0.35, 0.12, (0.0, 0.0), 0.0),
    "hypoxic": _CgmModel(5.8, (1.8, 3.2), 50, 0.3, 0.35, 0.12, (0.0, 0.0), 0.0),
    "febrile": _CgmModel(6.1, (2.0, 3.4), 50, 0.3, 0.4, 0.14, (0.0, 0.0), 0.0),
}
#: Meals: (local time, spread in minutes, share of days with it, amplitude factor).
_MEALS: Final = (
    (time(7, 30), 30, 1.0, 1.0),
    (time(12, 0), 40, 1.0, 0.9),
    (time(17, 30), 45, 1.0, 1.0),
    (time(21, 0), 30, 0.4, 0.5),
)


def cgm_identity(i: int) -> DeviceIdentity:
    return DeviceIdentity(
        manufacturer="remon virtual",
        model="VC-1",
        serial=f"HIST-CGM-{i + 1:04d}",
        firmware="1.0.0",
        transport="ble",
    )


def _meals(model: _CgmModel, seed: int, i: int, d: date) -> list[tuple[float, float]]:
    """(UTC seconds, rise) of the meals of local date ``d``."""
    rng = _rng(seed, i, _CGM_MEALS, d.toordinal())
    out = []
    for t, spread, share, factor in _MEALS:
        draw_share, draw_shift, draw_rise = rng.random(3)
        if draw_share >= share:
            continue
        at = _local(d, t) + timedelta(minutes=(draw_shift * 2 - 1) * spread)
        lo, hi = model.meal
        out.append((at.timestamp(), factor * (lo + (hi - lo) * draw_rise)))
    return out


def _night_low(model: _CgmModel, seed: int, i: int, d: date) -> tuple[float, float, float] | None:
    """(UTC seconds of the nadir, depth, width s) of the night before local date ``d``."""
    lo, hi = model.night_low
    if hi <= 0:
        return None
    rng = _rng(seed, i, _CGM_NIGHT, d.toordinal())
    has, where, depth, width = rng.random(4)
    if has >= model.night_low_share:
        return None
    nadir = _local(d, time(1, 30)) + timedelta(minutes=float(where) * 180)
    return nadir.timestamp(), lo + (hi - lo) * float(depth), 60.0 * (35 + 25 * float(width))


def _cgm_model_values(
    model: _CgmModel, seed: int, i: int, ts: npt.NDArray[np.float64], days: Sequence[date]
) -> npt.NDArray[np.float64]:
    g = np.full(ts.shape, model.base, dtype=np.float64)
    # meals of the day before the first too: a late meal's rise runs past midnight
    meals = [m for d in [days[0] - timedelta(days=1), *days] for m in _meals(model, seed, i, d)]
    if meals:
        at = np.array([m[0] for m in meals])
        rise = np.array([m[1] for m in meals])
        x = (ts[:, None] - at[None, :]) / (model.tau_min * 60.0)
        shape = np.where(x > 0, np.clip(x, 0, None) * np.exp(1 - np.clip(x, 0, 50)), 0.0)
        g += shape @ rise
    # dawn rise around 06:00 local
    local = [datetime.fromtimestamp(t, TZ) for t in ts.tolist()]
    hours = np.array([t.hour + t.minute / 60 for t in local])
    g += model.dawn * np.exp(-(((hours - 6.0) / 1.3) ** 2))
    # slow drift: fixed per patient, a function of the instant only
    phases = _rng(seed, i, _CGM_DRIFT, 0).random(3) * 2 * math.pi
    for period_h, share, phase in zip((2.7, 6.1, 15.3), (0.5, 0.35, 0.3), phases, strict=True):
        g += model.drift * share * np.sin(2 * math.pi * ts / (period_h * 3600) + phase)
    for d in days:
        low = _night_low(model, seed, i, d)
        if low is not None:
            nadir, depth, width = low
            g -= depth * np.exp(-0.5 * ((ts - nadir) / width) ** 2)
    # sensor noise: one stream per UTC day, indexed by the reading's slot in it
    day_index = (ts // 86_400).astype(np.int64)
    slot = ((ts % 86_400) // CGM_INTERVAL_S).astype(np.int64)
    for k in np.unique(day_index):
        noise = _rng(seed, i, _CGM_NOISE, int(k)).normal(0.0, model.noise, 86_400 // CGM_INTERVAL_S)
        sel = day_index == k
        g[sel] += noise[slot[sel]]
    return g


def cgm_history(
    i: int, *, start: datetime, end: datetime, seed: int = 0, profile: str | None = None
) -> list[Observation]:
    """Patient ``i``'s CGM readings at the 5-min instants in ``(start, end]``."""
    model = CGM_MODELS.get(profile or _profile(i), _CGM_NORMAL)
    first = math.floor(start.timestamp() / CGM_INTERVAL_S) + 1
    last = math.floor(end.timestamp() / CGM_INTERVAL_S)
    if last < first:
        return []
    ts_all = np.arange(first, last + 1, dtype=np.int64) * CGM_INTERVAL_S
    anchor = (_CGM_ANCHOR + timedelta(days=3 * i)).timestamp()
    period = CGM_SENSOR_DAYS * 86_400
    session_start = anchor + np.floor((ts_all - anchor) / period) * period
    worn = ts_all - session_start >= CGM_WARM_UP_S
    ts = ts_all[worn].astype(np.float64)
    starts = session_start[worn]
    if ts.size == 0:
        return []
    d0 = datetime.fromtimestamp(float(ts[0]), TZ).date()
    d1 = datetime.fromtimestamp(float(ts[-1]), TZ).date()
    days = [d0 + timedelta(days=k) for k in range((d1 - d0).days + 1)]
    mmol = _cgm_model_values(model, seed, i, ts, days)
    lo, hi = CGM_RANGE_MG_DL
    out: list[Observation] = []
    for t, s, v in zip(ts.tolist(), starts.tolist(), mmol.tolist(), strict=True):
        mg_dl = round(v * GLUCOSE_MG_DL_PER_MMOL_L)
        comparator: Comparator | None = None
        quality = _sim()
        if mg_dl < lo:
            mg_dl, comparator, quality = lo, "<", quality | {QualityFlag.BELOW_RANGE}
        elif mg_dl > hi:
            mg_dl, comparator, quality = hi, ">", quality | {QualityFlag.ABOVE_RANGE}
        at = datetime.fromtimestamp(t, UTC)
        sensor_start = datetime.fromtimestamp(s, UTC)
        out.append(
            Observation(
                measure="glucose.cgm",
                unit="mmol/L",
                value=convert(float(mg_dl), "mg/dL", "mmol/L"),
                comparator=comparator,
                effective_time=at,
                record_key=f"cgm:{sensor_start:%Y%m%dT%H%MZ}+{round((t - s) / 60)}",
                clock_offset_s=0.0,
                quality=quality,
                provenance=Provenance(
                    source="ble:0x2AA7", original_value=float(mg_dl), original_unit="mg/dL"
                ),
            )
        )
    return out


# --------------------------------------------------------------------------------------------
# PEF diary


def pef_identity(i: int) -> DeviceIdentity:
    return DeviceIdentity(
        manufacturer="remon",
        model="PEF sensor board",
        serial=f"PEF-H{i:05d}",
        firmware="sim-1.0.0",
        transport="serial",
    )


def pef_dip_day(d: date) -> bool:
    """The dip patient's morning dip days: every third day by date (4-5 in any 14 days)."""
    return d.toordinal() % 3 == 0


def _blow(at: datetime, value: float, flags: frozenset[QualityFlag]) -> Observation:
    return Observation(
        measure="pef",
        unit="L/min",
        value=round(value, 1),
        effective_time=at,
        record_key=f"blow:{int(at.timestamp() * 1000)}",
        device_time=at.isoformat(),
        clock_offset_s=0.0,
        quality=_sim() | flags,
        provenance=Provenance(source="serial:bridge-pef"),
    )


def _pef_session(rng: np.random.Generator, start: datetime, level: float) -> list[Observation]:
    """3 blows 45-90 s apart, the best at ``level``; now and then a flagged fourth blow."""
    values = [level, level - rng.uniform(2, 15), level - rng.uniform(4, 18)]
    order = rng.permutation(3)
    out = []
    at = start
    for k in order.tolist():
        out.append(_blow(at, values[k], frozenset()))
        at += timedelta(seconds=float(rng.uniform(45, 90)))
    if rng.random() < 0.1:
        out.append(_blow(at, level * rng.uniform(0.6, 0.8), frozenset({QualityFlag.EARLY_STOP})))
    return out


def pef_history(i: int, *, days: Sequence[date], now: datetime, seed: int = 0) -> list[Observation]:
    """Patient ``i``'s PEF blows on local ``days`` (only those at or before ``now``)."""
    base = 470.0 + 10.0 * ((i // 3) % 3)
    out: list[Observation] = []
    for d in days:
        rng = _rng(seed, i, _PEF, d.toordinal())
        evening = base * (1 + _spread(rng, 0.02))
        dip = i == PEF_DIP_PATIENT and pef_dip_day(d)
        morning = evening * (rng.uniform(0.68, 0.76) if dip else 0.95 + _spread(rng, 0.015))
        m_start = _local(d, time(7, 0)) + timedelta(minutes=float(rng.uniform(0, 75)))
        pre = _pef_session(rng, m_start, morning)
        out += pre
        if dip or d.toordinal() % 3 == 1:
            gain = rng.uniform(1.18, 1.28) if dip else rng.uniform(1.02, 1.06)
            p_start = pre[-1].effective_time + timedelta(minutes=float(rng.uniform(15, 20)))
            out += _pef_session(rng, p_start, morning * gain)
        e_start = _local(d, time(19, 30)) + timedelta(minutes=float(rng.uniform(0, 90)))
        out += _pef_session(rng, e_start, evening)
    return [o for o in out if o.effective_time <= now]


# --------------------------------------------------------------------------------------------
# home BP


@dataclass(frozen=True, slots=True)
class _BpModel:
    systolic: float
    diastolic: float
    pulse: float
    morning_surge: float  # mmHg added to the morning systolic


#: Home readings by profile (remon demo values; home readings run below the office figures of
#: the live simulators, edge_agent.simulators.PROFILES). Hypertensive: above 135/85 on average
#: (DOMAIN.md §3 home threshold), below grade 3 (180/110).
BP_MODELS: Final[dict[str, _BpModel]] = {
    "normal": _BpModel(122, 78, 70, 2),
    "hypo-prone": _BpModel(118, 75, 74, 2),
    "hypertensive": _BpModel(148, 93, 80, 5),
    "hyperglycaemic": _BpModel(130, 82, 78, 3),
    "hypoxic": _BpModel(126, 80, 96, 2),
    "febrile": _BpModel(118, 73, 98, 2),
}


def bp_identity(i: int) -> DeviceIdentity:
    return DeviceIdentity(
        manufacturer="remon virtual",
        model="VV-BP",
        serial=f"HIST-BP-{i + 1:04d}",
        firmware="1.0.0",
        transport="ble",
    )


def _cuff(at: datetime, sys_: int, dia: int, pulse: int) -> list[Observation]:
    wall = at.astimezone(TZ).replace(tzinfo=None)
    key = f"0x2a35@{wall:%Y%m%dT%H%M%S}"  # as a BLE cuff: its own (local) clock in the key

    def obs(measure: str, unit: str, value: int) -> Observation:
        return Observation(
            measure=measure,
            unit=unit,
            value=float(value),
            effective_time=at,
            record_key=key,
            device_time=wall.isoformat(timespec="seconds"),
            clock_offset_s=0.0,
            quality=_sim(),
            provenance=Provenance(source="ble:0x2A35"),
        )

    return [
        obs("bp.systolic", "mm[Hg]", sys_),
        obs("bp.diastolic", "mm[Hg]", dia),
        obs("pulse.cuff", "/min", pulse),
    ]


def bp_history(
    i: int, *, days: Sequence[date], now: datetime, seed: int = 0, profile: str | None = None
) -> list[Observation]:
    """Patient ``i``'s home BP: two readings each morning and evening of ``days``."""
    m = BP_MODELS.get(profile or _profile(i), BP_MODELS["normal"])
    out: list[Observation] = []
    for d in days:
        rng = _rng(seed, i, _BP, d.toordinal())
        day_sys, day_dia = _spread(rng, 4), _spread(rng, 3)
        for start, surge in (
            (_local(d, time(7, 5)) + timedelta(minutes=float(rng.uniform(0, 60))), 1.0),
            (_local(d, time(20, 30)) + timedelta(minutes=float(rng.uniform(0, 60))), 0.0),
        ):
            sys_ = m.systolic + day_sys + surge * m.morning_surge + _spread(rng, 4)
            dia = m.diastolic + day_dia + _spread(rng, 3)
            pulse = m.pulse + _spread(rng, 5)
            at = start
            for k in range(2):  # the duplicate reading 1-2 min later, a little lower
                fall = k * rng.uniform(0, 5)
                s, di = round(sys_ - fall), round(dia - fall / 2)
                out += _cuff(at.replace(microsecond=0), s, min(di, s - 20), round(pulse - 2 * k))
                at += timedelta(seconds=float(rng.uniform(60, 120)))
    return [o for o in out if o.effective_time <= now]


# --------------------------------------------------------------------------------------------
# dispenser doses


def dispenser_identity(i: int) -> DeviceIdentity:
    return DeviceIdentity(
        manufacturer="remon",
        model="medication dispenser bridge",
        serial=f"DSP-H{i:05d}",
        firmware="sim-1.0.0",
        transport="serial",
    )


#: Likelihood of (taken, taken late, missed) by client behaviour (remon demo values).
_OUTCOME_ODDS: Final[dict[str, tuple[float, float, float]]] = {
    "on_time": (0.9, 0.07, 0.03),
    "late": (0.35, 0.55, 0.10),
    "misses": (0.6, 0.15, 0.25),
}
_OUTCOMES: Final = (EventKind.DOSE_TAKEN, EventKind.DOSE_TAKEN_LATE, EventKind.DOSE_MISSED)


def _dose_event(
    kind: EventKind, at: datetime, dose_id: str, scheduled: datetime, left: int
) -> DeviceEvent:
    return DeviceEvent(
        kind=kind,
        event_time=at,
        record_key=f"{kind.value}:{dose_id}",  # as the dispenser bridge: unique by kind and dose
        dose_id=dose_id,
        scheduled_time=scheduled,
        device_time=at.isoformat(),
        clock_offset_s=0.0,
        details={"doses_left": left},
        quality=_sim(),
        provenance=Provenance(source="serial:bridge-dispenser"),
    )


def dose_history(
    i: int,
    *,
    days: Sequence[date],
    now: datetime,
    seed: int = 0,
    behaviour: Behaviour | None = None,
) -> list[DeviceEvent]:
    """Patient ``i``'s dose events on ``days`` (only those at or before ``now``)."""
    b = behaviour or _behaviour(i)
    out: list[DeviceEvent] = []
    for d in days:
        rng = _rng(seed, i, _DOSE, d.toordinal())
        roll_day = d.toordinal() % HISTORY_DAYS
        for slot, t in enumerate(DOSE_TIMES):
            scheduled = _local(d, t)
            dose_id = f"{scheduled:%Y%m%dT%H%MZ}"
            left = ROLL_DOSES - (roll_day * len(DOSE_TIMES) + slot)
            draw, when = rng.random(2)
            if b == "mixed":
                outcome = _OUTCOMES[(d.toordinal() * len(DOSE_TIMES) + slot) % 3]
            else:
                taken, late, _ = _OUTCOME_ODDS[b]
                outcome = _OUTCOMES[0 if draw < taken else 1 if draw < taken + late else 2]
            if outcome is EventKind.DOSE_TAKEN:
                at = scheduled + _LATE_AFTER * (0.2 + 0.7 * float(when))
            elif outcome is EventKind.DOSE_TAKEN_LATE:
                at = (
                    scheduled
                    + _LATE_AFTER
                    + (MISSED_WINDOW - _LATE_AFTER) * (0.1 + 0.8 * float(when))
                )
            else:
                at = scheduled + MISSED_WINDOW
            out += [
                _dose_event(EventKind.DOSE_DUE, scheduled, dose_id, scheduled, left),
                _dose_event(EventKind.DOSE_DISPENSED, scheduled, dose_id, scheduled, left - 1),
                _dose_event(outcome, at.replace(microsecond=0), dose_id, scheduled, left - 1),
            ]
    return [e for e in out if e.event_time <= now]


# --------------------------------------------------------------------------------------------
# kiosk visits

#: The health station every demo patient visits: one kiosk shared by all of them.
KIOSK_SITE: Final = "kiosk-0001"
#: Visits of every patient in any HISTORY_DAYS (two weeks): one in each week of the cycle.
KIOSK_VISITS: Final = 2
#: Visit ``k`` of a patient recurs every two weeks at the same UTC instant in week ``k`` of a
#: two-week cycle counted from this Monday, so any 14 days (``now`` minus 14 days, ``now``]
#: hold exactly :data:`KIOSK_VISITS` visits of every patient, whatever ``now``.
_KIOSK_ANCHOR: Final = datetime(2000, 1, 3, tzinfo=UTC)
_KIOSK_CYCLE: Final = timedelta(days=HISTORY_DAYS)
#: Visit starts: weekdays, 06:00-12:30 UTC every 15 min (27 slots a day, 135 a week), i.e.
#: 08:00-14:30 local in winter (UTC+2) and 09:00-15:30 in summer (UTC+3). A visit takes at
#: most 13.5 min (_kiosk_visit), so it ends before 16:00 local and before the next slot.
_KIOSK_FIRST_SLOT: Final = timedelta(hours=6)
_KIOSK_SLOT: Final = timedelta(minutes=15)
_KIOSK_SLOTS_A_DAY: Final = 27
_KIOSK_SLOTS_A_WEEK: Final = 5 * _KIOSK_SLOTS_A_DAY
#: Reading times within a visit are on a 10-s grid. The patients beyond a week's slots share
#: the slots, each round a second later: their readings interleave but never share an instant,
#: so a kiosk device's record keys (its clock in them) stay unique.
_KIOSK_GRID_S: Final = 10
KIOSK_MAX_PATIENTS: Final = _KIOSK_SLOTS_A_WEEK * _KIOSK_GRID_S

KIOSK_BP: Final = "kiosk-bp-history"
KIOSK_OXIMETER: Final = "kiosk-oximeter-history"
KIOSK_THERMOMETER: Final = "kiosk-thermometer-history"
KIOSK_SCALE: Final = "kiosk-scale-history"
KIOSK_HEIGHT: Final = "kiosk-height-history"


def _ble_kiosk(model: str, code: str) -> DeviceIdentity:
    return DeviceIdentity(
        manufacturer="remon virtual",
        model=model,
        serial=f"HIST-KIOSK-0001-{code}",
        firmware="1.0.0",
        transport="ble",
    )


def _serial_kiosk(model: str, code: str) -> DeviceIdentity:
    """A kiosk peripheral without BLE behind our bridge board (``serial.kiosk-peripheral``)."""
    return DeviceIdentity(
        manufacturer="remon",
        model=model,
        serial=f"KSK-0001-{code}",
        firmware="sim-1.0.0",
        transport="serial",
    )


#: The station's devices by device id (the derived BMI goes out with the scale's readings).
KIOSK_DEVICES: Final[dict[str, DeviceIdentity]] = {
    KIOSK_BP: _ble_kiosk("Kiosk BP", "BP"),
    KIOSK_OXIMETER: _ble_kiosk("Kiosk pulse oximeter", "OX"),
    KIOSK_THERMOMETER: _ble_kiosk("Kiosk thermometer", "TH"),
    KIOSK_SCALE: _serial_kiosk("Kiosk scale", "SCALE"),
    KIOSK_HEIGHT: _serial_kiosk("Kiosk height rod", "HEIGHT"),
}
#: The kiosk hub's source of the BMI it derives from the visit's weight and height.


@dataclass(frozen=True, slots=True)
class _KioskModel:
    spo2: tuple[int, int]  # whole %, inclusive
    temperature: tuple[float, float]  # Cel
    fever: tuple[float, float] | None  # Cel, the first visit of every cycle (else temperature)
    bmi: tuple[float, float]  # the patient's build, kg/m2


#: Spot values by profile (remon demo values). No visit raises an alert
#: (cloud_ingest.rules.thresholds): SpO2 above the NEWS2 2-point band (<= 93 %; the hypoxic
#: profile 94-95 %), temperature below the NEWS2 2-point band (>= 39.1 °C; the febrile profile's
#: fever visit 38.2-38.8 °C), BP as the home model (below grade 3, 180/110).
KIOSK_MODELS: Final[dict[str, _KioskModel]] = {
    "normal": _KioskModel((96, 99), (36.2, 37.0), None, (20.5, 26.0)),
    "hypo-prone": _KioskModel((96, 99), (36.2, 37.0), None, (19.5, 25.0)),
    "hyperglycaemic": _KioskModel((95, 98), (36.3, 37.0), None, (29.0, 34.0)),
    "hypertensive": _KioskModel((95, 98), (36.3, 37.0), None, (27.0, 31.0)),
    "hypoxic": _KioskModel((94, 95), (36.3, 37.0), None, (22.0, 28.0)),
    "febrile": _KioskModel((95, 98), (37.2, 37.8), (38.2, 38.8), (21.0, 26.0)),
}
#: Unattended kiosk readings run a little above home ones (mm[Hg], remon demo values).
_KIOSK_BP_OFFSET: Final = (3.0, 1.0)
#: The febrile profile's pulse on its fever visit (/min added).
_FEVER_PULSE: Final = 8.0


@dataclass(frozen=True, slots=True)
class KioskVisit:
    """One of a patient's visits: the readings taken at or before ``now``, by device id."""

    number: int  # 2 x the two-week cycle since _KIOSK_ANCHOR + the week in it (0, 1)
    start: datetime
    readings: dict[str, list[Observation]]

    @property
    def observations(self) -> list[Observation]:
        return [o for obs in self.readings.values() for o in obs]


def _kiosk_starts(i: int, *, now: datetime, seed: int) -> list[tuple[int, int, datetime]]:
    """(visit number, ordinal at the station, start) of patient ``i``'s visits that started in
    (now - 14 d, now]. The ordinal grows with the start and is unique to the visit."""
    if not 0 <= i < KIOSK_MAX_PATIENTS:
        raise HistoryError(f"the kiosk history has room for {KIOSK_MAX_PATIENTS} patients")
    late, j = divmod(i, _KIOSK_SLOTS_A_WEEK)
    lo = now - _KIOSK_CYCLE
    first = (lo - _KIOSK_ANCHOR) // _KIOSK_CYCLE
    out = []
    for cycle in (first, first + 1):
        for k in range(KIOSK_VISITS):
            # each week's slots dealt out to the patients (per seed): no two share one
            slot = int(_rng(seed, 0, _KIOSK_SLOTS, k).permutation(_KIOSK_SLOTS_A_WEEK)[j])
            day, n = divmod(slot, _KIOSK_SLOTS_A_DAY)
            start = (
                _KIOSK_ANCHOR
                + cycle * _KIOSK_CYCLE
                + timedelta(days=7 * k + day, seconds=late)
                + _KIOSK_FIRST_SLOT
                + n * _KIOSK_SLOT
            )
            if lo < start <= now:
                number = KIOSK_VISITS * cycle + k
                ordinal = (number * _KIOSK_SLOTS_A_WEEK + slot) * _KIOSK_GRID_S + late
                out.append((number, ordinal, start))
    return sorted(out, key=lambda v: v[2])


def _kiosk_obs(
    measure: str,
    unit: str,
    value: float,
    at: datetime,
    key: str,
    source: str,
    *,
    ble: bool,
) -> Observation:
    wall = at.astimezone(TZ).replace(tzinfo=None)
    return Observation(
        measure=measure,
        unit=unit,
        value=value,
        effective_time=at,
        record_key=key,
        # a BLE device's own (local) clock; the bridge board's RTC in UTC
        device_time=wall.isoformat(timespec="seconds") if ble else at.isoformat(),
        clock_offset_s=0.0,
        quality=_sim(),
        provenance=Provenance(source=source),
    )


def _kiosk_visit(
    i: int, number: int, ordinal: int, start: datetime, *, seed: int, profile: str
) -> dict[str, list[Observation]]:
    """The readings of one visit in the order a kiosk takes them: height, weight (and the BMI
    the hub derives), 3 BP readings 1-2 min apart (DOMAIN.md §3: the first two within 10 mmHg,
    so no fourth), SpO2 with the oximeter's pulse, temperature. At most 13.5 min long."""
    model = KIOSK_MODELS.get(profile, KIOSK_MODELS["normal"])
    bp = BP_MODELS.get(profile, BP_MODELS["normal"])
    body = _rng(seed, i, _KIOSK_BODY, 0)  # the patient's build, the same at every visit
    height_cm = 155.0 + 35.0 * float(body.random())
    lo, hi = model.bmi
    weight_kg = (lo + (hi - lo) * float(body.random())) * (height_cm / 100) ** 2
    rng = _rng(seed, i, _KIOSK, number)
    fever = model.fever is not None and number % KIOSK_VISITS == 0

    def after(at: datetime, lo_s: int, hi_s: int) -> datetime:
        grid = int(rng.integers(lo_s // _KIOSK_GRID_S, hi_s // _KIOSK_GRID_S + 1))
        return at + timedelta(seconds=grid * _KIOSK_GRID_S)

    out: dict[str, list[Observation]] = {}
    # height rod and scale: bridge boards, record key "m:<board seq>@<board RTC ms>" as
    # edge_agent.serial_sources makes it (one reading a visit: the visit's ordinal as the seq)
    seq = ordinal
    h_at = after(start, 30, 90)
    h = round(height_cm + _spread(rng, 0.2), 1)
    h_key = f"m:{seq}@{int(h_at.timestamp() * 1000)}"
    bridge = "serial:bridge-peripheral"
    out[KIOSK_HEIGHT] = [_kiosk_obs("body.height", "cm", h, h_at, h_key, bridge, ble=False)]
    w_at = after(h_at, 30, 60)
    w = round(weight_kg + _spread(rng, 0.6), 1)
    w_key = f"m:{seq}@{int(w_at.timestamp() * 1000)}"
    weight = _kiosk_obs("body.weight", "kg", w, w_at, w_key, bridge, ble=False)
    bmi = bmi_observation(weight, out[KIOSK_HEIGHT][0])  # as the station derives it
    assert bmi is not None
    out[KIOSK_SCALE] = [weight, bmi]
    # BP: 3 readings; the first the highest, the next two a little lower
    sys_ = bp.systolic + _KIOSK_BP_OFFSET[0] + _spread(rng, 5)
    dia = bp.diastolic + _KIOSK_BP_OFFSET[1] + _spread(rng, 3)
    pulse = bp.pulse + (_FEVER_PULSE if fever else 0.0) + _spread(rng, 4)
    at = after(w_at, 120, 240)
    cuff: list[Observation] = []
    fall = 0.0
    for k in range(3):
        if k:
            at = after(at, 60, 120)
            fall += float(rng.uniform(1, 4)) if k == 1 else float(rng.uniform(0, 3))
        s = round(sys_ - fall + _spread(rng, 0.8))
        d = round(dia - fall / 2 + _spread(rng, 0.8))
        cuff += _cuff(at, s, d, round(pulse - k + _spread(rng, 1)))
    out[KIOSK_BP] = cuff
    # pulse oximeter: PLX spot-check (SpO2 and pulse in one record)
    ox_at = after(at, 30, 90)
    wall = ox_at.astimezone(TZ).replace(tzinfo=None)
    ox_key = f"0x2a5e@{wall:%Y%m%dT%H%M%S}"
    lo_spo2, hi_spo2 = model.spo2
    spo2 = float(rng.integers(lo_spo2, hi_spo2 + 1))
    ox_pulse = float(round(pulse + _spread(rng, 2)))
    out[KIOSK_OXIMETER] = [
        _kiosk_obs("spo2", "%", spo2, ox_at, ox_key, "ble:0x2A5E", ble=True),
        _kiosk_obs("pulse.oximeter", "/min", ox_pulse, ox_at, ox_key, "ble:0x2A5E", ble=True),
    ]
    t_at = after(ox_at, 30, 90)
    wall = t_at.astimezone(TZ).replace(tzinfo=None)
    t_lo, t_hi = model.fever if fever and model.fever is not None else model.temperature
    temp = round(t_lo + (t_hi - t_lo) * float(rng.random()), 1)
    t_key = f"0x2a1c@{wall:%Y%m%dT%H%M%S}"
    out[KIOSK_THERMOMETER] = [
        _kiosk_obs("body.temperature", "Cel", temp, t_at, t_key, "ble:0x2A1C", ble=True)
    ]
    return out


#: A patient reviews the values and consents this long after the last reading.
KIOSK_REVIEW: Final = timedelta(minutes=1)
#: The health-check questions the demo kiosk asks (ids as in the station's questionnaire).
_KIOSK_QUESTIONS: Final = ("smoker", "exercise-days-week", "feeling")


def kiosk_visit_message(
    i: int, visit: KioskVisit, *, subject: Subject, now: datetime
) -> OutboundMessage | None:
    """The visit as the kiosk sends it (``remon.visit/1``: one message, every device's
    readings, the answers), or None while it is not over at ``now``."""
    ended = max(o.effective_time for o in visit.observations) + KIOSK_REVIEW
    if ended > now:
        return None
    rng = _rng(0, i, _KIOSK, visit.number + 1000)
    answers = [
        Answer(id=_KIOSK_QUESTIONS[0], value=i % 3 == 2),
        Answer(id=_KIOSK_QUESTIONS[1], value=int(rng.integers(0, 6))),
        Answer(id=_KIOSK_QUESTIONS[2], value=("good", "fair", "good")[visit.number % 3]),
    ]
    return encode_visit(
        site=KIOSK_SITE,
        visit_ref=f"v-{subject_ref(i)}-{visit.number}",
        subject=subject,  # the visit identified the patient
        started_at=visit.start,
        ended_at=ended,
        parts=[
            VisitPart(device_id=d, device=KIOSK_DEVICES[d], observations=obs)
            for d, obs in visit.readings.items()
        ],
        answers=answers,
        created_at=now,
    )


def kiosk_history(
    i: int, *, now: datetime, seed: int = 0, profile: str | None = None
) -> list[KioskVisit]:
    """Patient ``i``'s kiosk visits that started in (``now`` - 14 days, ``now``]: always
    :data:`KIOSK_VISITS` of them, with the readings taken at or before ``now``."""
    now = now.astimezone(UTC)
    out = []
    for number, ordinal, start in _kiosk_starts(i, now=now, seed=seed):
        readings = _kiosk_visit(
            i, number, ordinal, start, seed=seed, profile=profile or _profile(i)
        )
        kept = {d: [o for o in obs if o.effective_time <= now] for d, obs in readings.items()}
        if any(kept.values()):  # (a visit that began this minute may have none yet)
            out.append(KioskVisit(number, start, {d: obs for d, obs in kept.items() if obs}))
    return out


# --------------------------------------------------------------------------------------------
# the plan: every patient's messages, one per device and local day


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryStats:
    """What was published (counts per kind), and how long it took."""

    cgm_readings: int = 0
    pef_blows: int = 0
    bp_readings: int = 0  # cuff measurements (3 observations each)
    dose_events: int = 0
    kiosk: int = 0  # observations at the kiosk (every measure, the derived BMI included)
    kiosk_visits: int = 0
    visit_messages: int = 0  # remon.visit/1 messages (one per finished kiosk visit)
    visit_parts: int = 0  # the observation envelopes inside them (one per device)
    observations: int = 0
    events: int = 0
    messages: int = 0  # envelopes, observations' and events'
    event_messages: int = 0
    queued: int = 0  # messages new to the outboxes (a message still waiting is not queued again)
    seconds: float = 0.0

    def by_kind(self) -> dict[str, int]:
        return {k: v for k, v in asdict(self).items() if isinstance(v, int)}


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryPlan:
    messages: dict[str, list[OutboundMessage]]  # by site
    stats: HistoryStats


_T = TypeVar("_T", Observation, DeviceEvent)


def _by_local_day(items: Iterable[_T], when: Callable[[_T], datetime]) -> list[list[_T]]:
    groups: dict[date, list[_T]] = defaultdict(list)
    for x in items:
        groups[when(x).astimezone(TZ).date()].append(x)
    return [groups[d] for d in sorted(groups)]


def history_plan(
    *, patients: int, now: datetime, seed: int = 0, cgm_until: datetime | None = None
) -> HistoryPlan:
    """Every message of the history, by site (pure: nothing is sent)."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise HistoryError(f"now must be an aware datetime, got {now!r}")
    if patients < 0 or seed < 0:
        raise HistoryError("patients and seed must be >= 0")
    now = now.astimezone(UTC)
    cgm_end = now if cgm_until is None else min(now, cgm_until.astimezone(UTC))
    today = now.astimezone(TZ).date()
    days = _days(today, HISTORY_DAYS)
    cgm_start = _local(today - timedelta(days=HISTORY_DAYS), time(0, 0))
    counts: dict[str, int] = defaultdict(int)
    plan: dict[str, list[OutboundMessage]] = {}
    kiosk_msgs: list[OutboundMessage] = []
    for i in range(patients):
        site, subject = site_of(i), Subject(kind="patient", ref=subject_ref(i))
        msgs: list[OutboundMessage] = []
        streams: list[tuple[str, DeviceIdentity, list[Observation]]] = []
        if has_cgm(i):
            cgm = cgm_history(i, start=cgm_start, end=cgm_end, seed=seed)
            counts["cgm_readings"] += len(cgm)
            streams.append(("ble-cgm-history", cgm_identity(i), cgm))
        if has_pef(i):
            pef = pef_history(i, days=days, now=now, seed=seed)
            counts["pef_blows"] += len(pef)
            streams.append(("pef-board-history", pef_identity(i), pef))
        bp = bp_history(i, days=days[-BP_DAYS:], now=now, seed=seed)
        counts["bp_readings"] += len(bp) // 3
        streams.append(("ble-bp-history", bp_identity(i), bp))
        for device_id, device, observations in streams:
            counts["observations"] += len(observations)
            for day in _by_local_day(observations, lambda o: o.effective_time):
                msgs += encode_observations(
                    site=site,
                    device_id=device_id,
                    device=device,
                    subject=subject,
                    observations=day,
                    created_at=now,
                )
        if has_dispenser(i):
            events = dose_history(i, days=days, now=now, seed=seed)
            counts["dose_events"] += len(events)
            counts["events"] += len(events)
            for day_events in _by_local_day(events, lambda e: e.event_time):
                encoded = encode_events(
                    site=site,
                    device_id="dispenser-history",
                    device=dispenser_identity(i),
                    subject=subject,
                    events=day_events,
                    created_at=now,
                )
                counts["event_messages"] += len(encoded)
                msgs += encoded
        counts["messages"] += len(msgs)
        plan[site] = msgs
        for v in kiosk_history(i, now=now, seed=seed):
            msg = kiosk_visit_message(i, v, subject=subject, now=now)
            if msg is None:
                continue  # still in progress: a kiosk sends a visit when the patient consents
            counts["kiosk_visits"] += 1
            counts["kiosk"] += len(v.observations)
            counts["observations"] += len(v.observations)
            counts["messages"] += 1
            counts["visit_messages"] += 1
            counts["visit_parts"] += len(v.readings)
            kiosk_msgs.append(msg)
    if kiosk_msgs:
        plan[KIOSK_SITE] = kiosk_msgs
    return HistoryPlan(messages=plan, stats=HistoryStats(**counts))


# --------------------------------------------------------------------------------------------
# publishing and settings


def publish_history(
    *,
    broker_url: str,
    protocol: MqttProtocol,
    data_dir: Path,
    patients: int,
    now: datetime,
    seed: int = 0,
    cgm_until: datetime | None = None,
    timeout_s: float = 60.0,
) -> HistoryStats:
    """Publish the demo fleet's history through per-site outboxes and relays (module doc).

    Returns once the broker confirmed every message (PUBACK); ingest takes them from there.
    ``cgm_until`` ends the CGM history early (where a live CGM's own backlog begins).
    Raises :class:`HistoryError` when the broker has not confirmed them within ``timeout_s``.
    """
    started = clock.monotonic()
    plan = history_plan(patients=patients, now=now, seed=seed, cgm_until=cgm_until)
    queued = 0
    opened: list[tuple[Outbox, Relay]] = []
    try:
        for site, msgs in plan.messages.items():
            folder = data_dir / "history" / site
            folder.mkdir(parents=True, exist_ok=True)
            outbox = Outbox(folder / "outbox.sqlite", synchronous="NORMAL")
            try:
                queued += outbox.put_many(msgs)
                relay = Relay(
                    outbox,
                    RelayConfig(
                        url=broker_url,
                        client_id=f"remon-history-{site}",
                        protocol=protocol,
                        status_every_s=0.0,
                    ),
                    site=site,
                    agent_version=HISTORY_AGENT_VERSION,
                )
            except BaseException:
                outbox.close()
                raise
            opened.append((outbox, relay))
            relay.start()
        deadline = clock.monotonic() + timeout_s
        for outbox, relay in opened:
            if not relay.wait_drained(max(deadline - clock.monotonic(), 0.0)):
                raise HistoryError(
                    f"the broker at {broker_url} did not confirm the history of site "
                    f"{relay.site} within {timeout_s:g} s ({outbox.pending()} messages "
                    f"waiting; last error: {relay.stats.last_error})"
                )
    finally:
        for outbox, relay in opened:
            relay.stop()
            outbox.close()
    return replace(plan.stats, queued=queued, seconds=clock.monotonic() - started)


_ADMIN: Final = Principal(
    id="demo-setup", name="demo setup", role=Role.ADMIN, team_ids=frozenset()
)  # as remon.demo.seed_directory


def _pef_patients(patients: int) -> list[str]:
    return [subject_ref(i) for i in range(patients) if has_pef(i)]


def seed_personal_bests(storage: Storage, *, patients: int, now: datetime) -> int:
    """Set the PEF patients' personal best (:data:`PERSONAL_BEST_L_MIN`) as the demo setup's
    admin; return how many. Before the history is ingested, the PEF zone rules judge its blows
    (the dip mornings raise a yellow-zone alert that the green evenings mark cleared)."""
    settings = ClinicalSettings(storage)
    refs = _pef_patients(patients)
    for ref in refs:
        settings.put_pef_personal_best(_ADMIN, ref, value=PERSONAL_BEST_L_MIN, now=now)
    return len(refs)


def seed_pef_diaries(storage: Storage, *, patients: int, now: datetime) -> int:
    """Set the PEF patients' diary period: the 14 local days ending today; return how many.

    Call it once the history is stored: the missed-session rule judges every window of a diary
    that has ended, so a diary set while its blows are still on their way raises
    ``pef-session-missed`` for windows whose blows arrive a second later (and an open alert is
    not cleared by older readings)."""
    settings = ClinicalSettings(storage)
    today = now.astimezone(TZ).date()
    refs = _pef_patients(patients)
    for ref in refs:
        settings.put_pef_diary(
            _ADMIN,
            ref,
            first_day=today - timedelta(days=HISTORY_DAYS - 1),
            last_day=today,
            now=now,
        )
    return len(refs)


def seed_history_settings(storage: Storage, *, patients: int, now: datetime) -> int:
    """Both of the above (for a history that is already stored); the patients must be in the
    directory (remon.demo.seed_directory). Setting them again changes only the audit trail."""
    n = seed_personal_bests(storage, patients=patients, now=now)
    seed_pef_diaries(storage, patients=patients, now=now)
    return n


def _taken(consumer: Consumer) -> tuple[int, int]:
    """(observation messages, events) the consumer has dealt with so far, stored or not."""
    t = consumer.stats.totals
    messages = t.get("messages", 0) + t.get("duplicate_messages", 0) + t.get("dead_letters", 0)
    return messages, t.get("events_stored", 0) + t.get("events_duplicate", 0)


def load_history(
    *,
    storage: Storage,
    consumer: Consumer,
    broker_url: str,
    protocol: MqttProtocol,
    data_dir: Path,
    patients: int,
    now: datetime,
    seed: int = 0,
    cgm_until: datetime | None = None,
    timeout_s: float = 60.0,
) -> HistoryStats:
    """The demo's whole history step, in the order that keeps the alert queue sensible:
    personal bests, :func:`publish_history`, wait until the running ``consumer`` has taken every
    message (stored or recognised as a duplicate), then the PEF diary periods.

    Raises :class:`HistoryError` when the broker or the consumer does not finish in time.
    """
    seed_personal_bests(storage, patients=patients, now=now)
    messages0, events0 = _taken(consumer)
    stats = publish_history(
        broker_url=broker_url,
        protocol=protocol,
        data_dir=data_dir,
        patients=patients,
        now=now,
        seed=seed,
        cgm_until=cgm_until,
        timeout_s=timeout_s,
    )
    # the ingest counts a visit's parts as its observation messages
    want = (
        stats.messages - stats.event_messages - stats.visit_messages + stats.visit_parts,
        stats.events,
    )
    deadline = clock.monotonic() + timeout_s
    while True:
        messages, events = _taken(consumer)
        if messages - messages0 >= want[0] and events - events0 >= want[1]:
            break
        if clock.monotonic() > deadline:
            raise HistoryError(
                f"the ingest took {messages - messages0} of {want[0]} history messages and "
                f"{events - events0} of {want[1]} events within {timeout_s:g} s"
            )
        clock.sleep(0.05)
    seed_pef_diaries(storage, patients=patients, now=now)
    return stats
