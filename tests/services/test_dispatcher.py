"""Dispatcher against real Postgres with scripted executors, one per failure mode."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncGenerator
from pathlib import Path

import pytest

from serve_app.domain.errors import GenerationFailed
from serve_app.domain.images import StoredImage, image_key, image_name, thumbnail_key
from serve_app.domain.jobs import ClaimedJob, JobStatus, NewJob, Progress
from serve_app.domain.ports import ExecutionEvent, ExecutionResult
from serve_app.services.dispatcher import Dispatcher, DispatcherConfig
from serve_app.storage.objects import FileObjectStore

pytestmark = pytest.mark.asyncio(loop_scope="session")


def stored(job_id: uuid.UUID, count: int = 1) -> list[StoredImage]:
    names = [image_name(job_id, i) for i in range(count)]
    return [
        StoredImage(name=n, width=8, height=8, position=i, storage_key=image_key(n), thumbnail_key=thumbnail_key(n))
        for i, n in enumerate(names)
    ]


class Scripted:
    """An executor whose behaviour per attempt is chosen by the test."""

    def __init__(self, store: FileObjectStore, behaviours: list[str]) -> None:
        self.store = store
        self.behaviours = behaviours
        self.calls: list[tuple[uuid.UUID, int]] = []
        self.started = asyncio.Event()
        self.closed = asyncio.Event()

    async def execute(self, job: ClaimedJob) -> AsyncGenerator[ExecutionEvent, None]:
        self.calls.append((job.id, job.attempt))
        behaviour = self.behaviours[min(len(self.calls), len(self.behaviours)) - 1]
        try:
            yield Progress(step=1, total=2)
            self.started.set()
            if behaviour == "lost":
                raise ConnectionError("replica died")
            if behaviour == "fails":
                raise GenerationFailed("out of memory at this size", error_type="OutOfMemoryError")
            if behaviour == "hangs":
                await asyncio.Event().wait()
            images = stored(job.id)
            for image in images:
                await self.store.put(image.storage_key, b"png", "image/png")
                await self.store.put(image.thumbnail_key, b"webp", "image/webp")
            yield Progress(step=2, total=2)
            yield ExecutionResult(images=images)
        finally:
            self.closed.set()


@contextlib.asynccontextmanager
async def running(dispatcher: Dispatcher):
    task = asyncio.create_task(dispatcher.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def wait_status(repo, job_id, status: JobStatus, timeout: float = 10.0):
    async with asyncio.timeout(timeout):
        while (job := await repo.get(job_id)).status is not status:
            await asyncio.sleep(0.02)
    return job


def make(repo, executor, store, **config) -> Dispatcher:
    cfg = DispatcherConfig(**{"max_in_flight": 2, "lease_seconds": 30.0, "poll_interval": 0.05, **config})
    return Dispatcher(repo=repo, executor=executor, store=store, config=cfg)


async def submit(repo, max_attempts: int = 3) -> uuid.UUID:
    [job] = await repo.enqueue([NewJob(request={"prompt": "x"}, max_attempts=max_attempts)])
    return job.id


async def test_completes_and_records_images(repo, tmp_path: Path):
    store = FileObjectStore(tmp_path)
    executor = Scripted(store, ["ok"])
    job_id = await submit(repo)
    async with running(make(repo, executor, store)):
        job = await wait_status(repo, job_id, JobStatus.COMPLETED)
    assert job.image_names == [image_name(job_id, 0)]
    assert job.attempts == 1
    assert (job.progress_step, job.progress_total) == (2, 2)


async def test_generation_error_fails_without_retry(repo, tmp_path: Path):
    store = FileObjectStore(tmp_path)
    executor = Scripted(store, ["fails"])
    job_id = await submit(repo)
    async with running(make(repo, executor, store)):
        job = await wait_status(repo, job_id, JobStatus.FAILED)
    assert job.error is not None
    assert (job.error.type, job.error.message) == ("OutOfMemoryError", "out of memory at this size")
    assert len(executor.calls) == 1


async def test_lost_executor_is_retried_then_completes_exactly_once(repo, tmp_path: Path):
    store = FileObjectStore(tmp_path)
    executor = Scripted(store, ["lost", "ok"])
    job_id = await submit(repo)
    async with running(make(repo, executor, store)):
        job = await wait_status(repo, job_id, JobStatus.COMPLETED)
    assert executor.calls == [(job_id, 1), (job_id, 2)]
    assert job.attempts == 2
    assert job.image_names == [image_name(job_id, 0)]


async def test_gives_up_after_max_attempts_with_clear_error(repo, tmp_path: Path):
    store = FileObjectStore(tmp_path)
    executor = Scripted(store, ["lost"])
    job_id = await submit(repo, max_attempts=2)
    async with running(make(repo, executor, store)):
        job = await wait_status(repo, job_id, JobStatus.FAILED)
    assert len(executor.calls) == 2
    assert job.error is not None and "replica died" in job.error.message


async def test_cancel_closes_the_running_execution(repo, tmp_path: Path):
    store = FileObjectStore(tmp_path)
    executor = Scripted(store, ["hangs"])
    dispatcher = make(repo, executor, store, lease_seconds=0.3)
    job_id = await submit(repo)
    async with running(dispatcher):
        await asyncio.wait_for(executor.started.wait(), 10)
        await repo.cancel(job_id)
        # No change feed here: lease renewal notices the cancel and closes the stream.
        await asyncio.wait_for(executor.closed.wait(), 10)
        async with asyncio.timeout(10):
            while dispatcher.in_flight:
                await asyncio.sleep(0.02)
    job = await repo.get(job_id)
    assert job.status is JobStatus.CANCELED
    assert job.image_names == []


async def test_stopping_the_dispatcher_gives_running_jobs_back(repo, tmp_path: Path):
    store = FileObjectStore(tmp_path)
    executor = Scripted(store, ["hangs"])
    job_id = await submit(repo)
    async with running(make(repo, executor, store)):
        await asyncio.wait_for(executor.started.wait(), 10)
    job = await repo.get(job_id)
    assert job.status is JobStatus.PENDING
    assert job.attempts == 1


async def test_priority_then_fifo_with_bounded_in_flight(repo, tmp_path: Path):
    store = FileObjectStore(tmp_path)
    executor = Scripted(store, ["ok"])
    low = [(await repo.enqueue([NewJob(request={}, priority=0)]))[0].id for _ in range(3)]
    [high] = await repo.enqueue([NewJob(request={}, priority=10)])
    async with running(make(repo, executor, store, max_in_flight=1)):
        for job_id in [high.id, *low]:
            await wait_status(repo, job_id, JobStatus.COMPLETED)
    assert [job_id for job_id, _ in executor.calls] == [high.id, *low]


class ReleaseWaitsForReclaim:
    """The real repository, except that `release` returns only after the job was claimed again:
    forces the interleaving where a new attempt starts before the old attempt's task has ended."""

    def __init__(self, repo) -> None:
        self._repo = repo
        self.reclaimed = asyncio.Event()

    def __getattr__(self, name):
        return getattr(self._repo, name)

    async def claim(self, limit, lease_seconds):
        claimed = await self._repo.claim(limit, lease_seconds)
        if any(job.attempt > 1 for job in claimed):
            self.reclaimed.set()
        return claimed

    async def release(self, job_id, attempt, error):
        status = await self._repo.release(job_id, attempt, error)
        await asyncio.wait_for(self.reclaimed.wait(), 10)
        return status


async def test_retried_attempt_keeps_its_lease_when_the_old_attempt_ends_late(repo, tmp_path: Path):
    store = FileObjectStore(tmp_path)
    executor = Scripted(store, ["lost", "hangs"])
    wrapped = ReleaseWaitsForReclaim(repo)
    dispatcher = make(wrapped, executor, store, lease_seconds=0.3)
    job_id = await submit(repo)
    async with running(dispatcher):
        await asyncio.wait_for(wrapped.reclaimed.wait(), 10)
        # Several lease periods later the second attempt must still own the job: its lease is renewed.
        await wait_status(repo, job_id, JobStatus.IN_PROGRESS)
        async with asyncio.timeout(10):
            while len(executor.calls) < 2:
                await asyncio.sleep(0.02)
        for _ in range(10):
            await asyncio.sleep(0.1)  # spans three lease lengths; the assertion is on state, not time
            job = await repo.get(job_id)
            assert (job.status, job.attempts) == (JobStatus.IN_PROGRESS, 2)
        assert dispatcher.in_flight == [job_id]
