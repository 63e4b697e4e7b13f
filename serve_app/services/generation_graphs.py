"""Enfugue's parameters as a node graph, so both dialects run on the one graph engine (DESIGN.md §4).

One model loader (then one `lora_loader` per LoRA, chained, each with its weight) and one pair of prompt
encodings feed a noise → denoise → decode branch per sample; a VAE override decodes through `vae_loader`.
Sample i uses seed + i, so an image is the same whether made alone or among others.

With an input `image` (stored by services/enfugue_images.py) the branch starts from its latents (`i2l`) at
`denoising_start = 1 - strength` (img2img); a `mask` (white = keep) adds `create_denoise_mask` (inpaint). Strength 0
changes nothing, so the input is saved as it is (Enfugue's pass-through), without a VAE round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from serve_app.domain.generation import ENFUGUE_TO_INVOKEAI_SCHEDULER, GenerationRequest
from serve_app.domain.graph.graph import Graph
from serve_app.domain.graph.invocations import SEED_MAX
from serve_app.domain.models import ModelFamily, ModelSpec
from serve_app.services.enfugue_chunking import chunk_steps
from serve_app.services.enfugue_control import control_node, image_control_node, single_control
from serve_app.services.enfugue_inpaint_options import apply_inpaint_options
from serve_app.services.enfugue_refiner import add_refiner_and_inpainter
from serve_app.services.enfugue_regions import RegionGraph, drop_nodes, paste_back, prompt_nodes
from serve_app.services.enfugue_upscale import EdgeFn, NodeFn, UpscaleBuilder

# Enfugue's default strengths (diffusion/plan.py): img2img 0.8; an inpaint repaints its area fully.
IMG2IMG_STRENGTH = 0.8
INPAINT_STRENGTH = 1.0

# InvokeAI's default for graphs that name none; Enfugue's default is the model's own class, which a
# graph cannot express, and Euler is what the demo and most SD checkpoints ship with.
DEFAULT_SCHEDULER = "euler"


@dataclass(frozen=True)
class GraphModel:
    """A resolved model as a graph names it: its spec, the registry's hash ("" for a model found only in the
    models folder) and, for a LoRA, the weight to apply it at."""

    spec: ModelSpec
    hash: str = ""
    weight: float = 1.0

    def identifier(self) -> dict[str, Any]:
        """InvokeAI's ModelIdentifierField."""
        spec = self.spec
        return {"key": spec.key, "hash": self.hash, "name": spec.name, "base": spec.family.value,
                "type": spec.type.value}  # fmt: skip


@dataclass(frozen=True)
class GraphExtras:
    """The models a request uses beyond the main one, its LoRAs, VAE and embeddings, resolved at submit:
    the SDXL refiner (and its VAE), the inpainting model (and its VAE), the ControlNet model per Enfugue
    controlnet name the request uses, and the spandrel image-to-image model per upscale method name."""

    refiner: GraphModel | None = None
    refiner_vae: GraphModel | None = None
    inpainter: GraphModel | None = None
    inpainter_vae: GraphModel | None = None
    controlnets: dict[str, GraphModel] = field(default_factory=dict)
    upscalers: dict[str, GraphModel] = field(default_factory=dict)


def model_identifier(spec: ModelSpec) -> dict[str, Any]:
    """How a graph names a catalog model (InvokeAI's ModelIdentifierField)."""
    return GraphModel(spec).identifier()


def generation_mode(request: GenerationRequest, sdxl: bool) -> str:
    """InvokeAI's metadata `generation_mode` of a request."""
    mode = "txt2img" if request.image is None else "inpaint" if request.mask is not None else "img2img"
    return f"sdxl_{mode}" if sdxl else mode


def strength_of(request: GenerationRequest) -> float:
    if request.strength is not None:
        return request.strength
    return INPAINT_STRENGTH if request.mask is not None else IMG2IMG_STRENGTH


def generation_graph(
    request: GenerationRequest,
    main: GraphModel | ModelSpec,
    *,
    loras: Sequence[GraphModel] = (),
    vae: GraphModel | None = None,
    embeddings: Sequence[GraphModel] = (),
    extras: GraphExtras | None = None,
) -> dict[str, Any]:
    """The graph of a resolved request (width, height and models set; the prompts already name
    each textual inversion as `<name>`, and `embeddings` are listed in the metadata so the job's model snapshot
    holds exactly those); validated like any submitted graph."""
    assert request.width is not None and request.height is not None, "resolve the size before building"
    main = main if isinstance(main, GraphModel) else GraphModel(main)
    extras = extras or GraphExtras()
    sdxl = main.spec.family is ModelFamily.SDXL
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

    loader = node("model", "sdxl_model_loader" if sdxl else "main_model_loader", model=main.identifier())
    # Each LoRA patches the UNet and text encoder handles that pass through it; the last one feeds the rest.
    clips = ("clip", "clip2") if sdxl else ("clip",)
    sources = dict.fromkeys(("unet", *clips), loader)
    for index, lora in enumerate(loras):
        patched = node(f"lora_{index}", "sdxl_lora_loader" if sdxl else "lora_loader", lora=lora.identifier(),
                       weight=lora.weight)  # fmt: skip
        for handle, source in sources.items():
            edge(source, handle, patched, handle)
        sources = dict.fromkeys(sources, patched)
    decoder = node("vae", "vae_loader", vae_model=vae.identifier()) if vae is not None else loader
    prompt_nodes(node, edge, sources, sdxl, ("positive", "negative"), (request.prompt, request.prompt_2),
                 (request.negative_prompt, request.negative_prompt_2), request.width, request.height)  # fmt: skip
    scheduler = ENFUGUE_TO_INVOKEAI_SCHEDULER.get(request.scheduler or "", DEFAULT_SCHEDULER)
    metadata = node(
        "metadata",
        "core_metadata",
        generation_mode=generation_mode(request, sdxl),
        positive_prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        width=request.width,
        height=request.height,
        seed=request.seed,
        cfg_scale=request.guidance_scale,
        steps=request.steps,
        scheduler=scheduler,
        model=main.identifier(),
        loras=[{"model": lora.identifier(), "weight": lora.weight} for lora in loras],
        vae=vae.identifier() if vae is not None else None,
        embeddings=[embedding.identifier() for embedding in embeddings],
        # The UI state may be large (Enfugue's canvas); it is written once per image, in its own PNG chunk.
        enfugue=request.model_dump(mode="json", exclude={"state"}),
        **({} if request.image is None else {"strength": strength_of(request)}),
    )
    # Enfugue's upscale passes follow each sample's decode; the last pass's image is the one saved.
    upscale = None
    if request.upscale:
        upscale = UpscaleBuilder(node, edge, request.upscale, request.width, request.height, scheduler, sources,
                                 decoder, sdxl, upscalers={method: model.identifier() for method, model
                                                           in extras.upscalers.items()},
                                 controlnets=extras.controlnets, control_node=image_control_node,
                                 window=request.size or main.spec.native_size)  # fmt: skip
    if request.nodes:
        # Enfugue's canvas regions (services/enfugue_regions.py), each with its own prompts.
        regions = RegionGraph(node, edge, request, scheduler, sources, decoder, sdxl, extras.controlnets,
                              control_node=control_node, size=main.spec.native_size)  # fmt: skip
        steps = regions.build(metadata, upscale)
        # Each region's (and the final outpaint's) diffusion gets the inpainter and refiner as a single step does.
        add_refiner_and_inpainter(nodes, edges, request, extras, steps)
        # Steps larger than the model's window diffuse in overlapping tiles (services/enfugue_chunking.py).
        chunk_steps(nodes, request, main.spec.native_size, steps)
        drop_nodes(nodes, edges, ("positive", "negative"))
        return _validated(nodes, edges, request)
    strength = strength_of(request) if request.image is not None else 1.0
    if request.image is not None and strength == 0:
        _pass_through(request, request.image, node, edge, metadata, upscale)
        return _validated(nodes, edges, request)
    if request.image is not None:
        node("input", "i2l", image={"image_name": request.image})
        edge(decoder, "vae", "input", "vae")
    if request.mask is not None:
        node("mask", "create_denoise_mask", image={"image_name": request.image}, mask={"image_name": request.mask})
        edge(decoder, "vae", "mask", "vae")
    # Single-step ControlNet (services/enfugue_control.py): one controlnet node feeds every sample's denoise.
    control = single_control(node, edge, request, extras.controlnets)
    for index in range(request.num_images):
        noise = node(f"noise_{index}", "noise", seed=(request.seed + index) % (SEED_MAX + 1),
                     width=request.width, height=request.height)  # fmt: skip
        denoise = node(f"denoise_{index}", "denoise_latents", steps=request.steps,
                       cfg_scale=request.guidance_scale, scheduler=scheduler,
                       denoising_start=1.0 - strength)  # fmt: skip
        final = upscale is None and request.mask is None
        output = node(f"output_{index}" if final else f"decoded_{index}", "l2i", is_intermediate=not final)
        edge(sources["unet"], "unet", denoise, "unet")
        edge("positive", "conditioning", denoise, "positive_conditioning")
        edge("negative", "conditioning", denoise, "negative_conditioning")
        edge(noise, "noise", denoise, "noise")
        if request.image is not None:
            edge("input", "latents", denoise, "latents")
        if request.mask is not None:
            edge("mask", "denoise_mask", denoise, "denoise_mask")
        if control is not None:
            edge(control, "control", denoise, "control")
        edge(denoise, "latents", output, "latents")
        edge(decoder, "vae", output, "vae")
        # An inpaint changes only the repainted area: the decoded image pasted onto the input through the mask.
        output = paste_back(node, edge, output, request.image, request.mask, upscale is None, index)
        if upscale is None:
            edge(metadata, "metadata", output, "metadata")
        else:
            upscale.add(output, index=index, seed=request.seed + index, output=f"output_{index}", metadata=metadata)
    # Enfugue's crop_inpaint, inpaint_feather and scale_to_model_size (services/enfugue_inpaint_options.py).
    extras = apply_inpaint_options(nodes, edges, request, main.spec.native_size, extras)
    # The inpainting model's UNet for the inpaint, the SDXL refiner's for the end of the schedule.
    add_refiner_and_inpainter(nodes, edges, request, extras)
    chunk_steps(nodes, request, main.spec.native_size)
    return _validated(nodes, edges, request)


def _pass_through(
    request: GenerationRequest, image: str, node: NodeFn, edge: EdgeFn, metadata: str, upscale: UpscaleBuilder | None
) -> None:
    """Strength 0: each sample is the input image as it is (then upscaled, if asked)."""
    for index in range(request.num_images):
        if upscale is not None:
            source = node(f"input_{index}", "image", image={"image_name": image})
            upscale.add(source, index=index, seed=request.seed + index, output=f"output_{index}", metadata=metadata)
            continue
        node(f"output_{index}", "save_image", is_intermediate=False, image={"image_name": image})
        edge(metadata, "metadata", f"output_{index}", "metadata")


def _validated(
    nodes: dict[str, dict[str, Any]], edges: list[dict[str, Any]], request: GenerationRequest
) -> dict[str, Any]:
    graph = {"id": f"enfugue:{request.seed}", "nodes": nodes, "edges": edges}
    return Graph.model_validate(graph).model_dump(mode="json")


# The name this builder had while it made text-to-image graphs only.
txt2img_graph = generation_graph
