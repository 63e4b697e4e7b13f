"""Enfugue's parameters as a node graph, so both dialects run on the one graph engine (DESIGN.md §4).

One model loader and one pair of prompt encodings feed a noise → denoise → decode branch per
sample; sample i uses seed + i, so an image is the same whether made alone or among others.
"""

from __future__ import annotations

from typing import Any

from serve_app.domain.generation import ENFUGUE_TO_INVOKEAI_SCHEDULER, GenerationRequest
from serve_app.domain.graph.graph import Graph
from serve_app.domain.graph.invocations import SEED_MAX
from serve_app.domain.models import ModelFamily, ModelSpec

# InvokeAI's default for graphs that name none; Enfugue's default is the model's own class, which a
# graph cannot express, and Euler is what the demo and most SD checkpoints ship with.
DEFAULT_SCHEDULER = "euler"


def model_identifier(spec: ModelSpec) -> dict[str, Any]:
    """How a graph names a catalog model (InvokeAI's ModelIdentifierField)."""
    return {"key": spec.key, "hash": "", "name": spec.name, "base": spec.family.value, "type": spec.type.value}


def txt2img_graph(request: GenerationRequest, spec: ModelSpec) -> dict[str, Any]:
    """The graph of a resolved request (width, height and model set); validated like any submitted graph."""
    assert request.width is not None and request.height is not None, "resolve the size before building"
    sdxl = spec.family is ModelFamily.SDXL
    nodes: dict[str, dict[str, Any]] = {}
    edges: list[dict[str, Any]] = []

    def node(node_id: str, node_type: str, **fields: Any) -> str:
        nodes[node_id] = {"id": node_id, "type": node_type, "is_intermediate": True, **fields}
        return node_id

    def edge(source: str, source_field: str, destination: str, destination_field: str) -> None:
        edges.append(
            {
                "source": {"node_id": source, "field": source_field},
                "destination": {"node_id": destination, "field": destination_field},
            }
        )

    loader = node("model", "sdxl_model_loader" if sdxl else "main_model_loader", model=model_identifier(spec))
    prompts = {"positive": (request.prompt, request.prompt_2), "negative": (request.negative_prompt,
               request.negative_prompt_2)}  # fmt: skip
    for name, (text, text_2) in prompts.items():
        if sdxl:
            size = {"original_width": request.width, "original_height": request.height,
                    "target_width": request.width, "target_height": request.height}  # fmt: skip
            node(name, "sdxl_compel_prompt", prompt=text, style=text_2 or text, **size)
            edge(loader, "clip2", name, "clip2")
        else:
            node(name, "compel", prompt=text)
        edge(loader, "clip", name, "clip")
    scheduler = ENFUGUE_TO_INVOKEAI_SCHEDULER.get(request.scheduler or "", DEFAULT_SCHEDULER)
    metadata = node(
        "metadata",
        "core_metadata",
        generation_mode="sdxl_txt2img" if sdxl else "txt2img",
        positive_prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        width=request.width,
        height=request.height,
        seed=request.seed,
        cfg_scale=request.guidance_scale,
        steps=request.steps,
        scheduler=scheduler,
        model=model_identifier(spec),
        enfugue=request.to_json(),
    )
    for index in range(request.num_images):
        noise = node(f"noise_{index}", "noise", seed=(request.seed + index) % (SEED_MAX + 1),
                     width=request.width, height=request.height)  # fmt: skip
        denoise = node(f"denoise_{index}", "denoise_latents", steps=request.steps,
                       cfg_scale=request.guidance_scale, scheduler=scheduler)  # fmt: skip
        output = node(f"output_{index}", "l2i", is_intermediate=False)
        edge(loader, "unet", denoise, "unet")
        edge("positive", "conditioning", denoise, "positive_conditioning")
        edge("negative", "conditioning", denoise, "negative_conditioning")
        edge(noise, "noise", denoise, "noise")
        edge(denoise, "latents", output, "latents")
        edge(loader, "vae", output, "vae")
        edge(metadata, "metadata", output, "metadata")
    graph = {"id": f"enfugue:{request.seed}", "nodes": nodes, "edges": edges}
    return Graph.model_validate(graph).model_dump(mode="json")
