"""Enfugue wire models and their translation to and from the domain."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError

from serve_app.domain.errors import InvalidRequest
from serve_app.domain.generation import GenerationRequest
from serve_app.domain.jobs import Job, JobStatus
from serve_app.domain.presets import ModelPreset, WeightedModel
from serve_app.services.enfugue_control import ControlImage
from serve_app.services.enfugue_images import ImageInputs
from serve_app.services.enfugue_upscale import UpscaleKeys
from serve_app.services.presets import MODEL_DEFAULT_FIELDS

# Parameters Enfugue accepts that this server does not run yet. Ignoring them silently would
# return a plain txt2img image for an img2img request, so they are refused with 501 instead.
UNSUPPORTED_KEYS = (
    "fill_background",
)  # fmt: skip

Anchor = Literal[
    "top-left", "top-center", "top-right", "center-left", "center-center", "center-right",
    "bottom-left", "bottom-center", "bottom-right",
]  # fmt: skip

CANCELED_MESSAGE = "The invocation was canceled."


class InvokeBody(UpscaleKeys):
    """`POST /api/invoke`. Unknown keys are ignored, as Enfugue does; types are checked (Enfugue did not). The
    upscale keys are UpscaleKeys' (shared with a preset's default configuration)."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    model_type: Literal["checkpoint", "model"] | None = None
    prompt: str | None = None
    prompt_2: str | None = None
    negative_prompt: str | None = None
    negative_prompt_2: str | None = None
    size: int | None = Field(default=None, gt=0)
    width: int | None = None
    height: int | None = None
    seed: int | None = None
    samples: int = Field(default=1, ge=1)
    iterations: int = Field(default=1, ge=1)
    # None: the model preset's default configuration, else Enfugue's defaults (40 and 7.5).
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    # Sliding-window diffusion (services/enfugue_chunking.py); None: the preset's, else size // 8.
    chunking_size: int | None = Field(default=None, ge=0)
    chunking_blur: int | None = Field(default=None, ge=0)
    scheduler: str | None = None
    # str | {model, weight} | a list of either (inversion: str | {model} | a list); checked in to_domain.
    lora: Any = None
    lycoris: Any = None
    inversion: Any = None
    vae: str | None = None
    model_prompt: str | None = None
    model_negative_prompt: str | None = None
    intermediates: bool | None = None
    state: Any = None
    # Single-step image to image and inpaint (enfugue-api.md §5.2): data URLs, checked and stored at submit.
    image: str | None = None
    mask: str | None = None
    strength: float | None = Field(default=None, ge=0, le=1)
    invert_mask: bool = False
    fit: Literal["actual", "stretch", "cover", "contain"] | None = None
    anchor: Anchor | None = None
    remove_background: bool = False
    # Enfugue's inpaint/img2img options with Enfugue's defaults (services/enfugue_inpaint_options.py).
    crop_inpaint: bool = True
    inpaint_feather: int = Field(default=32, ge=0)
    scale_to_model_size: bool = True
    # Single-step ControlNet (services/enfugue_control.py): `controlnet` is checked there, with Enfugue's names.
    control_image: str | None = None
    controlnet: Any = None
    conditioning_scale: float = 1.0
    process_control_image: bool = True
    invert_control_image: bool = False
    # Canvas regions (enfugue-api.md §5.3): checked, and their images stored, by services.enfugue_region_inputs.
    nodes: list[dict[str, Any]] | None = None
    # SDXL refiner and inpainting model (services/enfugue_refiner.py); the numbers unset: the preset's, else
    # Enfugue's defaults.
    refiner: str | None = None
    refiner_size: int | None = Field(default=None, gt=0)
    refiner_vae: str | None = None
    refiner_strength: float | None = Field(default=None, ge=0, le=1)
    refiner_guidance_scale: float | None = Field(default=None, ge=0)
    refiner_aesthetic_score: float | None = None
    refiner_negative_aesthetic_score: float | None = None
    refiner_prompt: str | None = None
    refiner_prompt_2: str | None = None
    refiner_negative_prompt: str | None = None
    refiner_negative_prompt_2: str | None = None
    inpainter: str | None = None
    inpainter_size: int | None = Field(default=None, gt=0)
    inpainter_vae: str | None = None

    def image_inputs(self) -> ImageInputs:
        """The inline images and how to fit them (decoded by services.enfugue_images)."""
        return ImageInputs(image=self.image or None, mask=self.mask or None, fit=self.fit, anchor=self.anchor,
                           invert_mask=self.invert_mask, nodes=self.nodes, control=self.control_settings())  # fmt: skip

    def control_settings(self) -> ControlImage | None:
        """The ControlNet keys, when a control image is given (Enfugue ignores them otherwise)."""
        if not self.control_image:
            return None
        return ControlImage(image=self.control_image, controlnet=self.controlnet,
                            conditioning_scale=self.conditioning_scale, process=self.process_control_image,
                            invert=self.invert_control_image)  # fmt: skip

    def to_domain(self) -> GenerationRequest:
        """The domain request; InvalidRequest (with Enfugue's messages) for a badly shaped model list, an upscale
        method this server cannot run, or background removal (no model for it)."""
        if self.remove_background:
            raise InvalidRequest("No background-removal model is installed", field="remove_background")
        values: dict[str, Any] = {
            "model": self.model,
            "model_type": self.model_type,
            "prompt": self.prompt or "",
            "negative_prompt": self.negative_prompt or "",
            "prompt_2": self.prompt_2,
            "negative_prompt_2": self.negative_prompt_2,
            "model_prompt": self.model_prompt or None,
            "model_negative_prompt": self.model_negative_prompt or None,
            "size": self.size,
            "width": self.width,
            "height": self.height,
            "chunking_size": self.chunking_size,
            "chunking_blur": self.chunking_blur,
            "num_images": self.samples * self.iterations,
            "scheduler": self.scheduler or None,
            "lora": weighted_models("lora", self.lora),
            "lycoris": weighted_models("lycoris", self.lycoris),
            "inversion": model_names("inversion", self.inversion),
            "vae": self.vae or None,
            "strength": self.strength,
            "crop_inpaint": self.crop_inpaint,
            "inpaint_feather": self.inpaint_feather,
            "scale_to_model_size": self.scale_to_model_size,
            "state": self.state,
            "intermediates": self.intermediates,
            "upscale": self.upscale_settings().passes(),
            **self._refiner_and_inpainter(),
        }
        # Left out unless given, so that a preset's defaults apply (see GenerationRequest.steps).
        for field, value in (("seed", self.seed), ("steps", self.num_inference_steps),
                             ("guidance_scale", self.guidance_scale)):  # fmt: skip
            if value is not None:
                values[field] = value
        return GenerationRequest(**values)

    def _refiner_and_inpainter(self) -> dict[str, Any]:
        """The refiner and inpainter keys given (blank strings mean none, as Enfugue's UI sends them)."""
        names = ("refiner", "refiner_vae", "refiner_prompt", "refiner_prompt_2", "refiner_negative_prompt",
                 "refiner_negative_prompt_2", "inpainter", "inpainter_vae")  # fmt: skip
        values: dict[str, Any] = {name: getattr(self, name) or None for name in names}
        values.update(refiner_size=self.refiner_size, inpainter_size=self.inpainter_size)
        # Left out unless given, so that a preset's default configuration applies.
        for name in ("refiner_strength", "refiner_guidance_scale", "refiner_aesthetic_score",
                     "refiner_negative_aesthetic_score"):  # fmt: skip
            if getattr(self, name) is not None:
                values[name] = getattr(self, name)
        return values


def _model_entries(kind: str, value: Any, shape: str) -> list[tuple[str, Any]]:
    """(model, weight or None) per entry of Enfugue's `str | {model, ...} | [either, ...]` (None/""/[]: none)."""
    bad = InvalidRequest(f"Bad format for {kind} - must be {shape}", field=kind)
    if value is None or value == "":
        return []
    entries: list[tuple[str, Any]] = []
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, str) and item.strip():
            entries.append((item.strip(), None))
        elif isinstance(item, dict):
            model = item.get("model")
            if model is None or model == "":
                raise InvalidRequest("Bad model format - missing required dictionary key `model`", field=kind)
            if not isinstance(model, str) or not model.strip():
                raise bad
            entries.append((model.strip(), item.get("weight")))
        else:
            raise bad
    return entries


def weighted_models(kind: str, value: Any) -> list[WeightedModel]:
    """`lora` / `lycoris`: a file name (weight 1), a `{model, weight=1.0}` dict, or a list of either."""
    shape = "a string, a dictionary with the key `model` and optionally `weight`, or a list of either"
    models = []
    for model, weight in _model_entries(kind, value, shape):
        models.append(WeightedModel(model=model, weight=1.0 if weight is None else _weight(kind, weight)))
    return models


def model_names(kind: str, value: Any) -> list[str]:
    """`inversion`: a file name, a `{model}` dict, or a list of either."""
    shape = "a string, a dictionary with the key `model`, or a list of either"
    return [model for model, _ in _model_entries(kind, value, shape)]


def _weight(kind: str, value: Any) -> float:
    try:
        # Enfugue's deserializer turns numeric strings into numbers, so "0.5" is a weight there too.
        weight = float(value) if isinstance(value, (int, float, str)) and not isinstance(value, bool) else math.nan
    except ValueError:
        weight = math.nan
    if not math.isfinite(weight):
        raise InvalidRequest(f"Bad format for {kind} - `weight` must be a number, got {value!r}", field=kind)
    return weight


def describe_errors(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors())


# `/api/models` (enfugue-api.md §8, §10.1). A preset's relations are rows of their own in Enfugue; each
# `?include=` name renders as a list of them, shaped as its ORM class: (class, attributes per row).
def _one(cls: str, **attributes: Any) -> list[dict[str, Any]]:
    return [{"type": cls, "attributes": attributes}]


def _sized(cls: str, preset: ModelPreset, model: str | None, size: int | None) -> list[dict[str, Any]]:
    return [] if model is None else _one(cls, diffusion_model_name=preset.name, model=model, size=size)


def _named(cls: str, preset: ModelPreset, name: str | None) -> list[dict[str, Any]]:
    return [] if name is None else _one(cls, diffusion_model_name=preset.name, name=name)


def _weighted(cls: str, preset: ModelPreset, items: Sequence[WeightedModel]) -> list[dict[str, Any]]:
    return [{"type": cls, "attributes": {"diffusion_model_name": preset.name, "model": item.model,
             "weight": item.weight}} for item in items]  # fmt: skip


INCLUDES: dict[str, Callable[[ModelPreset], list[dict[str, Any]]]] = {
    "refiner": lambda p: _sized("DiffusionModelRefiner", p, p.refiner, p.refiner_size),
    "inpainter": lambda p: _sized("DiffusionModelInpainter", p, p.inpainter, p.inpainter_size),
    "scheduler": lambda p: [] if p.scheduler is None else _one(
        "DiffusionModelScheduler", context="", diffusion_model_name=p.name, name=p.scheduler),
    "vae": lambda p: _named("DiffusionModelVAE", p, p.vae),
    "refiner_vae": lambda p: _named("DiffusionModelRefinerVAE", p, p.refiner_vae),
    "inpainter_vae": lambda p: _named("DiffusionModelInpainterVAE", p, p.inpainter_vae),
    "lora": lambda p: _weighted("DiffusionModelLora", p, p.lora),
    "lycoris": lambda p: _weighted("DiffusionModelLycoris", p, p.lycoris),
    "inversion": lambda p: [{"type": "DiffusionModelInversion",
                             "attributes": {"diffusion_model_name": p.name, "model": model}} for model in p.inversion],
    "config": lambda p: [{"type": "DiffusionModelDefaultConfiguration",
                          "attributes": {"configuration_key": key, "configuration_value": value,
                                         "diffusion_model_name": p.name}} for key, value in sorted(p.config.items())],
}  # fmt: skip


def preset_object(preset: ModelPreset, include: Sequence[str] = ()) -> dict[str, Any]:
    """A preset as Enfugue's `DiffusionModel` ORM object, with the relations named in `include` (known names)."""
    attributes = {"model": preset.checkpoint, "name": preset.name, "negative_prompt": preset.negative_prompt,
                  "prompt": preset.prompt, "size": preset.size}  # fmt: skip
    result: dict[str, Any] = {"type": "DiffusionModel", "attributes": attributes}
    if include:
        result["include"] = {name: INCLUDES[name](preset) for name in include}
    return result


def _blank(value: Any) -> Any:
    # Enfugue's UI sends "" for a field left empty.
    return None if value == "" else value


def preset_from_body(body: dict[str, Any], current: ModelPreset | None = None) -> ModelPreset:
    """`POST /api/models` (current None: name and checkpoint required) or `PATCH /api/models/{name}` (name,
    checkpoint, size and prompts default to the current values; every relation is replaced by the body's,
    absent meaning none, as Enfugue deletes and rewrites them)."""
    values: dict[str, Any] = {}
    for key, column in (("name", "name"), ("checkpoint", "checkpoint"), ("size", "size"), ("prompt", "prompt"),
                        ("negative_prompt", "negative_prompt")):  # fmt: skip
        value = _blank(body.get(key))
        if value is None and current is not None:
            value = getattr(current, column)
        if value is None and key in ("name", "checkpoint"):
            raise InvalidRequest(f"Missing required parameter '{key}'", field=key)
        if value is not None:
            values[column] = value
    for key in ("refiner", "refiner_size", "inpainter", "inpainter_size", "scheduler", "vae", "refiner_vae",
                "inpainter_vae"):  # fmt: skip
        values[key] = _blank(body.get(key))
    values["lora"] = weighted_models("lora", body.get("lora"))
    values["lycoris"] = weighted_models("lycoris", body.get("lycoris"))
    values["inversion"] = model_names("inversion", body.get("inversion"))
    values["config"] = {key: body[key] for key in MODEL_DEFAULT_FIELDS if _blank(body.get(key)) is not None}
    try:
        return ModelPreset.model_validate(values)
    except ValidationError as exc:
        raise InvalidRequest(describe_errors(exc)) from None


def image_entries(job: Job) -> list[str]:
    """Enfugue's `images` entries: parent directory plus file name, fetched as /api/invocation/{entry}."""
    return [f"images/{name}" for name in job.image_names]


def invocation_status(job: Job, *, now: datetime | None = None, intermediates: Sequence[str] = ()) -> dict[str, Any]:
    """The status object of enfugue-api.md §7.1, with exactly its fields per state. While processing, `images`
    lists the `intermediates` entries (previews) if there are any, as Enfugue's does (§7.2)."""
    uid = job.id.hex
    if job.status is JobStatus.PENDING:
        return {"status": "queued", "uuid": uid}
    if job.status is JobStatus.FAILED:
        return {"status": "error", "uuid": uid, "message": job.error.message if job.error else "Failed."}
    if job.status is JobStatus.CANCELED:
        return {"status": "error", "uuid": uid, "message": CANCELED_MESSAGE}
    completed = job.status is JobStatus.COMPLETED
    started = job.started_at or job.created_at
    end = job.completed_at if completed and job.completed_at else (now or datetime.now(UTC))
    duration = max((end - started).total_seconds(), 0.0)
    step, total = job.progress_step, job.progress_total
    if completed and total is not None:
        step = total
    return {
        "id": job.item_id,
        "uuid": uid,
        "status": "completed" if completed else "processing",
        "progress": (step / total) if step is not None and total else None,
        "step": step,
        "total": total,
        "duration": duration,
        "images": image_entries(job) if completed else (list(intermediates) or None),
        "rate": (step / duration) if step and duration > 0 else None,
        "task": None,
    }
