"""The agent's CGM derivation: readings flagged, trend and 20-min prediction sent as observations,
only for live readings; end to end, a falling CGM raises "urgent low soon" at the cloud."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cloud_ingest.service import IngestService
from device_profiles.gatt.observations import cgm_session_start
from device_profiles.gatt.sim_cgm_sensor import cgm_trace_mg_dl
from device_profiles.observation import DeviceIdentity, Observation, Provenance, QualityFlag
from device_profiles.units import GLUCOSE_MG_DL_PER_MMOL_L
from edge_agent.config import parse_config
from edge_agent.derived import PREDICTION_SUFFIX, TREND_SUFFIX, CgmDerivation
from gateway.wire import Subject, decode_observations, encode_observations
from remon.brokers import MosquittoProcess
from tests.test_end_to_end import RunningAgent, agent_toml, ingest, wait_until

__all__ = ["ingest"]

NOW = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
START = NOW - timedelta(hours=3)


def cgm(minutes_before_now: int, mmol: float | None, **kw: object) -> Observation:
    t = NOW - timedelta(minutes=minutes_before_now)
    offset = int((t - START).total_seconds() // 60)
    return Observation(
        measure="glucose.cgm",
        unit="mmol/L",
        value=mmol,
        effective_time=t,
        record_key=f"cgm:{START:%Y%m%dT%H%MZ}+{offset}",
        provenance=Provenance(source="test"),
        **kw,  # type: ignore[arg-type]
    )


def derive(values: list[tuple[int, float]], **kw: object) -> list[Observation]:
    d = CgmDerivation(clock=lambda: NOW)
    return d.process("cgm1", [cgm(m, v, **kw) for m, v in values])


def by_measure(obs: list[Observation], measure: str) -> list[Observation]:
    return [o for o in obs if o.measure == measure]


def test_a_steady_fall_gives_its_trend_and_a_prediction_keyed_by_the_reading() -> None:
    # 2 mg/dL/min down, 5-min readings, the last one now
    mg = [180.0 - 2 * 5 * k for k in range(4)]
    out = derive([(15 - 5 * k, v / GLUCOSE_MG_DL_PER_MMOL_L) for k, v in enumerate(mg)])
    assert len(by_measure(out, "glucose.cgm")) == 4
    (trend_obs, *more_trends) = by_measure(out, "glucose.cgm.trend")[-1:]
    assert not more_trends
    assert trend_obs.value == pytest.approx(-2 / GLUCOSE_MG_DL_PER_MMOL_L, abs=1e-4)
    assert trend_obs.provenance.original_unit == "mg/dL/min"
    assert trend_obs.provenance.original_value == pytest.approx(-2.0)
    assert "single-down" in str(trend_obs.provenance.raw)
    last = by_measure(out, "glucose.cgm")[-1]
    assert trend_obs.record_key == last.record_key + TREND_SUFFIX
    pred = by_measure(out, "glucose.cgm.predicted")[-1]
    assert pred.record_key == last.record_key + PREDICTION_SUFFIX
    # 20 min more at 2 mg/dL/min: 40 mg/dL lower than the last reading
    assert pred.value == pytest.approx((mg[-1] - 40) / GLUCOSE_MG_DL_PER_MMOL_L, abs=0.01)
    assert QualityFlag.DERIVED in pred.quality
    assert QualityFlag.DERIVED in trend_obs.quality
    assert QualityFlag.DERIVED not in last.quality  # the reading itself is measured


def test_readings_never_change_and_old_ones_feed_the_stream_without_derived_values() -> None:
    # a 3-hour backlog downloaded at once: only the live tail (<= 15 min old) is derived
    values = [(180 - 5 * k, 6.0 - 0.01 * k) for k in range(37)]
    out = derive(values)
    readings = by_measure(out, "glucose.cgm")
    assert [o.value for o in readings] == [v for _, v in values]
    derived_times = {o.effective_time for o in out if o.measure != "glucose.cgm"}
    assert derived_times
    assert min(derived_times) >= NOW - timedelta(minutes=15)


def test_simulated_flag_travels_to_derived_values_and_a_duplicate_is_not_derived_again() -> None:
    d = CgmDerivation(clock=lambda: NOW)
    flags = frozenset({QualityFlag.SIMULATED})
    first = d.process("cgm1", [cgm(m, 6.0 - m / 100, quality=flags) for m in (15, 10, 5, 0)])
    assert all(QualityFlag.SIMULATED in o.quality for o in first)
    again = d.process("cgm1", [cgm(0, 6.0, quality=flags)])  # the same reading re-sent
    assert [o.measure for o in again] == ["glucose.cgm"]


def test_streams_are_per_device_and_other_measures_pass_through() -> None:
    d = CgmDerivation(clock=lambda: NOW)
    d.process("a", [cgm(m, 6.0) for m in (15, 10, 5)])
    other = Observation(
        measure="bp.systolic",
        unit="mm[Hg]",
        value=120.0,
        effective_time=NOW,
        record_key="x",
        provenance=Provenance(source="t"),
    )
    out = d.process("b", [other, cgm(0, 6.0)])
    assert out[0] is other
    assert [o.measure for o in out[1:]] == ["glucose.cgm"]  # device b has one reading only
    assert d.stats.readings == 4


def test_warm_up_and_implausible_jump_become_quality_flags_on_the_reading() -> None:
    d = CgmDerivation(clock=lambda: NOW)
    # the sensor session started 3 h ago: 10 min after it the reading is in warm-up
    early = Observation(
        measure="glucose.cgm",
        unit="mmol/L",
        value=6.0,
        effective_time=START + timedelta(minutes=10),
        record_key=f"cgm:{START:%Y%m%dT%H%MZ}+10",
        provenance=Provenance(source="t"),
    )
    (flagged,) = d.process("w", [early])
    assert QualityFlag.SENSOR_WARM_UP in flagged.quality
    out = d.process("j", [cgm(10, 6.0), cgm(5, 6.0), cgm(0, 16.0)])
    assert QualityFlag.IMPOSSIBLE_JUMP in out[-1].quality
    assert out[-1].value == 16.0  # flagged, never altered
    assert not by_measure(out, "glucose.cgm.trend")  # a jump is kept out of the trend


def test_low_and_questionable_readings_are_passed_on_but_are_not_trend_numbers() -> None:
    d = CgmDerivation(clock=lambda: NOW)
    lo = cgm(0, 2.2, comparator="<", quality=frozenset({QualityFlag.BELOW_RANGE}))
    res = d.process("lo", [cgm(15, 4.0), cgm(10, 3.5), cgm(5, 3.0), lo])
    assert res[-1] == lo  # the LOW reading itself, unchanged and last: nothing derived from it
    q = CgmDerivation(clock=lambda: NOW)
    bad = frozenset({QualityFlag.QUESTIONABLE})
    res = q.process("q", [cgm(m, 6.0, quality=bad) for m in (15, 10, 5, 0)])
    assert [o.measure for o in res] == ["glucose.cgm"] * 4


def test_the_record_key_gives_back_the_session_start() -> None:
    assert cgm_session_start(f"cgm:{START:%Y%m%dT%H%MZ}+42") == START
    assert cgm_session_start("seq:42") is None
    assert cgm_session_start("cgm:garbage+1") is None
    assert cgm_session_start("cgm:20261201T0300Z") is None


def test_derived_observations_pass_the_wire_contract() -> None:
    d = CgmDerivation(clock=lambda: NOW)
    out = d.process("c", [cgm(m, 5.0 - m / 50) for m in (15, 10, 5, 0)])
    msgs = encode_observations(
        site="s",
        device_id="c",
        device=DeviceIdentity(manufacturer="m", model="cgm", serial="1", transport="ble"),
        subject=Subject(kind="patient", ref="p"),
        observations=out,
        created_at=NOW,
    )
    decoded = [
        w.observation for m in msgs for w in decode_observations(m.topic, m.payload).observations
    ]
    assert {o.measure for o in decoded} == {
        "glucose.cgm",
        "glucose.cgm.trend",
        "glucose.cgm.predicted",
    }
    assert decoded == out


def test_simulated_trace_falls_to_the_asked_value_and_is_smooth() -> None:
    trace = cgm_trace_mg_dl(
        mean_mmol_l=6.3, sd_mmol_l=1.2, n=60, seed=0, fall_to_mmol_l=3.5, fall_at=35
    )
    assert trace[35] == round(3.5 * GLUCOSE_MG_DL_PER_MMOL_L)
    steps = [abs(b - a) for a, b in itertools.pairwise(trace)]
    assert max(steps) < 30  # mg/dL per 5 min: no sawtooth noise
    assert all(40 <= v <= 400 for v in trace)


# --------------------------------------------------------------------------- end to end


@pytest.mark.mosquitto
def test_a_falling_cgm_raises_urgent_low_soon_at_the_cloud(
    ingest: tuple[IngestService, str], mosquitto: MosquittoProcess, tmp_path: Path
) -> None:
    """Virtual BLE CGM (bumble) → production BLE path → the agent's stream → Mosquitto → ingest →
    the cgm-urgent-low-soon alert, explained, before the low itself."""
    service, _ = ingest
    devices = """
[ble]
backend = "virtual"
scan_timeout_s = 3

[[devices]]
id = "cgm1"
kind = "ble.cgm"
address = "F0:00:00:00:00:0C"
subject = "p-falling"

[devices.virtual]
backlog_min = 180
cgm_fall_to_mmol_l = 4.2
seed = 3
"""
    cfg = parse_config(agent_toml(tmp_path, mosquitto.url, site="home-cgm", devices=devices))
    with RunningAgent(cfg) as running:

        def raised() -> bool:
            return any(
                a.condition == "cgm-urgent-low-soon" and a.subject_ref == "p-falling"
                for a in service.list_alerts()
            )

        wait_until(raised, 60, "the urgent-low-soon alert")
        stats = running.agent.derived.stats
        assert stats.predictions >= 1
        assert stats.urgent_low_soon >= 1
    alerts = [a for a in service.list_alerts() if a.subject_ref == "p-falling"]
    soon = next(a for a in alerts if a.condition == "cgm-urgent-low-soon")
    assert soon.priority == "high"
    assert "predicted" in soon.explanation
    assert "DOMAIN.md §2" in soon.explanation
    # the last reading is 4.2 mmol/L, above every low threshold: the prediction raised it
    assert not {a.condition for a in alerts} & {
        "glucose-low-l1",
        "glucose-low-l2",
        "cgm-urgent-low",
    }
