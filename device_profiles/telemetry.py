"""Device telemetry: what the hub knows about a device's own state, not about the patient.

Battery charge (the BLE Battery Level characteristic, 0x2A19), the signal strength the hub saw
it advertise with (RSSI), whether its link to the hub is up, and how far its clock is off. Care
staff use it to replace a battery before a meter goes quiet, or to move a hub closer to a CGM
that keeps dropping out; the time-series store keeps it for trends.

Telemetry travels beside readings through the outbox and the wire contract
(``remon.telemetry/1``). A sample is identified by its device and instant, so a resent sample is
recognised. Values are validated when built and never adjusted: a battery level above 100 % is
refused, not clamped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final

from device_profiles.observation import ObservationError

#: Bluetooth Core: an RSSI is reported in -127..+20 dBm (127 means "not available").
RSSI_MIN_DBM: Final = -127
RSSI_MAX_DBM: Final = 20


class LinkState(StrEnum):
    """The hub's link to the device (a BLE connection, a serial board's session)."""

    CONNECTED = "connected"
    DISCONNECTED = "disconnected"


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceTelemetry:
    """One sample of a device's state at ``at`` (hub clock, aware UTC); at least one value."""

    at: datetime
    battery_pct: int | None = None  # 0..100, as the device said it
    rssi_dbm: int | None = None  # RSSI_MIN_DBM..RSSI_MAX_DBM, at discovery
    link: LinkState | None = None
    clock_offset_s: float | None = None  # device clock minus hub clock, seconds

    def __post_init__(self) -> None:
        if self.at.tzinfo is None or self.at.utcoffset() != timedelta(0):
            raise ObservationError("telemetry time must be an aware UTC datetime")
        b = self.battery_pct
        if b is not None and (isinstance(b, bool) or not isinstance(b, int) or not 0 <= b <= 100):
            raise ObservationError(f"battery_pct must be a whole percent 0..100, got {b!r}")
        r = self.rssi_dbm
        if r is not None and (
            isinstance(r, bool) or not isinstance(r, int) or not RSSI_MIN_DBM <= r <= RSSI_MAX_DBM
        ):
            raise ObservationError(
                f"rssi_dbm must be a whole dBm {RSSI_MIN_DBM}..{RSSI_MAX_DBM}, got {r!r}"
            )
        if self.link is not None and not isinstance(self.link, LinkState):
            raise ObservationError(f"unknown link state {self.link!r}")
        c = self.clock_offset_s
        if c is not None and (isinstance(c, bool) or not math.isfinite(c)):
            raise ObservationError(f"clock_offset_s must be a finite number, got {c!r}")
        if b is None and r is None and self.link is None and c is None:
            raise ObservationError(
                "a telemetry sample needs at least one of battery_pct, rssi_dbm, link, "
                "clock_offset_s"
            )
