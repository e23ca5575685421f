"""The ``remon`` command: one subcommand group per role, plus the demo."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

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
        typer.Option(help="Simulated patients (one home hub each, four devices).", min=1, max=500),
    ] = 6,
    interval: Annotated[
        float, typer.Option(help="Seconds between a device's readings.", min=0.05)
    ] = 2.0,
    host: Annotated[str, typer.Option(help="API listen address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="API port (0: a free one).", min=0, max=65535)] = 8000,
    keep: Annotated[
        bool, typer.Option(help="Keep the previous run's data instead of starting fresh.")
    ] = False,
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
    shared = shared or settings.shared_subscription
    if shared and settings.client_id == IngestSettings.model_fields["client_id"].default:
        # Workers with one id take each other's session over; a worker whose id changes at
        # each start leaves its share of messages queued in a session nobody reads.
        typer.echo(
            "--shared needs a stable client id per worker: --client-id remon-ingest-1, -2, ...",
            err=True,
        )
        raise typer.Exit(2)
    service = IngestService(open_storage(settings.database_url))
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
            ),
        )
        consumer.start(wait_connected=None)
    try:
        if api:
            import uvicorn

            from cloud_ingest.api import create_app

            if not settings.api_tokens:
                typer.echo(
                    "warning: no REMON_API_TOKENS configured; every API call except "
                    "/api/v1/health will be refused",
                    err=True,
                )
            uvicorn.run(create_app(service, settings), host=host, port=port, log_level="info")
        else:
            stop = asyncio.Event()

            async def wait() -> None:
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, stop.set)
                await stop.wait()

            asyncio.run(wait())
    finally:
        if consumer is not None:
            consumer.stop()


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
