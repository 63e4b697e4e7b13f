"""`sdxl_refiner_model_loader` and `sdxl_refiner_compel_prompt`: the SDXL refiner's handles and conditioning.

The loader only builds handles (UNet, OpenCLIP `clip2`, VAE), as `sdxl_model_loader` does; the prompt node
encodes `style` through `clip2` with the handle's LoRAs and the embeddings the text names, then stores it.
"""

from __future__ import annotations

from contextlib import ExitStack

from serve_app.domain.errors import InvalidRequest
from serve_app.domain.graph.fields import ConditioningField, VAEField
from serve_app.domain.graph.outputs import ConditioningOutput
from serve_app.domain.graph.refiner_nodes import (
    SDXLRefinerCompelPromptInvocation,
    SDXLRefinerModelLoaderInvocation,
    SDXLRefinerModelLoaderOutput,
)
from serve_app.domain.models import ModelFamily, ModelType
from serve_app.inference.graph_context import NodeContext
from serve_app.inference.invocations._common import CONDITIONING, model_of, required
from serve_app.inference.invocations.models import _clip, _sub, _unet
from serve_app.inference.invocations.prompts import _patched_encoder
from serve_app.inference.nodes.prompts import encode_sdxl_refiner_prompt


def sdxl_refiner_model_loader(
    node: SDXLRefinerModelLoaderInvocation, context: NodeContext
) -> SDXLRefinerModelLoaderOutput:
    model = required(node, "model", node.model)
    spec = model_of(context, model, ModelType.MAIN)
    if spec.family is not ModelFamily.SDXL_REFINER:
        raise InvalidRequest(f"Model {spec.name} is a {spec.family} model, not an SDXL refiner", field="model")
    return SDXLRefinerModelLoaderOutput(
        unet=_unet(model), clip2=_clip(model, "tokenizer_2", "text_encoder_2"), vae=VAEField(vae=_sub(model, "vae"))
    )


def sdxl_refiner_compel_prompt(node: SDXLRefinerCompelPromptInvocation, context: NodeContext) -> ConditioningOutput:
    clip2 = required(node, "clip2", node.clip2)
    with ExitStack() as stack:
        encoder = _patched_encoder(stack, context, clip2, node.style)
        conditioning = encode_sdxl_refiner_prompt(
            encoder,
            node.style,
            original_width=node.original_width,
            original_height=node.original_height,
            crop_top=node.crop_top,
            crop_left=node.crop_left,
            aesthetic_score=node.aesthetic_score,
            skipped_layers=clip2.skipped_layers,
        )
    name = context.put(conditioning, CONDITIONING)
    return ConditioningOutput(conditioning=ConditioningField(conditioning_name=name))
