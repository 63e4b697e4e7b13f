"""Diffusion models as the catalog knows them: name, family, on-disk format."""

from __future__ import annotations

import enum
import uuid

from pydantic import BaseModel, ConfigDict

# Keys are stable across restarts and replicas: derived from the name until the Postgres registry
# (model-management issue) stores random ones.
_KEY_NAMESPACE = uuid.UUID("6f1d7a4e-4b0c-5d8e-9a51-7c2f0e3b9d10")


class ModelFamily(enum.StrEnum):
    """Base architecture; names follow InvokeAI's `BaseModelType`."""

    SD1 = "sd-1"
    SD2 = "sd-2"
    SDXL = "sdxl"


class ModelFormat(enum.StrEnum):
    """How the weights are laid out on disk; names follow InvokeAI's `ModelFormat`."""

    DIFFUSERS = "diffusers"
    CHECKPOINT = "checkpoint"
    LYCORIS = "lycoris"
    EMBEDDING_FILE = "embedding_file"


class ModelType(enum.StrEnum):
    """What a model is for; names follow InvokeAI's `ModelType`."""

    MAIN = "main"
    VAE = "vae"
    LORA = "lora"
    EMBEDDING = "embedding"


class ModelSpec(BaseModel):
    """Everything a loader needs to find and build a pipeline."""

    model_config = ConfigDict(frozen=True)

    name: str
    family: ModelFamily
    format: ModelFormat
    path: str
    type: ModelType = ModelType.MAIN
    # A local diffusers-layout folder holding the configs for a single-file checkpoint, so
    # loading never reaches for a model hub.
    config_path: str | None = None

    @property
    def key(self) -> str:
        """The id InvokeAI clients reference this model by (`ModelIdentifierField.key`)."""
        return str(uuid.uuid5(_KEY_NAMESPACE, f"{self.type}/{self.name}"))

    @property
    def native_size(self) -> int:
        return 1024 if self.family is ModelFamily.SDXL else 512
