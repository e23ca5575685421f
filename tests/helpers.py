"""Builders shared by tests: valid observations and envelopes made with the production encoder."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from device_profiles.events import DeviceEvent, EventKind
from device_profiles.observation import DeviceIdentity, Observation, Provenance, QualityFlag
from gateway.wire import OutboundMessage, Subject, encode_events, encode_observations

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
METER = DeviceIdentity(
    manufacturer="Acme", model="Gluco 1", serial="SN-1", firmware="1.2", transport="ble"
)
DISPENSER = DeviceIdentity(manufacturer="Acme", model="MedRoll 2", serial="MR-9")


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


def missed_dose(
    subject: str, *, at: datetime, dose_id: str, created_at: datetime = T0
) -> OutboundMessage:
    """A dispenser's dose_missed event for ``subject`` (scheduled 45 min before ``at``), from
    the client's home hub, made with the production encoder."""
    event = DeviceEvent(
        kind=EventKind.DOSE_MISSED,
        event_time=at,
        record_key=f"evt:{subject}:{dose_id}",
        provenance=Provenance(source="serial:test"),
        dose_id=dose_id,
        scheduled_time=at - timedelta(minutes=45),
    )
    (msg,) = encode_events(
        site=f"home-{subject}",
        device_id=f"disp-{subject}",
        device=DISPENSER,
        subject=Subject(kind="patient", ref=subject),
        events=[event],
        created_at=created_at,
    )
    return msg
