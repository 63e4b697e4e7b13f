"""The tasks one replica runs for job rows (downloads, installs), by job id, and the leases on those rows.

The rows are the truth and any replica may be asked about any job; the task only exists on the replica that
runs it, so waiting for a job elsewhere falls back to polling its row. A replica that crashes takes its tasks
with it, so each row carries a lease its replica renews while the task lives; any replica ends a job whose
lease ran out as an error (a client sees it and can retry) instead of leaving it running forever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol, TypeVar

_J = TypeVar("_J")

log = logging.getLogger(__name__)

# How often a job that runs on another replica is re-read while waiting for it.
REMOTE_POLL_S = 0.25
# A lease outlives four missed renewals, so a busy event loop does not lose its jobs.
LEASE_S = 60.0
LEASE_RENEW_S = 15.0
INTERRUPTED = "Interrupted"
INTERRUPTED_MESSAGE = "The server running this job stopped before it finished; start it again"


class JobTasks:
    def __init__(self) -> None:
        self._tasks: dict[int, asyncio.Task[None]] = {}

    def start(self, job_id: int, work: Coroutine[Any, Any, None], *, name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks[job_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job_id, None))

    def running(self) -> list[int]:
        """The ids of the jobs this replica runs now."""
        return list(self._tasks)

    def get(self, job_id: int) -> asyncio.Task[None] | None:
        """The task running `job_id` here, if this replica runs it."""
        return self._tasks.get(job_id)

    async def wait(self, job_id: int, read: Callable[[int], Awaitable[_J]], finished: Callable[[_J], bool]) -> _J:
        """The job's row once `finished` (ours: when its task ends; another replica's: polled)."""
        while True:
            task = self._tasks.get(job_id)
            if task is not None:
                await asyncio.wait({task})
            job = await read(job_id)
            if finished(job):
                return job
            if task is None:
                await asyncio.sleep(REMOTE_POLL_S)

    async def aclose(self) -> None:
        """Cancel every task of this replica and wait for them to finish their clean-up."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Leased(Protocol):
    async def keep_leases(self) -> None:
        """Renew the leases of this replica's jobs and end the jobs whose lease expired."""
        ...


async def keep_leases(*services: Leased, every: float = LEASE_RENEW_S) -> None:
    """Run each service's `keep_leases` every `every` seconds until cancelled; a failed round is logged and
    retried at the next one (a lease outlives several)."""
    while True:
        for service in services:
            try:
                await service.keep_leases()
            except Exception:
                log.exception("could not keep the leases of %s", type(service).__name__)
        await asyncio.sleep(every)
