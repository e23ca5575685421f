from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta

import pytest

from device_profiles.observation import AbsentReason, Observation, QualityFlag
from edge_agent.simulators import (
    SIM_METER_RANGE_MMOL,
    SimBloodPressureMonitor,
    SimGlucoseMeter,
    SimPulseOximeter,
    SimSettings,
    SimThermometer,
    sim_identity,
)
from edge_agent.sources import BoundDevice
from gateway.wire import Subject
from tests.helpers import T0


def bound(kind: str = "sim.glucose-meter") -> BoundDevice:
    return BoundDevice(
        device_id="gm1",
        identity=sim_identity(kind, "S1"),
        subject=Subject(kind="patient", ref="p-1"),
    )


def meter(**kw: object) -> SimGlucoseMeter:
    args: dict[str, object] = {"start": T0, "interval_s": 60.0}
    args.update(kw)
    return SimGlucoseMeter(bound(), SimSettings(**args))  # type: ignore[arg-type]


def test_records_are_deterministic_and_simulated() -> None:
    a, b = meter(seed=3), meter(seed=3)
    assert a.record(7) == b.record(7)
    assert a.record(7) != a.record(8)
    o = a.record(7)[0]
    assert o.record_key == f"seq:7@{int(T0.timestamp())}"
    assert o.effective_time == T0 + timedelta(minutes=7)
    assert QualityFlag.SIMULATED in o.quality


def test_out_of_range_is_a_comparator_not_a_number() -> None:
    m = meter(profile="hypo-prone")
    lows = [o for n in range(1, 3000) for o in m.record(n) if o.comparator == "<"]
    assert lows, "a hypo-prone profile produces some LO readings in 3000 records"
    for o in lows:
        assert o.value == SIM_METER_RANGE_MMOL[0]
        assert QualityFlag.BELOW_RANGE in o.quality


def test_mg_dl_meter_is_converted_once_with_original_kept() -> None:
    o = meter(unit="mg/dL").record(1)[0]
    if o.comparator is None:
        assert o.unit == "mmol/L"
        assert o.provenance.original_unit == "mg/dL"
        assert o.provenance.original_value is not None
        assert o.value == pytest.approx(o.provenance.original_value / 18.016)


def test_clock_skew_is_flagged_and_time_corrected() -> None:
    o = meter(clock_skew_s=1800.0).record(1)[0]
    assert QualityFlag.CLOCK_OFFSET in o.quality
    assert o.clock_offset_s == 1800.0
    assert o.effective_time == T0 + timedelta(minutes=1)
    assert o.device_time == "2026-11-22T08:31:00"


def test_device_errors_are_absent_values() -> None:
    m = meter(error_rate=1.0)
    o = m.record(1)[0]
    assert o.value is None
    assert o.absent_reason is AbsentReason.ERROR


def test_other_devices_make_plausible_panels() -> None:
    bp = SimBloodPressureMonitor(bound("sim.bp-monitor"), SimSettings(start=T0))
    assert [o.measure for o in bp.record(1)] == ["bp.systolic", "bp.diastolic", "pulse.cuff"]
    ox = SimPulseOximeter(bound("sim.pulse-oximeter"), SimSettings(start=T0, profile="hypoxic"))
    assert all(
        o.value is not None and o.value <= 100
        for n in range(1, 500)
        for o in ox.record(n)
        if o.measure == "spo2"
    )
    th = SimThermometer(bound("sim.thermometer"), SimSettings(start=T0))
    assert th.record(1)[0].unit == "Cel"


def test_session_resumes_after_cursor_without_gaps_or_duplicates() -> None:
    now = [T0 + timedelta(minutes=250)]
    m = SimGlucoseMeter(
        bound(), SimSettings(start=T0, interval_s=60.0, max_records=240), clock=lambda: now[0]
    )
    got: list[tuple[list[str], str | None]] = []

    async def sink(dev: BoundDevice, obs: Sequence[Observation], cursor: str | None) -> None:
        got.append(([o.record_key for o in obs], cursor))
        if len(got) == 2:
            raise asyncio.CancelledError  # the agent stops mid-session

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(m.run_session(sink, None))
    assert got[0][0][0] == f"seq:1@{int(T0.timestamp())}"
    assert got[0][1] == "seq:100"
    assert got[1][1] == "seq:200"

    got.clear()

    async def resume() -> None:
        async def sink2(dev: BoundDevice, obs: Sequence[Observation], cursor: str | None) -> None:
            got.append(([o.record_key for o in obs], cursor))

        task = asyncio.create_task(m.run_session(sink2, "seq:200"))
        await asyncio.sleep(0.05)
        task.cancel()

    asyncio.run(resume())
    assert got == [([f"seq:{n}@{int(T0.timestamp())}" for n in range(201, 241)], "seq:240")]


def test_cuff_error_voids_the_whole_bp_reading() -> None:
    bp = SimBloodPressureMonitor(bound("sim.bp-monitor"), SimSettings(start=T0, error_rate=1.0))
    obs = bp.record(1)
    assert [o.measure for o in obs] == ["bp.systolic", "bp.diastolic"]
    assert all(o.value is None and o.absent_reason is AbsentReason.ERROR for o in obs)
