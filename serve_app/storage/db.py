"""Connecting to Postgres: URL forms, the asyncpg pool, and Alembic migrations run from code."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from serve_app.storage.queries import QUERIES

_ALEMBIC_INI = Path(__file__).with_name("alembic.ini")
_SCHEMES = ("postgresql+asyncpg://", "postgresql+psycopg://", "postgresql+psycopg2://", "postgres://")


def asyncpg_url(url: str) -> str:
    """`postgresql://...` as asyncpg wants it, from any SQLAlchemy-style or `postgres://` spelling."""
    for scheme in _SCHEMES:
        if url.startswith(scheme):
            return "postgresql://" + url.removeprefix(scheme)
    if not url.startswith("postgresql://"):
        raise ValueError(f"not a PostgreSQL URL: {url.split('://', 1)[0]}://...")
    return url


def sqlalchemy_url(url: str) -> str:
    """The same database as `postgresql+asyncpg://...`. Unix sockets (`?host=/dir`) pass through as is:
    SQLAlchemy hands `host` to asyncpg, which treats a path as a socket directory."""
    return "postgresql+asyncpg://" + asyncpg_url(url).removeprefix("postgresql://")


async def _init_connection(connection: asyncpg.Connection) -> None:
    # JSON columns in and out as Python objects, for every connection the pool opens.
    for type_name in ("jsonb", "json"):
        await connection.set_type_codec(type_name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(database_url: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """An asyncpg pool whose connections encode and decode json/jsonb."""
    pool: asyncpg.Pool = await asyncpg.create_pool(
        asyncpg_url(database_url), min_size=min_size, max_size=max_size, init=_init_connection
    )
    return pool


def alembic_config() -> Config:
    """The packaged Alembic configuration (migrations live in serve_app/storage/migrations)."""
    return Config(str(_ALEMBIC_INI))


def head_revision() -> str:
    """The newest migration this code ships."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("no migrations found")
    return head


@asynccontextmanager
async def migration_connection(database_url: str) -> AsyncIterator[AsyncConnection]:
    """One transaction holding the migration lock: concurrent upgraders run one after another."""
    engine = create_async_engine(sqlalchemy_url(database_url), poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            await connection.execute(sa.text(QUERIES.migration_lock))
            yield connection
    finally:
        await engine.dispose()


def _run_alembic(connection: Connection, action: Callable[[Config, str], None], revision: str) -> None:
    config = alembic_config()
    # env.py migrates on this connection, inside our transaction, instead of opening its own.
    config.attributes["connection"] = connection
    action(config, revision)


async def upgrade_async(database_url: str, revision: str = "head") -> None:
    """`alembic upgrade <revision>`; safe to run from several processes at once."""
    async with migration_connection(database_url) as connection:
        await connection.run_sync(_run_alembic, command.upgrade, revision)


async def downgrade_async(database_url: str, revision: str) -> None:
    """`alembic downgrade <revision>` (development and tests)."""
    async with migration_connection(database_url) as connection:
        await connection.run_sync(_run_alembic, command.downgrade, revision)


def upgrade(database_url: str, revision: str = "head") -> None:
    """Blocking upgrade_async() for CLIs and startup code without a running event loop."""
    asyncio.run(upgrade_async(database_url, revision))


async def current_revision(database_url: str) -> str | None:
    """The revision the database is at, or None before the first migration."""
    connection: Any = await asyncpg.connect(asyncpg_url(database_url))
    try:
        revision: str | None = await connection.fetchval(QUERIES.current_revision)
    except asyncpg.UndefinedTableError:
        return None
    finally:
        await connection.close()
    return revision
