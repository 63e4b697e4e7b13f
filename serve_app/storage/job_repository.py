"""PgJobRepository: the JobRepository port in Postgres, one transaction per method, SQL in sql/queries.sql."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import asyncpg

from serve_app.domain.errors import ImageNotFound, JobNotFound, QueueFull
from serve_app.domain.images import GeneratedImage, ImageRecord, StoredImage
from serve_app.domain.jobs import ClaimedJob, Job, JobError, JobStatus, NewJob
from serve_app.domain.ports import BusMessage
from serve_app.storage.event_bus import publish_on
from serve_app.storage.queries import QUERIES as Q

# What the reaper records on a job whose worker stopped renewing its lease.
LEASE_EXPIRED = JobError(type="LeaseExpired", message="the lease expired before the worker reported back")


def job_from_row(row: Mapping[str, Any]) -> Job:
    """A jobs row (plus image_names where selected) as the domain Job; error is None unless error_type is set."""
    fields = dict(row)
    error = None
    if fields["error_type"] is not None:
        error = JobError(
            type=fields["error_type"], message=fields["error_message"] or "", traceback=fields["error_traceback"]
        )
    # Columns the model lacks (error_*) are ignored by pydantic; a missing image_names defaults to [].
    return Job.model_validate({**fields, "error": error})


def _json_or_none(value: object) -> str | None:
    # unnest() of a text[] carries JSON documents; NULL stays NULL rather than the JSON `null`.
    return None if value is None else json.dumps(value)


def image_from_row(row: Mapping[str, Any]) -> ImageRecord:
    """An images row as the domain ImageRecord."""
    return ImageRecord.model_validate(dict(row))


class PgJobRepository:
    """Durable job and image state in Postgres, over an asyncpg pool with the jsonb codec (db.create_pool)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def enqueue(
        self,
        jobs: Sequence[NewJob],
        *,
        max_waiting: int | None = None,
        truncate: bool = False,
        announce: Callable[[list[Job]], BusMessage] | None = None,
    ) -> list[Job]:
        """Insert jobs as pending. Past max_waiting waiting jobs: raise QueueFull and insert none, or with
        `truncate` insert only the leading jobs that fit (InvokeAI's enqueue_batch: `enqueued` < `requested`).
        `announce` builds an event published in the same transaction, so it precedes any claim of the jobs."""
        async with self._pool.acquire() as connection, connection.transaction():
            if max_waiting is not None:
                await connection.execute(Q.enqueue_lock)
                pending: int = await connection.fetchval(Q.count_pending)
                if truncate:
                    jobs = jobs[: max(0, max_waiting - pending)]
                elif pending + len(jobs) > max_waiting:
                    raise QueueFull(
                        f"The queue is full: {pending} jobs are waiting and at most {max_waiting} may wait; "
                        f"{len(jobs)} more do not fit"
                    )
            if not jobs:
                if announce is not None:
                    await publish_on(connection, announce([]))
                return []
            ids = [uuid.uuid4() for _ in jobs]
            rows = await connection.fetch(
                Q.insert_jobs,
                ids,
                [job.queue_id for job in jobs],
                [job.batch_id for job in jobs],
                [job.origin for job in jobs],
                [job.destination for job in jobs],
                [job.priority for job in jobs],
                [json.dumps(job.request) for job in jobs],
                [job.owner for job in jobs],
                [job.max_attempts for job in jobs],
                [job.session_id for job in jobs],
                [_json_or_none(job.field_values) for job in jobs],
                [_json_or_none(job.workflow) for job in jobs],
                [job.retried_from_item_id for job in jobs],
            )
            by_id = {row["id"]: job_from_row(row) for row in rows}
            inserted = [by_id[job_id] for job_id in ids]
            if announce is not None:
                await publish_on(connection, announce(inserted))
        return inserted

    async def get(self, job_id: uuid.UUID) -> Job:
        """The job with its image names; raise JobNotFound."""
        row = await self._pool.fetchrow(Q.get_job, job_id)
        if row is None:
            raise JobNotFound(f"No job {job_id}")
        return job_from_row(row)

    async def list_jobs(self, *, owner: str | None = None, limit: int = 100, offset: int = 0) -> list[Job]:
        """Jobs, newest first, optionally of one owner."""
        rows = await self._pool.fetch(Q.list_jobs, owner, limit, offset)
        return [job_from_row(row) for row in rows]

    async def count_by_status(self, queue_id: str | None = None) -> dict[JobStatus, int]:
        """How many jobs are in each status (every status present, zeros included)."""
        counts = dict.fromkeys(JobStatus, 0)
        for row in await self._pool.fetch(Q.count_by_status, queue_id):
            counts[JobStatus(row["status"])] = row["n"]
        return counts

    async def claim(self, limit: int, lease_seconds: float) -> list[ClaimedJob]:
        """Claim up to `limit` pending jobs by priority then FIFO, set in_progress with a lease, attempt += 1."""
        if limit <= 0:
            return []
        rows = await self._pool.fetch(Q.claim_jobs, limit, lease_seconds)
        return [ClaimedJob.model_validate(dict(row)) for row in rows]

    async def renew_leases(self, claims: Sequence[tuple[uuid.UUID, int]], lease_seconds: float) -> set[uuid.UUID]:
        """Extend leases of (job, attempt) pairs still in progress; return the ids renewed."""
        if not claims:
            return set()
        rows = await self._pool.fetch(
            Q.renew_leases, [job_id for job_id, _ in claims], [attempt for _, attempt in claims], lease_seconds
        )
        return {row["id"] for row in rows}

    async def report_progress(self, job_id: uuid.UUID, attempt: int, step: int, total: int) -> bool:
        """Record progress; False when the attempt is no longer the running one."""
        return bool(await self._pool.fetchval(Q.report_progress, job_id, attempt, step, total))

    async def complete(
        self,
        job_id: uuid.UUID,
        attempt: int,
        images: Sequence[StoredImage],
        session: dict[str, Any] | None = None,
    ) -> bool:
        """Insert image rows and mark completed in one transaction; False (nothing written) if the attempt is stale."""
        async with self._pool.acquire() as connection, connection.transaction():
            # The fenced update first: it locks the row, and a stale attempt stops before any image row.
            if not await connection.fetchval(Q.complete_job, job_id, attempt, session):
                return False
            await connection.executemany(
                Q.upsert_image,
                [
                    (
                        image.name,
                        job_id,
                        image.position,
                        image.width,
                        image.height,
                        image.storage_key,
                        image.thumbnail_key,
                        image.metadata,
                    )
                    for image in images
                ],
            )
        return True

    async def fail(
        self, job_id: uuid.UUID, attempt: int, error: JobError, session: dict[str, Any] | None = None
    ) -> bool:
        """Mark failed (storing the session as far as it ran, when given); False if the attempt is stale."""
        return bool(
            await self._pool.fetchval(Q.fail_job, job_id, attempt, error.type, error.message, error.traceback, session)
        )

    async def add_images(self, job_id: uuid.UUID, attempt: int, images: Sequence[GeneratedImage]) -> bool:
        """Insert the rows of images a running attempt produced; False (nothing written) if it is stale."""
        async with self._pool.acquire() as connection, connection.transaction():
            if not await connection.fetchval(Q.lock_running_attempt, job_id, attempt):
                return False
            await connection.executemany(
                Q.insert_generated_image,
                [
                    (
                        image.name,
                        job_id,
                        image.position,
                        image.width,
                        image.height,
                        image.category.value,
                        image.is_intermediate,
                        image.metadata,
                        image.storage_key,
                        image.thumbnail_key,
                        image.board_id,
                        image.session_id,
                        image.node_id,
                        image.has_workflow,
                        image.owner,
                    )
                    for image in images
                ],
            )
        return True

    async def release(self, job_id: uuid.UUID, attempt: int, error: JobError) -> JobStatus | None:
        """Give a lost attempt back: pending again, or failed once attempts are exhausted. None if stale."""
        status = await self._pool.fetchval(Q.release_job, job_id, attempt, error.type, error.message, error.traceback)
        return None if status is None else JobStatus(status)

    async def requeue_expired(self) -> int:
        """The reaper: release every in-progress job whose lease has expired; return how many."""
        count: int = await self._pool.fetchval(Q.requeue_expired, LEASE_EXPIRED.type, LEASE_EXPIRED.message)
        return count

    async def cancel(self, job_id: uuid.UUID) -> Job:
        """Cancel a pending or running job (terminal jobs are returned unchanged); raise JobNotFound."""
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute(Q.cancel_job, job_id)
            row = await connection.fetchrow(Q.get_job, job_id)
        if row is None:
            raise JobNotFound(f"No job {job_id}")
        return job_from_row(row)

    async def delete(self, job_id: uuid.UUID) -> list[ImageRecord]:
        """Delete a job and its image rows; return the deleted images so their objects can go too."""
        async with self._pool.acquire() as connection, connection.transaction():
            images = await connection.fetch(Q.delete_job_images, job_id)
            if await connection.fetchval(Q.delete_job, job_id) is None:
                # Raising rolls the transaction back (there were no images to delete anyway).
                raise JobNotFound(f"No job {job_id}")
        return sorted((image_from_row(row) for row in images), key=lambda image: image.position)

    async def get_image(self, name: str) -> ImageRecord:
        """One image row; raise ImageNotFound."""
        row = await self._pool.fetchrow(Q.get_image, name)
        if row is None:
            raise ImageNotFound(f"No image {name}")
        return image_from_row(row)
