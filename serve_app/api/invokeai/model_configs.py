"""InvokeAI 6.8 model configs (`AnyModelConfig`) for the catalog's models, field for field as InvokeAI sends them."""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from serve_app.domain.models import ModelFamily, ModelFormat, ModelType
from serve_app.services.models import ModelRecord


class BaseModelType(enum.StrEnum):
    """InvokeAI's `BaseModelType` (query parameters accept all of them; the catalog has sd-1, sd-2, sdxl)."""

    ANY = "any"
    SD1 = "sd-1"
    SD2 = "sd-2"
    SD3 = "sd-3"
    SDXL = "sdxl"
    SDXL_REFINER = "sdxl-refiner"
    FLUX = "flux"
    COGVIEW4 = "cogview4"
    IMAGEN3 = "imagen3"
    IMAGEN4 = "imagen4"
    GEMINI_2_5 = "gemini-2.5"
    CHATGPT_4O = "chatgpt-4o"
    FLUX_KONTEXT = "flux-kontext"
    VEO3 = "veo3"
    RUNWAY = "runway"


class InvokeModelType(enum.StrEnum):
    """InvokeAI's `ModelType`."""

    ONNX = "onnx"
    MAIN = "main"
    VAE = "vae"
    LORA = "lora"
    CONTROL_LORA = "control_lora"
    CONTROLNET = "controlnet"
    EMBEDDING = "embedding"
    IP_ADAPTER = "ip_adapter"
    CLIP_VISION = "clip_vision"
    CLIP_EMBED = "clip_embed"
    T2I_ADAPTER = "t2i_adapter"
    T5_ENCODER = "t5_encoder"
    SPANDREL_IMAGE_TO_IMAGE = "spandrel_image_to_image"
    SIGLIP = "siglip"
    FLUX_REDUX = "flux_redux"
    LLAVA_ONEVISION = "llava_onevision"
    VIDEO = "video"


class InvokeModelFormat(enum.StrEnum):
    """InvokeAI's `ModelFormat`."""

    OMI = "omi"
    DIFFUSERS = "diffusers"
    CHECKPOINT = "checkpoint"
    LYCORIS = "lycoris"
    ONNX = "onnx"
    OLIVE = "olive"
    EMBEDDING_FILE = "embedding_file"
    EMBEDDING_FOLDER = "embedding_folder"
    INVOKEAI = "invokeai"
    T5_ENCODER = "t5_encoder"
    BNB_QUANTIZED_INT8B = "bnb_quantized_int8b"
    BNB_QUANTIZED_NF4B = "bnb_quantized_nf4b"
    GGUF_QUANTIZED = "gguf_quantized"
    API = "api"


class MainModelDefaultSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vae: str | None = None
    vae_precision: Literal["fp16", "fp32"] | None = None
    scheduler: str | None = None
    steps: int | None = None
    cfg_scale: float | None = None
    cfg_rescale_multiplier: float | None = None
    width: int | None = None
    height: int | None = None
    guidance: float | None = None


class LoraModelDefaultSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weight: float | None = Field(default=None, ge=-1, le=2)


class ModelConfigBase(BaseModel):
    """Fields every config has, in InvokeAI's order."""

    key: str
    hash: str
    path: str
    file_size: int
    name: str
    type: str
    format: str
    base: str
    source: str
    source_type: Literal["path", "url", "hf_repo_id"] = "path"
    description: str | None = None
    source_api_response: str | None = None
    cover_image: str | None = None
    submodels: dict[str, Any] | None = None
    usage_info: str | None = None


class MainDiffusersConfig(ModelConfigBase):
    type: Literal["main"] = "main"
    format: Literal["diffusers"] = "diffusers"
    trigger_phrases: list[str] | None = None
    default_settings: MainModelDefaultSettings | None = None
    variant: Literal["normal", "inpaint", "depth"] = "normal"
    repo_variant: str = ""


class MainCheckpointConfig(ModelConfigBase):
    type: Literal["main"] = "main"
    format: Literal["checkpoint"] = "checkpoint"
    trigger_phrases: list[str] | None = None
    default_settings: MainModelDefaultSettings | None = None
    variant: Literal["normal", "inpaint", "depth"] = "normal"
    config_path: str | None = None
    converted_at: float | None = None
    prediction_type: Literal["epsilon", "v_prediction", "sample"] = "epsilon"
    upcast_attention: bool = False


class LoRALyCORISConfig(ModelConfigBase):
    type: Literal["lora"] = "lora"
    format: Literal["lycoris"] = "lycoris"
    trigger_phrases: list[str] | None = None
    default_settings: LoraModelDefaultSettings | None = None


class VAEDiffusersConfig(ModelConfigBase):
    type: Literal["vae"] = "vae"
    format: Literal["diffusers"] = "diffusers"
    repo_variant: str = ""


def _config_tag(value: Any) -> str:
    if isinstance(value, dict):
        return f"{value.get('type')}.{value.get('format')}"
    return f"{getattr(value, 'type', None)}.{getattr(value, 'format', None)}"


AnyModelConfig = Annotated[
    Annotated[MainDiffusersConfig, Tag("main.diffusers")]
    | Annotated[MainCheckpointConfig, Tag("main.checkpoint")]
    | Annotated[LoRALyCORISConfig, Tag("lora.lycoris")]
    | Annotated[VAEDiffusersConfig, Tag("vae.diffusers")],
    Discriminator(_config_tag),
]


class ModelsList(BaseModel):
    models: list[AnyModelConfig]


# InvokeAI's `MainModelDefaultSettings.from_base` sizes, and its legacy checkpoint config files.
_NATIVE_SIZE = {ModelFamily.SD1: 512, ModelFamily.SD2: 768, ModelFamily.SDXL: 1024}
_LEGACY_CONFIG = {
    ModelFamily.SD1: "stable-diffusion/v1-inference.yaml",
    ModelFamily.SD2: "stable-diffusion/v2-inference-v.yaml",
    ModelFamily.SDXL: "stable-diffusion/sd_xl_base.yaml",
}


def to_config(record: ModelRecord) -> ModelConfigBase:
    """The InvokeAI config of one catalog model."""
    spec = record.spec
    common: dict[str, Any] = {
        "key": spec.key,
        "hash": record.hash,
        "path": spec.path,
        "file_size": record.file_size,
        "name": spec.name,
        "base": spec.family.value,
        "source": spec.path,
        "description": f"{spec.family.value} {spec.type.value} model {spec.name}",
    }
    if spec.type is ModelType.MAIN:
        size = _NATIVE_SIZE.get(spec.family, 512)
        settings = MainModelDefaultSettings(width=size, height=size)
        if spec.format is ModelFormat.CHECKPOINT:
            v_prediction = spec.family is ModelFamily.SD2
            return MainCheckpointConfig(
                **common,
                default_settings=settings,
                config_path=_LEGACY_CONFIG.get(spec.family),
                prediction_type="v_prediction" if v_prediction else "epsilon",
                upcast_attention=v_prediction,
            )
        return MainDiffusersConfig(**common, default_settings=settings)
    if spec.type is ModelType.LORA:
        return LoRALyCORISConfig(**common)
    if spec.type is ModelType.VAE:
        return VAEDiffusersConfig(**common)
    raise ValueError(f"no InvokeAI config for {spec.type}/{spec.format} models")
