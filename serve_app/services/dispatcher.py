"""Dispatcher: claims pending jobs from Postgres, hands them to an executor, records outcomes.

Runs inside every Queue replica. Postgres decides who runs what (SKIP LOCKED claims); this
loop only keeps a bounded number of jobs in flight, so priority order and cancellation of
waiting jobs stay in the database. LISTEN/NOTIFY wakes it up early; polling keeps it correct
when a notification is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import traceback
import uuid
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any

from serve_app.domain.errors import ExecutorLost, GenerationFailed, JobNotFound
from serve_app.domain.images import StoredImage, object_keys
from serve_app.domain.jobs import ClaimedJob, JobError, JobStatus, Progress
from serve_app.domain.ports import (
    BusMessage,
    ChangeFeed,
    EventBus,
    ExecutionEvent,
    ExecutionResult,
    JobChange,
    JobExecutor,
    JobRepository,
    ModelLoadEvent,
    NodeEvent,
    ObjectStore,
)
from serve_app.services import invokeai_events
from serve_app.services.enfugue_intermediates import IntermediatePreviews, PreviewInterval
from serve_app.services.model_snapshot import ModelSnapshots, Snapshot

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DispatcherConfig:
    """How hard one Queue replica drives the executors."""

    max_in_flight: int = 4
    lease_seconds: float = 30.0
    poll_interval: float = 1.0


@dataclass
class _InFlight:
    job: ClaimedJob
    task: asyncio.Task[None]
    stopping_for_shutdown: bool = False


class Dispatcher:
    """Claim → execute → record, for as long as `run()` is awaited."""

    def __init__(
        self,
        *,
        repo: JobRepository,
        executor: JobExecutor,
        store: ObjectStore,
        feed: ChangeFeed | None = None,
        events: EventBus | None = None,
        snapshots: ModelSnapshots | None = None,
        config: DispatcherConfig = DispatcherConfig(),
        preview_interval: PreviewInterval | None = None,
    ) -> None:
        """`snapshots` resolves each job's models from the registry before it is executed (without it jobs go
        out as claimed, and replicas resolve models from their own catalog). `preview_interval` is the
        `intermediate_steps` setting (Enfugue previews every 10 steps without it)."""
        self._repo = repo
        self._executor = executor
        self._store = store
        self._feed = feed
        self._events = events
        self._snapshots = snapshots
        self._config = config
        # Enfugue's intermediate previews (its status object)
        self._previews = IntermediatePreviews(store, interval=preview_interval)
        self._in_flight: dict[uuid.UUID, _InFlight] = {}
        self._wake = asyncio.Event()

    @property
    def in_flight(self) -> list[uuid.UUID]:
        return list(self._in_flight)

    def wake(self) -> None:
        """Look for work now instead of at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Dispatch until cancelled; on cancellation, give running jobs back to the queue."""
        unsubscribe = self._feed.subscribe(self._on_change) if self._feed else None
        loops = [
            asyncio.create_task(self._claim_loop(), name="dispatcher-claim"),
            asyncio.create_task(self._lease_loop(), name="dispatcher-lease"),
        ]
        try:
            await asyncio.gather(*loops)
        finally:
            for loop in loops:
                loop.cancel()
            if unsubscribe:
                unsubscribe()
            await self._release_all()

    # -- wake-ups -------------------------------------------------------------------------

    def _on_change(self, change: JobChange) -> None:
        if change.status is JobStatus.PENDING:
            self._wake.set()
        elif change.status is JobStatus.CANCELED and change.id in self._in_flight:
            # Stop the executor within one step; other stale cases are caught by lease renewal.
            self._in_flight[change.id].task.cancel()

    async def _wait_for_wake(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=self._config.poll_interval)
        self._wake.clear()

    # -- loops ----------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        while True:
            free = self._config.max_in_flight - len(self._in_flight)
            claimed: Sequence[ClaimedJob] = []
            if free > 0:
                try:
                    claimed = await self._repo.claim(free, self._config.lease_seconds)
                except Exception:  # the database may be restarting; keep polling
                    log.exception("claim failed")
            for job in claimed:
                task = asyncio.create_task(self._run_job(job), name=f"job-{job.id}")
                self._in_flight[job.id] = _InFlight(job=job, task=task)
            if len(claimed) < free or free <= 0:
                await self._wait_for_wake()

    async def _lease_loop(self) -> None:
        """Renew leases of our jobs, stop the ones canceled meanwhile, and reap expired leases."""
        interval = self._config.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self._renew()
                if await self._repo.requeue_expired():
                    self._wake.set()
            except Exception:
                log.exception("lease maintenance failed")

    async def _renew(self) -> None:
        claims = [(entry.job.id, entry.job.attempt) for entry in self._in_flight.values()]
        if not claims:
            return
        renewed = await self._repo.renew_leases(claims, self._config.lease_seconds)
        for job_id, _ in claims:
            entry = self._in_flight.get(job_id)
            # Not renewed: canceled, or the lease was lost and another replica owns it now.
            if job_id not in renewed and entry is not None:
                entry.task.cancel()

    # -- one job --------------------------------------------------------------------------

    async def _run_job(self, job: ClaimedJob) -> None:
        try:
            snapshot = await self._snapshots.resolve(job) if self._snapshots is not None else Snapshot(job)
            async with contextlib.aclosing(self._executor.execute(snapshot.job)) as events:
                await self._consume(snapshot, events)
        except asyncio.CancelledError:
            entry = self._in_flight.get(job.id)
            if entry is not None and entry.stopping_for_shutdown:
                await self._repo.release(job.id, job.attempt, _error(ExecutorLost("The queue replica stopped.")))
            raise
        except Exception as exc:  # lost replica, network, bug: retry until attempts run out
            log.warning("job %s attempt %d lost: %r", job.id, job.attempt, exc)
            await self._repo.release(job.id, job.attempt, _error(exc))
        finally:
            # Only our own entry: the job may already be pending again and reclaimed under a
            # newer attempt, whose entry must stay so its lease keeps being renewed.
            entry = self._in_flight.get(job.id)
            if entry is not None and entry.job.attempt == job.attempt:
                del self._in_flight[job.id]
            self._previews.forget(job.id)
            self._wake.set()

    async def _consume(self, snapshot: Snapshot, events: AsyncGenerator[ExecutionEvent, None]) -> None:
        job = snapshot.job
        failed_node: NodeEvent | None = None
        try:
            async for event in events:
                if isinstance(event, ModelLoadEvent):
                    message = None if self._snapshots is None else self._snapshots.load_message(snapshot, event)
                    if message is not None:
                        await self._publish(message)
                    continue
                if isinstance(event, Progress):
                    if not await self._repo.report_progress(job.id, job.attempt, event.step, event.total):
                        return  # canceled or stale: closing the stream stops the executor
                elif isinstance(event, NodeEvent):
                    if event.kind == "error":
                        failed_node = event  # told after the item is marked failed, as InvokeAI orders them
                    elif not await self._record_node_event(job, event):
                        return
                elif isinstance(event, ExecutionResult):
                    await self._record_result(job, event.images, event.session)
                    return
        except GenerationFailed as exc:
            session = None if failed_node is None else failed_node.session
            if await self._repo.fail(job.id, job.attempt, _error(exc), session) and failed_node is not None:
                await self._publish(_node_message(job, failed_node))
            return
        await self._repo.release(job.id, job.attempt, _error(ExecutorLost("The executor ended without a result.")))

    async def _record_node_event(self, job: ClaimedJob, event: NodeEvent) -> bool:
        """Store what the event reports, then tell clients; False when our attempt is no longer current."""
        if event.images and not await self._repo.add_images(job.id, job.attempt, event.images):
            return False
        await self._previews.on_event(job.id, job.request, event)
        step, total = event.step, event.total
        reported = step is None or total is None or await self._repo.report_progress(job.id, job.attempt, step, total)
        if not reported:
            return False
        await self._publish(_node_message(job, event))
        return True

    async def _publish(self, message: BusMessage) -> None:
        if self._events is None:
            return
        try:
            await self._events.publish(message)
        except Exception:  # events are best effort; the job's state is already durable
            log.exception("could not publish %s", message.event)

    async def _record_result(self, job: ClaimedJob, images: list[StoredImage], session: dict[str, Any] | None) -> None:
        if await self._repo.complete(job.id, job.attempt, images, session):
            return
        # Our attempt is stale. If nobody else will use these objects (the job was canceled,
        # failed or deleted), remove them; a newer attempt writes the same keys, so keep them then.
        try:
            status = (await self._repo.get(job.id)).status
        except JobNotFound:
            status = None
        if status is None or status in (JobStatus.CANCELED, JobStatus.FAILED):
            await self._store.delete(object_keys(images))

    async def _release_all(self) -> None:
        entries = list(self._in_flight.values())
        for entry in entries:
            entry.stopping_for_shutdown = True
            entry.task.cancel()
        await asyncio.gather(*(entry.task for entry in entries), return_exceptions=True)


_NODE_EVENTS = {
    "started": "invocation_started",
    "progress": "invocation_progress",
    "complete": "invocation_complete",
    "error": "invocation_error",
}


def _node_message(job: ClaimedJob, event: NodeEvent) -> BusMessage:
    extra: dict[str, Any]
    if event.kind == "progress":
        extra = {"message": event.message or "", "percentage": event.percentage, "image": event.image}
    elif event.kind == "complete":
        extra = {"result": event.result}
    elif event.kind == "error":
        extra = {
            "error_type": event.error_type,
            "error_message": event.error_message,
            "error_traceback": event.error_traceback,
            "user_id": None,
            "project_id": None,
        }
    else:
        extra = {}
    return invokeai_events.invocation_event(
        _NODE_EVENTS[event.kind], job, invocation=event.invocation, source_node_id=event.source_node_id, extra=extra
    )


def _error(exc: BaseException) -> JobError:
    if isinstance(exc, GenerationFailed):
        return JobError(type=exc.error_type, message=exc.message, traceback=exc.traceback)
    return JobError(
        type=type(exc).__name__,
        message=str(exc) or type(exc).__name__,
        traceback="".join(traceback.format_exception(exc)),
    )
