"""Demo models in a catalog folder, a file object store and one InProcessExecutor for every graph test.

`run_graph` plays the part of the session queue: it expands an enqueue body into one session's graph exactly as
`enqueue_batch` does, claims it as a job with `request={"kind": "graph", "graph": ...}` and collects every event.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from serve_app.domain.graph.batch import Batch, expand_batch
from serve_app.domain.images import image_key, thumbnail_key
from serve_app.domain.imaging import encode_png, encode_thumbnail, png_text
from serve_app.domain.jobs import ClaimedJob
from serve_app.domain.models import ModelSpec
from serve_app.domain.ports import ExecutionEvent, ExecutionResult, ModelLoadEvent, NodeEvent
from serve_app.inference.executor import InProcessExecutor
from serve_app.inference.model_cache import ModelCache
from serve_app.inference.runner import GenerationRunner
from serve_app.inference.tiny import DEMO_LORA, DEMO_VAE, build_tiny_lora, build_tiny_sdxl, ensure_demo_models
from serve_app.storage.model_catalog import DirectoryModelCatalog
from serve_app.storage.objects import FileObjectStore
from tests.support.invokeai_graphs import enqueue_body

torch.set_num_threads(1)

SIZE = 64
STEPS = 4


@dataclass(frozen=True)
class Demo:
    """The demo models as the catalog lists them."""

    catalog: DirectoryModelCatalog
    sd15: ModelSpec
    sdxl: ModelSpec
    lora: ModelSpec
    vae: ModelSpec
    lora_sdxl: ModelSpec


def identifier(spec: ModelSpec) -> dict[str, Any]:
    """The ModelIdentifierField the web UI sends for a model."""
    return {"key": spec.key, "hash": "blake3:0", "name": spec.name, "base": spec.family.value, "type": spec.type.value}


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    root = tmp_path_factory.mktemp("graph-models")
    ensure_demo_models(root)
    sdxl_lora = build_tiny_lora(build_tiny_sdxl(), root / "loras" / "tiny-lora-sdxl.safetensors", seed=4)
    catalog = DirectoryModelCatalog(root, "demo-sd15")
    by_path = {Path(spec.path).resolve(): spec for spec in catalog.list()}
    return Demo(
        catalog=catalog,
        sd15=catalog.resolve("demo-sd15"),
        sdxl=catalog.resolve("demo-sdxl"),
        lora=by_path[(root / DEMO_LORA).resolve()],
        vae=by_path[(root / DEMO_VAE).resolve()],
        lora_sdxl=by_path[sdxl_lora.resolve()],
    )


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> FileObjectStore:
    return FileObjectStore(tmp_path_factory.mktemp("objects"))


@pytest.fixture(scope="session")
def cache() -> ModelCache:
    return ModelCache()


@pytest.fixture(scope="session")
def executor(demo: Demo, store: FileObjectStore, cache: ModelCache) -> Iterator[InProcessExecutor]:
    runner = GenerationRunner(cache, device="cpu", dtype=torch.float32)
    # No throttling: every denoising step reports, so the tests can count them.
    executor = InProcessExecutor(runner=runner, catalog=demo.catalog, store=store, progress_interval=0.0)
    yield executor
    executor.close()


@dataclass
class Run:
    """Everything one graph job yielded."""

    graph: dict[str, Any]
    events: list[NodeEvent]
    result: ExecutionResult
    # Node events and model-load reports, as they came.
    stream: list[NodeEvent | ModelLoadEvent]

    def loads(self) -> list[tuple[str, str, str | None]]:
        """(kind, model key, submodel) of every model-load report, in order."""
        return [(e.kind, e.key, e.submodel_type) for e in self.stream if isinstance(e, ModelLoadEvent)]

    def of(self, source_id: str, kind: str | None = None) -> list[NodeEvent]:
        return [e for e in self.events if e.source_node_id == source_id and (kind is None or e.kind == kind)]

    def output(self, source_id: str) -> dict[str, Any]:
        """The (single) result of a source node, read from the final session like a client does."""
        assert self.result.session is not None
        session = self.result.session
        (prepared,) = session["source_prepared_mapping"][source_id]
        result: dict[str, Any] = session["results"][prepared]
        return result


def session_graph(body: dict[str, Any]) -> dict[str, Any]:
    """The first session's graph of an enqueue body, batch values substituted (what the queue stores)."""
    graph, _ = next(expand_batch(Batch.model_validate(body["batch"])))
    return graph.model_dump(mode="json")


def graph_job(graph: dict[str, Any], models: dict[str, ModelSpec] | None = None) -> ClaimedJob:
    return ClaimedJob(
        id=uuid.uuid4(),
        attempt=1,
        request={"kind": "graph", "graph": graph},
        session_id=str(uuid.uuid4()),
        models=models or {},
    )


async def run_graph(
    executor: InProcessExecutor,
    graph: dict[str, Any],
    *,
    seed: int = 1234,
    prompt: str = "a photo of a cat",
    models: dict[str, ModelSpec] | None = None,
) -> Run:
    body = enqueue_body(graph, seeds=[seed], prompts=[prompt])
    return await run_session(executor, session_graph(body), models=models)


async def run_session(
    executor: InProcessExecutor, session: dict[str, Any], *, models: dict[str, ModelSpec] | None = None
) -> Run:
    """Run one session's graph (batch values already in it) to completion; `models` is the job's snapshot."""
    events: list[ExecutionEvent] = [event async for event in executor.execute(graph_job(session, models))]
    *stream, result = events
    assert isinstance(result, ExecutionResult)
    assert all(isinstance(event, NodeEvent | ModelLoadEvent) for event in stream)
    node_events = [event for event in stream if isinstance(event, NodeEvent)]
    return Run(graph=session, events=node_events, result=result, stream=stream)  # type: ignore[arg-type]


async def stored_png(store: FileObjectStore, name: str) -> tuple[Image.Image, dict[str, str]]:
    data = await store.get(image_key(name))
    image = Image.open(io.BytesIO(data))
    image.load()
    return image, png_text(data)


async def output_image(store: FileObjectStore, run: Run, source_id: str) -> Image.Image:
    image, _ = await stored_png(store, run.output(source_id)["image"]["image_name"])
    return image


async def upload(store: FileObjectStore, image: Image.Image) -> str:
    """Store an image as `POST /images/upload` does (PNG under images/, WebP thumbnail); returns its name."""
    name = f"{uuid.uuid4()}.png"
    await store.put(image_key(name), encode_png(image, {}), "image/png")
    await store.put(thumbnail_key(name), encode_thumbnail(image), "image/webp")
    return name


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def gradient_image(size: int = SIZE) -> Image.Image:
    """A smooth, colourful init image (random weights reproduce structure poorly; smoothness survives)."""
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    red = np.tile(ramp, (size, 1))
    green = red.T
    blue = np.full((size, size), 96, dtype=np.float32)
    return Image.fromarray(np.stack([red, green, blue], axis=-1).astype(np.uint8), mode="RGB")


__all__ = [
    "SIZE",
    "STEPS",
    "Demo",
    "Run",
    "gradient_image",
    "graph_job",
    "identifier",
    "output_image",
    "pixels",
    "run_graph",
    "run_session",
    "session_graph",
    "stored_png",
    "upload",
]
