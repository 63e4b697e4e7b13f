"""The parts of models that graph nodes use one at a time: UNet, scheduler, text encoders, VAE, LoRAs, embeddings.

Everything comes from the replica's `ModelCache`, part by part (a main model's `unet`, `text_encoder`, ...;
whole standalone VAEs, LoRAs and embeddings), so each is counted against the memory budget and evicted on its
own. Every request for a part, hit or miss, is reported to `on_load` before and after, as InvokeAI reports
`model_load_started`/`_complete`. Not thread-safe: a replica runs one node at a time, and LoRA and
textual-inversion patching mutate the shared models in place for the length of a call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from diffusers import AutoencoderKL
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
from safetensors.torch import load_file

from serve_app.domain.errors import GenerationFailed, InvalidRequest
from serve_app.domain.models import ModelFormat, ModelSpec, ModelType
from serve_app.inference.loading import assemble_pipeline, load_controlnet, main_parts
from serve_app.inference.model_cache import ModelCache
from serve_app.inference.nodes.embeddings import TextualInversion, read_embedding
from serve_app.inference.nodes.lora import TEXT_ENCODER, TEXT_ENCODER_2, UNET, LoRAModel, lora_patched, read_lora
from serve_app.inference.schedulers import make_scheduler

logger = logging.getLogger(__name__)

_VAE_PREFIXES = ("first_stage_model.", "vae.")

# (model, submodel or None for a whole model, "started" | "complete").
LoadHook = Callable[[ModelSpec, str | None, Literal["started", "complete"]], None]


@dataclass(frozen=True)
class TextEncoder:
    """One tokenizer/encoder pair; `lora_target` names the LoRA section that patches it. `triggers` maps a
    textual-inversion trigger (`<name>`) to the token ids it stands for while an embedding is applied."""

    tokenizer: Any
    encoder: Any
    lora_target: str
    triggers: Mapping[str, tuple[int, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class LoRAWeight:
    """A LoRA model (`spec.type` is lora) and the weight to apply it at (InvokeAI allows -1..2; 0 = no effect)."""

    spec: ModelSpec
    weight: float


class ModelComponents:
    """Parts of cached models, on one device and dtype."""

    def __init__(
        self,
        cache: ModelCache,
        *,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        on_load: LoadHook | None = None,
    ) -> None:
        self.cache = cache
        self.device = torch.device(device)
        self.dtype = dtype
        self._on_load = on_load

    def part(self, spec: ModelSpec, submodel: str) -> Any:
        """Part `submodel` (`unet`, `text_encoder`, `tokenizer`, `scheduler`, `vae`, ...) of main model `spec`."""
        _require(spec, ModelType.MAIN)
        return self._get(spec, submodel)

    def pipeline(self, spec: ModelSpec) -> Any:
        """A diffusers pipeline over the cached parts of main model `spec` (assembled per call, parts shared)."""
        _require(spec, ModelType.MAIN)
        return assemble_pipeline(spec, {name: self._get(spec, name) for name in main_parts(spec)})

    def unet(self, spec: ModelSpec) -> Any:
        return self.part(spec, "unet")

    def scheduler_config(self, spec: ModelSpec) -> Mapping[str, Any]:
        """The model's own scheduler config (its noise schedule, prediction type)."""
        return self.part(spec, "scheduler").config  # type: ignore[no-any-return]

    def scheduler(self, spec: ModelSpec, name: str | None, *, seed: int | None = None) -> Any:
        """A fresh scheduler `name` (either dialect; None = the model's own class) over the model's config."""
        own = self.part(spec, "scheduler")
        return make_scheduler(name, own.config, type(own), seed=seed)

    def text_encoder(self, spec: ModelSpec, which: str = TEXT_ENCODER) -> TextEncoder:
        """`text_encoder` (CLIP-L) or `text_encoder_2` (SDXL's OpenCLIP-G) with its tokenizer, in that order."""
        if which not in main_parts(spec) or not which.startswith(TEXT_ENCODER):
            raise InvalidRequest(f"Model {spec.name} has no {which} (is it an SDXL model?)", field="clip2")
        encoder = self.part(spec, which)
        tokenizer = self.part(spec, which.replace(TEXT_ENCODER, "tokenizer"))
        return TextEncoder(tokenizer, encoder, which)

    def text_encoders(self, spec: ModelSpec) -> tuple[TextEncoder, ...]:
        """One encoder for SD 1.x/2.x; two for SDXL (CLIP-L, then OpenCLIP-G with the pooled projection)."""
        return tuple(
            self.text_encoder(spec, name) for name in (TEXT_ENCODER, TEXT_ENCODER_2) if name in main_parts(spec)
        )

    def vae(self, spec: ModelSpec, *, main: ModelSpec | None = None) -> Any:
        """A main model's own VAE, or a standalone VAE model (`type` vae).

        A single-file VAE without `config_path` takes its architecture from `main`'s VAE (the model it is
        decoding for), since diffusers would otherwise fetch a config from the hub."""
        if spec.type is ModelType.MAIN:
            return self.part(spec, "vae")
        _require(spec, ModelType.VAE)

        def load() -> Any:
            fallback = self.vae(main).config if main is not None else None
            vae = _load_vae(spec, fallback).to(device=self.device, dtype=self.dtype)
            vae.eval()
            logger.info("Loaded VAE %s on %s as %s", spec.name, self.device, self.dtype)
            return vae

        return self._get(spec, None, load)

    def controlnet(self, spec: ModelSpec) -> Any:
        """ControlNet model `spec` (a diffusers ControlNetModel), whole, on this device and dtype."""
        _require(spec, ModelType.CONTROLNET)
        return self._get(spec, None, lambda: load_controlnet(spec, device=self.device, dtype=self.dtype))

    def lora(self, spec: ModelSpec) -> LoRAModel:
        """The parsed layers of LoRA `spec`, on this device."""
        _require(spec, ModelType.LORA)
        return self._get(spec, None, lambda: read_lora(spec.path, name=spec.name).to(self.device))  # type: ignore[no-any-return]

    def embedding(self, spec: ModelSpec) -> TextualInversion:
        """The vectors of textual-inversion embedding `spec` (kept on the CPU; they are a few KB)."""
        _require(spec, ModelType.EMBEDDING)
        return self._get(spec, None, lambda: read_embedding(spec.path, name=spec.name))  # type: ignore[no-any-return]

    @contextmanager
    def unet_with_loras(self, spec: ModelSpec, loras: Sequence[LoRAWeight] = ()) -> Iterator[Any]:
        """The model's UNet with `loras` merged in; the original weights come back when the block exits."""
        unet = self.unet(spec)
        with lora_patched(unet, UNET, self.resolved(loras)):
            yield unet

    @contextmanager
    def text_encoders_with_loras(
        self, spec: ModelSpec, loras: Sequence[LoRAWeight] = ()
    ) -> Iterator[tuple[TextEncoder, ...]]:
        """The model's text encoders with the text-encoder part of `loras` merged in, until the block exits."""
        encoders = self.text_encoders(spec)
        resolved = self.resolved(loras)
        with ExitStack() as stack:
            for encoder in encoders:
                stack.enter_context(lora_patched(encoder.encoder, encoder.lora_target, resolved))
            yield encoders

    def resolved(self, loras: Sequence[LoRAWeight]) -> list[tuple[LoRAModel, float]]:
        # Weight-0 LoRAs are not even read: they must leave every pixel as it is.
        return [(self.lora(item.spec), item.weight) for item in loras if item.weight != 0]

    def _get(self, spec: ModelSpec, submodel: str | None, load: Callable[[], Any] | None = None) -> Any:
        if self._on_load is not None:
            self._on_load(spec, submodel, "started")
        value = self.cache.get(spec, submodel, device=self.device, dtype=self.dtype, load=load)
        if self._on_load is not None:
            self._on_load(spec, submodel, "complete")
        return value


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
