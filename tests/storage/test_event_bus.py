"""PgEventBus + PgChangeFeed.subscribe_events: bus messages (small and parked) and job changes on one ordered stream."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from serve_app.domain.jobs import JobStatus, NewJob
from serve_app.domain.ports import BusMessage, EventBus, EventSource, JobChange
from serve_app.storage.change_feed import APPLICATION_NAME, PgChangeFeed
from serve_app.storage.event_bus import INLINE_LIMIT_BYTES, PgEventBus

pytestmark = pytest.mark.timeout(30)

WAIT_S = 5.0


class Inbox:
    """An event subscriber a test can await item by item."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[JobChange | BusMessage] = asyncio.Queue()

    def __call__(self, item: JobChange | BusMessage) -> None:
        self.queue.put_nowait(item)

    async def next(self, timeout: float = WAIT_S) -> JobChange | BusMessage:
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def take(self, count: int) -> list[JobChange | BusMessage]:
        return [await self.next() for _ in range(count)]


def message(index: int, *, size: int = 0, room: str | None = "default") -> BusMessage:
    return BusMessage(event="test_event", room=room, data={"index": index, "padding": "é" * size})


@pytest_asyncio.fixture(loop_scope="session")
async def feed(database_url) -> AsyncIterator[PgChangeFeed]:
    change_feed = PgChangeFeed(database_url, min_backoff_s=0.05, max_backoff_s=0.2)
    await change_feed.start()
    try:
        yield change_feed
    finally:
        await change_feed.stop()


@pytest.fixture
def bus(pool) -> PgEventBus:
    return PgEventBus(pool)


def test_implements_the_ports(feed: PgChangeFeed, bus: PgEventBus) -> None:
    source: EventSource = feed
    publisher: EventBus = bus
    assert (source, publisher) == (feed, bus)


async def test_small_and_large_messages_arrive_whole_and_in_order(feed, bus, pool):
    inbox = Inbox()
    feed.subscribe_events(inbox)
    # Large ones (two bytes per "é") go through event_overflow; they must not fall behind the small ones.
    sent = [message(0), message(1, size=INLINE_LIMIT_BYTES), message(2), message(3, size=20_000), message(4)]
    for item in sent:
        await bus.publish(item)

    assert await inbox.take(len(sent)) == sent
    assert bus.overflowed == 2
    assert await pool.fetchval("SELECT count(*) FROM event_overflow") == 2


async def test_bus_messages_interleave_with_job_changes_in_commit_order(feed, bus, repo):
    inbox = Inbox()
    feed.subscribe_events(inbox)
    job_only: list[JobChange] = []
    feed.subscribe(job_only.append)

    await bus.publish(message(0))
    (job,) = await repo.enqueue([NewJob(request={}, queue_id="q1")])
    await bus.publish(message(1, size=10_000))
    (claim,) = await repo.claim(1, lease_seconds=60)
    await bus.publish(message(2))
    await repo.report_progress(job.id, claim.attempt, 1, 4)
    await bus.publish(message(3, size=10_000))

    received = await inbox.take(7)
    shapes = [
        (item.status, item.progress_step) if isinstance(item, JobChange) else item.data["index"] for item in received
    ]
    assert shapes == [0, (JobStatus.PENDING, None), 1, (JobStatus.IN_PROGRESS, None), 2, (JobStatus.IN_PROGRESS, 1), 3]
    # The job-only subscribers keep getting job changes alone.
    assert [change.status for change in job_only] == [JobStatus.PENDING, JobStatus.IN_PROGRESS, JobStatus.IN_PROGRESS]


async def test_every_feed_on_the_database_receives_a_message_published_once(database_url, bus):
    feeds = [PgChangeFeed(database_url) for _ in range(2)]
    inboxes = [Inbox() for _ in feeds]
    for feed, inbox in zip(feeds, inboxes, strict=True):
        feed.subscribe_events(inbox)
        await feed.start()
    try:
        await bus.publish(message(7, size=9000, room=None))
        for inbox in inboxes:
            assert await inbox.next() == message(7, size=9000, room=None)
    finally:
        for feed in feeds:
            await feed.stop()


async def test_unsubscribe_and_broken_subscribers(feed, bus, caplog):
    def broken(_item: JobChange | BusMessage) -> None:
        raise RuntimeError("subscriber bug")

    feed.subscribe_events(broken)
    gone = Inbox()
    feed.subscribe_events(gone)()
    inbox = Inbox()
    feed.subscribe_events(inbox)

    with caplog.at_level(logging.ERROR, logger="serve_app.storage.change_feed"):
        await bus.publish(message(1))
        assert await inbox.next() == message(1)
    assert gone.queue.empty()
    assert "subscriber bug" in caplog.text


async def test_malformed_and_pruned_payloads_are_skipped(feed, bus, pool, caplog):
    inbox = Inbox()
    feed.subscribe_events(inbox)
    with caplog.at_level(logging.WARNING, logger="serve_app.storage.change_feed"):
        await pool.execute("SELECT pg_notify('serve_app_events_v1', 'not json')")
        await pool.execute("""SELECT pg_notify('serve_app_events_v1', '{"ref": 987654}')""")
        await bus.publish(message(1))
        assert await inbox.next() == message(1)
    assert "malformed" in caplog.text
    assert "987654" in caplog.text


async def test_prune_forgets_only_old_overflow_rows(bus, pool):
    await bus.publish(message(1, size=INLINE_LIMIT_BYTES))
    await bus.publish(message(2, size=INLINE_LIMIT_BYTES))
    await pool.execute(
        "UPDATE event_overflow SET created_at = now() - interval '1 hour' "
        "WHERE id = (SELECT min(id) FROM event_overflow)"
    )
    await bus.prune()
    assert await pool.fetchval("SELECT count(*) FROM event_overflow") == 1


async def test_events_survive_a_reconnect(feed, bus, pool):
    inbox = Inbox()
    feed.subscribe_events(inbox)
    killed = await pool.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE application_name = $1 AND datname = current_database()",
        APPLICATION_NAME,
    )
    assert killed == 1

    # Messages published while it reconnects are lost; publish until one comes through the new connection.
    async with asyncio.timeout(WAIT_S * 2):
        index = 0
        while True:
            index += 1
            await bus.publish(message(index, size=INLINE_LIMIT_BYTES))
            try:
                received = await inbox.next(timeout=0.5)
            except TimeoutError:
                continue
            if received == message(index, size=INLINE_LIMIT_BYTES):
                break
    assert feed.connections == 2
