"""Benchmark helpers: envelopes from the production encoder, percentiles, JSON output."""

from __future__ import annotations

import json
import random
import statistics
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from device_profiles.observation import DeviceIdentity, Observation, Provenance, QualityFlag
from gateway.wire import OutboundMessage, Subject, encode_observations

T0 = datetime(2026, 11, 22, 6, 0, tzinfo=UTC)


def glucose_envelopes(
    n_msgs: int,
    obs_per_msg: int,
    *,
    sites: int = 50,
    seed: int = 1,
    low_share: float = 0.02,
    tag: str = "b",
) -> list[OutboundMessage]:
    """``n_msgs`` envelopes of ``obs_per_msg`` CGM-like glucose readings; some cross thresholds."""
    rng = random.Random(seed)
    out: list[OutboundMessage] = []
    for m in range(n_msgs):
        site = f"{tag}-site-{m % sites}"
        dev = DeviceIdentity(manufacturer="bench", model="cgm", serial=site, transport="sim")
        obs = []
        for k in range(obs_per_msg):
            n = m * obs_per_msg + k
            v = 2.8 if rng.random() < low_share else round(rng.uniform(4.5, 9.0), 1)
            obs.append(
                Observation(
                    measure="glucose.cgm",
                    unit="mmol/L",
                    value=v,
                    effective_time=T0 + timedelta(seconds=n),
                    record_key=f"seq:{n}",
                    quality=frozenset({QualityFlag.SIMULATED}),
                    provenance=Provenance(source="bench"),
                )
            )
        out.extend(
            encode_observations(
                site=site,
                device_id="cgm",
                device=dev,
                subject=Subject(kind="patient", ref=f"{tag}-p-{m % sites}"),
                observations=obs,
                created_at=T0,
            )
        )
    return out


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def emit(name: str, results: dict[str, Any]) -> None:
    print(f"JSON {json.dumps({'bench': name, **results}, sort_keys=True)}")
    sys.stdout.flush()
