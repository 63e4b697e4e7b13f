"""`compel` and `sdxl_compel_prompt`: encode a prompt with the LoRAs on its CLIP handles, store the Conditioning.

Deviation from InvokeAI: compel's weighting syntax (`(word)1.2`, `word+`, `.and()`) is not parsed; the prompt is
encoded as plain text (see `serve_app.inference.nodes.prompts`).
"""

from __future__ import annotations

from contextlib import ExitStack

from serve_app.domain.errors import InvalidRequest
from serve_app.domain.graph.fields import CLIPField, ConditioningField
from serve_app.domain.graph.model_nodes import CompelInvocation, SDXLCompelPromptInvocation
from serve_app.domain.graph.outputs import ConditioningOutput
from serve_app.domain.models import ModelType
from serve_app.inference.graph_context import NodeContext
from serve_app.inference.invocations._common import CONDITIONING, lora_weights, model_of, required
from serve_app.inference.nodes import Conditioning, TextEncoder, encode_prompt, encode_sdxl_prompt
from serve_app.inference.nodes.lora import lora_patched


def _patched_encoder(stack: ExitStack, context: NodeContext, clip: CLIPField) -> TextEncoder:
    """The text encoder a CLIP handle names (`text_encoder` or `text_encoder_2` of its model), with the handle's
    LoRAs merged in until `stack` closes."""
    spec = model_of(context, clip.text_encoder, ModelType.MAIN)
    encoders = context.components.text_encoders(spec)
    index = 1 if clip.text_encoder.submodel_type == "text_encoder_2" else 0
    if index >= len(encoders):
        raise InvalidRequest(f"Model {spec.name} has no second text encoder (is it an SDXL model?)", field="clip2")
    encoder = encoders[index]
    components = context.components
    resolved = [(components.lora(item.spec), item.weight) for item in lora_weights(context, clip.loras) if item.weight]
    stack.enter_context(lora_patched(encoder.encoder, encoder.lora_target, resolved))
    return encoder


def _output(
    context: NodeContext, conditioning: Conditioning, node: CompelInvocation | SDXLCompelPromptInvocation
) -> ConditioningOutput:
    name = context.put(conditioning, CONDITIONING)
    return ConditioningOutput(conditioning=ConditioningField(conditioning_name=name, mask=node.mask))


def compel(node: CompelInvocation, context: NodeContext) -> ConditioningOutput:
    """SD 1.x/2.x prompt; the CLIP handle's `skipped_layers` (from `clip_skip`) picks the hidden layer."""
    clip = required(node, "clip", node.clip)
    with ExitStack() as stack:
        encoder = _patched_encoder(stack, context, clip)
        conditioning = encode_prompt(encoder, node.prompt, skipped_layers=clip.skipped_layers)
    return _output(context, conditioning, node)


def sdxl_compel_prompt(node: SDXLCompelPromptInvocation, context: NodeContext) -> ConditioningOutput:
    """SDXL prompt: `prompt` through `clip`, `style` (the prompt when blank) through `clip2`, size conditioning."""
    clip = required(node, "clip", node.clip)
    clip2 = required(node, "clip2", node.clip2)
    if clip.skipped_layers != clip2.skipped_layers:
        raise InvalidRequest("clip and clip2 must skip the same number of layers", field="clip2")
    with ExitStack() as stack:
        encoders = (_patched_encoder(stack, context, clip), _patched_encoder(stack, context, clip2))
        conditioning = encode_sdxl_prompt(
            encoders,
            node.prompt,
            node.style if node.style.strip() else None,
            original_width=node.original_width,
            original_height=node.original_height,
            crop_top=node.crop_top,
            crop_left=node.crop_left,
            target_width=node.target_width,
            target_height=node.target_height,
            skipped_layers=clip.skipped_layers,
        )
    return _output(context, conditioning, node)
