"""Loading pipelines from diffusers folders or single-file checkpoints, an LRU of loaded ones, device choice."""

from __future__ import annotations

import gc
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from serve_app.domain.errors import GenerationFailed
from serve_app.domain.models import ModelFormat, ModelSpec
from serve_app.inference.families import family_of

logger = logging.getLogger(__name__)

Loader = Callable[..., Any]


def pick_device() -> tuple[torch.device, torch.dtype]:
    """CUDA with bf16 (fp16 where bf16 is unsupported) when a GPU is present, else CPU float32."""
    if torch.cuda.is_available():
        # bf16 has fp32's exponent range, so the SDXL VAE cannot overflow in it and needs no upcast.
        return torch.device("cuda"), torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.device("cpu"), torch.float32


def load_pipeline(spec: ModelSpec, *, device: torch.device | str, dtype: torch.dtype) -> Any:
    """Load `spec` onto `device` in `dtype`, without a safety checker; GenerationFailed if it cannot be read."""
    family = family_of(spec.family)
    kwargs = {**family.load_kwargs, **family.init_kwargs, "dtype": dtype}
    cls = family.pipeline_class
    try:
        if spec.format is ModelFormat.DIFFUSERS:
            pipe = cls.from_pretrained(spec.path, **kwargs)
        elif spec.config_path is not None:
            # With a local config folder nothing needs the hub; without one diffusers fetches configs.
            pipe = cls.from_single_file(spec.path, config=spec.config_path, local_files_only=True, **kwargs)
        else:
            pipe = cls.from_single_file(spec.path, **kwargs)
    except (OSError, ValueError) as exc:
        raise GenerationFailed(f"Could not load model {spec.name}: {exc}", error_type="ModelLoadError") from exc
    # In fp16 an SDXL VAE whose config says `force_upcast` (the stock one) is decoded in fp32 by diffusers
    # itself, one cast each way per call; bf16 never needs it. Nothing to do here for either.
    pipe.to(device)
    _use_sdpa(pipe)
    pipe.set_progress_bar_config(disable=True)
    logger.info("Loaded model %s (%s, %s) on %s as %s", spec.name, spec.family, spec.format, device, dtype)
    return pipe


def _use_sdpa(pipe: Any) -> None:
    # diffusers picks PyTorch's fused scaled_dot_product_attention by default; make sure nothing (an older
    # saved processor choice, a plugin) left the slow classic attention in place.
    for module in (pipe.unet, pipe.vae):
        if not all(isinstance(p, AttnProcessor2_0) for p in module.attn_processors.values()):
            module.set_attn_processor(AttnProcessor2_0())  # type: ignore[no-untyped-call]


class PipelineCache:
    """Loaded pipelines by model name, least recently used evicted first. Not thread-safe: one caller at a time."""

    def __init__(self, max_entries: int, loader: Loader = load_pipeline) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max_entries = max_entries
        self._loader = loader
        self._entries: OrderedDict[str, tuple[tuple[ModelSpec, str, torch.dtype], Any]] = OrderedDict()

    def get(self, spec: ModelSpec, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Any:
        """The pipeline for `spec` on `device`, loaded on a miss (or when the spec or placement changed)."""
        key = (spec, str(torch.device(device)), dtype)
        entry = self._entries.get(spec.name)
        if entry is not None and entry[0] == key:
            self._entries.move_to_end(spec.name)
            return entry[1]
        if entry is not None:
            self._evict(spec.name)
        # Make room before loading, so two large models never sit in GPU memory at once.
        while len(self._entries) >= self._max_entries:
            self._evict(next(iter(self._entries)))
        pipe = self._loader(spec, device=device, dtype=dtype)
        self._entries[spec.name] = (key, pipe)
        return pipe

    def loaded(self) -> list[str]:
        """Model names currently loaded, least recently used first."""
        return list(self._entries)

    def clear(self) -> None:
        """Drop every pipeline."""
        while self._entries:
            self._evict(next(iter(self._entries)))

    def _evict(self, name: str) -> None:
        (_, device, _), pipe = self._entries.pop(name)
        del pipe
        logger.info("Evicted model %s", name)
        if device.startswith("cuda"):
            # Python must drop the last references before the caching allocator can hand memory back.
            gc.collect()
            torch.cuda.empty_cache()


def silence_progress_bars() -> None:
    """Turn off the tqdm bars diffusers and transformers print while loading: replicas log, not draw."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
