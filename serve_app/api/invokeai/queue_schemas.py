"""InvokeAI's session-queue bodies and responses (reference §2.3, §3.2, §3.5, §3.6)."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, Field

from serve_app.domain.graph.batch import Batch
from serve_app.domain.jobs import Job
from serve_app.domain.session_queue import BatchStatus, ProcessorStatus, QueueStatus, StatusCounts
from serve_app.services.invokeai_events import batch_status_json, queue_status_json, sqlite_timestamp


class EnqueueBatchBody(BaseModel):
    batch: Batch
    prepend: bool = False
    # Accepted and ignored, as in InvokeAI OSS (the hosted "publish workflow" feature uses it).
    validation_run_data: dict[str, Any] | None = None


class ItemIdsBody(BaseModel):
    item_ids: list[int]


class BatchIdsBody(BaseModel):
    batch_ids: list[str]


def initial_session(job: Job) -> dict[str, Any]:
    """The GraphExecutionState of an item that has not finished: the graph, nothing executed yet."""
    graph = job.request.get("graph") or {"id": str(uuid.uuid4()), "nodes": {}, "edges": []}
    session_id = job.session_id or str(job.id)
    return {
        "id": session_id,
        "graph": graph,
        "execution_graph": {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, session_id)), "nodes": {}, "edges": []},
        "executed": [],
        "executed_history": [],
        "results": {},
        "errors": {},
        "prepared_source_mapping": {},
        "source_prepared_mapping": {},
    }


def queue_item_json(job: Job, *, exclude_none: bool = False) -> dict[str, Any]:
    """A SessionQueueItem; `GET i/{item_id}` omits nulls (InvokeAI declares response_model_exclude_none)."""
    error = job.error
    item: dict[str, Any] = {
        "item_id": job.item_id,
        "status": job.status.value,
        "priority": job.priority,
        "batch_id": job.batch_id,
        "origin": job.origin,
        "destination": job.destination,
        "session_id": job.session_id or str(job.id),
        "error_type": None if error is None else error.type,
        "error_message": None if error is None else error.message,
        "error_traceback": None if error is None else error.traceback,
        "created_at": sqlite_timestamp(job.created_at),
        "updated_at": sqlite_timestamp(job.updated_at),
        "started_at": sqlite_timestamp(job.started_at),
        "completed_at": sqlite_timestamp(job.completed_at),
        "queue_id": job.queue_id,
        "field_values": job.field_values,
        "retried_from_item_id": job.retried_from_item_id,
        "is_api_validation_run": job.is_api_validation_run,
        "published_workflow_id": job.published_workflow_id,
        "credits": None,
        "session": job.session if job.session is not None else initial_session(job),
        "workflow": job.workflow,
    }
    if exclude_none:
        return {key: value for key, value in item.items() if value is not None}
    return item


def status_json(queue: QueueStatus, processor: ProcessorStatus) -> dict[str, Any]:
    return {"queue": queue_status_json(queue), "processor": processor.model_dump()}


def batch_json(status: BatchStatus) -> dict[str, Any]:
    return batch_status_json(status)


def destination_counts_json(queue_id: str, destination: str, counts: StatusCounts) -> dict[str, Any]:
    return {"queue_id": queue_id, "destination": destination, **counts.model_dump()}


class CursorPage(BaseModel):
    limit: int
    has_more: bool
    items: list[dict[str, Any]] = Field(default_factory=list)
