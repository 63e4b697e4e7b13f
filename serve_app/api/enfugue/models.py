"""Enfugue's model routes: presets (`/api/models`), their status, and the model listings its UI picks from.

`GET /api/models[/{name}]` is one of Enfugue's generic REST handlers: `data` is always a list, `meta.count` the
total before `limit` (default 100; 0 or less: no limit) and `offset`, with `sort`, `filter`, `ilike` and
`include` as domain/rest_query.py describes (columns name, model, size, prompt, negative_prompt).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from serve_app.api.deps import AdminDep, PresetsDep
from serve_app.api.enfugue.routes import envelope, json_object
from serve_app.api.enfugue.schemas import INCLUDES, preset_from_body, preset_object
from serve_app.domain.errors import InvalidRequest, NotFound
from serve_app.domain.rest_query import RestQuery, parse_rest_query

router = APIRouter(prefix="/api", tags=["enfugue"])


def _query(request: Request) -> RestQuery:
    """The generic REST query of the request, its `include` names checked against the preset's relations."""
    query = parse_rest_query(request.query_params.multi_items())
    for name in query.includes:
        if name not in INCLUDES:
            raise InvalidRequest(f"Unknown or bad relationship {name}", field="include")
    return query


@router.get("/models", summary="Model presets (filter, ilike, sort, limit, offset, include)")
async def list_presets(request: Request, presets: PresetsDep) -> JSONResponse:
    query = _query(request)
    found, count = await presets.query(query)
    return envelope(request, [preset_object(preset, query.includes) for preset in found], count=count)


@router.get("/models/{name}", summary="One model preset (as a one-element list)")
async def get_preset(request: Request, name: str, presets: PresetsDep) -> JSONResponse:
    query = _query(request)
    found, count = await presets.query(query.where("name", name))
    if count == 0:
        raise NotFound(f"No DiffusionModel found with name={name}")
    return envelope(request, [preset_object(preset, query.includes) for preset in found], count=count)


@router.post("/models", summary="Create a model preset", dependencies=[AdminDep])
async def create_preset(request: Request, presets: PresetsDep) -> JSONResponse:
    preset = await presets.create(preset_from_body(await json_object(request)))
    return envelope(request, preset_object(preset))


@router.patch(
    "/models/{name}", summary="Change a model preset (its relations are replaced wholesale)", dependencies=[AdminDep]
)
async def update_preset(request: Request, name: str, presets: PresetsDep) -> JSONResponse:
    body = await json_object(request)
    current = await presets.get(name)
    preset = await presets.replace(name, preset_from_body(body, current))
    return envelope(request, preset_object(preset))


@router.delete(
    "/models/{name}",
    summary="Delete a model preset (empty body, as Enfugue)",
    response_class=Response,
    dependencies=[AdminDep],
)
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
# Enfugue's bundled Python client asks `/api/inversion` (enfugue-api.md §2); answering it too lets that client work.
@router.get("/inversion", include_in_schema=False)
async def inversions(request: Request, presets: PresetsDep) -> JSONResponse:
    return envelope(request, await presets.inversions())
