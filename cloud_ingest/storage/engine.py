"""Engine creation and schema migration (Alembic, run programmatically).

SQLite: WAL, ``synchronous=NORMAL``, a busy timeout and foreign keys are set on every new
connection. pysqlite's own transaction handling is switched off and SQLAlchemy's ``begin`` emits
``BEGIN`` itself, so DDL is transactional and write transactions can start ``BEGIN IMMEDIATE``
(a writer that first reads and then writes never fails with SQLITE_BUSY half-way).

PostgreSQL: psycopg 3; ``postgresql://`` and ``postgres://`` URLs are mapped to
``postgresql+psycopg://``. Concurrent migrations (several workers starting at once) are
serialised with a transaction-level advisory lock.
"""

from __future__ import annotations

from typing import Any, Final

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Engine

from cloud_ingest.storage.records import StorageError

SQLITE_BUSY_TIMEOUT_MS: Final = 30_000
#: Execution option naming the SQLite BEGIN mode ("DEFERRED" or "IMMEDIATE").
SQLITE_BEGIN: Final = "remon_sqlite_begin"
_MIGRATION_LOCK_KEY: Final = 0x72656D6F6E  # "remon"


def normalise_url(url: str) -> sa.URL:
    u = sa.make_url(url)
    if u.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        u = u.set(drivername="postgresql+psycopg")
    if u.get_backend_name() not in ("sqlite", "postgresql"):
        raise ValueError(f"unsupported database {u.get_backend_name()!r}: use sqlite or postgresql")
    return u


def create_engine(url: str) -> Engine:
    u = normalise_url(url)
    if u.get_backend_name() == "sqlite":
        memory = u.database in (None, "", ":memory:")
        engine = sa.create_engine(u, connect_args={"check_same_thread": False})
        _configure_sqlite(engine, wal=not memory)
        return engine
    try:
        return sa.create_engine(u, pool_pre_ping=True, pool_size=5, max_overflow=5)
    except ModuleNotFoundError as exc:  # the driver is an optional extra: hubs do not need it
        raise StorageError(
            f"no driver for {u.get_backend_name()} ({exc.name} is not installed): "
            "install remon with the 'postgres' extra, e.g. pip install 'remon[postgres]'"
        ) from None


def _configure_sqlite(engine: Engine, *, wal: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (see module docstring)
        cur = dbapi_conn.cursor()
        try:
            if wal:
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA foreign_keys=ON")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        mode = conn.get_execution_options().get(SQLITE_BEGIN, "DEFERRED")
        if mode not in ("DEFERRED", "IMMEDIATE"):
            raise ValueError(f"bad SQLite BEGIN mode {mode!r}")
        conn.exec_driver_sql(f"BEGIN {mode}")


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", "cloud_ingest:migrations")
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the schema to ``revision`` in one transaction, holding a migration lock."""
    cfg = alembic_config()
    with engine.connect() as raw:
        conn = raw.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
        with conn.begin():
            if engine.dialect.name == "postgresql":
                conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_KEY}
                )
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
