"""Ports: the contracts adapters implement. Implementations do not inherit from these."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from serve_app.domain.boards import (
    Board,
    BoardChanges,
    BoardMove,
    BoardOrderBy,
    BoardPage,
    ImageChanges,
    ImageNames,
    ImagePage,
    ImageQuery,
    SortDirection,
)
from serve_app.domain.images import GeneratedImage, ImageRecord, NewImage, StoredImage
from serve_app.domain.jobs import ClaimedJob, Job, JobError, JobStatus, NewJob, Progress
from serve_app.domain.models import ModelSpec
from serve_app.domain.session_queue import BatchStatus, ProcessorStatus, QueueStatus, StatusCounts


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


class NodeEvent(BaseModel):
    """A node of a running graph started, made progress, completed or failed (InvokeAI's invocation events).

    `images` are the images the node produced, already in object storage: their rows are written before
    the event is published, so a client told of an image can fetch it. An `error` event carries the
    session as far as it ran and is followed by the executor raising GenerationFailed."""

    kind: Literal["started", "progress", "complete", "error"]
    invocation: dict[str, Any]
    source_node_id: str
    message: str | None = None
    percentage: float | None = None
    # A progress preview: {"width", "height", "dataURL"}.
    image: dict[str, Any] | None = None
    step: int | None = None
    total: int | None = None
    result: dict[str, Any] | None = None
    error_type: str | None = None
    error_message: str | None = None
    error_traceback: str | None = None
    images: list[GeneratedImage] = Field(default_factory=list)
    session: dict[str, Any] | None = None


class ExecutionResult(BaseModel):
    """The final event of an execution: every image is already in object storage; `session` is the
    executed graph state for graph jobs."""

    images: list[StoredImage]
    session: dict[str, Any] | None = None


ExecutionEvent = Progress | NodeEvent | ExecutionResult


class JobRepository(Protocol):
    """Durable job and image state; every method is one transaction."""

    async def enqueue(
        self,
        jobs: Sequence[NewJob],
        *,
        max_waiting: int | None = None,
        truncate: bool = False,
        announce: Callable[[list[Job]], BusMessage] | None = None,
    ) -> list[Job]:
        """Insert jobs as pending, all or none; raise QueueFull when the waiting count would exceed max_waiting,
        or with `truncate` insert only the leading jobs that fit. `announce(inserted)` builds a bus message
        published atomically with the insert (before any replica can claim the jobs)."""
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

    async def complete(
        self,
        job_id: uuid.UUID,
        attempt: int,
        images: Sequence[StoredImage],
        session: dict[str, Any] | None = None,
    ) -> bool:
        """Insert image rows and mark completed in one transaction, storing the executed session when given;
        False (nothing written) if the attempt is stale."""
        ...

    async def fail(
        self, job_id: uuid.UUID, attempt: int, error: JobError, session: dict[str, Any] | None = None
    ) -> bool:
        """Mark failed (with the session as far as it ran, when given); False if the attempt is stale."""
        ...

    async def add_images(self, job_id: uuid.UUID, attempt: int, images: Sequence[GeneratedImage]) -> bool:
        """Insert the rows of images a running attempt produced; False (nothing written) if it is stale."""
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


class SessionQueueStore(Protocol):
    """InvokeAI's queue-wide views and bulk operations over the same jobs (storage.PgSessionQueue)."""

    async def max_pending_priority(self, queue_id: str) -> int: ...
    async def list_all(self, queue_id: str, destination: str | None = None) -> list[Job]: ...
    async def item_ids(self, queue_id: str, order_dir: Literal["ASC", "DESC"] = "DESC") -> list[int]: ...
    async def items_by_ids(self, queue_id: str, item_ids: Sequence[int]) -> list[Job]: ...
    async def list_cursor(
        self, queue_id: str, *, limit: int, status: str | None, cursor: int | None, priority: int,
        destination: str | None,
    ) -> tuple[list[Job], bool]: ...  # fmt: skip
    async def get_item(self, item_id: int) -> Job: ...
    async def current(self, queue_id: str) -> Job | None: ...
    async def next(self, queue_id: str) -> Job | None: ...
    async def status(self, queue_id: str) -> QueueStatus: ...
    async def batch_status(self, queue_id: str, batch_id: str) -> BatchStatus: ...
    async def destination_counts(self, queue_id: str, destination: str) -> StatusCounts: ...
    async def cancel_pending(self, queue_id: str) -> int: ...
    async def delete_pending(self, queue_id: str) -> int: ...
    async def cancel_where(
        self, queue_id: str, *, batch_ids: Sequence[str] | None = None, destination: str | None = None
    ) -> int: ...
    async def delete_items(self, queue_id: str, destination: str | None = None) -> int: ...
    async def prune(self, queue_id: str) -> int: ...
    async def delete_item(self, item_id: int) -> None: ...
    async def retry_candidates(self, queue_id: str, item_ids: Sequence[int]) -> list[Job]: ...
    async def set_paused(self, paused: bool) -> ProcessorStatus: ...
    async def processor_status(self) -> ProcessorStatus: ...


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

    def get(self, key: str) -> ModelSpec:
        """Any model (main, LoRA, VAE) by its key (`ModelSpec.key`); raise ModelNotFound."""
        ...


class JobExecutor(Protocol):
    """Runs one claimed job somewhere (a Diffusion replica) and streams its progress."""

    def execute(self, job: ClaimedJob) -> AsyncGenerator[ExecutionEvent, None]:
        """Yield Progress events, then one ExecutionResult. Raise GenerationFailed for a job error,
        ExecutorLost when the runner went away. Cancelling the consumer stops the job within a step."""
        ...


class ImageRepository(Protocol):
    """InvokeAI's image records; every method is one transaction. Objects are the caller's business:
    methods that delete rows return them so their objects can be deleted after the commit."""

    async def add_generated(self, images: Sequence[GeneratedImage]) -> list[ImageRecord]:
        """Insert (or, for a retried attempt, overwrite) images a graph produced, origin `internal`."""
        ...

    async def add_uploaded(self, image: NewImage) -> ImageRecord:
        """Insert an uploaded image, origin `external`."""
        ...

    async def get(self, name: str) -> ImageRecord:
        """One image; raise ImageNotFound."""
        ...

    async def list_images(self, query: ImageQuery, *, offset: int, limit: int) -> ImagePage:
        """One page of matching images (limit 0: only the total)."""
        ...

    async def names(self, query: ImageQuery) -> ImageNames:
        """Every matching image name in order, with the starred and total counts."""
        ...

    async def get_many(self, names: Sequence[str]) -> list[ImageRecord]:
        """The named images in request order; unknown names are skipped."""
        ...

    async def update(self, name: str, changes: ImageChanges) -> ImageRecord:
        """Apply the non-None changes; raise ImageNotFound."""
        ...

    async def delete(self, names: Sequence[str]) -> list[ImageRecord]:
        """Delete the named images (unknown names are skipped); return the deleted rows."""
        ...

    async def count_intermediates(self, owner: str | None = None) -> int:
        """How many intermediate images there are."""
        ...

    async def delete_intermediates(self, owner: str | None = None) -> list[ImageRecord]:
        """Delete every intermediate image; return the deleted rows."""
        ...

    async def delete_uncategorized(self, owner: str | None = None) -> list[ImageRecord]:
        """Delete every image on no board; return the deleted rows."""
        ...

    async def set_starred(self, names: Sequence[str], starred: bool) -> list[ImageRecord]:
        """Star or unstar the named images; return the updated rows in request order."""
        ...


class BoardRepository(Protocol):
    """Boards and which image is on which board (at most one each); every method is one transaction."""

    async def create_board(self, board_name: str, *, is_private: bool = False, owner: str = "admin") -> Board:
        """A new, empty board."""
        ...

    async def get_board(self, board_id: str) -> Board:
        """One board with its cover and counts; raise BoardNotFound."""
        ...

    async def list_boards(
        self,
        *,
        order_by: BoardOrderBy = BoardOrderBy.CREATED_AT,
        direction: SortDirection = SortDirection.DESC,
        include_archived: bool = False,
        offset: int = 0,
        limit: int | None = None,
        owner: str | None = None,
    ) -> BoardPage:
        """Boards in order (limit None: all of them) and the total."""
        ...

    async def update_board(self, board_id: str, changes: BoardChanges) -> Board:
        """Apply the non-None changes; raise BoardNotFound."""
        ...

    async def delete_board(self, board_id: str, *, include_images: bool) -> list[ImageRecord]:
        """Delete a board (a missing one is not an error); its images are deleted too when include_images,
        else taken off it. Return the images that were on it."""
        ...

    async def move_images(self, names: Sequence[str], board_id: str | None) -> list[BoardMove]:
        """Put the named images on a board (None: on no board); unknown names are skipped.
        Raise BoardNotFound when board_id names no board."""
        ...
