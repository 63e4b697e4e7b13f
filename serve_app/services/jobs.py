"""JobService: submit, read, cancel and delete jobs; every transition goes through here."""

from __future__ import annotations

import uuid
from typing import Protocol

from serve_app.domain.errors import InvalidRequest
from serve_app.domain.generation import GenerationRequest, Limits
from serve_app.domain.images import ImageRecord, object_keys
from serve_app.domain.jobs import Job, JobStatus, NewJob
from serve_app.domain.models import ModelSpec
from serve_app.domain.ports import (
    JobRepository,
    ModelCatalog,
    ModelRegistry,
    ObjectStore,
    PresetStore,
    SettingsReader,
)
from serve_app.services.enfugue_control import ControlNetSettings
from serve_app.services.generation_graphs import generation_graph
from serve_app.services.model_resolution import ModelResolver
from serve_app.services.session_queue import graph_request


class JobGateway(Protocol):
    """What the HTTP layer needs from the queue: JobService in-process, a Ray handle client in a cluster."""

    async def submit_generation(
        self, request: GenerationRequest, *, owner: str, queue_id: str = "default", priority: int = 0
    ) -> Job:
        """Validate and durably enqueue one generation job."""
        ...

    async def get(self, job_id: uuid.UUID) -> Job:
        """One job; raise JobNotFound."""
        ...

    async def list_jobs(self, *, owner: str | None = None, limit: int = 100, offset: int = 0) -> list[Job]:
        """Jobs, newest first."""
        ...

    async def cancel(self, job_id: uuid.UUID) -> Job:
        """Cancel a waiting or running job; terminal jobs are returned unchanged."""
        ...

    async def delete(self, job_id: uuid.UUID) -> None:
        """Cancel if needed, then delete the job, its image rows and its image objects."""
        ...

    async def get_image(self, name: str) -> ImageRecord:
        """One image record; raise ImageNotFound."""
        ...

    async def counts(self) -> dict[JobStatus, int]:
        """How many jobs are in each status."""
        ...

    async def models(self) -> list[ModelSpec]:
        """The models a request may name."""
        ...


class JobService:
    """The queue's use cases. Runs inside the Queue deployment (or in-process in tests)."""

    def __init__(
        self,
        *,
        repo: JobRepository,
        catalog: ModelCatalog,
        store: ObjectStore,
        limits: Limits,
        max_attempts: int = 3,
        registry: ModelRegistry | None = None,
        presets: PresetStore | None = None,
        settings: SettingsReader | None = None,
        controlnet_settings: ControlNetSettings | None = None,
    ) -> None:
        """Models are looked up in `registry` and then the `catalog` (the models folder), or the catalog only
        without a registry; `model` may name one of the `presets` (Enfugue's `/api/models`). A waiting-job
        limit set in `settings` (Enfugue's `max_queued_invocations`) replaces `limits.max_waiting_jobs`;
        `controlnet_settings` (the same `/api/settings`) map Enfugue's controlnet names to repos."""
        self._repo = repo
        self._catalog = catalog
        self._resolver = ModelResolver(
            catalog=catalog, registry=registry, presets=presets, settings=controlnet_settings
        )
        self._store = store
        self._limits = limits
        self._max_attempts = max_attempts
        self._settings = settings

    async def submit_generation(
        self, request: GenerationRequest, *, owner: str, queue_id: str = "default", priority: int = 0
    ) -> Job:
        # Resolve the models first so the stored graph names concrete ones: a retry, or a later change of
        # the default model or of a preset, must not change what this job generates.
        resolution = await self._resolver.resolve(request)
        request = self._limits.capped(resolution.request)  # upscale img2img steps, at most max_steps
        self._limits.check(request)
        # The graph engine runs it, as it runs InvokeAI's graphs; the Enfugue parameters stay alongside.
        graph = generation_graph(
            request,
            resolution.main,
            loras=resolution.loras,
            vae=resolution.vae,
            embeddings=resolution.embeddings,
            extras=resolution.extras,
        )
        job_request = {**graph_request(graph), "enfugue": request.to_json()}
        jobs = await self._repo.enqueue(
            [
                NewJob(
                    request=job_request,
                    owner=owner,
                    queue_id=queue_id,
                    priority=priority,
                    max_attempts=self._max_attempts,
                    session_id=str(uuid.uuid4()),
                    origin="enfugue",
                )
            ],
            max_waiting=await self._max_waiting(),
        )
        return jobs[0]

    async def _max_waiting(self) -> int:
        setting = None if self._settings is None else await self._settings.max_waiting_jobs()
        return self._limits.max_waiting_jobs if setting is None else setting

    async def get(self, job_id: uuid.UUID) -> Job:
        return await self._repo.get(job_id)

    async def list_jobs(self, *, owner: str | None = None, limit: int = 100, offset: int = 0) -> list[Job]:
        if limit < 1 or offset < 0:
            raise InvalidRequest("`limit` must be positive and `offset` not negative", field="limit")
        return await self._repo.list_jobs(owner=owner, limit=limit, offset=offset)

    async def cancel(self, job_id: uuid.UUID) -> Job:
        return await self._repo.cancel(job_id)

    async def delete(self, job_id: uuid.UUID) -> None:
        # Cancel first so a running replica stops and cannot write images for a deleted job.
        await self._repo.cancel(job_id)
        images = await self._repo.delete(job_id)
        await self._store.delete(object_keys(images))

    async def get_image(self, name: str) -> ImageRecord:
        return await self._repo.get_image(name)

    async def counts(self) -> dict[JobStatus, int]:
        return await self._repo.count_by_status()

    async def models(self) -> list[ModelSpec]:
        return self._catalog.list()
