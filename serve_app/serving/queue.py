"""Queue deployment: serves JobService calls (the Enfugue routes) and runs the dispatcher."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from serve_app.domain.generation import GenerationRequest
from serve_app.domain.images import ImageRecord
from serve_app.domain.jobs import Job, JobStatus
from serve_app.domain.models import ModelSpec
from serve_app.serving.args import QueueArgs
from serve_app.serving.clients import RayDiffusionExecutor
from serve_app.serving.wiring import queue_runtime


class QueueReplica:
    """Thin: every method delegates to JobService; the dispatcher runs as a background task."""

    # Serve awaits async constructors; the pool and LISTEN connection must open before serving.
    async def __init__(self, args: QueueArgs, diffusion: DeploymentHandle[Any]) -> None:  # type: ignore[misc]
        self._stack = contextlib.AsyncExitStack()
        self._runtime = await self._stack.enter_async_context(queue_runtime(args, RayDiffusionExecutor(diffusion)))
        self._service = self._runtime.service

    async def submit_generation(
        self, request: GenerationRequest, *, owner: str, queue_id: str = "default", priority: int = 0
    ) -> Job:
        return await self._service.submit_generation(request, owner=owner, queue_id=queue_id, priority=priority)

    async def get(self, job_id: uuid.UUID) -> Job:
        return await self._service.get(job_id)

    async def list_jobs(self, *, owner: str | None = None, limit: int = 100, offset: int = 0) -> list[Job]:
        return await self._service.list_jobs(owner=owner, limit=limit, offset=offset)

    async def cancel(self, job_id: uuid.UUID) -> Job:
        return await self._service.cancel(job_id)

    async def delete(self, job_id: uuid.UUID) -> None:
        await self._service.delete(job_id)

    async def get_image(self, name: str) -> ImageRecord:
        return await self._service.get_image(name)

    async def counts(self) -> dict[JobStatus, int]:
        return await self._service.counts()

    async def models(self) -> list[ModelSpec]:
        return await self._service.models()

    async def in_flight(self) -> list[uuid.UUID]:
        """Jobs this replica is running (for operators and tests)."""
        return self._runtime.dispatcher.in_flight

    async def check_health(self) -> None:
        if not self._runtime.dispatcher_alive():
            raise RuntimeError("dispatcher stopped")

    async def __del__(self) -> None:
        # Graceful stop: running jobs go back to pending for another replica, connections close.
        await self._stack.aclose()


# Mostly waiting on Postgres and handles: a fraction of a CPU by default.
Queue = serve.deployment(
    name="Queue", max_ongoing_requests=200, health_check_period_s=10, ray_actor_options={"num_cpus": 0.1}
)(QueueReplica)
