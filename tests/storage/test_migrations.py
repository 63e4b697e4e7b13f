"""Alembic migrations run from code: idempotent, safe to run concurrently, reversible, and in step with tables.py."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from serve_app.domain.jobs import NewJob
from serve_app.storage.db import (
    current_revision,
    downgrade_async,
    head_revision,
    sqlalchemy_url,
    upgrade,
    upgrade_async,
)
from serve_app.storage.tables import metadata
from tests.conftest import with_database

pytestmark = pytest.mark.timeout(60)


@pytest_asyncio.fixture(loop_scope="session")
async def empty_database_url(postgres_server: str, postgres_admin: Any) -> AsyncIterator[str]:
    """A database that no migration has touched yet."""
    name = f"empty_{uuid.uuid4().hex[:16]}"
    await postgres_admin.execute(f"CREATE DATABASE {name}")
    try:
        yield with_database(postgres_server, name)
    finally:
        await postgres_admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


async def _tables(url: str) -> set[str]:
    engine = create_async_engine(sqlalchemy_url(url), poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            result = await connection.exec_driver_sql(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                "UNION ALL SELECT proname FROM pg_proc WHERE proname LIKE 'serve_app_%'"
            )
            return {row[0] for row in result}
    finally:
        await engine.dispose()


async def test_upgrade_twice_is_a_no_op(database_url, repo, pool):
    (job,) = await repo.enqueue([NewJob(request={})])

    await upgrade_async(database_url)
    await upgrade_async(database_url)

    assert await current_revision(database_url) == head_revision()
    assert await pool.fetchval("SELECT count(*) FROM alembic_version") == 1
    assert (await repo.get(job.id)).id == job.id


async def test_concurrent_upgrades_of_an_empty_database(empty_database_url):
    assert await current_revision(empty_database_url) is None

    # One async caller and one blocking caller (as a CLI or a second replica would run it).
    await asyncio.gather(upgrade_async(empty_database_url), asyncio.to_thread(upgrade, empty_database_url))

    assert await current_revision(empty_database_url) == head_revision()
    assert {"jobs", "images", "alembic_version", "serve_app_notify_job_v1"} <= await _tables(empty_database_url)


async def test_downgrade_removes_everything_and_upgrade_restores_it(empty_database_url):
    await upgrade_async(empty_database_url)

    await downgrade_async(empty_database_url, "base")
    assert await _tables(empty_database_url) == {"alembic_version"}
    assert await current_revision(empty_database_url) is None

    await upgrade_async(empty_database_url)
    assert await current_revision(empty_database_url) == head_revision()


async def test_migrations_match_the_table_models(database_url):
    engine = create_async_engine(sqlalchemy_url(database_url), poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            diff = await connection.run_sync(lambda sync: compare_metadata(MigrationContext.configure(sync), metadata))
    finally:
        await engine.dispose()

    assert diff == []
