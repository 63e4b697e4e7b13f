"""Which installed spandrel model runs Enfugue's `esrgan` and `esrganime` upscale methods.

Enfugue downloads RealESRGAN_x4plus (and RealESRGAN_x4plus_anime_6B for `esrganime`); this server downloads nothing
at invoke time, so the method runs an installed `spandrel_image_to_image` model (registry first, then the models
folder): `esrganime` one whose name or file name says "anime", `esrgan` any other, a Real-ESRGAN ×4 by preference.
None installed is a 400 naming what to install, before anything is stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import PurePath

from serve_app.domain.errors import InvalidRequest
from serve_app.domain.generation import GenerationRequest
from serve_app.domain.models import ModelType
from serve_app.domain.ports import ModelCatalog, ModelRegistry
from serve_app.services.generation_graphs import GraphModel

# What to install for each method: the models Enfugue itself uses (the first is also a starter model).
SUGGESTED = {
    "esrgan": "RealESRGAN_x4plus (https://github.com/xinntao/Real-ESRGAN/releases/download/v0.1.0/RealESRGAN_x4plus.pth)",
    "esrganime": "RealESRGAN_x4plus_anime_6B (https://github.com/xinntao/Real-ESRGAN/releases/download/"
    "v0.2.2.4/RealESRGAN_x4plus_anime_6B.pth)",
}


def used_methods(request: GenerationRequest) -> list[str]:
    """The model-based methods the request's upscale passes use, each once, in order."""
    return list(dict.fromkeys(step.method for step in request.upscale if step.method in SUGGESTED))


def _label(model: GraphModel) -> str:
    return f"{model.spec.name} {PurePath(model.spec.path).name}".lower()


def is_anime(model: GraphModel) -> bool:
    return "anime" in _label(model)


def _preference(model: GraphModel) -> tuple[bool, bool, str, str]:
    """Real-ESRGAN first, then ×4 models (Enfugue's own are both), then by name and key: a deterministic choice."""
    label = _label(model)
    return "realesrgan" not in label, not ("x4" in label or "4x" in label), model.spec.name, model.spec.key


def choose(method: str, installed: Sequence[GraphModel]) -> GraphModel:
    """The model `method` runs among the installed spandrel models; InvalidRequest when none fits."""
    fitting = [model for model in installed if is_anime(model) == (method == "esrganime")]
    if not fitting:
        raise InvalidRequest(f"No upscaling model installed for {method}: install a spandrel image-to-image model "
                             f"such as {SUGGESTED[method]} (POST /api/v2/models/install)", field="upscale")  # fmt: skip
    return min(fitting, key=_preference)


async def resolve_upscalers(
    request: GenerationRequest, *, registry: ModelRegistry | None, catalog: ModelCatalog
) -> dict[str, GraphModel]:
    """The spandrel model per model-based upscale method the request uses (none: no lookup at all)."""
    methods = used_methods(request)
    if not methods:
        return {}
    installed = list(await _installed(registry, catalog))
    return {method: choose(method, installed) for method in methods}


async def _installed(registry: ModelRegistry | None, catalog: ModelCatalog) -> Iterable[GraphModel]:
    records = await registry.find(type=ModelType.SPANDREL.value) if registry is not None else []
    models = {record.key: GraphModel(record.spec(), record.hash) for record in records}
    for spec in catalog.list():
        if spec.type is ModelType.SPANDREL:
            models.setdefault(spec.key, GraphModel(spec))
    return models.values()
