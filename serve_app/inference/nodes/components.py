"""The parts of a model that graph nodes use one at a time: UNet, scheduler, text encoders, VAE, LoRAs.

Everything comes from the shared `PipelineCache` (a main model is loaded once, whichever node asks first); a
standalone VAE and parsed LoRA files have small LRU caches of their own here. Not thread-safe, like the pipeline
cache: a replica runs one node at a time, and LoRA patching mutates the shared UNet/text encoders in place.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch
from diffusers import AutoencoderKL
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
from safetensors.torch import load_file

from serve_app.domain.errors import GenerationFailed, InvalidRequest
from serve_app.domain.models import ModelFormat, ModelSpec, ModelType
from serve_app.inference.loading import PipelineCache
from serve_app.inference.nodes.lora import TEXT_ENCODER, TEXT_ENCODER_2, UNET, LoRAModel, lora_patched, read_lora
from serve_app.inference.schedulers import make_scheduler

logger = logging.getLogger(__name__)

_VAE_PREFIXES = ("first_stage_model.", "vae.")
_T = TypeVar("_T")


@dataclass(frozen=True)
class TextEncoder:
    """One tokenizer/encoder pair; `lora_target` names the LoRA section that patches it."""

    tokenizer: Any
    encoder: Any
    lora_target: str


@dataclass(frozen=True)
class LoRAWeight:
    """A LoRA model (`spec.type` is lora) and the weight to apply it at (InvokeAI allows -1..2; 0 = no effect)."""

    spec: ModelSpec
    weight: float


class ModelComponents:
    """Components of cached models, on one device and dtype."""

    def __init__(
        self,
        cache: PipelineCache,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        max_vaes: int = 2,
        max_loras: int = 16,
    ) -> None:
        self._cache = cache
        self.device = torch.device(device)
        self.dtype = dtype
        self._vaes: _Lru[Any] = _Lru(max_vaes)
        self._loras: _Lru[LoRAModel] = _Lru(max_loras)

    def pipeline(self, spec: ModelSpec) -> Any:
        """The loaded diffusers pipeline of main model `spec`."""
        _require(spec, ModelType.MAIN)
        return self._cache.get(spec, device=self.device, dtype=self.dtype)

    def unet(self, spec: ModelSpec) -> Any:
        return self.pipeline(spec).unet

    def scheduler_config(self, spec: ModelSpec) -> Mapping[str, Any]:
        """The model's own scheduler config (its noise schedule, prediction type)."""
        return self.pipeline(spec).scheduler.config  # type: ignore[no-any-return]

    def scheduler(self, spec: ModelSpec, name: str | None, *, seed: int | None = None) -> Any:
        """A fresh scheduler `name` (either dialect; None = the model's own class) over the model's config."""
        own = self.pipeline(spec).scheduler
        return make_scheduler(name, own.config, type(own), seed=seed)

    def text_encoders(self, spec: ModelSpec) -> tuple[TextEncoder, ...]:
        """One encoder for SD 1.x/2.x; two for SDXL (CLIP-L, then OpenCLIP-G with the pooled projection)."""
        pipe = self.pipeline(spec)
        encoders = [TextEncoder(pipe.tokenizer, pipe.text_encoder, TEXT_ENCODER)]
        if getattr(pipe, "text_encoder_2", None) is not None:
            encoders.append(TextEncoder(pipe.tokenizer_2, pipe.text_encoder_2, TEXT_ENCODER_2))
        return tuple(encoders)

    def vae(self, spec: ModelSpec, *, main: ModelSpec | None = None) -> Any:
        """A main model's own VAE, or a standalone VAE model (`type` vae), loaded once and cached.

        A single-file VAE without `config_path` takes its architecture from `main`'s VAE (the model it is
        decoding for), since diffusers would otherwise fetch a config from the hub."""
        if spec.type is ModelType.MAIN:
            return self.pipeline(spec).vae
        _require(spec, ModelType.VAE)
        key = (spec, str(self.device), self.dtype)
        vae = self._vaes.get(key)
        if vae is None:
            fallback = self.vae(main).config if main is not None else None
            vae = _load_vae(spec, fallback).to(device=self.device, dtype=self.dtype)
            vae.eval()
            self._vaes.put(key, vae)
            logger.info("Loaded VAE %s on %s as %s", spec.name, self.device, self.dtype)
        return vae

    def lora(self, spec: ModelSpec) -> LoRAModel:
        """The parsed layers of LoRA `spec`, on this device, read once and cached."""
        _require(spec, ModelType.LORA)
        key = (spec, str(self.device), self.dtype)
        lora = self._loras.get(key)
        if lora is None:
            lora = read_lora(spec.path, name=spec.name)
            lora = replace(
                lora,
                layers=tuple(
                    replace(layer, down=layer.down.to(self.device), up=layer.up.to(self.device))
                    for layer in lora.layers
                ),
            )
            self._loras.put(key, lora)
        return lora

    @contextmanager
    def unet_with_loras(self, spec: ModelSpec, loras: Sequence[LoRAWeight] = ()) -> Iterator[Any]:
        """The model's UNet with `loras` merged in; the original weights come back when the block exits."""
        unet = self.unet(spec)
        with lora_patched(unet, UNET, self._resolved(loras)):
            yield unet

    @contextmanager
    def text_encoders_with_loras(
        self, spec: ModelSpec, loras: Sequence[LoRAWeight] = ()
    ) -> Iterator[tuple[TextEncoder, ...]]:
        """The model's text encoders with the text-encoder part of `loras` merged in, until the block exits."""
        encoders = self.text_encoders(spec)
        resolved = self._resolved(loras)
        with ExitStack() as stack:
            for encoder in encoders:
                stack.enter_context(lora_patched(encoder.encoder, encoder.lora_target, resolved))
            yield encoders

    def _resolved(self, loras: Sequence[LoRAWeight]) -> list[tuple[LoRAModel, float]]:
        # Weight-0 LoRAs are not even read: they must leave every pixel as it is.
        return [(self.lora(item.spec), item.weight) for item in loras if item.weight != 0]


def _require(spec: ModelSpec, kind: ModelType) -> None:
    if spec.type is not kind:
        raise InvalidRequest(f"Model {spec.name} is a {spec.type} model, not a {kind} model", field="model")


def _load_vae(spec: ModelSpec, fallback_config: Mapping[str, Any] | None) -> Any:
    try:
        if spec.format is ModelFormat.DIFFUSERS:
            folder = Path(spec.path)
            subfolder = "vae" if (folder / "vae" / "config.json").is_file() else None
            return AutoencoderKL.from_pretrained(folder, subfolder=subfolder)  # type: ignore[no-untyped-call]
        if spec.config_path is not None:
            folder = Path(spec.config_path)
            subfolder = "vae" if (folder / "vae" / "config.json").is_file() else None
            return AutoencoderKL.from_single_file(
                spec.path, config=str(folder), subfolder=subfolder, local_files_only=True
            )
        return _vae_from_checkpoint(spec, fallback_config)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise GenerationFailed(f"Could not load VAE {spec.name}: {exc}", error_type="ModelLoadError") from exc


def _vae_from_checkpoint(spec: ModelSpec, config: Mapping[str, Any] | None) -> Any:
    if config is None:
        raise GenerationFailed(
            f"VAE {spec.name} is a single file without a config; load it together with its main model",
            error_type="ModelLoadError",
        )
    state = load_file(spec.path, device="cpu")
    for prefix in _VAE_PREFIXES:
        if any(key.startswith(prefix) for key in state):
            state = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
    vae = AutoencoderKL.from_config(dict(config))  # type: ignore[no-untyped-call]
    if "encoder.conv_in.weight" in state and not any(key.startswith("encoder.down.") for key in state):
        converted = state  # already in diffusers' layout
    else:
        converted = convert_ldm_vae_checkpoint(state, dict(config))  # type: ignore[no-untyped-call]
    vae.load_state_dict(converted)
    return vae


class _Lru(Generic[_T]):
    def __init__(self, size: int) -> None:
        self._size = max(size, 1)
        self._items: OrderedDict[object, _T] = OrderedDict()

    def get(self, key: object) -> _T | None:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, key: object, item: _T) -> None:
        self._items[key] = item
        self._items.move_to_end(key)
        while len(self._items) > self._size:
            self._items.popitem(last=False)
