"""Alembic environment: always run programmatically by ``cloud_ingest.storage.open_storage``.

The caller passes an open connection (inside its transaction, holding the migration lock) in
``config.attributes["connection"]``; this file never creates engines nor configures logging.
"""

from __future__ import annotations

from alembic import context


def run_migrations() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "run migrations through cloud_ingest.storage.open_storage(url), which passes a "
            "connection; offline SQL generation is not supported"
        )
    context.configure(connection=connection, target_metadata=None, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


run_migrations()
