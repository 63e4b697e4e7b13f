"""A preset's default upscale (enfugue-api.md §10.1: the `upscale*`/`outscale` keys of its default configuration).

The Enfugue dialect turns a request's own upscale keys into passes before the model is known; a preset's keys
can only apply once the preset is resolved, so model_resolution.apply_preset asks here when the request brought no
passes. Values are read as the request's are (one value or a list per pass; pydantic's lax mode, so a stored "2"
is 2), then the same limits apply at submit as for a request's own upscale. Like a request's, `upscale_method`
and `upscale_pipeline` are accepted and ignored (Enfugue's invoke ignores them too).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from serve_app.domain.errors import InvalidRequest
from serve_app.domain.generation import UpscalePass
from serve_app.services.enfugue_upscale import UpscaleSettings


class _PresetUpscale(BaseModel):
    """The upscale keys of a default configuration, typed as the request's (api/enfugue/schemas.py)."""

    model_config = ConfigDict(extra="ignore")

    upscale: Any = None
    outscale: int = Field(default=1, ge=1)
    upscale_iterative: bool = False
    upscale_diffusion: bool = False
    upscale_diffusion_steps: int | list[int] | None = None
    upscale_diffusion_guidance_scale: float | list[float] | None = None
    upscale_diffusion_strength: float | list[float] | None = None
    upscale_diffusion_prompt: str | list[str] | None = None
    upscale_diffusion_prompt_2: str | list[str] | None = None
    upscale_diffusion_negative_prompt: str | list[str] | None = None
    upscale_diffusion_negative_prompt_2: str | list[str] | None = None
    upscale_diffusion_controlnet: str | list[str] | None = None


def preset_upscale_passes(name: str, config: Mapping[str, Any]) -> list[UpscalePass]:
    """The passes preset `name`'s default configuration asks for (none without `upscale` and an `outscale` above
    1); InvalidRequest naming the preset for a value no request could use either."""
    if config.get("upscale") in (None, "", []):
        return []
    try:
        keys = _PresetUpscale.model_validate({key: value for key, value in config.items() if value is not None})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, error['loc']))}: {error['msg']}" for error in exc.errors())
        raise InvalidRequest(f"Model {name} has unusable defaults: {problems}", field="model") from None
    settings = UpscaleSettings(
        upscale=keys.upscale,
        outscale=keys.outscale,
        iterative=keys.upscale_iterative,
        diffusion=keys.upscale_diffusion,
        steps=keys.upscale_diffusion_steps,
        guidance_scale=keys.upscale_diffusion_guidance_scale,
        strength=keys.upscale_diffusion_strength,
        prompt=keys.upscale_diffusion_prompt,
        prompt_2=keys.upscale_diffusion_prompt_2,
        negative_prompt=keys.upscale_diffusion_negative_prompt,
        negative_prompt_2=keys.upscale_diffusion_negative_prompt_2,
        controlnet=keys.upscale_diffusion_controlnet,
    )
    try:
        return settings.passes()
    except InvalidRequest as exc:
        raise InvalidRequest(f"Model {name} has unusable defaults: {exc.message}", field="model") from None
