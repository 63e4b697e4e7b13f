"""Alembic environment: migrate on the connection serve_app.storage.db hands in, or on `-x url=...` from the CLI."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from serve_app.storage.db import migration_connection, sqlalchemy_url
from serve_app.storage.tables import metadata


def _migrate(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()


async def _migrate_url(url: str) -> None:
    async with migration_connection(url) as connection:
        await connection.run_sync(_migrate)


def _main() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("pass the database with `alembic -x url=postgresql://... <command>`")
    if context.is_offline_mode():
        context.configure(url=sqlalchemy_url(url), target_metadata=metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    asyncio.run(_migrate_url(url))


_main()
