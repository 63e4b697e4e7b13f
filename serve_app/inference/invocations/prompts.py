"""`compel` and `sdxl_compel_prompt`: encode a prompt with the LoRAs on its CLIP handles and the textual-inversion
embeddings its text names, and store the Conditioning.

Embeddings: each `<name>` in the text (InvokeAI's trigger syntax; a model key works too) that names an embedding
of the job's models for the model's base is applied for the call (`nodes.embeddings.ti_patched`); any other
`<...>` stays in the text as written.

Deviation from InvokeAI: compel's weighting syntax (`(word)1.2`, `word+`, `.and()`) is not parsed; the prompt is
encoded as plain text (see `serve_app.inference.nodes.prompts`).
"""

from __future__ import annotations

import dataclasses
import re
from contextlib import ExitStack

from serve_app.domain.errors import InvalidRequest
from serve_app.domain.graph.fields import CLIPField, ConditioningField
from serve_app.domain.graph.model_nodes import CompelInvocation, SDXLCompelPromptInvocation
from serve_app.domain.graph.outputs import ConditioningOutput
from serve_app.domain.models import ModelType
from serve_app.inference.graph_context import NodeContext
from serve_app.inference.invocations._common import CONDITIONING, lora_weights, model_of, required
from serve_app.inference.nodes import Conditioning, TextEncoder, encode_prompt, encode_sdxl_prompt
from serve_app.inference.nodes.embeddings import TextualInversion, ti_patched
from serve_app.inference.nodes.lora import TEXT_ENCODER_2, lora_patched

# InvokeAI's `extract_ti_triggers_from_prompt`.
_TRIGGER = re.compile(r"<[a-zA-Z0-9., _-]+>")


def _embeddings(context: NodeContext, clip: CLIPField, text: str) -> list[tuple[str, TextualInversion]]:
    """(trigger, embedding) for every distinct `<name>` in `text` that names an embedding for the model's base."""
    base = model_of(context, clip.text_encoder, ModelType.MAIN).family
    found = []
    for trigger in dict.fromkeys(_TRIGGER.findall(text)):
        spec = context.embedding(trigger[1:-1], base)
        if spec is not None:
            found.append((trigger, context.components.embedding(spec)))
    return found


def _patched_encoder(stack: ExitStack, context: NodeContext, clip: CLIPField, text: str) -> TextEncoder:
    """The text encoder a CLIP handle names (`text_encoder` or `text_encoder_2` of its model) with the embeddings
    `text` names and the handle's LoRAs applied until `stack` closes. Loads in InvokeAI's order: text encoder,
    tokenizer, embeddings, LoRAs."""
    spec = model_of(context, clip.text_encoder, ModelType.MAIN)
    which = clip.text_encoder.submodel_type or "text_encoder"
    encoder = context.components.text_encoder(spec, which)
    embeddings = _embeddings(context, clip, text)
    loras = context.components.resolved(lora_weights(context, clip.loras))
    stack.enter_context(lora_patched(encoder.encoder, encoder.lora_target, loras))
    index = 1 if which == TEXT_ENCODER_2 else 0
    triggers = stack.enter_context(ti_patched(encoder.encoder, embeddings, index=index))
    return dataclasses.replace(encoder, triggers=triggers)


def _output(
    context: NodeContext, conditioning: Conditioning, node: CompelInvocation | SDXLCompelPromptInvocation
) -> ConditioningOutput:
    name = context.put(conditioning, CONDITIONING)
    return ConditioningOutput(conditioning=ConditioningField(conditioning_name=name, mask=node.mask))


def compel(node: CompelInvocation, context: NodeContext) -> ConditioningOutput:
    """SD 1.x/2.x prompt; the CLIP handle's `skipped_layers` (from `clip_skip`) picks the hidden layer."""
    clip = required(node, "clip", node.clip)
    with ExitStack() as stack:
        encoder = _patched_encoder(stack, context, clip, node.prompt)
        conditioning = encode_prompt(encoder, node.prompt, skipped_layers=clip.skipped_layers)
    return _output(context, conditioning, node)


def sdxl_compel_prompt(node: SDXLCompelPromptInvocation, context: NodeContext) -> ConditioningOutput:
    """SDXL prompt: `prompt` through `clip`, `style` (the prompt when blank) through `clip2`, size conditioning."""
    clip = required(node, "clip", node.clip)
    clip2 = required(node, "clip2", node.clip2)
    if clip.skipped_layers != clip2.skipped_layers:
        raise InvalidRequest("clip and clip2 must skip the same number of layers", field="clip2")
    style = node.style if node.style.strip() else None
    with ExitStack() as stack:
        encoders = (
            _patched_encoder(stack, context, clip, node.prompt),
            _patched_encoder(stack, context, clip2, node.prompt if style is None else style),
        )
        conditioning = encode_sdxl_prompt(
            encoders,
            node.prompt,
            style,
            original_width=node.original_width,
            original_height=node.original_height,
            crop_top=node.crop_top,
            crop_left=node.crop_left,
            target_width=node.target_width,
            target_height=node.target_height,
            skipped_layers=clip.skipped_layers,
        )
    return _output(context, conditioning, node)
