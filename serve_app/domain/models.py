"""Models as the registry knows them: what they are (base, type, format), where their files are, and what a
loader needs (`ModelSpec`). Names follow InvokeAI's enums, so both API dialects can show them as they are."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Models found in the models folder (the demo models among them) get keys derived from type and name, so they
# are the same across restarts, replicas and fresh databases; models installed through an API get random ones.
_KEY_NAMESPACE = uuid.UUID("6f1d7a4e-4b0c-5d8e-9a51-7c2f0e3b9d10")


class ModelFamily(enum.StrEnum):
    """Base architecture; values are InvokeAI's `BaseModelType` (the ones this server can probe)."""

    ANY = "any"
    SD1 = "sd-1"
    SD2 = "sd-2"
    SD3 = "sd-3"
    SDXL = "sdxl"
    SDXL_REFINER = "sdxl-refiner"
    FLUX = "flux"


class ModelType(enum.StrEnum):
    """What a model is for; values are InvokeAI's `ModelType`."""

    MAIN = "main"
    VAE = "vae"
    LORA = "lora"
    EMBEDDING = "embedding"
    CONTROLNET = "controlnet"
    T2I_ADAPTER = "t2i_adapter"
    IP_ADAPTER = "ip_adapter"
    CLIP_VISION = "clip_vision"
    SPANDREL = "spandrel_image_to_image"
    T5_ENCODER = "t5_encoder"


class ModelFormat(enum.StrEnum):
    """How the weights are laid out on disk; values are InvokeAI's `ModelFormat`."""

    DIFFUSERS = "diffusers"
    CHECKPOINT = "checkpoint"
    LYCORIS = "lycoris"
    EMBEDDING_FILE = "embedding_file"
    EMBEDDING_FOLDER = "embedding_folder"
    INVOKEAI = "invokeai"


class ModelVariant(enum.StrEnum):
    """A main model's UNet input: 4 latent channels (normal), 9 (inpaint: + mask + masked image), 5 (depth)."""

    NORMAL = "normal"
    INPAINT = "inpaint"
    DEPTH = "depth"


class PredictionType(enum.StrEnum):
    EPSILON = "epsilon"
    V_PREDICTION = "v_prediction"
    SAMPLE = "sample"


class SourceType(enum.StrEnum):
    """Where a model came from (InvokeAI's `ModelSourceType`)."""

    PATH = "path"
    URL = "url"
    HF_REPO_ID = "hf_repo_id"


def derived_key(type_: ModelType | str, name: str) -> str:
    """The stable key of a model found in the models folder."""
    return str(uuid.uuid5(_KEY_NAMESPACE, f"{type_}/{name}"))


class ModelSpec(BaseModel):
    """Everything a loader needs to find and build a model; sent with each job to the replica that runs it."""

    model_config = ConfigDict(frozen=True)

    name: str
    family: ModelFamily
    format: ModelFormat
    path: str
    type: ModelType = ModelType.MAIN
    # A local diffusers-layout folder holding the configs for a single-file checkpoint, so
    # loading never reaches for a model hub.
    config_path: str | None = None
    # The registry key; empty means "derived from type and name" (models found in the models folder).
    key: str = ""
    variant: ModelVariant = ModelVariant.NORMAL
    prediction_type: PredictionType | None = None
    upcast_attention: bool = False

    @model_validator(mode="after")
    def _fill_key(self) -> ModelSpec:
        if not self.key:
            object.__setattr__(self, "key", derived_key(self.type, self.name))
        return self

    @property
    def native_size(self) -> int:
        return 1024 if self.family in (ModelFamily.SDXL, ModelFamily.SDXL_REFINER) else 512


class ProbedModel(BaseModel):
    """What probing a file or folder found out (`storage.model_probe.probe`)."""

    model_config = ConfigDict(frozen=True)

    name: str  # a suggestion: the folder name or the file's stem
    base: ModelFamily
    type: ModelType
    format: ModelFormat
    variant: ModelVariant | None = None  # main models only
    prediction_type: PredictionType | None = None
    upcast_attention: bool = False
    config_path: str | None = None  # single-file main models: a `<stem>.config/` diffusers folder next to it
    repo_variant: str = ""  # "fp16" when the folder's weights are `*.fp16.safetensors`


class ModelRecord(BaseModel):
    """One registered model (a row of `models`), InvokeAI's config fields without the wire-only ones."""

    key: str
    hash: str
    path: str
    file_size: int
    name: str
    base: ModelFamily
    type: ModelType
    format: ModelFormat
    source: str
    source_type: SourceType = SourceType.PATH
    description: str | None = None
    source_api_response: str | None = None
    has_cover_image: bool = False
    trigger_phrases: list[str] | None = None
    default_settings: dict[str, Any] | None = None
    variant: ModelVariant | None = None
    prediction_type: PredictionType | None = None
    upcast_attention: bool = False
    config_path: str | None = None
    repo_variant: str = ""
    converted_at: float | None = None
    submodels: dict[str, Any] | None = None
    usage_info: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def spec(self) -> ModelSpec:
        return ModelSpec(
            key=self.key,
            name=self.name,
            family=self.base,
            format=self.format,
            path=self.path,
            type=self.type,
            config_path=self.config_path,
            variant=self.variant or ModelVariant.NORMAL,
            prediction_type=self.prediction_type,
            upcast_attention=self.upcast_attention,
        )


class ModelChanges(BaseModel):
    """A partial update of a record (InvokeAI's `ModelRecordChanges`); also the overrides of an install."""

    model_config = ConfigDict(extra="forbid")

    source: str | None = None
    source_type: SourceType | None = None
    source_api_response: str | None = None
    name: str | None = Field(default=None, min_length=1, max_length=255)
    path: str | None = None
    description: str | None = None
    base: ModelFamily | None = None
    type: ModelType | None = None
    key: str | None = None
    hash: str | None = None
    file_size: int | None = None
    format: ModelFormat | None = None
    trigger_phrases: list[str] | None = None
    default_settings: dict[str, Any] | None = None
    variant: ModelVariant | None = None
    prediction_type: PredictionType | None = None
    upcast_attention: bool | None = None
    config_path: str | None = None


def model_keys_in(value: Any) -> set[str]:
    """Every model key a graph (or any JSON value) references: the `key` of each dict shaped like InvokeAI's
    `ModelIdentifierField` ({key, hash, name, base, type, ...})."""
    found: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            key = item.get("key")
            if isinstance(key, str) and key and {"base", "type"} <= item.keys():
                found.add(key)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found
