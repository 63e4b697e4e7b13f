"""A UI-built SD1 graph, expanded from a batch and executed with stand-in model nodes."""

from __future__ import annotations

from typing import Any

from serve_app.domain.graph import outputs as out
from serve_app.domain.graph.base import BaseInvocation, BaseInvocationOutput
from serve_app.domain.graph.batch import Batch, expand_batch
from serve_app.domain.graph.execution import GraphExecution
from serve_app.domain.graph.fields import (
    CLIPField,
    ConditioningField,
    ImageField,
    LatentsField,
    LoRAField,
    ModelIdentifierField,
    UNetField,
    VAEField,
)
from serve_app.domain.graph.primitives import PRIMITIVES
from tests.support.invokeai_graphs import enqueue_body, sd1_txt2img


def fake(node: Any) -> BaseInvocationOutput:
    """Just enough of each model node to pass handles along."""
    if node.type == "main_model_loader":
        model: ModelIdentifierField = node.model
        return out.ModelLoaderOutput(
            unet=UNetField(unet=model, scheduler=model),
            clip=CLIPField(tokenizer=model, text_encoder=model),
            vae=VAEField(vae=model),
        )
    if node.type == "clip_skip":
        return out.CLIPSkipInvocationOutput(clip=node.clip.model_copy(update={"skipped_layers": node.skipped_layers}))
    if node.type == "lora_selector":
        return out.LoRASelectorOutput(lora=LoRAField(lora=node.lora, weight=node.weight))
    if node.type == "lora_collection_loader":
        loras = node.loras if isinstance(node.loras, list) else [node.loras]
        return out.LoRALoaderOutput(
            unet=node.unet.model_copy(update={"loras": loras}), clip=node.clip.model_copy(update={"loras": loras})
        )
    if node.type == "compel":
        return out.ConditioningOutput(conditioning=ConditioningField(conditioning_name=f"cond[{node.prompt}]"))
    if node.type == "noise":
        return out.NoiseOutput(noise=LatentsField(latents_name="noise", seed=node.seed), width=64, height=64)
    if node.type == "denoise_latents":
        return out.LatentsOutput(latents=LatentsField(latents_name="denoised"), width=64, height=64)
    if node.type == "l2i":
        return out.ImageOutput(image=ImageField(image_name="out.png"), width=64, height=64)
    return PRIMITIVES[node.type](node)


def test_sd1_graph_with_loras_runs_end_to_end(model: dict[str, Any], lora: dict[str, Any]) -> None:
    graph, ids = sd1_txt2img(model, width=64, height=64, steps=2, negative="blurry", loras=[(lora, 0.5)], clip_skip=1)
    batch = Batch.model_validate(enqueue_body(graph, [42], ["a cat"])["batch"])
    (session_graph, _), *_ = expand_batch(batch)
    execution = GraphExecution(session_graph, "s")
    seen: dict[str, BaseInvocation] = {}
    while (prepared := execution.next()) is not None:
        seen[execution.source_id(prepared.id)] = prepared
        execution.complete(prepared.id, fake(prepared))
    assert execution.is_complete() and not execution.has_error()
    assert set(seen) == set(graph["nodes"])

    denoise: Any = seen[ids.nodes["denoise_latents"]]
    assert [c.conditioning_name for c in denoise.positive_conditioning] == ["cond[a cat]"]
    assert [c.conditioning_name for c in denoise.negative_conditioning] == ["cond[blurry]"]
    assert denoise.noise.seed == 42
    assert denoise.unet.loras == [LoRAField(lora=ModelIdentifierField(**lora), weight=0.5)]
    output: Any = seen[ids.output]
    assert (output.is_intermediate, output.use_cache) == (False, False)
    assert output.metadata["seed"] == 42 and output.metadata["positive_prompt"] == "a cat"
    assert output.metadata["loras"] == [{"model": lora, "weight": 0.5}]
    assert seen[ids.nodes["pos_cond"]].clip.skipped_layers == 1  # type: ignore[attr-defined]

    (image_id,) = execution.source_prepared_mapping[ids.output]
    assert execution.state()["results"][image_id]["image"] == {"image_name": "out.png"}
