"""InvokeAI 6.8's `tiled_multi_diffusion_denoise_latents`: denoise_latents over overlapping tiles (MultiDiffusion),
for canvases larger than the model's native size. Fields, defaults and bounds are InvokeAI's; `denoise_mask` is
this server's addition (InvokeAI's node has no masking), so Enfugue's chunked inpaints run on it too."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import field_validator

from serve_app.domain.graph.base import BaseInvocation, InputField, OutputClass
from serve_app.domain.graph.fields import ConditioningField, ControlField, DenoiseMaskField, LatentsField, UNetField
from serve_app.domain.graph.latent_nodes import LATENT_SCALE_FACTOR, SchedulerName
from serve_app.domain.graph.outputs import LatentsOutput


class TiledMultiDiffusionDenoiseLatents(BaseInvocation):
    """Tiles of tile_width × tile_height pixels whose neighbours overlap by at least `tile_overlap` (which must be
    less than both tile sides, checked when the node runs, as in InvokeAI)."""

    output_class: ClassVar[OutputClass] = LatentsOutput
    type: Literal["tiled_multi_diffusion_denoise_latents"] = "tiled_multi_diffusion_denoise_latents"
    positive_conditioning: ConditioningField | None = InputField(None, input="connection", required=True)
    negative_conditioning: ConditioningField | None = InputField(None, input="connection", required=True)
    noise: LatentsField | None = InputField(None, input="connection")
    latents: LatentsField | None = InputField(None, input="connection")
    tile_height: int = InputField(1024, gt=0, multiple_of=LATENT_SCALE_FACTOR)
    tile_width: int = InputField(1024, gt=0, multiple_of=LATENT_SCALE_FACTOR)
    tile_overlap: int = InputField(32, gt=0, multiple_of=LATENT_SCALE_FACTOR)
    steps: int = InputField(18, gt=0)
    cfg_scale: float | list[float] = InputField(6.0)
    denoising_start: float = InputField(0.0, ge=0, le=1)
    denoising_end: float = InputField(1.0, ge=0, le=1)
    scheduler: SchedulerName = InputField("euler")
    unet: UNetField | None = InputField(None, input="connection", required=True)
    cfg_rescale_multiplier: float = InputField(0.0, ge=0, lt=1)
    control: ControlField | list[ControlField] | None = InputField(None, input="connection")
    denoise_mask: DenoiseMaskField | None = InputField(None, input="connection")

    @field_validator("cfg_scale")
    @classmethod
    def _cfg_scale_at_least_one(cls, value: float | list[float]) -> float | list[float]:
        values = value if isinstance(value, list) else [value]
        if any(v < 1 for v in values):
            raise ValueError("cfg_scale must be greater than 1")
        return value
