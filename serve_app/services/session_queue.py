"""SessionQueueService: InvokeAI's session queue (enqueue_batch and the queue routes) on our job queue.

Every queue item is a job whose request is `{"kind": "graph", "graph": …}`: the same durable claim,
leases, retries and cancel-by-step as every other job; this adds batches and queue-wide operations.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel

from serve_app.domain.errors import JobNotFound
from serve_app.domain.graph.batch import Batch, count_sessions, expand_batch
from serve_app.domain.jobs import Job, JobStatus, NewJob
from serve_app.domain.ports import BusMessage, EventBus, JobChange, JobRepository, SessionQueueStore
from serve_app.domain.session_queue import BatchStatus, ProcessorStatus, QueueStatus, StatusCounts
from serve_app.services import invokeai_events

GRAPH_KIND = "graph"


class EnqueueOutcome(BaseModel):
    """What InvokeAI's EnqueueBatchResult reports."""

    queue_id: str
    enqueued: int
    requested: int
    batch: dict[str, Any]
    priority: int
    item_ids: list[int]


def graph_request(graph: dict[str, Any]) -> dict[str, Any]:
    """A queue item's job request: the graph to execute, batch values already substituted."""
    return {"kind": GRAPH_KIND, "graph": graph}


class SessionQueueService:
    def __init__(
        self,
        *,
        jobs: JobRepository,
        queue: SessionQueueStore,
        events: EventBus | None = None,
        max_queue_size: int = 10000,
        max_attempts: int = 3,
    ) -> None:
        self._jobs = jobs
        self._queue = queue
        self._events = events
        self._max_queue_size = max_queue_size
        self._max_attempts = max_attempts

    async def enqueue_batch(self, queue_id: str, batch: Batch, *, prepend: bool, owner: str) -> EnqueueOutcome:
        """Expand the batch into sessions and store them as pending items, up to max_queue_size pending."""
        priority = await self._queue.max_pending_priority(queue_id) + 1 if prepend else 0
        requested = count_sessions(batch)
        new_jobs = [
            NewJob(
                request=graph_request(graph.model_dump(mode="json")),
                owner=owner,
                queue_id=queue_id,
                batch_id=batch.batch_id,
                origin=batch.origin,
                destination=batch.destination,
                priority=priority,
                max_attempts=self._max_attempts,
                session_id=str(uuid.uuid4()),
                field_values=[value.model_dump(mode="json") for value in field_values],
                workflow=batch.workflow,
            )
            for graph, field_values in expand_batch(batch, limit=self._max_queue_size)
        ]

        def announce(inserted: list[Job]) -> BusMessage:
            return invokeai_events.batch_enqueued(
                queue_id=queue_id,
                batch_id=batch.batch_id,
                enqueued=len(inserted),
                requested=requested,
                priority=priority,
                origin=batch.origin,
            ).model_copy(update={"owner": owner})

        # Announced in the insert's transaction: clients hear of the batch before any of its items starts.
        inserted = await self._jobs.enqueue(
            new_jobs, max_waiting=self._max_queue_size, truncate=True, announce=announce
        )
        return EnqueueOutcome(
            queue_id=queue_id,
            enqueued=len(inserted),
            requested=requested,
            batch=batch.model_dump(mode="json"),
            priority=priority,
            item_ids=sorted((job.item_id for job in inserted), reverse=True),
        )

    # Every method below takes `owner`: the caller's username when they may touch only their own items (a
    # non-admin with auth on), None for everyone's. Another owner's item is "not found", never "forbidden":
    # its existence is none of the caller's business.

    async def get_item(self, queue_id: str, item_id: int, *, owner: str | None = None) -> Job:
        try:
            job = await self._queue.get_item(item_id)
        except JobNotFound:
            job = None
        if job is None or job.queue_id != queue_id or not _visible(job, owner):
            raise JobNotFound(f"Queue item with id {item_id} not found in queue {queue_id}")
        return job

    async def cancel_item(self, item_id: int, *, owner: str | None = None) -> Job:
        """Cancel one item (InvokeAI does not check its queue here); finished items come back unchanged."""
        job = await self._queue.get_item(item_id)
        if not _visible(job, owner):
            raise JobNotFound(f"Queue item with id {item_id} not found")
        return await self._jobs.cancel(job.id)

    async def delete_item(self, item_id: int, *, owner: str | None = None) -> None:
        """Cancel (stopping it if it runs), then delete the row; unknown (and others') ids are fine."""
        try:
            await self.cancel_item(item_id, owner=owner)
        except JobNotFound:
            return
        await self._queue.delete_item(item_id)

    async def list_all(self, queue_id: str, destination: str | None, *, owner: str | None = None) -> list[Job]:
        return await self._queue.list_all(queue_id, destination, owner=owner)

    async def item_ids(
        self, queue_id: str, order_dir: Literal["ASC", "DESC"], *, owner: str | None = None
    ) -> list[int]:
        return await self._queue.item_ids(queue_id, order_dir, owner=owner)

    async def items_by_ids(self, queue_id: str, item_ids: Sequence[int], *, owner: str | None = None) -> list[Job]:
        return await self._queue.items_by_ids(queue_id, item_ids, owner=owner)

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
        return await self._queue.list_cursor(
            queue_id,
            limit=limit,
            status=status,
            cursor=cursor,
            priority=priority,
            destination=destination,
            owner=owner,
        )

    async def current(self, queue_id: str, *, owner: str | None = None) -> Job | None:
        return await self._queue.current(queue_id, owner=owner)

    async def next(self, queue_id: str, *, owner: str | None = None) -> Job | None:
        return await self._queue.next(queue_id, owner=owner)

    async def status(self, queue_id: str, *, owner: str | None = None) -> tuple[QueueStatus, ProcessorStatus]:
        """The counts of the items the caller may see (a user's own, like every other view of theirs)."""
        return await self._queue.status(queue_id, owner=owner), await self._queue.processor_status()

    async def batch_status(self, queue_id: str, batch_id: str, *, owner: str | None = None) -> BatchStatus:
        return await self._queue.batch_status(queue_id, batch_id, owner=owner)

    async def counts_by_destination(self, queue_id: str, destination: str, *, owner: str | None = None) -> StatusCounts:
        return await self._queue.destination_counts(queue_id, destination, owner=owner)

    async def cancel_all_except_current(self, queue_id: str, *, owner: str | None = None) -> int:
        return await self._queue.cancel_pending(queue_id, owner=owner)

    async def delete_all_except_current(self, queue_id: str, *, owner: str | None = None) -> int:
        return await self._queue.delete_pending(queue_id, owner=owner)

    async def cancel_by_batch_ids(self, queue_id: str, batch_ids: Sequence[str], *, owner: str | None = None) -> int:
        return await self._queue.cancel_where(queue_id, batch_ids=batch_ids, owner=owner)

    async def cancel_by_destination(self, queue_id: str, destination: str, *, owner: str | None = None) -> int:
        return await self._queue.cancel_where(queue_id, destination=destination, owner=owner)

    async def retry_items(self, queue_id: str, item_ids: Sequence[int], *, owner: str | None = None) -> list[int]:
        """Enqueue a fresh copy of each failed or canceled item; return the ids that were retried."""
        originals = await self._queue.retry_candidates(queue_id, item_ids, owner=owner)
        await self._jobs.enqueue([_retry_job(job) for job in originals])
        return [job.item_id for job in originals]

    async def clear(self, queue_id: str, *, owner: str | None = None) -> int:
        deleted = await self._queue.delete_items(queue_id, owner=owner)
        # Clients refetch the queue on this event, so it is harmless (and needed) after a user's partial clear.
        await self._publish(invokeai_events.queue_cleared(queue_id))
        return deleted

    async def prune(self, queue_id: str, *, owner: str | None = None) -> int:
        return await self._queue.prune(queue_id, owner=owner)

    async def delete_by_destination(self, queue_id: str, destination: str, *, owner: str | None = None) -> int:
        return await self._queue.delete_items(queue_id, destination, owner=owner)

    async def pause(self) -> ProcessorStatus:
        return await self._queue.set_paused(True)

    async def resume(self) -> ProcessorStatus:
        return await self._queue.set_paused(False)

    async def _publish(self, message: BusMessage) -> None:
        if self._events is not None:
            await self._events.publish(message)


def _visible(job: Job, owner: str | None) -> bool:
    return owner is None or job.owner == owner


def _retry_job(original: Job) -> NewJob:
    """The new item a retry enqueues: same batch, priority, origin, destination, values and graph."""
    return NewJob(
        request=original.request,
        owner=original.owner,
        queue_id=original.queue_id,
        batch_id=original.batch_id,
        origin=original.origin,
        destination=original.destination,
        priority=original.priority,
        max_attempts=original.max_attempts,
        session_id=str(uuid.uuid4()),
        field_values=original.field_values,
        workflow=original.workflow,
        # Chains point at their root, as InvokeAI's retried_from_item_id does.
        retried_from_item_id=original.retried_from_item_id or original.item_id,
    )


class StatusEvents:
    """Turns the job change feed into `queue_item_status_changed` events, one per status transition.

    The feed also carries progress updates; only a status that differs from the last one seen for that
    job is news. A fresh pending item is not (InvokeAI announces new items with `batch_enqueued`)."""

    def __init__(self, queue: SessionQueueStore, *, remember: int = 10000) -> None:
        self._queue = queue
        self._remember = remember
        self._last: OrderedDict[uuid.UUID, JobStatus] = OrderedDict()

    async def __call__(self, change: JobChange) -> list[BusMessage]:
        previous = self._last.pop(change.id, None)
        self._last[change.id] = change.status
        while len(self._last) > self._remember:
            self._last.popitem(last=False)
        if change.status == previous or (previous is None and change.status is JobStatus.PENDING):
            return []
        try:
            job = await self._queue.get_item(change.item_id)
        except JobNotFound:
            return []  # deleted since (clear, prune): nothing left to describe
        batch = await self._queue.batch_status(job.queue_id, job.batch_id)
        queue = await self._queue.status(job.queue_id)
        # The row may have moved on since the notification; report the status the notification carried.
        job = job.model_copy(update={"status": change.status})
        message = invokeai_events.queue_item_status_changed(job, batch, queue)
        # Admins see the whole queue's counts; the owner, unless an admin, only their own items' counts, as
        # `GET /queue/{id}/status` shows them (the batch is the owner's anyway).
        own = await self._queue.status(job.queue_id, owner=job.owner)
        owner_data = {**message.data, "queue_status": invokeai_events.queue_status_json(own)}
        return [message.model_copy(update={"owner_data": owner_data})]
