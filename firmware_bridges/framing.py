"""Bridge frames: COBS-stuffed, CRC-32-checked, 0x00-delimited (docs/firmware-bridges.md).

On the wire one frame is ``COBS(body ‖ crc32_le(body)) 0x00``::

    body = version u8 (= 1) | msg_type u8 | seq u16 LE | payload (0..1020 bytes)

COBS (Cheshire & Baker, "Consistent Overhead Byte Stuffing", IEEE/ACM ToN 1999) removes every
0x00 from the stuffed bytes, so 0x00 only ever marks the end of a frame and a receiver that
starts mid-stream, or meets line noise, resynchronises at the next 0x00. The CRC is
CRC-32/ISO-HDLC (the zlib/Ethernet CRC: polynomial 0x04C11DB7 reflected, init and xorout
0xFFFFFFFF, check value of ``b"123456789"`` = 0xCBF43926), sent little-endian.

:class:`FrameDecoder` is fed any slice of the byte stream and returns, in stream order, a
:class:`Frame` for every good frame and a :class:`FrameError` (reason, raw bytes, stream offset)
for every bad one. Its buffer is bounded: a run longer than :data:`MAX_STUFFED` without a
delimiter is dropped as one error and the bytes up to the next 0x00 are discarded. Empty runs
(two 0x00 in a row: a board may send one to flush the receiver after boot) are ignored.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from cobs import cobs  # type: ignore[import-untyped]

__all__ = [
    "CRC_SIZE",
    "HEADER_SIZE",
    "MAX_BODY",
    "MAX_PAYLOAD",
    "MAX_STUFFED",
    "PROTOCOL_VERSION",
    "Frame",
    "FrameCounters",
    "FrameDecoder",
    "FrameError",
    "FrameErrorKind",
    "crc32",
    "encode_frame",
]

#: The only protocol version this code speaks; it is the first byte of every body.
PROTOCOL_VERSION: Final = 1
#: version u8, msg_type u8, seq u16 (bytes).
HEADER_SIZE: Final = 4
#: CRC-32 after the body (bytes).
CRC_SIZE: Final = 4
#: Largest body, header included (bytes). Bounds every buffer on both sides of the link.
MAX_BODY: Final = 1024
MAX_PAYLOAD: Final = MAX_BODY - HEADER_SIZE
#: Largest stuffed frame without its delimiter: COBS adds 1 byte per started 254 (bytes).
MAX_STUFFED: Final = MAX_BODY + CRC_SIZE + 1 + (MAX_BODY + CRC_SIZE) // 254
#: How many bytes of an over-long run an error keeps for the dead-letter store.
_RAW_KEPT: Final = MAX_STUFFED

_HEADER: Final = struct.Struct("<BBH")
_CRC: Final = struct.Struct("<I")
_cobs_encode: Final[Callable[[bytes], bytes]] = cobs.encode
_cobs_decode: Final[Callable[[bytes], bytes]] = cobs.decode
_CobsError: Final[type[Exception]] = cobs.DecodeError


def crc32(data: bytes) -> int:
    """CRC-32/ISO-HDLC of ``data`` (``crc32(b"123456789") == 0xCBF43926``)."""
    return zlib.crc32(data) & 0xFFFFFFFF


@dataclass(frozen=True, slots=True, kw_only=True)
class Frame:
    version: int
    msg_type: int
    seq: int
    payload: bytes

    @property
    def raw(self) -> bytes:
        """The frame as it came off the wire, without its delimiter (COBS and CRC are
        deterministic, so re-encoding gives the received bytes): kept with problems."""
        body = _HEADER.pack(self.version, self.msg_type, self.seq) + self.payload
        stuffed: bytes = _cobs_encode(body + _CRC.pack(crc32(body)))
        return stuffed


class FrameErrorKind(StrEnum):
    COBS = "cobs"  # the run is not valid COBS (line noise, a frame cut short)
    CRC = "crc"
    TOO_SHORT = "too_short"  # fewer bytes than header + CRC
    VERSION = "version"  # CRC good, but a protocol version we do not speak
    OVERSIZE = "oversize"  # no delimiter within MAX_STUFFED bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class FrameError:
    kind: FrameErrorKind
    reason: str
    raw: bytes  # the stuffed bytes of the bad run (bounded), for a dead-letter store
    offset: int  # stream offset of the run's first byte (bytes fed since the decoder was made)


@dataclass(slots=True)
class FrameCounters:
    frames_ok: int = 0
    crc_errors: int = 0
    cobs_errors: int = 0
    short_frames: int = 0
    version_errors: int = 0
    oversize: int = 0
    junk_bytes: int = 0  # bytes (delimiters excluded) that did not become a good frame


def encode_frame(msg_type: int, seq: int, payload: bytes) -> bytes:
    """One frame, delimiter included. ``seq`` is taken modulo 2**16 (it wraps by design)."""
    if not 0 <= msg_type <= 0xFF:
        raise ValueError(f"message type {msg_type} is outside 0..255")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    frame = Frame(version=PROTOCOL_VERSION, msg_type=msg_type, seq=seq & 0xFFFF, payload=payload)
    return frame.raw + b"\x00"


class FrameDecoder:
    """Bytes in, frames and framing errors out; bounded, never raises on input."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._start = 0  # stream offset of _buf[0]
        self._pos = 0  # stream offset of the next byte fed
        self._discarding = False
        self.counters = FrameCounters()

    def feed(self, data: bytes) -> list[Frame | FrameError]:
        out: list[Frame | FrameError] = []
        start = 0
        while True:
            end = data.find(0, start)
            self._append(data[start : len(data) if end < 0 else end], out)
            if end < 0:
                return out
            self._end_run(out)
            self._pos += 1
            start = end + 1

    def _append(self, part: bytes, out: list[Frame | FrameError]) -> None:
        if not self._buf:
            self._start = self._pos
        self._pos += len(part)
        if self._discarding:
            self.counters.junk_bytes += len(part)
            return
        self._buf += part
        if len(self._buf) > MAX_STUFFED:
            self.counters.oversize += 1
            self.counters.junk_bytes += len(self._buf)
            out.append(
                FrameError(
                    kind=FrameErrorKind.OVERSIZE,
                    reason=f"no frame delimiter within {MAX_STUFFED} bytes; run dropped",
                    raw=bytes(self._buf[:_RAW_KEPT]),
                    offset=self._start,
                )
            )
            self._buf.clear()
            self._discarding = True

    def _end_run(self, out: list[Frame | FrameError]) -> None:
        if self._discarding:
            self._discarding = False
            return
        if not self._buf:
            return  # an idle/flush delimiter
        raw = bytes(self._buf)
        self._buf.clear()
        result = self._decode(raw)
        if isinstance(result, Frame):
            self.counters.frames_ok += 1
        else:
            self.counters.junk_bytes += len(raw)
        out.append(result)

    def _decode(self, raw: bytes) -> Frame | FrameError:
        c = self.counters

        def error(kind: FrameErrorKind, reason: str) -> FrameError:
            return FrameError(kind=kind, reason=reason, raw=raw, offset=self._start)

        try:
            data = _cobs_decode(raw)
        except _CobsError as exc:
            c.cobs_errors += 1
            return error(FrameErrorKind.COBS, f"bad COBS in {len(raw)}-byte run: {exc}")
        if len(data) < HEADER_SIZE + CRC_SIZE:
            c.short_frames += 1
            return error(
                FrameErrorKind.TOO_SHORT,
                f"{len(data)}-byte frame is shorter than header + CRC ({HEADER_SIZE + CRC_SIZE})",
            )
        body, (sent,) = data[:-CRC_SIZE], _CRC.unpack(data[-CRC_SIZE:])
        computed = crc32(body)
        if sent != computed:
            c.crc_errors += 1
            return error(FrameErrorKind.CRC, f"crc {sent:#010x} != computed {computed:#010x}")
        version, msg_type, seq = _HEADER.unpack_from(body)
        if version != PROTOCOL_VERSION:
            c.version_errors += 1
            return error(
                FrameErrorKind.VERSION,
                f"protocol version {version} (type {msg_type:#04x}, seq {seq}); "
                f"this host speaks {PROTOCOL_VERSION}",
            )
        return Frame(version=version, msg_type=msg_type, seq=seq, payload=body[HEADER_SIZE:])
