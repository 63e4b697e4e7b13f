"""PgSessionQueue against a real Postgres: queue order, views, bulk cancels and deletes, pause."""

from __future__ import annotations

import asyncpg
import pytest

from serve_app.domain.errors import JobNotFound
from serve_app.domain.jobs import JobError, JobStatus, NewJob
from serve_app.domain.ports import SessionQueueStore
from serve_app.storage.job_repository import PgJobRepository
from serve_app.storage.session_queue_repository import PgSessionQueue

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def queue(pool) -> PgSessionQueue:
    return PgSessionQueue(pool)


def item(**fields) -> NewJob:
    fields.setdefault("session_id", "s")
    return NewJob(request={"kind": "graph", "graph": {"id": "g", "nodes": {}, "edges": []}}, **fields)


def test_implements_the_port(queue: PgSessionQueue) -> None:
    port: SessionQueueStore = queue
    assert port is queue


async def test_list_all_is_in_queue_order_and_scoped_to_the_queue(repo: PgJobRepository, queue):
    low, high, other = await repo.enqueue([item(priority=0), item(priority=5), item(queue_id="other", priority=9)])
    listed = await queue.list_all("default")
    assert [job.item_id for job in listed] == [high.item_id, low.item_id]
    assert await queue.max_pending_priority("default") == 5
    assert [job.item_id for job in await queue.list_all("other")] == [other.item_id]


async def test_items_by_ids_keeps_request_order_and_skips_unknown_and_foreign(repo, queue):
    a, b, foreign = await repo.enqueue([item(), item(), item(queue_id="other")])
    found = await queue.items_by_ids("default", [b.item_id, 999999, a.item_id, foreign.item_id])
    assert [job.item_id for job in found] == [b.item_id, a.item_id]


async def test_item_ids_follow_creation_time_in_both_directions(repo, queue):
    jobs = await repo.enqueue([item(), item(), item()])
    ids = [job.item_id for job in jobs]
    assert await queue.item_ids("default", "ASC") == ids
    assert await queue.item_ids("default", "DESC") == ids[::-1]


async def test_cursor_pages_walk_the_queue_without_gaps_or_repeats(repo, queue):
    await repo.enqueue([item(priority=p) for p in (0, 1, 0, 1, 0)])
    expected = [job.item_id for job in await queue.list_all("default")]
    seen: list[int] = []
    cursor, priority, more = None, 0, True
    while more:
        page, more = await queue.list_cursor(
            "default", limit=2, status=None, cursor=cursor, priority=priority, destination=None
        )
        seen += [job.item_id for job in page]
        cursor, priority = page[-1].item_id, page[-1].priority
    assert seen == expected


async def test_status_counts_current_and_next(repo, queue):
    first, second, third = await repo.enqueue([item(), item(), item(priority=1)])
    [claim] = await repo.claim(1, lease_seconds=60)
    assert claim.id == third.id  # priority first
    await repo.fail(claim.id, claim.attempt, JobError(type="X", message="boom"))
    [claim] = await repo.claim(1, lease_seconds=60)

    status = await queue.status("default")
    assert status.current is not None and status.current.id == first.id
    assert (status.counts.pending, status.counts.in_progress, status.counts.failed, status.counts.total) == (1, 1, 1, 3)
    next_item = await queue.next("default")
    assert next_item is not None and next_item.id == second.id


async def test_batch_and_destination_counts(repo, queue):
    await repo.enqueue([item(batch_id="b1", origin="generate", destination="gallery"), item(batch_id="b1")])
    await repo.enqueue([item(batch_id="b2", destination="gallery")])
    batch = await queue.batch_status("default", "b1")
    assert (batch.origin, batch.destination, batch.counts.pending, batch.counts.total) == ("generate", "gallery", 2, 2)
    unknown = await queue.batch_status("default", "nope")
    assert (unknown.origin, unknown.counts.total) == (None, 0)
    assert (await queue.destination_counts("default", "gallery")).total == 2


async def test_cancel_where_cancels_running_items_but_counts_pending_only(repo, queue):
    running, waiting, other_batch = await repo.enqueue([item(batch_id="b"), item(batch_id="b"), item(batch_id="c")])
    [claim] = await repo.claim(1, lease_seconds=60)
    assert claim.id == running.id

    assert await queue.cancel_where("default", batch_ids=["b"]) == 1
    assert (await repo.get(running.id)).status is JobStatus.CANCELED
    assert (await repo.get(waiting.id)).status is JobStatus.CANCELED
    assert (await repo.get(other_batch.id)).status is JobStatus.PENDING
    # A canceled attempt can no longer report anything.
    assert not await repo.complete(claim.id, claim.attempt, [])


async def test_cancel_and_delete_pending_leave_the_running_item_alone(repo, queue):
    running, *_ = await repo.enqueue([item(), item(), item()])
    await repo.claim(1, lease_seconds=60)
    assert await queue.cancel_pending("default") == 2
    assert (await repo.get(running.id)).status is JobStatus.IN_PROGRESS
    await repo.enqueue([item()])
    assert await queue.delete_pending("default") == 1
    assert (await repo.get(running.id)).status is JobStatus.IN_PROGRESS


async def listen(database_url: str, seen: list[str]):
    connection = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
    await connection.add_listener("serve_app_jobs_v1", lambda *args: seen.append(args[3]))
    return connection


async def test_delete_items_cancels_the_running_one_first_then_deletes_everything(repo, queue, database_url):
    running, _, elsewhere = await repo.enqueue([item(destination="d"), item(), item(queue_id="other")])
    await repo.claim(1, lease_seconds=60)
    statuses_seen: list[str] = []
    listener = await listen(database_url, statuses_seen)
    try:
        assert await queue.delete_items("default") == 2
        await listener.execute("SELECT 1")  # notifications are delivered before the next reply
    finally:
        await listener.close()
    assert any('"canceled"' in payload for payload in statuses_seen)
    with pytest.raises(JobNotFound):
        await repo.get(running.id)
    assert (await repo.get(elsewhere.id)).status is JobStatus.PENDING


async def test_prune_deletes_only_finished_items(repo, queue):
    done, waiting = await repo.enqueue([item(), item()])
    [claim] = await repo.claim(1, lease_seconds=60)
    await repo.complete(claim.id, claim.attempt, [], {"id": "s", "results": {}})
    assert (await repo.get(done.id)).session == {"id": "s", "results": {}}
    assert await queue.prune("default") == 1
    assert [job.id for job in await queue.list_all("default")] == [waiting.id]


async def test_retry_candidates_are_failed_or_canceled_in_the_order_asked(repo, queue):
    a, b, c = await repo.enqueue([item(), item(), item()])
    await repo.cancel(a.id)
    await repo.cancel(c.id)
    found = await queue.retry_candidates("default", [c.item_id, b.item_id, a.item_id])
    assert [job.id for job in found] == [c.id, a.id]


async def test_pause_stops_claims_and_resume_wakes_claimers(repo, queue, database_url):
    await repo.enqueue([item()])
    paused = await queue.set_paused(True)
    assert (paused.is_started, paused.is_processing) == (False, False)
    assert await repo.claim(1, lease_seconds=60) == []

    woken: list[str] = []
    listener = await listen(database_url, woken)
    try:
        resumed = await queue.set_paused(False)
        await listener.execute("SELECT 1")
    finally:
        await listener.close()
    assert resumed.is_started and woken, "resume must announce a pending job"
    assert len(await repo.claim(1, lease_seconds=60)) == 1
    assert (await queue.processor_status()).is_processing
