"""The model catalog: diffusers folders and single-file checkpoints found in one directory, plus LoRAs in
`loras/<name>.safetensors` and diffusers VAEs in `vae/<name>/`."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from serve_app.domain.errors import ModelNotFound
from serve_app.domain.models import ModelFamily, ModelFormat, ModelSpec, ModelType
from serve_app.storage.model_probe import lora_family as _lora_family
from serve_app.storage.model_probe import safetensors_header as _safetensors_header

logger = logging.getLogger(__name__)

CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")
_SDXL_PIPELINES = frozenset(
    {"StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline", "StableDiffusionXLInpaintPipeline"}
)
_SD_PIPELINES = frozenset(
    {"StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "StableDiffusionInpaintPipeline"}
)

LORAS_DIR = "loras"
VAES_DIR = "vae"
# Optional per-VAE sidecar: {"base": "sdxl"}.
SIDECAR = "serve_app.json"
# SDXL's VAE is scaled by 0.13025, SD1/SD2's by 0.18215.
_SDXL_VAE_SCALING = 0.13025

# Main models by name, checkpoint stems to the model names they stand for, and every model (LoRAs and
# VAEs too) by key.
_Index = tuple[dict[str, ModelSpec], dict[str, str], dict[str, ModelSpec]]


class DirectoryModelCatalog:
    """Scans `models_dir` once, and again whenever a name is not found, so models copied in later appear."""

    def __init__(self, models_dir: Path, default_model: str) -> None:
        self._models_dir = models_dir.absolute()
        self._default_model = default_model
        # Replaced as a whole, never mutated, so concurrent readers see one consistent scan.
        self._index: _Index | None = None

    def resolve(self, name: str | None) -> ModelSpec:
        name = self._default_model if name is None else name
        if not _is_plain_name(name):
            raise ModelNotFound(name)
        spec = self._lookup(self._scanned(), name)
        if spec is None:
            spec = self._lookup(self._rescan(), name)
        if spec is None:
            raise ModelNotFound(name)
        return spec

    def list(self) -> list[ModelSpec]:
        """Every model of every type (main, LoRA, VAE), sorted by name, then type."""
        _, _, by_key = self._scanned()
        return sorted(by_key.values(), key=lambda spec: (spec.name, spec.type))

    def get(self, key: str) -> ModelSpec:
        """Any model by its key; raise ModelNotFound."""
        spec = self._scanned()[2].get(key) or self._rescan()[2].get(key)
        if spec is None:
            raise ModelNotFound(key)
        return spec

    def refresh(self) -> None:
        """Rescan the folder now."""
        self._rescan()

    def _rescan(self) -> _Index:
        index = _scan(self._models_dir)
        self._index = index
        return index

    def _scanned(self) -> _Index:
        return self._index if self._index is not None else self._rescan()

    @staticmethod
    def _lookup(index: _Index, name: str) -> ModelSpec | None:
        models, aliases, _ = index
        return models.get(name) or models.get(aliases.get(name, ""))


def _is_plain_name(name: str) -> bool:
    return bool(name) and name != "." and not any(bad in name for bad in ("..", "/", "\\", "\x00"))


def _scan(models_dir: Path) -> _Index:
    models: dict[str, ModelSpec] = {}
    try:
        entries = sorted(models_dir.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        logger.warning("Models folder %s does not exist", models_dir)
        return models, {}, {}
    for entry in entries:
        # Hidden entries include the `.tmp*` folders a model download is assembled in.
        if entry.name.startswith("."):
            continue
        spec = _spec_for(entry)
        if spec is not None:
            models[spec.name] = spec
    extras = [*_scan_loras(models_dir / LORAS_DIR), *_scan_vaes(models_dir / VAES_DIR)]
    by_key = {spec.key: spec for spec in [*models.values(), *extras]}
    return models, _stem_aliases(models), by_key


def _visible_entries(folder: Path) -> list[Path]:
    try:
        return sorted(entry for entry in folder.iterdir() if not entry.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _scan_loras(folder: Path) -> list[ModelSpec]:
    """Single-file LoRAs (InvokeAI labels them format `lycoris`), named by their stem."""
    specs = []
    for entry in _visible_entries(folder):
        if not (entry.is_file() and entry.suffix == ".safetensors"):
            continue
        header = _safetensors_header(entry)
        if header is None:
            logger.warning("Skipping LoRA %s: not a readable safetensors file", entry)
            continue
        specs.append(
            ModelSpec(
                name=entry.stem,
                family=_lora_family(header),
                format=ModelFormat.LYCORIS,
                path=str(entry),
                type=ModelType.LORA,
            )
        )
    return specs


def _scan_vaes(folder: Path) -> list[ModelSpec]:
    """Diffusers AutoencoderKL folders; base from the sidecar, else from the latent scaling factor, else sd-1."""
    specs = []
    for entry in _visible_entries(folder):
        config = _read_json(entry / "config.json") if entry.is_dir() else None
        if config is None or config.get("_class_name") != "AutoencoderKL":
            continue
        family = _sidecar_family(entry / SIDECAR)
        if family is None:
            family = ModelFamily.SDXL if config.get("scaling_factor") == _SDXL_VAE_SCALING else ModelFamily.SD1
        specs.append(
            ModelSpec(name=entry.name, family=family, format=ModelFormat.DIFFUSERS, path=str(entry), type=ModelType.VAE)
        )
    return specs


def _sidecar_family(path: Path) -> ModelFamily | None:
    base = (_read_json(path) or {}).get("base")
    try:
        return ModelFamily(base) if base is not None else None
    except ValueError:
        logger.warning("Ignoring %s: unknown base %r", path, base)
        return None


def _spec_for(entry: Path) -> ModelSpec | None:
    if entry.is_dir():
        if entry.name.endswith(".config") or not (entry / "model_index.json").is_file():
            return None
        family = _family_from_config(entry)
        if family is None:
            return None
        return ModelSpec(name=entry.name, family=family, format=ModelFormat.DIFFUSERS, path=str(entry))
    if entry.is_file() and entry.suffix in CHECKPOINT_SUFFIXES:
        config_dir = entry.with_name(entry.stem + ".config")
        config_path = config_dir if config_dir.is_dir() else None
        if config_path is not None and (config_path / "model_index.json").is_file():
            family = _family_from_config(config_path)
            if family is None:
                return None
        else:
            family = _family_from_name(entry.name)
        return ModelSpec(
            name=entry.name,
            family=family,
            format=ModelFormat.CHECKPOINT,
            path=str(entry),
            config_path=str(config_path) if config_path is not None else None,
        )
    return None


def _stem_aliases(models: dict[str, ModelSpec]) -> dict[str, str]:
    # A checkpoint also answers to its stem unless a real model has that name; .safetensors wins over .ckpt.
    aliases: dict[str, str] = {}
    for spec in sorted(models.values(), key=lambda s: (s.name.endswith(".ckpt"), s.name)):
        if spec.format is ModelFormat.CHECKPOINT:
            stem = Path(spec.name).stem
            if stem not in models:
                aliases.setdefault(stem, spec.name)
    return aliases


def _family_from_name(name: str) -> ModelFamily:
    # Enfugue's heuristic; a later issue replaces it with probing the checkpoint's tensors.
    return ModelFamily.SDXL if "xl" in name.lower() else ModelFamily.SD1


def _family_from_config(folder: Path) -> ModelFamily | None:
    """Family from a diffusers layout's JSON configs; None (and a warning) when unsupported or unreadable."""
    index = _read_json(folder / "model_index.json")
    class_name = index.get("_class_name") if index is not None else None
    if class_name in _SDXL_PIPELINES:
        return ModelFamily.SDXL
    if class_name in _SD_PIPELINES:
        return ModelFamily.SD2 if _looks_like_sd2(folder) else ModelFamily.SD1
    logger.warning("Skipping model %s: unsupported or unreadable model_index.json (%s)", folder, class_name)
    return None


def _looks_like_sd2(folder: Path) -> bool:
    # SD2 swapped CLIP ViT-L (768 wide) for OpenCLIP ViT-H (1024); its 768px models also predict v.
    text_encoder = _read_json(folder / "text_encoder" / "config.json") or {}
    scheduler = _read_json(folder / "scheduler" / "scheduler_config.json") or {}
    return text_encoder.get("hidden_size") == 1024 or scheduler.get("prediction_type") == "v_prediction"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
