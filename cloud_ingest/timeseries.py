"""Time-series copy of readings and device telemetry, written through influxdb-client.

SQL is the system of record. This module keeps a second, query-friendly copy in any server that
speaks the InfluxDB v2 write API (InfluxDB 2/3, VictoriaMetrics): one series per subject and
measure for dashboards and long-range plots. It is the only module that imports
``influxdb_client``; it imports nothing else of cloud_ingest, so the service wires it in.

Point layout (line protocol; T is milliseconds since the epoch, sub-millisecond parts floored)::

    observation,device=<id>,measure=<m>[,simulated=true],site=<s>,subject=<ref>,unit=<u> value=5.5 T
    observation,comparator=<,device=...,unit=<u> bound=1.1 T          (a device LO/HI reading)
    device_telemetry,device=<id>,site=<s> battery_pct=80.0,clock_offset_s=-1.5,rssi_dbm=-70.0 T
    device_telemetry,device=<id>,link_state=<state>,site=<s> link=1i T

VictoriaMetrics turns each field into a metric ``<measurement>_<field>`` and each tag into a label:
``observation_value{subject=..., measure=...}``, ``observation_bound{comparator="<", ...}``,
``device_telemetry_battery_pct{...}``, ``device_telemetry_link{link_state="online", ...} 1``.

Decisions and their reasons:

- A LO/HI reading carries the device's range limit, not a measurement. It is written as field
  ``bound`` with a ``comparator`` tag, never as ``value``: a plot or an average over ``value``
  must not mistake "below 1.1" for "1.1".
- A reading without a value (``absent_reason``) writes nothing; it is counted in
  ``points_skipped`` under ``absent:<reason>``.
- ``link_state`` is text. String fields are useless here (VictoriaMetrics stores them as 0), so the
  state is a tag on a line of its own with the marker field ``link=1i``. Keeping it off the
  battery/RSSI/clock line means those series do not split whenever the link state changes; the
  extra series per device are bounded by the handful of states a link has.
- Tag values are escaped here, not by ``influxdb_client.Point``: Point leaves backslashes
  unescaped, so a value such as ``a\\,b`` or one ending in a backslash is lost or altered (the
  server still answers 204). Values may hold any printable text; empty values (which
  VictoriaMetrics drops) and control characters (which line protocol cannot carry) are refused.
- Numbers are always written as floats, so a field never changes type between points.
- VictoriaMetrics keeps about 12 significant digits of a float; readings have far fewer.

The writer hands lines to influxdb-client's batching WriteApi: a background thread collects
``batch_size`` lines or ``flush_interval_ms`` worth, posts them and retries with exponential
backoff. Callers never wait for the network and never see its errors; the outcome is counted in
:attr:`TimeSeriesWriter.stats` and failures are logged. A batch that still fails after its retries
is lost from the time-series copy only. To backfill, select the readings of the affected window
from SQL and pass them through :meth:`TimeSeriesWriter.write_observations` again. InfluxDB replaces
a point with the same series and timestamp; VictoriaMetrics keeps duplicates unless it runs with
``-dedup.minScrapeInterval=1ms``, so backfill each window once there.

``stats`` counts line-protocol points: one per observation, one or two per telemetry point.
"""

from __future__ import annotations

import logging
import math
import threading
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from device_profiles.observation import COMPARATORS

if TYPE_CHECKING:  # the client is an optional extra: imported when a writer is made
    from influxdb_client.client.write_api import WriteApi

log = logging.getLogger("remon.ingest.timeseries")

OBSERVATION: Final = "observation"
TELEMETRY: Final = "device_telemetry"
#: Longest tag value accepted (ids and units are short; a long one is a bug upstream).
MAX_TAG_LEN: Final = 256
#: ``points_skipped`` reasons besides ``absent:<reason>``.
SKIP_BUFFER_FULL: Final = "buffer-full"
SKIP_CLOSED: Final = "writer-closed"

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)
_TAG_ESCAPES: Final = str.maketrans({"\\": "\\\\", ",": "\\,", "=": "\\=", " ": "\\ "})


# ---------------------------------------------------------------------------------------------
# Validation and line protocol (pure)


def _check_tag(owner: str, name: str, value: object) -> None:
    if not isinstance(value, str):
        raise ValueError(f"{owner}.{name} must be a string, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{owner}.{name} must not be empty (empty tag values are dropped)")
    if len(value) > MAX_TAG_LEN:
        raise ValueError(f"{owner}.{name} is {len(value)} characters, at most {MAX_TAG_LEN}")
    for ch in value:
        if unicodedata.category(ch) in ("Cc", "Cs"):
            raise ValueError(
                f"{owner}.{name} contains control character {ch!r}, which line protocol "
                "cannot carry"
            )


def _check_time(owner: str, t: object) -> None:
    if not isinstance(t, datetime):
        raise ValueError(f"{owner}.time must be a datetime, got {type(t).__name__}")
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"{owner}.time {t.isoformat()} is naive: an aware UTC datetime is needed")
    if t.utcoffset() != timedelta(0):
        raise ValueError(f"{owner}.time {t.isoformat()} is not UTC: convert it before writing")


def _check_number(owner: str, name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{owner}.{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{owner}.{name} must be finite, got {value!r}")


def escape_tag_value(value: str) -> str:
    """Escape a tag value for line protocol: backslash first, then comma, equals sign, space."""
    return value.translate(_TAG_ESCAPES)


def epoch_ms(t: datetime) -> int:
    """Milliseconds since the Unix epoch, floored (the precision every point is written with)."""
    return (t - _EPOCH) // _MS


def _line(measurement: str, tags: Mapping[str, str], fields: Mapping[str, str], t: datetime) -> str:
    tag_text = "".join(f",{k}={escape_tag_value(v)}" for k, v in sorted(tags.items()))
    field_text = ",".join(f"{k}={v}" for k, v in sorted(fields.items()))
    return f"{measurement}{tag_text} {field_text} {epoch_ms(t)}"


def _float(value: float) -> str:
    return repr(float(value))


@dataclass(frozen=True, slots=True, kw_only=True)
class ObservationPoint:
    """One reading as the time-series store sees it, independent of the SQL and wire types."""

    subject_ref: str
    site: str
    device_id: str
    measure: str
    unit: str
    time: datetime
    simulated: bool
    value: float | None = None
    #: Set for a device LO/HI reading: ``value`` is then the range limit, not a measurement.
    comparator: str | None = None
    absent_reason: str | None = None

    def __post_init__(self) -> None:
        owner = "ObservationPoint"
        for name in ("subject_ref", "site", "device_id", "measure", "unit"):
            _check_tag(owner, name, getattr(self, name))
        _check_time(owner, self.time)
        if not isinstance(self.simulated, bool):
            raise ValueError(f"{owner}.simulated must be a bool, got {self.simulated!r}")
        if (self.value is None) == (self.absent_reason is None):
            raise ValueError(f"{owner}: exactly one of value and absent_reason must be given")
        if self.value is not None:
            _check_number(owner, "value", self.value)
        if self.absent_reason is not None:
            _check_tag(owner, "absent_reason", self.absent_reason)
        if self.comparator is not None:
            if self.comparator not in COMPARATORS:
                raise ValueError(
                    f"{owner}.comparator must be one of {sorted(COMPARATORS)}, "
                    f"got {self.comparator!r}"
                )
            if self.value is None:
                raise ValueError(f"{owner}.comparator needs a value (the device's range limit)")


@dataclass(frozen=True, slots=True, kw_only=True)
class TelemetryPoint:
    """What a device said about itself at one instant; at least one field must be present."""

    site: str
    device_id: str
    time: datetime
    battery_pct: float | None = None
    rssi_dbm: float | None = None
    link_state: str | None = None
    clock_offset_s: float | None = None

    def __post_init__(self) -> None:
        owner = "TelemetryPoint"
        _check_tag(owner, "site", self.site)
        _check_tag(owner, "device_id", self.device_id)
        _check_time(owner, self.time)
        for name in ("battery_pct", "rssi_dbm", "clock_offset_s"):
            value = getattr(self, name)
            if value is not None:
                _check_number(owner, name, value)
        if self.battery_pct is not None and not 0 <= self.battery_pct <= 100:
            raise ValueError(f"{owner}.battery_pct must be within 0..100, got {self.battery_pct}")
        if self.link_state is not None:
            _check_tag(owner, "link_state", self.link_state)
        if all(
            getattr(self, name) is None
            for name in ("battery_pct", "rssi_dbm", "link_state", "clock_offset_s")
        ):
            raise ValueError(
                f"{owner} for device {self.device_id!r} at {self.time.isoformat()} has no field: "
                "give at least one of battery_pct, rssi_dbm, link_state, clock_offset_s"
            )


def observation_line(p: ObservationPoint) -> str | None:
    """The line for one reading, or None when it has no value (absent reading)."""
    if p.value is None:
        return None
    tags = {
        "subject": p.subject_ref,
        "site": p.site,
        "device": p.device_id,
        "measure": p.measure,
        "unit": p.unit,
    }
    if p.simulated:
        tags["simulated"] = "true"
    if p.comparator is not None:
        tags["comparator"] = p.comparator
        return _line(OBSERVATION, tags, {"bound": _float(p.value)}, p.time)
    return _line(OBSERVATION, tags, {"value": _float(p.value)}, p.time)


def telemetry_lines(p: TelemetryPoint) -> tuple[str, ...]:
    """One line for the numeric fields present, one for the link state when given."""
    tags = {"site": p.site, "device": p.device_id}
    numbers = {
        name: _float(value)
        for name, value in (
            ("battery_pct", p.battery_pct),
            ("rssi_dbm", p.rssi_dbm),
            ("clock_offset_s", p.clock_offset_s),
        )
        if value is not None
    }
    lines: list[str] = []
    if numbers:
        lines.append(_line(TELEMETRY, tags, numbers, p.time))
    if p.link_state is not None:
        lines.append(_line(TELEMETRY, {**tags, "link_state": p.link_state}, {"link": "1i"}, p.time))
    return tuple(lines)


# ---------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeSeriesSettings:
    """Where and how to write. Times are milliseconds, like influxdb-client's WriteOptions."""

    url: str
    org: str = "remon"
    bucket: str = "remon"
    #: InfluxDB API token; VictoriaMetrics needs none (empty: no Authorization header).
    token: str = field(default="", repr=False)
    batch_size: int = 5000
    flush_interval_ms: int = 1000
    #: Retries of one batch after its first attempt; 0 disables retrying.
    max_retries: int = 5
    #: First retry delay; each further one doubles, up to ``max_retry_delay_ms``.
    retry_interval_ms: int = 5000
    max_retry_delay_ms: int = 125_000
    #: Total time one batch may spend retrying.
    max_retry_time_ms: int = 180_000
    #: One HTTP request's timeout.
    timeout_ms: int = 10_000
    #: Lines accepted but not yet written or failed; beyond it new lines are skipped and counted.
    max_pending_points: int = 100_000
    #: How long flush() and close() wait for queued batches.
    close_timeout_ms: int = 30_000

    def __post_init__(self) -> None:
        parts = urlsplit(self.url) if isinstance(self.url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"TimeSeriesSettings.url must be an http:// or https:// URL, got {self.url!r}"
            )
        for name in ("org", "bucket"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"TimeSeriesSettings.{name} must be a non-empty string")
        if not isinstance(self.token, str):
            raise ValueError("TimeSeriesSettings.token must be a string (may be empty)")
        minimum = {
            "batch_size": 1,
            "flush_interval_ms": 1,
            "max_retries": 0,
            "retry_interval_ms": 1,
            "max_retry_delay_ms": 1,
            "max_retry_time_ms": 0,
            "timeout_ms": 1,
            "max_pending_points": 1,
            "close_timeout_ms": 0,
        }
        for name, low in minimum.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"TimeSeriesSettings.{name} must be an integer, got {value!r}")
            if value < low:
                raise ValueError(f"TimeSeriesSettings.{name} must be >= {low}, got {value}")
        if self.max_retry_delay_ms < self.retry_interval_ms:
            raise ValueError(
                f"TimeSeriesSettings.max_retry_delay_ms ({self.max_retry_delay_ms}) must be >= "
                f"retry_interval_ms ({self.retry_interval_ms})"
            )
        if self.max_pending_points < self.batch_size:
            raise ValueError(
                f"TimeSeriesSettings.max_pending_points ({self.max_pending_points}) must be >= "
                f"batch_size ({self.batch_size})"
            )


# ---------------------------------------------------------------------------------------------
# Writer


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeSeriesStats:
    """Counts of line-protocol points since the writer was made."""

    points_written: int
    points_failed: int
    #: Batches that needed at least one retry (whatever their final outcome).
    batches_retried: int
    points_skipped: Mapping[str, int]
    #: Accepted and not yet confirmed written or failed.
    points_pending: int
    #: The latest failed attempt (a retried one too), or None if every attempt succeeded.
    last_error: str | None


def _line_count(data: object) -> int:
    if isinstance(data, bytes):
        return data.count(b"\n") + 1
    if isinstance(data, str):
        return data.count("\n") + 1
    return 0


def _describe(exc: object) -> str:
    """A one-line account of a write failure (HTTP status and body, or the transport error)."""
    status = getattr(exc, "status", None)
    if status is not None:
        body = getattr(exc, "body", None)
        text = body.decode(errors="replace") if isinstance(body, bytes) else str(body or "")
        return f"HTTP {status} {getattr(exc, 'reason', '')}: {text.strip()[:300]}"
    return f"{type(exc).__name__}: {exc}"


class TimeSeriesWriter:
    """Non-blocking, counted writes of readings and telemetry to an InfluxDB v2 write endpoint.

    ``write_*`` only serialise and queue lines; they never raise for I/O (a writer used after
    ``close()`` counts the lines as skipped). ``flush()`` and ``close()`` block until the queued
    batches are written or failed, at most ``close_timeout_ms`` (influxdb-client's own ``flush``
    does nothing, so ``flush`` drains the batching WriteApi and starts a fresh one). Thread-safe.
    """

    def __init__(self, settings: TimeSeriesSettings) -> None:
        # remon[timeseries]: the points and line helpers above work without it
        from influxdb_client.client.influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import WriteOptions
        from reactivex.scheduler import ThreadPoolScheduler

        self._settings = settings
        self._client = InfluxDBClient(
            url=settings.url,
            token=settings.token,  # empty: no Authorization header is sent
            org=settings.org,
            timeout=settings.timeout_ms,
        )
        # One HTTP thread per writer (WriteOptions' default scheduler is shared process-wide).
        self._scheduler = ThreadPoolScheduler(max_workers=1)
        self._options = WriteOptions(
            batch_size=settings.batch_size,
            flush_interval=settings.flush_interval_ms,
            retry_interval=settings.retry_interval_ms,
            max_retries=settings.max_retries,
            max_retry_delay=settings.max_retry_delay_ms,
            max_retry_time=settings.max_retry_time_ms,
            max_close_wait=settings.close_timeout_ms,
            write_scheduler=self._scheduler,
        )
        # _api_lock guards the WriteApi swap and is held while lines go in; _stats_lock guards
        # the counters and is the only lock the callbacks (on the HTTP thread) take.
        self._api_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._closed = False
        self._written = 0
        self._failed = 0
        self._pending = 0
        self._retrying: set[int] = set()
        self._retried = 0
        self._skipped: Counter[str] = Counter()
        self._last_error: str | None = None
        self._api = self._new_api()

    def _new_api(self) -> WriteApi:
        return self._client.write_api(
            write_options=self._options,
            success_callback=self._on_success,
            error_callback=self._on_error,
            retry_callback=self._on_retry,
        )

    # -- callbacks, on influxdb-client's HTTP thread ------------------------------------------

    def _on_success(self, _conf: tuple[str, str, str], data: object) -> None:
        n = _line_count(data)
        with self._stats_lock:
            self._written += n
            self._pending -= n
            self._retrying.discard(id(data))

    def _on_error(self, _conf: tuple[str, str, str], data: object, exc: Exception) -> None:
        n = _line_count(data)
        text = _describe(exc)
        with self._stats_lock:
            self._failed += n
            self._pending -= n
            self._retrying.discard(id(data))
            self._last_error = text
        log.error(
            "time-series batch of %d points failed after retries: %s (SQL still holds them; "
            "backfill the window from SQL)",
            n,
            text,
        )

    def _on_retry(self, _conf: tuple[str, str, str], data: object, exc: Exception) -> None:
        text = _describe(exc)
        with self._stats_lock:
            if id(data) not in self._retrying:
                self._retrying.add(id(data))
                self._retried += 1
            self._last_error = text
        log.debug("time-series batch will be retried: %s", text)

    # -- public API ----------------------------------------------------------------------------

    def write_observations(self, points: Iterable[ObservationPoint]) -> None:
        """Queue readings; absent readings are counted as skipped, never written."""
        lines: list[str] = []
        absent: Counter[str] = Counter()
        for p in points:
            line = observation_line(p)
            if line is None:
                absent[f"absent:{p.absent_reason}"] += 1
            else:
                lines.append(line)
        if absent:
            with self._stats_lock:
                self._skipped.update(absent)
        self._submit(lines)

    def write_telemetry(self, points: Iterable[TelemetryPoint]) -> None:
        """Queue device telemetry (one or two lines per point, see the module docstring)."""
        self._submit([line for p in points for line in telemetry_lines(p)])

    def _submit(self, lines: list[str]) -> None:
        if not lines:
            return
        refused = 0
        reason = SKIP_BUFFER_FULL
        with self._api_lock:
            with self._stats_lock:
                if self._closed:
                    reason, refused, lines = SKIP_CLOSED, len(lines), []
                else:
                    room = max(0, self._settings.max_pending_points - self._pending)
                    refused, lines = max(0, len(lines) - room), lines[:room]
                    self._pending += len(lines)
                if refused:
                    self._skipped[reason] += refused
            if lines:
                try:
                    self._api.write(
                        bucket=self._settings.bucket,
                        org=self._settings.org,
                        record=lines,
                        write_precision=_ms_precision(),  # type: ignore[arg-type]
                    )
                except Exception as exc:  # the ingest path must not fail for the copy
                    with self._stats_lock:
                        self._failed += len(lines)
                        self._pending -= len(lines)
                        self._last_error = _describe(exc)
                    log.exception("time-series write could not be queued")
        if refused:
            log.warning("time-series writer skipped %d points: %s", refused, reason)

    def flush(self) -> None:
        """Write everything queued so far; wait at most ``close_timeout_ms``."""
        with self._api_lock:
            if self._closed:
                return
            old, self._api = self._api, self._new_api()
        old.close()  # type: ignore[no-untyped-call]

    def close(self) -> None:
        """Flush, then release the client and its threads. Idempotent."""
        with self._api_lock:
            if self._closed:
                return
            with self._stats_lock:
                self._closed = True
        self._api.close()  # type: ignore[no-untyped-call]
        self._scheduler.executor.shutdown(wait=False)
        self._client.close()  # type: ignore[no-untyped-call]
        pending = self.stats.points_pending
        if pending:
            log.warning(
                "time-series writer closed with %d points unconfirmed after %d ms",
                pending,
                self._settings.close_timeout_ms,
            )

    @property
    def stats(self) -> TimeSeriesStats:
        with self._stats_lock:
            return TimeSeriesStats(
                points_written=self._written,
                points_failed=self._failed,
                batches_retried=self._retried,
                points_skipped=MappingProxyType(dict(self._skipped)),
                points_pending=self._pending,
                last_error=self._last_error,
            )

    def __enter__(self) -> TimeSeriesWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _ms_precision() -> object:
    from influxdb_client.domain.write_precision import WritePrecision

    return WritePrecision.MS
