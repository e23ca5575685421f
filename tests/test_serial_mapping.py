"""Serial sources without a port (edge_agent/serial_sources.py): the meter cursor, line settings
and how a firmware bridge board's events become observations and device events.

Facts the expectations come from:

* Meters without sequence numbers (Contour over ASTM, OneTouch Ultra 2) send their whole memory
  on every transfer; a meter clock has minutes or seconds, so two readings can share a time
  stamp. ``_newer`` keeps what is newer than the cursor: the latest device time queued and the
  record keys queued at that time.
* Line settings are "baud, data bits, parity N/E/O, stop bits [rtscts]" (config.py), e.g. the
  OneTouch Ultra 2's 9600 8N1 (PROTOCOLS.md) and the bridge boards' 115200 8N1
  (firmware-bridges.md).
* Bridge events carry the board's clock uncorrected with the measured offset beside it (board
  minus host, firmware_bridges/host.py); DOMAIN.md "Device clocks": correct record times by the
  offset, flag offsets > 15 min, no measured offset = device time only; dedupe by a key derived
  from content. A dispenser's dose event is unique by kind and dose. A saturated blow's PEF is a
  lower bound: comparator '>' and the above-range flag, never a made-up number.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_profiles.events import DeviceEvent, EventKind
from device_profiles.observation import (
    AbsentReason,
    Comparator,
    DeviceIdentity,
    Observation,
    Provenance,
    QualityFlag,
)
from edge_agent.config import _BAUDS, SERIAL_LINE_DEFAULTS
from edge_agent.registry import DeviceRegistry
from edge_agent.serial_port import LineSettings
from edge_agent.serial_sources import (
    BridgeSource,
    SerialDeviceSpec,
    WrongDevice,
    _newer,
    build_serial_source,
    parse_line,
)
from edge_agent.signal import SignalStage
from edge_agent.sources import BoundDevice
from firmware_bridges import messages as m
from firmware_bridges.host import (
    BlowCurve,
    BoardHello,
    Capabilities,
    DispenserReport,
    PeripheralMeasurement,
)
from firmware_bridges.pef_curves import pef_flow_curve
from gateway.wire import Subject

HELSINKI = ZoneInfo("Europe/Helsinki")
LOCAL_T0 = datetime(2026, 11, 22, 8, 0)  # a meter's wall clock (naive)
HUB_NOW = datetime(2026, 11, 22, 8, 0, 30, tzinfo=UTC)
RECEIVED = datetime(2026, 11, 22, 8, 0, 5, tzinfo=UTC)  # hub time the board's event arrived
BOARD_T = datetime(2026, 11, 22, 8, 1, 35, tzinfo=UTC)  # board clock at the event
PORT = "/dev/serial/by-id/usb-remon_bridge_0001-if00"


# --------------------------------------------------------------------------- the meter cursor


def reading(key: str, minute: int, *, second: int = 0) -> Observation:
    t = LOCAL_T0 + timedelta(minutes=minute, seconds=second)
    return Observation(
        measure="glucose.capillary",
        unit="mmol/L",
        value=5.5,
        effective_time=t.replace(tzinfo=UTC),
        record_key=key,
        device_time=t.isoformat(timespec="seconds"),
        provenance=Provenance(source="test"),
    )


def keys(observations: Sequence[Observation]) -> list[str]:
    return [o.record_key for o in observations]


def cursor_doc(cursor: str | None) -> dict[str, Any]:
    assert cursor is not None
    doc: dict[str, Any] = json.loads(cursor)
    return doc


def test_first_read_queues_the_whole_memory() -> None:
    memory = [reading("a", 0), reading("b", 5), reading("c", 9)]
    keep, cursor = _newer(memory, None)
    assert keys(keep) == ["a", "b", "c"]
    assert cursor_doc(cursor) == {"device_time": "2026-11-22T08:09:00", "keys": ["c"]}


def test_memory_order_does_not_matter() -> None:
    """The OneTouch dumps newest first, the Contour oldest first."""
    keep, cursor = _newer([reading("c", 9), reading("a", 0), reading("b", 5)], None)
    assert sorted(keys(keep)) == ["a", "b", "c"]
    assert cursor_doc(cursor)["device_time"] == "2026-11-22T08:09:00"


def test_readings_sharing_the_latest_time_are_all_in_the_cursor() -> None:
    memory = [reading("a", 0), reading("b", 9), reading("c", 9)]
    keep, cursor = _newer(memory, None)
    assert keys(keep) == ["a", "b", "c"]
    assert cursor_doc(cursor) == {"device_time": "2026-11-22T08:09:00", "keys": ["b", "c"]}
    again, same = _newer(memory, cursor)
    assert again == []
    assert same == cursor


def test_reading_taken_in_the_same_minute_as_the_cursor_is_queued() -> None:
    memory = [reading("a", 0), reading("b", 9)]
    _, cursor = _newer(memory, None)
    keep, cursor = _newer([*memory, reading("c", 9)], cursor)
    assert keys(keep) == ["c"]
    assert cursor_doc(cursor) == {"device_time": "2026-11-22T08:09:00", "keys": ["b", "c"]}
    keep, cursor = _newer([*memory, reading("c", 9), reading("d", 10)], cursor)
    assert keys(keep) == ["d"]
    assert cursor_doc(cursor) == {"device_time": "2026-11-22T08:10:00", "keys": ["d"]}


def test_seconds_resolution_orders_readings_within_a_minute() -> None:
    _, cursor = _newer([reading("a", 9, second=10)], None)
    keep, _ = _newer([reading("a", 9, second=10), reading("b", 9, second=11)], cursor)
    assert keys(keep) == ["b"]


def test_nothing_new_leaves_the_cursor_unchanged() -> None:
    memory = [reading("a", 0), reading("b", 5)]
    _, cursor = _newer(memory, None)
    keep, after = _newer(memory, cursor)
    assert keep == []
    assert after is cursor
    assert _newer([], None) == ([], None)


@pytest.mark.parametrize(
    "cursor",
    [
        "not json",
        "{}",
        '{"device_time": "2026-11-22T08:00:00"}',
        "[]",
        '"2026-11-22T08:00:00"',
        "null",
        '{"device_time": "2026-11-22T08:00:00", "keys": 3}',
    ],
)
def test_unreadable_cursor_reads_the_whole_memory_with_a_warning(
    cursor: str, caplog: pytest.LogCaptureFixture
) -> None:
    memory = [reading("a", 0), reading("b", 5)]
    with caplog.at_level(logging.WARNING, logger="remon.agent.serial"):
        keep, after = _newer(memory, cursor)
    assert keys(keep) == ["a", "b"]
    assert cursor_doc(after) == {"device_time": "2026-11-22T08:05:00", "keys": ["b"]}
    assert any(repr(cursor) in r.getMessage() for r in caplog.records)
    assert "whole memory" in caplog.text


@settings(max_examples=150, deadline=None)
@given(gaps=st.lists(st.integers(0, 2), min_size=1, max_size=25), data=st.data())
def test_growing_memory_queues_every_reading_exactly_once(
    gaps: list[int], data: st.DataObject
) -> None:
    """A meter takes readings (several can share a minute) and is read now and then; each
    transfer sends its whole memory so far, in any order."""
    memory = [reading(f"r{i}", minute) for i, minute in enumerate(itertools.accumulate(gaps))]
    cuts = sorted(data.draw(st.lists(st.integers(0, len(memory)), max_size=8)))
    cursor: str | None = None
    queued: list[str] = []
    for cut in [*cuts, len(memory), len(memory)]:
        dump = data.draw(st.permutations(memory[:cut]))
        keep, cursor = _newer(list(dump), cursor)
        queued += keys(keep)
    assert sorted(queued) == sorted(keys(memory))
    assert len(queued) == len(set(queued))


# --------------------------------------------------------------------------- line settings


LINE_TEXTS = [
    f"{baud} {bits}{parity}{stop}{flow}"
    for baud, bits, parity, stop, flow in itertools.product(
        sorted(_BAUDS), "78", "NEO", "12", ["", " rtscts"]
    )
]


@pytest.mark.parametrize("text", LINE_TEXTS)
def test_parse_line_reads_every_valid_form(text: str) -> None:
    baud, frame, *flow = text.split()
    line = parse_line(text)
    assert line == LineSettings(
        baudrate=int(baud),
        bytesize=7 if frame[0] == "7" else 8,
        parity={"N": "N", "E": "E", "O": "O"}[frame[1]],  # type: ignore[arg-type]
        stopbits=2 if frame[2] == "2" else 1,
        rtscts=flow == ["rtscts"],
    )
    assert str(line) == text


def test_parse_line_examples() -> None:
    assert parse_line("9600 8N1") == LineSettings(baudrate=9600)  # OneTouch Ultra 2
    assert parse_line("115200 8N1") == LineSettings(baudrate=115200)  # bridge boards
    assert parse_line("1200 7E2 rtscts") == LineSettings(
        baudrate=1200, bytesize=7, parity="E", stopbits=2, rtscts=True
    )
    assert {k: str(parse_line(v)) for k, v in SERIAL_LINE_DEFAULTS.items()} == SERIAL_LINE_DEFAULTS


# --------------------------------------------------------------------------- bridge boards


Reject = tuple[str, str, str, bytes | None]


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[DeviceRegistry]:
    reg = DeviceRegistry(tmp_path / "devices.sqlite")
    yield reg
    reg.close()


@pytest.fixture
def rejects() -> list[Reject]:
    return []


async def no_events(device: BoundDevice, events: Sequence[DeviceEvent]) -> None:
    raise AssertionError("the mapping helpers return events, they do not deliver them")


def bridge_source(
    registry: DeviceRegistry, rejects: list[Reject], kind: str, *, simulated: bool = False
) -> BridgeSource:
    """As Agent._build_serial_source builds one for a configured serial.* device."""
    registry.bind(
        address=PORT, device_id="b1", kind=kind, binding_kind="patient", binding_ref="p-1"
    )
    spec = SerialDeviceSpec(
        device_id="b1",
        kind=kind,
        port=PORT,
        line=parse_line(SERIAL_LINE_DEFAULTS[kind]),
        bound=BoundDevice(
            device_id="b1",
            identity=DeviceIdentity(
                manufacturer="unknown",
                model=kind,
                serial=PORT.rsplit("/", 1)[-1],
                transport="serial",
            ),
            subject=Subject(kind="patient", ref="p-1"),
        ),
        simulated=simulated,
    )
    src = build_serial_source(
        spec,
        registry=registry,
        reject=lambda *r: rejects.append(r),
        events=no_events,
        signal=SignalStage(),
        tz=HELSINKI,
        clock=lambda: HUB_NOW,
    )
    assert isinstance(src, BridgeSource)
    return src


@pytest.fixture
def dispenser(registry: DeviceRegistry, rejects: list[Reject]) -> BridgeSource:
    return bridge_source(registry, rejects, "serial.dispenser")


@pytest.fixture
def kiosk(registry: DeviceRegistry, rejects: list[Reject]) -> BridgeSource:
    return bridge_source(registry, rejects, "serial.kiosk-peripheral")


@pytest.fixture
def pef_board(registry: DeviceRegistry, rejects: list[Reject]) -> BridgeSource:
    return bridge_source(registry, rejects, "serial.pef-board")


def dose(
    *,
    seq: int = 1,
    kind: EventKind = EventKind.DOSE_TAKEN,
    dose_id: str | None = "20261122T0800-0001",
    actual: datetime | None = BOARD_T,
    offset_ms: int | None = 90_000,
    doses_left: int | None = 12,
) -> DispenserReport:
    return DispenserReport(
        board_id="DSP-00001",
        seq=seq,
        kind=kind,
        dose_id=dose_id,
        scheduled=datetime(2026, 11, 22, 8, 0, tzinfo=UTC) if dose_id else None,
        actual=actual,
        rtc_offset_ms=offset_ms,
        details=MappingProxyType({} if doses_left is None else {"doses_left": doses_left}),
        received_at=RECEIVED,
    )


def test_dose_event_record_key_is_the_same_whatever_the_board_seq(dispenser: BridgeSource) -> None:
    first = dispenser._dispenser_event(dose(seq=5))
    resent = dispenser._dispenser_event(dose(seq=9000, offset_ms=95_000))
    assert first.record_key == resent.record_key
    assert first.record_key == "dose_taken:20261122T0800-0001"
    missed = dispenser._dispenser_event(dose(seq=5, kind=EventKind.DOSE_MISSED))
    other = dispenser._dispenser_event(dose(seq=5, dose_id="20261122T1400-0002"))
    assert len({first.record_key, missed.record_key, other.record_key}) == 3


def test_event_without_a_dose_is_keyed_by_its_board_time_not_its_seq(
    dispenser: BridgeSource,
) -> None:
    jam = dispenser._dispenser_event(dose(seq=3, kind=EventKind.JAM, dose_id=None))
    again = dispenser._dispenser_event(dose(seq=77, kind=EventKind.JAM, dose_id=None))
    assert jam.record_key == again.record_key
    assert jam.dose_id is None


def test_dose_event_time_is_corrected_by_the_board_clock_offset(dispenser: BridgeSource) -> None:
    ev = dispenser._dispenser_event(dose(offset_ms=90_000))  # the board is 90 s fast
    assert ev.kind is EventKind.DOSE_TAKEN
    assert ev.event_time == BOARD_T - timedelta(seconds=90)
    assert ev.device_time == BOARD_T.isoformat()
    assert ev.clock_offset_s == 90.0
    assert ev.dose_id == "20261122T0800-0001"
    assert ev.scheduled_time == datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
    assert dict(ev.details) == {"doses_left": 12}
    assert ev.quality == frozenset()
    assert ev.provenance.source == "serial:bridge-dispenser"
    slow = dispenser._dispenser_event(dose(offset_ms=-4_500))
    assert slow.event_time == BOARD_T + timedelta(seconds=4.5)


def test_board_clock_off_by_more_than_15_minutes_is_flagged(dispenser: BridgeSource) -> None:
    ev = dispenser._dispenser_event(dose(offset_ms=-20 * 60_000))
    assert ev.event_time == BOARD_T + timedelta(minutes=20)
    assert ev.quality == {QualityFlag.CLOCK_OFFSET}


def test_board_without_a_clock_gets_the_hub_receive_time(dispenser: BridgeSource) -> None:
    ev = dispenser._dispenser_event(dose(actual=None, offset_ms=None, doses_left=None))
    assert ev.event_time == RECEIVED
    assert ev.device_time is None
    assert ev.clock_offset_s is None
    assert ev.quality == {QualityFlag.DEVICE_TIME_ONLY}
    assert dict(ev.details) == {}
    assert ev.record_key == "dose_taken:20261122T0800-0001"


def test_board_time_with_no_measured_offset_is_device_time_only(dispenser: BridgeSource) -> None:
    ev = dispenser._dispenser_event(dose(offset_ms=None))
    assert ev.event_time == BOARD_T  # nothing to correct it by
    assert ev.quality == {QualityFlag.DEVICE_TIME_ONLY}


def test_simulated_dispenser_events_are_flagged(
    registry: DeviceRegistry, rejects: list[Reject]
) -> None:
    src = bridge_source(registry, rejects, "serial.dispenser", simulated=True)
    assert src._dispenser_event(dose()).quality == {QualityFlag.SIMULATED}
    no_clock = src._dispenser_event(dose(actual=None, offset_ms=None))
    assert no_clock.quality == {QualityFlag.SIMULATED, QualityFlag.DEVICE_TIME_ONLY}


def measurement(
    *,
    value: float | None = 172.5,
    comparator: Comparator | None = None,
    absent: AbsentReason | None = None,
    unstable: bool = False,
    at: datetime | None = BOARD_T,
    offset_ms: int | None = -2_000,
) -> PeripheralMeasurement:
    return PeripheralMeasurement(
        board_id="KSK-00001",
        seq=41,
        measure="body.height",
        value=value,
        unit="cm",
        comparator=comparator,
        absent_reason=absent,
        unstable=unstable,
        at=at,
        rtc_offset_ms=offset_ms,
        received_at=RECEIVED,
    )


def test_measurement_maps_value_unit_and_corrected_time(kiosk: BridgeSource) -> None:
    obs = kiosk._measurement(measurement())
    assert (obs.measure, obs.value, obs.unit) == ("body.height", 172.5, "cm")
    assert obs.comparator is None
    assert obs.absent_reason is None
    assert obs.effective_time == BOARD_T + timedelta(seconds=2)  # the board is 2 s slow
    assert obs.device_time == BOARD_T.isoformat()
    assert obs.clock_offset_s == -2.0
    assert obs.quality == frozenset()
    assert obs.provenance.source == "serial:bridge-peripheral"
    assert kiosk._measurement(measurement()).record_key == obs.record_key


@pytest.mark.parametrize(
    ("comparator", "flag"), [(">", QualityFlag.ABOVE_RANGE), ("<", QualityFlag.BELOW_RANGE)]
)
def test_out_of_range_measurement_is_the_limit_with_a_comparator(
    kiosk: BridgeSource, comparator: Comparator, flag: QualityFlag
) -> None:
    obs = kiosk._measurement(measurement(value=250.0, comparator=comparator))
    assert obs.value == 250.0
    assert obs.comparator == comparator
    assert obs.quality == {flag}


def test_measurement_error_has_no_value(kiosk: BridgeSource) -> None:
    obs = kiosk._measurement(measurement(value=None, absent=AbsentReason.ERROR))
    assert obs.value is None
    assert obs.absent_reason is AbsentReason.ERROR
    assert obs.comparator is None


def test_unstable_measurement_is_questionable(kiosk: BridgeSource) -> None:
    obs = kiosk._measurement(measurement(unstable=True))
    assert obs.quality == {QualityFlag.QUESTIONABLE}
    assert obs.value == 172.5


def test_measurement_without_a_board_clock(kiosk: BridgeSource) -> None:
    obs = kiosk._measurement(measurement(at=None, offset_ms=None))
    assert obs.effective_time == RECEIVED
    assert obs.device_time is None
    assert obs.quality == {QualityFlag.DEVICE_TIME_ONLY}


def blow_curve(
    *,
    flow: tuple[float, ...] | None = None,
    rate: int = 1000,
    end: m.EndReason = m.EndReason.COMPLETE,
    saturated: bool = False,
    sensor_fault: bool = False,
    board_time: datetime | None = BOARD_T,
    offset_ms: int | None = 1_500,
    received_at: datetime = RECEIVED,
) -> BlowCurve:
    return BlowCurve(
        board_id="PEF-00001",
        blow_id=4,
        sample_rate_hz=rate,
        start_tick_us=0,
        flow_l_s=flow if flow is not None else pef_flow_curve(pef_l_min=450).flow_l_s,
        end_reason=end,
        board_peak_l_s=None,
        saturated=saturated,
        sensor_fault=sensor_fault,
        board_time=board_time,
        rtc_offset_ms=offset_ms,
        received_at=received_at,
    )


def test_blow_gives_its_pef_at_the_corrected_start(pef_board: BridgeSource) -> None:
    [obs] = pef_board._blow(blow_curve())
    assert isinstance(obs, Observation)
    assert obs.measure == "pef"
    assert obs.value == pytest.approx(450, abs=10)
    assert obs.comparator is None
    assert obs.effective_time == BOARD_T - timedelta(seconds=1.5)
    assert obs.quality == frozenset()
    resent = pef_board._blow(blow_curve(received_at=RECEIVED + timedelta(minutes=3)))
    assert [o.record_key for o in resent] == [obs.record_key]  # keyed by the board's clock


def test_blow_without_a_board_clock_starts_at_the_hub_receive_time(
    pef_board: BridgeSource,
) -> None:
    [obs] = pef_board._blow(blow_curve(board_time=None, offset_ms=None))
    assert isinstance(obs, Observation)
    assert obs.effective_time == RECEIVED


def test_saturated_blow_is_a_lower_bound(pef_board: BridgeSource) -> None:
    """Samples clipped at the sensor's 12 L/s limit: the PEF is at least the plateau."""
    clipped = tuple(min(f, 12.0) for f in pef_flow_curve(pef_l_min=900).flow_l_s)
    [obs] = pef_board._blow(blow_curve(flow=clipped, saturated=True))
    assert isinstance(obs, Observation)
    assert obs.comparator == ">"
    assert obs.value == pytest.approx(720, abs=1)
    assert obs.quality == {QualityFlag.ABOVE_RANGE}


@pytest.mark.parametrize(
    ("end", "fault"),
    [
        (m.EndReason.TIMEOUT, False),
        (m.EndReason.ABORTED_BY_BOARD, False),
        (m.EndReason.COMPLETE, True),
    ],
)
def test_blow_not_ended_normally_is_questionable(
    pef_board: BridgeSource, end: m.EndReason, fault: bool
) -> None:
    [obs] = pef_board._blow(blow_curve(end=end, sensor_fault=fault))
    assert obs.quality == {QualityFlag.QUESTIONABLE}


def test_unusable_blow_is_kept_as_a_reject(pef_board: BridgeSource, rejects: list[Reject]) -> None:
    assert pef_board._blow(blow_curve(rate=400)) == []
    [(device_id, source, reason, raw)] = rejects
    assert (device_id, source, raw) == ("b1", "serial:bridge", None)
    assert reason.startswith("PEF blow: blow 4: sample rate 400 Hz")
    assert pef_board.stats.rejects == 1


def test_simulated_blow_is_flagged(registry: DeviceRegistry, rejects: list[Reject]) -> None:
    src = bridge_source(registry, rejects, "serial.pef-board", simulated=True)
    [obs] = src._blow(blow_curve())
    assert obs.quality == {QualityFlag.SIMULATED}


def hello(kind: m.BoardKind) -> BoardHello:
    return BoardHello(
        board_id="DSP-00001",
        kind=kind,
        firmware="fw-2.1",
        protocol_version=1,
        rtc_offset_ms=250,
        capabilities=Capabilities(
            has_rtc=True, has_battery=True, sample_rate_hz=None, max_blow_samples=None
        ),
        accepted=kind is m.BoardKind.DISPENSER,
    )


def test_board_data_is_mapped_only_after_its_hello(
    dispenser: BridgeSource, rejects: list[Reject]
) -> None:
    assert dispenser._handle(dose()) == []
    assert [r[2] for r in rejects] == ["board data before its identity was known"]
    assert dispenser._handle(hello(m.BoardKind.DISPENSER)) == []
    identity = dispenser.device.identity
    assert (identity.manufacturer, identity.serial, identity.firmware) == (
        "remon",
        "DSP-00001",
        "fw-2.1",
    )
    [ev] = dispenser._handle(dose())
    assert isinstance(ev, DeviceEvent)
    assert ev.record_key == "dose_taken:20261122T0800-0001"


def test_hello_from_another_kind_of_board_stops_the_session(
    dispenser: BridgeSource, rejects: list[Reject]
) -> None:
    with pytest.raises(WrongDevice, match="DSP-00001"):
        dispenser._handle(hello(m.BoardKind.PEF_SENSOR))
    assert "configured for serial.dispenser" in rejects[0][2]
