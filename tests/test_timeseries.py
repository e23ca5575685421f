"""The time-series writer against a real VictoriaMetrics (InfluxDB v2 write API).

Everything written is read back through VictoriaMetrics' own export API: metric names are
``<measurement>_<field>`` (``observation_value``, ``observation_bound``,
``device_telemetry_battery_pct``, ...) and tags become labels. Each test writes under its own
``site`` label, so tests sharing the module's server do not see each other's series.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cloud_ingest.service import IngestService, RawMessage
from cloud_ingest.storage import open_storage
from cloud_ingest.storage.schema import device_telemetry
from cloud_ingest.timeseries import (
    SKIP_BUFFER_FULL,
    SKIP_CLOSED,
    ObservationPoint,
    TelemetryPoint,
    TimeSeriesSettings,
    TimeSeriesWriter,
    epoch_ms,
    escape_tag_value,
    observation_line,
    telemetry_lines,
)
from device_profiles.observation import DeviceIdentity, Observation, Provenance
from device_profiles.telemetry import DeviceTelemetry, LinkState
from gateway.wire import (
    AgentStatus,
    Subject,
    encode_observations,
    encode_status,
    encode_telemetry,
)
from remon.brokers import free_port
from tests.vm_server import VictoriaMetricsProcess

T0 = datetime(2025, 1, 15, 8, 0, tzinfo=UTC)
T0_MS = 1_736_928_000_000
DEADLINE_S = 30.0
# Meter LO/HI limits, DOMAIN.md section 2: "Meters: typically 0.6-33.3 mmol/L with LO/HI".
METER_LO = 0.6
METER_HI = 33.3


@pytest.fixture(scope="module")
def vm() -> Iterator[VictoriaMetricsProcess]:
    with VictoriaMetricsProcess() as server:
        yield server


def obs(
    site: str,
    t: datetime,
    value: float | None,
    *,
    subject: str = "p-1",
    device: str = "gm1",
    comparator: str | None = None,
    absent_reason: str | None = None,
    simulated: bool = False,
) -> ObservationPoint:
    return ObservationPoint(
        subject_ref=subject,
        site=site,
        device_id=device,
        measure="glucose.capillary",
        unit="mmol/L",
        time=t,
        value=value,
        comparator=comparator,
        absent_reason=absent_reason,
        simulated=simulated,
    )


def wait_for_samples(
    vm: VictoriaMetricsProcess,
    selector: str,
    expected: int = 1,
    *,
    at_ms: int | None = None,
    start: str = "0",
    end: str | None = None,
) -> list[Any]:
    """Export ``selector`` until it holds ``expected`` samples (or one at ``at_ms``).

    Returns what it has when the deadline passes; the caller's assertions then fail.
    """
    deadline = time.monotonic() + DEADLINE_S
    while True:
        vm.force_flush()
        series = vm.export(selector, start=start, end=end)
        if at_ms is not None:
            done = any(at_ms in s["timestamps"] for s in series)
        else:
            done = sum(len(s["values"]) for s in series) >= expected
        if done or time.monotonic() > deadline:
            return series
        time.sleep(0.05)


def by_name(series: list[Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for s in series:
        out.setdefault(s["metric"]["__name__"], []).append(s)
    return out


def samples(s: Any) -> list[tuple[int, float]]:
    return sorted(zip(s["timestamps"], s["values"], strict=True))


# ---------------------------------------------------------------------------------------------
# Round trips through the server


def test_observations_round_trip_with_labels_values_and_ms_timestamps(
    vm: VictoriaMetricsProcess,
) -> None:
    site = "obs-rt"
    points = [
        obs(site, T0, 5.5),
        obs(site, T0 + timedelta(milliseconds=1), 6.25),
        obs(site, T0 + timedelta(minutes=1, microseconds=2_999), 7.0),  # floored to 2 ms
        obs(site, T0 + timedelta(minutes=2), 4.8, simulated=True),
    ]
    with TimeSeriesWriter(TimeSeriesSettings(url=vm.url)) as writer:
        writer.write_observations(points)
        writer.flush()
        stats = writer.stats
    assert stats.points_written == 4
    assert stats.points_failed == 0
    assert stats.points_pending == 0

    series = wait_for_samples(vm, f'{{__name__=~"observation_.*",site="{site}"}}', 4)
    labels = {
        "__name__": "observation_value",
        "subject": "p-1",
        "site": site,
        "device": "gm1",
        "measure": "glucose.capillary",
        "unit": "mmol/L",
    }
    real = [s for s in series if "simulated" not in s["metric"]]
    simulated = [s for s in series if "simulated" in s["metric"]]
    assert [s["metric"] for s in real] == [labels]
    assert samples(real[0]) == [(T0_MS, 5.5), (T0_MS + 1, 6.25), (T0_MS + 60_002, 7.0)]
    assert [s["metric"] for s in simulated] == [{**labels, "simulated": "true"}]
    assert samples(simulated[0]) == [(T0_MS + 120_000, 4.8)]


def test_lo_hi_bounds_are_not_values_and_absent_readings_write_nothing(
    vm: VictoriaMetricsProcess,
) -> None:
    site = "obs-bounds"
    points = [
        obs(site, T0, 5.5),
        obs(site, T0 + timedelta(minutes=1), METER_LO, comparator="<"),
        obs(site, T0 + timedelta(minutes=2), METER_HI, comparator=">"),
        obs(site, T0 + timedelta(minutes=3), None, absent_reason="not-a-number"),
        obs(site, T0 + timedelta(minutes=4), None, absent_reason="error"),
        obs(site, T0 + timedelta(minutes=5), None, absent_reason="error"),
    ]
    with TimeSeriesWriter(TimeSeriesSettings(url=vm.url)) as writer:
        writer.write_observations(points)
        writer.flush()
        stats = writer.stats
    assert stats.points_written == 3
    assert dict(stats.points_skipped) == {"absent:not-a-number": 1, "absent:error": 2}

    series = by_name(wait_for_samples(vm, f'{{__name__=~"observation_.*",site="{site}"}}', 3))
    assert sorted(series) == ["observation_bound", "observation_value"]
    # the plain value series holds the one measured reading only: no bound, no absent reading
    assert [samples(s) for s in series["observation_value"]] == [[(T0_MS, 5.5)]]
    bounds = {s["metric"]["comparator"]: samples(s) for s in series["observation_bound"]}
    assert bounds == {"<": [(T0_MS + 60_000, METER_LO)], ">": [(T0_MS + 120_000, METER_HI)]}


def test_telemetry_round_trip_keeps_link_state_off_the_numeric_series(
    vm: VictoriaMetricsProcess,
) -> None:
    site = "telemetry-rt"
    points = [
        TelemetryPoint(
            site=site,
            device_id="bp1",
            time=T0,
            battery_pct=80.0,
            rssi_dbm=-71.5,
            link_state="online",
            clock_offset_s=-1.25,
        ),
        TelemetryPoint(site=site, device_id="bp1", time=T0 + timedelta(seconds=1), rssi_dbm=-60),
        TelemetryPoint(
            site=site, device_id="bp1", time=T0 + timedelta(seconds=2), link_state="offline"
        ),
    ]
    with TimeSeriesWriter(TimeSeriesSettings(url=vm.url)) as writer:
        writer.write_telemetry(points)
        writer.flush()
        stats = writer.stats
    assert stats.points_written == 4  # the first point is two lines: numbers, link state

    series = by_name(wait_for_samples(vm, f'{{__name__=~"device_telemetry_.*",site="{site}"}}', 6))
    plain = {"site": site, "device": "bp1"}
    assert sorted(series) == [
        "device_telemetry_battery_pct",
        "device_telemetry_clock_offset_s",
        "device_telemetry_link",
        "device_telemetry_rssi_dbm",
    ]
    for name in ("battery_pct", "clock_offset_s", "rssi_dbm"):
        metric = f"device_telemetry_{name}"
        assert [s["metric"] for s in series[metric]] == [{"__name__": metric, **plain}]
    assert samples(series["device_telemetry_battery_pct"][0]) == [(T0_MS, 80.0)]
    assert samples(series["device_telemetry_clock_offset_s"][0]) == [(T0_MS, -1.25)]
    assert samples(series["device_telemetry_rssi_dbm"][0]) == [(T0_MS, -71.5), (T0_MS + 1000, -60)]
    links = {s["metric"]["link_state"]: samples(s) for s in series["device_telemetry_link"]}
    assert links == {"online": [(T0_MS, 1)], "offline": [(T0_MS + 2000, 1)]}


def test_twenty_thousand_points_all_arrive(vm: VictoriaMetricsProcess) -> None:
    site = "many"
    n = 20_000
    points = [
        obs(site, T0 + timedelta(seconds=i), 3.0 + (i % 200) / 10, subject=f"p-{i % 4}")
        for i in range(n)
    ]
    settings = TimeSeriesSettings(url=vm.url, batch_size=5000)
    with TimeSeriesWriter(settings) as writer:
        for start in range(0, n, 1000):  # as the ingest would: one call per SQL batch
            writer.write_observations(points[start : start + 1000])
        writer.flush()
        stats = writer.stats
    assert stats.points_written == n
    assert stats.points_failed == 0

    series = wait_for_samples(vm, f'{{__name__="observation_value",site="{site}"}}', n)
    got = sorted((ts, v) for s in series for ts, v in samples(s))
    assert len(got) == n
    assert got == [(epoch_ms(p.time), p.value) for p in points]


# ---------------------------------------------------------------------------------------------
# Failures: nothing reaches the caller, everything is counted


def test_server_down_counts_failed_points_and_says_why() -> None:
    settings = TimeSeriesSettings(
        url=f"http://127.0.0.1:{free_port()}",  # nobody listens there
        max_retries=1,
        retry_interval_ms=10,
        max_retry_delay_ms=20,
        timeout_ms=2000,
    )
    site = "down"
    with TimeSeriesWriter(settings) as writer:
        writer.write_observations([obs(site, T0 + timedelta(seconds=i), 5.0) for i in range(7)])
        writer.write_telemetry([TelemetryPoint(site=site, device_id="d", time=T0, rssi_dbm=-50)])
        writer.flush()
        stats = writer.stats
    assert stats.points_written == 0
    assert stats.points_failed == 8
    assert stats.points_pending == 0
    assert stats.batches_retried == 1
    assert stats.last_error is not None
    assert "Connection refused" in stats.last_error


def test_points_written_while_the_server_is_down_arrive_when_it_comes_up() -> None:
    """Deterministic without timing: the retry window (about a minute) dwarfs a server start."""
    port = free_port()
    settings = TimeSeriesSettings(
        url=f"http://127.0.0.1:{port}",
        flush_interval_ms=50,
        max_retries=100,
        retry_interval_ms=100,
        max_retry_delay_ms=500,
        max_retry_time_ms=120_000,
        close_timeout_ms=60_000,
    )
    site = "late"
    points = [obs(site, T0 + timedelta(seconds=i), 6.0 + i) for i in range(5)]
    with TimeSeriesWriter(settings) as writer:
        writer.write_observations(points)
        deadline = time.monotonic() + DEADLINE_S
        while writer.stats.batches_retried == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert writer.stats.batches_retried == 1  # the first attempt did fail
        with VictoriaMetricsProcess(port=port) as late_vm:
            series = wait_for_samples(late_vm, f'{{site="{site}"}}', 5)
            writer.flush()
            stats = writer.stats
    assert [samples(s) for s in series] == [[(epoch_ms(p.time), p.value) for p in points]]
    assert stats.points_written == 5
    assert stats.points_failed == 0


def test_points_beyond_the_memory_bound_are_skipped_and_counted(
    vm: VictoriaMetricsProcess,
) -> None:
    site = "bounded"
    settings = TimeSeriesSettings(url=vm.url, batch_size=10, max_pending_points=10)
    with TimeSeriesWriter(settings) as writer:
        writer.write_observations([obs(site, T0 + timedelta(seconds=i), 5.0) for i in range(15)])
        writer.flush()
        stats = writer.stats
    assert dict(stats.points_skipped) == {SKIP_BUFFER_FULL: 5}
    assert stats.points_written == 10
    series = wait_for_samples(vm, f'{{site="{site}"}}', 10)
    assert [len(s["values"]) for s in series] == [10]


def test_a_closed_writer_counts_writes_as_skipped(vm: VictoriaMetricsProcess) -> None:
    writer = TimeSeriesWriter(TimeSeriesSettings(url=vm.url))
    writer.close()
    writer.close()  # idempotent
    writer.write_observations([obs("closed", T0, 5.0)])
    writer.write_telemetry([TelemetryPoint(site="closed", device_id="d", time=T0, rssi_dbm=-1)])
    writer.flush()
    assert dict(writer.stats.points_skipped) == {SKIP_CLOSED: 2}
    assert writer.stats.points_written == 0


# ---------------------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"time": datetime(2025, 1, 15, 8, 0)}, "ObservationPoint.time .* is naive"),
        ({"time": datetime(2025, 1, 15, tzinfo=timezone(timedelta(hours=2)))}, "is not UTC"),
        ({"value": math.nan}, r"ObservationPoint.value must be finite, got nan"),
        ({"value": math.inf}, r"ObservationPoint.value must be finite, got inf"),
        ({"value": True}, r"ObservationPoint.value must be a number, got bool"),
        ({"value": None}, "exactly one of value and absent_reason"),
        ({"absent_reason": "error"}, "exactly one of value and absent_reason"),
        ({"comparator": "~"}, r"ObservationPoint.comparator must be one of"),
        (
            {"value": None, "absent_reason": "error", "comparator": "<"},
            r"comparator needs a value",
        ),
        ({"site": ""}, r"ObservationPoint.site must not be empty"),
        ({"subject_ref": "p\n1"}, r"ObservationPoint.subject_ref contains control character"),
        ({"unit": "x" * 257}, r"ObservationPoint.unit is 257 characters, at most 256"),
        ({"simulated": 1}, r"ObservationPoint.simulated must be a bool"),
    ],
)
def test_observation_point_validation(changes: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {
        "subject_ref": "p-1",
        "site": "s",
        "device_id": "d",
        "measure": "glucose.capillary",
        "unit": "mmol/L",
        "time": T0,
        "value": 5.5,
        "simulated": False,
    }
    args.update(changes)
    with pytest.raises(ValueError, match=message):
        ObservationPoint(**args)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({}, r"TelemetryPoint for device 'd' at 2025-01-15T08:00:00\+00:00 has no field"),
        ({"battery_pct": math.nan}, r"TelemetryPoint.battery_pct must be finite, got nan"),
        ({"rssi_dbm": -math.inf}, r"TelemetryPoint.rssi_dbm must be finite, got -inf"),
        ({"clock_offset_s": math.nan}, r"TelemetryPoint.clock_offset_s must be finite"),
        ({"battery_pct": 101.0}, r"TelemetryPoint.battery_pct must be within 0..100, got 101"),
        ({"link_state": ""}, r"TelemetryPoint.link_state must not be empty"),
        ({"rssi_dbm": -1, "device_id": ""}, r"TelemetryPoint.device_id must not be empty"),
        (
            {"rssi_dbm": -1, "time": datetime(2025, 1, 15)},
            r"TelemetryPoint.time .* is naive",
        ),
    ],
)
def test_telemetry_point_validation(changes: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"site": "s", "device_id": "d", "time": T0}
    args.update(changes)
    with pytest.raises(ValueError, match=message):
        TelemetryPoint(**args)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"url": "127.0.0.1:8428"}, r"TimeSeriesSettings.url must be an http:// or https://"),
        ({"url": "ftp://host"}, r"TimeSeriesSettings.url must be an http:// or https://"),
        ({"url": "http://"}, r"TimeSeriesSettings.url must be an http:// or https://"),
        ({"org": ""}, r"TimeSeriesSettings.org must be a non-empty string"),
        ({"bucket": ""}, r"TimeSeriesSettings.bucket must be a non-empty string"),
        ({"batch_size": 0}, r"TimeSeriesSettings.batch_size must be >= 1, got 0"),
        ({"batch_size": True}, r"TimeSeriesSettings.batch_size must be an integer"),
        ({"flush_interval_ms": 0}, r"TimeSeriesSettings.flush_interval_ms must be >= 1"),
        ({"max_retries": -1}, r"TimeSeriesSettings.max_retries must be >= 0, got -1"),
        ({"timeout_ms": 0}, r"TimeSeriesSettings.timeout_ms must be >= 1"),
        ({"retry_interval_ms": 1.5}, r"TimeSeriesSettings.retry_interval_ms must be an integer"),
        (
            {"retry_interval_ms": 1000, "max_retry_delay_ms": 500},
            r"TimeSeriesSettings.max_retry_delay_ms \(500\) must be >= retry_interval_ms",
        ),
        (
            {"batch_size": 100, "max_pending_points": 50},
            r"TimeSeriesSettings.max_pending_points \(50\) must be >= batch_size \(100\)",
        ),
    ],
)
def test_settings_validation(changes: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"url": "http://127.0.0.1:8428"}
    args.update(changes)
    with pytest.raises(ValueError, match=message):
        TimeSeriesSettings(**args)


def test_settings_defaults_and_token_kept_out_of_repr() -> None:
    s = TimeSeriesSettings(url="https://tsdb.example:8086", token="s3cret")
    assert s.batch_size == 5000
    assert s.flush_interval_ms == 1000
    assert "s3cret" not in repr(s)


# ---------------------------------------------------------------------------------------------
# Line protocol (pure)


def test_line_layout() -> None:
    p = obs("home 1", T0, 5.5, subject="p,1", device="gm=1", simulated=True)
    assert observation_line(p) == (
        r"observation,device=gm\=1,measure=glucose.capillary,simulated=true,site=home\ 1,"
        r"subject=p\,1,unit=mmol/L value=5.5 1736928000000"
    )
    bound = obs("s", T0, METER_LO, comparator="<=")
    assert observation_line(bound) == (
        r"observation,comparator=<\=,device=gm1,measure=glucose.capillary,site=s,subject=p-1,"
        r"unit=mmol/L bound=0.6 1736928000000"
    )
    assert observation_line(obs("s", T0, None, absent_reason="error")) is None
    t = TelemetryPoint(site="s", device_id="d", time=T0, battery_pct=50, link_state="on line")
    assert telemetry_lines(t) == (
        "device_telemetry,device=d,site=s battery_pct=50.0 1736928000000",
        r"device_telemetry,device=d,link_state=on\ line,site=s link=1i 1736928000000",
    )


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("a b", r"a\ b"),
        ("a,b", r"a\,b"),
        ("a=b", r"a\=b"),
        ("a\\", "a\\\\"),
        ("\\,", "\\\\\\,"),
        ('q"', 'q"'),
        ("é😀", "é😀"),
    ],
)
def test_escape_tag_value(raw: str, escaped: str) -> None:
    assert escape_tag_value(raw) == escaped


@given(
    ms=st.integers(min_value=-(10**12), max_value=10**13),
    us=st.integers(min_value=0, max_value=999),
)
def test_epoch_ms_floors_sub_millisecond_parts(ms: int, us: int) -> None:
    t = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms, microseconds=us)
    assert epoch_ms(t) == ms


# ---------------------------------------------------------------------------------------------
# Property: tag values round-trip through VictoriaMetrics labels

# Empty values are refused by the point (VictoriaMetrics would drop the label), and control
# characters cannot travel in line protocol: see test_observation_point_validation.
TAG_TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from([" ", ",", "=", '"', "'", "\\", "é", "ß", "€", "😀", "\u2028", "\xa0"]),
        st.characters(exclude_categories=("Cc", "Cs")),
    ),
    min_size=1,
    max_size=30,
)
_unique_ms = itertools.count()
T_PROPERTY = datetime(2024, 6, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def shared_writer(vm: VictoriaMetricsProcess) -> Iterator[TimeSeriesWriter]:
    with TimeSeriesWriter(TimeSeriesSettings(url=vm.url)) as writer:
        yield writer


@settings(max_examples=30, deadline=None)
@given(subject=TAG_TEXT, site=TAG_TEXT, device=TAG_TEXT, measure=TAG_TEXT, unit=TAG_TEXT)
@example(subject=" ", site="\\", device="a\\,b", measure="x\\=y", unit='"q\\"')
@example(subject="trail\\", site=" lead", device="a b", measure="=", unit=",")
def test_tag_values_round_trip_through_victoria_metrics(
    vm: VictoriaMetricsProcess,
    shared_writer: TimeSeriesWriter,
    subject: str,
    site: str,
    device: str,
    measure: str,
    unit: str,
) -> None:
    t = T_PROPERTY + timedelta(milliseconds=next(_unique_ms))
    ms = epoch_ms(t)
    p = ObservationPoint(
        subject_ref=subject,
        site=site,
        device_id=device,
        measure=measure,
        unit=unit,
        time=t,
        value=1.5,
        simulated=False,
    )
    shared_writer.write_observations([p])
    shared_writer.flush()
    # this example's sample is the only one at its millisecond
    series = wait_for_samples(
        vm,
        '{__name__="observation_value"}',
        at_ms=ms,
        start=str(ms // 1000),
        end=str(ms // 1000 + 1),
    )
    mine = [s for s in series if ms in s["timestamps"]]
    assert [s["metric"] for s in mine] == [
        {
            "__name__": "observation_value",
            "subject": subject,
            "site": site,
            "device": device,
            "measure": measure,
            "unit": unit,
        }
    ]
    assert samples(mine[0]) == [(ms, 1.5)]


def test_ingest_copies_new_readings_and_clock_offsets_after_the_commit(
    vm: VictoriaMetricsProcess, sqlite_url: str
) -> None:
    """The service's copy: readings stored for the first time go to the time-series store once
    (a redelivered batch is not copied again), with the device's clock offset as telemetry."""
    site = "svc-copy"
    obs_ = [
        Observation(
            measure="glucose.capillary",
            unit="mmol/L",
            effective_time=T0 + timedelta(minutes=i),
            record_key=f"g:{i}",
            provenance=Provenance(source="sim"),
            value=v,
            clock_offset_s=-2.5 + i,
        )
        for i, v in enumerate([5.5, 6.25])
    ]
    [m] = encode_observations(
        site=site,
        device_id="meter-9",
        device=DeviceIdentity(manufacturer="Acme", model="G1", serial="S9"),
        subject=Subject(kind="patient", ref="p-copy"),
        observations=obs_,
        created_at=T0,
    )
    raw = RawMessage(topic=m.topic, payload=m.payload, received_at=T0)
    st = encode_status(
        AgentStatus(site=site, state="offline", at=T0 + timedelta(minutes=5), agent_version="1")
    )
    status = RawMessage(topic=st.topic, payload=st.payload, received_at=T0)
    storage = open_storage(sqlite_url)
    writer = TimeSeriesWriter(TimeSeriesSettings(url=vm.url, flush_interval_ms=100))
    try:
        service = IngestService(storage, timeseries=writer)
        assert service.ingest_batch([raw]).observations == 2
        assert service.ingest_batch([raw]).observations == 0  # redelivered: not copied again
        assert service.ingest_batch([status]).statuses == 1
        writer.flush()
        series = wait_for_samples(vm, f'{{__name__="observation_value",site="{site}"}}', 2)
        (s,) = series
        assert s["metric"]["subject"] == "p-copy"
        assert s["metric"]["measure"] == "glucose.capillary"
        assert samples(s) == [(epoch_ms(T0), 5.5), (epoch_ms(T0 + timedelta(minutes=1)), 6.25)]
        clock = wait_for_samples(
            vm, f'{{__name__="device_telemetry_clock_offset_s",site="{site}"}}', 1
        )
        # the newest reading's offset only: one telemetry point per device and batch
        assert samples(clock[0]) == [(epoch_ms(T0 + timedelta(minutes=1)), -1.5)]
        # the hub's last will: its link state, on a series of its own
        link = wait_for_samples(vm, f'{{__name__="device_telemetry_link",site="{site}"}}', 1)
        assert link[0]["metric"]["link_state"] == "offline"
        assert link[0]["metric"]["device"] == "hub"
        assert samples(link[0]) == [(epoch_ms(T0 + timedelta(minutes=5)), 1.0)]
        assert writer.stats.points_written == 4
    finally:
        writer.close()
        storage.close()


def test_ingest_copies_device_telemetry_battery_rssi_and_link(
    vm: VictoriaMetricsProcess, sqlite_url: str
) -> None:
    """A hub's telemetry message: each sample to the time-series store (battery and RSSI on the
    numeric series, the link state on its own), and the device's last known state in SQL."""
    site = "svc-telemetry"
    device = DeviceIdentity(manufacturer="Acme", model="CGM 7", serial="T1", transport="ble")
    samples_ = [
        DeviceTelemetry(at=T0, link=LinkState.CONNECTED, battery_pct=64, rssi_dbm=-71),
        DeviceTelemetry(at=T0 + timedelta(minutes=30), link=LinkState.DISCONNECTED),
    ]
    [m] = encode_telemetry(
        site=site,
        device_id="cgm-9",
        device=device,
        subject=Subject(kind="patient", ref="p-tel"),
        samples=samples_,
        created_at=T0,
    )
    storage = open_storage(sqlite_url)
    writer = TimeSeriesWriter(TimeSeriesSettings(url=vm.url, flush_interval_ms=100))
    try:
        service = IngestService(storage, timeseries=writer)
        result = service.ingest_batch(
            [RawMessage(topic=m.topic, payload=m.payload, received_at=T0)]
        )
        assert (result.telemetry_samples, result.dead_letters) == (2, 0)
        writer.flush()
        battery = wait_for_samples(
            vm, f'{{__name__="device_telemetry_battery_pct",site="{site}"}}', 1
        )
        assert battery[0]["metric"]["device"] == "cgm-9"
        assert samples(battery[0]) == [(epoch_ms(T0), 64.0)]
        rssi = wait_for_samples(vm, f'{{__name__="device_telemetry_rssi_dbm",site="{site}"}}', 1)
        assert samples(rssi[0]) == [(epoch_ms(T0), -71.0)]
        links = wait_for_samples(vm, f'{{__name__="device_telemetry_link",site="{site}"}}', 2)
        by_state = {s["metric"]["link_state"]: samples(s) for s in links}
        assert by_state == {
            "connected": [(epoch_ms(T0), 1.0)],
            "disconnected": [(epoch_ms(T0 + timedelta(minutes=30)), 1.0)],
        }
        with storage.engine.connect() as conn:
            row = conn.execute(
                sa.select(device_telemetry).where(device_telemetry.c.device_key == device.key)
            ).one()
        assert (row.battery_pct, row.rssi_dbm, row.link) == (64, -71, "disconnected")
        assert (row.battery_at, row.link_at) == (T0, T0 + timedelta(minutes=30))
    finally:
        writer.close()
        storage.close()
