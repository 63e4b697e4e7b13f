"""PgChangeFeed: the NOTIFY trigger's changes reach subscribers, and the feed survives a dropped connection."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio

from serve_app.domain.jobs import JobStatus, NewJob
from serve_app.domain.ports import ChangeFeed, JobChange
from serve_app.storage.change_feed import APPLICATION_NAME, PgChangeFeed

pytestmark = pytest.mark.timeout(30)

WAIT_S = 5.0


class Recorder:
    """A subscriber that remembers every change and lets a test wait for one."""

    def __init__(self) -> None:
        self.changes: list[JobChange] = []
        self._arrived = asyncio.Event()

    def __call__(self, change: JobChange) -> None:
        self.changes.append(change)
        self._arrived.set()

    async def wait_for(self, predicate: Callable[[JobChange], bool], timeout: float = WAIT_S) -> JobChange:
        async with asyncio.timeout(timeout):
            while True:
                for change in self.changes:
                    if predicate(change):
                        return change
                self._arrived.clear()
                await self._arrived.wait()


def about(job_id: uuid.UUID) -> Callable[[JobChange], bool]:
    return lambda change: change.id == job_id


@pytest_asyncio.fixture(loop_scope="session")
async def feed(database_url) -> AsyncIterator[PgChangeFeed]:
    change_feed = PgChangeFeed(database_url, min_backoff_s=0.05, max_backoff_s=0.2)
    await change_feed.start()
    try:
        yield change_feed
    finally:
        await change_feed.stop()


def test_implements_the_port(feed: PgChangeFeed) -> None:
    port: ChangeFeed = feed  # mypy checks the structure against the Protocol
    assert port is feed


async def test_subscriber_sees_every_state_change(feed, repo):
    recorder = Recorder()
    feed.subscribe(recorder)

    (job,) = await repo.enqueue([NewJob(request={}, queue_id="q1")])
    await recorder.wait_for(lambda c: c.id == job.id and c.status is JobStatus.PENDING)
    (claim,) = await repo.claim(1, lease_seconds=60)
    await recorder.wait_for(lambda c: c.status is JobStatus.IN_PROGRESS)
    # A lease renewal is bookkeeping, not news: the next change seen must be the progress report.
    await repo.renew_leases([(job.id, claim.attempt)], lease_seconds=120)
    await repo.report_progress(job.id, claim.attempt, 3, 10)
    await recorder.wait_for(lambda c: c.progress_step == 3)
    await repo.complete(job.id, claim.attempt, [])
    done = await recorder.wait_for(lambda c: c.status is JobStatus.COMPLETED)

    assert [(c.status, c.progress_step, c.progress_total) for c in recorder.changes] == [
        (JobStatus.PENDING, None, None),
        (JobStatus.IN_PROGRESS, None, None),
        (JobStatus.IN_PROGRESS, 3, 10),
        (JobStatus.COMPLETED, 10, 10),
    ]
    assert (done.id, done.item_id, done.queue_id) == (job.id, job.item_id, "q1")


async def test_a_failing_subscriber_does_not_stop_the_others(feed, repo, caplog):
    def broken(change: JobChange) -> None:
        raise RuntimeError("subscriber bug")

    feed.subscribe(broken)
    unsubscribed = Recorder()
    unsubscribe = feed.subscribe(unsubscribed)
    unsubscribe()
    recorder = Recorder()
    feed.subscribe(recorder)

    with caplog.at_level(logging.ERROR, logger="serve_app.storage.change_feed"):
        (job,) = await repo.enqueue([NewJob(request={})])
        await recorder.wait_for(about(job.id))

    assert unsubscribed.changes == []
    assert "subscriber bug" in caplog.text


async def test_feed_reconnects_after_the_connection_is_killed(feed, repo, pool):
    recorder = Recorder()
    feed.subscribe(recorder)

    killed = await pool.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE application_name = $1 AND datname = current_database()",
        APPLICATION_NAME,
    )
    assert killed == 1

    # Notifications sent while it reconnects are lost (callers poll as a fallback), so keep
    # producing changes until one arrives through the new connection.
    async with asyncio.timeout(WAIT_S * 2):
        while True:
            (job,) = await repo.enqueue([NewJob(request={})])
            try:
                await recorder.wait_for(about(job.id), timeout=0.5)
                break
            except TimeoutError:
                continue
    assert feed.connections == 2
