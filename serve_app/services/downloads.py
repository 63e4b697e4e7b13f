"""DownloadService: files fetched over HTTP(S) in the background, as rows any replica can read and cancel.

A job's row is written first, then a background task on this replica transfers the file into
`<dest>/.<name>.part` and renames it when it is complete (and its sha256 matches, when one was given). A
dropped connection is retried with `Range`, resuming the part; so is a part left by an earlier job that
fetched the same URL into the same file (a part of anything else is started over). Progress goes to the row
and the bus at most every `progress_interval_s`; each of those writes returns the row as stored, so a cancel
written by another replica stops the transfer at the next one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from serve_app.domain.errors import Conflict, QueueFull
from serve_app.domain.model_jobs import DownloadJob, DownloadStatus
from serve_app.domain.ports import BusMessage, EventBus, ModelJobStore, SettingsReader
from serve_app.services import download_files as files
from serve_app.services.background import INTERRUPTED, INTERRUPTED_MESSAGE, LEASE_S, JobTasks
from serve_app.services.priority_slots import PrioritySlots

log = logging.getLogger(__name__)

ProgressHook = Callable[[DownloadJob], Awaitable[None]]
# How long `wait` sleeps between reads of a job that runs on another replica.


class FetchResponse(Protocol):
    """An HTTP response whose body is being received."""

    @property
    def partial(self) -> bool:
        """True when the body starts at the requested offset (206), False when it is the whole file (200)."""
        ...

    @property
    def total_bytes(self) -> int | None:
        """The size of the whole file, when the server says."""
        ...

    @property
    def content_type(self) -> str | None: ...

    @property
    def filename(self) -> str | None:
        """The name from Content-Disposition, unsanitised."""
        ...

    def chunks(self) -> AsyncIterator[bytes]:
        """The body, piece by piece."""
        ...


class Fetcher(Protocol):
    """Opens HTTP(S) downloads (storage.http_fetch.HttpFetcher)."""

    def open(
        self, url: str, *, offset: int = 0, access_token: str | None = None
    ) -> AbstractAsyncContextManager[FetchResponse]:
        """GET `url` following redirects, asking for bytes from `offset` on when it is > 0, with the token as a
        bearer. Raise ConnectionError or TimeoutError when the transfer breaks off (now or while reading chunks:
        the caller resumes); any other exception (an HTTP error status) is final."""
        ...


class ChecksumMismatch(Exception):
    """The downloaded file's sha256 is not the expected one."""


class _Cancelled(Exception):
    """The job's row says cancelled (another replica, or `cancel` here)."""


@dataclass
class _Transfer:
    """What one job's task knows between attempts."""

    job: DownloadJob
    access_token: str | None
    filename: str | None
    overwrite: bool
    on_progress: ProgressHook | None
    name: str | None = None
    bytes: int = 0
    total: int = 0
    started: bool = False
    reported_at: float = field(default=float("-inf"))

    @property
    def dest(self) -> Path:
        return Path(self.job.dest)

    @property
    def part(self) -> Path | None:
        return None if self.name is None else files.part_path(self.dest, self.name)


def now() -> datetime:
    return datetime.now(UTC)


class DownloadService:
    """Background HTTP(S) downloads into the allowed folders (the models folder among them)."""

    def __init__(
        self,
        jobs: ModelJobStore,
        *,
        fetch: Fetcher,
        bus: EventBus | None,
        allowed_roots: Sequence[Path],
        max_concurrent: int = 2,
        max_queued: int | None = None,
        settings: SettingsReader | None = None,
        progress_interval_s: float = 0.5,
        retries: int = 3,
        retry_delay_s: float = 1.0,
    ) -> None:
        """A broken-off transfer is resumed up to `retries` times, after `retry_delay_s` times the attempt number.
        At most `max_concurrent` transfers run on this replica; past `max_queued` waiting downloads (None: no
        limit) a new one is refused. Limits set in `settings` (Enfugue's `/api/settings`) replace both; they are
        read at every new download."""
        self._jobs = jobs
        self._fetch = fetch
        self._bus = bus
        self._roots = [Path(root) for root in allowed_roots]
        self._max_concurrent = max_concurrent
        self._max_queued = max_queued
        self._settings = settings
        self._slots = PrioritySlots(max_concurrent)
        self._live: set[int] = set()  # this replica's unfinished downloads, holding a slot or waiting for one
        self._interval = progress_interval_s
        self._retries = retries
        self._retry_delay_s = retry_delay_s
        self._tasks = JobTasks()

    async def download(
        self,
        url: str,
        dest: Path | str,
        *,
        priority: int = 10,
        access_token: str | None = None,
        sha256: str | None = None,
        install_job_id: int | None = None,
        kind: str | None = None,
        owner: str = "admin",
        filename: str | None = None,
        overwrite: bool = True,
        on_progress: ProgressHook | None = None,
        dest_may_be_file: bool = False,
    ) -> DownloadJob:
        """Write the job's row (waiting) and start it in the background; `on_progress` sees every report.
        With `dest_may_be_file` (InvokeAI's download queue), a `dest` named like a model file that is not an
        existing folder is the file to write."""
        files.check_url(url)
        folder = files.check_dest(dest, self._roots)
        if dest_may_be_file and filename is None and files.looks_like_file(folder):
            folder, filename = folder.parent, folder.name
        name = files.safe_name(filename)
        if not overwrite and (folder / (name or files.url_name(url))).exists():
            raise Conflict(f"File exists: {name or files.url_name(url)}")
        await self._apply_limits(queued=install_job_id is None)
        job = await self._jobs.create_download(
            DownloadJob(
                id=0,
                source=url,
                dest=str(folder),
                # Known now when given; else once the server has answered (Content-Disposition or the URL).
                download_path=str(folder / name) if name else None,
                priority=priority,
                sha256=sha256.lower() if sha256 else None,
                install_job_id=install_job_id,
                kind=kind,
                owner=owner,
            )
        )
        transfer = _Transfer(job, access_token, name, overwrite, on_progress)
        self._tasks.start(job.id, self._run(transfer), name=f"download-{job.id}")
        task = self._tasks.get(job.id)
        if task is not None and not task.done():
            self._live.add(job.id)
            task.add_done_callback(lambda _: self._live.discard(job.id))
        return job

    async def _apply_limits(self, *, queued: bool) -> None:
        """Resize the slots to the current concurrency setting; with `queued`, refuse a download when the queue
        is full (the files of a model install are parts of one request, so they are not refused)."""
        concurrent = None if self._settings is None else await self._settings.max_concurrent_downloads()
        self._slots.resize(self._max_concurrent if concurrent is None else concurrent)
        limit = None if self._settings is None else await self._settings.max_queued_downloads()
        limit = self._max_queued if limit is None else limit
        # Counted here, not from the rows: a row stays `waiting` until its task has taken a slot, so a count of
        # rows would also refuse downloads about to start. Like the slots, the queue is per replica.
        waiting = len(self._live) - self._slots.size
        if queued and limit is not None and waiting >= limit:
            raise QueueFull(f"Too many downloads waiting: {waiting} of at most {limit}")

    async def get(self, job_id: int) -> DownloadJob:
        """One download; NotFound."""
        return await self._jobs.get_download(job_id)

    async def list(self, owner: str | None = None) -> list[DownloadJob]:
        """Every download (of one owner), oldest first."""
        return await self._jobs.list_downloads(owner=owner)

    async def cancel(self, job_id: int) -> DownloadJob:
        """Cancel an unfinished download (a finished one is returned as it is); NotFound."""
        job = await self._jobs.get_download(job_id)
        if job.status.finished:
            return job
        job = await self._jobs.update_download(job_id, {"status": DownloadStatus.CANCELLED, "job_ended": now()})
        if job.status is DownloadStatus.CANCELLED:
            task = self._tasks.get(job_id)
            if task is not None:
                task.cancel()  # here: stop now; elsewhere, its next progress write sees the row
            await self._publish("download_cancelled", {"source": job.source})
        return job

    async def cancel_all(self) -> int:
        """Cancel every unfinished download; return how many were cancelled."""
        cancelled = 0
        for job in await self._jobs.list_downloads():
            if not job.status.finished and (await self.cancel(job.id)).status is DownloadStatus.CANCELLED:
                cancelled += 1
        return cancelled

    async def prune(self) -> int:
        """Forget finished downloads that are not parts of an install."""
        return await self._jobs.prune_downloads()

    async def keep_leases(self) -> None:
        """Renew the leases of the downloads this replica runs; end as errors the ones whose replica stopped."""
        await self._jobs.renew_leases(installs=(), downloads=self._tasks.running(), seconds=LEASE_S)
        for job in await self._jobs.reap_downloads(INTERRUPTED, INTERRUPTED_MESSAGE):
            log.warning("download %s was left unfinished by a stopped server", job.id)
            await self._publish("download_error", {"source": job.source, "error_type": INTERRUPTED,
                                                   "error": INTERRUPTED_MESSAGE})  # fmt: skip

    async def wait(self, job_id: int) -> DownloadJob:
        """The job once finished (one running on another replica is polled)."""
        return await self._tasks.wait(job_id, self._jobs.get_download, lambda job: job.status.finished)

    async def aclose(self) -> None:
        """Stop every transfer of this replica; their rows end as errors (interrupted), parts are kept."""
        await self._tasks.aclose()

    # The background task

    async def _run(self, transfer: _Transfer) -> None:
        job_id = transfer.job.id
        try:
            async with self._slots.hold(transfer.job.priority, job_id):
                job = await self._jobs.update_download(job_id, {"status": DownloadStatus.RUNNING, "job_started": now()})
                if job.status is not DownloadStatus.RUNNING:
                    return  # cancelled while waiting
                transfer.job = job
                await self._transfer_with_retries(transfer)
                await self._complete(transfer)
        except (_Cancelled, asyncio.CancelledError) as exc:
            await asyncio.shield(self._stopped(transfer, shutdown=isinstance(exc, asyncio.CancelledError)))
        except Exception as exc:
            await asyncio.shield(self._failed(transfer, exc))

    async def _transfer_with_retries(self, transfer: _Transfer) -> None:
        failures = 0
        while True:
            try:
                if await self._attempt(transfer):
                    return
            except (ConnectionError, TimeoutError) as exc:
                failures += 1
                if failures > self._retries:
                    raise
                log.info("download %s broke off at %d bytes (%r); resuming", transfer.job.id, transfer.bytes, exc)
                await asyncio.sleep(self._retry_delay_s * failures)  # give a busy or restarting server a moment

    async def _attempt(self, transfer: _Transfer) -> bool:
        """One request; False when it must be repeated at once (a resumed part turned out to be another file's)."""
        job = transfer.job
        guess = transfer.name or transfer.filename or files.url_name(job.source)
        offset = await asyncio.to_thread(files.size_of, files.part_path(transfer.dest, guess))
        if offset and not transfer.started and not await self._left_by_same_source(job, guess):
            offset = 0  # a part of some other download of the same name: start over
        async with self._fetch.open(job.source, offset=offset, access_token=transfer.access_token) as response:
            name = transfer.name or transfer.filename or files.safe_name(response.filename) or guess
            if name != guess and response.partial:
                transfer.name = name
                return False
            transfer.name = name
            if not response.partial:
                offset = 0
            transfer.bytes = offset
            transfer.total = response.total_bytes or 0
            if not transfer.started:
                await self._started(transfer, response.content_type)
            part = transfer.part
            assert part is not None
            sink = await asyncio.to_thread(files.open_part, part, append=offset > 0)
            try:
                async for chunk in response.chunks():
                    await asyncio.to_thread(sink.write, chunk)
                    transfer.bytes += len(chunk)
                    await self._progress(transfer)
            finally:
                await asyncio.to_thread(sink.close)
        if transfer.total and transfer.bytes < transfer.total:
            raise ConnectionError(f"Connection closed after {transfer.bytes} of {transfer.total} bytes")
        return True

    async def _left_by_same_source(self, job: DownloadJob, name: str) -> bool:
        """Whether an earlier job fetched this URL into this very file (so its part may be resumed)."""
        path = str(Path(job.dest) / name)
        return any(
            other.id != job.id and other.source == job.source and other.download_path == path
            for other in await self._jobs.list_downloads()
        )

    async def _started(self, transfer: _Transfer, content_type: str | None) -> None:
        transfer.started = True
        assert transfer.name is not None
        download_path = str(transfer.dest / transfer.name)
        changes = {"download_path": download_path, "total_bytes": transfer.total, "content_type": content_type}
        transfer.job = await self._checked_update(transfer, changes)
        await self._publish("download_started", {"source": transfer.job.source, "download_path": download_path})

    async def _progress(self, transfer: _Transfer, *, force: bool = False) -> None:
        moment = time.monotonic()
        if not force and moment - transfer.reported_at < self._interval:
            return
        transfer.reported_at = moment
        transfer.job = await self._checked_update(transfer, {"bytes": transfer.bytes, "total_bytes": transfer.total})
        await self._publish(
            "download_progress",
            {
                "source": transfer.job.source,
                "download_path": transfer.job.download_path,
                "current_bytes": transfer.bytes,
                "total_bytes": transfer.total,
            },
        )
        if transfer.on_progress is not None:
            await transfer.on_progress(transfer.job)

    async def _checked_update(self, transfer: _Transfer, changes: dict[str, Any]) -> DownloadJob:
        job = await self._jobs.update_download(transfer.job.id, changes)
        if job.status is DownloadStatus.CANCELLED:
            raise _Cancelled()
        return job

    async def _complete(self, transfer: _Transfer) -> None:
        part, name = transfer.part, transfer.name
        assert part is not None and name is not None
        expected = transfer.job.sha256
        if expected is not None:
            actual = await asyncio.to_thread(files.sha256_of, part)
            if actual != expected:
                raise ChecksumMismatch(f"sha256 of {name} is {actual}, expected {expected}")
        await self._progress(transfer, force=True)
        target = transfer.dest / name
        await asyncio.to_thread(files.finish, part, target, overwrite=transfer.overwrite)
        total = transfer.total or transfer.bytes
        job = await self._jobs.update_download(
            transfer.job.id,
            {"status": DownloadStatus.COMPLETED, "bytes": transfer.bytes, "total_bytes": total, "job_ended": now()},
        )
        transfer.job = job
        if job.status is not DownloadStatus.COMPLETED:  # cancelled in the same instant: it stays cancelled
            await asyncio.to_thread(files.remove, target)
            return
        if transfer.on_progress is not None:
            await transfer.on_progress(job)
        await self._publish(
            "download_complete", {"source": job.source, "download_path": job.download_path, "total_bytes": total}
        )

    async def _stopped(self, transfer: _Transfer, *, shutdown: bool) -> None:
        """Cancelled by a user (part removed), or interrupted by shutdown (part kept for a later resume)."""
        job = await self._jobs.get_download(transfer.job.id)
        if job.status is DownloadStatus.CANCELLED:
            await asyncio.to_thread(files.remove, transfer.part)
        elif shutdown and not job.status.finished:
            interrupted = {"error_type": "Interrupted", "error": "The server shut down", "job_ended": now()}
            await self._jobs.update_download(job.id, {"status": DownloadStatus.ERROR, **interrupted})
        if transfer.on_progress is not None:
            await transfer.on_progress(await self._jobs.get_download(job.id))

    async def _failed(self, transfer: _Transfer, exc: Exception) -> None:
        log.warning("download %s of %s failed: %r", transfer.job.id, transfer.job.source, exc)
        if not isinstance(exc, ConnectionError | TimeoutError):
            # Only a broken-off transfer is worth resuming later; anything else starts over.
            await asyncio.to_thread(files.remove, transfer.part)
        error_type, error = type(exc).__name__, str(exc) or type(exc).__name__
        job = await self._jobs.update_download(
            transfer.job.id,
            {"status": DownloadStatus.ERROR, "error_type": error_type, "error": error, "job_ended": now()},
        )
        if job.status is DownloadStatus.ERROR:
            await self._publish("download_error", {"source": job.source, "error_type": error_type, "error": error})
        if transfer.on_progress is not None:
            await transfer.on_progress(job)

    async def _publish(self, event: str, data: dict[str, Any]) -> None:
        if self._bus is None:
            return
        try:
            await self._bus.publish(BusMessage(event=event, room=None, data={"timestamp": int(time.time()), **data}))
        except Exception:  # an event lost is not worth failing the download for
            log.exception("could not publish %s", event)
