"""Virtual glucose meter: the device side of RACP (PROTOCOLS.md "Glucose service 0x1808").

Sans-I/O twin of :mod:`device_profiles.gatt.glucose_download`: :meth:`VirtualGlucoseMeter.handle`
takes one RACP write and returns, in order, every notification (0x2A18 / 0x2A34) and indication
(0x2A52) a real meter would send for it. A report op is answered all at once; a test link that
wants to interleave an abort drops what it has not delivered yet.

Supported: count and report with operator "all" or "≥ N" (filter 0x01), abort (always answers
success), "no records found"; other operators answer "operator not supported", delete answers
"op code not supported". Faults (:class:`MeterFaults`) apply to every report op:
``disconnect_after`` stops after N records and appends a :class:`Disconnected` marker (no final
response); ``malformed_every`` inserts an extra undecodable measurement notification before
every k-th record (the record itself is still sent); ``drop_context_for`` withholds the context
of those sequence numbers although the measurement announces it; ``report_error`` answers
the report op with that response code instead of sending records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from device_profiles.gatt.glucose import (
    ConcentrationUnit,
    GlucoseContext,
    GlucoseMeasurement,
    GlucoseType,
    RacpMessage,
    RacpOpCode,
    RacpOperator,
    RacpResponseCode,
    SampleLocation,
    decode_racp,
    encode_glucose_context,
    encode_glucose_measurement,
    encode_racp,
)
from device_profiles.gatt.ieee11073 import DateTime, DecodeError, Number

__all__ = [
    "Disconnected",
    "MeterFaults",
    "MeterOutput",
    "Record",
    "VirtualGlucoseMeter",
    "make_records",
]

MEASUREMENT_UUID: Final = 0x2A18
CONTEXT_UUID: Final = 0x2A34
RACP_UUID: Final = 0x2A52
#: Flags say "time offset present" but the value ends inside the base time (DecodeError at 3).
GARBAGE_MEASUREMENT: Final = b"\x01\x07\x00\xe8"

Record = tuple[GlucoseMeasurement, GlucoseContext | None]


@dataclass(frozen=True, slots=True, kw_only=True)
class Disconnected:
    """Marker: the meter dropped the link here."""


MeterOutput = tuple[int, bytes] | Disconnected


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterFaults:
    disconnect_after: int | None = None
    malformed_every: int | None = None
    drop_context_for: frozenset[int] | set[int] = field(default_factory=frozenset)
    report_error: RacpResponseCode | None = None

    def __post_init__(self) -> None:
        if self.disconnect_after is not None and self.disconnect_after < 0:
            raise ValueError("disconnect_after must be >= 0")
        if self.malformed_every is not None and self.malformed_every < 1:
            raise ValueError("malformed_every must be >= 1")


def _response(request: RacpOpCode, code: RacpResponseCode) -> MeterOutput:
    msg = RacpMessage(op_code=RacpOpCode.RESPONSE_CODE, request_op_code=request, response_code=code)
    return (RACP_UUID, encode_racp(msg))


class VirtualGlucoseMeter:
    def __init__(self, records: list[Record], *, faults: MeterFaults | None = None) -> None:
        seqs = [m.sequence_number for m, _ in records]
        if len(set(seqs)) != len(seqs):
            raise ValueError("duplicate sequence numbers")
        for m, ctx in records:
            if ctx is not None and ctx.sequence_number != m.sequence_number:
                raise ValueError(f"context of record {m.sequence_number} has another sequence")
        self.records: list[Record] = sorted(records, key=lambda r: r[0].sequence_number)
        self.faults = faults if faults is not None else MeterFaults()
        self.writes: list[RacpMessage] = []

    def _select(self, msg: RacpMessage) -> list[Record] | None:
        if msg.operator is RacpOperator.ALL_RECORDS:
            return list(self.records)
        if msg.operator is RacpOperator.GREATER_THAN_OR_EQUAL_TO:
            low = msg.filter_values[0]
            return [r for r in self.records if r[0].sequence_number >= low]
        return None

    def handle(self, cmd_uuid: int, data: bytes) -> list[MeterOutput]:
        if cmd_uuid != RACP_UUID:
            raise ValueError(f"only the RACP {RACP_UUID:#06x} is writable, not {cmd_uuid:#06x}")
        try:
            msg = decode_racp(data)
        except DecodeError:
            try:
                op = RacpOpCode(data[0]) if data else None
            except ValueError:
                op = None
            if op is None:
                return [(RACP_UUID, bytes([RacpOpCode.RESPONSE_CODE, 0, *data[:1], 2]))]
            return [_response(op, RacpResponseCode.INVALID_OPERATOR)]
        self.writes.append(msg)
        op = msg.op_code
        if op is RacpOpCode.ABORT_OPERATION:
            return [_response(op, RacpResponseCode.SUCCESS)]
        if op is RacpOpCode.REPORT_NUMBER_OF_STORED_RECORDS:
            selected = self._select(msg)
            if selected is None:
                return [_response(op, RacpResponseCode.OPERATOR_NOT_SUPPORTED)]
            count = RacpMessage(
                op_code=RacpOpCode.NUMBER_OF_STORED_RECORDS_RESPONSE,
                number_of_records=len(selected),
            )
            return [(RACP_UUID, encode_racp(count))]
        if op is RacpOpCode.REPORT_STORED_RECORDS:
            return self._report(msg)
        return [_response(op, RacpResponseCode.OP_CODE_NOT_SUPPORTED)]

    def _report(self, msg: RacpMessage) -> list[MeterOutput]:
        op = RacpOpCode.REPORT_STORED_RECORDS
        f = self.faults
        if f.report_error is not None:
            return [_response(op, f.report_error)]
        selected = self._select(msg)
        if selected is None:
            return [_response(op, RacpResponseCode.OPERATOR_NOT_SUPPORTED)]
        if not selected:
            return [_response(op, RacpResponseCode.NO_RECORDS_FOUND)]
        out: list[MeterOutput] = []
        for i, (m, ctx) in enumerate(selected, start=1):
            if f.disconnect_after is not None and i > f.disconnect_after:
                out.append(Disconnected())
                return out
            if f.malformed_every is not None and i % f.malformed_every == 0:
                out.append((MEASUREMENT_UUID, GARBAGE_MEASUREMENT))
            out.append((MEASUREMENT_UUID, encode_glucose_measurement(m)))
            if ctx is not None and m.sequence_number not in f.drop_context_for:
                out.append((CONTEXT_UUID, encode_glucose_context(ctx)))
        out.append(_response(op, RacpResponseCode.SUCCESS))
        return out


_T0: Final = datetime(2026, 1, 1, 7, 0)  # noqa: DTZ001 - device local time, no zone on the wire


def make_records(
    n: int,
    start_seq: int = 1,
    *,
    context_every: int | None = 3,
    control_every: int | None = None,
) -> list[Record]:
    """``n`` deterministic capillary/finger records, mg/dL carried as kg/L x 10^-5.

    Every ``context_every``-th record carries a context (meal, tester/health); every
    ``control_every``-th is a control-solution test.
    """
    if n < 0 or start_seq < 0 or start_seq + n - 1 > 0xFFFF:
        raise ValueError("sequence numbers must fit in uint16")
    out: list[Record] = []
    for i in range(n):
        seq = start_seq + i
        control = control_every is not None and (i + 1) % control_every == 0
        has_ctx = context_every is not None and (i + 1) % context_every == 0
        m = GlucoseMeasurement(
            sequence_number=seq,
            base_time=DateTime.of(_T0 + timedelta(minutes=37 * i)),
            time_offset=0,
            concentration=Number(70 + (i * 37) % 230, -5),
            unit=ConcentrationUnit.KG_PER_L,
            glucose_type=(
                GlucoseType.CONTROL_SOLUTION if control else GlucoseType.CAPILLARY_WHOLE_BLOOD
            ),
            sample_location=(SampleLocation.CONTROL_SOLUTION if control else SampleLocation.FINGER),
            context_follows=has_ctx,
        )
        ctx = (
            GlucoseContext(sequence_number=seq, meal=1 + i % 5, tester=1, health=i % 5 + 1)
            if has_ctx
            else None
        )
        out.append((m, ctx))
    return out
