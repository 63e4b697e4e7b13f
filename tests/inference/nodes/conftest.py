"""Tiny models plus a LoRA and a standalone VAE for them, and helpers that run the node operations end to end."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from serve_app.domain.models import ModelFamily, ModelFormat, ModelSpec, ModelType
from serve_app.inference.model_cache import ModelCache
from serve_app.inference.nodes import (
    Conditioning,
    DenoiseMask,
    LoRAWeight,
    ModelComponents,
    decode,
    denoise,
    encode_prompt,
    encode_sdxl_prompt,
    make_noise,
)
from serve_app.inference.tiny import build_tiny_lora, build_tiny_sd15, build_tiny_sdxl, build_tiny_vae
from tests.inference.conftest import TinyModels


@dataclass(frozen=True)
class Extras:
    lora: ModelSpec
    lora_sdxl: ModelSpec
    vae: ModelSpec


@pytest.fixture(scope="session")
def extras(tmp_path_factory: pytest.TempPathFactory) -> Extras:
    root = tmp_path_factory.mktemp("extras")
    lora = build_tiny_lora(build_tiny_sd15(), root / "loras" / "tiny-lora.safetensors", seed=3)
    lora_xl = build_tiny_lora(build_tiny_sdxl(), root / "loras" / "tiny-lora-xl.safetensors", seed=4)
    vae = build_tiny_vae(root / "vae" / "tiny-vae")
    return Extras(
        lora=ModelSpec(
            name="tiny-lora", family=ModelFamily.SD1, format=ModelFormat.LYCORIS, path=str(lora), type=ModelType.LORA
        ),
        lora_sdxl=ModelSpec(
            name="tiny-lora-xl",
            family=ModelFamily.SDXL,
            format=ModelFormat.LYCORIS,
            path=str(lora_xl),
            type=ModelType.LORA,
        ),
        vae=ModelSpec(
            name="tiny-vae", family=ModelFamily.SD1, format=ModelFormat.DIFFUSERS, path=str(vae), type=ModelType.VAE
        ),
    )


@pytest.fixture(scope="session")
def components() -> ModelComponents:
    return ModelComponents(ModelCache(), device="cpu", dtype=torch.float32)


def conditionings(
    components: ModelComponents,
    spec: ModelSpec,
    prompt: str = "the cat on a mat",
    negative: str = "",
    *,
    loras: Sequence[LoRAWeight] = (),
    skipped_layers: int = 0,
) -> tuple[Conditioning, Conditioning]:
    with components.text_encoders_with_loras(spec, loras) as encoders:
        if spec.family is ModelFamily.SDXL:
            return _sdxl_64(encoders, prompt), _sdxl_64(encoders, negative)
        return (
            encode_prompt(encoders[0], prompt, skipped_layers=skipped_layers),
            encode_prompt(encoders[0], negative, skipped_layers=skipped_layers),
        )


def generate_latents(
    components: ModelComponents,
    spec: ModelSpec,
    *,
    seed: int = 7,
    steps: int = 3,
    scheduler: str | None = "euler",
    loras: Sequence[LoRAWeight] = (),
    latents: torch.Tensor | None = None,
    denoising_start: float = 0.0,
    denoise_mask: DenoiseMask | None = None,
    **options: object,
) -> torch.Tensor:
    positive, negative = conditionings(components, spec, loras=loras)
    noise = make_noise(seed, 64, 64)
    with components.unet_with_loras(spec, loras) as unet:
        return denoise(
            unet,
            components.scheduler(spec, scheduler, seed=seed),
            positive,
            negative,
            noise=noise,
            latents=latents,
            steps=steps,
            seed=seed,
            denoising_start=denoising_start,
            denoise_mask=denoise_mask,
            **options,  # type: ignore[arg-type]
        )


def generate(components: ModelComponents, spec: ModelSpec, **options: object) -> Image.Image:
    return decode(components.vae(spec), generate_latents(components, spec, **options))  # type: ignore[arg-type]


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


__all__ = ["Extras", "TinyModels", "conditionings", "generate", "generate_latents", "pixels"]


def _sdxl_64(encoders: Any, text: str) -> Conditioning:
    return encode_sdxl_prompt(encoders, text, original_width=64, original_height=64, target_width=64, target_height=64)
