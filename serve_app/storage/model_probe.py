"""What a model file or folder is (base, type, format, variant), read from its JSON configs and tensor names and
shapes only: probing never loads weights. Safetensors files give up their JSON header; pickles (.ckpt/.pt/.pth/.bin)
are opened with torch's weights-only unpickler onto the meta device, so a malicious pickle is refused, not run.

Single files are told apart by their tensor names, as InvokeAI's probe does: `model.diffusion_model.` is an LDM
main checkpoint, `control_model.` a ControlNet, `lora_unet_`/`.lora_A.`/`hada_w1_a`... a LoRA, `encoder.`/`decoder.`
a VAE, `string_to_param`/`emb_params`/`clip_g` a textual inversion, `model.1.sub.`/`RRDB_trunk.` an ESRGAN upscaler.
"""

from __future__ import annotations

import json
import logging
import struct
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from serve_app.domain.errors import InvalidRequest, UnsupportedMediaType
from serve_app.domain.models import (
    ModelFamily,
    ModelFormat,
    ModelType,
    ModelVariant,
    PredictionType,
    ProbedModel,
)

logger = logging.getLogger(__name__)

MODEL_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
# Optional sidecar next to a diffusers VAE: {"base": "sdxl"} (SD1 and SDXL VAEs share one architecture).
SIDECAR = "serve_app.json"
# A real header is a few MB at most; a bigger declared length is a damaged or hostile file, never read.
_SAFETENSORS_HEADER_MAX = 100 * 1024 * 1024
# Cross-attention width (the text encoder's hidden size) per base.
_CONTEXT_DIMS = {768: ModelFamily.SD1, 1024: ModelFamily.SD2, 2048: ModelFamily.SDXL}
# Token-embedding width of a textual inversion per base (SDXL ones carry `clip_l` + `clip_g` instead).
_EMBEDDING_DIMS = {768: ModelFamily.SD1, 1024: ModelFamily.SD2}
# SDXL's VAE is scaled by 0.13025, SD1/SD2's by 0.18215.
_SDXL_VAE_SCALING = 0.13025
# Substrings of a LoRA's trainer metadata per base, most specific first ("stable-diffusion-xl-v1-base/lora",
# "sdxl_base_v1-0", "stable-diffusion-v2-768-v/lora", "sd_v2", "stable-diffusion-v1/lora", "sd_v1").
_METADATA_BASES = (
    ("xl-v1-refiner", ModelFamily.SDXL_REFINER),
    ("sdxl_refiner", ModelFamily.SDXL_REFINER),
    ("-xl-", ModelFamily.SDXL),
    ("sdxl", ModelFamily.SDXL),
    ("stable-diffusion-v2", ModelFamily.SD2),
    ("sd_v2", ModelFamily.SD2),
    ("stable-diffusion-v1", ModelFamily.SD1),
    ("sd_v1", ModelFamily.SD1),
)
# A UNet's input channels: latents, + mask and masked image (inpaint), + depth map (depth).
_VARIANTS = {4: ModelVariant.NORMAL, 9: ModelVariant.INPAINT, 5: ModelVariant.DEPTH}
_SD_PIPELINES = frozenset(
    {"StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "StableDiffusionInpaintPipeline"}
)
_SDXL_PIPELINES = frozenset(
    {"StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline", "StableDiffusionXLInpaintPipeline"}
)
_OTHER_PIPELINES = {"StableDiffusion3Pipeline": ModelFamily.SD3, "FluxPipeline": ModelFamily.FLUX}
_LORA_MARKERS = (".lora_A.", ".lora_B.", ".lora.down", ".lora.up", ".lora_down.", ".lora_up.", "hada_w1_a", "lokr_w1")
_UNET_INPUT = "model.diffusion_model.input_blocks.0.0.weight"
_LDM_CONTEXT = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
_CONTROL_CONTEXT = "control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"

# Tensor name -> {"shape": [...], ...}: a safetensors header, or the same built from a pickle's tensors.
Header = dict[str, Any]


def probe(path: Path, base_hint: ModelFamily | None = None) -> ProbedModel:
    """Recognise the model at `path`. `base_hint` decides the base where the files cannot (tiny test models,
    SD1 vs SD2 VAEs). InvalidRequest when nothing is there, UnsupportedMediaType when it is no model we know."""
    if not path.exists():
        raise InvalidRequest(f"{path} does not exist")
    probed = _probe_folder(path, base_hint) if path.is_dir() else _probe_file(path, base_hint)
    if probed is None:
        raise UnsupportedMediaType(f"Cannot recognise {path.name} as a model")
    return probed


def safetensors_header(path: Path) -> dict[str, Any] | None:
    """The JSON header of a safetensors file (tensor names to dtype/shape/offsets), without reading tensors;
    None when the file is not one (or declares a header over 100 MiB)."""
    try:
        with path.open("rb") as file:
            (length,) = struct.unpack("<Q", file.read(8))
            if length > _SAFETENSORS_HEADER_MAX:
                return None
            header = json.loads(file.read(length))
    except (OSError, ValueError, struct.error):
        return None
    return header if isinstance(header, dict) else None


def lora_family(header: Mapping[str, Any], default: ModelFamily = ModelFamily.SD1) -> ModelFamily:
    """SDXL when it patches the second text encoder; else by the cross-attention width; else by what the trainer
    wrote in the metadata (kohya's `ss_base_model_version`, `modelspec.architecture`); else `default`."""
    names = [name for name in header if name != "__metadata__"]
    if any("text_encoder_2" in name or "lora_te2" in name or name.startswith(("te2.", "te2_")) for name in names):
        return ModelFamily.SDXL
    for name in names:
        if "attn2" in name and "to_k" in name and ("lora_down" in name or "lora_A" in name or "lora.down" in name):
            shape = _shape(header, name)
            if shape is not None and len(shape) == 2 and shape[1] in _CONTEXT_DIMS:
                return _CONTEXT_DIMS[shape[1]]
    return _metadata_family(header.get("__metadata__")) or default


def _metadata_family(metadata: object) -> ModelFamily | None:
    if not isinstance(metadata, dict):
        return None
    label = f"{metadata.get('modelspec.architecture', '')} {metadata.get('ss_base_model_version', '')}".lower()
    for marker, base in _METADATA_BASES:
        if marker in label:
            return base
    return None


# --- folders ------------------------------------------------------------------------------------------------


def _probe_folder(folder: Path, hint: ModelFamily | None) -> ProbedModel | None:
    if _is_config_sidecar(folder):
        return None
    if (folder / "model_index.json").is_file():
        return _probe_pipeline(folder)
    for name in ("learned_embeds.safetensors", "learned_embeds.bin"):
        if (folder / name).is_file():
            embedding = _probe_file(folder / name, hint)
            if embedding is None or embedding.type is not ModelType.EMBEDDING:
                return None
            return _probed(folder.name, embedding.base, ModelType.EMBEDDING, ModelFormat.EMBEDDING_FOLDER)
    lora = folder / "pytorch_lora_weights.safetensors"
    if lora.is_file():
        header = safetensors_header(lora)
        if header is None:
            return None
        return _probed(folder.name, lora_family(header, hint or ModelFamily.SD1), ModelType.LORA, ModelFormat.DIFFUSERS)
    config = _read_json(folder / "config.json")
    return _probe_component(folder, config, hint) if config is not None else None


def _is_config_sidecar(folder: Path) -> bool:
    # `<stem>.config/` holds the configs a single-file checkpoint loads with: part of that model, not one itself.
    if not folder.name.endswith(".config"):
        return False
    stem = folder.name.removesuffix(".config")
    return any(folder.with_name(stem + suffix).is_file() for suffix in MODEL_FILE_SUFFIXES)


def _probe_pipeline(folder: Path) -> ProbedModel | None:
    class_name = (_read_json(folder / "model_index.json") or {}).get("_class_name")
    if class_name in _SD_PIPELINES:
        base = ModelFamily.SD2 if _looks_like_sd2(folder) else ModelFamily.SD1
    elif class_name in _SDXL_PIPELINES:
        # The refiner has only the OpenCLIP encoder (text_encoder_2).
        refiner = not (folder / "text_encoder").is_dir() and (folder / "text_encoder_2").is_dir()
        base = ModelFamily.SDXL_REFINER if refiner else ModelFamily.SDXL
    elif class_name in _OTHER_PIPELINES:
        base = _OTHER_PIPELINES[class_name]
    else:
        logger.info("Not probing %s: unsupported pipeline %r", folder, class_name)
        return None
    unet = _read_json(folder / "unet" / "config.json")
    variant = _VARIANTS.get(unet.get("in_channels", 4), ModelVariant.NORMAL) if unet else ModelVariant.NORMAL
    prediction = (_read_json(folder / "scheduler" / "scheduler_config.json") or {}).get("prediction_type")
    prediction_type: PredictionType | None
    if prediction in {member.value for member in PredictionType}:
        prediction_type = PredictionType(prediction)
    else:
        # diffusers' schedulers default to epsilon; flow-matching pipelines (SD3, Flux) predict none of these.
        prediction_type = None if base in _OTHER_PIPELINES.values() else PredictionType.EPSILON
    return ProbedModel(
        name=folder.name,
        base=base,
        type=ModelType.MAIN,
        format=ModelFormat.DIFFUSERS,
        variant=variant,
        prediction_type=prediction_type,
        upcast_attention=bool((unet or {}).get("upcast_attention", False)),
        repo_variant="fp16" if any(folder.glob("*/*.fp16.safetensors")) else "",
    )


def _looks_like_sd2(folder: Path) -> bool:
    # SD2 swapped CLIP ViT-L (768 wide) for OpenCLIP ViT-H (1024); its 768px models also predict v.
    text_encoder = _read_json(folder / "text_encoder" / "config.json") or {}
    scheduler = _read_json(folder / "scheduler" / "scheduler_config.json") or {}
    return text_encoder.get("hidden_size") == 1024 or scheduler.get("prediction_type") == "v_prediction"


def _probe_component(folder: Path, config: dict[str, Any], hint: ModelFamily | None) -> ProbedModel | None:
    """A single diffusers (or transformers) model folder: config.json names its class."""
    class_name = config.get("_class_name")
    architectures = config.get("architectures")
    if class_name is None and isinstance(architectures, list) and architectures:
        class_name = architectures[0]  # transformers writes the class here
    if class_name == "AutoencoderKL":
        base = _sidecar_family(folder / SIDECAR)
        if base is None:
            base = ModelFamily.SDXL if config.get("scaling_factor") == _SDXL_VAE_SCALING else hint or ModelFamily.SD1
        return _probed(folder.name, base, ModelType.VAE, ModelFormat.DIFFUSERS)
    if class_name == "ControlNetModel":
        if config.get("addition_embed_type") == "text_time":
            base = ModelFamily.SDXL
        else:
            base = _by_width(_CONTEXT_DIMS, config.get("cross_attention_dim"), hint)
        return _probed(folder.name, base, ModelType.CONTROLNET, ModelFormat.DIFFUSERS)
    if class_name == "T2IAdapter":
        xl = config.get("adapter_type") == "full_adapter_xl"
        base = ModelFamily.SDXL if xl else hint or ModelFamily.SD1
        return _probed(folder.name, base, ModelType.T2I_ADAPTER, ModelFormat.DIFFUSERS)
    if class_name == "CLIPVisionModelWithProjection":
        return _probed(folder.name, ModelFamily.ANY, ModelType.CLIP_VISION, ModelFormat.DIFFUSERS)
    return None


def _sidecar_family(path: Path) -> ModelFamily | None:
    base = (_read_json(path) or {}).get("base")
    try:
        return ModelFamily(base) if base is not None else None
    except ValueError:
        logger.warning("Ignoring %s: unknown base %r", path, base)
        return None


# --- single files -------------------------------------------------------------------------------------------


def _probe_file(path: Path, hint: ModelFamily | None) -> ProbedModel | None:
    if path.suffix.lower() not in MODEL_FILE_SUFFIXES:
        return None
    header = safetensors_header(path) if path.suffix.lower() == ".safetensors" else _pickle_header(path)
    if header is None:
        return None
    names = [name for name in header if name != "__metadata__"]
    if not names:
        return None
    return (
        _probe_main(path, header, names, hint)
        or _probe_controlnet(path, header, names, hint)
        or _probe_lora(path, header, names, hint)
        or _probe_vae(path, names, hint)
        or _probe_embedding(path, header, names, hint)
        or _probe_upscaler(path, names)
    )


def _probe_main(path: Path, header: Header, names: list[str], hint: ModelFamily | None) -> ProbedModel | None:
    if not any(name.startswith("model.diffusion_model.") for name in names):
        return None
    if _any_prefix(names, "conditioner.embedders.1.model."):
        base = ModelFamily.SDXL
    elif _any_prefix(names, "conditioner.embedders.0.model."):
        base = ModelFamily.SDXL_REFINER  # the refiner conditions on OpenCLIP alone
    elif _any_prefix(names, "cond_stage_model.model."):
        base = ModelFamily.SD2  # OpenCLIP ViT-H
    elif _any_prefix(names, "cond_stage_model.transformer."):
        base = ModelFamily.SD1  # CLIP ViT-L
    else:
        # No text encoder in the file: the UNet's cross-attention width still tells.
        base = _by_width(_CONTEXT_DIMS, _dim(header, _LDM_CONTEXT, 1), hint)
    config_dir = path.with_name(f"{path.stem}.config")
    sd2 = base is ModelFamily.SD2
    return ProbedModel(
        name=path.stem,
        base=base,
        type=ModelType.MAIN,
        format=ModelFormat.CHECKPOINT,
        variant=_VARIANTS.get(_dim(header, _UNET_INPUT, 1) or 4, ModelVariant.NORMAL),
        # InvokeAI's defaults for SD2 checkpoints (the 768-v models); the configs cannot be read from the file.
        prediction_type=PredictionType.V_PREDICTION if sd2 else PredictionType.EPSILON,
        upcast_attention=sd2,
        config_path=str(config_dir) if config_dir.is_dir() else None,
    )


def _probe_controlnet(path: Path, header: Header, names: list[str], hint: ModelFamily | None) -> ProbedModel | None:
    if not _any_prefix(names, "control_model."):
        return None
    base = _by_width(_CONTEXT_DIMS, _dim(header, _CONTROL_CONTEXT, 1), hint)
    return _probed(path.stem, base, ModelType.CONTROLNET, ModelFormat.CHECKPOINT)


def _probe_lora(path: Path, header: Header, names: list[str], hint: ModelFamily | None) -> ProbedModel | None:
    kohya = _any_prefix(names, "lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")
    marked = any(marker in name for name in names for marker in _LORA_MARKERS)
    # LyCORIS full-difference layers end `.diff` (`.diff_b` for biases); `.diff` alone would match `.diffusion`.
    diff = any(name.endswith((".diff", ".diff_b")) for name in names)
    if not (kohya or marked or diff):
        return None
    return _probed(path.stem, lora_family(header, hint or ModelFamily.SD1), ModelType.LORA, ModelFormat.LYCORIS)


def _probe_vae(path: Path, names: list[str], hint: ModelFamily | None) -> ProbedModel | None:
    standalone = all(name.startswith(("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")) for name in names)
    extracted = all(name.startswith("first_stage_model.") for name in names)
    if not (standalone and _any_prefix(names, "encoder.", "decoder.")) and not extracted:
        return None
    # SD1 and SDXL VAEs share one layout; names like "sdxl_vae" are the usual tell (InvokeAI looks at them too).
    base = hint or (ModelFamily.SDXL if "xl" in path.stem.lower() else ModelFamily.SD1)
    return _probed(path.stem, base, ModelType.VAE, ModelFormat.CHECKPOINT)


def _probe_embedding(path: Path, header: Header, names: list[str], hint: ModelFamily | None) -> ProbedModel | None:
    if "clip_g" in names and "clip_l" in names:
        base = ModelFamily.SDXL
    else:
        # A1111 (.pt: `string_to_param` {"*": [n, width]}; .safetensors: `emb_params`), or diffusers' {token: vectors}.
        vectors = [name for name in names if name.startswith("string_to_param.") or name == "emb_params"]
        if not vectors and len(names) == 1:
            vectors = names
        shape = _shape(header, vectors[0]) if len(vectors) == 1 else None
        if shape is None or len(shape) not in (1, 2):
            return None
        base = _by_width(_EMBEDDING_DIMS, shape[-1], hint)
    return _probed(path.stem, base, ModelType.EMBEDDING, ModelFormat.EMBEDDING_FILE)


def _probe_upscaler(path: Path, names: list[str]) -> ProbedModel | None:
    old_esrgan = "model.0.weight" in names and _any_prefix(names, "model.1.sub.")
    new_esrgan = "conv_first.weight" in names and _any_prefix(names, "RRDB_trunk.", "body.")
    if not (old_esrgan or new_esrgan):
        return None
    return _probed(path.stem, ModelFamily.ANY, ModelType.SPANDREL, ModelFormat.CHECKPOINT)


def _pickle_header(path: Path) -> Header | None:
    """A pickle's tensors as a safetensors-like header ({name: {"shape": [...]}}), nested dicts joined with
    dots; None when torch's weights-only unpickler refuses the file or it is no pickle at all."""
    # Imported here: the storage layer (and the catalog in the API process) should not pay for torch otherwise.
    import torch

    try:
        if zipfile.is_zipfile(path):
            # Zip-format pickles map onto the meta device: shapes only, no tensor bytes read.
            loaded = torch.load(path, map_location="meta", weights_only=True, mmap=True)
        else:
            loaded = _load_legacy(path)
    except Exception as exc:  # torch raises a zoo of types for damaged, foreign or refused pickles
        logger.info("Not probing %s: %s", path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return None
    if not isinstance(loaded, dict):
        return None
    # Checkpoints wrap their weights: LDM training in `state_dict`, BasicSR upscalers in `params_ema`/`params`.
    for wrapper in ("state_dict", "params_ema", "params"):
        if isinstance(loaded.get(wrapper), dict):
            loaded = loaded[wrapper]
            break
    header: Header = {}
    _flatten(loaded, "", header, depth=0)
    return header


def _load_legacy(path: Path) -> Any:
    import torch

    # Pre-zip pickles cannot be memory-mapped; the meta device still avoids materialising most of them.
    try:
        return torch.load(path, map_location="meta", weights_only=True)
    except RuntimeError:
        return torch.load(path, map_location="cpu", weights_only=True)


def _flatten(value: Mapping[Any, Any], prefix: str, into: Header, *, depth: int) -> None:
    import torch

    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, torch.Tensor):
            into[name] = {"shape": list(item.shape)}
        elif isinstance(item, Mapping) and depth < 4:
            _flatten(item, f"{name}.", into, depth=depth + 1)


# --- helpers ------------------------------------------------------------------------------------------------


def _probed(name: str, base: ModelFamily, type_: ModelType, format_: ModelFormat) -> ProbedModel:
    return ProbedModel(name=name, base=base, type=type_, format=format_)


def _shape(header: Mapping[str, Any], name: str) -> list[int] | None:
    entry = header.get(name)
    shape = entry.get("shape") if isinstance(entry, dict) else None
    return shape if isinstance(shape, list) and all(isinstance(n, int) for n in shape) else None


def _dim(header: Mapping[str, Any], name: str, axis: int) -> int | None:
    shape = _shape(header, name)
    return shape[axis] if shape is not None and len(shape) > axis else None


def _by_width(bases: Mapping[int, ModelFamily], width: object, hint: ModelFamily | None) -> ModelFamily:
    """The base a tensor width stands for; else the caller's hint; else sd-1 (tiny test models are 32 wide)."""
    if isinstance(width, int) and width in bases:
        return bases[width]
    return hint or ModelFamily.SD1


def _any_prefix(names: Iterable[str], *prefixes: str) -> bool:
    return any(name.startswith(prefixes) for name in names)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
