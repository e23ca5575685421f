"""RACP glucose download procedure paired with the virtual meter over an in-memory link."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_profiles.gatt.glucose import (
    GlucoseContext,
    GlucoseMeasurement,
    RacpMessage,
    RacpOpCode,
    RacpResponseCode,
    encode_glucose_context,
    encode_glucose_measurement,
    encode_racp,
    racp_report_all,
)
from device_profiles.gatt.glucose_download import (
    CONTEXT_UUID,
    MEASUREMENT_UUID,
    RACP_UUID,
    CancelTimer,
    ControlSolutionSkipped,
    DownloadComplete,
    DownloadFailed,
    EnableIndications,
    EnableNotifications,
    FailureKind,
    GlucoseDownload,
    LocalProtocolError,
    MalformedData,
    Output,
    PeerProtocolViolation,
    RecordReceived,
    RecordsAvailable,
    StartTimer,
    ViolationKind,
    WriteControlPoint,
)
from device_profiles.gatt.sim_glucose_meter import (
    Disconnected,
    MeterFaults,
    Record,
    VirtualGlucoseMeter,
    make_records,
)

# --------------------------------------------------------------------------- link helper


@dataclass
class Link:
    """Carries commands to the meter and its notifications back, one value at a time.

    ``cut_after``: the link drops after delivering that many notifications in this session.
    """

    meter: VirtualGlucoseMeter
    proc: GlucoseDownload
    cut_after: int | None = None
    now: float = 0.0
    events: list[Output] = field(default_factory=list)
    commands: list[Output] = field(default_factory=list)
    inbound: deque[tuple[int, bytes] | Disconnected] = field(default_factory=deque)
    delivered: int = 0

    def apply(self, outputs: list[Output]) -> None:
        for o in outputs:
            if isinstance(o, WriteControlPoint):
                self.commands.append(o)
                if o.data == encode_racp(RacpMessage(op_code=RacpOpCode.ABORT_OPERATION)):
                    self.inbound.clear()  # the meter stops the running report
                self.inbound.extend(self.meter.handle(o.uuid, o.data))
            elif isinstance(o, EnableNotifications | EnableIndications | StartTimer | CancelTimer):
                self.commands.append(o)
            else:
                self.events.append(o)

    def start(self) -> Link:
        self.apply(self.proc.start(now=self.now))
        return self

    def step(self) -> bool:
        """Deliver one inbound value; False when nothing is left or the link is gone."""
        if not self.inbound or self.proc.finished:
            return False
        item = self.inbound.popleft()
        if isinstance(item, Disconnected) or (
            self.cut_after is not None and self.delivered >= self.cut_after
        ):
            self.apply(self.proc.disconnected())
            self.inbound.clear()
            return False
        self.delivered += 1
        self.now += 0.01
        self.apply(self.proc.receive(*item, now=self.now))
        return True

    def run(self) -> list[Output]:
        while self.step():
            pass
        if not self.proc.finished and self.cut_after is not None:
            self.apply(self.proc.disconnected())
        return self.events


def session(
    meter: VirtualGlucoseMeter, last: int | None, *, cut_after: int | None = None
) -> tuple[GlucoseDownload, list[Output]]:
    proc = GlucoseDownload(last)
    events = Link(meter, proc, cut_after=cut_after).start().run()
    return proc, events


def records_of(events: list[Output]) -> list[RecordReceived]:
    return [e for e in events if isinstance(e, RecordReceived)]


def terminal(events: list[Output]) -> DownloadComplete | DownloadFailed:
    ends = [e for e in events if isinstance(e, DownloadComplete | DownloadFailed)]
    assert len(ends) == 1, ends
    return ends[0]


def as_pairs(events: list[Output]) -> list[Record]:
    return [(r.measurement, r.context) for r in records_of(events)]


# --------------------------------------------------------------------------- happy paths


def test_start_subscribes_then_counts_all() -> None:
    out = GlucoseDownload(None).start()
    assert out == [
        EnableNotifications(uuid=MEASUREMENT_UUID),
        EnableNotifications(uuid=CONTEXT_UUID),
        EnableIndications(uuid=RACP_UUID),
        WriteControlPoint(data=bytes.fromhex("0401")),
        StartTimer(seconds=30.0),
    ]


def test_incremental_counts_and_reports_from_next_sequence() -> None:
    meter = VirtualGlucoseMeter(make_records(10))
    proc, events = session(meter, 6)
    assert [encode_racp(m) for m in meter.writes] == [
        bytes.fromhex("0403010700"),
        bytes.fromhex("0103010700"),
    ]
    assert events[0] == RecordsAvailable(count=4)
    assert [r.measurement.sequence_number for r in records_of(events)] == [7, 8, 9, 10]
    assert terminal(events) == DownloadComplete(received=4, expected=4)
    assert proc.last_sequence == 10


def test_500_records_in_one_go_with_contexts_paired() -> None:
    stored = make_records(500)
    proc, events = session(VirtualGlucoseMeter(stored), None)
    assert events[0] == RecordsAvailable(count=500)
    assert as_pairs(events) == stored
    assert sum(1 for _, c in as_pairs(events) if c is not None) == 166
    assert terminal(events) == DownloadComplete(received=500, expected=500)
    assert proc.last_sequence == 500
    assert proc.finished


def test_500_records_cut_twice_and_resumed() -> None:
    stored = make_records(500)
    meter = VirtualGlucoseMeter(stored, faults=MeterFaults(disconnect_after=200))
    got: list[Record] = []
    last: int | None = None
    kinds = []
    for _ in range(3):
        proc, events = session(meter, last)
        got += as_pairs(events)
        kinds.append(type(terminal(events)))
        last = proc.last_sequence
    assert kinds == [DownloadFailed, DownloadFailed, DownloadComplete]
    assert got == stored


def test_no_records() -> None:
    proc, events = session(VirtualGlucoseMeter([]), None)
    assert events == [RecordsAvailable(count=0), DownloadComplete(received=0, expected=0)]
    assert proc.last_sequence is None


def test_no_newer_records_keeps_last_sequence() -> None:
    proc, events = session(VirtualGlucoseMeter(make_records(5)), 5)
    assert terminal(events) == DownloadComplete(received=0, expected=0)
    assert proc.last_sequence == 5


def test_missing_context_emitted_without_it_on_next_measurement_and_at_end() -> None:
    stored = make_records(6, context_every=3)  # contexts for 3 and 6
    meter = VirtualGlucoseMeter(stored, faults=MeterFaults(drop_context_for={3, 6}))
    _, events = session(meter, None)
    assert as_pairs(events) == [(m, None) for m, _ in stored]
    assert terminal(events) == DownloadComplete(received=6, expected=6)


def test_malformed_notifications_reported_and_skipped() -> None:
    stored = make_records(10)
    meter = VirtualGlucoseMeter(stored, faults=MeterFaults(malformed_every=4))
    proc, events = session(meter, None)
    bad = [e for e in events if isinstance(e, MalformedData)]
    assert len(bad) == 2
    assert all(b.uuid == MEASUREMENT_UUID and b.offset == 3 for b in bad)
    assert as_pairs(events) == stored
    assert terminal(events) == DownloadComplete(received=10, expected=10, malformed=2)
    assert proc.malformed_count == 2


def test_malformed_context_and_racp_do_not_crash() -> None:
    proc = GlucoseDownload(None)
    proc.start()
    out = proc.receive(RACP_UUID, b"\x05", now=1)
    assert isinstance(out[0], MalformedData)
    assert out[0].uuid == RACP_UUID
    proc.receive(RACP_UUID, bytes.fromhex("05000100"), now=1)
    m, c = make_records(3)[2]
    assert c is not None
    proc.receive(MEASUREMENT_UUID, encode_glucose_measurement(m), now=2)
    bad = proc.receive(CONTEXT_UUID, b"\xff\x03", now=2)
    assert len(bad) == 1
    assert isinstance(bad[0], MalformedData)
    assert (bad[0].uuid, bad[0].offset) == (CONTEXT_UUID, 1)
    done = proc.receive(RACP_UUID, bytes.fromhex("06000101"), now=3)
    assert done[0] == RecordReceived(measurement=m, context=None)


def test_control_solution_is_skipped_never_a_record() -> None:
    stored = make_records(9, control_every=3)  # 3, 6, 9 are control (and carry contexts)
    proc, events = session(VirtualGlucoseMeter(stored), None)
    skipped = [e.sequence for e in events if isinstance(e, ControlSolutionSkipped)]
    assert skipped == [3, 6, 9]
    assert all(not r.measurement.is_control_solution for r in records_of(events))
    assert [r.measurement.sequence_number for r in records_of(events)] == [1, 2, 4, 5, 7, 8]
    assert not [e for e in events if isinstance(e, PeerProtocolViolation)]
    assert terminal(events) == DownloadComplete(received=6, expected=9, control_solution=3)
    assert proc.last_sequence == 9


# --------------------------------------------------------------------------- failures


def test_abort_mid_download() -> None:
    meter = VirtualGlucoseMeter(make_records(50))
    proc = GlucoseDownload(None)
    link = Link(meter, proc).start()
    for _ in range(11):  # count response + 10 measurements (with contexts)
        link.step()
    link.apply(proc.abort())
    link.run()
    end = terminal(link.events)
    assert isinstance(end, DownloadFailed)
    assert end.kind is FailureKind.ABORTED
    assert end.response_code is RacpResponseCode.SUCCESS
    n = len(records_of(link.events))
    assert 0 < n < 50
    assert proc.last_sequence == n
    with pytest.raises(LocalProtocolError):
        proc.receive(RACP_UUID, bytes.fromhex("06000301"), now=9)


def test_timeout_fails_and_aborts() -> None:
    proc = GlucoseDownload(None, timeout_s=5)
    proc.start(now=0)
    proc.receive(RACP_UUID, bytes.fromhex("05000300"), now=1)
    assert proc.timeout(now=5) == [StartTimer(seconds=1)]
    out = proc.timeout(now=6)
    assert out[1] == WriteControlPoint(data=bytes.fromhex("0300"))
    assert isinstance(out[0], DownloadFailed)
    assert out[0].kind is FailureKind.TIMEOUT
    assert proc.finished
    # late values are swallowed until the abort is confirmed
    m, _ = make_records(1)[0]
    assert proc.receive(MEASUREMENT_UUID, encode_glucose_measurement(m), now=7) == []
    assert proc.receive(RACP_UUID, bytes.fromhex("06000301"), now=7) == [CancelTimer()]
    with pytest.raises(LocalProtocolError):
        proc.receive(RACP_UUID, bytes.fromhex("06000301"), now=8)


def test_timeout_without_any_answer() -> None:
    proc = GlucoseDownload(None, timeout_s=2)
    proc.start()
    out = proc.timeout(now=2)
    assert isinstance(out[0], DownloadFailed)
    assert out[0].kind is FailureKind.TIMEOUT


@pytest.mark.parametrize(
    "code",
    [
        RacpResponseCode.OP_CODE_NOT_SUPPORTED,
        RacpResponseCode.INVALID_OPERATOR,
        RacpResponseCode.OPERATOR_NOT_SUPPORTED,
        RacpResponseCode.INVALID_OPERAND,
        RacpResponseCode.PROCEDURE_NOT_COMPLETED,
        RacpResponseCode.OPERAND_NOT_SUPPORTED,
    ],
)
def test_racp_error_codes_fail_the_download(code: RacpResponseCode) -> None:
    meter = VirtualGlucoseMeter(make_records(3), faults=MeterFaults(report_error=code))
    _, events = session(meter, None)
    end = terminal(events)
    assert isinstance(end, DownloadFailed)
    assert end.kind is FailureKind.RACP_ERROR
    assert end.response_code is code
    assert code.name in end.reason


def test_count_refused() -> None:
    proc = GlucoseDownload(None)
    proc.start()
    out = proc.receive(RACP_UUID, bytes.fromhex("06000404"), now=1)
    assert isinstance(out[-1], DownloadFailed)
    assert out[-1].response_code is RacpResponseCode.OPERATOR_NOT_SUPPORTED


def test_meter_answers_unsupported_operators_and_ops() -> None:
    meter = VirtualGlucoseMeter(make_records(3))
    assert meter.handle(RACP_UUID, bytes.fromhex("0405")) == [
        (RACP_UUID, bytes.fromhex("06000404"))
    ]
    assert meter.handle(RACP_UUID, bytes.fromhex("0206")) == [
        (RACP_UUID, bytes.fromhex("06000202"))
    ]
    assert meter.handle(RACP_UUID, bytes.fromhex("0100")) == [
        (RACP_UUID, bytes.fromhex("06000103"))
    ]
    assert meter.handle(RACP_UUID, bytes.fromhex("0300")) == [
        (RACP_UUID, bytes.fromhex("06000301"))
    ]
    assert meter.handle(RACP_UUID, encode_racp(racp_report_all()))[-1] == (
        RACP_UUID,
        bytes.fromhex("06000101"),
    )


# --------------------------------------------------------------------------- peer violations


def _transferring(last: int | None = None) -> GlucoseDownload:
    proc = GlucoseDownload(last)
    proc.start()
    proc.receive(RACP_UUID, bytes.fromhex("05000500"), now=1)
    return proc


def _m(seq: int, *, ctx: bool = False) -> GlucoseMeasurement:
    m = make_records(1, seq, context_every=None)[0][0]
    return GlucoseMeasurement(
        sequence_number=m.sequence_number,
        base_time=m.base_time,
        time_offset=m.time_offset,
        concentration=m.concentration,
        glucose_type=m.glucose_type,
        sample_location=m.sample_location,
        context_follows=ctx,
    )


def test_records_before_report_request_are_a_violation() -> None:
    proc = GlucoseDownload(None)
    proc.start()
    out = proc.receive(MEASUREMENT_UUID, encode_glucose_measurement(_m(1)), now=1)
    assert len(out) == 1
    assert isinstance(out[0], PeerProtocolViolation)
    assert out[0].kind is ViolationKind.RECORD_BEFORE_REQUEST
    assert proc.last_sequence is None


def test_sequence_going_backwards_is_a_violation_and_dropped() -> None:
    proc = _transferring()
    assert isinstance(
        proc.receive(MEASUREMENT_UUID, encode_glucose_measurement(_m(5)), now=2)[0],
        RecordReceived,
    )
    for seq in (5, 4):
        out = proc.receive(MEASUREMENT_UUID, encode_glucose_measurement(_m(seq)), now=3)
        assert len(out) == 1
        assert isinstance(out[0], PeerProtocolViolation)
        assert out[0].kind is ViolationKind.SEQUENCE_NOT_INCREASING
    assert proc.last_sequence == 5


def test_resumed_session_rejects_already_emitted_sequences() -> None:
    proc = _transferring(last=7)
    out = proc.receive(MEASUREMENT_UUID, encode_glucose_measurement(_m(7)), now=2)
    assert isinstance(out[0], PeerProtocolViolation)


def test_unexpected_racp_and_context_are_violations() -> None:
    proc = _transferring()
    out = proc.receive(RACP_UUID, bytes.fromhex("06000401"), now=2)
    assert isinstance(out[0], PeerProtocolViolation)
    assert out[0].kind is ViolationKind.UNEXPECTED_RACP
    out = proc.receive(RACP_UUID, bytes.fromhex("05000100"), now=2)
    assert isinstance(out[0], PeerProtocolViolation)
    ctx = encode_glucose_context(GlucoseContext(sequence_number=9, meal=1))
    out = proc.receive(CONTEXT_UUID, ctx, now=2)
    assert isinstance(out[0], PeerProtocolViolation)
    assert out[0].kind is ViolationKind.UNEXPECTED_CONTEXT
    assert not proc.finished


def test_pending_context_at_disconnect_is_refetched_complete() -> None:
    stored = make_records(3, context_every=3)
    meter = VirtualGlucoseMeter(stored)
    # count, m1, m2, m3 -> cut before the context of 3
    proc, events = session(meter, None, cut_after=4)
    assert as_pairs(events) == stored[:2]
    assert terminal(events).kind is FailureKind.DISCONNECTED  # type: ignore[union-attr]
    assert proc.last_sequence == 2
    _, events2 = session(meter, proc.last_sequence)
    assert as_pairs(events2) == stored[2:]


def test_first_record_pending_at_disconnect_is_emitted_without_context() -> None:
    stored = make_records(3, context_every=1)
    meter = VirtualGlucoseMeter(stored, faults=MeterFaults(drop_context_for={1}))
    proc, events = session(meter, None, cut_after=2)  # count, m1
    assert as_pairs(events) == [(stored[0][0], None)]
    assert proc.last_sequence == 1
    _, events = session(meter, 1)
    assert as_pairs(events) == stored[1:]


def test_local_misuse_raises() -> None:
    proc = GlucoseDownload(None)
    with pytest.raises(LocalProtocolError):
        proc.receive(RACP_UUID, b"", now=0)
    with pytest.raises(LocalProtocolError):
        proc.abort()
    proc.start()
    with pytest.raises(LocalProtocolError):
        proc.start()
    with pytest.raises(LocalProtocolError):
        proc.receive(0x2A19, b"\x01", now=0)
    with pytest.raises(ValueError, match="last_sequence"):
        GlucoseDownload(0xFFFF)


# --------------------------------------------------------------------------- property


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(min_value=0, max_value=60),
    cuts=st.lists(st.integers(min_value=0, max_value=150), max_size=6),
    malformed_every=st.none() | st.integers(min_value=1, max_value=7),
    disconnect_after=st.none() | st.integers(min_value=1, max_value=25),
    drop=st.sets(st.integers(min_value=1, max_value=60), max_size=10),
    control_every=st.none() | st.integers(min_value=2, max_value=9),
)
def test_resumption_always_ends_with_exactly_the_stored_set(
    n: int,
    cuts: list[int],
    malformed_every: int | None,
    disconnect_after: int | None,
    drop: set[int],
    control_every: int | None,
) -> None:
    stored = make_records(n, context_every=2, control_every=control_every)
    faults = MeterFaults(
        disconnect_after=disconnect_after, malformed_every=malformed_every, drop_context_for=drop
    )
    meter = VirtualGlucoseMeter(stored, faults=faults)
    got: list[Record] = []
    skipped: list[int] = []
    last: int | None = None
    plan = deque(cuts)
    lost_context: set[int] = set()
    for _ in range(len(cuts) + n + 2):
        proc, events = session(meter, last, cut_after=plan.popleft() if plan else None)
        assert not [e for e in events if isinstance(e, PeerProtocolViolation)]
        pairs = as_pairs(events)
        end = terminal(events)
        if pairs and isinstance(end, DownloadFailed) and pairs[-1][1] is None:
            lost_context.add(pairs[-1][0].sequence_number)  # liveness rule, see module doc
        got += pairs
        skipped += [e.sequence for e in events if isinstance(e, ControlSolutionSkipped)]
        last = proc.last_sequence
        if isinstance(terminal(events), DownloadComplete):
            break
    else:
        pytest.fail("never completed")
    want = [
        (m, None if m.sequence_number in drop | lost_context else c)
        for m, c in stored
        if not m.is_control_solution
    ]
    assert got == want
    assert skipped == [m.sequence_number for m, _ in stored if m.is_control_solution]
