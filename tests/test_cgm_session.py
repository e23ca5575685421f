"""CGM session procedure paired with the virtual CGM sensor over an in-memory link."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_profiles.gatt.cgm import DstOffset, SocpOpCode, SocpResponseCode
from device_profiles.gatt.cgm_session import (
    FEATURE_UUID,
    MEASUREMENT_UUID,
    SOCP_UUID,
    CancelTimer,
    CgmReading,
    CgmSession,
    EnableIndications,
    EnableNotifications,
    FailureKind,
    LocalProtocolError,
    MalformedData,
    Output,
    PeerProtocolViolation,
    ReadCharacteristic,
    SessionFailed,
    SessionInfo,
    SocpResult,
    StartTimer,
    StreamStalled,
    ViolationKind,
    WriteControlPoint,
)
from device_profiles.gatt.sim_cgm_sensor import CgmFaults, VirtualCgmSensor

T = TypeVar("T")
CET = timezone(timedelta(hours=1))
CEST = timezone(timedelta(hours=2))
HUB_T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


@dataclass
class Link:
    sensor: VirtualCgmSensor
    proc: CgmSession
    now: datetime = HUB_T0
    events: list[Output] = field(default_factory=list)
    commands: list[Output] = field(default_factory=list)
    inbound: deque[tuple[int, bytes]] = field(default_factory=deque)

    def apply(self, outputs: list[Output]) -> None:
        for o in outputs:
            if isinstance(o, ReadCharacteristic):
                self.commands.append(o)
                self.inbound.append((o.uuid, self.sensor.read(o.uuid)))
            elif isinstance(o, WriteControlPoint):
                self.commands.append(o)
                self.inbound.extend(self.sensor.write(o.uuid, o.data))
            elif isinstance(o, EnableNotifications | EnableIndications | StartTimer | CancelTimer):
                self.commands.append(o)
            else:
                self.events.append(o)

    def drain(self) -> None:
        while self.inbound and not self.proc.finished:
            self.apply(self.proc.receive(*self.inbound.popleft(), now=self.now))

    def start(self) -> Link:
        self.apply(self.proc.start(now=self.now))
        self.drain()
        return self

    def tick(self, minutes: int) -> None:
        self.now += timedelta(minutes=minutes)
        self.inbound.extend(self.sensor.tick(minutes))
        self.drain()


def link(sensor: VirtualCgmSensor, **kw: float) -> Link:
    return Link(sensor, CgmSession(**kw)).start()


def readings(events: list[Output]) -> list[CgmReading]:
    return [e for e in events if isinstance(e, CgmReading)]


def of_type(events: list[Output], cls: type[T]) -> list[T]:
    return [e for e in events if isinstance(e, cls)]


def sensor(**kw: object) -> VirtualCgmSensor:
    args: dict[str, object] = {
        "start": datetime(2026, 3, 2, 9, 0, tzinfo=CET),  # = HUB_T0
        "crc": True,
        "values_mg_dl": [100.0, 110.5, 120.0],
    }
    args.update(kw)
    return VirtualCgmSensor(**args)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- happy paths


def test_reads_parameters_then_subscribes() -> None:
    lk = link(sensor())
    reads = [c.uuid for c in lk.commands if isinstance(c, ReadCharacteristic)]
    assert reads == [0x2AA8, 0x2AA9, 0x2AAA, 0x2AAB]
    assert EnableNotifications(uuid=MEASUREMENT_UUID) in lk.commands
    assert EnableIndications(uuid=SOCP_UUID) in lk.commands
    (info,) = of_type(lk.events, SessionInfo)
    assert info.feature.e2e_crc_supported
    assert lk.proc.e2e_crc
    assert info.start_time_utc == HUB_T0
    assert not info.start_time_estimated
    assert info.run_time_hours == 336
    assert info.clock_offset_s == 0


def test_stream_with_crc_anchored_to_session_start() -> None:
    lk = link(sensor())
    lk.tick(16)
    rs = readings(lk.events)
    assert [r.time_offset_min for r in rs] == [5, 10, 15]
    assert [r.absolute_time_utc for r in rs] == [HUB_T0 + timedelta(minutes=m) for m in (5, 10, 15)]
    assert [r.measurement.glucose_mg_dl.value for r in rs] == [100.0, 110.5, 120.0]
    assert all(r.absolute_time_utc.utcoffset() == timedelta(0) for r in rs)
    assert not of_type(lk.events, MalformedData)


def test_zone_and_dst_honoured() -> None:
    # 10:00 local CEST = 09:00 +01:00 zone + 1 h DST = 08:00 UTC
    s = sensor(start=datetime(2026, 7, 1, 10, 0, tzinfo=CEST), dst=DstOffset.DAYLIGHT_TIME)
    lk = Link(s, CgmSession(), now=datetime(2026, 7, 1, 8, 0, tzinfo=UTC)).start()
    lk.tick(5)
    (r,) = readings(lk.events)
    assert r.absolute_time_utc == datetime(2026, 7, 1, 8, 5, tzinfo=UTC)
    assert s.time_zone == 4


def test_no_crc_sensor() -> None:
    s = sensor(crc=False)
    assert s.read(FEATURE_UUID)[-2:] == b"\xff\xff"
    lk = link(s)
    assert not lk.proc.e2e_crc
    lk.tick(10)
    assert [r.time_offset_min for r in readings(lk.events)] == [5, 10]


def test_multi_record_notifications() -> None:
    s = sensor(records_per_notification=3)
    lk = link(s)
    notes = s.tick(30)
    assert len(notes) == 2
    lk.now += timedelta(minutes=30)
    lk.inbound.extend(notes)
    lk.drain()
    assert [r.time_offset_min for r in readings(lk.events)] == [5, 10, 15, 20, 25, 30]


# --------------------------------------------------------------------------- faults


def test_crc_error_reported_and_skipped() -> None:
    lk = link(sensor(records_per_notification=2, faults=CgmFaults(crc_error_on=frozenset({2}))))
    lk.tick(20)
    assert [r.time_offset_min for r in readings(lk.events)] == [5, 15, 20]
    (bad,) = of_type(lk.events, MalformedData)
    assert bad.uuid == MEASUREMENT_UUID
    assert "E2E-CRC" in bad.detail
    assert bad.offset > 8  # inside the second record of the notification


def test_malformed_notification_stream_continues() -> None:
    lk = link(sensor(faults=CgmFaults(malformed_notifications=frozenset({1}))))
    lk.tick(10)
    assert len(of_type(lk.events, MalformedData)) == 1
    assert [r.time_offset_min for r in readings(lk.events)] == [5, 10]


def test_duplicates_reported_once() -> None:
    lk = link(sensor(faults=CgmFaults(duplicate_every=1)))
    lk.tick(15)
    assert [r.time_offset_min for r in readings(lk.events)] == [5, 10, 15]
    assert lk.proc.duplicates == 3


def test_time_offset_backwards_is_violation() -> None:
    s = sensor(records_per_notification=2)
    lk = link(s)
    (_, data), *_ = s.tick(10)
    first, second = data[: data[0]], data[data[0] :]
    lk.apply(lk.proc.receive(MEASUREMENT_UUID, second + first, now=lk.now))
    (v,) = of_type(lk.events, PeerProtocolViolation)
    assert v.kind is ViolationKind.TIME_OFFSET_BACKWARDS
    assert [r.time_offset_min for r in readings(lk.events)] == [10]


def test_wrong_clock_reported_as_offset() -> None:
    lk = link(sensor(faults=CgmFaults(clock_shift=timedelta(hours=2))))
    (info,) = of_type(lk.events, SessionInfo)
    assert info.clock_offset_s == 7200
    lk.tick(5)
    assert readings(lk.events)[0].clock_offset_s == 7200


def test_unknown_start_time_falls_back_and_flags() -> None:
    s = sensor(faults=CgmFaults(start_time_unknown=True))
    s.tick(20)  # sensor has run 20 min before we connect
    lk = Link(s, CgmSession(), now=HUB_T0 + timedelta(minutes=20)).start()
    (info,) = of_type(lk.events, SessionInfo)
    assert info.start_time_estimated
    assert info.start_time_utc == HUB_T0
    assert info.clock_offset_s is None
    lk.tick(5)
    (r,) = readings(lk.events)[-1:]
    assert r.start_time_estimated
    assert r.absolute_time_utc == HUB_T0 + timedelta(minutes=25)


def test_slow_sensor_backlog_and_stall() -> None:
    s = sensor(records_per_notification=4, faults=CgmFaults(silent_until_min=20))
    lk = link(s, silence_timeout_s=600.0)
    lk.tick(10)
    assert not readings(lk.events)
    lk.apply(lk.proc.timeout(lk.now))
    (stall,) = of_type(lk.events, StreamStalled)
    assert stall.silent_s == 600
    lk.tick(10)
    assert [r.time_offset_min for r in readings(lk.events)] == [5, 10, 15, 20]


# --------------------------------------------------------------------------- SOCP


def test_set_interval_and_stop_start_session() -> None:
    s = sensor()
    lk = link(s)
    lk.apply(lk.proc.set_interval(2, now=lk.now))
    lk.drain()
    lk.tick(4)
    assert [r.time_offset_min for r in readings(lk.events)] == [2, 4]
    lk.apply(lk.proc.stop_session(now=lk.now))
    lk.apply(lk.proc.start_session(now=lk.now))  # queued behind the stop
    lk.drain()
    results = of_type(lk.events, SocpResult)
    assert [(r.request, r.response_code) for r in results] == [
        (SocpOpCode.SET_CGM_COMMUNICATION_INTERVAL, SocpResponseCode.SUCCESS),
        (SocpOpCode.STOP_THE_SESSION, SocpResponseCode.SUCCESS),
        (SocpOpCode.START_THE_SESSION, SocpResponseCode.SUCCESS),
    ]
    assert all(r.success for r in results)
    assert results[0].interval_minutes == 2
    assert lk.proc.session_start_utc == HUB_T0 + timedelta(minutes=4)
    lk.tick(2)
    last = readings(lk.events)[-1]
    assert last.time_offset_min == 2  # offsets restart: not a violation
    assert last.absolute_time_utc == HUB_T0 + timedelta(minutes=6)
    assert not of_type(lk.events, PeerProtocolViolation)


def test_socp_refusal_and_timeout() -> None:
    lk = link(sensor())
    lk.apply(lk.proc.set_interval(0, now=lk.now))
    lk.apply(lk.proc.start_session(now=lk.now))  # already running
    lk.drain()
    codes = [r.response_code for r in of_type(lk.events, SocpResult)]
    assert codes == [
        SocpResponseCode.PARAMETER_OUT_OF_RANGE,
        SocpResponseCode.PROCEDURE_NOT_COMPLETED,
    ]
    out = lk.proc.stop_session(now=lk.now)  # never delivered: the sensor stays silent
    assert isinstance(out[0], WriteControlPoint)
    out = lk.proc.timeout(lk.now + timedelta(seconds=31))
    assert SocpResult(request=SocpOpCode.STOP_THE_SESSION, response_code=None) in out
    assert not lk.proc.finished


def test_unexpected_socp_response() -> None:
    lk = link(sensor())
    out = lk.proc.receive(SOCP_UUID, bytes([28, 26, 1]) + b"\x00\x00", now=lk.now)
    assert [type(o) for o in out] == [MalformedData]  # CRC wrong
    msg = bytes([28, 26, 1])
    from device_profiles.gatt.ieee11073 import crc16_mcrf4xx

    out = lk.proc.receive(SOCP_UUID, msg + crc16_mcrf4xx(msg).to_bytes(2, "little"), now=lk.now)
    assert isinstance(out[0], PeerProtocolViolation)
    assert out[0].kind is ViolationKind.UNEXPECTED_SOCP


def test_read_timeout_and_misuse() -> None:
    proc = CgmSession()
    with pytest.raises(LocalProtocolError):
        proc.receive(FEATURE_UUID, b"", now=HUB_T0)
    proc.start(now=HUB_T0)
    with pytest.raises(LocalProtocolError):
        proc.start(now=HUB_T0)
    with pytest.raises(LocalProtocolError):
        proc.receive(FEATURE_UUID, b"", now=datetime(2026, 1, 1))
    assert proc.timeout(HUB_T0 + timedelta(seconds=10)) == [StartTimer(seconds=20.0)]
    out = proc.timeout(HUB_T0 + timedelta(seconds=30))
    assert out[-1] == SessionFailed(reason="no answer to read 0x2aa8", kind=FailureKind.TIMEOUT)
    assert proc.finished


def test_malformed_feature_is_fatal() -> None:
    proc = CgmSession()
    proc.start(now=HUB_T0)
    out = proc.receive(FEATURE_UUID, b"\x00\x10\x00\x59\x00\x00", now=HUB_T0)
    assert isinstance(out[0], MalformedData)
    assert out[-1] == SessionFailed(
        reason="undecodable CGM Feature", kind=FailureKind.MALFORMED_FEATURE
    )


def test_disconnect() -> None:
    lk = link(sensor())
    out = lk.proc.disconnected()
    assert out[-1] == SessionFailed(reason="link lost", kind=FailureKind.DISCONNECTED)
    assert lk.proc.disconnected() == []


# --------------------------------------------------------------------------- property


@given(
    crc=st.booleans(),
    per_note=st.integers(1, 5),
    ticks=st.lists(st.integers(0, 25), max_size=12),
    crc_errors=st.frozensets(st.integers(1, 40), max_size=5),
    garbage=st.frozensets(st.integers(1, 20), max_size=4),
    dup=st.one_of(st.none(), st.integers(1, 4)),
    silent=st.integers(0, 60),
    unknown=st.booleans(),
    shift=st.integers(-120, 120),
)
def test_random_batches_and_faults(
    crc: bool,
    per_note: int,
    ticks: list[int],
    crc_errors: frozenset[int],
    garbage: frozenset[int],
    dup: int | None,
    silent: int,
    unknown: bool,
    shift: int,
) -> None:
    faults = CgmFaults(
        crc_error_on=crc_errors,
        malformed_notifications=garbage,
        duplicate_every=dup,
        silent_until_min=silent,
        start_time_unknown=unknown,
        clock_shift=timedelta(minutes=shift),
    )
    s = sensor(crc=crc, records_per_notification=per_note, faults=faults)
    lk = link(s, silence_timeout_s=300.0)
    for t in ticks:
        lk.tick(t)
        lk.apply(lk.proc.timeout(lk.now))
    rs = readings(lk.events)
    offsets = [r.time_offset_min for r in rs]
    assert offsets == sorted(set(offsets))  # never twice, never backwards
    assert not of_type(lk.events, PeerProtocolViolation)
    assert not of_type(lk.events, SessionFailed)
    if crc:
        assert len(rs) + len(of_type(lk.events, MalformedData)) >= s.records_sent - len(
            [g for g in garbage if g <= s.notifications_sent]
        )
    start = rs[0].absolute_time_utc - timedelta(minutes=rs[0].time_offset_min) if rs else None
    assert all(r.absolute_time_utc - timedelta(minutes=r.time_offset_min) == start for r in rs)
