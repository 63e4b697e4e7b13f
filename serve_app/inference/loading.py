"""Loading main models, whole or part by part, from diffusers folders or single-file checkpoints; device choice.

The model cache (`model_cache.ModelCache`) holds main models part by part (unet, text encoders, tokenizers,
scheduler, vae) so each part can be counted and evicted on its own. A diffusers folder loads just the part asked
for (its class named by `model_index.json`); a single file is read whole once and yields every part.
Pipelines for the diffusers call path are assembled from cached parts (`assemble_pipeline`), never cached.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from serve_app.domain.errors import GenerationFailed
from serve_app.domain.models import ModelFamily, ModelFormat, ModelSpec
from serve_app.inference.families import family_of

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)

SD_PARTS = ("text_encoder", "tokenizer", "unet", "scheduler", "vae")
SDXL_PARTS = ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2", "unet", "scheduler", "vae")
# The refiner has no CLIP-L: it conditions on OpenCLIP (text_encoder_2) alone.
SDXL_REFINER_PARTS = ("text_encoder_2", "tokenizer_2", "unet", "scheduler", "vae")
# Parts without weights: they cost no memory, and a load estimate of them is 0.
WEIGHTLESS_PARTS = frozenset({"tokenizer", "tokenizer_2", "scheduler"})
# Only these libraries' classes may be named by a model folder's model_index.json.
_LIBRARIES = frozenset({"diffusers", "transformers"})
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth")
_SDPA_PARTS = ("unet", "vae")


def pick_device() -> tuple[torch.device, torch.dtype]:
    """CUDA with bf16 (fp16 where bf16 is unsupported) when a GPU is present, else CPU float32."""
    if torch.cuda.is_available():
        # bf16 has fp32's exponent range, so the SDXL VAE cannot overflow in it and needs no upcast.
        return torch.device("cuda"), torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.device("cpu"), torch.float32


def main_parts(spec: ModelSpec) -> tuple[str, ...]:
    """The parts of a main model that generation uses, in InvokeAI's submodel names."""
    if spec.family is ModelFamily.SDXL_REFINER:
        return SDXL_REFINER_PARTS
    return SDXL_PARTS if spec.family is ModelFamily.SDXL else SD_PARTS


def load_pipeline(spec: ModelSpec, *, device: torch.device | str, dtype: torch.dtype) -> Any:
    """Load `spec` whole onto `device` in `dtype`, without a safety checker; GenerationFailed if it cannot be read."""
    family = family_of(spec.family)
    kwargs = {**family.load_kwargs, **family.init_kwargs, "dtype": dtype}
    cls = family.pipeline_class
    try:
        if spec.format is ModelFormat.DIFFUSERS:
            pipe = cls.from_pretrained(spec.path, **kwargs)
        elif spec.config_path is not None:
            # With a local config folder nothing needs the hub; without one diffusers fetches configs.
            pipe = cls.from_single_file(spec.path, config=spec.config_path, local_files_only=True, **kwargs)
        else:
            pipe = cls.from_single_file(spec.path, **kwargs)
    except (OSError, ValueError) as exc:
        raise GenerationFailed(f"Could not load model {spec.name}: {exc}", error_type="ModelLoadError") from exc
    # In fp16 an SDXL VAE whose config says `force_upcast` (the stock one) is decoded in fp32 by diffusers
    # itself, one cast each way per call; bf16 never needs it. Nothing to do here for either.
    pipe.to(device)
    _use_sdpa(pipe)
    pipe.set_progress_bar_config(disable=True)
    logger.info("Loaded model %s (%s, %s) on %s as %s", spec.name, spec.family, spec.format, device, dtype)
    return pipe


def load_parts(
    spec: ModelSpec, submodel: str | None, device: torch.device, dtype: torch.dtype
) -> dict[str | None, Any]:
    """What a cache miss on part `submodel` of main model `spec` loads: that part alone from a diffusers folder,
    every part from a single file (which must be read whole anyway)."""
    if submodel is None:
        raise ValueError(f"Main model {spec.name}: name the submodel to load")
    family_of(spec.family)  # GenerationFailed for a family this build cannot run
    if submodel not in main_parts(spec):
        raise GenerationFailed(f"Model {spec.name} has no submodel {submodel}", error_type="ModelLoadError")
    if spec.format is not ModelFormat.DIFFUSERS:
        pipe = load_pipeline(spec, device=device, dtype=dtype)
        return {part: pipe.components[part] for part in main_parts(spec)}
    try:
        part = _load_diffusers_part(Path(spec.path), submodel, device, dtype)
    except (OSError, ValueError, KeyError, ImportError, AttributeError, TypeError) as exc:
        raise GenerationFailed(
            f"Could not load {submodel} of model {spec.name}: {exc}", error_type="ModelLoadError"
        ) from exc
    logger.info("Loaded %s of model %s on %s as %s", submodel, spec.name, device, dtype)
    return {submodel: part}


def _load_diffusers_part(folder: Path, name: str, device: torch.device, dtype: torch.dtype) -> Any:
    index = json.loads((folder / "model_index.json").read_text())
    library, class_name = index[name]
    if library not in _LIBRARIES:
        raise ValueError(f"model_index.json names {library}.{class_name} for {name}; only diffusers and transformers")
    cls: Any = getattr(importlib.import_module(library), class_name)
    if not _is_module_class(cls):
        return cls.from_pretrained(folder, subfolder=name)  # a tokenizer or a scheduler
    variant = _variant(folder / name)
    module = cls.from_pretrained(folder, subfolder=name, dtype=dtype, variant=variant)
    module.to(device)
    module.eval()
    if name in _SDPA_PARTS:
        _use_sdpa_on(module)
    return module


def _is_module_class(cls: object) -> bool:
    return isinstance(cls, type) and issubclass(cls, torch.nn.Module)


def _variant(folder: Path) -> str | None:
    """ "fp16" when the folder holds only `*.fp16.*` weights (an fp16-only download); else the plain files."""
    weights = [path.name for path in folder.iterdir() if path.name.endswith((*_WEIGHT_SUFFIXES, ".index.json"))]
    if weights and all(".fp16." in name for name in weights):
        return "fp16"
    return None


def load_controlnet(spec: ModelSpec, *, device: torch.device, dtype: torch.dtype) -> Any:
    """ControlNet model `spec` (type controlnet), whole, onto `device` in `dtype`: a diffusers folder, or a single
    file with a local `config_path` (without one diffusers would fetch a config from the hub, so it is refused)."""
    from diffusers import ControlNetModel

    try:
        if spec.format is ModelFormat.DIFFUSERS:
            variant = _variant(Path(spec.path))
            model = ControlNetModel.from_pretrained(spec.path, dtype=dtype, variant=variant)  # type: ignore[no-untyped-call]
        elif spec.config_path is not None:
            model = ControlNetModel.from_single_file(
                spec.path, config=spec.config_path, local_files_only=True, torch_dtype=dtype
            )
        else:
            raise ValueError("a single-file ControlNet needs a config folder; install it as a diffusers folder")
    except (OSError, ValueError, KeyError) as exc:
        raise GenerationFailed(f"Could not load ControlNet {spec.name}: {exc}", error_type="ModelLoadError") from exc
    model.to(device)
    model.eval()
    _use_sdpa_on(model)
    logger.info("Loaded ControlNet %s on %s as %s", spec.name, device, dtype)
    return model


def estimate_bytes(spec: ModelSpec, submodel: str | None) -> int:
    """Roughly what loading `submodel` of `spec` will take: its weight files' size on disk (the whole file for a
    single-file model). The cache makes this much room first and corrects with the real size after the load."""
    if submodel in WEIGHTLESS_PARTS:
        return 0
    path = Path(spec.path)
    try:
        if path.is_file():
            return path.stat().st_size
        folder = path / submodel if submodel is not None and (path / submodel).is_dir() else path
        return sum(f.stat().st_size for f in folder.rglob("*") if f.suffix in _WEIGHT_SUFFIXES and f.is_file())
    except OSError:
        return 0


def assemble_pipeline(spec: ModelSpec, parts: Mapping[str, Any]) -> Any:
    """A diffusers pipeline of `spec`'s family over `parts` (shared, never copied); components the family's
    pipeline takes but generation does not use (safety checker, feature extractor) are None."""
    family = family_of(spec.family)
    cls = family.pipeline_class
    missing = {
        name: None
        for name, parameter in inspect.signature(cls.__init__).parameters.items()
        if name != "self" and parameter.default is inspect.Parameter.empty and name not in parts
    }
    config = {key: value for key, value in _pipeline_config(spec).items() if key in family.config_keys}
    pipe = cls(**parts, **missing, **config, **family.init_kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _pipeline_config(spec: ModelSpec) -> dict[str, Any]:
    folder = spec.path if spec.format is ModelFormat.DIFFUSERS else spec.config_path
    if folder is None:
        return {}
    try:
        config: dict[str, Any] = json.loads((Path(folder) / "model_index.json").read_text())
    except (OSError, ValueError):
        return {}
    return config


def _use_sdpa(pipe: Any) -> None:
    for module in (pipe.unet, pipe.vae):
        _use_sdpa_on(module)


def _use_sdpa_on(module: Any) -> None:
    # diffusers picks PyTorch's fused scaled_dot_product_attention by default; make sure nothing (an older
    # saved processor choice, a plugin) left the slow classic attention in place.
    if not all(isinstance(p, AttnProcessor2_0) for p in module.attn_processors.values()):
        module.set_attn_processor(AttnProcessor2_0())  # type: ignore[no-untyped-call]


def silence_progress_bars() -> None:
    """Turn off the tqdm bars diffusers and transformers print while loading: replicas log, not draw."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
