"""InvokeAI's Socket.IO event payloads (reference §5), built from domain state.

These are our real-time event vocabulary: every replica publishes them on the EventBus already in
wire shape, and every Ingress emits them unchanged to its Socket.IO clients.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from serve_app.domain.jobs import ClaimedJob, Job
from serve_app.domain.ports import BusMessage
from serve_app.domain.session_queue import BatchStatus, QueueStatus, StatusCounts


def sqlite_timestamp(value: datetime | None) -> str | None:
    """InvokeAI's timestamps come from SQLite: "YYYY-MM-DD HH:MM:SS.fff" in UTC, no zone."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.") + f"{value.microsecond // 1000:03d}"


def now_timestamp() -> int:
    """Seconds since the epoch: every InvokeAI event payload has it as `timestamp`."""
    return int(time.time())


def counts_json(counts: StatusCounts) -> dict[str, int]:
    return counts.model_dump()


def batch_status_json(status: BatchStatus) -> dict[str, Any]:
    return {
        "queue_id": status.queue_id,
        "batch_id": status.batch_id,
        "origin": status.origin,
        "destination": status.destination,
        **counts_json(status.counts),
    }


def queue_status_json(status: QueueStatus) -> dict[str, Any]:
    current = status.current
    return {
        "queue_id": status.queue_id,
        "item_id": None if current is None else current.item_id,
        "batch_id": None if current is None else current.batch_id,
        "session_id": None if current is None else current.session_id,
        **counts_json(status.counts),
    }


def batch_enqueued(
    *, queue_id: str, batch_id: str, enqueued: int, requested: int, priority: int, origin: str | None
) -> BusMessage:
    return BusMessage(
        event="batch_enqueued",
        room=queue_id,
        data={
            "timestamp": now_timestamp(),
            "queue_id": queue_id,
            "batch_id": batch_id,
            "enqueued": enqueued,
            "requested": requested,
            "priority": priority,
            "origin": origin,
        },
    )


def queue_cleared(queue_id: str) -> BusMessage:
    return BusMessage(event="queue_cleared", room=queue_id, data={"timestamp": now_timestamp(), "queue_id": queue_id})


def queue_item_status_changed(job: Job, batch: BatchStatus, queue: QueueStatus) -> BusMessage:
    error = job.error
    return BusMessage(
        event="queue_item_status_changed",
        room=job.queue_id,
        owner=job.owner,
        data={
            "timestamp": now_timestamp(),
            "queue_id": job.queue_id,
            "item_id": job.item_id,
            "batch_id": job.batch_id,
            "origin": job.origin,
            "destination": job.destination,
            "status": job.status.value,
            "error_type": None if error is None else error.type,
            "error_message": None if error is None else error.message,
            "error_traceback": None if error is None else error.traceback,
            "created_at": sqlite_timestamp(job.created_at),
            "updated_at": sqlite_timestamp(job.updated_at),
            "started_at": sqlite_timestamp(job.started_at),
            "completed_at": sqlite_timestamp(job.completed_at),
            "batch_status": batch_status_json(batch),
            "queue_status": queue_status_json(queue),
            "session_id": job.session_id,
            "credits": None,
        },
    )


def invocation_event(
    event: str,
    job: ClaimedJob,
    *,
    invocation: dict[str, Any],
    source_node_id: str,
    extra: dict[str, Any],
) -> BusMessage:
    """`invocation_started` / `_progress` / `_complete` / `_error` for one prepared node of a running item."""
    return BusMessage(
        event=event,
        room=job.queue_id,
        owner=job.owner,
        data={
            "timestamp": now_timestamp(),
            "queue_id": job.queue_id,
            "item_id": job.item_id,
            "batch_id": job.batch_id,
            "origin": job.origin,
            "destination": job.destination,
            "session_id": job.session_id,
            "invocation": invocation,
            "invocation_source_id": source_node_id,
            **extra,
        },
    )
