"""The SDXL refiner's nodes (InvokeAI 6.8's `sdxl_refiner_model_loader` and `sdxl_refiner_compel_prompt`).

The refiner conditions on OpenCLIP alone (`clip2`) and takes an aesthetic score in place of the target size in
its micro-conditioning, so it has its own loader and prompt node; `denoise_latents` runs its UNet like any other.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from serve_app.domain.graph.base import BaseInvocation, BaseInvocationOutput, InputField, OutputClass
from serve_app.domain.graph.fields import CLIPField, ModelIdentifierField, UNetField, VAEField
from serve_app.domain.graph.outputs import ConditioningOutput


class SDXLRefinerModelLoaderOutput(BaseInvocationOutput):
    type: Literal["sdxl_refiner_model_loader_output"] = "sdxl_refiner_model_loader_output"
    unet: UNetField
    clip2: CLIPField
    vae: VAEField


class SDXLRefinerModelLoaderInvocation(BaseInvocation):
    output_class: ClassVar[OutputClass] = SDXLRefinerModelLoaderOutput
    type: Literal["sdxl_refiner_model_loader"] = "sdxl_refiner_model_loader"
    model: ModelIdentifierField | None = InputField(None, required=True)


class SDXLRefinerCompelPromptInvocation(BaseInvocation):
    output_class: ClassVar[OutputClass] = ConditioningOutput
    type: Literal["sdxl_refiner_compel_prompt"] = "sdxl_refiner_compel_prompt"
    style: str = InputField("")
    original_width: int = InputField(1024)
    original_height: int = InputField(1024)
    crop_top: int = InputField(0)
    crop_left: int = InputField(0)
    aesthetic_score: float = InputField(6.0)
    clip2: CLIPField | None = InputField(None, input="connection", required=True)


REFINER_OUTPUTS: list[type[BaseInvocationOutput]] = [SDXLRefinerModelLoaderOutput]
