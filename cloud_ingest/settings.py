"""Cloud ingest configuration (pydantic-settings; environment variables prefixed ``REMON_``).

``REMON_API_TOKENS`` is a JSON object mapping bearer token -> actor name, e.g.
``{"dev-token-nurse": "nurse.virtanen"}``; the actor is recorded on acknowledge/resolve.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class IngestSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REMON_", extra="ignore")

    database_url: str = "sqlite:///remon.db"
    broker_url: str = "mqtt://127.0.0.1:1883"
    api_tokens: dict[str, str] = Field(default_factory=dict)
    client_id: str = "remon-ingest"
    shared_subscription: bool = False
    batch_max: int = Field(default=500, ge=1, le=10_000)
    batch_wait_s: float = Field(default=0.05, ge=0.0, le=10.0)
    #: seconds between runs of the time-driven rules (alert escalation) in each worker
    housekeeping_s: float = Field(default=15.0, gt=0.0, le=3600.0)
    #: a copy of readings in a server speaking the InfluxDB v2 write API (InfluxDB,
    #: VictoriaMetrics), e.g. http://127.0.0.1:8428; empty: no copy. Needs remon[timeseries].
    timeseries_url: str = ""
    timeseries_org: str = "remon"
    timeseries_bucket: str = "remon"
    timeseries_token: str = Field(default="", repr=False)
