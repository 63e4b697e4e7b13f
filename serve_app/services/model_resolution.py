"""Which models an Enfugue request means (enfugue-api.md §5.1), looked up when it is submitted.

`model` names a preset (`model_type` "model") or a main model (`model_type` "checkpoint"); a preset brings its
checkpoint, size, VAE, LoRAs, LyCORIS, inversions, scheduler, default configuration and prompts. LoRAs, VAEs and
embeddings are then found by name, file name or stem. The registry is asked first; a model only found in the
models folder (the registry is filled from it at Ingress startup) resolves through the catalog, with the same
key the registry gives it. Everything is resolved before anything is stored: a bad name is a 4xx, never a
failed job.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, TypeVar

from pydantic import ValidationError

from serve_app.domain.errors import InvalidRequest, ModelNotFound, NotFound
from serve_app.domain.generation import ENFUGUE_TO_INVOKEAI_SCHEDULER, GenerationRequest, RegionNode
from serve_app.domain.models import ModelFamily, ModelRecord, ModelSpec, ModelType
from serve_app.domain.ports import ModelCatalog, ModelRegistry, PresetStore
from serve_app.domain.presets import ModelPreset, WeightedModel
from serve_app.services.enfugue_control import (
    ControlNetSettings,
    controlnet_repo,
    is_controlnet_for,
    missing_controlnet,
    used_controlnets,
)
from serve_app.services.enfugue_esrgan import resolve_upscalers
from serve_app.services.enfugue_refiner import PRESET_MODEL_FIELDS, REFINER_CONFIG_FIELDS, resolve_refiner_and_inpainter
from serve_app.services.generation_graphs import GraphExtras, GraphModel
from serve_app.services.preset_upscale import preset_upscale_passes

# Enfugue's short VAE names and the Hugging Face repos they stand for (diffusion/manager.py). This server
# downloads nothing at invoke time: the repo must have been installed (its source is the repo id).
VAE_REPOS = {
    "ema": "stabilityai/sd-vae-ft-ema",
    "mse": "stabilityai/sd-vae-ft-mse",
    "xl": "stabilityai/sdxl-vae",
    "xl16": "madebyollin/sdxl-vae-fp16-fix",
}
# Extensions stripped when a name is compared by its stem.
_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
# The bases the graph built from a request can generate with (an SDXL refiner is no base model).
RUNNABLE_BASES = frozenset({ModelFamily.SD1, ModelFamily.SD2, ModelFamily.SDXL})
# The latent spaces a VAE can decode: SD1 and SD2 share one, SDXL and its refiner another.
_LATENT_SPACE = {
    ModelFamily.SD1: "sd", ModelFamily.SD2: "sd", ModelFamily.SDXL: "sdxl", ModelFamily.SDXL_REFINER: "sdxl",
}  # fmt: skip

_T = TypeVar("_T")

# A model's default scheduler is stored under InvokeAI's name; the request carries Enfugue's. Where several Enfugue
# names map to one InvokeAI name, the first in Enfugue's table stands for it.
_ENFUGUE_SCHEDULER: dict[str, str] = {}
for _enfugue, _invokeai in ENFUGUE_TO_INVOKEAI_SCHEDULER.items():
    _ENFUGUE_SCHEDULER.setdefault(_invokeai, _enfugue)


def infer_model_type(name: str | None) -> str:
    """Enfugue's rule: "checkpoint" when the name contains a checkpoint extension, else "model" (a preset)."""
    lowered = (name or "").lower()
    return "checkpoint" if ".ckpt" in lowered or ".safetensors" in lowered else "model"


def file_name(path: str) -> str:
    """The last component of a model's path: the file name of a single file, the folder name of a folder."""
    return PurePath(path).name


def _stem(name: str) -> str:
    return name[: -len(suffix)] if (suffix := next((s for s in _SUFFIXES if name.endswith(s)), "")) else name


def best_matches(items: Iterable[_T], reference: str, names: Callable[[_T], tuple[str, str]]) -> list[_T]:
    """The items `reference` names most directly: by exact name, else by file name, else by stem (a name or
    file name without its checkpoint extension). `names(item)` gives an item's (name, path)."""
    levels: list[list[_T]] = [[], [], []]
    wanted = _stem(reference)
    for item in items:
        name, path = names(item)
        if name == reference:
            levels[0].append(item)
        elif file_name(path) == reference:
            levels[1].append(item)
        elif wanted in (_stem(name), _stem(file_name(path))):
            levels[2].append(item)
    return next((level for level in levels if level), [])


def _record_names(record: ModelRecord) -> tuple[str, str]:
    return record.name, record.path


def _spec_names(spec: ModelSpec) -> tuple[str, str]:
    return spec.name, spec.path


@dataclass(frozen=True)
class Resolution:
    """A request ready to build: `request` names its main model and has sizes, steps, guidance and prompts
    resolved (a preset's prompts appended, inversions written `<name>`); the models go into the graph."""

    request: GenerationRequest
    main: GraphModel
    loras: list[GraphModel]
    vae: GraphModel | None
    embeddings: list[GraphModel]
    extras: GraphExtras = dataclasses.field(default_factory=GraphExtras)


class ModelResolver:
    def __init__(
        self,
        *,
        catalog: ModelCatalog,
        registry: ModelRegistry | None = None,
        presets: PresetStore | None = None,
        settings: ControlNetSettings | None = None,
    ) -> None:
        """Without a registry, models come from the catalog only; without presets, every name is a model's;
        without `settings` (`/api/settings`), controlnet names map to Enfugue's default repos."""
        self._catalog = catalog
        self._registry = registry
        self._presets = presets
        self._settings = settings

    async def resolve(self, request: GenerationRequest) -> Resolution:
        """Raise ModelNotFound (404) for an unknown preset, InvalidRequest (400) for any other unknown or
        unusable model."""
        request, main = await self._main(request)
        main_settings = await self._default_settings(main)
        request = apply_model_defaults(request, main_settings)
        if main.spec.family not in RUNNABLE_BASES:
            raise InvalidRequest(f"{main.spec.name} is a {main.spec.family} model; this server generates with "
                                 f"{', '.join(sorted(RUNNABLE_BASES))} models", field="model")  # fmt: skip
        loras = await self._loras([(item, "lora") for item in request.lora] +
                                  [(item, "lycoris") for item in request.lycoris], main)  # fmt: skip
        vae = await self._vae(request.vae, main) if request.vae else await self._default_vae(main_settings, main)
        embeddings = [await self._embedding(name, main) for name in request.inversion]
        extras = await resolve_refiner_and_inpainter(GraphExtras(), request, main, find=self._find, vae=self._vae)
        extras = dataclasses.replace(extras, controlnets=await self._controlnets(request, main))
        # The spandrel model per `esrgan`/`esrganime` upscale pass (services/enfugue_esrgan.py).
        upscalers = await resolve_upscalers(request, registry=self._registry, catalog=self._catalog)
        extras = dataclasses.replace(extras, upscalers=upscalers)
        size = request.size or main.spec.native_size
        named = [(model.spec.name, name) for model, name in zip(embeddings, request.inversion, strict=True)]
        prompts = activate_embeddings(_with_model_prompts(request), named)
        resolved = request.model_copy(
            update={
                "model": main.spec.name,
                "model_type": "checkpoint",
                "width": size if request.width is None else request.width,
                "height": size if request.height is None else request.height,
                "model_prompt": None,
                "model_negative_prompt": None,
                "nodes": region_prompts(request, named),
                **prompts,
            }
        )
        return Resolution(request=resolved, main=main, loras=loras, vae=vae, embeddings=embeddings, extras=extras)

    async def _controlnets(self, request: GenerationRequest, main: GraphModel) -> dict[str, GraphModel]:
        """The installed ControlNet per controlnet name the request uses (services/enfugue_control.py): the
        registry's, else the catalog's, of the main model's base; 400 naming the repo to install when none is."""
        names = used_controlnets(request)
        if not names:
            return {}
        settings = await self._settings.get() if self._settings is not None else None
        records = await self._registry.find(type=ModelType.CONTROLNET.value) if self._registry is not None else []
        installed = [(GraphModel(record.spec(), record.hash), record.source) for record in records]
        folder = [spec for spec in self._catalog.list() if spec.type is ModelType.CONTROLNET]
        installed += [(GraphModel(spec), spec.path) for spec in folder]
        found: dict[str, GraphModel] = {}
        for name in names:
            repo = controlnet_repo(name, main.spec.family, settings)
            matches = [model for model, source in installed
                       if is_controlnet_for(model, source, name, repo, main.spec.family)]  # fmt: skip
            if not matches:
                raise missing_controlnet(name, repo)
            found[name] = self._prefer(matches, main)
        return found

    async def _main(self, request: GenerationRequest) -> tuple[GenerationRequest, GraphModel]:
        """The request (with its preset applied, if it names one) and its main model."""
        name = request.model
        if name is None:
            return request, await self._default()
        if (request.model_type or infer_model_type(name)) == "checkpoint":
            return request, await self._checkpoint(name)
        preset = await self._preset(name)
        if preset is None:
            # Not Enfugue: a main model's own name also works without `model_type` (diffusers folders such as
            # demo-sd15 have no extension to infer "checkpoint" from).
            found = await self._find(ModelType.MAIN, name)
            if found is None:
                raise ModelNotFound(name)
            return request, found
        applied = apply_preset(request, preset)
        try:
            return applied, await self._checkpoint(preset.checkpoint)
        except InvalidRequest as exc:
            raise InvalidRequest(f"{exc.message} (the checkpoint of model {preset.name})", field="model") from None

    async def _preset(self, name: str) -> ModelPreset | None:
        if self._presets is None:
            return None
        try:
            return await self._presets.get(name)
        except NotFound:
            return None

    async def _default(self) -> GraphModel:
        try:
            spec = self._catalog.resolve(None)
        except ModelNotFound as exc:
            # The default may be a model installed through an API rather than one in the models folder.
            found = await self._find(ModelType.MAIN, exc.name)
            if found is None:
                raise
            return found
        records = await self._registry.get_many([spec.key]) if self._registry is not None else {}
        record = records.get(spec.key)
        return GraphModel(record.spec(), record.hash) if record is not None else GraphModel(spec)

    async def _checkpoint(self, name: str) -> GraphModel:
        found = await self._find(ModelType.MAIN, name)
        if found is None:
            raise InvalidRequest(f"Cannot find or access {name}", field="model")
        return found

    async def _loras(self, items: Sequence[tuple[WeightedModel, str]], main: GraphModel) -> list[GraphModel]:
        """LoRAs of `lora` and `lycoris` alike (one patcher applies LoRA, LoHa and LoKr), each (item, field)."""
        loras: list[GraphModel] = []
        for item, field in items:
            lora = await self._dependent(ModelType.LORA, item.model, main, field=field)
            if any(seen.spec.key == lora.spec.key for seen in loras):
                raise InvalidRequest(f"LoRA {item.model} is listed more than once", field=field)
            weight = item.weight
            if "weight" not in item.model_fields_set:
                # A LoRA named without a weight takes its own default weight (InvokeAI's LoRA default settings).
                weight = (await self._default_settings(lora) or {}).get("weight", weight)
            loras.append(GraphModel(lora.spec, lora.hash, weight=weight))
        return loras

    async def _default_settings(self, model: GraphModel) -> dict[str, Any] | None:
        """The registry's default settings of a model (None for models only in the folder, or without any)."""
        if self._registry is None:
            return None
        record = (await self._registry.get_many([model.spec.key])).get(model.spec.key)
        return None if record is None else record.default_settings

    async def _default_vae(self, settings: dict[str, Any] | None, main: GraphModel) -> GraphModel | None:
        """The VAE a main model's default settings name by key, if any; a VAE that is gone or does not suit
        the model is a clear 400 rather than a silent fallback to the model's own."""
        key = (settings or {}).get("vae")
        if not key or self._registry is None:
            return None
        record = (await self._registry.get_many([key])).get(key)
        if record is None or record.type is not ModelType.VAE:
            raise InvalidRequest(f"The default VAE {key} of model {main.spec.name} is not installed", field="vae")
        return _usable(GraphModel(record.spec(), record.hash), main, ModelType.VAE, record.name)

    async def _vae(self, name: str, main: GraphModel) -> GraphModel:
        repo = VAE_REPOS.get(name, name)
        if self._registry is not None:
            # An installed Hugging Face VAE answers to its repo id (its source, maybe with `:variant`).
            records = await self._registry.find(type=ModelType.VAE.value)
            by_source = [GraphModel(record.spec(), record.hash) for record in records
                         if record.source.split(":", 1)[0] == repo]  # fmt: skip
            if by_source:
                return _usable(self._prefer(by_source, main), main, ModelType.VAE, name)
        if name in VAE_REPOS:
            raise InvalidRequest(
                f"Cannot find or access VAE {name} ({repo}): install {repo} first (POST /api/v2/models/install)",
                field="vae",
            )
        return await self._dependent(ModelType.VAE, name, main, field="vae")

    async def _embedding(self, name: str, main: GraphModel) -> GraphModel:
        embedding = await self._dependent(ModelType.EMBEDDING, name, main, field="inversion")
        if re.search(r"[\s<>]", embedding.spec.name):
            # A prompt activates an embedding by `<name>`, which cannot hold whitespace or angle brackets.
            raise InvalidRequest(f"Embedding {embedding.spec.name!r} needs a name without spaces", field="inversion")
        return embedding

    async def _dependent(self, type_: ModelType, name: str, main: GraphModel, *, field: str) -> GraphModel:
        found = await self._find(type_, name, main)
        if found is None:
            raise InvalidRequest(f"Cannot find or access {name}", field=field)
        return _usable(found, main, type_, name)

    async def _find(self, type_: ModelType, reference: str, main: GraphModel | None = None) -> GraphModel | None:
        """The registry's model of this type that `reference` names (a name, file name, stem or registered
        path), else the catalog's; among several, one whose base suits `main`."""
        if self._registry is not None:
            if PurePath(reference).is_absolute():
                record = await self._registry.by_path(reference)
                return GraphModel(record.spec(), record.hash) if record is not None and record.type is type_ else None
            records = best_matches(await self._registry.find(type=type_.value), reference, _record_names)
            if records:
                return self._prefer([GraphModel(record.spec(), record.hash) for record in records], main)
        if PurePath(reference).is_absolute():
            return None
        if type_ is ModelType.MAIN:
            try:
                return GraphModel(self._catalog.resolve(reference))
            except ModelNotFound:
                return None
        specs = [spec for spec in self._catalog.list() if spec.type is type_]
        matches = best_matches(specs, reference, _spec_names)
        return self._prefer([GraphModel(spec) for spec in matches], main) if matches else None

    @staticmethod
    def _prefer(candidates: Sequence[GraphModel], main: GraphModel | None) -> GraphModel:
        """The first (by base, then key) of those that suit `main`, else of all: a deterministic choice."""
        ordered = sorted(candidates, key=lambda model: (model.spec.family.value, model.spec.key))
        suitable = [model for model in ordered if main is None or _suits(model.spec, main.spec)]
        return (suitable or ordered)[0]


def _suits(spec: ModelSpec, main: ModelSpec) -> bool:
    if spec.family is ModelFamily.ANY:
        return True
    if spec.type is ModelType.VAE:
        space = _LATENT_SPACE.get(spec.family)
        return space is not None and space == _LATENT_SPACE.get(main.family)
    return spec.family is main.family


def _usable(model: GraphModel, main: GraphModel, type_: ModelType, reference: str) -> GraphModel:
    if not _suits(model.spec, main.spec):
        raise InvalidRequest(
            f"{_LABELS[type_]} {reference} is a {model.spec.family} model and cannot be used with "
            f"{main.spec.name}, a {main.spec.family} model",
            field=_FIELDS[type_],
        )
    return model


_LABELS = {ModelType.LORA: "LoRA", ModelType.VAE: "VAE", ModelType.EMBEDDING: "Inversion"}
_FIELDS = {ModelType.LORA: "lora", ModelType.VAE: "vae", ModelType.EMBEDDING: "inversion"}

# Request keys whose preset value holds whatever the request says (Enfugue pops them).
PRESET_HOLDS = ("lora", "lycoris", "inversion", "vae", "size", *PRESET_MODEL_FIELDS)
# A preset's default configuration keys that generation uses, as GenerationRequest fields; the other
# MODEL_DEFAULT_FIELDS (refiner and upscale settings) are kept but have nothing to act on yet.
CONFIG_FIELDS = {
    "width": "width", "height": "height", "num_inference_steps": "steps", "guidance_scale": "guidance_scale",
    "prompt_2": "prompt_2", "negative_prompt_2": "negative_prompt_2", "chunking_size": "chunking_size",
    "chunking_blur": "chunking_blur", **REFINER_CONFIG_FIELDS,
}  # fmt: skip

_ALWAYS_SET = frozenset({"steps", "guidance_scale", *REFINER_CONFIG_FIELDS.values()})


def apply_model_defaults(request: GenerationRequest, settings: Mapping[str, Any] | None) -> GenerationRequest:
    """A main model's default settings (InvokeAI's `MainModelDefaultSettings`: steps, cfg_scale, scheduler,
    width, height) for what neither the request nor its preset set. The request wins, then the preset."""
    if not settings:
        return request
    update: dict[str, Any] = {}
    unset = request.model_fields_set
    if settings.get("steps") and "steps" not in unset:
        update["steps"] = settings["steps"]
    if settings.get("cfg_scale") and "guidance_scale" not in unset:
        update["guidance_scale"] = settings["cfg_scale"]
    scheduler = _ENFUGUE_SCHEDULER.get(settings.get("scheduler") or "")
    if scheduler and request.scheduler is None:
        update["scheduler"] = scheduler
    if request.size is None:
        for field in ("width", "height"):
            if settings.get(field) and getattr(request, field) is None:
                update[field] = settings[field]
    return request.model_copy(update=update) if update else request


def apply_preset(request: GenerationRequest, preset: ModelPreset) -> GenerationRequest:
    """The request with a preset's values: its LoRAs, LyCORIS, inversions, VAE and size replace the request's;
    its scheduler, default configuration (its upscale when the request has none) and prompts fill in what the
    request leaves unset."""
    values: dict[str, Any] = request.model_dump()
    values.update(
        model=preset.checkpoint,
        model_type="checkpoint",
        lora=[item.model_dump() for item in preset.lora],
        lycoris=[item.model_dump() for item in preset.lycoris],
        inversion=list(preset.inversion),
        vae=preset.vae,
        size=preset.size,
        **{field: getattr(preset, field) for field in PRESET_MODEL_FIELDS},
    )
    defaults: dict[str, Any] = {field: preset.config[key] for key, field in CONFIG_FIELDS.items()
                                if preset.config.get(key) is not None}  # fmt: skip
    defaults.update(scheduler=preset.scheduler, model_prompt=preset.prompt or None,
                    model_negative_prompt=preset.negative_prompt or None)  # fmt: skip
    for field, value in defaults.items():
        # Steps and guidance always have a value: whether the request gave it is in `model_fields_set`.
        unset = field not in request.model_fields_set if field in _ALWAYS_SET else values.get(field) is None
        if unset:
            values[field] = value
    if not request.upscale:  # the request's own upscale wins, whole
        values["upscale"] = [step.model_dump() for step in preset_upscale_passes(preset.name, preset.config)]
    try:
        return GenerationRequest.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, error['loc']))}: {error['msg']}" for error in exc.errors())
        raise InvalidRequest(f"Model {preset.name} has unusable defaults: {problems}", field="model") from None


def _with_model_prompts(request: GenerationRequest) -> dict[str, str]:
    """The prompts with the model prompts appended. Enfugue merges them at token weight 0.2; this server's
    prompt encoder reads no weights, so they are plain text."""
    return {
        "prompt": _join(request.prompt, request.model_prompt),
        "negative_prompt": _join(request.negative_prompt, request.model_negative_prompt),
    }


def _join(text: str, extra: str | None) -> str:
    return ", ".join(part for part in (text.strip(), (extra or "").strip()) if part)


def activate_embeddings(
    prompts: dict[str, str], embeddings: Sequence[tuple[str, str]], *, append: bool = True
) -> dict[str, str]:
    """Write each embedding (registry name, the name the request used) as `<name>` in the prompts, where the
    prompt encoder activates it (InvokeAI's syntax). A prompt that names it as a word (its name, the request's
    reference or its stem, any case) gets that word replaced; an embedding no prompt names is appended to the
    positive prompt, since the request asked for it (to use one as a negative embedding, name it in the
    negative prompt)."""
    result = dict(prompts)
    for name, reference in embeddings:
        token = f"<{name}>"
        words = sorted({name, reference, _stem(reference), _stem(file_name(reference))} - {""}, key=len, reverse=True)
        pattern = re.compile(r"(?<![\w<])(?:" + "|".join(map(re.escape, words)) + r")(?![\w>])", re.IGNORECASE)
        for key, text in result.items():
            if token not in text:
                result[key] = pattern.sub(token.replace("\\", "\\\\"), text)  # a literal replacement
        if append and not any(token in text for text in result.values()):
            result["prompt"] = _join(result["prompt"], token)
    return result


def region_prompts(request: GenerationRequest, embeddings: Sequence[tuple[str, str]]) -> list[RegionNode]:
    """The canvas regions with their prompts resolved like the request's: a region without an image gets the
    model prompts (one with an image is joined with the global prompt, which has them already), and every
    region's words naming an embedding become `<name>` (the global prompt carries the embeddings no one names)."""
    regions = []
    for region in request.nodes:
        model = region.image is None
        prompts = {
            "prompt": _join(region.prompt, request.model_prompt if model else None),
            "negative_prompt": _join(region.negative_prompt, request.model_negative_prompt if model else None),
        }
        regions.append(region.model_copy(update=activate_embeddings(prompts, embeddings, append=False)))
    return regions
