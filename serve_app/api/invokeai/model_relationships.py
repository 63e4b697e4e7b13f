"""InvokeAI model relationships (`/api/v1/model_relationships`): undirected links between models (a LoRA and the
main models it suits), which the UI shows as "related models"."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Response
from pydantic import BaseModel, Field

from serve_app.api.deps import AdminDep, ModelsDep
from serve_app.api.errors import HttpError
from serve_app.domain.errors import ModelNotFound

router = APIRouter(prefix="/api/v1/model_relationships", tags=["model_relationships"])

MODEL_NOT_FOUND = "model not found"


class ModelRelationshipCreateRequest(BaseModel):
    model_key_1: str = Field(description="The key of the first model in the relationship")
    model_key_2: str = Field(description="The key of the second model in the relationship")


class ModelRelationshipBatchRequest(BaseModel):
    model_keys: list[str] = Field(description="List of model keys to fetch related models for")


@router.get("/i/{model_key}", operation_id="get_related_models", response_model=list[str])
async def get_related_models(models: ModelsDep, model_key: str) -> list[str]:
    """The keys of the models related to this one."""
    try:
        return await models.related(model_key)
    except ModelNotFound:
        raise HttpError(404, MODEL_NOT_FOUND) from None


@router.post("/", status_code=204, dependencies=[AdminDep])
async def add_model_relationship(
    models: ModelsDep, req: Annotated[ModelRelationshipCreateRequest, Body(description="The model keys to relate")]
) -> Response:
    """Relate two models (400 for a model and itself, 404 for an unknown key, 409 when already related)."""
    try:
        await models.relate(req.model_key_1, req.model_key_2)
    except ModelNotFound:
        raise HttpError(404, MODEL_NOT_FOUND) from None
    return Response(status_code=204)


@router.delete("/", status_code=204, dependencies=[AdminDep])
async def remove_model_relationship(
    models: ModelsDep, req: Annotated[ModelRelationshipCreateRequest, Body(description="The model keys to disconnect")]
) -> Response:
    """Unrelate two models (400 for a model and itself, 404 when they are not related)."""
    await models.unrelate(req.model_key_1, req.model_key_2)
    return Response(status_code=204)


@router.post("/batch", operation_id="get_related_models_batch", response_model=list[str])
async def get_related_models_batch(
    models: ModelsDep,
    req: Annotated[ModelRelationshipBatchRequest, Body(description="Model keys to check for related connections")],
) -> list[str]:
    """Every key related to any of the given models."""
    return await models.related_to_any(req.model_keys)
