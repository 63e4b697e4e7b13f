"""PgModelJobStore: the ModelJobStore port in Postgres (SQL in sql/model_jobs.sql).

Partial updates go to the database as one jsonb object of the changed fields, so concurrent writers (the
worker reporting bytes, another replica cancelling) only touch what they change. A finished job's status is
final: an update that would change it returns the job unchanged (see the header of model_jobs.sql).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, LiteralString

import asyncpg
from pydantic_core import to_jsonable_python

from serve_app.domain.errors import NotFound
from serve_app.domain.model_jobs import DownloadJob, InstallJob
from serve_app.storage.queries import load


@dataclasses.dataclass(frozen=True, slots=True)
class ModelJobQueries:
    """One attribute per `-- name:` block of sql/model_jobs.sql."""

    insert_install: LiteralString
    get_install: LiteralString
    list_installs: LiteralString
    update_install: LiteralString
    prune_installs: LiteralString
    parts_of_installs: LiteralString
    insert_download: LiteralString
    get_download: LiteralString
    list_downloads: LiteralString
    update_download: LiteralString
    prune_downloads: LiteralString
    renew_install_leases: LiteralString
    reap_installs: LiteralString
    renew_download_leases: LiteralString
    reap_downloads: LiteralString


Q = load(ModelJobQueries, "sql/model_jobs.sql")

# Fields an update may set: the columns, never the id or the parts (those are rows of their own).
_INSTALL_FIELDS = frozenset(InstallJob.model_fields) - {"id", "download_parts", "created_at", "updated_at"}
_DOWNLOAD_FIELDS = frozenset(DownloadJob.model_fields) - {"id"}


def _changes_json(changes: Mapping[str, object], allowed: frozenset[str]) -> dict[str, Any]:
    unknown = set(changes) - allowed
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    # Models, enums and datetimes as JSON values; the SQL casts them back per column.
    return {name: to_jsonable_python(value) for name, value in changes.items()}


def _install(row: Mapping[str, Any], parts: list[DownloadJob]) -> InstallJob:
    return InstallJob.model_validate({**dict(row), "download_parts": parts})


def _download(row: Mapping[str, Any]) -> DownloadJob:
    return DownloadJob.model_validate(dict(row))


class PgModelJobStore:
    """Install and download jobs over an asyncpg pool with the jsonb codec (db.create_pool)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    # Installs

    async def create_install(self, job: InstallJob) -> InstallJob:
        """Insert (the given `id` is ignored) and return it with its new id."""
        row = await self._pool.fetchrow(
            Q.insert_install,
            job.status.value,
            job.source.model_dump(mode="json"),
            job.inplace,
            job.config_in.model_dump(mode="json"),
            job.config_out_key,
            job.local_path,
            job.bytes,
            job.total_bytes,
            job.source_metadata,
            job.error_reason,
            job.error,
            job.error_traceback,
        )
        return _install(row, [])

    async def get_install(self, job_id: int) -> InstallJob:
        """With its download parts; raise NotFound."""
        row = await self._pool.fetchrow(Q.get_install, job_id)
        if row is None:
            raise NotFound(f"No install job {job_id}")
        return _install(row, await self._parts_of(job_id))

    async def list_installs(self) -> list[InstallJob]:
        """Every install job, oldest first, with download parts."""
        async with self._pool.acquire() as connection, connection.transaction(isolation="repeatable_read"):
            # One snapshot, so parts match their installs.
            rows = await connection.fetch(Q.list_installs)
            parts = await connection.fetch(Q.parts_of_installs, [row["id"] for row in rows])
        by_install: dict[int, list[DownloadJob]] = {}
        for part in parts:
            by_install.setdefault(part["install_job_id"], []).append(_download(part))
        return [_install(row, by_install.get(row["id"], [])) for row in rows]

    async def update_install(self, job_id: int, changes: Mapping[str, object]) -> InstallJob:
        """Set fields (InstallJob field names, `source`/`config_in` as models or dicts); raise NotFound."""
        row = await self._pool.fetchrow(Q.update_install, job_id, _changes_json(changes, _INSTALL_FIELDS))
        if row is None:  # missing, or a finished job whose status stays
            return await self.get_install(job_id)
        return _install(row, await self._parts_of(job_id))

    async def prune_installs(self) -> int:
        """Delete finished installs (completed, error, cancelled); return how many."""
        count: int = await self._pool.fetchval(Q.prune_installs)
        return count

    async def _parts_of(self, job_id: int) -> list[DownloadJob]:
        return [_download(row) for row in await self._pool.fetch(Q.parts_of_installs, [job_id])]

    # Downloads

    async def create_download(self, job: DownloadJob) -> DownloadJob:
        """Insert (the given `id` is ignored) and return it with its new id."""
        row = await self._pool.fetchrow(
            Q.insert_download,
            job.install_job_id,
            job.source,
            job.dest,
            job.download_path,
            job.status.value,
            job.bytes,
            job.total_bytes,
            job.priority,
            job.error_type,
            job.error,
            job.content_type,
            job.sha256,
            job.kind,
            job.owner,
            job.job_started,
            job.job_ended,
        )
        return _download(row)

    async def get_download(self, job_id: int) -> DownloadJob:
        """Raise NotFound."""
        row = await self._pool.fetchrow(Q.get_download, job_id)
        if row is None:
            raise NotFound(f"No download job {job_id}")
        return _download(row)

    async def list_downloads(self, *, owner: str | None = None, install_job_id: int | None = None) -> list[DownloadJob]:
        """Downloads, oldest first; `install_job_id=None` lists all of them."""
        return [_download(row) for row in await self._pool.fetch(Q.list_downloads, owner, install_job_id)]

    async def update_download(self, job_id: int, changes: Mapping[str, object]) -> DownloadJob:
        """Set fields (DownloadJob field names); raise NotFound."""
        row = await self._pool.fetchrow(Q.update_download, job_id, _changes_json(changes, _DOWNLOAD_FIELDS))
        if row is None:  # missing, or a finished job whose status stays
            return await self.get_download(job_id)
        return _download(row)

    async def prune_downloads(self) -> int:
        """Delete finished downloads that belong to no install; return how many."""
        count: int = await self._pool.fetchval(Q.prune_downloads)
        return count

    # Leases (migration 0006)

    async def renew_leases(self, *, installs: Sequence[int], downloads: Sequence[int], seconds: float) -> None:
        """Extend the leases of these unfinished jobs (the ones this replica runs) to `seconds` from now."""
        if installs:
            await self._pool.execute(Q.renew_install_leases, list(installs), seconds)
        if downloads:
            await self._pool.execute(Q.renew_download_leases, list(downloads), seconds)

    async def reap_installs(self, reason: str, message: str) -> list[InstallJob]:
        """End as errors the unfinished installs whose lease expired; return them."""
        rows = await self._pool.fetch(Q.reap_installs, reason, message)
        return [_install(row, await self._parts_of(row["id"])) for row in rows]

    async def reap_downloads(self, error_type: str, message: str) -> list[DownloadJob]:
        """End as errors the unfinished downloads whose lease expired; return them."""
        return [_download(row) for row in await self._pool.fetch(Q.reap_downloads, error_type, message)]
