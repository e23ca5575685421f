"""MQTT brokers for single-machine runs: a private Mosquitto process, or the embedded amqtt broker.

Production runs against an operated Mosquitto (see docs/operations.md). For ``remon demo`` and the
tests we start our own on a free loopback port: Mosquitto when its binary is installed (MQTT 5,
persistence across restarts), otherwise amqtt in-process (MQTT 3.1.1 only, no persistence).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger("remon.brokers")


class BrokerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise BrokerError(f"nothing listening on {host}:{port} after {timeout:.0f} s")


def mosquitto_binary() -> str | None:
    for cand in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


class MosquittoProcess:
    """A private Mosquitto on 127.0.0.1, persistence in ``data_dir``, restartable on the same port.

    The queue limits are lifted (``max_queued_messages 0``): with Mosquitto's default of 1000, a
    subscriber that is away while more than 1000 messages arrive loses the rest silently.
    """

    def __init__(self, data_dir: Path, *, port: int | None = None, max_inflight: int = 0) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise BrokerError("mosquitto is not installed (Debian package 'mosquitto')")
        self.binary = binary
        self.data_dir = data_dir
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        data_dir.mkdir(parents=True, exist_ok=True)
        self.conf = data_dir / "mosquitto.conf"
        self.log = data_dir / "mosquitto.log"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {data_dir}/",
            "autosave_interval 1",
            "max_queued_messages 0",
            f"max_inflight_messages {max_inflight}",
            "max_packet_size 1048576",
            "log_type error",
            "log_type warning",
            f"log_dest file {self.log}",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # keep access to our own data directory
        self.conf.write_text("\n".join(lines) + "\n")

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        self.proc = subprocess.Popen(  # noqa: S603 - fixed binary and arguments
            [self.binary, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_for_port("127.0.0.1", self.port)
        except BrokerError:
            err = b""
            if self.proc.poll() is not None and self.proc.stderr is not None:
                err = self.proc.stderr.read()
            raise BrokerError(f"mosquitto did not start: {err.decode(errors='replace')}") from None

    def stop(self, *, kill: bool = False) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> MosquittoProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EmbeddedBroker:
    """amqtt's broker in a background thread with its own event loop, on 127.0.0.1."""

    def __init__(self, *, port: int | None = None) -> None:
        self.port = port or free_port()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: Any = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="amqtt-broker", daemon=True)
        self._thread.start()
        if not self._ready.wait(15):
            raise BrokerError("embedded broker did not start within 15 s")
        if self._error is not None:
            raise BrokerError(f"embedded broker failed: {self._error}") from self._error
        wait_for_port("127.0.0.1", self.port)

    def _run(self) -> None:
        from amqtt.broker import Broker  # imported here: only the demo without Mosquitto needs it

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        # amqtt lets per-connection errors (a client that hung up, a v5 CONNECT it cannot read)
        # escape to the loop; they concern that one client only, so keep them out of the console.
        loop.set_exception_handler(
            lambda _loop, ctx: log.debug("embedded broker: %s", ctx.get("message"))
        )
        self._loop = loop
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
        try:
            self._broker = Broker(config, loop=loop)
            loop.run_until_complete(self._broker.start())
        except BaseException as exc:  # report any start failure to the starting thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(self._broker.shutdown())
        loop.close()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            # amqtt leaves the transports of connections it refused unclosed; let them go now,
            # quietly, instead of letting their ResourceWarnings surface somewhere later.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ResourceWarning)
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(timeout=10)
                self._loop = None
                self._broker = None
                gc.collect()

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
