"""Builders shared by tests: valid observations and envelopes made with the production encoder."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from device_profiles.observation import DeviceIdentity, Observation, Provenance, QualityFlag
from gateway.wire import OutboundMessage, Subject, encode_observations

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
METER = DeviceIdentity(
    manufacturer="Acme", model="Gluco 1", serial="SN-1", firmware="1.2", transport="ble"
)


def glucose(
    n: int, value: float | None = 5.5, *, t: datetime | None = None, **kw: object
) -> Observation:
    args: dict[str, object] = {
        "measure": "glucose.capillary",
        "unit": "mmol/L",
        "effective_time": t or T0 + timedelta(minutes=n),
        "record_key": f"seq:{n}",
        "provenance": Provenance(source="test"),
        "value": value,
        "quality": frozenset({QualityFlag.SIMULATED}),
    }
    args.update(kw)
    return Observation(**args)  # type: ignore[arg-type]


def envelope(
    obs: list[Observation],
    *,
    site: str = "home-1",
    device_id: str = "gm1",
    subject: str = "p-1",
    device: DeviceIdentity = METER,
) -> OutboundMessage:
    msgs = encode_observations(
        site=site,
        device_id=device_id,
        device=device,
        subject=Subject(kind="patient", ref=subject),
        observations=obs,
        created_at=T0,
    )
    assert len(msgs) == 1
    return msgs[0]
