"""What differs between model families: pipeline class, load options and prompt arguments. SD3/Flux add rows."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from diffusers import StableDiffusionPipeline, StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

from serve_app.domain.errors import GenerationFailed
from serve_app.domain.generation import GenerationRequest
from serve_app.domain.models import ModelFamily


@dataclass(frozen=True)
class Family:
    """How to load and call one family's text-to-image pipeline."""

    pipeline_class: Any
    # Extra arguments for from_pretrained/from_single_file and for the pipeline constructor.
    init_kwargs: Mapping[str, Any]
    # Pipeline config entries an assembled pipeline must carry over (they are constructor arguments).
    config_keys: tuple[str, ...]
    prompts: Callable[[GenerationRequest], dict[str, Any]]
    load_kwargs: Mapping[str, Any] = field(default_factory=dict)


def _sd_prompts(request: GenerationRequest) -> dict[str, Any]:
    return {"prompt": request.prompt, "negative_prompt": request.negative_prompt}


def _sdxl_prompts(request: GenerationRequest) -> dict[str, Any]:
    # None makes the pipeline reuse the first prompt for the second text encoder.
    return {**_sd_prompts(request), "prompt_2": request.prompt_2, "negative_prompt_2": request.negative_prompt_2}


_SD = Family(
    pipeline_class=StableDiffusionPipeline,
    init_kwargs={"requires_safety_checker": False},
    load_kwargs={"safety_checker": None},
    config_keys=(),
    prompts=_sd_prompts,
)
_SDXL = Family(
    pipeline_class=StableDiffusionXLPipeline,
    # The invisible watermark changes pixels and is not a dependency; every run must be reproducible.
    init_kwargs={"add_watermarker": False},
    config_keys=("force_zeros_for_empty_prompt",),
    prompts=_sdxl_prompts,
)

# The SDXL refiner is an image-to-image model with OpenCLIP alone; graphs run its parts (sdxl_refiner_* nodes).
_SDXL_REFINER = Family(
    pipeline_class=StableDiffusionXLImg2ImgPipeline,
    init_kwargs={"add_watermarker": False},
    config_keys=("force_zeros_for_empty_prompt", "requires_aesthetics_score"),
    prompts=_sdxl_prompts,
)

FAMILIES: Mapping[ModelFamily, Family] = {
    ModelFamily.SD1: _SD,
    ModelFamily.SD2: _SD,
    ModelFamily.SDXL: _SDXL,
    ModelFamily.SDXL_REFINER: _SDXL_REFINER,
}


def family_of(family: ModelFamily) -> Family:
    """The table row for `family`; GenerationFailed for a family this build cannot run."""
    try:
        return FAMILIES[family]
    except KeyError:
        raise GenerationFailed(f"Model family {family} is not supported", error_type="UnsupportedModel") from None
