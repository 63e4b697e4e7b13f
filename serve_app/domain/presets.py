"""Enfugue's model presets ("models" in its API): a checkpoint with its refiner, inpainter, VAEs, LoRAs,
LyCORIS, textual inversions, scheduler and default parameters, chosen by name at invoke time."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class WeightedModel(BaseModel):
    """A LoRA or LyCORIS file name and the weight to apply it at."""

    model: str = Field(min_length=1)
    weight: float = 1.0


class ModelPreset(BaseModel):
    name: str = Field(min_length=1, max_length=256)
    checkpoint: str = Field(min_length=1, max_length=256)  # Enfugue's column is called `model`
    size: int = Field(default=512, ge=64, le=4096)
    prompt: str = ""
    negative_prompt: str = ""
    refiner: str | None = None
    refiner_size: int | None = Field(default=None, ge=64, le=4096)
    inpainter: str | None = None
    inpainter_size: int | None = Field(default=None, ge=64, le=4096)
    scheduler: str | None = None
    vae: str | None = None
    refiner_vae: str | None = None
    inpainter_vae: str | None = None
    lora: list[WeightedModel] = Field(default_factory=list)
    lycoris: list[WeightedModel] = Field(default_factory=list)
    inversion: list[str] = Field(default_factory=list)
    # Enfugue's `MODEL_DEFAULT_FIELDS` values (width, height, num_inference_steps, guidance_scale, ...).
    config: dict[str, Any] = Field(default_factory=dict)
