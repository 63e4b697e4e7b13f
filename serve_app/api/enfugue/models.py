"""Enfugue's model routes: presets (`/api/models`), their status, and the model listings its UI picks from.

`GET /api/models[/{name}]` is one of Enfugue's generic REST handlers: `data` is always a list, `meta.count` the
total before `limit` (default 100; 0 or less: no limit) and `offset`; its other filters (`sort`, `filter`,
`ilike`) come with issue 5.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from serve_app.api.deps import PresetsDep
from serve_app.api.enfugue.routes import envelope, json_object
from serve_app.api.enfugue.schemas import INCLUDES, preset_from_body, preset_object
from serve_app.domain.errors import InvalidRequest
from serve_app.domain.presets import ModelPreset

router = APIRouter(prefix="/api", tags=["enfugue"])

IncludeQuery = Annotated[list[str] | None, Query(description=f"Relations: {'|'.join(INCLUDES)}")]


def _includes(include: list[str] | None) -> list[str]:
    names = list(dict.fromkeys(include or ()))
    for name in names:
        if name not in INCLUDES:
            raise InvalidRequest(f"Unknown or bad relationship {name}", field="include")
    return names


def _page(presets: list[ModelPreset], limit: int, offset: int) -> list[ModelPreset]:
    if offset < 0:
        raise InvalidRequest("`offset` must not be negative", field="offset")
    return presets[offset : offset + limit] if limit > 0 else presets[offset:]


@router.get("/models", summary="Model presets")
async def list_presets(
    request: Request, presets: PresetsDep, include: IncludeQuery = None, limit: int = 100, offset: int = 0
) -> JSONResponse:
    names = _includes(include)
    found = await presets.all()
    data = [preset_object(preset, names) for preset in _page(found, limit, offset)]
    return envelope(request, data, count=len(found))


@router.get("/models/{name}", summary="One model preset (as a one-element list)")
async def get_preset(
    request: Request, name: str, presets: PresetsDep, include: IncludeQuery = None, limit: int = 100, offset: int = 0
) -> JSONResponse:
    names = _includes(include)
    found = [await presets.get(name)]
    return envelope(request, [preset_object(preset, names) for preset in _page(found, limit, offset)], count=1)


@router.post("/models", summary="Create a model preset")
async def create_preset(request: Request, presets: PresetsDep) -> JSONResponse:
    preset = await presets.create(preset_from_body(await json_object(request)))
    return envelope(request, preset_object(preset))


@router.patch("/models/{name}", summary="Change a model preset (its relations are replaced wholesale)")
async def update_preset(request: Request, name: str, presets: PresetsDep) -> JSONResponse:
    body = await json_object(request)
    current = await presets.get(name)
    preset = await presets.replace(name, preset_from_body(body, current))
    return envelope(request, preset_object(preset))


@router.delete("/models/{name}", summary="Delete a model preset (empty body, as Enfugue)", response_class=Response)
async def delete_preset(name: str, presets: PresetsDep) -> Response:
    await presets.delete(name)
    return Response(status_code=200)


@router.get("/models/{name}/status", summary="Whether a preset's models are ready")
async def preset_status(request: Request, name: str, presets: PresetsDep) -> JSONResponse:
    return envelope(request, await presets.status(name))


@router.get("/model-options", summary="Checkpoints and presets a request may name")
async def model_options(request: Request, presets: PresetsDep) -> JSONResponse:
    return envelope(request, await presets.model_options())


@router.get("/checkpoints", summary="Main models, by file name (single files) or name (folders)")
async def checkpoints(request: Request, presets: PresetsDep) -> JSONResponse:
    return envelope(request, await presets.checkpoints())


@router.get("/lora", summary="LoRA file names")
async def loras(request: Request, presets: PresetsDep) -> JSONResponse:
    return envelope(request, await presets.loras())


@router.get("/lycoris", summary="LyCORIS file names (LoRAs in a `lycoris` folder)")
async def lycoris(request: Request, presets: PresetsDep) -> JSONResponse:
    return envelope(request, await presets.lycoris())


@router.get("/inversions", summary="Textual-inversion file names")
async def inversions(request: Request, presets: PresetsDep) -> JSONResponse:
    return envelope(request, await presets.inversions())
