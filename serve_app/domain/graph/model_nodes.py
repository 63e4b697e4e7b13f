"""Model loaders, LoRA nodes and prompt encoders (InvokeAI 6.8 names, defaults and constraints)."""

from __future__ import annotations

from typing import ClassVar, Literal

from serve_app.domain.graph.base import BaseInvocation, InputField, OutputClass
from serve_app.domain.graph.fields import CLIPField, LoRAField, ModelIdentifierField, TensorField, UNetField
from serve_app.domain.graph.outputs import (
    CLIPSkipInvocationOutput,
    ConditioningOutput,
    LoRALoaderOutput,
    LoRASelectorOutput,
    ModelLoaderOutput,
    SDXLLoRALoaderOutput,
    SDXLModelLoaderOutput,
    VAEOutput,
)


class MainModelLoaderInvocation(BaseInvocation):
    output_class: ClassVar[OutputClass] = ModelLoaderOutput
    type: Literal["main_model_loader"] = "main_model_loader"
    model: ModelIdentifierField | None = InputField(None, required=True)


class SDXLModelLoaderInvocation(BaseInvocation):
    output_class: ClassVar[OutputClass] = SDXLModelLoaderOutput
    type: Literal["sdxl_model_loader"] = "sdxl_model_loader"
    model: ModelIdentifierField | None = InputField(None, required=True)


class VAELoaderInvocation(BaseInvocation):
    output_class: ClassVar[OutputClass] = VAEOutput
    type: Literal["vae_loader"] = "vae_loader"
    vae_model: ModelIdentifierField | None = InputField(None, required=True)


class CLIPSkipInvocation(BaseInvocation):
    output_class: ClassVar[OutputClass] = CLIPSkipInvocationOutput
    type: Literal["clip_skip"] = "clip_skip"
    clip: CLIPField | None = InputField(None, input="connection", required=True)
    skipped_layers: int = InputField(0, ge=0)


class CompelInvocation(BaseInvocation):
    output_class: ClassVar[OutputClass] = ConditioningOutput
    type: Literal["compel"] = "compel"
    prompt: str = InputField("")
    clip: CLIPField | None = InputField(None, input="connection", required=True)
    mask: TensorField | None = InputField(None, input="connection")


class SDXLCompelPromptInvocation(BaseInvocation):
    output_class: ClassVar[OutputClass] = ConditioningOutput
    type: Literal["sdxl_compel_prompt"] = "sdxl_compel_prompt"
    prompt: str = InputField("")
    style: str = InputField("")
    original_width: int = InputField(1024)
    original_height: int = InputField(1024)
    crop_top: int = InputField(0)
    crop_left: int = InputField(0)
    target_width: int = InputField(1024)
    target_height: int = InputField(1024)
    clip: CLIPField | None = InputField(None, input="connection", required=True)
    clip2: CLIPField | None = InputField(None, input="connection", required=True)
    mask: TensorField | None = InputField(None, input="connection")


class LoRASelectorInvocation(BaseInvocation):
    output_class: ClassVar[OutputClass] = LoRASelectorOutput
    type: Literal["lora_selector"] = "lora_selector"
    lora: ModelIdentifierField | None = InputField(None, required=True)
    weight: float = InputField(0.75)


class LoRACollectionLoader(BaseInvocation):
    """Applies a single LoRA or a collection of them to the UNet and CLIP handles passing through."""

    output_class: ClassVar[OutputClass] = LoRALoaderOutput
    type: Literal["lora_collection_loader"] = "lora_collection_loader"
    loras: LoRAField | list[LoRAField] | None = InputField(None)
    unet: UNetField | None = InputField(None, input="connection")
    clip: CLIPField | None = InputField(None, input="connection")


class SDXLLoRACollectionLoader(BaseInvocation):
    output_class: ClassVar[OutputClass] = SDXLLoRALoaderOutput
    type: Literal["sdxl_lora_collection_loader"] = "sdxl_lora_collection_loader"
    loras: LoRAField | list[LoRAField] | None = InputField(None)
    unet: UNetField | None = InputField(None, input="connection")
    clip: CLIPField | None = InputField(None, input="connection")
    clip2: CLIPField | None = InputField(None, input="connection")


class LoRALoaderInvocation(BaseInvocation):
    output_class: ClassVar[OutputClass] = LoRALoaderOutput
    type: Literal["lora_loader"] = "lora_loader"
    lora: ModelIdentifierField | None = InputField(None, required=True)
    weight: float = InputField(0.75)
    unet: UNetField | None = InputField(None, input="connection")
    clip: CLIPField | None = InputField(None, input="connection")


class SDXLLoRALoaderInvocation(BaseInvocation):
    output_class: ClassVar[OutputClass] = SDXLLoRALoaderOutput
    type: Literal["sdxl_lora_loader"] = "sdxl_lora_loader"
    lora: ModelIdentifierField | None = InputField(None, required=True)
    weight: float = InputField(0.75)
    unet: UNetField | None = InputField(None, input="connection")
    clip: CLIPField | None = InputField(None, input="connection")
    clip2: CLIPField | None = InputField(None, input="connection")
