"""Noise, denoising, VAE encode/decode and inpaint-mask nodes (InvokeAI 6.8 names and constraints)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import field_validator

from serve_app.domain.graph.base import BaseInvocation, InputField, OutputClass, WithBoard, WithMetadata
from serve_app.domain.graph.fields import (
    ConditioningField,
    ControlField,
    DenoiseMaskField,
    ImageField,
    IPAdapterField,
    LatentsField,
    T2IAdapterField,
    UNetField,
    VAEField,
)
from serve_app.domain.graph.outputs import (
    DenoiseMaskOutput,
    GradientMaskOutput,
    ImageOutput,
    LatentsOutput,
    NoiseOutput,
)

SchedulerName = Literal[
    "ddim", "ddpm", "deis", "deis_k", "lms", "lms_k", "pndm", "heun", "heun_k", "euler", "euler_k", "euler_a",
    "kdpm_2", "kdpm_2_k", "kdpm_2_a", "kdpm_2_a_k", "dpmpp_2s", "dpmpp_2s_k", "dpmpp_2m", "dpmpp_2m_k",
    "dpmpp_2m_sde", "dpmpp_2m_sde_k", "dpmpp_3m", "dpmpp_3m_k", "dpmpp_sde", "dpmpp_sde_k", "unipc", "unipc_k",
    "lcm", "tcd",
]  # fmt: skip

SEED_MAX = 2**32 - 1  # noise seeds are uint32, as in InvokeAI
LATENT_SCALE_FACTOR = 8  # pixel sizes must map to whole latent cells


class NoiseInvocation(BaseInvocation):
    output_class: ClassVar[OutputClass] = NoiseOutput
    type: Literal["noise"] = "noise"
    seed: int = InputField(0, ge=0, le=SEED_MAX)
    width: int = InputField(512, gt=0, multiple_of=LATENT_SCALE_FACTOR)
    height: int = InputField(512, gt=0, multiple_of=LATENT_SCALE_FACTOR)
    use_cpu: bool = InputField(True)


class DenoiseLatentsInvocation(BaseInvocation):
    """Text- or image-to-latents; `latents` + `denoising_start` make it img2img, `denoise_mask` inpaint."""

    output_class: ClassVar[OutputClass] = LatentsOutput
    type: Literal["denoise_latents"] = "denoise_latents"
    positive_conditioning: ConditioningField | list[ConditioningField] | None = InputField(
        None, input="connection", required=True
    )
    negative_conditioning: ConditioningField | list[ConditioningField] | None = InputField(
        None, input="connection", required=True
    )
    noise: LatentsField | None = InputField(None, input="connection")
    steps: int = InputField(10, gt=0)
    cfg_scale: float | list[float] = InputField(7.5)
    denoising_start: float = InputField(0.0, ge=0, le=1)
    denoising_end: float = InputField(1.0, ge=0, le=1)
    scheduler: SchedulerName = InputField("euler")
    unet: UNetField | None = InputField(None, input="connection", required=True)
    control: ControlField | list[ControlField] | None = InputField(None, input="connection")
    ip_adapter: IPAdapterField | list[IPAdapterField] | None = InputField(None, input="connection")
    t2i_adapter: T2IAdapterField | list[T2IAdapterField] | None = InputField(None, input="connection")
    cfg_rescale_multiplier: float = InputField(0.0, ge=0, lt=1)
    latents: LatentsField | None = InputField(None, input="connection")
    denoise_mask: DenoiseMaskField | None = InputField(None, input="connection")

    @field_validator("cfg_scale")
    @classmethod
    def _cfg_scale_at_least_one(cls, value: float | list[float]) -> float | list[float]:
        # Per-step lists are allowed; every entry obeys the same bound as the scalar.
        values = value if isinstance(value, list) else [value]
        if any(v < 1 for v in values):
            raise ValueError("cfg_scale must be greater than 1")
        return value


class LatentsToImageInvocation(BaseInvocation, WithMetadata, WithBoard):
    output_class: ClassVar[OutputClass] = ImageOutput
    type: Literal["l2i"] = "l2i"
    latents: LatentsField | None = InputField(None, input="connection", required=True)
    vae: VAEField | None = InputField(None, input="connection", required=True)
    tiled: bool = InputField(False)
    tile_size: int = InputField(0, multiple_of=8)
    fp32: bool = InputField(False)


class ImageToLatentsInvocation(BaseInvocation):
    output_class: ClassVar[OutputClass] = LatentsOutput
    type: Literal["i2l"] = "i2l"
    image: ImageField | None = InputField(None, required=True)
    vae: VAEField | None = InputField(None, input="connection", required=True)
    tiled: bool = InputField(False)
    tile_size: int = InputField(0, multiple_of=8)
    fp32: bool = InputField(False)


class CreateDenoiseMaskInvocation(BaseInvocation):
    output_class: ClassVar[OutputClass] = DenoiseMaskOutput
    type: Literal["create_denoise_mask"] = "create_denoise_mask"
    vae: VAEField | None = InputField(None, input="connection", required=True)
    image: ImageField | None = InputField(None)
    mask: ImageField | None = InputField(None, required=True)
    tiled: bool = InputField(False)
    fp32: bool = InputField(False)


class CreateGradientMaskInvocation(BaseInvocation):
    """Inpaint mask with a soft edge; `unet`/`vae`/`image` are only needed for inpaint-variant models."""

    output_class: ClassVar[OutputClass] = GradientMaskOutput
    type: Literal["create_gradient_mask"] = "create_gradient_mask"
    mask: ImageField | None = InputField(None, required=True)
    edge_radius: int = InputField(16, ge=0)
    coherence_mode: Literal["Gaussian Blur", "Box Blur", "Staged"] = InputField("Gaussian Blur")
    minimum_denoise: float = InputField(0.0, ge=0, le=1)
    image: ImageField | None = InputField(None)
    unet: UNetField | None = InputField(None, input="connection")
    vae: VAEField | None = InputField(None, input="connection")
    tiled: bool = InputField(False)
    fp32: bool = InputField(False)
