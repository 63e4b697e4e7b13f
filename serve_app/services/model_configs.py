"""InvokeAI 6.8 model configs (`AnyModelConfig`) of registry records, field for field as InvokeAI sends them
(the schemas of its openapi.json). Every place that shows a model the InvokeAI way (the model manager routes,
`model_load_*` events, install jobs) builds it with `to_config`."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError

from serve_app.domain.models import ModelFamily, ModelFormat, ModelRecord, ModelType


class BaseModelType(enum.StrEnum):
    """InvokeAI's `BaseModelType` (query parameters accept all of them; the registry holds the probed ones)."""

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
    steps: int | None = Field(default=None, gt=0)
    cfg_scale: float | None = Field(default=None, ge=1)
    cfg_rescale_multiplier: float | None = Field(default=None, ge=0, lt=1)
    width: int | None = Field(default=None, multiple_of=8, ge=64)
    height: int | None = Field(default=None, multiple_of=8, ge=64)
    guidance: float | None = Field(default=None, ge=1)


class LoraModelDefaultSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weight: float | None = Field(default=None, ge=-1, le=2)


class ControlAdapterDefaultSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    preprocessor: str | None


AnyDefaultSettings = MainModelDefaultSettings | LoraModelDefaultSettings | ControlAdapterDefaultSettings


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
    config_path: str
    converted_at: float | None = None
    prediction_type: Literal["epsilon", "v_prediction", "sample"] = "epsilon"
    upcast_attention: bool = False


class LoRALyCORISConfig(ModelConfigBase):
    type: Literal["lora"] = "lora"
    format: Literal["lycoris"] = "lycoris"
    trigger_phrases: list[str] | None = None
    default_settings: LoraModelDefaultSettings | None = None


class LoRADiffusersConfig(ModelConfigBase):
    type: Literal["lora"] = "lora"
    format: Literal["diffusers"] = "diffusers"
    trigger_phrases: list[str] | None = None
    default_settings: LoraModelDefaultSettings | None = None


class VAEDiffusersConfig(ModelConfigBase):
    type: Literal["vae"] = "vae"
    format: Literal["diffusers"] = "diffusers"


class VAECheckpointConfig(ModelConfigBase):
    type: Literal["vae"] = "vae"
    format: Literal["checkpoint"] = "checkpoint"
    config_path: str
    converted_at: float | None = None


class TextualInversionFileConfig(ModelConfigBase):
    type: Literal["embedding"] = "embedding"
    format: Literal["embedding_file"] = "embedding_file"


class TextualInversionFolderConfig(ModelConfigBase):
    type: Literal["embedding"] = "embedding"
    format: Literal["embedding_folder"] = "embedding_folder"


class ControlNetDiffusersConfig(ModelConfigBase):
    type: Literal["controlnet"] = "controlnet"
    format: Literal["diffusers"] = "diffusers"
    default_settings: ControlAdapterDefaultSettings | None = None
    repo_variant: str = ""


class ControlNetCheckpointConfig(ModelConfigBase):
    type: Literal["controlnet"] = "controlnet"
    format: Literal["checkpoint"] = "checkpoint"
    default_settings: ControlAdapterDefaultSettings | None = None
    config_path: str
    converted_at: float | None = None


class T2IAdapterConfig(ModelConfigBase):
    type: Literal["t2i_adapter"] = "t2i_adapter"
    format: Literal["diffusers"] = "diffusers"
    default_settings: ControlAdapterDefaultSettings | None = None
    repo_variant: str = ""


class IPAdapterInvokeAIConfig(ModelConfigBase):
    type: Literal["ip_adapter"] = "ip_adapter"
    format: Literal["invokeai"] = "invokeai"
    image_encoder_model_id: str


class IPAdapterCheckpointConfig(ModelConfigBase):
    type: Literal["ip_adapter"] = "ip_adapter"
    format: Literal["checkpoint"] = "checkpoint"


class CLIPVisionDiffusersConfig(ModelConfigBase):
    type: Literal["clip_vision"] = "clip_vision"
    format: Literal["diffusers"] = "diffusers"
    repo_variant: str = ""


class SpandrelImageToImageConfig(ModelConfigBase):
    type: Literal["spandrel_image_to_image"] = "spandrel_image_to_image"
    format: Literal["checkpoint"] = "checkpoint"


def _config_tag(value: Any) -> str:
    if isinstance(value, dict):
        return f"{value.get('type')}.{value.get('format')}"
    return f"{getattr(value, 'type', None)}.{getattr(value, 'format', None)}"


AnyModelConfig = Annotated[
    Annotated[MainDiffusersConfig, Tag("main.diffusers")]
    | Annotated[MainCheckpointConfig, Tag("main.checkpoint")]
    | Annotated[LoRALyCORISConfig, Tag("lora.lycoris")]
    | Annotated[LoRADiffusersConfig, Tag("lora.diffusers")]
    | Annotated[VAEDiffusersConfig, Tag("vae.diffusers")]
    | Annotated[VAECheckpointConfig, Tag("vae.checkpoint")]
    | Annotated[TextualInversionFileConfig, Tag("embedding.embedding_file")]
    | Annotated[TextualInversionFolderConfig, Tag("embedding.embedding_folder")]
    | Annotated[ControlNetDiffusersConfig, Tag("controlnet.diffusers")]
    | Annotated[ControlNetCheckpointConfig, Tag("controlnet.checkpoint")]
    | Annotated[T2IAdapterConfig, Tag("t2i_adapter.diffusers")]
    | Annotated[IPAdapterInvokeAIConfig, Tag("ip_adapter.invokeai")]
    | Annotated[IPAdapterCheckpointConfig, Tag("ip_adapter.checkpoint")]
    | Annotated[CLIPVisionDiffusersConfig, Tag("clip_vision.diffusers")]
    | Annotated[SpandrelImageToImageConfig, Tag("spandrel_image_to_image.checkpoint")],
    Discriminator(_config_tag),
]

_CONFIG_CLASSES: dict[tuple[ModelType, ModelFormat], type[ModelConfigBase]] = {
    (ModelType.MAIN, ModelFormat.DIFFUSERS): MainDiffusersConfig,
    (ModelType.MAIN, ModelFormat.CHECKPOINT): MainCheckpointConfig,
    (ModelType.LORA, ModelFormat.LYCORIS): LoRALyCORISConfig,
    (ModelType.LORA, ModelFormat.DIFFUSERS): LoRADiffusersConfig,
    (ModelType.VAE, ModelFormat.DIFFUSERS): VAEDiffusersConfig,
    (ModelType.VAE, ModelFormat.CHECKPOINT): VAECheckpointConfig,
    (ModelType.EMBEDDING, ModelFormat.EMBEDDING_FILE): TextualInversionFileConfig,
    (ModelType.EMBEDDING, ModelFormat.EMBEDDING_FOLDER): TextualInversionFolderConfig,
    (ModelType.CONTROLNET, ModelFormat.DIFFUSERS): ControlNetDiffusersConfig,
    (ModelType.CONTROLNET, ModelFormat.CHECKPOINT): ControlNetCheckpointConfig,
    (ModelType.T2I_ADAPTER, ModelFormat.DIFFUSERS): T2IAdapterConfig,
    (ModelType.IP_ADAPTER, ModelFormat.INVOKEAI): IPAdapterInvokeAIConfig,
    (ModelType.IP_ADAPTER, ModelFormat.CHECKPOINT): IPAdapterCheckpointConfig,
    (ModelType.CLIP_VISION, ModelFormat.DIFFUSERS): CLIPVisionDiffusersConfig,
    (ModelType.SPANDREL, ModelFormat.CHECKPOINT): SpandrelImageToImageConfig,
}


_SETTINGS_CLASSES: dict[ModelType, type[BaseModel]] = {
    ModelType.MAIN: MainModelDefaultSettings,
    ModelType.LORA: LoraModelDefaultSettings,
    ModelType.CONTROLNET: ControlAdapterDefaultSettings,
    ModelType.T2I_ADAPTER: ControlAdapterDefaultSettings,
}


class ModelsList(BaseModel):
    models: list[AnyModelConfig]


# InvokeAI's legacy original-format config files, shown as a checkpoint's `config_path` when it has no local
# diffusers config folder.
_LEGACY_CONFIG = {
    ModelFamily.SD1: "stable-diffusion/v1-inference.yaml",
    ModelFamily.SD2: "stable-diffusion/v2-inference-v.yaml",
    ModelFamily.SDXL: "stable-diffusion/sd_xl_base.yaml",
    ModelFamily.SDXL_REFINER: "stable-diffusion/sd_xl_refiner.yaml",
}
# An InvokeAI-format IP-Adapter folder names its image encoder in this file.
_IMAGE_ENCODER_FILE = "image_encoder.txt"


def cover_image_url(record: ModelRecord) -> str | None:
    """InvokeAI's `cover_image`: a relative URL whose query string changes whenever the record does, so clients
    refetch a replaced image (InvokeAI uses a fresh random string every time)."""
    if not record.has_cover_image:
        return None
    stamp = int(record.updated_at.timestamp() * 1_000_000) if record.updated_at is not None else 0
    return f"api/v2/models/i/{record.key}/image?{stamp:x}"


def _settings(cls: type[BaseModel], value: dict[str, Any] | None) -> Any:
    # Settings are checked when they are set; a record of another type's shape (a PATCH that changed the type)
    # shows none rather than failing the whole listing.
    if value is None:
        return None
    try:
        return cls.model_validate({key: item for key, item in value.items() if key in cls.model_fields})
    except ValidationError:
        return None


def _image_encoder_id(path: str) -> str:
    try:
        return (Path(path) / _IMAGE_ENCODER_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        return ""


def to_config(record: ModelRecord) -> ModelConfigBase:
    """The InvokeAI config of one registered model; ValueError for a type/format InvokeAI has no config for."""
    cls = _CONFIG_CLASSES.get((record.type, record.format))
    if cls is None:
        raise ValueError(f"no InvokeAI config for {record.type}/{record.format} models")
    fields: dict[str, Any] = {
        "key": record.key,
        "hash": record.hash,
        "path": record.path,
        "file_size": record.file_size,
        "name": record.name,
        "base": record.base.value,
        "source": record.source,
        "source_type": record.source_type.value,
        "description": record.description,
        "source_api_response": record.source_api_response,
        "cover_image": cover_image_url(record),
        "submodels": record.submodels,
        "usage_info": record.usage_info,
    }
    names = cls.model_fields
    if "trigger_phrases" in names:
        fields["trigger_phrases"] = record.trigger_phrases
    if "default_settings" in names:
        fields["default_settings"] = _settings(_SETTINGS_CLASSES[record.type], record.default_settings)
    if "variant" in names:
        fields["variant"] = str(record.variant or "normal")
    if "repo_variant" in names:
        fields["repo_variant"] = record.repo_variant
    if "config_path" in names:
        fields["config_path"] = record.config_path or _LEGACY_CONFIG.get(record.base, "")
        fields["converted_at"] = record.converted_at
    if "prediction_type" in names:
        # Unprobed SD2 checkpoints are taken for the 768 px v-prediction model, as InvokeAI's legacy config does.
        v_default = record.prediction_type is None and record.base is ModelFamily.SD2
        fields["prediction_type"] = "v_prediction" if v_default else str(record.prediction_type or "epsilon")
        fields["upcast_attention"] = record.upcast_attention or v_default
    if "image_encoder_model_id" in names:
        fields["image_encoder_model_id"] = _image_encoder_id(record.path)
    return cls.model_validate(fields)
