"""The values that travel along graph edges, shaped exactly as InvokeAI serializes them.

Clients only ever build `ModelIdentifierField`, `ImageField`, `BoardField` and `LoRAField`; the
others are opaque handles a node hands to the next one (tensors are referred to by name and live
in the executing replica's memory for the length of one session).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SubModelType = Literal[
    "unet",
    "transformer",
    "text_encoder",
    "text_encoder_2",
    "text_encoder_3",
    "tokenizer",
    "tokenizer_2",
    "tokenizer_3",
    "vae",
    "vae_decoder",
    "vae_encoder",
    "scheduler",
    "safety_checker",
]


class _Field(BaseModel):
    # Handles come back from clients inside submitted sessions too: tolerate what InvokeAI adds later.
    model_config = ConfigDict(extra="ignore")


class ModelIdentifierField(_Field):
    """How a graph names a model: `key` is what resolves it; the rest is informational."""

    key: str
    hash: str = ""
    name: str = ""
    base: str = "any"
    type: str = "main"
    submodel_type: SubModelType | None = None


class ImageField(_Field):
    image_name: str


class BoardField(_Field):
    board_id: str


class LoRAField(_Field):
    lora: ModelIdentifierField
    weight: float


class UNetField(_Field):
    unet: ModelIdentifierField
    scheduler: ModelIdentifierField
    loras: list[LoRAField] = Field(default_factory=list)
    seamless_axes: list[str] = Field(default_factory=list)
    freeu_config: dict[str, Any] | None = None


class CLIPField(_Field):
    tokenizer: ModelIdentifierField
    text_encoder: ModelIdentifierField
    skipped_layers: int = 0
    loras: list[LoRAField] = Field(default_factory=list)


class VAEField(_Field):
    vae: ModelIdentifierField
    seamless_axes: list[str] = Field(default_factory=list)


class TensorField(_Field):
    tensor_name: str


class LatentsField(_Field):
    latents_name: str
    seed: int | None = None


class ConditioningField(_Field):
    conditioning_name: str
    mask: TensorField | None = None


class DenoiseMaskField(_Field):
    mask_name: str
    masked_latents_name: str | None = None
    gradient: bool = False


MetadataField = dict[str, Any]


class _AdapterField(_Field):
    # Accepted so canvas graphs that carry adapters parse; keep every key for whoever implements them.
    model_config = ConfigDict(extra="allow")


class ControlField(_AdapterField):
    image: ImageField
    control_model: ModelIdentifierField
    control_weight: float | list[float] = 1.0
    begin_step_percent: float = 0.0
    end_step_percent: float = 1.0
    control_mode: str = "balanced"
    resize_mode: str = "just_resize"


class IPAdapterField(_AdapterField):
    image: ImageField | list[ImageField]
    ip_adapter_model: ModelIdentifierField
    image_encoder_model: ModelIdentifierField
    weight: float | list[float] = 1.0
    begin_step_percent: float = 0.0
    end_step_percent: float = 1.0
    mask: TensorField | None = None


class T2IAdapterField(_AdapterField):
    image: ImageField
    t2i_adapter_model: ModelIdentifierField
    weight: float | list[float] = 1.0
    begin_step_percent: float = 0.0
    end_step_percent: float = 1.0
    resize_mode: str = "just_resize"
