"""PgJobRepository against a real Postgres: ordering, leases, fencing, retries, terminal states."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from serve_app.domain.errors import ImageNotFound, JobNotFound, QueueFull
from serve_app.domain.images import StoredImage, image_key, image_name, thumbnail_key
from serve_app.domain.jobs import JobError, JobStatus, NewJob
from serve_app.domain.ports import JobRepository
from serve_app.storage.job_repository import PgJobRepository

pytestmark = pytest.mark.timeout(30)

LOST = JobError(type="ExecutorLost", message="replica died", traceback="Traceback ...")


def new_job(**fields) -> NewJob:
    return NewJob(request={"model": "tiny", "prompt": "a cat", "nested": {"steps": [1, 2]}}, **fields)


def stored_image(job_id: uuid.UUID, index: int) -> StoredImage:
    name = image_name(job_id, index)
    return StoredImage(
        name=name,
        width=64,
        height=48,
        position=index,
        storage_key=image_key(name),
        thumbnail_key=thumbnail_key(name),
        metadata={"seed": 42 + index},
    )


async def expire_lease(pool, job_id: uuid.UUID) -> None:
    """Make a lease expire now, deterministically (no sleeping)."""
    await pool.execute("UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = $1", job_id)


async def claim_one(repo: PgJobRepository, job_id: uuid.UUID) -> int:
    claims = await repo.claim(1, lease_seconds=60)
    assert [claim.id for claim in claims] == [job_id]
    return claims[0].attempt


def test_implements_the_port(repo: PgJobRepository) -> None:
    port: JobRepository = repo  # mypy checks the structure against the Protocol
    assert port is repo


async def test_enqueue_stores_pending_jobs_in_submission_order(repo):
    jobs = await repo.enqueue([new_job(owner="alice", origin="invokeai", destination="canvas"), new_job()])

    assert [job.status for job in jobs] == [JobStatus.PENDING, JobStatus.PENDING]
    assert jobs[0].item_id < jobs[1].item_id
    first = jobs[0]
    assert (first.owner, first.origin, first.destination) == ("alice", "invokeai", "canvas")
    assert (first.attempts, first.max_attempts) == (0, 3)
    assert first.request == {"model": "tiny", "prompt": "a cat", "nested": {"steps": [1, 2]}}
    assert first.error is None and first.image_names == []
    assert first.created_at.tzinfo is not None
    assert abs(first.created_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert await repo.get(first.id) == first
    assert await repo.enqueue([]) == []


async def test_claim_takes_priority_first_then_fifo(repo):
    jobs = await repo.enqueue([new_job(priority=p) for p in (0, 5, 0, 5, 1)])

    claims = await repo.claim(10, lease_seconds=60)

    expected = [jobs[1], jobs[3], jobs[4], jobs[0], jobs[2]]
    assert [claim.id for claim in claims] == [job.id for job in expected]
    assert all(claim.request == jobs[0].request for claim in claims)


async def test_claim_respects_limit_and_starts_an_attempt(repo):
    jobs = await repo.enqueue([new_job() for _ in range(3)])

    first = await repo.claim(2, lease_seconds=60)
    second = await repo.claim(5, lease_seconds=60)

    assert [claim.id for claim in first + second] == [job.id for job in jobs]
    assert await repo.claim(5, lease_seconds=60) == []
    assert await repo.claim(0, lease_seconds=60) == []
    assert {claim.attempt for claim in first + second} == {1}
    job = await repo.get(jobs[0].id)
    assert job.status is JobStatus.IN_PROGRESS and job.attempts == 1
    assert job.started_at is not None and job.lease_expires_at is not None
    assert timedelta(seconds=50) < job.lease_expires_at - job.started_at <= timedelta(seconds=61)


async def test_renew_leases_only_for_the_running_attempt(repo, pool):
    a, b = await repo.enqueue([new_job(), new_job()])
    await repo.claim(2, lease_seconds=1)
    before = await repo.get(a.id)

    renewed = await repo.renew_leases([(a.id, 1), (b.id, 2), (uuid.uuid4(), 1)], lease_seconds=600)

    assert renewed == {a.id}
    after = await repo.get(a.id)
    assert after.lease_expires_at - before.lease_expires_at > timedelta(seconds=500)
    assert await repo.renew_leases([], lease_seconds=600) == set()


async def test_report_progress_is_fenced(repo):
    (job,) = await repo.enqueue([new_job()])
    attempt = await claim_one(repo, job.id)

    assert await repo.report_progress(job.id, attempt, 3, 10)
    assert not await repo.report_progress(job.id, attempt + 1, 4, 10)
    stored = await repo.get(job.id)
    assert (stored.progress_step, stored.progress_total) == (3, 10)


async def test_complete_writes_images_and_status_in_one_go(repo):
    (job,) = await repo.enqueue([new_job()])
    attempt = await claim_one(repo, job.id)
    await repo.report_progress(job.id, attempt, 7, 10)
    images = [stored_image(job.id, 1), stored_image(job.id, 0)]

    assert await repo.complete(job.id, attempt, images)

    done = await repo.get(job.id)
    assert done.status is JobStatus.COMPLETED
    assert (done.progress_step, done.progress_total) == (10, 10)
    assert done.completed_at is not None and done.lease_expires_at is None and done.error is None
    assert done.image_names == [image_name(job.id, 0), image_name(job.id, 1)]
    record = await repo.get_image(image_name(job.id, 1))
    assert (record.job_id, record.position, record.width, record.height) == (job.id, 1, 64, 48)
    assert record.metadata == {"seed": 43} and record.category == "general" and not record.is_intermediate
    assert record.created_at.tzinfo is not None
    with pytest.raises(ImageNotFound):
        await repo.get_image("nope.png")


async def test_complete_twice_is_false_and_never_duplicates_images(repo, pool):
    (job,) = await repo.enqueue([new_job()])
    attempt = await claim_one(repo, job.id)
    images = [stored_image(job.id, 0), stored_image(job.id, 1)]
    assert await repo.complete(job.id, attempt, images)

    assert not await repo.complete(job.id, attempt, images)

    assert await pool.fetchval("SELECT count(*) FROM images WHERE job_id = $1", job.id) == 2


async def test_stale_attempt_cannot_complete_and_writes_nothing(repo, pool):
    (job,) = await repo.enqueue([new_job()])
    stale = await claim_one(repo, job.id)
    await expire_lease(pool, job.id)
    assert await repo.requeue_expired() == 1
    current = await claim_one(repo, job.id)
    assert current == stale + 1

    assert not await repo.complete(job.id, stale, [stored_image(job.id, 0)])
    assert not await repo.fail(job.id, stale, LOST)
    assert await repo.release(job.id, stale, LOST) is None

    assert await pool.fetchval("SELECT count(*) FROM images") == 0
    assert (await repo.get(job.id)).status is JobStatus.IN_PROGRESS
    assert await repo.complete(job.id, current, [stored_image(job.id, 0)])


async def test_fail_records_the_error(repo):
    (job,) = await repo.enqueue([new_job()])
    attempt = await claim_one(repo, job.id)
    error = JobError(type="OutOfMemory", message="too big", traceback="tb")

    assert await repo.fail(job.id, attempt, error)

    failed = await repo.get(job.id)
    assert failed.status is JobStatus.FAILED and failed.error == error
    assert failed.completed_at is not None and failed.lease_expires_at is None


async def test_release_requeues_until_attempts_run_out(repo):
    (job,) = await repo.enqueue([new_job(max_attempts=2)])
    first = await claim_one(repo, job.id)
    await repo.report_progress(job.id, first, 2, 10)

    assert await repo.release(job.id, first, LOST) is JobStatus.PENDING
    pending = await repo.get(job.id)
    assert pending.error == LOST  # visible while it waits for the retry
    assert pending.lease_expires_at is None and pending.progress_step is None and pending.completed_at is None

    second = await claim_one(repo, job.id)
    assert await repo.release(job.id, second, LOST) is JobStatus.FAILED
    failed = await repo.get(job.id)
    assert failed.status is JobStatus.FAILED and failed.completed_at is not None
    assert failed.error is not None and failed.error.type == "RetriesExhausted"
    assert failed.error.message == "gave up after 2 attempts: ExecutorLost: replica died"
    assert await repo.release(job.id, second, LOST) is None
    assert await repo.claim(1, lease_seconds=60) == []


async def test_reaper_requeues_only_expired_leases(repo, pool):
    expired, alive = await repo.enqueue([new_job(), new_job()])
    await repo.claim(2, lease_seconds=60)
    await expire_lease(pool, expired.id)

    assert await repo.requeue_expired() == 1

    requeued = await repo.get(expired.id)
    assert requeued.status is JobStatus.PENDING and requeued.lease_expires_at is None
    assert requeued.error is not None and requeued.error.type == "LeaseExpired"
    assert (await repo.get(alive.id)).status is JobStatus.IN_PROGRESS
    assert await repo.requeue_expired() == 0
    assert [claim.attempt for claim in await repo.claim(1, lease_seconds=60)] == [2]


async def test_reaper_fails_the_job_once_attempts_are_exhausted(repo, pool):
    (job,) = await repo.enqueue([new_job(max_attempts=2)])
    for _ in range(2):
        await claim_one(repo, job.id)
        await expire_lease(pool, job.id)
        assert await repo.requeue_expired() == 1

    failed = await repo.get(job.id)
    assert failed.status is JobStatus.FAILED and failed.attempts == 2
    assert failed.error is not None and failed.error.type == "RetriesExhausted"
    assert failed.error.message.startswith("gave up after 2 attempts: LeaseExpired: ")
    assert await repo.claim(1, lease_seconds=60) == []


async def test_cancel_pending_and_running_jobs(repo):
    running, pending = await repo.enqueue([new_job(), new_job()])
    attempt = await claim_one(repo, running.id)

    canceled_running = await repo.cancel(running.id)
    canceled_pending = await repo.cancel(pending.id)

    for job in (canceled_running, canceled_pending):
        assert job.status is JobStatus.CANCELED
        assert job.completed_at is not None and job.lease_expires_at is None
    assert await repo.claim(5, lease_seconds=60) == []
    # The worker still running the canceled attempt finds out at its next report.
    assert not await repo.report_progress(running.id, attempt, 1, 10)


async def test_cancel_terminal_job_returns_it_unchanged(repo):
    (job,) = await repo.enqueue([new_job()])
    attempt = await claim_one(repo, job.id)
    await repo.complete(job.id, attempt, [stored_image(job.id, 0)])
    done = await repo.get(job.id)

    assert await repo.cancel(job.id) == done


async def test_cancel_unknown_job_raises(repo):
    with pytest.raises(JobNotFound):
        await repo.cancel(uuid.uuid4())


async def _finish(repo: PgJobRepository, job_id: uuid.UUID, attempt: int, outcome: JobStatus) -> None:
    if outcome is JobStatus.COMPLETED:
        assert await repo.complete(job_id, attempt, [stored_image(job_id, 0)])
    elif outcome is JobStatus.FAILED:
        assert await repo.fail(job_id, attempt, LOST)
    else:
        await repo.cancel(job_id)


@pytest.mark.parametrize("outcome", [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED])
async def test_terminal_states_never_change(repo, pool, outcome):
    (job,) = await repo.enqueue([new_job()])
    attempt = await claim_one(repo, job.id)
    await _finish(repo, job.id, attempt, outcome)
    # Even a lease left in the past must not wake the reaper for a finished job.
    await pool.execute("UPDATE jobs SET lease_expires_at = now() - interval '1 hour' WHERE id = $1", job.id)
    before = await repo.get(job.id)

    assert not await repo.complete(job.id, attempt, [stored_image(job.id, 5)])
    assert not await repo.fail(job.id, attempt, LOST)
    assert await repo.release(job.id, attempt, LOST) is None
    assert not await repo.report_progress(job.id, attempt, 1, 2)
    assert await repo.renew_leases([(job.id, attempt)], lease_seconds=60) == set()
    assert await repo.requeue_expired() == 0
    assert await repo.claim(1, lease_seconds=60) == []
    assert await repo.cancel(job.id) == before

    assert await repo.get(job.id) == before
    assert await pool.fetchval("SELECT count(*) FROM images WHERE name = $1", image_name(job.id, 5)) == 0


async def test_enqueue_raises_queue_full_and_stores_nothing(repo):
    await repo.enqueue([new_job(), new_job()], max_waiting=3)

    with pytest.raises(QueueFull):
        await repo.enqueue([new_job(), new_job()], max_waiting=3)

    assert (await repo.count_by_status())[JobStatus.PENDING] == 2
    await repo.claim(1, lease_seconds=60)  # running jobs are not waiting
    assert len(await repo.enqueue([new_job(), new_job()], max_waiting=3)) == 2


async def test_delete_returns_the_images_it_deleted(repo):
    (job,) = await repo.enqueue([new_job()])
    attempt = await claim_one(repo, job.id)
    await repo.complete(job.id, attempt, [stored_image(job.id, 1), stored_image(job.id, 0)])

    deleted = await repo.delete(job.id)

    assert [image.name for image in deleted] == [image_name(job.id, 0), image_name(job.id, 1)]
    assert deleted[0].storage_key == image_key(image_name(job.id, 0))
    with pytest.raises(JobNotFound):
        await repo.get(job.id)
    with pytest.raises(ImageNotFound):
        await repo.get_image(image_name(job.id, 0))
    with pytest.raises(JobNotFound):
        await repo.delete(job.id)


async def test_list_is_newest_first_and_filters_by_owner(repo):
    a, b, c = await repo.enqueue([new_job(owner="alice"), new_job(owner="bob"), new_job(owner="alice")])

    assert [job.id for job in await repo.list_jobs()] == [c.id, b.id, a.id]
    assert [job.id for job in await repo.list_jobs(owner="alice")] == [c.id, a.id]
    assert [job.id for job in await repo.list_jobs(limit=1, offset=1)] == [b.id]


async def test_count_by_status_per_queue(repo):
    await repo.enqueue([new_job(queue_id="q1"), new_job(queue_id="q1"), new_job(queue_id="q2")])
    await repo.claim(1, lease_seconds=60)

    counts = await repo.count_by_status("q1")

    assert counts == {
        JobStatus.PENDING: 1,
        JobStatus.IN_PROGRESS: 1,
        JobStatus.COMPLETED: 0,
        JobStatus.FAILED: 0,
        JobStatus.CANCELED: 0,
    }
    assert (await repo.count_by_status())[JobStatus.PENDING] == 2
