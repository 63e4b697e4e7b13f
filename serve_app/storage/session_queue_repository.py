"""PgSessionQueue: InvokeAI's session-queue operations on the jobs table (SQL in sql/session_queue.sql).

Enqueue, claim, leases and reports stay in PgJobRepository: one table, one state machine. This adds
the queue-wide views and bulk operations InvokeAI's queue routes need.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal, LiteralString

import asyncpg

from serve_app.domain.errors import JobNotFound
from serve_app.domain.jobs import Job
from serve_app.domain.session_queue import BatchStatus, ProcessorStatus, QueueStatus, StatusCounts
from serve_app.storage.job_repository import job_from_row
from serve_app.storage.queries import load


@dataclasses.dataclass(frozen=True, slots=True)
class SessionQueueQueries:
    max_pending_priority: LiteralString
    list_all: LiteralString
    item_ids_asc: LiteralString
    item_ids_desc: LiteralString
    items_by_ids: LiteralString
    list_cursor: LiteralString
    get_item: LiteralString
    current_item: LiteralString
    next_item: LiteralString
    status_counts: LiteralString
    batch_counts: LiteralString
    destination_counts: LiteralString
    cancel_pending: LiteralString
    delete_pending: LiteralString
    cancel_where: LiteralString
    cancel_running: LiteralString
    delete_items: LiteralString
    prune: LiteralString
    delete_item: LiteralString
    retry_candidates: LiteralString
    set_paused: LiteralString
    wake_claimers: LiteralString
    processor_state: LiteralString


Q = load(SessionQueueQueries, "sql/session_queue.sql")


class PgSessionQueue:
    """Queue-wide reads and bulk changes; every method is one transaction.

    `owner` narrows a method to that user's items; None means everyone's (an admin, or auth off)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def max_pending_priority(self, queue_id: str) -> int:
        value: int = await self._pool.fetchval(Q.max_pending_priority, queue_id)
        return value

    async def list_all(self, queue_id: str, destination: str | None = None, *, owner: str | None = None) -> list[Job]:
        return [job_from_row(row) for row in await self._pool.fetch(Q.list_all, queue_id, destination, owner)]

    async def item_ids(
        self, queue_id: str, order_dir: Literal["ASC", "DESC"] = "DESC", *, owner: str | None = None
    ) -> list[int]:
        query = Q.item_ids_asc if order_dir == "ASC" else Q.item_ids_desc
        return [row["item_id"] for row in await self._pool.fetch(query, queue_id, owner)]

    async def items_by_ids(self, queue_id: str, item_ids: Sequence[int], *, owner: str | None = None) -> list[Job]:
        """The items asked for, in the order asked, skipping missing ones (and other owners')."""
        rows = await self._pool.fetch(Q.items_by_ids, queue_id, list(item_ids), owner)
        by_id = {row["item_id"]: job_from_row(row) for row in rows}
        return [by_id[item_id] for item_id in item_ids if item_id in by_id]

    async def list_cursor(
        self,
        queue_id: str,
        *,
        limit: int,
        status: str | None,
        cursor: int | None,
        priority: int,
        destination: str | None,
        owner: str | None = None,
    ) -> tuple[list[Job], bool]:
        """One legacy cursor page and whether more follow."""
        rows = await self._pool.fetch(Q.list_cursor, queue_id, limit + 1, status, cursor, priority, destination, owner)
        jobs = [job_from_row(row) for row in rows]
        return jobs[:limit], len(jobs) > limit

    async def get_item(self, item_id: int) -> Job:
        """The item with this item id in any queue; raise JobNotFound."""
        row = await self._pool.fetchrow(Q.get_item, item_id)
        if row is None:
            raise JobNotFound(f"Queue item with id {item_id} not found")
        return job_from_row(row)

    async def current(self, queue_id: str, *, owner: str | None = None) -> Job | None:
        row = await self._pool.fetchrow(Q.current_item, queue_id, owner)
        return None if row is None else job_from_row(row)

    async def next(self, queue_id: str, *, owner: str | None = None) -> Job | None:
        row = await self._pool.fetchrow(Q.next_item, queue_id, owner)
        return None if row is None else job_from_row(row)

    async def status(self, queue_id: str, *, owner: str | None = None) -> QueueStatus:
        async with self._pool.acquire() as connection, connection.transaction(isolation="repeatable_read"):
            # One snapshot, so the current item and the counts agree.
            current = await connection.fetchrow(Q.current_item, queue_id, owner)
            counts = StatusCounts.from_rows(await connection.fetch(Q.status_counts, queue_id, owner))
        return QueueStatus(queue_id=queue_id, current=None if current is None else job_from_row(current), counts=counts)

    async def batch_status(self, queue_id: str, batch_id: str, *, owner: str | None = None) -> BatchStatus:
        rows = await self._pool.fetch(Q.batch_counts, queue_id, batch_id, owner)
        return BatchStatus(
            queue_id=queue_id,
            batch_id=batch_id,
            origin=next((row["origin"] for row in rows if row["origin"] is not None), None),
            destination=next((row["destination"] for row in rows if row["destination"] is not None), None),
            counts=StatusCounts.from_rows(rows),
        )

    async def destination_counts(self, queue_id: str, destination: str, *, owner: str | None = None) -> StatusCounts:
        return StatusCounts.from_rows(await self._pool.fetch(Q.destination_counts, queue_id, destination, owner))

    async def cancel_pending(self, queue_id: str, *, owner: str | None = None) -> int:
        count: int = await self._pool.fetchval(Q.cancel_pending, queue_id, owner)
        return count

    async def delete_pending(self, queue_id: str, *, owner: str | None = None) -> int:
        count: int = await self._pool.fetchval(Q.delete_pending, queue_id, owner)
        return count

    async def cancel_where(
        self,
        queue_id: str,
        *,
        batch_ids: Sequence[str] | None = None,
        destination: str | None = None,
        owner: str | None = None,
    ) -> int:
        """Cancel the unfinished items of those batches / that destination; count the pending ones."""
        count: int = await self._pool.fetchval(
            Q.cancel_where, queue_id, None if batch_ids is None else list(batch_ids), destination, owner
        )
        return count

    async def delete_items(self, queue_id: str, destination: str | None = None, *, owner: str | None = None) -> int:
        """Cancel what runs (so its replica stops), then delete every item (of that destination); count them."""
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute(Q.cancel_running, queue_id, destination, owner)
            count: int = await connection.fetchval(Q.delete_items, queue_id, destination, owner)
        return count

    async def prune(self, queue_id: str, *, owner: str | None = None) -> int:
        count: int = await self._pool.fetchval(Q.prune, queue_id, owner)
        return count

    async def delete_item(self, item_id: int) -> None:
        await self._pool.execute(Q.delete_item, item_id)

    async def retry_candidates(self, queue_id: str, item_ids: Sequence[int], *, owner: str | None = None) -> list[Job]:
        """The failed or canceled items among `item_ids`, in the order asked."""
        rows = await self._pool.fetch(Q.retry_candidates, queue_id, list(item_ids), owner)
        return [job_from_row(row) for row in rows]

    async def set_paused(self, paused: bool) -> ProcessorStatus:
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.fetchval(Q.set_paused, paused)
            if not paused:
                await connection.execute(Q.wake_claimers)
        return await self.processor_status()

    async def processor_status(self) -> ProcessorStatus:
        row = await self._pool.fetchrow(Q.processor_state)
        assert row is not None
        return ProcessorStatus(is_started=not row["paused"], is_processing=row["processing"])
