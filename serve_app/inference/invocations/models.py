"""Model loaders, `clip_skip` and the LoRA nodes: they only build handles (UNetField, CLIPField, VAEField).

Handles name the model the graph sent (its ModelIdentifierField, as given) with `submodel_type` set, exactly
as InvokeAI's loaders do; nothing is loaded here, the nodes that run a component load it.
"""

from __future__ import annotations

from typing import TypeVar

from serve_app.domain.errors import InvalidRequest
from serve_app.domain.graph.fields import CLIPField, LoRAField, ModelIdentifierField, SubModelType, UNetField, VAEField
from serve_app.domain.graph.model_nodes import (
    CLIPSkipInvocation,
    LoRACollectionLoader,
    LoRALoaderInvocation,
    LoRASelectorInvocation,
    MainModelLoaderInvocation,
    SDXLLoRACollectionLoader,
    SDXLLoRALoaderInvocation,
    SDXLModelLoaderInvocation,
    VAELoaderInvocation,
)
from serve_app.domain.graph.outputs import (
    CLIPSkipInvocationOutput,
    LoRALoaderOutput,
    LoRASelectorOutput,
    ModelLoaderOutput,
    SDXLLoRALoaderOutput,
    SDXLModelLoaderOutput,
    VAEOutput,
)
from serve_app.domain.models import ModelFamily, ModelType
from serve_app.inference.graph_context import NodeContext
from serve_app.inference.invocations._common import model_of, required

_Handle = TypeVar("_Handle", UNetField, CLIPField)


def _sub(model: ModelIdentifierField, submodel: SubModelType) -> ModelIdentifierField:
    return model.model_copy(update={"submodel_type": submodel})


def _unet(model: ModelIdentifierField) -> UNetField:
    return UNetField(unet=_sub(model, "unet"), scheduler=_sub(model, "scheduler"))


def _clip(model: ModelIdentifierField, tokenizer: SubModelType, text_encoder: SubModelType) -> CLIPField:
    return CLIPField(tokenizer=_sub(model, tokenizer), text_encoder=_sub(model, text_encoder))


def main_model_loader(node: MainModelLoaderInvocation, context: NodeContext) -> ModelLoaderOutput:
    model = required(node, "model", node.model)
    spec = model_of(context, model, ModelType.MAIN)
    if spec.family is ModelFamily.SDXL:
        raise InvalidRequest(f"Model {spec.name} is an SDXL model: load it with sdxl_model_loader", field="model")
    if spec.family is ModelFamily.SDXL_REFINER:
        raise InvalidRequest(
            f"Model {spec.name} is an SDXL refiner: load it with sdxl_refiner_model_loader", field="model"
        )
    return ModelLoaderOutput(
        unet=_unet(model), clip=_clip(model, "tokenizer", "text_encoder"), vae=VAEField(vae=_sub(model, "vae"))
    )


def sdxl_model_loader(node: SDXLModelLoaderInvocation, context: NodeContext) -> SDXLModelLoaderOutput:
    model = required(node, "model", node.model)
    spec = model_of(context, model, ModelType.MAIN)
    if spec.family is not ModelFamily.SDXL:
        raise InvalidRequest(f"Model {spec.name} is a {spec.family} model, not an SDXL model", field="model")
    return SDXLModelLoaderOutput(
        unet=_unet(model),
        clip=_clip(model, "tokenizer", "text_encoder"),
        clip2=_clip(model, "tokenizer_2", "text_encoder_2"),
        vae=VAEField(vae=_sub(model, "vae")),
    )


def vae_loader(node: VAELoaderInvocation, context: NodeContext) -> VAEOutput:
    vae = required(node, "vae_model", node.vae_model)
    model_of(context, vae, ModelType.VAE)
    return VAEOutput(vae=VAEField(vae=vae))


def clip_skip(node: CLIPSkipInvocation, context: NodeContext) -> CLIPSkipInvocationOutput:
    clip = required(node, "clip", node.clip)
    return CLIPSkipInvocationOutput(
        clip=clip.model_copy(update={"skipped_layers": clip.skipped_layers + node.skipped_layers})
    )


def lora_selector(node: LoRASelectorInvocation, context: NodeContext) -> LoRASelectorOutput:
    return LoRASelectorOutput(lora=LoRAField(lora=required(node, "lora", node.lora), weight=node.weight))


def _check_not_applied(lora: ModelIdentifierField, handles: dict[str, UNetField | CLIPField | None]) -> None:
    for name, handle in handles.items():
        if handle is not None and any(applied.lora.key == lora.key for applied in handle.loras):
            raise InvalidRequest(f'LoRA "{lora.key}" already applied to {name}', field="lora")


def _with_loras(handle: _Handle | None, loras: list[LoRAField]) -> _Handle | None:
    """A copy of `handle` with `loras` appended (None passes through: the loader's input was not connected)."""
    return None if handle is None else _appended(handle, loras)


def _appended(handle: _Handle, loras: list[LoRAField]) -> _Handle:
    return handle.model_copy(update={"loras": [*handle.loras, *loras]})


def _new_loras(
    context: NodeContext, loras: LoRAField | list[LoRAField] | None, handles: dict[str, UNetField | CLIPField | None]
) -> list[LoRAField]:
    """The LoRAs a loader adds: each must exist and not be on a handle already; repeats in `loras` count once."""
    items = loras if isinstance(loras, list) else [] if loras is None else [loras]
    added: list[LoRAField] = []
    for item in items:
        if any(item.lora.key == seen.lora.key for seen in added):
            continue  # InvokeAI's collection loaders skip a LoRA collected twice
        model_of(context, item.lora, ModelType.LORA)
        _check_not_applied(item.lora, handles)
        added.append(item)
    return added


def lora_loader(node: LoRALoaderInvocation, context: NodeContext) -> LoRALoaderOutput:
    lora = LoRAField(lora=required(node, "lora", node.lora), weight=node.weight)
    added = _new_loras(context, lora, {"unet": node.unet, "clip": node.clip})
    return LoRALoaderOutput(unet=_with_loras(node.unet, added), clip=_with_loras(node.clip, added))


def sdxl_lora_loader(node: SDXLLoRALoaderInvocation, context: NodeContext) -> SDXLLoRALoaderOutput:
    lora = LoRAField(lora=required(node, "lora", node.lora), weight=node.weight)
    added = _new_loras(context, lora, {"unet": node.unet, "clip": node.clip, "clip2": node.clip2})
    return SDXLLoRALoaderOutput(
        unet=_with_loras(node.unet, added), clip=_with_loras(node.clip, added), clip2=_with_loras(node.clip2, added)
    )


def lora_collection_loader(node: LoRACollectionLoader, context: NodeContext) -> LoRALoaderOutput:
    added = _new_loras(context, node.loras, {"unet": node.unet, "clip": node.clip})
    return LoRALoaderOutput(unet=_with_loras(node.unet, added), clip=_with_loras(node.clip, added))


def sdxl_lora_collection_loader(node: SDXLLoRACollectionLoader, context: NodeContext) -> SDXLLoRALoaderOutput:
    added = _new_loras(context, node.loras, {"unet": node.unet, "clip": node.clip, "clip2": node.clip2})
    return SDXLLoRALoaderOutput(
        unet=_with_loras(node.unet, added), clip=_with_loras(node.clip, added), clip2=_with_loras(node.clip2, added)
    )
