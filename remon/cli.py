"""The ``remon`` command: one subcommand group per role, plus the demo."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from cloud_ingest.settings import IngestSettings
    from cloud_ingest.timeseries import TimeSeriesWriter

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="remon: remote monitoring for home care and primary care.",
)
agent_app = typer.Typer(no_args_is_help=True, help="The edge agent (home hub / kiosk).")
ingest_app = typer.Typer(no_args_is_help=True, help="The cloud ingest service.")
app.add_typer(agent_app, name="agent")
app.add_typer(ingest_app, name="ingest")


def _logging(level: str = "info") -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command()
def demo(
    duration: Annotated[
        float | None,
        typer.Option(help="Stop after this many seconds (default: run until Ctrl-C).", min=1),
    ] = None,
    broker: Annotated[
        str | None,
        typer.Option(
            help="Broker URL mqtt://host:port instead of starting one ('embedded': in-process)."
        ),
    ] = None,
    database: Annotated[
        str | None,
        typer.Option(
            help="SQLAlchemy URL, e.g. postgresql://user@host/db (default: SQLite in the data dir)."
        ),
    ] = None,
    data_dir: Annotated[
        Path, typer.Option(help="Where the demo keeps its database, outboxes and broker state.")
    ] = Path(".remon-demo"),
    patients: Annotated[
        int,
        typer.Option(help="Simulated patients (one home hub each).", min=1, max=500),
    ] = 6,
    interval: Annotated[
        float, typer.Option(help="Seconds between a device's readings.", min=0.05)
    ] = 2.0,
    host: Annotated[str, typer.Option(help="API listen address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="API port (0: a free one).", min=0, max=65535)] = 8000,
    keep: Annotated[
        bool, typer.Option(help="Keep the previous run's data instead of starting fresh.")
    ] = False,
    history: Annotated[
        bool,
        typer.Option(
            help="First publish 14 days of history (CGM, PEF diary, home BP, doses, kiosk "
            "visits) so every view of the web UI has something to show."
        ),
    ] = True,
) -> None:
    """Run a simulated fleet → agents → broker → ingest → alerts, all on this machine."""
    from remon.demo import DemoOptions, run_demo

    _logging("warning")
    if port and not _port_is_free(host, port):
        typer.echo(f"port {port} is taken; using a free one", err=True)
        port = 0
    raise typer.Exit(
        run_demo(
            DemoOptions(
                data_dir=data_dir.resolve(),
                duration=duration,
                broker=broker,
                database=database,
                patients=patients,
                interval=interval,
                host=host,
                port=port,
                keep=keep,
                history=history,
            )
        )
    )


def _port_is_free(host: str, port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


@app.command()
def decode(
    data: Annotated[
        str | None, typer.Argument(help="The characteristic value in hex (spaces and ':' allowed).")
    ] = None,
    uuid: Annotated[
        str | None, typer.Option("--uuid", "-u", help="16-bit characteristic UUID, e.g. 0x2A18.")
    ] = None,
    stdin: Annotated[
        bool,
        typer.Option(
            "--stdin", help="Read one value per line: '<hex>' with --uuid, else '<uuid> <hex>'."
        ),
    ] = False,
    crc: Annotated[
        bool, typer.Option(help="CGM values carry an E2E-CRC (the CGM Feature says so).")
    ] = False,
) -> None:
    """Decode captured GATT bytes and print them as JSON (one object per value).

    Malformed bytes exit 1 with the byte offset and what was expected there.
    """
    import json

    from device_profiles.gatt.registry import (
        CHARACTERISTICS,
        DecodeError,
        UsageError,
        in_care_units,
        parse_hex,
        parse_uuid,
        to_jsonable,
    )
    from device_profiles.gatt.registry import decode as decode_characteristic

    def one(u: str, hexdata: str) -> str:
        code = parse_uuid(u)
        value = decode_characteristic(code, parse_hex(hexdata), crc=crc)
        extra = in_care_units(code, value)
        return json.dumps(
            {
                "uuid": f"0x{code:04X}",
                "name": CHARACTERISTICS[code].name,
                "value": to_jsonable(value),
                **({"in_care_units": extra} if extra else {}),
            },
            ensure_ascii=False,
        )

    try:
        if not stdin:
            if uuid is None or data is None:
                raise UsageError("give --uuid and the hex value, or --stdin")
            try:
                typer.echo(one(uuid, data))
            except DecodeError as exc:
                typer.echo(f"error: {exc}", err=True)
                raise typer.Exit(1) from None
            return
        failed = 0
        for lineno, line in enumerate(sys.stdin, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            if uuid is not None:
                u, hexdata = uuid, text
            else:
                u, _, hexdata = text.partition(" ")
            try:
                typer.echo(one(u, hexdata))
            except (DecodeError, UsageError) as exc:
                failed += 1
                typer.echo(f"line {lineno}: error: {exc}", err=True)
        if failed:
            raise typer.Exit(1)
    except UsageError as exc:
        typer.echo(f"usage error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command("pef-report")
def pef_report(
    file: Annotated[
        Path, typer.Argument(help="CSV of blows: time,session,phase,pef_l_min (local time).")
    ],
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    html: Annotated[
        Path | None, typer.Option(help="Also write a printable HTML report with the chart here.")
    ] = None,
    convention: Annotated[
        str,
        typer.Option(help="Diurnal variation: finnish (default) or gina (DOMAIN.md §1)."),
    ] = "finnish",
    post_bd_in_max: Annotated[
        bool,
        typer.Option(help="Let post-BD blows count towards the day's highest value."),
    ] = False,
    personal_best: Annotated[
        float | None,
        typer.Option(help="The patient's personal best PEF, L/min (zones: DOMAIN.md §1).", min=1),
    ] = None,
) -> None:
    """A 1-2 week PEF diary judged by the criteria of DOMAIN.md §1 (support, not a diagnosis).

    Bad rows exit 2 with the row number and what is wrong in it.
    """
    from remon.pef_report import run

    code = run(
        file,
        as_json=json_out,
        html=html,
        convention=convention,
        post_bd_in_max=post_bd_in_max,
        personal_best=personal_best,
        out=sys.stdout,
    )
    if code:
        raise typer.Exit(code)


@app.command("cgm-report")
def cgm_report(
    file: Annotated[Path, typer.Argument(help="CSV of readings: id,time,gl (several subjects).")],
    unit: Annotated[
        str | None,
        typer.Option(help="Unit of gl: mg/dL or mmol/L (default: inferred and stated)."),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
    agp: Annotated[
        Path | None,
        typer.Option(help="Write the AGP picture (PNG; needs the 'reports' extra) here."),
    ] = None,
) -> None:
    """CGM consensus metrics (TIR, TBR, TAR, CV, GMI, active %) and the AGP per subject.

    Bad rows exit 2 with the row number and what is wrong in it.
    """
    from remon.cgm_report import run

    code = run(file, unit=unit, as_json=json_out, agp=agp, out=sys.stdout)
    if code:
        raise typer.Exit(code)


@agent_app.command("run")
def agent_run(
    config: Annotated[Path, typer.Option("--config", "-c", help="Agent TOML file.")],
) -> None:
    """Run the edge agent until SIGTERM/SIGINT."""
    from edge_agent.agent import Agent
    from edge_agent.config import ConfigError, load_config

    try:
        cfg = load_config(config)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    _logging(cfg.agent.log_level)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await Agent(cfg).run(stop)

    asyncio.run(main())


@agent_app.command("check-config")
def agent_check_config(config: Annotated[Path, typer.Argument(help="Agent TOML file.")]) -> None:
    """Validate an agent configuration file and print what it configures."""
    from edge_agent.config import ConfigError, load_config

    try:
        cfg = load_config(config)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    typer.echo(
        f"{config}: ok — site {cfg.agent.site}, {len(cfg.devices)} devices, broker {cfg.mqtt.url}"
    )


@app.command("serial-sim")
def serial_sim(
    config: Annotated[
        Path,
        typer.Argument(
            help='Agent TOML file with \\[serial] backend = "virtual" and \\[devices.virtual] '
            "tables."
        ),
    ],
) -> None:
    r"""Run CONFIG's virtual serial devices on pseudo-terminals until Ctrl-C / SIGTERM.

    Each serial.* device with a \[devices.virtual] table gets its simulator behind a symlink
    at its port (relative ports under <data_dir>/virtual-serial/). An agent with
    \[serial] backend = "tty" and the same absolute ports reads them from another process.
    Prints "<id>  <kind>  <port path>" per device once all are up, and one JSON line of
    per-device counters (bytes, frames, events sent and acknowledged) when stopped.
    """
    from edge_agent.config import ConfigError, load_config
    from remon.serial_sim import SerialSimError, run_serial_sim

    try:
        cfg = load_config(config)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    _logging(cfg.agent.log_level)
    try:
        run_serial_sim(cfg, sys.stdout)
    except SerialSimError as exc:
        typer.echo(f"{config}: {exc}", err=True)
        raise typer.Exit(2) from None


@ingest_app.command("run")
def ingest_run(
    database: Annotated[
        str | None,
        typer.Option(help="SQLAlchemy URL (default: REMON_DATABASE_URL or sqlite:///remon.db)."),
    ] = None,
    broker: Annotated[
        str | None, typer.Option(help="mqtt://host:port (default: REMON_BROKER_URL).")
    ] = None,
    host: Annotated[str, typer.Option(help="API listen address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="API port.")] = 8000,
    consume: Annotated[
        bool, typer.Option(help="Consume from the broker (--no-consume: API only).")
    ] = True,
    api: Annotated[
        bool, typer.Option(help="Serve the API (--no-api: a consumer-only worker).")
    ] = True,
    shared: Annotated[
        bool, typer.Option(help="Use an MQTT 5 shared subscription (several workers).")
    ] = False,
    client_id: Annotated[
        str | None,
        typer.Option(
            help="MQTT client id: stable and unique per worker (default: REMON_CLIENT_ID)."
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="Consumer processes sharing the load through an MQTT 5 shared subscription "
            "(one per core); worker k uses the client id <client-id>-k.",
        ),
    ] = 1,
) -> None:
    """Run the ingest: MQTT consumer → validate → dedupe → store → rules → alerts, and the API."""
    from cloud_ingest.consumer import Consumer, ConsumerConfig
    from cloud_ingest.service import IngestService
    from cloud_ingest.settings import IngestSettings
    from cloud_ingest.storage import open_storage

    _logging("info")
    overrides: dict[str, object] = {}
    if database:
        overrides["database_url"] = database
    if broker:
        overrides["broker_url"] = broker
    if client_id:
        overrides["client_id"] = client_id
    settings = IngestSettings(**overrides)  # type: ignore[arg-type]
    shared = shared or settings.shared_subscription or (consume and workers > 1)
    base_client_id = settings.client_id
    if consume and workers > 1:
        # derived ids are stable across restarts: each worker finds its own session again
        settings = settings.model_copy(update={"client_id": f"{base_client_id}-1"})
    elif shared and settings.client_id == IngestSettings.model_fields["client_id"].default:
        # Workers with one id take each other's session over; a worker whose id changes at
        # each start leaves its share of messages queued in a session nobody reads.
        typer.echo(
            "--shared needs a stable client id per worker: --client-id remon-ingest-1, -2, ...",
            err=True,
        )
        raise typer.Exit(2)
    writer = _timeseries_writer(settings)
    service = IngestService(open_storage(settings.database_url), timeseries=writer)
    consumer = None
    if consume:
        consumer = Consumer(
            service,
            ConsumerConfig(
                url=settings.broker_url,
                client_id=settings.client_id,
                shared=shared,
                batch_max=settings.batch_max,
                batch_wait_s=settings.batch_wait_s,
                housekeeping_s=settings.housekeeping_s,
            ),
        )
        consumer.start(wait_connected=None)
    children = _Workers(settings, base_client_id, workers) if consume and workers > 1 else None
    try:
        if api:
            import uvicorn

            from cloud_ingest.web import create_web_app

            if not settings.api_tokens:
                typer.echo(
                    "warning: no REMON_API_TOKENS configured: only staff tokens issued through "
                    "PUT /api/v1/staff/{id} work, and issuing one needs an admin token",
                    err=True,
                )
            # SSE queue streams stay open until the client leaves: on shutdown they get 5 s
            uvicorn.run(
                create_web_app(service, settings),  # the API and the care team's pages (/ui)
                host=host,
                port=port,
                log_level="info",
                timeout_graceful_shutdown=5,
            )
        else:
            stop = asyncio.Event()

            async def wait() -> None:
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, stop.set)
                await stop.wait()

            asyncio.run(wait())
    finally:
        if children is not None:
            children.stop()
        if consumer is not None:
            consumer.stop()
        if writer is not None:
            writer.close()
            log = logging.getLogger("remon.ingest")
            log.info("time-series copy: %s", writer.stats)


def _timeseries_writer(settings: IngestSettings) -> TimeSeriesWriter | None:
    """The time-series copy when REMON_TIMESERIES_URL is set (needs remon[timeseries])."""
    if not settings.timeseries_url:
        return None
    try:
        from cloud_ingest.timeseries import TimeSeriesSettings, TimeSeriesWriter
    except ImportError as exc:  # pragma: no cover - depends on the install
        typer.echo(f"REMON_TIMESERIES_URL needs remon[timeseries]: {exc}", err=True)
        raise typer.Exit(2) from exc
    try:
        ts = TimeSeriesSettings(
            url=settings.timeseries_url,
            org=settings.timeseries_org,
            bucket=settings.timeseries_bucket,
            token=settings.timeseries_token,
        )
        return TimeSeriesWriter(ts)
    except (ValueError, ImportError) as exc:
        typer.echo(f"time-series settings: {exc}", err=True)
        raise typer.Exit(2) from exc


class _Workers:
    """Consumer-only worker processes 2..N of `remon ingest run --workers N`, kept running."""

    def __init__(self, settings: IngestSettings, base_client_id: str, n: int) -> None:
        import threading

        # the database URL may hold a password: hand it over in the environment, not argv
        self._env = {
            **os.environ,
            "REMON_DATABASE_URL": settings.database_url,
            "REMON_BROKER_URL": settings.broker_url,
        }
        run = [sys.executable, "-m", "remon.cli", "ingest", "run", "--no-api", "--shared"]
        self._cmds = [[*run, "--client-id", f"{base_client_id}-{k}"] for k in range(2, n + 1)]
        self._procs = [self._start(i) for i in range(len(self._cmds))]
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="ingest-workers", daemon=True)
        self._thread.start()

    def _start(self, i: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self._cmds[i], env=self._env)  # noqa: S603 - our own command

    def _watch(self) -> None:
        log = logging.getLogger("remon.ingest.workers")
        while not self._stopping.wait(1.0):
            for i, p in enumerate(self._procs):
                if p.poll() is not None and not self._stopping.is_set():
                    log.error("ingest worker %d exited with %s; restarting it", i + 2, p.returncode)
                    self._procs[i] = self._start(i)

    def stop(self) -> None:
        self._stopping.set()
        for p in self._procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self._procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@ingest_app.command("migrate")
def ingest_migrate(
    database: Annotated[str, typer.Option(help="SQLAlchemy URL to migrate to the newest schema.")],
) -> None:
    """Create or upgrade the ingest database schema (Alembic)."""
    from cloud_ingest.storage import open_storage

    _logging("info")
    open_storage(database, migrate=True)
    typer.echo(f"{database.split('@')[-1]}: schema is current")


def main() -> None:
    with contextlib.suppress(KeyboardInterrupt):
        app()


if __name__ == "__main__":
    main()
