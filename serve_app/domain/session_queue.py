"""InvokeAI's session queue, in domain terms: counts per status, processor state, retry outcomes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pydantic import BaseModel

from serve_app.domain.jobs import Job, JobStatus


class StatusCounts(BaseModel):
    """How many items are in each status, and in all (InvokeAI's count fields, by these names)."""

    pending: int = 0
    in_progress: int = 0
    completed: int = 0
    failed: int = 0
    canceled: int = 0
    total: int = 0

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, object]]) -> StatusCounts:
        """From (status, n) rows; statuses without a row count 0."""
        counts = {JobStatus(str(row["status"])).value: int(str(row["n"])) for row in rows}
        return cls(**counts, total=sum(counts.values()))


class QueueStatus(BaseModel):
    """A queue's counts and the item it runs now (the earliest started one, when several run)."""

    queue_id: str
    current: Job | None
    counts: StatusCounts


class BatchStatus(BaseModel):
    queue_id: str
    batch_id: str
    origin: str | None
    destination: str | None
    counts: StatusCounts


class ProcessorStatus(BaseModel):
    """`is_started` is false while paused; `is_processing` while any item runs on any replica."""

    is_started: bool
    is_processing: bool
