"""A private VictoriaMetrics for tests: loopback port, throwaway storage, stopped afterwards.

Modelled on :class:`remon.brokers.MosquittoProcess`. VictoriaMetrics accepts the InfluxDB v2
write API (``/api/v2/write``) that influxdb-client speaks, and its own export API lets a test
read back exactly what was stored. It is started with:

- ``-search.latencyOffset=0s``: otherwise samples younger than 30 s are hidden from searches;
- ``-retentionPeriod=100y``: the default (one month) refuses the fixed past timestamps tests use.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from remon.brokers import free_port

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


class VictoriaMetricsError(RuntimeError):
    pass


def victoria_metrics_binary() -> str:
    for cand in (shutil.which("victoria-metrics"), "/usr/bin/victoria-metrics"):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise VictoriaMetricsError(
        "victoria-metrics is not installed: run the tests with ./dev.sh test, which installs the "
        "Debian package 'victoria-metrics'"
    )


class VictoriaMetricsProcess:
    """``with VictoriaMetricsProcess() as vm:`` serves on ``vm.url`` until the block ends.

    ``port`` may be chosen up front (e.g. to write to it before the server is there).
    """

    def __init__(self, *, port: int | None = None) -> None:
        self.binary = victoria_metrics_binary()
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.data_dir: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        if self.proc is not None:
            return
        self.data_dir = Path(tempfile.mkdtemp(prefix="remon-vm-"))
        log_path = self.data_dir / "victoria-metrics.log"
        with log_path.open("wb") as log_file:
            self.proc = subprocess.Popen(  # fixed binary and arguments
                [
                    self.binary,
                    f"-httpListenAddr=127.0.0.1:{self.port}",
                    f"-storageDataPath={self.data_dir / 'data'}",
                    "-retentionPeriod=100y",
                    "-search.latencyOffset=0s",
                    "-loggerLevel=WARN",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log_file,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = log_path.read_text(errors="replace")[-2000:]
                self.stop()
                raise VictoriaMetricsError(f"victoria-metrics exited at start:\n{log}")
            with contextlib.suppress(OSError):
                if self._get("/health").strip() == b"OK":
                    return
            time.sleep(0.05)
        self.stop()
        raise VictoriaMetricsError(
            f"victoria-metrics did not answer /health in {START_TIMEOUT_S} s"
        )

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None

    def __enter__(self) -> VictoriaMetricsProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- reading back ----------------------------------------------------------------------

    def _get(self, path: str, query: dict[str, str] | None = None) -> bytes:
        url = self.url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        with urllib.request.urlopen(url, timeout=10) as resp:
            body: bytes = resp.read()
            return body

    def force_flush(self) -> None:
        """Make everything ingested so far searchable now."""
        self._get("/internal/force_flush")

    def export(self, selector: str, *, start: str = "0", end: str | None = None) -> list[Any]:
        """The series matching ``selector`` as VictoriaMetrics' JSON-lines export gives them.

        Each item is ``{"metric": {labels}, "values": [...], "timestamps": [ms, ...]}``. Lines are
        split on newline only: label values may hold other line separators (U+2028, NEL).
        """
        query = {"match[]": selector, "start": start}
        if end is not None:
            query["end"] = end
        text = self._get("/api/v1/export", query).decode()
        return [json.loads(line) for line in text.split("\n") if line.strip()]
