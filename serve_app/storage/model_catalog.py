"""The model catalog: what the models folder holds, by layout. Main models (diffusers folders, single-file
checkpoints) at the top, and by type in `loras/`, `lycoris/`, `vae/` and `embeddings/`. Every entry is recognised by
probing its files (storage.model_probe), so a file means the same here as when it is installed through an API."""

from __future__ import annotations

import logging
from pathlib import Path

from serve_app.domain.errors import ModelNotFound, ServeAppError
from serve_app.domain.models import ModelFormat, ModelSpec, ModelType, ModelVariant
from serve_app.storage.model_probe import probe

logger = logging.getLogger(__name__)

LORAS_DIR = "loras"
LYCORIS_DIR = "lycoris"
VAES_DIR = "vae"
EMBEDDINGS_DIR = "embeddings"
# Folder -> the model types it may hold (anything else found there is skipped with a log line).
_TYPED_FOLDERS = {
    LORAS_DIR: (ModelType.LORA,),
    LYCORIS_DIR: (ModelType.LORA,),
    VAES_DIR: (ModelType.VAE,),
    EMBEDDINGS_DIR: (ModelType.EMBEDDING,),
}

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
    if not models_dir.is_dir():
        logger.warning("Models folder %s does not exist", models_dir)
        return models, {}, {}
    for entry in _visible_entries(models_dir):
        if entry.is_dir() and entry.name in _TYPED_FOLDERS:
            continue
        spec = _spec_for(entry, (ModelType.MAIN,))
        if spec is not None:
            models[spec.name] = spec
    extras = [
        spec
        for folder, types in _TYPED_FOLDERS.items()
        for entry in _visible_entries(models_dir / folder)
        if (spec := _spec_for(entry, types)) is not None
    ]
    by_key = {spec.key: spec for spec in [*models.values(), *extras]}
    return models, _stem_aliases(models), by_key


def _visible_entries(folder: Path) -> list[Path]:
    # Hidden entries include the `.tmp*`/`.install-*` folders a download or install is assembled in.
    try:
        return sorted(entry for entry in folder.iterdir() if not entry.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _spec_for(entry: Path, types: tuple[ModelType, ...]) -> ModelSpec | None:
    """The entry as a model of one of `types`, or None (logged) when it is something else or unreadable.

    Main single files keep their file name (Enfugue passes `model.safetensors`); other single files are named by
    their stem, folders by their name."""
    try:
        probed = probe(entry)
    except (ServeAppError, OSError) as error:
        logger.debug("Skipping %s: %s", entry, error)
        return None
    except Exception:  # an odd pickle can raise anything; it must not hide the rest of the folder
        logger.warning("Skipping %s: could not probe it", entry, exc_info=True)
        return None
    if probed.type not in types:
        logger.info("Skipping %s: a %s model where %s models belong", entry, probed.type, "/".join(types))
        return None
    keeps_suffix = probed.type is ModelType.MAIN and probed.format is ModelFormat.CHECKPOINT
    return ModelSpec(
        name=entry.name if keeps_suffix or entry.is_dir() else entry.stem,
        family=probed.base,
        format=probed.format,
        path=str(entry),
        type=probed.type,
        config_path=probed.config_path,
        variant=probed.variant or ModelVariant.NORMAL,
        prediction_type=probed.prediction_type,
        upcast_attention=probed.upcast_attention,
    )


def _stem_aliases(models: dict[str, ModelSpec]) -> dict[str, str]:
    # A checkpoint also answers to its stem unless a real model has that name; .safetensors wins over .ckpt.
    aliases: dict[str, str] = {}
    for spec in sorted(models.values(), key=lambda s: (s.name.endswith(".ckpt"), s.name)):
        if spec.format is ModelFormat.CHECKPOINT:
            stem = Path(spec.name).stem
            if stem not in models:
                aliases.setdefault(stem, spec.name)
    return aliases
