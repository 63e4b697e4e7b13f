"""The tasks one replica runs for job rows (downloads, installs), by job id.

The rows are the truth and any replica may be asked about any job; the task only exists on the replica that
runs it, so waiting for a job elsewhere falls back to polling its row.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

_J = TypeVar("_J")

# How often a job that runs on another replica is re-read while waiting for it.
REMOTE_POLL_S = 0.25


class JobTasks:
    def __init__(self) -> None:
        self._tasks: dict[int, asyncio.Task[None]] = {}

    def start(self, job_id: int, work: Coroutine[Any, Any, None], *, name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks[job_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job_id, None))

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
