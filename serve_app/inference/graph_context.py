"""NodeContext: what a node implementation may use while a graph runs on the diffusion thread.

Models resolve by key through the job's model snapshot (`ClaimedJob.models`, filled in from the registry when
the job was claimed; jobs without one use the replica's catalog) and load part by part through the model
cache, each request reported as a ModelLoadEvent (started, then complete) on the node event stream, as
InvokeAI reports `model_load_started`/`_complete`; tensors passed between nodes live here by name for one
session; images go to object storage (async, reached from this thread via the event loop) and are reported
as GeneratedImage rows with the node's completion event.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Literal, TypeVar

import torch
from PIL import Image

from serve_app.domain.errors import JobCanceled, ModelNotFound
from serve_app.domain.generation import enfugue_png_text
from serve_app.domain.graph.fields import ImageField, ModelIdentifierField
from serve_app.domain.images import GeneratedImage, ImageCategory, image_key, image_name, thumbnail_key
from serve_app.domain.jobs import ClaimedJob
from serve_app.domain.models import ModelFamily, ModelSpec, ModelType
from serve_app.domain.ports import ModelCatalog, ModelLoadEvent, NodeEvent, ObjectStore
from serve_app.inference.encoding import encode_png, encode_thumbnail
from serve_app.inference.model_cache import ModelCache
from serve_app.inference.nodes import ModelComponents

_T = TypeVar("_T")

# The progress preview is at latent resolution; JPEG keeps the event well under NOTIFY's payload cap.
_PREVIEW_QUALITY = 70


class MappingCatalog:
    """A job's model snapshot (key -> spec) as a ModelCatalog, over the replica's own catalog for keys the
    snapshot lacks (jobs queued before the registry knew a model found in the models folder)."""

    def __init__(self, models: Mapping[str, ModelSpec], fallback: ModelCatalog | None = None) -> None:
        self._models = dict(models)
        self._fallback = fallback

    def get(self, key: str) -> ModelSpec:
        spec = self._models.get(key)
        if spec is not None:
            return spec
        if self._fallback is not None:
            return self._fallback.get(key)
        raise ModelNotFound(key)

    def list(self) -> list[ModelSpec]:
        return sorted(self._models.values(), key=lambda spec: (spec.name, spec.type))

    def resolve(self, name: str | None) -> ModelSpec:
        """The main model named `name`; a snapshot has no default model."""
        for spec in self._models.values():
            if spec.type is ModelType.MAIN and spec.name == name:
                return spec
        if self._fallback is not None:
            return self._fallback.resolve(name)
        raise ModelNotFound(name or "(default)")


class NodeContext:
    def __init__(
        self,
        *,
        job: ClaimedJob,
        graph: dict[str, Any],
        cache: ModelCache,
        catalog: ModelCatalog,
        store: ObjectStore,
        loop: asyncio.AbstractEventLoop,
        device: torch.device | str,
        dtype: torch.dtype,
        should_stop: Callable[[], bool],
        emit: Callable[[NodeEvent | ModelLoadEvent], None],
        progress_interval: float = 0.0,
    ) -> None:
        self.job = job
        self.graph = graph
        self.cache = cache
        self.device = torch.device(device)
        self.dtype = dtype
        self.should_stop = should_stop
        # Parts of cached models (UNet, text encoders, VAE, LoRAs, embeddings); every request is reported.
        self.components = ModelComponents(cache, device=self.device, dtype=dtype, on_load=self._report_load)
        # The job's own snapshot when it has one: the models the registry held when the job was claimed.
        self._catalog: ModelCatalog = MappingCatalog(job.models, fallback=catalog) if job.models else catalog
        self._store = store
        self._loop = loop
        self._emit = emit
        self._progress_interval = progress_interval
        self._last_progress = float("-inf")
        self._tensors: dict[str, Any] = {}
        self._images: list[GeneratedImage] = []
        self._images_saved = 0  # across nodes: an image's position in its session
        self._outputs_saved = 0  # the non-intermediate ones: an Enfugue sample's index (its seed offset)
        self._node: Any = None
        self._source_id = ""

    @property
    def session_id(self) -> str:
        return self.job.session_id or str(self.job.id)

    # -- nodes ----------------------------------------------------------------------------

    def begin_node(self, node: Any, source_id: str) -> None:
        self._node = node
        self._source_id = source_id
        self._last_progress = float("-inf")

    def take_images(self) -> list[GeneratedImage]:
        images, self._images = self._images, []
        return images

    # -- models ---------------------------------------------------------------------------

    def model(self, identifier: ModelIdentifierField) -> ModelSpec:
        """The model a graph names by key; ModelNotFound if this deployment has none with that key."""
        return self._catalog.get(identifier.key)

    def embedding(self, name_or_key: str, base: ModelFamily) -> ModelSpec | None:
        """The embedding a prompt names as `<name_or_key>` (a key first, then a name, as InvokeAI looks them
        up) if there is one for `base`; None otherwise (the text then stays as written)."""
        spec: ModelSpec | None
        try:
            spec = self._catalog.get(name_or_key)
        except ModelNotFound:
            spec = next(
                (s for s in self._catalog.list() if s.type is ModelType.EMBEDDING and s.name == name_or_key), None
            )
        if spec is None or spec.type is not ModelType.EMBEDDING or spec.family is not base:
            return None
        return spec

    def cached_model(self, spec: ModelSpec, load: Callable[[torch.device, torch.dtype], Any]) -> Any:
        """A whole standalone model no ModelComponents method builds (a spandrel upscaler) from the replica's
        model cache, loaded by `load(device, dtype)` on a miss, and reported like every other model request."""
        self._report_load(spec, None, "started")
        value = self.cache.get(spec, None, device=self.device, dtype=self.dtype,
                               load=lambda: load(self.device, self.dtype))  # fmt: skip
        self._report_load(spec, None, "complete")
        return value

    def _report_load(self, spec: ModelSpec, submodel: str | None, kind: Literal["started", "complete"]) -> None:
        self._emit(ModelLoadEvent(kind=kind, key=spec.key, submodel_type=submodel))

    # -- tensors --------------------------------------------------------------------------

    def put(self, value: Any, kind: str) -> str:
        name = f"{kind}_{uuid.uuid4()}"
        self._tensors[name] = value
        return name

    def get(self, name: str) -> Any:
        try:
            return self._tensors[name]
        except KeyError:
            raise KeyError(f"No {name} in this session (tensors live only for the session that made them)") from None

    # -- images ---------------------------------------------------------------------------

    def load_image(self, field: ImageField) -> Image.Image:
        data = self._run(self._store.get(image_key(field.image_name)))
        image = Image.open(io.BytesIO(data))
        image.load()
        return image

    def save_image(
        self,
        image: Image.Image,
        *,
        metadata: dict[str, Any] | None,
        board_id: str | None,
        is_intermediate: bool,
        category: ImageCategory = ImageCategory.GENERAL,
    ) -> ImageField:
        """Store a node's output image (PNG with InvokeAI's text chunks, plus its WebP thumbnail)."""
        # Per job and position: a retried attempt writes the same names instead of new ones, and Enfugue's
        # `<uuid>_<i>.png` convention holds for its jobs.
        name = image_name(self.job.id, self._images_saved)
        text = {"invokeai_graph": json.dumps(self.graph)}
        if metadata is not None:
            text["invokeai_metadata"] = json.dumps(metadata)
        enfugue = self.job.request.get("enfugue")
        if isinstance(enfugue, dict):
            # Enfugue clients read their parameters (and UI state) back from here, with this image's own seed.
            text.update(enfugue_png_text(enfugue, self._outputs_saved))
        png, thumb = encode_png(image, text), encode_thumbnail(image)
        key, thumb_key = image_key(name), thumbnail_key(name)
        self._run(self._store.put(key, png, "image/png"))
        self._run(self._store.put(thumb_key, thumb, "image/webp"))
        self._images.append(
            GeneratedImage(
                name=name,
                width=image.width,
                height=image.height,
                position=self._images_saved,
                storage_key=key,
                thumbnail_key=thumb_key,
                metadata=metadata or {},
                session_id=self.session_id,
                node_id=None if self._node is None else self._node.id,
                board_id=board_id,
                is_intermediate=is_intermediate,
                category=category,
                has_workflow=False,
                owner=self.job.owner,
                job_id=self.job.id,
            )
        )
        self._images_saved += 1
        self._outputs_saved += 0 if is_intermediate else 1
        return ImageField(image_name=name)

    # -- progress -------------------------------------------------------------------------

    def progress(
        self, step: int, total: int, *, preview: Image.Image | None = None, message: str = "Denoising"
    ) -> None:
        """Report a step (throttled, the last always) and stop here if the item was canceled."""
        now = time.monotonic()
        if step >= total or now - self._last_progress >= self._progress_interval:
            self._last_progress = now
            self._emit(
                NodeEvent(
                    kind="progress",
                    invocation=self._node.model_dump(mode="json"),
                    source_node_id=self._source_id,
                    message=message,
                    percentage=step / total if total else None,
                    image=None if preview is None else _preview_json(preview),
                    step=step,
                    total=total,
                )
            )
        if self.should_stop():
            raise JobCanceled()

    def _run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()


def _preview_json(image: Image.Image) -> dict[str, Any]:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=_PREVIEW_QUALITY)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return {"width": image.width, "height": image.height, "dataURL": f"data:image/jpeg;base64,{data}"}
