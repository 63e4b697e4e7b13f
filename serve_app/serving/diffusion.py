"""Diffusion deployment: loads pipelines and runs one job at a time, streaming its events."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from ray import serve

from serve_app.domain.errors import GenerationFailed
from serve_app.domain.jobs import ClaimedJob, Progress
from serve_app.domain.ports import ExecutionEvent, ModelLoadEvent, NodeEvent
from serve_app.serving.args import DiffusionArgs
from serve_app.serving.batching import batches
from serve_app.serving.cache_reporter import CacheReporter
from serve_app.serving.wiring import build_catalog, build_store

log = logging.getLogger(__name__)


# Main models a replica is routed as holding; beyond it Serve forgets the least recently used one.
_AFFINITY_MODELS = 4
_GIB = 2**30


@dataclass(frozen=True)
class _Resident:
    model_key: str


class DiffusionReplica:
    """A GPU (or CPU) replica. Events cross Ray as plain dicts; job errors are events, not exceptions."""

    async def __init__(self, args: DiffusionArgs) -> None:  # type: ignore[misc]
        # Heavy imports here, not at module level: Ingress and Queue replicas never load torch.
        import torch

        from serve_app.inference.executor import InProcessExecutor
        from serve_app.inference.loading import pick_device, silence_progress_bars
        from serve_app.inference.model_cache import ModelCache
        from serve_app.inference.runner import GenerationRunner

        silence_progress_bars()
        device, dtype = pick_device()
        if device.type == "cpu":
            # One thread per replica: oversubscribing a few cores makes every replica slower.
            os.environ["OMP_NUM_THREADS"] = str(args.torch_threads)
            torch.set_num_threads(args.torch_threads)
        cache = ModelCache(
            ram_bytes=int(args.cache_ram_gb * _GIB),
            vram_bytes=None if args.cache_vram_gb is None else int(args.cache_vram_gb * _GIB),
        )
        runner = GenerationRunner(cache, device=device, dtype=dtype)
        self._executor = InProcessExecutor(
            runner=runner,
            catalog=build_catalog(args.models_dir, args.default_model),
            store=build_store(args.storage),
            progress_interval=args.progress_interval,
        )
        self._reporter: CacheReporter | None = None
        if args.database_url:
            replica_id = serve.get_replica_context().replica_id.unique_id
            self._reporter = CacheReporter(cache, database_url=args.database_url, replica_id=replica_id)
            await self._reporter.start()
        log.info("Diffusion replica ready on %s (%s)", device, dtype)

    @serve.multiplexed(max_num_models_per_replica=_AFFINITY_MODELS)  # type: ignore[untyped-decorator]
    async def _resident(self, model_key: str) -> _Resident:
        # Only tells Serve's router which main models this replica has served lately (see RayDiffusionExecutor);
        # what stays loaded is the model cache's decision, within its memory budget.
        return _Resident(model_key)

    async def run(self, job: dict[str, Any]) -> AsyncGenerator[list[dict[str, Any]], None]:
        """Stream lists of {"type": "progress"|"node"|"model_load"|"result"|"error", ...} for one claimed job
        (each list: the events that were ready together)."""
        claimed = ClaimedJob.model_validate(job)
        model_key = serve.get_multiplexed_model_id()
        if model_key:
            await self._resident(model_key)
        try:
            async for events in batches(self._executor.execute(claimed)):
                yield [_wire(event) for event in events]
        except GenerationFailed as exc:
            yield [{"type": "error", "error_type": exc.error_type, "message": exc.message, "traceback": exc.traceback}]

    def check_health(self) -> None:
        """Serve restarts a replica whose check raises; loading state is checked per job."""

    async def __del__(self) -> None:
        if getattr(self, "_reporter", None) is not None:
            await self._reporter.stop()  # type: ignore[union-attr]
        executor = getattr(self, "_executor", None)
        if executor is not None:
            executor.close()


def _wire(event: ExecutionEvent) -> dict[str, Any]:
    if isinstance(event, Progress):
        return {"type": "progress", **event.model_dump()}
    if isinstance(event, NodeEvent):
        return {"type": "node", **event.model_dump(mode="json")}
    if isinstance(event, ModelLoadEvent):
        return {"type": "model_load", **event.model_dump(mode="json")}
    return {"type": "result", **event.model_dump(mode="json")}


# Two requests per replica: one denoising, one waiting on the replica's single pipeline thread.
Diffusion = serve.deployment(
    name="Diffusion",
    max_ongoing_requests=2,
    health_check_period_s=10,
    ray_actor_options={"num_cpus": 1},  # a Serve config file sets GPUs for real deployments
)(DiffusionReplica)
