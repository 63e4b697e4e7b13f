"""InProcessExecutor: runs a claimed job on this process's GenerationRunner and streams its events.

The Diffusion replica wraps this; tests and single-process setups use it directly as the
`JobExecutor`. The pipeline runs on one dedicated worker thread because diffusers pipelines
are not thread-safe, and so the event loop stays free to stream progress and hear cancels.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import traceback
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from PIL import Image

from serve_app.domain.errors import GenerationFailed
from serve_app.domain.generation import GenerationRequest
from serve_app.domain.images import StoredImage, image_key, image_name, thumbnail_key
from serve_app.domain.jobs import ClaimedJob, Progress
from serve_app.domain.ports import ExecutionEvent, ExecutionResult, ModelCatalog, ObjectStore
from serve_app.inference.encoding import encode_png, encode_thumbnail
from serve_app.inference.graph_context import MappingCatalog
from serve_app.inference.graph_executor import GRAPH_KIND, GraphRunner
from serve_app.inference.model_cache import ModelCache
from serve_app.inference.runner import GenerationRunner
from serve_app.inference.threaded import Finished, run_on_thread


class InProcessExecutor:
    """Implements the JobExecutor port on top of a GenerationRunner in this process."""

    def __init__(
        self,
        *,
        runner: GenerationRunner,
        catalog: ModelCatalog,
        store: ObjectStore,
        progress_interval: float = 0.1,
    ) -> None:
        self._runner = runner
        self._catalog = catalog
        self._store = store
        self._progress_interval = progress_interval
        # One thread: pipeline calls are serialized, never concurrent.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="diffusion")
        self._graphs = GraphRunner(
            cache=runner.cache,
            catalog=catalog,
            store=store,
            thread=self._thread,
            device=runner.device,
            dtype=runner.dtype,
            progress_interval=progress_interval,
        )

    @property
    def cache(self) -> ModelCache:
        """The runner's model cache: `stats()`, `clear()` and `on_change` for the replica."""
        return self._runner.cache

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)

    async def execute(self, job: ClaimedJob) -> AsyncGenerator[ExecutionEvent, None]:
        """Yield throttled Progress (NodeEvents for graphs), then an ExecutionResult once every image is stored."""
        if job.request.get("kind") == GRAPH_KIND:
            # aclosing: when our consumer closes us, close the graph run now (its stop flag), not at GC.
            async with contextlib.aclosing(self._graphs.execute(job)) as graph_events:
                async for graph_event in graph_events:
                    yield graph_event
            return
        request = _parse_request(job)
        throttle = _Throttle(self._progress_interval)

        def work(emit: Callable[[Progress], None], should_stop: Callable[[], bool]) -> list[Image.Image]:
            def on_step(step: int, total: int) -> None:
                if throttle.due(final=step == total):
                    emit(Progress(step=step, total=total))

            catalog = MappingCatalog(job.models, fallback=self._catalog) if job.models else self._catalog
            spec = catalog.resolve(request.model)
            return self._runner.run(spec, request, on_step=on_step, should_stop=should_stop).images

        images: list[Image.Image] = []
        try:
            async with contextlib.aclosing(run_on_thread(self._thread, work)) as stream:
                async for item in stream:
                    if isinstance(item, Finished):
                        images = item.value
                    else:
                        yield item
        except Exception as exc:
            raise _as_failure(exc) from exc
        yield ExecutionResult(images=await self._store_images(job, request, images))

    async def _store_images(
        self, job: ClaimedJob, request: GenerationRequest, images: list[Image.Image]
    ) -> list[StoredImage]:
        stored = []
        for index, image in enumerate(images):
            name = image_name(job.id, index)
            metadata: dict[str, Any] = {**request.to_json(), "seed": request.seed + index, "job_id": job.id.hex}
            png, thumb = await asyncio.to_thread(_encode, image, metadata)
            key, thumb_key = image_key(name), thumbnail_key(name)
            await self._store.put(key, png, "image/png")
            await self._store.put(thumb_key, thumb, "image/webp")
            stored.append(
                StoredImage(
                    name=name,
                    width=image.width,
                    height=image.height,
                    position=index,
                    storage_key=key,
                    thumbnail_key=thumb_key,
                    metadata=metadata,
                )
            )
        return stored


class _Throttle:
    """At most one progress report per interval, plus always the final step."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._last = float("-inf")

    def due(self, *, final: bool) -> bool:
        now = time.monotonic()
        if final or now - self._last >= self._interval:
            self._last = now
            return True
        return False


def _parse_request(job: ClaimedJob) -> GenerationRequest:
    try:
        return GenerationRequest.model_validate(job.request)
    except ValueError as exc:
        raise GenerationFailed(f"Unreadable job request: {exc}", error_type="InvalidRequest") from exc


def _encode(image: Image.Image, metadata: dict[str, Any]) -> tuple[bytes, bytes]:
    png = encode_png(image, {"serve_app_metadata": json.dumps(metadata)})
    return png, encode_thumbnail(image)


def _as_failure(exc: Exception) -> GenerationFailed:
    if isinstance(exc, GenerationFailed):
        return exc
    error_type = type(exc).__name__
    return GenerationFailed(
        str(exc) or error_type, error_type=error_type, traceback="".join(traceback.format_exception(exc))
    )
