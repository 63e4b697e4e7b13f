"""Diffusion models as the catalog knows them: name, family, on-disk format."""

from __future__ import annotations

import enum

from pydantic import BaseModel, ConfigDict


class ModelFamily(enum.StrEnum):
    """Base architecture; names follow InvokeAI's `BaseModelType`."""

    SD1 = "sd-1"
    SD2 = "sd-2"
    SDXL = "sdxl"


class ModelFormat(enum.StrEnum):
    """How the weights are laid out on disk."""

    DIFFUSERS = "diffusers"
    CHECKPOINT = "checkpoint"


class ModelSpec(BaseModel):
    """Everything a loader needs to find and build a pipeline."""

    model_config = ConfigDict(frozen=True)

    name: str
    family: ModelFamily
    format: ModelFormat
    path: str
    # A local diffusers-layout folder holding the configs for a single-file checkpoint, so
    # loading never reaches for a model hub.
    config_path: str | None = None

    @property
    def native_size(self) -> int:
        return 1024 if self.family is ModelFamily.SDXL else 512
