"""Node outputs, with InvokeAI's `type` names and field names (they show up in `session.results`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from serve_app.domain.graph.base import BaseInvocationOutput
from serve_app.domain.graph.fields import (
    CLIPField,
    ConditioningField,
    ControlField,
    DenoiseMaskField,
    ImageField,
    LatentsField,
    LoRAField,
    MetadataField,
    UNetField,
    VAEField,
)


class IntegerOutput(BaseInvocationOutput):
    type: Literal["integer_output"] = "integer_output"
    value: int


class FloatOutput(BaseInvocationOutput):
    type: Literal["float_output"] = "float_output"
    value: float


class StringOutput(BaseInvocationOutput):
    type: Literal["string_output"] = "string_output"
    value: str


class BooleanOutput(BaseInvocationOutput):
    type: Literal["boolean_output"] = "boolean_output"
    value: bool


class CollectInvocationOutput(BaseInvocationOutput):
    type: Literal["collect_output"] = "collect_output"
    collection: list[Any] = Field(default_factory=list)


class IterateInvocationOutput(BaseInvocationOutput):
    type: Literal["iterate_output"] = "iterate_output"
    item: Any = None
    index: int
    total: int


class ModelLoaderOutput(BaseInvocationOutput):
    type: Literal["model_loader_output"] = "model_loader_output"
    unet: UNetField
    clip: CLIPField
    vae: VAEField


class SDXLModelLoaderOutput(BaseInvocationOutput):
    type: Literal["sdxl_model_loader_output"] = "sdxl_model_loader_output"
    unet: UNetField
    clip: CLIPField
    clip2: CLIPField
    vae: VAEField


class VAEOutput(BaseInvocationOutput):
    type: Literal["vae_output"] = "vae_output"
    vae: VAEField


class CLIPSkipInvocationOutput(BaseInvocationOutput):
    type: Literal["clip_skip_output"] = "clip_skip_output"
    clip: CLIPField | None = None


class ConditioningOutput(BaseInvocationOutput):
    type: Literal["conditioning_output"] = "conditioning_output"
    conditioning: ConditioningField


class NoiseOutput(BaseInvocationOutput):
    type: Literal["noise_output"] = "noise_output"
    noise: LatentsField
    width: int
    height: int


class LatentsOutput(BaseInvocationOutput):
    type: Literal["latents_output"] = "latents_output"
    latents: LatentsField
    width: int
    height: int


class ImageOutput(BaseInvocationOutput):
    type: Literal["image_output"] = "image_output"
    image: ImageField
    width: int
    height: int


class DenoiseMaskOutput(BaseInvocationOutput):
    type: Literal["denoise_mask_output"] = "denoise_mask_output"
    denoise_mask: DenoiseMaskField


class GradientMaskOutput(BaseInvocationOutput):
    type: Literal["gradient_mask_output"] = "gradient_mask_output"
    denoise_mask: DenoiseMaskField
    expanded_mask_area: ImageField | None = None


class ControlOutput(BaseInvocationOutput):
    type: Literal["control_output"] = "control_output"
    control: ControlField


class LoRASelectorOutput(BaseInvocationOutput):
    type: Literal["lora_selector_output"] = "lora_selector_output"
    lora: LoRAField


class LoRALoaderOutput(BaseInvocationOutput):
    type: Literal["lora_loader_output"] = "lora_loader_output"
    unet: UNetField | None = None
    clip: CLIPField | None = None


class SDXLLoRALoaderOutput(BaseInvocationOutput):
    type: Literal["sdxl_lora_loader_output"] = "sdxl_lora_loader_output"
    unet: UNetField | None = None
    clip: CLIPField | None = None
    clip2: CLIPField | None = None


class MetadataOutput(BaseInvocationOutput):
    type: Literal["metadata_output"] = "metadata_output"
    metadata: MetadataField


_ALL: list[type[BaseInvocationOutput]] = [
    IntegerOutput,
    FloatOutput,
    StringOutput,
    BooleanOutput,
    CollectInvocationOutput,
    IterateInvocationOutput,
    ModelLoaderOutput,
    SDXLModelLoaderOutput,
    VAEOutput,
    CLIPSkipInvocationOutput,
    ConditioningOutput,
    NoiseOutput,
    LatentsOutput,
    ImageOutput,
    DenoiseMaskOutput,
    GradientMaskOutput,
    ControlOutput,
    LoRASelectorOutput,
    LoRALoaderOutput,
    SDXLLoRALoaderOutput,
    MetadataOutput,
]

OUTPUTS: dict[str, type[BaseInvocationOutput]] = {cls.model_fields["type"].default: cls for cls in _ALL}


def output_field_names(cls: type[BaseInvocationOutput]) -> list[str]:
    """The fields an edge may start from (everything but the bookkeeping ones)."""
    return [name for name in cls.model_fields if name not in ("type", "output_meta")]
