"""InvokeAI model manager (`/api/v2/models`): records, cover images, folder scans, conversion, starter models and
cache stats. Installs, Hugging Face lookups and `hf_login` live in api/invokeai/model_install.py on the same
prefix."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response, UploadFile
from pydantic import BaseModel, ConfigDict, Field

from serve_app.api.deps import AdminDep, ModelsDep
from serve_app.api.errors import HttpError
from serve_app.domain.errors import ModelNotFound, NotFound
from serve_app.domain.models import (
    ModelChanges,
    ModelFamily,
    ModelFormat,
    ModelType,
    ModelVariant,
    PredictionType,
    SourceType,
)
from serve_app.services.model_configs import (
    AnyDefaultSettings,
    AnyModelConfig,
    BaseModelType,
    InvokeModelFormat,
    InvokeModelType,
    ModelConfigBase,
    ModelsList,
    to_config,
)
from serve_app.services.starter_models import StarterModelResponse, starter_models

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v2/models", tags=["models"])

# InvokeAI's messages (recorded from 6.8.1).
MODEL_NOT_FOUND = "model not found"
NO_MODEL_WITH_ATTRS = "No model found with these attributes"
# InvokeAI serves cover images with a month of client caching (the URL changes when the image does).
_COVER_MAX_AGE_S = 30 * 24 * 3600


class ModelRecordChanges(BaseModel):
    """InvokeAI's `ModelRecordChanges` (PATCH body): every field optional; default settings checked by shape."""

    source: str | None = None
    source_type: SourceType | None = None
    source_api_response: str | None = None
    name: str | None = Field(default=None, min_length=1, max_length=255)
    path: str | None = None
    description: str | None = None
    base: ModelFamily | None = None
    type: ModelType | None = None
    key: str | None = None
    hash: str | None = None
    file_size: int | None = None
    format: ModelFormat | None = None
    trigger_phrases: list[str] | None = None
    default_settings: AnyDefaultSettings | None = None
    variant: ModelVariant | None = None
    prediction_type: PredictionType | None = None
    upcast_attention: bool | None = None
    config_path: str | None = None

    def to_domain(self) -> ModelChanges:
        return ModelChanges.model_validate(self.model_dump(exclude_unset=True))


class FoundModel(BaseModel):
    path: str = Field(description="Path to the model")
    is_installed: bool = Field(description="Whether or not the model is already installed")


class CacheStats(BaseModel):
    """InvokeAI's `CacheStats`, summed over every Diffusion replica."""

    model_config = ConfigDict(extra="ignore")

    hits: int = 0
    misses: int = 0
    high_watermark: int = 0
    in_cache: int = 0
    cleared: int = 0
    cache_size: int = 0
    loaded_model_sizes: dict[str, int] = Field(default_factory=dict)


@router.get("/", operation_id="list_model_records", response_model=ModelsList)
async def list_model_records(
    models: ModelsDep,
    base_models: Annotated[list[BaseModelType] | None, Query(description="Base models to include")] = None,
    model_type: Annotated[InvokeModelType | None, Query(description="The type of model to get")] = None,
    model_name: Annotated[str | None, Query(description="Exact match on the name of the model")] = None,
    model_format: Annotated[InvokeModelFormat | None, Query(description="Exact match on the format")] = None,
) -> ModelsList:
    """Every model matching the filters."""
    records = await models.find(
        bases=[base.value for base in base_models] if base_models else None,
        type=model_type.value if model_type is not None else None,
        name=model_name,
        format=model_format.value if model_format is not None else None,
    )
    configs: list[ModelConfigBase] = []
    for record in records:
        try:
            configs.append(to_config(record))
        except ValueError as error:  # a model type InvokeAI clients cannot be shown
            logger.debug("not listing %s: %s", record.name, error)
    return ModelsList.model_validate({"models": configs})


@router.get("/get_by_attrs", operation_id="get_model_records_by_attrs", response_model=AnyModelConfig)
async def get_model_records_by_attrs(
    models: ModelsDep,
    name: Annotated[str, Query(description="The name of the model")],
    type: Annotated[InvokeModelType, Query(description="The type of the model")],
    base: Annotated[BaseModelType, Query(description="The base model of the model")],
) -> ModelConfigBase:
    """The model with this name, type and base."""
    try:
        return to_config(await models.get_by_attrs(name, type.value, base.value))
    except ModelNotFound:
        raise HttpError(404, NO_MODEL_WITH_ATTRS) from None


@router.get("/i/{key}", operation_id="get_model_record", response_model=AnyModelConfig)
async def get_model_record(models: ModelsDep, key: str) -> ModelConfigBase:
    """One model by key."""
    try:
        return to_config(await models.get(key))
    except ModelNotFound:
        raise HttpError(404, MODEL_NOT_FOUND) from None


@router.patch("/i/{key}", operation_id="update_model_record", dependencies=[AdminDep], response_model=AnyModelConfig)
async def update_model_record(
    models: ModelsDep, key: str, changes: Annotated[ModelRecordChanges, Body(description="Model config")]
) -> ModelConfigBase:
    """Change a model's record; renaming one stored in the models folder renames its files (409 on a clash)."""
    try:
        return to_config(await models.update(key, changes.to_domain()))
    except ModelNotFound:
        raise HttpError(404, MODEL_NOT_FOUND) from None


@router.delete("/i/{key}", operation_id="delete_model", dependencies=[AdminDep], status_code=204)
async def delete_model(models: ModelsDep, key: str) -> Response:
    """Unregister a model; its files go too when they are inside the models folder."""
    try:
        await models.delete(key)
    except ModelNotFound:
        raise HttpError(404, MODEL_NOT_FOUND) from None
    return Response(status_code=204)


@router.get("/i/{key}/image", operation_id="get_model_image")
async def get_model_image(models: ModelsDep, key: str) -> Response:
    """The model's cover image (PNG)."""
    try:
        data = await models.cover_image(key)
    except NotFound:  # no such model, or no image: InvokeAI answers a bare 404 for both
        raise HttpError(404, "Not Found") from None
    headers = {"Cache-Control": f"max-age={_COVER_MAX_AGE_S}", "Content-Disposition": f'inline; filename="{key}.png"'}
    return Response(data, media_type="image/png", headers=headers)


@router.patch("/i/{key}/image", operation_id="update_model_image", dependencies=[AdminDep])
async def update_model_image(models: ModelsDep, key: str, image: UploadFile) -> None:
    """Set the model's cover image (415 when the upload is not an image)."""
    try:
        await models.set_cover_image(key, await image.read())
    except ModelNotFound:
        raise HttpError(404, MODEL_NOT_FOUND) from None


@router.delete("/i/{key}/image", operation_id="delete_model_image", dependencies=[AdminDep], status_code=204)
async def delete_model_image(models: ModelsDep, key: str) -> Response:
    """Remove the model's cover image."""
    try:
        await models.delete_cover_image(key)
    except ModelNotFound:
        raise HttpError(404, MODEL_NOT_FOUND) from None
    return Response(status_code=204)


@router.get("/scan_folder", operation_id="scan_for_models", dependencies=[AdminDep], response_model=list[FoundModel])
async def scan_for_models(
    models: ModelsDep,
    scan_path: Annotated[str | None, Query(description="Directory path to search for models")] = None,
) -> list[FoundModel]:
    """The models directly inside a folder (of the models folder or an import root), and which are installed."""
    if not scan_path:
        raise HttpError(400, f"The search path '{scan_path}' does not exist or is not directory")
    found = await models.scan_folder(scan_path)
    return [FoundModel(path=path, is_installed=installed) for path, installed in found]


@router.put("/convert/{key}", operation_id="convert_model", dependencies=[AdminDep], response_model=AnyModelConfig)
async def convert_model(models: ModelsDep, key: str) -> ModelConfigBase:
    """Convert a main checkpoint into a diffusers folder; the model gets a new key and hash."""
    try:
        return to_config(await models.convert(key))
    except ModelNotFound:
        raise HttpError(424, MODEL_NOT_FOUND) from None  # InvokeAI's status for an unknown key here


@router.get("/starter_models", operation_id="get_starter_models", response_model=StarterModelResponse)
async def get_starter_models(models: ModelsDep) -> StarterModelResponse:
    """Curated models to install, marked installed when a registered model came from their source."""
    return starter_models({record.source for record in await models.find()})


@router.get("/stats", operation_id="get_stats", response_model=CacheStats | None)
async def get_stats(models: ModelsDep) -> Any:
    """The model caches of every Diffusion replica, summed; null before any replica loaded a model."""
    stats = await models.stats()
    return None if stats is None else CacheStats.model_validate(stats)


@router.post("/empty_model_cache", operation_id="empty_model_cache", dependencies=[AdminDep])
async def empty_model_cache(models: ModelsDep) -> None:
    """Ask every Diffusion replica to drop the models it is not using."""
    await models.empty_cache()
