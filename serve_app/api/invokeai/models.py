"""InvokeAI model manager, read side: `/api/v2/models/`, `/i/{key}`, `/get_by_attrs`."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Query

from serve_app.api.deps import ModelsDep
from serve_app.api.errors import HttpError
from serve_app.api.invokeai.model_configs import (
    AnyModelConfig,
    BaseModelType,
    InvokeModelFormat,
    InvokeModelType,
    ModelConfigBase,
    ModelsList,
    to_config,
)
from serve_app.domain.errors import ModelNotFound

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v2/models", tags=["models"])

# InvokeAI's messages (recorded from 6.8.1).
MODEL_NOT_FOUND = "model not found"
NO_MODEL_WITH_ATTRS = "No model found with these attributes"


@router.get("/", operation_id="list_model_records", response_model=ModelsList)
async def list_model_records(
    models: ModelsDep,
    base_models: Annotated[list[BaseModelType] | None, Query(description="Base models to include")] = None,
    model_type: Annotated[InvokeModelType | None, Query(description="The type of model to get")] = None,
    model_name: Annotated[str | None, Query(description="Exact match on the name of the model")] = None,
    model_format: Annotated[InvokeModelFormat | None, Query(description="Exact match on the format")] = None,
) -> ModelsList:
    """Every model matching the filters."""
    records = await models.list(
        base_models=[base.value for base in base_models] if base_models else None,
        model_type=model_type.value if model_type is not None else None,
        model_name=model_name,
        model_format=model_format.value if model_format is not None else None,
    )
    configs: list[ModelConfigBase] = []
    for record in records:
        try:
            configs.append(to_config(record))
        except ValueError as error:  # a model type InvokeAI clients cannot be shown yet
            logger.debug("not listing %s: %s", record.spec.name, error)
    return ModelsList.model_validate({"models": configs})


@router.get("/get_by_attrs", operation_id="get_model_records_by_attrs", response_model=AnyModelConfig)
async def get_model_records_by_attrs(
    models: ModelsDep,
    name: Annotated[str, Query(description="The name of the model")],
    type: Annotated[InvokeModelType, Query(description="The type of the model")],
    base: Annotated[BaseModelType, Query(description="The base model of the model")],
) -> ModelConfigBase:
    """The first model with this name, type and base."""
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
