"""The queue under contention: concurrent claimers never share a job, concurrent submitters never overshoot."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import Counter

import pytest

from serve_app.domain.errors import QueueFull
from serve_app.domain.jobs import JobStatus, NewJob
from serve_app.storage.db import create_pool
from serve_app.storage.job_repository import PgJobRepository

pytestmark = pytest.mark.timeout(60)

JOBS = 200
TASKS = 8
THREADS = 2


async def _claim_until_empty(repo: PgJobRepository, batch: int) -> list[uuid.UUID]:
    claimed: list[uuid.UUID] = []
    while claims := await repo.claim(batch, lease_seconds=60):
        claimed.extend(claim.id for claim in claims)
    return claimed


def _thread_worker(database_url: str, barrier: threading.Barrier, out: list[uuid.UUID]) -> None:
    # Its own event loop and connection: a second process would look exactly like this to Postgres.
    async def run() -> None:
        pool = await create_pool(database_url, min_size=1, max_size=1)
        try:
            barrier.wait()
            out.extend(await _claim_until_empty(PgJobRepository(pool), batch=3))
        finally:
            await pool.close()

    asyncio.run(run())


async def test_concurrent_claimers_never_claim_a_job_twice(database_url, repo):
    jobs = await repo.enqueue([NewJob(request={"i": i}, priority=i % 3) for i in range(JOBS)])
    thread_claims: list[list[uuid.UUID]] = [[] for _ in range(THREADS)]
    barrier = threading.Barrier(THREADS)
    threads = [threading.Thread(target=_thread_worker, args=(database_url, barrier, out)) for out in thread_claims]
    pool = await create_pool(database_url, min_size=TASKS, max_size=TASKS)
    try:
        for thread in threads:
            thread.start()
        task_repo = PgJobRepository(pool)
        task_claims = await asyncio.gather(*(_claim_until_empty(task_repo, batch=1 + i % 4) for i in range(TASKS)))
        for thread in threads:
            await asyncio.to_thread(thread.join, 30)
    finally:
        await pool.close()

    claimed = [job_id for claims in [*task_claims, *thread_claims] for job_id in claims]
    assert [job_id for job_id, n in Counter(claimed).items() if n > 1] == []
    assert sorted(claimed) == sorted(job.id for job in jobs)
    assert (await repo.count_by_status())[JobStatus.IN_PROGRESS] == JOBS
    assert sum(1 for claims in task_claims if claims) > 1, "the claimers did not actually run concurrently"


async def test_concurrent_submitters_cannot_overshoot_max_waiting(database_url, repo):
    submitters, per_batch, max_waiting = 12, 3, 10
    pool = await create_pool(database_url, min_size=submitters, max_size=submitters)
    start = asyncio.Barrier(submitters)

    async def submit() -> bool:
        await start.wait()
        try:
            await PgJobRepository(pool).enqueue([NewJob(request={}) for _ in range(per_batch)], max_waiting=max_waiting)
        except QueueFull:
            return False
        return True

    try:
        accepted = await asyncio.gather(*(submit() for _ in range(submitters)))
    finally:
        await pool.close()

    assert sum(accepted) == max_waiting // per_batch
    assert (await repo.count_by_status())[JobStatus.PENDING] == sum(accepted) * per_batch
