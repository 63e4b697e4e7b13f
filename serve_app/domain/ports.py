"""Ports: the contracts adapters implement. Implementations do not inherit from these."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import AsyncGenerator, Callable, Collection, Mapping, Sequence
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
from serve_app.domain.model_jobs import DownloadJob, InstallJob
from serve_app.domain.models import ModelRecord, ModelSpec
from serve_app.domain.presets import ModelPreset
from serve_app.domain.rest_query import RestQuery
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
    # Whose event it is (a queue item's or a bulk download's owner): with auth on only that user and admins
    # receive it; None: everyone in `room`.
    owner: str | None = None
    # With `owner`: what the owner receives instead of `data` unless they are an admin (their own view, such as
    # queue counts of their own items); None: the owner receives `data`, as the admins do.
    owner_data: dict[str, Any] | None = None


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


class ModelLoadEvent(BaseModel):
    """A replica started or finished making a model's part ready (InvokeAI's `model_load_started`/`_complete`;
    sent on every use, cache hit or not, as InvokeAI does). `key` is a key of the job's model snapshot."""

    kind: Literal["started", "complete"]
    key: str
    submodel_type: str | None = None


ExecutionEvent = Progress | NodeEvent | ModelLoadEvent | ExecutionResult


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
    """InvokeAI's queue-wide views and bulk operations over the same jobs (storage.PgSessionQueue).

    `owner` narrows a view or bulk change to that user's items; None (the default) means everyone's."""

    async def max_pending_priority(self, queue_id: str) -> int: ...
    async def list_all(
        self, queue_id: str, destination: str | None = None, *, owner: str | None = None
    ) -> list[Job]: ...
    async def item_ids(
        self, queue_id: str, order_dir: Literal["ASC", "DESC"] = "DESC", *, owner: str | None = None
    ) -> list[int]: ...
    async def items_by_ids(self, queue_id: str, item_ids: Sequence[int], *, owner: str | None = None) -> list[Job]: ...
    async def list_cursor(
        self, queue_id: str, *, limit: int, status: str | None, cursor: int | None, priority: int,
        destination: str | None, owner: str | None = None,
    ) -> tuple[list[Job], bool]: ...  # fmt: skip
    async def get_item(self, item_id: int) -> Job: ...
    async def current(self, queue_id: str, *, owner: str | None = None) -> Job | None: ...
    async def next(self, queue_id: str, *, owner: str | None = None) -> Job | None: ...
    async def status(self, queue_id: str, *, owner: str | None = None) -> QueueStatus: ...
    async def batch_status(self, queue_id: str, batch_id: str, *, owner: str | None = None) -> BatchStatus: ...
    async def destination_counts(
        self, queue_id: str, destination: str, *, owner: str | None = None
    ) -> StatusCounts: ...
    async def cancel_pending(self, queue_id: str, *, owner: str | None = None) -> int: ...
    async def delete_pending(self, queue_id: str, *, owner: str | None = None) -> int: ...
    async def cancel_where(
        self, queue_id: str, *, batch_ids: Sequence[str] | None = None, destination: str | None = None,
        owner: str | None = None,
    ) -> int: ...  # fmt: skip
    async def delete_items(self, queue_id: str, destination: str | None = None, *, owner: str | None = None) -> int: ...
    async def prune(self, queue_id: str, *, owner: str | None = None) -> int: ...
    async def delete_item(self, item_id: int) -> None: ...
    async def retry_candidates(
        self, queue_id: str, item_ids: Sequence[int], *, owner: str | None = None
    ) -> list[Job]: ...
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


class ModelRegistry(Protocol):
    """Registered models (table `models`) and their relationships; every method is one transaction."""

    async def find(
        self,
        *,
        bases: Collection[str] | None = None,
        type: str | None = None,
        name: str | None = None,
        format: str | None = None,
    ) -> list[ModelRecord]:
        """Models matching every given filter (an empty `bases` matches any), by name, base, type."""
        ...

    async def get(self, key: str) -> ModelRecord:
        """One model; raise ModelNotFound."""
        ...

    async def get_many(self, keys: Collection[str]) -> dict[str, ModelRecord]:
        """The models among `keys` that exist, by key."""
        ...

    async def by_path(self, path: str) -> ModelRecord | None:
        """The model registered at this exact path, if any."""
        ...

    async def add(self, record: ModelRecord) -> ModelRecord:
        """Insert; raise Conflict when the key, the path, or (name, base, type) is taken."""
        ...

    async def add_missing(self, records: Sequence[ModelRecord]) -> int:
        """Insert those whose key and path are both free (a folder scan by several replicas at once); return
        how many were inserted."""
        ...

    async def update(self, key: str, changes: Mapping[str, object]) -> ModelRecord:
        """Set columns (ModelRecord field names); raise ModelNotFound, or Conflict on a clash."""
        ...

    async def delete(self, key: str) -> ModelRecord:
        """Remove the row (its relationships go with it) and return it; raise ModelNotFound."""
        ...

    async def related(self, key: str) -> list[str]:
        """Keys related to `key`, sorted."""
        ...

    async def relate(self, key_1: str, key_2: str) -> None:
        """Add an undirected relationship; InvalidRequest for a self-relation, ModelNotFound for an unknown key,
        Conflict when it exists."""
        ...

    async def unrelate(self, key_1: str, key_2: str) -> None:
        """Remove it; InvalidRequest for a self-relation, NotFound when there is none."""
        ...

    async def related_to_any(self, keys: Collection[str]) -> list[str]:
        """The union of keys related to any of `keys`, sorted."""
        ...


class ModelJobStore(Protocol):
    """Install and download jobs (tables `model_install_jobs`, `download_jobs`)."""

    async def create_install(self, job: InstallJob) -> InstallJob:
        """Insert (the given `id` is ignored) and return it with its new id."""
        ...

    async def get_install(self, job_id: int) -> InstallJob:
        """With its download parts; raise NotFound."""
        ...

    async def list_installs(self) -> list[InstallJob]:
        """Every install job, oldest first, with download parts."""
        ...

    async def update_install(self, job_id: int, changes: Mapping[str, object]) -> InstallJob:
        """Set fields (InstallJob field names, `source`/`config_in` as models or dicts); raise NotFound."""
        ...

    async def prune_installs(self) -> int:
        """Delete finished installs (completed, error, cancelled); return how many."""
        ...

    async def create_download(self, job: DownloadJob) -> DownloadJob:
        """Insert (the given `id` is ignored) and return it with its new id."""
        ...

    async def get_download(self, job_id: int) -> DownloadJob:
        """Raise NotFound."""
        ...

    async def list_downloads(self, *, owner: str | None = None, install_job_id: int | None = None) -> list[DownloadJob]:
        """Downloads, oldest first; `install_job_id=None` lists all of them."""
        ...

    async def update_download(self, job_id: int, changes: Mapping[str, object]) -> DownloadJob:
        """Set fields (DownloadJob field names); raise NotFound."""
        ...

    async def prune_downloads(self) -> int:
        """Delete finished downloads that belong to no install; return how many."""
        ...

    async def renew_leases(self, *, installs: Sequence[int], downloads: Sequence[int], seconds: float) -> None:
        """Extend the leases of these unfinished jobs (the ones this replica runs) to `seconds` from now."""
        ...

    async def reap_installs(self, reason: str, message: str) -> list[InstallJob]:
        """End as errors the unfinished installs whose lease expired (their replica stopped); return them."""
        ...

    async def reap_downloads(self, error_type: str, message: str) -> list[DownloadJob]:
        """End as errors the unfinished downloads whose lease expired (their replica stopped); return them."""
        ...


class PresetStore(Protocol):
    """Enfugue's model presets (`/api/models`), table `model_presets`."""

    async def all(self) -> list[ModelPreset]:
        """By name."""
        ...

    async def get(self, name: str) -> ModelPreset:
        """Raise NotFound."""
        ...

    async def create(self, preset: ModelPreset) -> ModelPreset:
        """Raise Conflict when the name is taken."""
        ...

    async def replace(self, name: str, preset: ModelPreset) -> ModelPreset:
        """Overwrite preset `name` with `preset` (which may rename it); NotFound, or Conflict on a rename clash."""
        ...

    async def delete(self, name: str) -> None:
        """Raise NotFound."""
        ...

    async def query(self, query: RestQuery) -> tuple[list[ModelPreset], int]:
        """Enfugue's generic REST query over columns name, model (the checkpoint), size, prompt and
        negative_prompt: the page, and the count before limit and offset. InvalidRequest for an unknown column."""
        ...


class HistoryEntry(BaseModel):
    """One Enfugue invocation as `/api/invocation-history` shows it (Enfugue's DiffusionInvocation row)."""

    id: str  # the job uuid as 32 hex digits
    user_id: str  # the job's owner
    started: datetime.datetime
    plan: dict[str, Any]  # the stored Enfugue request
    duration: float  # seconds from start to end of the run; 0 until it ends
    outputs: int  # images made
    error: str | None


class InvocationHistory(Protocol):
    """Enfugue jobs (origin "enfugue"), always of one owner."""

    async def query(self, owner: str, query: RestQuery) -> tuple[list[HistoryEntry], int]:
        """The page `query` selects among `owner`'s invocations, and the count before limit and offset.
        Columns: id, user_id, started, plan (ilike only), duration, outputs, error. InvalidRequest for an
        unknown column or a value of the wrong kind."""
        ...


class CacheStatsStore(Protocol):
    """What each Diffusion replica's model cache holds (table `model_cache_stats`, one row per replica)."""

    async def report(self, replica_id: str, stats: Mapping[str, object]) -> None:
        """Upsert this replica's row (stats in InvokeAI's `CacheStats` shape), stamped now."""
        ...

    async def remove(self, replica_id: str) -> None:
        """Drop the row of a replica that is shutting down."""
        ...

    async def live(self, max_age_s: float) -> list[dict[str, object]]:
        """Stats of the replicas that reported within `max_age_s`."""
        ...


class SettingsStore(Protocol):
    """Server settings (Enfugue's `/api/settings` keys, announcement state), table `app_settings`."""

    async def get_all(self) -> dict[str, Any]:
        """Every stored key and its JSON value."""
        ...

    async def set_many(self, values: Mapping[str, Any]) -> None:
        """Store (insert or overwrite) every key of `values` at once."""
        ...


class SettingsReader(Protocol):
    """The server settings other services obey. Each answer is the value set through `/api/settings`, or None
    when it was never set (the caller's configured limit applies); it may be a few seconds old."""

    async def max_waiting_jobs(self) -> int | None:
        """Enfugue jobs allowed to wait (`max_queued_invocations`)."""
        ...

    async def max_concurrent_downloads(self) -> int | None:
        """Downloads transferring at once on a replica."""
        ...

    async def max_queued_downloads(self) -> int | None:
        """Downloads allowed to wait for a slot; past it a new download is refused (QueueFull)."""
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
