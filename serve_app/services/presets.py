"""PresetService: Enfugue's model presets (`/api/models`) and the model listings its UI picks from.

Listings come from the registry, so models installed through either API appear with the ones found in the
models folder. Enfugue lists LoRA and LyCORIS files from two folders; the registry knows one type, `lora`, for
both (InvokeAI's format for LoRA files is even called `lycoris`). Here a LoRA is listed under `/api/lycoris` when
its path runs through a folder named `lycoris` (`<models>/lycoris/x.safetensors`, or an install from such a
folder), else under `/api/lora`. Either name may be passed as `lora` or `lycoris` at invoke time: the same
patcher applies LoRA, LoHa and LoKr weights.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from pathlib import PurePath
from typing import Any

from pydantic import ValidationError

from serve_app.domain.errors import InvalidRequest
from serve_app.domain.generation import SCHEDULER_NAMES, GenerationRequest
from serve_app.domain.models import ModelFamily, ModelFormat, ModelRecord, ModelType
from serve_app.domain.ports import ModelRegistry, PresetStore
from serve_app.domain.presets import ModelPreset
from serve_app.domain.rest_query import RestQuery
from serve_app.services.model_resolution import CONFIG_FIELDS, RUNNABLE_BASES, best_matches, file_name

# Enfugue 0.2.2's MODEL_DEFAULT_FIELDS: the keys a preset's default configuration may hold (others are dropped).
MODEL_DEFAULT_FIELDS = (
    "width", "height", "chunking_size", "chunking_blur", "num_inference_steps", "guidance_scale",
    "refiner_denoising_strength", "refiner_guidance_scale", "refiner_aesthetic_score",
    "refiner_negative_aesthetic_score", "prompt_2", "negative_prompt_2", "upscale", "outscale",
    "upscale_iterative", "upscale_pipeline", "upscale_method", "upscale_diffusion", "upscale_diffusion_prompt",
    "upscale_diffusion_prompt_2", "upscale_diffusion_negative_prompt", "upscale_diffusion_negative_prompt_2",
    "upscale_diffusion_controlnet", "upscale_diffusion_steps", "upscale_diffusion_strength",
    "upscale_diffusion_guidance_scale", "upscale_diffusion_chunking_size", "upscale_diffusion_scale_chunking_size",
    "upscale_diffusion_scale_chunking_blur",
)  # fmt: skip
LYCORIS_FOLDER = "lycoris"
_XL = frozenset({ModelFamily.SDXL, ModelFamily.SDXL_REFINER})
# A refiner part runs on an SDXL refiner or on an SDXL model (services/enfugue_refiner.py).
REFINER_BASES = _XL


def check_preset(preset: ModelPreset) -> ModelPreset:
    """Raise InvalidRequest for what no invocation could use: an unknown scheduler, a config key outside
    MODEL_DEFAULT_FIELDS, or a default generation reads that has the wrong type (e.g. a `width` of "wide").
    File names are not checked: Enfugue stores presets for files not downloaded yet."""
    if preset.scheduler is not None and preset.scheduler not in SCHEDULER_NAMES:
        raise InvalidRequest(f"Unknown scheduler {preset.scheduler}", field="scheduler")
    unknown = sorted(set(preset.config) - set(MODEL_DEFAULT_FIELDS))
    if unknown:
        raise InvalidRequest(f"Not a default configuration key: {', '.join(unknown)}", field="config")
    used = {field: preset.config[key] for key, field in CONFIG_FIELDS.items() if preset.config.get(key) is not None}
    try:
        GenerationRequest.model_validate(used)
    except ValidationError as exc:
        fields = {field: key for key, field in CONFIG_FIELDS.items()}
        problems = "; ".join(f"{fields.get(str(error['loc'][0]), error['loc'][0])}: {error['msg']}"
                             for error in exc.errors())  # fmt: skip
        raise InvalidRequest(f"Bad default configuration - {problems}", field="config") from None
    return preset


class PresetService:
    def __init__(self, store: PresetStore, registry: ModelRegistry | None = None) -> None:
        """Without a registry the listings are empty and every part's status is "not found"."""
        self._store = store
        self._registry = registry

    async def all(self) -> list[ModelPreset]:
        """Every preset, by name."""
        return await self._store.all()

    async def get(self, name: str) -> ModelPreset:
        """Raise NotFound."""
        return await self._store.get(name)

    async def query(self, query: RestQuery) -> tuple[list[ModelPreset], int]:
        """Enfugue's generic REST GET (domain/rest_query.py): the page and the count before limit and offset.
        InvalidRequest for an unknown column."""
        return await self._store.query(query)

    async def create(self, preset: ModelPreset) -> ModelPreset:
        """Raise InvalidRequest (see check_preset), or Conflict when the name is taken."""
        return await self._store.create(check_preset(preset))

    async def replace(self, name: str, preset: ModelPreset) -> ModelPreset:
        """Overwrite preset `name` (renaming it when `preset.name` differs); NotFound, Conflict, InvalidRequest."""
        return await self._store.replace(name, check_preset(preset))

    async def delete(self, name: str) -> None:
        """Raise NotFound."""
        await self._store.delete(name)

    async def status(self, name: str) -> dict[str, Any]:
        """Enfugue's `/api/models/{name}/status`: for the checkpoint, refiner and inpainter (None when the preset
        has none), whether this server can run it (`supported`: registered, of a base the engine runs), whether
        it is an XL model and whether it is `ready` (registered); TensorRT engines are never built here."""
        preset = await self._store.get(name)
        mains = await self._records(ModelType.MAIN)
        parts = {"model": preset.checkpoint, "refiner": preset.refiner, "inpainter": preset.inpainter}
        status: dict[str, Any] = {
            part: _part_status(mains, file, REFINER_BASES if part == "refiner" else RUNNABLE_BASES) if file else None
            for part, file in parts.items()
        }
        status["tensorrt"] = {
            engine: None if status[part] is None else {"supported": False, "xl": status[part]["xl"], "ready": False}
            for engine, part in (("base", "model"), ("inpainter", "inpainter"), ("refiner", "refiner"))
        }
        return status

    async def checkpoints(self) -> list[str]:
        """Every main model a request may name: single files by file name, folders by model name."""
        return sorted({_checkpoint_name(record) for record in await self._records(ModelType.MAIN)})

    async def model_options(self) -> list[dict[str, str]]:
        """Enfugue's model picker: single-file checkpoints, then presets."""
        files = sorted({file_name(record.path) for record in await self._records(ModelType.MAIN)
                        if record.format is ModelFormat.CHECKPOINT})  # fmt: skip
        presets = await self._store.all()
        return [{"type": "checkpoint", "name": name} for name in files] + [
            {"type": "model", "name": preset.name} for preset in presets
        ]

    async def loras(self) -> list[str]:
        """LoRA file names, except those in a `lycoris` folder."""
        return _file_names(record for record in await self._records(ModelType.LORA) if not _in_lycoris(record))

    async def lycoris(self) -> list[str]:
        """LoRA file names in a `lycoris` folder (LyCORIS, LoHa, LoKr files)."""
        return _file_names(record for record in await self._records(ModelType.LORA) if _in_lycoris(record))

    async def inversions(self) -> list[str]:
        """Textual-inversion embedding file names."""
        return _file_names(await self._records(ModelType.EMBEDDING))

    async def _records(self, type_: ModelType) -> list[ModelRecord]:
        return [] if self._registry is None else await self._registry.find(type=type_.value)


def _part_status(mains: Sequence[ModelRecord], reference: str, runnable: Collection[ModelFamily]) -> dict[str, Any]:
    found = best_matches(mains, reference, lambda record: (record.name, record.path))
    if not found:
        # Enfugue's own guess, from the name alone.
        return {"supported": False, "xl": "xl" in reference.lower(), "ready": False}
    record = found[0]
    return {"supported": record.base in runnable, "xl": record.base in _XL, "ready": True}


def _checkpoint_name(record: ModelRecord) -> str:
    return file_name(record.path) if record.format is ModelFormat.CHECKPOINT else record.name


def _in_lycoris(record: ModelRecord) -> bool:
    return LYCORIS_FOLDER in (part.lower() for part in PurePath(record.path).parent.parts)


def _file_names(records: Iterable[ModelRecord]) -> list[str]:
    return sorted({file_name(record.path) for record in records})
