"""Runs one text-to-image request on a cached pipeline: seeded, cancellable, reporting every step."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from serve_app.domain.errors import GenerationFailed, InvalidRequest, JobCanceled
from serve_app.domain.generation import GenerationRequest, check_runnable
from serve_app.domain.models import ModelSpec
from serve_app.inference.families import Family, family_of
from serve_app.inference.loading import assemble_pipeline, main_parts
from serve_app.inference.model_cache import ModelCache
from serve_app.inference.schedulers import make_scheduler

StepCallback = Callable[[int, int], None]
StopCheck = Callable[[], bool]


@dataclass(frozen=True)
class GenerationOutput:
    """The images of one request, in order, and the seed each was generated from."""

    images: list[Image.Image]
    seeds: list[int]


def check_inputs(request: GenerationRequest) -> None:
    """Raise InvalidRequest naming the first field a pipeline could not run with (sizes resolved or not)."""
    if request.kind != "txt2img":
        raise InvalidRequest(f"`kind` must be txt2img, got {request.kind}", field="kind")
    check_runnable(request)


class GenerationRunner:
    """Turns requests into images. Not thread-safe: callers serialize `run` (the replica uses one worker thread),
    because pipelines share modules and diffusers mutates some of them during a call (e.g. the VAE upcast)."""

    def __init__(
        self, cache: ModelCache, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
    ) -> None:
        self._cache = cache
        self._device = torch.device(device)
        self._dtype = dtype

    @property
    def cache(self) -> ModelCache:
        return self._cache

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    def run(
        self,
        spec: ModelSpec,
        request: GenerationRequest,
        *,
        on_step: StepCallback | None = None,
        should_stop: StopCheck | None = None,
    ) -> GenerationOutput:
        """Generate `request.num_images` images; image i comes from seed `request.seed + i` whatever the batch.

        `on_step(done, total)` follows every denoising step; `total` counts UNet passes of the chosen scheduler,
        so it exceeds `request.steps` for second-order ones (Heun, DPM2, PNDM). `should_stop()` is polled after
        every step and JobCanceled is raised as soon as it answers True."""
        check_inputs(request)
        if should_stop is not None and should_stop():
            raise JobCanceled()
        family = family_of(spec.family)
        with self._cache.in_use():  # no part of this model is evicted while it runs
            parts = {
                name: self._cache.get(spec, name, device=self._device, dtype=self._dtype) for name in main_parts(spec)
            }
            own = parts["scheduler"]
            # A fresh scheduler per run (schedulers hold per-run state); the cached parts are shared.
            parts["scheduler"] = make_scheduler(request.scheduler, own.config, type(own))
            return self._generate(assemble_pipeline(spec, parts), family, spec, request, on_step, should_stop)

    def _generate(
        self,
        pipe: Any,
        family: Family,
        spec: ModelSpec,
        request: GenerationRequest,
        on_step: StepCallback | None,
        should_stop: StopCheck | None,
    ) -> GenerationOutput:
        width, height = request.width or spec.native_size, request.height or spec.native_size
        seeds = [request.seed + i for i in range(request.num_images)]
        # One CPU generator per image: the same pixels on any device and whether run alone or batched.
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
        try:
            result = pipe(
                **family.prompts(request),
                width=width,
                height=height,
                num_inference_steps=request.steps,
                guidance_scale=request.guidance_scale,
                num_images_per_prompt=request.num_images,
                generator=generators,
                callback_on_step_end=_StepHook(on_step, should_stop),
                output_type="pil",
            )
        except torch.cuda.OutOfMemoryError as exc:
            torch.cuda.empty_cache()
            raise GenerationFailed(
                f"Out of GPU memory at {width}x{height} with {request.num_images} images",
                error_type="OutOfMemory",
            ) from exc
        return GenerationOutput(images=list(result.images), seeds=seeds)


class _StepHook:
    """diffusers' callback_on_step_end: report progress, then stop if asked to."""

    def __init__(self, on_step: StepCallback | None, should_stop: StopCheck | None) -> None:
        self._on_step = on_step
        self._should_stop = should_stop

    def __call__(self, pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        if self._on_step is not None:
            self._on_step(step + 1, pipe.num_timesteps)
        if self._should_stop is not None and self._should_stop():
            # Raising unwinds the denoising loop at once; the pipeline has no other way to abort mid-run.
            raise JobCanceled()
        return tensors
