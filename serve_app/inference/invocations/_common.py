"""What the node implementations share: required-input narrowing, model lookups by handle, stored tensors and
images."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from PIL import Image

from serve_app.domain.errors import InvalidRequest
from serve_app.domain.graph.base import BaseInvocation, BaseInvocationOutput, WithBoard, WithMetadata
from serve_app.domain.graph.fields import LoRAField, ModelIdentifierField, VAEField
from serve_app.domain.graph.outputs import ImageOutput
from serve_app.domain.images import ImageCategory
from serve_app.domain.models import ModelSpec, ModelType
from serve_app.inference.graph_context import NodeContext
from serve_app.inference.nodes import LoRAWeight

Implementation = Callable[[BaseInvocation, NodeContext], BaseInvocationOutput]

# InvokeAI's tensor and conditioning names: `Tensor_<uuid>`, `ConditioningFieldData_<uuid>`.
TENSOR = "Tensor"
CONDITIONING = "ConditioningFieldData"

_T = TypeVar("_T")


def typed(function: Callable[[Any, NodeContext], BaseInvocationOutput]) -> Implementation:
    """The registry is keyed by node type, so each function only ever receives its own node class."""
    return function


def required(node: BaseInvocation, field: str, value: _T | None) -> _T:
    """An input the graph validator already requires; a clear error should a node reach us without it anyway."""
    if value is None:
        raise InvalidRequest(f"Node {node.id} ({node.type}) has no value for its required input {field}", field=field)
    return value


def model_of(context: NodeContext, identifier: ModelIdentifierField, kind: ModelType) -> ModelSpec:
    """The catalog's model for a handle (ModelNotFound for an unknown key), which must be of type `kind`."""
    spec = context.model(identifier)
    if spec.type is not kind:
        raise InvalidRequest(f"Model {spec.name} ({identifier.key}) is a {spec.type} model, not a {kind} model")
    return spec


def lora_weights(context: NodeContext, loras: Sequence[LoRAField]) -> list[LoRAWeight]:
    return [LoRAWeight(model_of(context, item.lora, ModelType.LORA), item.weight) for item in loras]


def load_vae(context: NodeContext, field: VAEField) -> Any:
    """The VAE a handle names: a main model's own (`submodel_type` vae) or a standalone VAE model."""
    if field.seamless_axes:
        raise NotImplementedError("Seamless tiling (seamless_axes) is not supported by this server")
    spec = context.model(field.vae)
    if spec.type not in (ModelType.MAIN, ModelType.VAE):
        raise InvalidRequest(f"Model {spec.name} ({field.vae.key}) is a {spec.type} model, not a VAE")
    return context.components.vae(spec)


def image_output(
    context: NodeContext, node: BaseInvocation, image: Image.Image, category: ImageCategory = ImageCategory.GENERAL
) -> ImageOutput:
    """Store an image node's result with the node's metadata, on its board, intermediate or not, as InvokeAI does."""
    assert isinstance(node, WithMetadata) and isinstance(node, WithBoard), f"{node.type} does not output images"
    stored = context.save_image(
        image,
        metadata=node.metadata,
        board_id=node.board.board_id if node.board else None,
        is_intermediate=node.is_intermediate,
        category=category,
    )
    return ImageOutput(image=stored, width=image.width, height=image.height)
