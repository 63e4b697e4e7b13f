"""Ports: the contracts adapters implement. Implementations do not inherit from these."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any, Protocol

from pydantic import BaseModel

from serve_app.domain.images import ImageRecord, StoredImage
from serve_app.domain.jobs import ClaimedJob, Job, JobError, JobStatus, NewJob, Progress
from serve_app.domain.models import ModelSpec


class JobChange(BaseModel):
    """A job's state changed (sent by Postgres NOTIFY to every Queue replica)."""

    id: uuid.UUID
    item_id: int
    queue_id: str
    status: JobStatus
    progress_step: int | None = None
    progress_total: int | None = None


class BusMessage(BaseModel):
    """One real-time event for Socket.IO clients, already in its wire shape (InvokeAI's event payloads).

    Published by whichever replica produced it; every Ingress replica receives it and emits `event`
    with `data` to Socket.IO room `room` (None: to every client)."""

    event: str
    room: str | None
    data: dict[str, Any]


class ExecutionResult(BaseModel):
    """The final event of an execution: every image is already in object storage."""

    images: list[StoredImage]


ExecutionEvent = Progress | ExecutionResult


class JobRepository(Protocol):
    """Durable job and image state; every method is one transaction."""

    async def enqueue(self, jobs: Sequence[NewJob], *, max_waiting: int | None = None) -> list[Job]:
        """Insert jobs as pending, all or none; raise QueueFull when the waiting count would exceed max_waiting."""
        ...

    async def get(self, job_id: uuid.UUID) -> Job:
        """The job with its image names; raise JobNotFound."""
        ...

    async def list_jobs(self, *, owner: str | None = None, limit: int = 100, offset: int = 0) -> list[Job]:
        """Jobs, newest first, optionally of one owner."""
        ...

    async def count_by_status(self, queue_id: str | None = None) -> dict[JobStatus, int]:
        """How many jobs are in each status."""
        ...

    async def claim(self, limit: int, lease_seconds: float) -> list[ClaimedJob]:
        """Claim up to `limit` pending jobs by priority then FIFO, set in_progress with a lease, attempt += 1."""
        ...

    async def renew_leases(self, claims: Sequence[tuple[uuid.UUID, int]], lease_seconds: float) -> set[uuid.UUID]:
        """Extend leases of (job, attempt) pairs still in progress; return the ids renewed."""
        ...

    async def report_progress(self, job_id: uuid.UUID, attempt: int, step: int, total: int) -> bool:
        """Record progress; False when the attempt is no longer the running one."""
        ...

    async def complete(self, job_id: uuid.UUID, attempt: int, images: Sequence[StoredImage]) -> bool:
        """Insert image rows and mark completed in one transaction; False (nothing written) if the attempt is stale."""
        ...

    async def fail(self, job_id: uuid.UUID, attempt: int, error: JobError) -> bool:
        """Mark failed; False if the attempt is stale."""
        ...

    async def release(self, job_id: uuid.UUID, attempt: int, error: JobError) -> JobStatus | None:
        """Give a lost attempt back: pending again, or failed once attempts are exhausted. None if stale."""
        ...

    async def requeue_expired(self) -> int:
        """The reaper: release every in-progress job whose lease has expired; return how many."""
        ...

    async def cancel(self, job_id: uuid.UUID) -> Job:
        """Cancel a pending or running job (terminal jobs are returned unchanged); raise JobNotFound."""
        ...

    async def delete(self, job_id: uuid.UUID) -> list[ImageRecord]:
        """Delete a job and its image rows; return the deleted images so their objects can go too."""
        ...

    async def get_image(self, name: str) -> ImageRecord:
        """One image row; raise ImageNotFound."""
        ...


class ChangeFeed(Protocol):
    """Job state changes as they happen (LISTEN/NOTIFY); a wake-up, never the only source of truth."""

    def subscribe(self, callback: Callable[[JobChange], None]) -> Callable[[], None]:
        """Call `callback` for every change; return a function that unsubscribes."""
        ...


class EventBus(Protocol):
    """Publishes BusMessages to every Ingress replica (Postgres NOTIFY in production and tests)."""

    async def publish(self, message: BusMessage) -> None:
        """Deliver to every subscriber of every replica, in publish order per publisher."""
        ...


class EventSource(Protocol):
    """Job changes and bus messages on one ordered stream, as the database committed them."""

    def subscribe_events(self, callback: Callable[[JobChange | BusMessage], None]) -> Callable[[], None]:
        """Call `callback` for every job change and bus message in commit order; return an unsubscribe function."""
        ...


class ObjectStore(Protocol):
    """Bytes by key: local files or an S3 bucket."""

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        """Write (or overwrite) an object."""
        ...

    async def get(self, key: str) -> bytes:
        """Read an object; raise ImageNotFound."""
        ...

    async def delete(self, keys: Sequence[str]) -> None:
        """Delete objects; missing keys are ignored."""
        ...

    def presigned_url(self, key: str, expires_s: int = 3600) -> str | None:
        """A time-limited URL a client may fetch directly, or None where the store has none."""
        ...


class ModelCatalog(Protocol):
    """The models this deployment can run."""

    def resolve(self, name: str | None) -> ModelSpec:
        """The named model, or the default when name is None; raise ModelNotFound."""
        ...

    def list(self) -> list[ModelSpec]:
        """Every model, sorted by name."""
        ...


class JobExecutor(Protocol):
    """Runs one claimed job somewhere (a Diffusion replica) and streams its progress."""

    def execute(self, job: ClaimedJob) -> AsyncGenerator[ExecutionEvent, None]:
        """Yield Progress events, then one ExecutionResult. Raise GenerationFailed for a job error,
        ExecutorLost when the runner went away. Cancelling the consumer stops the job within a step."""
        ...
