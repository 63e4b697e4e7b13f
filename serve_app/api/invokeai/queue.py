"""InvokeAI's session queue routes: /api/v1/queue/{queue_id}/… (reference §2.3).

With auth on, a non-admin sees and changes only their own items, as in InvokeAI 6.12's multi-user mode: every
listing, count (status, batch and destination counts, `current`, `next`) and bulk change is narrowed to them,
and another user's item id answers 404 as if it did not exist. Admins see everything; pausing and resuming the
processor (shared by everyone) is theirs alone. With auth off every request is an admin: nothing changes.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query

from serve_app.api.deps import AdminDep, OwnerDep, ScopeDep, SessionQueueDep
from serve_app.api.invokeai.queue_schemas import (
    BatchIdsBody,
    CursorPage,
    EnqueueBatchBody,
    ItemIdsBody,
    batch_json,
    destination_counts_json,
    queue_item_json,
    status_json,
)
from serve_app.domain.jobs import JobStatus

router = APIRouter(prefix="/api/v1/queue/{queue_id}", tags=["queue"])

Json = dict[str, Any]


@router.post("/enqueue_batch", operation_id="enqueue_batch")
async def enqueue_batch(queue_id: str, body: EnqueueBatchBody, queue: SessionQueueDep, owner: OwnerDep) -> Json:
    # 200, not the 201 InvokeAI's OpenAPI documents: clients were written against what it actually sends.
    outcome = await queue.enqueue_batch(queue_id, body.batch, prepend=body.prepend, owner=owner)
    return outcome.model_dump()


@router.get("/list_all", operation_id="list_all_queue_items")
async def list_all(
    queue_id: str, queue: SessionQueueDep, scope: ScopeDep, destination: str | None = None
) -> list[Json]:
    return [queue_item_json(job) for job in await queue.list_all(queue_id, destination, owner=scope)]


@router.get("/item_ids", operation_id="get_queue_item_ids")
async def item_ids(
    queue_id: str, queue: SessionQueueDep, scope: ScopeDep, order_dir: Literal["ASC", "DESC"] = "DESC"
) -> Json:
    ids = await queue.item_ids(queue_id, order_dir, owner=scope)
    return {"item_ids": ids, "total_count": len(ids)}


@router.post("/items_by_ids", operation_id="get_queue_items_by_item_ids")
async def items_by_ids(queue_id: str, body: ItemIdsBody, queue: SessionQueueDep, scope: ScopeDep) -> list[Json]:
    return [queue_item_json(job) for job in await queue.items_by_ids(queue_id, body.item_ids, owner=scope)]


@router.get("/list", operation_id="list_queue_items")
async def list_items(
    queue_id: str,
    queue: SessionQueueDep,
    scope: ScopeDep,
    limit: Annotated[int, Query(ge=1, le=10000)] = 50,
    status: JobStatus | None = None,
    cursor: int | None = None,
    priority: int = 0,
    destination: str | None = None,
) -> CursorPage:
    """The cursor-paginated listing InvokeAI ≤6.6 clients use (removed from InvokeAI in 6.7)."""
    jobs, has_more = await queue.list_cursor(
        queue_id,
        limit=limit,
        status=None if status is None else status.value,
        cursor=cursor,
        priority=priority,
        destination=destination,
        owner=scope,
    )
    return CursorPage(limit=limit, has_more=has_more, items=[queue_item_json(job) for job in jobs])


@router.put("/processor/resume", operation_id="resume", dependencies=[AdminDep])
async def resume(queue_id: str, queue: SessionQueueDep) -> Json:
    return (await queue.resume()).model_dump()


@router.put("/processor/pause", operation_id="pause", dependencies=[AdminDep])
async def pause(queue_id: str, queue: SessionQueueDep) -> Json:
    return (await queue.pause()).model_dump()


@router.put("/cancel_all_except_current", operation_id="cancel_all_except_current")
async def cancel_all_except_current(queue_id: str, queue: SessionQueueDep, scope: ScopeDep) -> Json:
    return {"canceled": await queue.cancel_all_except_current(queue_id, owner=scope)}


@router.put("/delete_all_except_current", operation_id="delete_all_except_current")
async def delete_all_except_current(queue_id: str, queue: SessionQueueDep, scope: ScopeDep) -> Json:
    return {"deleted": await queue.delete_all_except_current(queue_id, owner=scope)}


@router.put("/cancel_by_batch_ids", operation_id="cancel_by_batch_ids")
async def cancel_by_batch_ids(queue_id: str, body: BatchIdsBody, queue: SessionQueueDep, scope: ScopeDep) -> Json:
    return {"canceled": await queue.cancel_by_batch_ids(queue_id, body.batch_ids, owner=scope)}


@router.put("/cancel_by_destination", operation_id="cancel_by_destination")
async def cancel_by_destination(queue_id: str, destination: str, queue: SessionQueueDep, scope: ScopeDep) -> Json:
    return {"canceled": await queue.cancel_by_destination(queue_id, destination, owner=scope)}


@router.put("/retry_items_by_id", operation_id="retry_items_by_id")
async def retry_items_by_id(
    queue_id: str, item_ids: Annotated[list[int], Body()], queue: SessionQueueDep, scope: ScopeDep
) -> Json:
    # The body is a raw JSON array, as InvokeAI's single non-embedded Body parameter makes it.
    return {"queue_id": queue_id, "retried_item_ids": await queue.retry_items(queue_id, item_ids, owner=scope)}


@router.put("/clear", operation_id="clear")
async def clear(queue_id: str, queue: SessionQueueDep, scope: ScopeDep) -> Json:
    return {"deleted": await queue.clear(queue_id, owner=scope)}


@router.put("/prune", operation_id="prune")
async def prune(queue_id: str, queue: SessionQueueDep, scope: ScopeDep) -> Json:
    return {"deleted": await queue.prune(queue_id, owner=scope)}


@router.get("/current", operation_id="get_current_queue_item")
async def current(queue_id: str, queue: SessionQueueDep, scope: ScopeDep) -> Json | None:
    job = await queue.current(queue_id, owner=scope)
    return None if job is None else queue_item_json(job)


@router.get("/next", operation_id="get_next_queue_item")
async def next_item(queue_id: str, queue: SessionQueueDep, scope: ScopeDep) -> Json | None:
    job = await queue.next(queue_id, owner=scope)
    return None if job is None else queue_item_json(job)


@router.get("/status", operation_id="get_queue_status")
async def status(queue_id: str, queue: SessionQueueDep, scope: ScopeDep) -> Json:
    return status_json(*await queue.status(queue_id, owner=scope))


@router.get("/b/{batch_id}/status", operation_id="get_batch_status")
async def batch_status(queue_id: str, batch_id: str, queue: SessionQueueDep, scope: ScopeDep) -> Json:
    return batch_json(await queue.batch_status(queue_id, batch_id, owner=scope))


@router.get("/i/{item_id}", operation_id="get_queue_item")
async def get_item(queue_id: str, item_id: int, queue: SessionQueueDep, scope: ScopeDep) -> Json:
    return queue_item_json(await queue.get_item(queue_id, item_id, owner=scope), exclude_none=True)


@router.delete("/i/{item_id}", operation_id="delete_queue_item")
async def delete_item(queue_id: str, item_id: int, queue: SessionQueueDep, scope: ScopeDep) -> None:
    await queue.delete_item(item_id, owner=scope)


@router.put("/i/{item_id}/cancel", operation_id="cancel_queue_item")
async def cancel_item(queue_id: str, item_id: int, queue: SessionQueueDep, scope: ScopeDep) -> Json:
    return queue_item_json(await queue.cancel_item(item_id, owner=scope))


@router.get("/counts_by_destination", operation_id="counts_by_destination")
async def counts_by_destination(queue_id: str, destination: str, queue: SessionQueueDep, scope: ScopeDep) -> Json:
    return destination_counts_json(
        queue_id, destination, await queue.counts_by_destination(queue_id, destination, owner=scope)
    )


@router.delete("/d/{destination}", operation_id="delete_by_destination")
async def delete_by_destination(queue_id: str, destination: str, queue: SessionQueueDep, scope: ScopeDep) -> Json:
    return {"deleted": await queue.delete_by_destination(queue_id, destination, owner=scope)}
