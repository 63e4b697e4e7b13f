"""Adapters over Serve handles: the Diffusion handle as a JobExecutor, the Queue handle as a JobGateway."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncGenerator, Awaitable
from typing import Any, cast

from ray.exceptions import RayTaskError
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from serve_app.domain.errors import GenerationFailed, ServeAppError
from serve_app.domain.generation import GenerationRequest
from serve_app.domain.images import ImageRecord
from serve_app.domain.jobs import ClaimedJob, Job, JobStatus, Progress
from serve_app.domain.models import ModelSpec, ModelType
from serve_app.domain.ports import ExecutionEvent, ExecutionResult, ModelLoadEvent, NodeEvent


class RayDiffusionExecutor:
    """JobExecutor over the Diffusion deployment; closing the stream cancels the request on the replica."""

    def __init__(self, handle: DeploymentHandle[Any]) -> None:
        self._handle = handle.options(stream=True)

    async def execute(self, job: ClaimedJob) -> AsyncGenerator[ExecutionEvent, None]:
        # Affinity: Serve's multiplexing routes a job to a replica that reported its main model as loaded, then to
        # the replica with the fewest models, so a model stays on few replicas instead of being loaded everywhere.
        main = next((key for key, spec in job.models.items() if spec.type is ModelType.MAIN), "")
        handle = self._handle.options(multiplexed_model_id=main) if main else self._handle
        stream = cast(DeploymentResponseGenerator[list[dict[str, Any]]], handle.run.remote(job.model_dump(mode="json")))
        try:
            async for batch in stream:
                for item in batch:
                    kind = item.pop("type")
                    if kind == "progress":
                        yield Progress.model_validate(item)
                    elif kind == "node":
                        yield NodeEvent.model_validate(item)
                    elif kind == "model_load":
                        yield ModelLoadEvent.model_validate(item)
                    elif kind == "result":
                        yield ExecutionResult.model_validate(item)
                        return
                    else:
                        raise GenerationFailed(
                            item["message"], error_type=item["error_type"], traceback=item["traceback"]
                        )
        finally:
            # Cancel (a no-op once finished) so a replica stops denoising for a consumer that left.
            with contextlib.suppress(Exception):
                stream.cancel()  # type: ignore[no-untyped-call]


class QueueClient:
    """JobGateway over the Queue deployment, re-raising domain errors as themselves."""

    def __init__(self, handle: DeploymentHandle[Any]) -> None:
        self._handle = handle

    async def submit_generation(
        self, request: GenerationRequest, *, owner: str, queue_id: str = "default", priority: int = 0
    ) -> Job:
        job: Job = await _call(
            self._handle.submit_generation.remote(request, owner=owner, queue_id=queue_id, priority=priority)
        )
        return job

    async def get(self, job_id: uuid.UUID) -> Job:
        job: Job = await _call(self._handle.get.remote(job_id))
        return job

    async def list_jobs(self, *, owner: str | None = None, limit: int = 100, offset: int = 0) -> list[Job]:
        jobs: list[Job] = await _call(self._handle.list_jobs.remote(owner=owner, limit=limit, offset=offset))
        return jobs

    async def cancel(self, job_id: uuid.UUID) -> Job:
        job: Job = await _call(self._handle.cancel.remote(job_id))
        return job

    async def delete(self, job_id: uuid.UUID) -> None:
        await _call(self._handle.delete.remote(job_id))

    async def get_image(self, name: str) -> ImageRecord:
        image: ImageRecord = await _call(self._handle.get_image.remote(name))
        return image

    async def counts(self) -> dict[JobStatus, int]:
        counts: dict[JobStatus, int] = await _call(self._handle.counts.remote())
        return counts

    async def models(self) -> list[ModelSpec]:
        models: list[ModelSpec] = await _call(self._handle.models.remote())
        return models


async def _call(response: Awaitable[Any]) -> Any:
    try:
        return await response
    except RayTaskError as exc:
        if isinstance(exc.cause, ServeAppError):
            raise exc.cause from None
        raise
